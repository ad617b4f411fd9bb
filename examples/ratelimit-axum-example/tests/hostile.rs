//! Hostile clients over real loopback sockets: slow and silent ones, idle
//! kept-alive ones, too many at once, lying or wrong headers, and a
//! shutdown while they hang on.
//!
//! The server's own timers are what is under test here, so these tests
//! run on the real clock, with short configured timeouts (a head is due
//! within 1 s, an idle connection is closed after 2 s) and every wait
//! bounded by `MARGIN`. Lower bounds ("not closed before the timeout")
//! hold on any machine; upper bounds get the margin.

mod common;

use std::io::{Read as _, Write as _};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::process::{start_stream, ConfigFile, Process};
use common::{test_app, PLAIN_BODY};
use ratelimit_axum_example::{serve, Config};
use ratelimit_core::Limiter;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// Slack on every upper bound, for a loaded machine.
const MARGIN: Duration = Duration::from_secs(5);
const HEADER_READ: Duration = Duration::from_secs(1);
const IDLE: Duration = Duration::from_secs(2);

/// The service, served by [`serve`] on a free loopback port with short
/// server timeouts (then `adjust`); stopped when dropped.
struct Running {
    addr: SocketAddr,
    limiter: Arc<dyn Limiter>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

async fn start(adjust: impl FnOnce(&mut Config)) -> Running {
    let mut config = Config::default();
    config.model.delta_delay = Duration::ZERO;
    config.server.header_read_timeout = HEADER_READ;
    config.server.idle_timeout = IDLE;
    adjust(&mut config);
    let server = config.server.clone();
    let app = test_app(move |c| *c = config);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let router = app.router;
    tokio::spawn(async move {
        serve(listener, router, &server, async {
            let _ = stopped.await;
        })
        .await;
    });
    Running {
        addr,
        limiter: app.limiter,
        _stop: stop,
    }
}

/// Reads until the server closes the connection (end of stream or a
/// reset), at most `bound`; returns how long that took and what came.
async fn closed_within(
    conn: &mut tokio::net::tcp::OwnedReadHalf,
    bound: Duration,
) -> (Duration, String) {
    let start = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = bound.saturating_sub(start.elapsed());
        match tokio::time::timeout(left, conn.read(&mut buf)).await {
            Err(_) => panic!(
                "still open after {bound:?}; received {:?}",
                String::from_utf8_lossy(&got)
            ),
            Ok(Ok(0) | Err(_)) => return (start.elapsed(), String::from_utf8_lossy(&got).into()),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
}

/// Reads one response with a `Content-Length` body from a kept-alive
/// connection; returns its head and body.
async fn response(conn: &mut tokio::net::tcp::OwnedReadHalf) -> (String, String) {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let read = async {
        loop {
            let n = conn.read(&mut buf).await.unwrap();
            assert!(
                n > 0,
                "closed mid-response: {:?}",
                String::from_utf8_lossy(&got)
            );
            got.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&got).into_owned();
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let len: usize = head
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length: ")
                            .map(str::to_owned)
                    })
                    .and_then(|v| v.trim().parse().ok())
                    .expect("a content-length");
                if body.len() >= len {
                    return (head.to_owned(), body.to_owned());
                }
            }
        }
    };
    tokio::time::timeout(MARGIN, read)
        .await
        .expect("an answer in time")
}

#[tokio::test]
async fn trickled_headers_are_cut_at_the_header_read_timeout() {
    let server = start(|c| c.server.idle_timeout = Duration::from_secs(60)).await;
    let conn = TcpStream::connect(server.addr).await.unwrap();
    let connected = Instant::now();
    let (mut rd, mut wr) = conn.into_split();
    // One byte every 100 ms of a head that would never end: each byte
    // is progress, none of it may buy more time.
    let trickle = tokio::spawn(async move {
        let head = b"POST /api/generate HTTP/1.1\r\nhost: x\r\nx-slow: ";
        for byte in head.iter().chain(std::iter::repeat(&b'a')) {
            if wr.write_all(&[*byte]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let (after, answer) = closed_within(&mut rd, HEADER_READ + MARGIN).await;
    assert!(
        connected.elapsed() >= HEADER_READ,
        "not before the timeout: {after:?}"
    );
    assert!(answer.is_empty(), "no request was answered: {answer}");
    tokio::time::timeout(MARGIN, trickle)
        .await
        .expect("the trickle's writes fail once closed")
        .unwrap();
}

#[tokio::test]
async fn a_silent_connection_is_closed_at_the_header_read_timeout() {
    // A generous idle allowance: a new connection does not get it.
    let server = start(|c| c.server.idle_timeout = Duration::from_secs(60)).await;
    let conn = TcpStream::connect(server.addr).await.unwrap();
    let connected = Instant::now();
    let (mut rd, _wr) = conn.into_split();
    let (_, answer) = closed_within(&mut rd, HEADER_READ + MARGIN).await;
    assert!(connected.elapsed() >= HEADER_READ);
    assert!(answer.is_empty(), "{answer}");
}

#[tokio::test]
async fn an_idle_kept_alive_connection_is_closed_at_the_idle_timeout_not_before() {
    let server = start(|_| {}).await;
    let (mut rd, mut wr) = TcpStream::connect(server.addr).await.unwrap().into_split();
    for _ in 0..2 {
        wr.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        let (head, body) = response(&mut rd).await;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert_eq!(body, "ok");
    }
    let answered = Instant::now();
    // Past the head's budget: an idle connection is still held...
    let early = tokio::time::timeout(HEADER_READ + IDLE / 4, rd.read(&mut [0u8; 16])).await;
    assert!(early.is_err(), "closed before the idle timeout: {early:?}");
    // ...and closed at the idle timeout.
    let (_, rest) = closed_within(&mut rd, IDLE + MARGIN).await;
    assert!(answered.elapsed() >= IDLE);
    assert!(rest.is_empty(), "{rest}");
}

#[tokio::test]
async fn beyond_max_connections_a_new_connection_is_closed_at_once() {
    let server = start(|c| {
        c.server.max_connections = 3.try_into().unwrap();
        c.server.header_read_timeout = Duration::from_secs(60);
    })
    .await;
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(TcpStream::connect(server.addr).await.unwrap().into_split());
    }
    // Accepted in order: the fourth finds no slot left.
    let (mut rd, _wr) = TcpStream::connect(server.addr).await.unwrap().into_split();
    let (_, answer) = closed_within(&mut rd, MARGIN).await;
    assert!(answer.is_empty(), "{answer}");

    // The three held connections are served.
    let (rd, wr) = &mut held[0];
    wr.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    assert!(response(rd).await.0.starts_with("HTTP/1.1 200"));

    // Once one leaves, its slot serves someone else.
    held.pop();
    let deadline = Instant::now() + MARGIN;
    let client = reqwest::Client::new();
    loop {
        let res = client
            .get(format!("http://{}/healthz", server.addr))
            .send()
            .await;
        if let Ok(res) = res {
            assert_eq!(res.status(), 200);
            break;
        }
        assert!(Instant::now() < deadline, "the freed slot was never reused");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn an_announced_ten_megabytes_is_413_without_waiting_for_them() {
    let server = start(|_| {}).await;
    let (mut rd, mut wr) = TcpStream::connect(server.addr).await.unwrap().into_split();
    wr.write_all(
        b"POST /api/generate HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 10000000\r\n\r\n",
    )
    .await
    .unwrap();
    // Not a byte of the body is sent: the answer can only come from the
    // header, well before the request timeout (30 s).
    let (head, body) = response(&mut rd).await;
    assert!(head.starts_with("HTTP/1.1 413"), "{head}");
    assert_eq!(body, "The request body is too large.");
    assert!(
        head.to_ascii_lowercase()
            .contains("x-ratelimit-remaining: 4"),
        "counted: {head}"
    );
}

#[tokio::test]
async fn bodies_not_declared_as_json_are_415() {
    let server = start(|_| {}).await;
    let client = reqwest::Client::new();
    let url = format!("http://{}/api/generate", server.addr);
    for content_type in [
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        Some("multipart/form-data; boundary=x"),
        None,
    ] {
        let mut req = client.post(&url).body(PLAIN_BODY);
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        let res = req.send().await.unwrap();
        assert_eq!(res.status(), 415, "{content_type:?}");
    }
    let res = client
        .post(&url)
        .header("content-type", "application/json; charset=utf-8")
        .body(PLAIN_BODY)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.headers()["x-ratelimit-remaining"],
        "0",
        "the four refusals counted"
    );
}

#[tokio::test]
async fn a_malformed_forwarded_hop_is_not_the_client() {
    let server = start(|c| {
        c.client_ip.trusted_proxies = vec!["127.0.0.0/8".parse().unwrap()];
        c.client_ip.header = ratelimit_tower::ProxyHeader::Forwarded;
    })
    .await;
    let client = reqwest::Client::new();
    let url = format!("http://{}/api/generate", server.addr);
    let post = |forwarded: String| {
        client
            .post(&url)
            .header("content-type", "application/json")
            .header("forwarded", forwarded)
            .body(PLAIN_BODY)
            .send()
    };
    // A well-formed hop from the trusted proxy names the client.
    let res = post("for=198.51.100.1".into()).await.unwrap();
    assert_eq!(res.status(), 200);
    res.text().await.unwrap();
    assert_eq!(
        server
            .limiter
            .peek(b"198.51.100.1/32")
            .await
            .unwrap()
            .remaining,
        4
    );

    // An unterminated quoted string is not an address (RFC 7239 and
    // RFC 7230's quoted-string): the hop is unreadable, the walk stops
    // there, and the nearest trusted address (the proxy, our loopback
    // peer) stands for the client. Fresh forged addresses change nothing.
    for i in 10..15 {
        let res = post(format!("for=\"198.51.100.{i}")).await.unwrap();
        assert_eq!(res.status(), 200);
        res.text().await.unwrap();
        assert_eq!(
            server
                .limiter
                .peek(format!("198.51.100.{i}/32").as_bytes())
                .await
                .unwrap()
                .remaining,
            5,
            "the malformed hop was used as the client"
        );
    }
    assert_eq!(
        server
            .limiter
            .peek(b"127.0.0.1/32")
            .await
            .unwrap()
            .remaining,
        0
    );
    let res = post("for=203.0.113.9, for=\"198.51.100.99".into())
        .await
        .unwrap();
    assert_eq!(
        res.status(),
        429,
        "a readable hop beyond the malformed one is not trusted"
    );
}

/// Connects and writes `bytes` (maybe nothing, maybe a partial head).
fn hostile(addr: SocketAddr, bytes: &[u8]) -> std::net::TcpStream {
    let mut conn = std::net::TcpStream::connect(addr).unwrap();
    conn.write_all(bytes).unwrap();
    conn.set_read_timeout(Some(MARGIN)).unwrap();
    conn
}

/// A configuration with long head and idle budgets, so that only the
/// shutdown may close the connections, and `grace` to shut down.
fn server_config(name: &str, grace: &str) -> ConfigFile {
    let text = format!(
        "[server]\nheader_read_timeout = \"60s\"\nidle_timeout = \"60s\"\nshutdown_grace = \"{grace}\"\n"
    );
    ConfigFile::new(&format!("hostile-{name}"), &text)
}

#[test]
fn sigterm_with_hostile_clients_lets_the_stream_finish_and_exits() {
    let config = server_config("short-stream", "5s");
    let mut service = Process::start(
        &["--config", config.arg()],
        &[("RATELIMIT_DELTA_DELAY", "30ms")],
        "info",
    );
    let addr = service.addr();
    let mut silent = hostile(addr, b"");
    let mut slow = hostile(addr, b"POST /api/generate HTTP/1.1\r\nhost: x\r\nx-slo");
    let mut idle = hostile(addr, b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n");
    let mut answer = [0u8; 256];
    let n = idle.read(&mut answer).unwrap();
    assert!(
        answer[..n].starts_with(b"HTTP/1.1 200"),
        "the idle client was served once"
    );
    let mut stream = start_stream(addr, MARGIN);

    let signalled = Instant::now();
    service.sigterm();
    // The hostile connections are closed at once: not at their budgets
    // (60 s), nor at the end of the grace (5 s).
    for (name, conn) in [
        ("silent", &mut silent),
        ("slow", &mut slow),
        ("idle", &mut idle),
    ] {
        let mut rest = Vec::new();
        let closed = conn.read_to_end(&mut rest);
        assert!(
            closed.is_ok()
                || closed
                    .as_ref()
                    .is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset),
            "{name}: {closed:?}"
        );
        assert!(
            rest.is_empty(),
            "{name}: {:?}",
            String::from_utf8_lossy(&rest)
        );
        assert!(
            signalled.elapsed() < Duration::from_secs(4),
            "{name}: closed late"
        );
    }
    // The running stream (about 1.5 s) is shorter than the grace: it ends whole.
    let mut rest = String::new();
    stream.read_to_string(&mut rest).unwrap();
    assert!(rest.contains("\"type\":\"finish\""), "{rest}");
    assert!(rest.contains("data: [DONE]\n\n"), "{rest}");
    assert!(
        rest.ends_with("\r\n0\r\n\r\n"),
        "the chunked body is complete: {rest}"
    );
    let status = service.exits_within(Duration::from_secs(5) + MARGIN);
    assert!(status.success(), "{status:?}");
    assert!(signalled.elapsed() < Duration::from_secs(5) + MARGIN);
    let log_text = service.output();
    assert!(
        !log_text.contains("still open after the shutdown grace"),
        "{log_text}"
    );
}

#[test]
fn sigterm_cuts_a_stream_longer_than_the_grace() {
    let config = server_config("long-stream", "1s");
    let mut service = Process::start(
        &["--config", config.arg()],
        // About 45 deltas at 300 ms: some 13 s, far past the grace.
        &[("RATELIMIT_DELTA_DELAY", "300ms")],
        "info",
    );
    let addr = service.addr();
    let _slow = hostile(addr, b"POST /api/generate HTTP/1.1\r\nhost: x\r\nx-slo");
    let mut stream = start_stream(addr, MARGIN);
    let signalled = Instant::now();
    service.sigterm();
    let status = service.exits_within(Duration::from_secs(1) + MARGIN);
    assert!(status.success(), "{status:?}");
    assert!(
        signalled.elapsed() >= Duration::from_secs(1),
        "the grace was given"
    );
    let mut rest = Vec::new();
    let _ = stream.read_to_end(&mut rest);
    let rest = String::from_utf8_lossy(&rest);
    assert!(!rest.contains("[DONE]"), "the stream was cut: {rest}");
    let log_text = service.output();
    assert!(
        log_text.contains("closing the connections still open after the shutdown grace"),
        "{log_text}"
    );
}
