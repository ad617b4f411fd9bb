//! The accept loop: a cap on connections, one task per connection, and a
//! shutdown that lets in-flight answers finish within a grace period.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tower::ServiceExt as _;

use super::deadline::{ConnPhase, DeadlineIo, Limits, ResponseBody};
use crate::ServerConfig;

/// How often, at most, a full server says so in the log.
const CAPACITY_WARNING_EVERY: Duration = Duration::from_secs(60);

/// Serves `router` on `listener` over HTTP/1.1 until `shutdown` resolves,
/// with the limits of `config` (see [`ServerConfig`]):
///
/// - a connection must send each request head within
///   `header_read_timeout` of its first byte (its first one within that
///   time of connecting), and may sit silent between requests for
///   `idle_timeout`; past either it is closed. While a request is being
///   answered neither applies: the router's request and stream timeouts
///   do.
/// - at most `max_connections` are served at once. Beyond that a new
///   connection is accepted and closed at once, so a client learns at
///   once instead of waiting in the kernel's backlog, and the backlog
///   stays free for when slots open up.
/// - on `shutdown`, the listener is closed, idle connections and those
///   still sending a head are closed, in-flight requests and streams get
///   up to `shutdown_grace` to finish (their connections closing after
///   their response), and whatever is left then is closed.
///
/// Each request carries `ConnectInfo<SocketAddr>` with the peer address,
/// as `into_make_service_with_connect_info` would, and every accepted
/// socket has `TCP_NODELAY` set.
///
/// # Examples
///
/// ```
/// use std::io::{Read, Write};
/// use axum::{routing::get, Router};
/// use ratelimit_axum_example::{serve, ServerConfig};
///
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
/// let addr = listener.local_addr().unwrap();
/// let router = Router::new().route("/", get(|| async { "hi" }));
/// let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
/// let server = tokio::spawn(async move {
///     serve(listener, router, &ServerConfig::default(), async { stopped.await.ok(); }).await
/// });
///
/// let answer = tokio::task::spawn_blocking(move || {
///     let mut conn = std::net::TcpStream::connect(addr).unwrap();
///     conn.write_all(b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").unwrap();
///     let mut answer = String::new();
///     conn.read_to_string(&mut answer).unwrap();
///     answer
/// }).await.unwrap();
/// assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
/// assert!(answer.ends_with("hi"), "{answer}");
///
/// stop.send(()).unwrap();
/// server.await.unwrap();
/// # });
/// ```
pub async fn serve(
    listener: TcpListener,
    router: Router,
    config: &ServerConfig,
    shutdown: impl Future<Output = ()>,
) {
    let limits = Limits {
        header_read: config.header_read_timeout,
        idle: config.idle_timeout,
    };
    let permits = Arc::new(Semaphore::new(config.max_connections.get()));
    let (stop, stopping) = watch::channel(false);
    let mut connections = JoinSet::new();
    let mut at_capacity = AtCapacity::default();
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            biased;
            () = &mut shutdown => break,
            // Reap finished connections as they end, so the set stays the
            // size of what is open.
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(pair) => pair,
            Err(err) => {
                accept_failed(&err).await;
                continue;
            }
        };
        let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
            at_capacity.refused(config.max_connections.get());
            // Closing (not leaving it in the backlog) tells the client now.
            drop(stream);
            continue;
        };
        connections.spawn(connection(
            stream,
            peer,
            router.clone(),
            limits,
            stopping.clone(),
            permit,
        ));
    }

    // New connections are refused by the kernel from here on.
    drop(listener);
    stop.send_replace(true);
    let drained = tokio::time::timeout(config.shutdown_grace, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            open = connections.len(),
            grace = ?config.shutdown_grace,
            "closing the connections still open after the shutdown grace"
        );
        connections.shutdown().await;
    }
}

/// One connection, from accept to close.
async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    router: Router,
    limits: Limits,
    mut stopping: watch::Receiver<bool>,
    _permit: OwnedSemaphorePermit,
) {
    // Each event of a stream is a small write that should leave at once;
    // with Nagle's algorithm on, it waits for the client's delayed ACK
    // (some 40 ms a stream on Linux).
    if let Err(err) = stream.set_nodelay(true) {
        tracing::warn!(%err, "cannot set TCP_NODELAY");
    }
    let phase = ConnPhase::new();
    let io = TokioIo::new(DeadlineIo::new(stream, phase.clone(), limits));
    let answering = phase.clone();
    let service = service_fn(move |mut req: hyper::Request<Incoming>| {
        phase.busy();
        req.extensions_mut().insert(ConnectInfo(peer));
        let answer = router.clone().oneshot(req);
        let phase = phase.clone();
        async move {
            let response = answer.await?;
            Ok::<_, Infallible>(response.map(|body| ResponseBody::new(body, phase)))
        }
    });
    let conn = http1::Builder::new()
        // Deadlines are kept by `DeadlineIo` (see deadline.rs); hyper's
        // own would cut idle kept-alive connections at the head's budget.
        .header_read_timeout(None)
        .serve_connection(io, service);
    tokio::pin!(conn);
    let closed = tokio::select! {
        closed = conn.as_mut() => closed,
        () = stopped(&mut stopping) => {
            if !answering.is_busy() {
                // Idle, or still sending a head: nothing to finish. hyper
                // would wait for a partial head to complete, so the
                // connection is dropped (closed) here instead.
                return;
            }
            // Closes the connection once the response is written.
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(err) = closed {
        // Timeouts and clients that vanish are routine, and the peer's
        // address is a rate-limit key: neither belongs above DEBUG.
        tracing::debug!(error = %ratelimit_core::ErrorChain(&err), "connection closed");
    }
}

/// Resolves when the server stops (or is dropped).
async fn stopped(stopping: &mut watch::Receiver<bool>) {
    // The guard `wait_for` returns is not `Send`; drop it here.
    let _ = stopping.wait_for(|stop| *stop).await.is_ok();
}

/// An `accept` failure. Errors of one connection (reset before accept)
/// are skipped; running out of file descriptors or memory is worth a
/// warning and a pause, or the loop would spin on it.
async fn accept_failed(err: &io::Error) {
    match err.kind() {
        io::ErrorKind::ConnectionAborted
        | io::ErrorKind::ConnectionReset
        | io::ErrorKind::ConnectionRefused
        | io::ErrorKind::Interrupted => {}
        _ => {
            tracing::warn!(%err, "cannot accept connections; retrying in 100 ms");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Connections refused at the cap, logged at most once a minute so a
/// flood costs no log volume.
#[derive(Debug, Default)]
struct AtCapacity {
    refused: u64,
    warned: Option<Instant>,
}

impl AtCapacity {
    fn refused(&mut self, max_connections: usize) {
        self.refused += 1;
        let due = self
            .warned
            .is_none_or(|at| at.elapsed() >= CAPACITY_WARNING_EVERY);
        if due {
            tracing::warn!(
                max_connections,
                refused = self.refused,
                "connection limit reached: closing new connections at once"
            );
            self.warned = Some(Instant::now());
            self.refused = 0;
        }
    }
}
