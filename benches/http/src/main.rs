//! `ratelimit-tower` against `tower_governor` 0.8 over real HTTP: the same
//! one-route axum app (`POST /` answering `ok`) served in several variants on
//! loopback ports, for two paths.
//!
//! | variant | limiter |
//! |---|---|
//! | `ours` | `RateLimitLayer` over a `MemoryLimiter`, its defaults (peer-IP key, five headers, one-second check timeout) |
//! | `ietf` | `ours` with the `X-RateLimit-*` fields off (`RateLimitHeaders::with_legacy_fields(false)`): the draft's two fields, as many as governor writes on the allowed path |
//! | `governor` | `GovernorLayer` with `PeerIpKeyExtractor` and `.use_headers()` |
//! | `layer` | no limiter, a pass-through layer (`tower::layer::layer_fn(\|s\| s)`): what axum's `Router::layer` costs any limiter's layer (the route boxed again, its response mapped) |
//! | `none` | no limiter |
//! | `fields` | no limiter; the handler answers with ours' five fields as constants of the same length (allowed path only): what writing and reading the fields costs any limiter that sends them |
//!
//! | path | limit |
//! |---|---|
//! | `allowed` | so large it never denies during a run (ours: a fixed window) |
//! | `denied` | one request an hour, spent here before the ports are printed, so every later request is a 429 (ours: a token bucket, like governor's) |
//!
//! Run with: `scripts/bench-http [ROUNDS] [SECONDS]`, which starts this
//! binary, drives each port with wrk in interleaved rounds and prints the
//! ratios. By hand: `cargo run --release -- [LIFETIME_SECONDS]`; it prints
//! one `PATH VARIANT PORT` line per server, then `ready`, and exits after
//! `LIFETIME_SECONDS` (600 by default) so that no run outlives its script.

// A report binary: printing is its purpose.
#![allow(clippy::print_stdout)]

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::routing::post;
use axum::Router;
use ratelimit_core::{Limiter, Policy};
use ratelimit_memory::MemoryLimiter;
use ratelimit_tower::{RateLimitHeaders, RateLimitLayer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tower_governor::governor::GovernorConfigBuilder;
use tower_governor::key_extractor::PeerIpKeyExtractor;
use tower_governor::GovernorLayer;

/// The window of both limits: longer than any run, so the denied path
/// never gets its request back and the allowed path never resets mid-run.
const WINDOW: Duration = Duration::from_secs(3600);

/// Requests the allowed path may take in one window: about 9 hours at
/// 30 000 requests a second, far beyond any run (and below the 2^53 bound
/// that `Policy::fixed_window` puts on the limit times the window in ms).
const NEVER_DENIES: u32 = 1_000_000_000;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Path {
    Allowed,
    Denied,
}

impl Path {
    fn name(self) -> &'static str {
        match self {
            Path::Allowed => "allowed",
            Path::Denied => "denied",
        }
    }

    fn limit(self) -> u32 {
        match self {
            Path::Allowed => NEVER_DENIES,
            Path::Denied => 1,
        }
    }
}

fn route() -> Router {
    Router::new().route("/", post(|| async { "ok" }))
}

fn ours(path: Path) -> Router {
    route().layer(RateLimitLayer::new(limiter(path)))
}

/// `ours` writing the IETF draft's two fields only.
fn ietf(path: Path) -> Router {
    let headers = RateLimitHeaders::default().with_legacy_fields(false);
    route().layer(RateLimitLayer::new(limiter(path)).with_headers(headers))
}

fn limiter(path: Path) -> Arc<dyn Limiter> {
    let policy = match path {
        Path::Allowed => Policy::fixed_window(u64::from(path.limit()), WINDOW),
        // A token bucket of one token a window, as governor's: a fixed
        // window starts again at the top of every hour (its windows are
        // aligned to the epoch), and a run across it would see one 200.
        Path::Denied => Policy::token_bucket(1, 1, WINDOW),
    }
    .expect("valid policy");
    Arc::new(MemoryLimiter::new(policy))
}

/// No limiter; the handler answers with the five fields ours writes on
/// the allowed path, as constants of the same length: what the fields
/// alone cost (the map's inserts, hyper's writing, wrk's reading), the
/// bound of any limiter that writes them.
fn fields() -> Router {
    use axum::http::{HeaderName, HeaderValue};
    const FIELDS: [(HeaderName, HeaderValue); 5] = [
        (
            HeaderName::from_static("ratelimit-policy"),
            HeaderValue::from_static("\"default\";q=1000000000;w=3600"),
        ),
        (
            HeaderName::from_static("ratelimit"),
            HeaderValue::from_static("\"default\";r=999999997;t=3042"),
        ),
        (
            HeaderName::from_static("x-ratelimit-limit"),
            HeaderValue::from_static("1000000000"),
        ),
        (
            HeaderName::from_static("x-ratelimit-remaining"),
            HeaderValue::from_static("999999997"),
        ),
        (
            HeaderName::from_static("x-ratelimit-reset"),
            HeaderValue::from_static("3042"),
        ),
    ];
    Router::new().route("/", post(|| async { (FIELDS, "ok") }))
}

/// The route behind a layer that does nothing: axum boxes the layered
/// route again, as it does for either limiter's layer.
fn pass_through() -> Router {
    route().layer(tower::layer::layer_fn(|service| service))
}

fn governor(path: Path) -> Router {
    // tower_governor's `per_second(n)` replenishes one request every `n`
    // seconds; `burst_size` is the quota. The allowed path replenishes one
    // a millisecond: a burst of `NEVER_DENIES` at one per hour overflows
    // governor's nanosecond arithmetic, and it then denies.
    let mut builder = GovernorConfigBuilder::default();
    builder.key_extractor(PeerIpKeyExtractor);
    match path {
        Path::Allowed => builder.per_millisecond(1),
        Path::Denied => builder.per_second(WINDOW.as_secs()),
    };
    let config = builder
        .burst_size(path.limit())
        .use_headers()
        .finish()
        .expect("valid governor config");
    route().layer(GovernorLayer::new(config))
}

/// Serves `app` on a free loopback port with the peer address available
/// to both key extractors (axum's `ConnectInfo`); returns the port.
async fn serve(app: Router) -> u16 {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .expect("bind a loopback port");
    let port = listener.local_addr().expect("bound address").port();
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .expect("serve");
    });
    port
}

/// Sends one `POST /` and returns the status code and the lower-cased
/// names of the response's rate-limit header fields.
async fn post_once(port: u16) -> (u16, Vec<String>) {
    let mut stream = TcpStream::connect((Ipv4Addr::LOCALHOST, port))
        .await
        .expect("connect to the server");
    stream
        .write_all(
            b"POST / HTTP/1.1\r\nHost: bench\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        )
        .await
        .expect("send the request");
    let mut raw = Vec::new();
    stream
        .read_to_end(&mut raw)
        .await
        .expect("read the response");
    let text = String::from_utf8_lossy(&raw).to_ascii_lowercase();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .expect("an HTTP status line");
    let headers = text
        .lines()
        .filter_map(|line| line.split_once(':').map(|(name, _)| name.to_owned()))
        .filter(|name| name.contains("ratelimit") || name == "retry-after")
        .collect();
    (status, headers)
}

#[tokio::main]
async fn main() {
    let lifetime: u64 = std::env::args()
        .nth(1)
        .map_or(600, |s| s.parse().expect("LIFETIME_SECONDS is a number"));
    for path in [Path::Allowed, Path::Denied] {
        let mut variants = vec![
            ("ours", ours(path), true),
            ("ietf", ietf(path), true),
            ("governor", governor(path), true),
            ("layer", pass_through(), false),
            ("none", route(), false),
        ];
        if path == Path::Allowed {
            variants.push(("fields", fields(), false));
        }
        for (variant, app, limited) in variants {
            let port = serve(app).await;
            // The first request spends the denied path's quota, and both
            // say what a client sees: the check fails loudly if a variant
            // does not answer as its path says.
            let (first, _) = post_once(port).await;
            let (second, headers) = post_once(port).await;
            let expected = if limited && path == Path::Denied {
                429
            } else {
                200
            };
            assert_eq!(first, 200, "{} {variant}: first request", path.name());
            assert_eq!(
                second,
                expected,
                "{} {variant}: second request",
                path.name()
            );
            println!(
                "{} {variant} {port} status={second} headers={}",
                path.name(),
                headers.join(",")
            );
        }
    }
    println!("ready");
    tokio::time::sleep(Duration::from_secs(lifetime)).await;
}
