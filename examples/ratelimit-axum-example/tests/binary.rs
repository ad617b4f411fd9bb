//! The compiled service: start-up errors and graceful shutdown.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::Command;

use common::start_binary;

const BIN: &str = env!("CARGO_BIN_EXE_ratelimit-axum-example");

fn config_file(name: &str, text: &str) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!(
        "ratelimit-example-{}-{name}.toml",
        std::process::id()
    ));
    std::fs::write(&path, text).unwrap();
    path
}

fn fails_to_start(text: &str) -> String {
    let path = config_file("bad", text);
    let mut child = Command::new(BIN)
        .args(["--bind", "127.0.0.1:0", "--config"])
        .arg(&path)
        .env_remove("REDIS_URL")
        .env_remove("OPENAI_API_KEY")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // A service that accepts the bad config would serve forever: bound
    // the wait, so the test fails instead of hanging.
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > std::time::Duration::from_secs(20) {
            child.kill().ok();
            child.wait().ok();
            panic!("started with a bad config:\n{text}");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    std::fs::remove_file(&path).ok();
    assert!(!status.success(), "started with a bad config:\n{text}");
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    stderr
}

#[test]
fn bad_config_stops_start_up_naming_line_and_field() {
    let err = fails_to_start("bind = \"127.0.0.1:0\"\n\n[limit]\nalgorithm = \"fixed_window\"\nlimit = 0\nwindow = \"30s\"\n");
    assert!(
        err.contains("line 5"),
        "the line of the value at fault: {err}"
    );
    assert!(err.contains("invalid `limit`: 0 is out of range"), "{err}");

    let err = fails_to_start("[http]\nmax_body = 10\n");
    assert!(err.contains("line 2"), "{err}");
    assert!(err.contains("unknown field `max_body`"), "{err}");

    let err = fails_to_start("[client_ip]\ntrusted_proxies = [\"10.0.0.0/33\"]\n");
    assert!(
        err.contains("line 2") && err.contains("trusted_proxies"),
        "{err}"
    );

    let err = fails_to_start("[http]\nrequest_timeout = \"soon\"\n");
    assert!(
        err.contains("line 2") && err.contains("request_timeout"),
        "{err}"
    );

    let err = fails_to_start("[client_ip]\nipv6_prefix = 200\n");
    assert!(err.contains("ipv6_prefix"), "{err}");

    let err = fails_to_start("[backend]\nmax_batch = 0\n");
    assert!(err.contains("line 2") && err.contains("max_batch"), "{err}");

    let err = fails_to_start("[server]\nidle_timeout = \"0s\"\n");
    assert!(
        err.contains("line 2, column 16, `idle_timeout`: a timeout must be longer than zero"),
        "{err}"
    );

    let err = fails_to_start("[backend]\ntimeout = \"0ms\"\n");
    assert!(
        err.contains("invalid `backend.timeout`: must be longer than zero"),
        "{err}"
    );
}

#[test]
fn the_sample_config_file_is_the_default_service() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/ratelimit-axum-example.toml"
    ))
    .unwrap();
    let config = ratelimit_axum_example::Config::from_toml_str(&text).unwrap();
    let default = ratelimit_axum_example::Config::default();
    assert_eq!(config.limit, default.limit);
    assert_eq!(config.bind, default.bind);
    assert_eq!(config.http.denied_body, "Ratelimited!");
    assert_eq!(
        format!("{:?}", config.server),
        format!("{:?}", default.server)
    );
}

#[test]
fn sigterm_lets_the_in_flight_stream_finish() {
    let (mut child, addr, mut logs) = start_binary(&[], &[("RATELIMIT_DELTA_DELAY", "40ms")]);
    let mut conn = TcpStream::connect(addr).unwrap();
    let body = r#"{"messages":[{"role":"user","content":"Hi"}]}"#;
    write!(
        conn,
        "POST /api/generate HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    // Wait for the answer to begin: the stream is then in flight, with
    // about a second of deltas still to come.
    let mut reader = BufReader::new(conn);
    let mut head = String::new();
    while !head.contains("text-delta") {
        assert!(
            reader.read_line(&mut head).unwrap() > 0,
            "closed early: {head}"
        );
    }
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");

    let killed = Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());

    let mut rest = String::new();
    reader.read_to_string(&mut rest).unwrap();
    assert!(
        rest.contains("\"type\":\"finish\""),
        "the stream finished: {rest}"
    );
    assert!(rest.contains("data: [DONE]"), "{rest}");
    let status = child.0.wait().unwrap();
    assert!(status.success(), "clean exit after shutdown: {status:?}");
    let mut log = String::new();
    logs.read_to_string(&mut log).unwrap();
    assert!(log.contains("shutting down"), "{log}");
}
