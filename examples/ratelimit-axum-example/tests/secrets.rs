//! No secret reaches the output: the compiled service, at `RUST_LOG=trace`,
//! given a known secret in each place one can be given, never prints it
//! on stdout or stderr, whether it serves, fails a request, or fails to
//! start.

mod common;

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use common::process::{ConfigFile, Process};
use ratelimit_axum_example::{Config, Secret, SecretUrl};

/// A loopback port with nothing listening on it.
fn closed_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// An OpenAI-compatible provider that refuses every request and, as a
/// careless one might, echoes the `Authorization` header and the target
/// in its error message.
fn echoing_provider() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            conn.set_read_timeout(Some(Duration::from_secs(10))).ok();
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            let mut head = String::new();
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                head.push_str(&line);
            }
            let echo = head.replace(['"', '\\'], "'").replace("\r\n", " | ");
            let body = format!(r#"{{"error":{{"message":"Incorrect API key provided: {echo}"}}}}"#);
            let _ = write!(
                conn,
                "HTTP/1.1 401 Unauthorized\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    addr
}

/// Starts the service at `RUST_LOG=trace` with no delay between deltas.
fn start(args: &[&str], envs: &[(&str, &str)]) -> Process {
    let envs: Vec<_> = [("RATELIMIT_DELTA_DELAY", "0ms")]
        .into_iter()
        .chain(envs.iter().copied())
        .collect();
    Process::start(args, &envs, "trace")
}

/// Starts the service, makes one generate request, stops it with
/// SIGTERM; returns the answer and the whole output.
fn serve_one_request(args: &[&str], envs: &[(&str, &str)]) -> (String, String) {
    let mut service = start(args, envs);
    let addr = service.addr();
    let mut conn = TcpStream::connect(addr).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let body = r#"{"messages":[{"role":"user","content":"Hi"}]}"#;
    write!(
        conn,
        "POST /api/generate HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut answer = String::new();
    conn.read_to_string(&mut answer).unwrap();
    service.sigterm();
    (answer, service.output())
}

fn fails_to_start(args: &[&str], envs: &[(&str, &str)]) -> String {
    start(args, envs).output()
}

#[track_caller]
fn assert_hidden(secret: &str, output: &str) {
    for line in output.lines() {
        assert!(
            !line.contains(secret),
            "the secret {secret:?} is printed:\n{line}"
        );
    }
}

#[test]
fn api_key_and_base_url_credentials_from_the_environment() {
    let provider = echoing_provider();
    let base_url = format!("http://alice:BaseUrlPassEnv3ab@{provider}/v1");
    let (answer, output) = serve_one_request(
        &[],
        &[
            ("OPENAI_API_KEY", "sk-EnvKey7c1d9e"),
            ("OPENAI_BASE_URL", &base_url),
        ],
    );
    // The request reached the provider, which refused it, and the
    // service logged that at ERROR with the provider's (echoed) message.
    assert_hidden("sk-EnvKey7c1d9e", &output);
    assert_hidden("BaseUrlPassEnv3ab", &output);
    assert_hidden("EnvKey7c1d9e", &answer);
    assert!(
        answer.contains("The model provider refused the request."),
        "{answer}"
    );
    assert!(output.contains("provider answered 401"), "{output}");
    assert!(output.contains("Incorrect API key provided"), "{output}");
    assert!(output.contains("[redacted]"), "{output}");
    assert!(output.contains("TRACE"), "at trace level: {output}");
}

#[test]
fn api_key_and_base_url_credentials_from_the_file() {
    let provider = echoing_provider();
    let config = ConfigFile::new(
        "secrets-model",
        &format!(
            "[model]\napi_key = \"sk-FileKey44f0a2\"\nbase_url = \"http://FileUrlToken9e8d@{provider}/v1\"\n"
        ),
    );
    let (answer, output) = serve_one_request(&["--config", config.arg()], &[]);
    assert_hidden("sk-FileKey44f0a2", &output);
    assert_hidden("FileUrlToken9e8d", &output);
    assert!(
        answer.contains("The model provider refused the request."),
        "{answer}"
    );
    assert!(output.contains("provider answered 401"), "{output}");
}

#[test]
fn a_provider_that_cannot_be_reached_is_named_without_credentials() {
    let base_url = format!(
        "http://bob:UnreachablePass51c@127.0.0.1:{}/v1",
        closed_port()
    );
    let (answer, output) = serve_one_request(
        &[],
        &[
            ("OPENAI_API_KEY", "sk-UnreachableKey2b"),
            ("OPENAI_BASE_URL", &base_url),
        ],
    );
    assert_hidden("UnreachablePass51c", &output);
    assert_hidden("sk-UnreachableKey2b", &output);
    assert!(answer.contains("The model failed to answer."), "{answer}");
    assert!(output.contains("provider unreachable"), "{output}");
    assert!(output.contains("bob:[redacted]@127.0.0.1"), "{output}");
}

#[test]
fn redis_password_on_the_command_line() {
    let url = format!("redis://:CliRedisPass0e7@127.0.0.1:{}", closed_port());
    let output = fails_to_start(&["--redis-url", &url], &[]);
    assert_hidden("CliRedisPass0e7", &output);
    assert!(
        output.contains("cannot start the Redis backend"),
        "{output}"
    );
}

#[test]
fn redis_password_in_redis_url() {
    let url = format!("redis://app:EnvRedisPass5d2@127.0.0.1:{}/0", closed_port());
    let output = fails_to_start(&[], &[("REDIS_URL", &url)]);
    assert_hidden("EnvRedisPass5d2", &output);
    assert!(
        output.contains("cannot start the Redis backend"),
        "{output}"
    );
}

#[test]
fn redis_passwords_in_the_file() {
    let port = closed_port();
    for (name, backend) in [
        (
            "url",
            format!("url = \"redis://:FileRedisPass8a1@127.0.0.1:{port}\""),
        ),
        (
            "cluster",
            format!("cluster = [\"redis://u:FileClusterPass3f@127.0.0.1:{port}\"]"),
        ),
    ] {
        let config = ConfigFile::new(
            &format!("secrets-{name}"),
            &format!("[backend]\nkind = \"redis\"\n{backend}\n"),
        );
        let output = fails_to_start(&["--config", config.arg()], &[]);
        assert!(
            output.contains("cannot start the Redis backend"),
            "{output}"
        );
        assert_hidden("FileRedisPass8a1", &output);
        assert_hidden("FileClusterPass3f", &output);
    }
}

#[test]
fn a_typo_next_to_a_secret_does_not_quote_it() {
    // Unquoted: the file does not parse, and toml's own message would
    // quote the line.
    let config = ConfigFile::new("secrets-typo", "[model]\napi_key = sk-TypoKey61aa\n");
    let output = fails_to_start(&["--config", config.arg()], &[]);
    assert_hidden("TypoKey61aa", &output);
    assert!(output.contains("line 2"), "{output}");
    assert!(output.contains("`api_key`"), "the key is named: {output}");
}

#[test]
fn the_configuration_debug_output_hides_every_secret() {
    let mut config = Config::default();
    config.model.api_key = Some(Secret::new("sk-DebugKey".into()));
    config.model.base_url = SecretUrl::new("https://u:DebugUrlPass@h/v1");
    config.backend.url = Some(SecretUrl::new("redis://:DebugRedisPass@h"));
    config.backend.cluster = Some(vec![SecretUrl::new("redis://:DebugClusterPass@h")]);
    let debug = format!("{config:?} {config:#?}");
    for secret in [
        "DebugKey",
        "DebugUrlPass",
        "DebugRedisPass",
        "DebugClusterPass",
    ] {
        assert_hidden(secret, &debug);
    }
    assert!(debug.contains("redis://:[redacted]@h"), "{debug}");
}
