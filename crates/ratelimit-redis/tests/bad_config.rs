//! Bad configuration gives a clear error quickly, never a hang.

mod support;

use std::net::{Ipv4Addr, TcpListener};
use std::time::{Duration, Instant};

use ratelimit_core::{ErrorChain, Limiter, Policy};
use ratelimit_redis::{ConnectError, ConnectErrorKind, RedisLimiter, RedisOptions};
use ratelimit_redis_harness::{free_port, free_port_with_bus, RedisServer};

use support::runtime;

/// Well above the 2 s connect deadline: proves "no hang", nothing finer.
const NO_HANG: Duration = Duration::from_secs(10);

fn connect(options: RedisOptions) -> ConnectError {
    let policy = Policy::fixed_window(5, Duration::from_secs(1)).unwrap();
    let started = Instant::now();
    let result = runtime().block_on(RedisLimiter::connect(
        policy,
        options.with_timeout(Duration::from_millis(200)),
    ));
    assert!(started.elapsed() < NO_HANG, "took {:?}", started.elapsed());
    match result {
        Ok(limiter) => panic!("connected: {limiter:?}"),
        Err(e) => e,
    }
}

fn assert_error(err: &ConnectError, kind: ConnectErrorKind, needle: &str) {
    assert_eq!(err.kind(), kind, "{err}");
    assert!(err.to_string().contains(needle), "{err:?} lacks {needle:?}");
}

#[test]
fn nothing_listening() {
    let url = format!("redis://127.0.0.1:{}", free_port());
    let err = connect(RedisOptions::standalone(url));
    assert_error(&err, ConnectErrorKind::Unreachable, "cannot be reached");
    // Each cause once, however the chain is printed: by `ErrorChain`, or
    // naively, cause after cause (as anyhow's `{:#}` does).
    let chain = ErrorChain(&err).to_string();
    assert_eq!(chain.matches("Connection refused").count(), 1, "{chain}");
    let mut naive = err.to_string();
    let mut next = std::error::Error::source(&err);
    while let Some(cause) = next {
        naive = format!("{naive}: {cause}");
        next = cause.source();
    }
    assert_eq!(naive, chain);
    assert!(
        chain.ends_with("is running: Connection refused (os error 111)"),
        "{chain}"
    );
}

#[test]
fn nothing_listening_for_a_cluster() {
    let url = format!("redis://127.0.0.1:{}", free_port());
    let err = connect(RedisOptions::cluster([url]));
    assert!(
        matches!(
            err.kind(),
            ConnectErrorKind::Unreachable | ConnectErrorKind::Timeout
        ),
        "{err:?}"
    );
}

#[test]
fn a_listener_that_never_answers() {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let url = format!(
        "redis://127.0.0.1:{}",
        listener.local_addr().unwrap().port()
    );
    // The OS completes the handshake (backlog); nothing ever replies.
    let err = connect(RedisOptions::standalone(url));
    assert!(
        matches!(
            err.kind(),
            ConnectErrorKind::Timeout | ConnectErrorKind::Unreachable
        ),
        "{err:?}"
    );
    drop(listener);
}

#[test]
fn wrong_or_missing_password() {
    let server = RedisServer::start_with(&["--requirepass", "s3cret"]);
    let port = server.port();
    let wrong = connect(RedisOptions::standalone(format!(
        "redis://:wrong@127.0.0.1:{port}"
    )));
    assert_error(
        &wrong,
        ConnectErrorKind::Authentication,
        "refused the credentials",
    );
    assert!(
        !wrong.to_string().contains("wrong"),
        "the password is not shown: {wrong}"
    );
    let missing = connect(RedisOptions::standalone(server.url()));
    assert_error(
        &missing,
        ConnectErrorKind::Authentication,
        "refused the credentials",
    );

    let policy = Policy::fixed_window(5, Duration::from_secs(1)).unwrap();
    let right = RedisOptions::standalone(format!("redis://:s3cret@127.0.0.1:{port}"));
    runtime()
        .block_on(RedisLimiter::connect(policy, right))
        .expect("the right password connects");
}

#[test]
fn standalone_server_given_as_a_cluster() {
    let server = RedisServer::start();
    let err = connect(RedisOptions::cluster([server.url()]));
    assert_error(
        &err,
        ConnectErrorKind::NotACluster,
        "not a Redis Cluster node",
    );
}

#[test]
fn cluster_node_given_as_standalone() {
    let node = RedisServer::start_on(free_port_with_bus(), &["--cluster-enabled", "yes"]);
    let err = connect(RedisOptions::standalone(node.url()));
    assert_error(&err, ConnectErrorKind::IsACluster, "under `cluster`");
}

#[test]
fn invalid_url_and_prefix() {
    let err = connect(RedisOptions::standalone("http://127.0.0.1:1"));
    assert_error(
        &err,
        ConnectErrorKind::InvalidConfig,
        "invalid Redis configuration",
    );
    let err = connect(RedisOptions::standalone("redis://127.0.0.1:1").with_prefix("a{b}"));
    assert_error(&err, ConnectErrorKind::InvalidConfig, "invalid `prefix`");
}

#[test]
fn max_batch_beyond_what_lua_can_take() {
    let too_many = std::num::NonZeroUsize::new(RedisOptions::MAX_MAX_BATCH + 1).unwrap();
    let err = connect(RedisOptions::standalone("redis://127.0.0.1:1").with_max_batch(too_many));
    assert_error(
        &err,
        ConnectErrorKind::InvalidConfig,
        "invalid `max_batch`: 1025",
    );
}

/// The largest batch Lua can take runs: 1024 queued requests decided by
/// calls of up to 1024 keys each.
#[test]
fn the_largest_batch_runs() {
    let server = RedisServer::start();
    runtime().block_on(async {
        let policy = Policy::fixed_window(5, Duration::from_secs(60)).unwrap();
        let most = std::num::NonZeroUsize::new(RedisOptions::MAX_MAX_BATCH).unwrap();
        let options = RedisOptions::standalone(server.url())
            .with_timeout(Duration::from_secs(5))
            .with_max_batch(most);
        let limiter = std::sync::Arc::new(RedisLimiter::connect(policy, options).await.unwrap());
        server.pause();
        let tasks: Vec<_> = (0..2 * RedisOptions::MAX_MAX_BATCH)
            .map(|i| {
                let limiter = std::sync::Arc::clone(&limiter);
                tokio::spawn(async move { limiter.check(format!("k{i}").as_bytes(), 1).await })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(100)).await;
        server.resume();
        for task in tasks {
            let decision = task.await.unwrap().expect("Redis decided");
            assert_eq!(decision.remaining, 4);
        }
    });
}
