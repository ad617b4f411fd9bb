//! `rediss://` URLs: the limiter talks TLS to a private `redis-server`
//! serving a certificate from a private CA, trusted through `SSL_CERT_FILE`
//! (the platform's trust store, as rustls-native-certs reads it).
//!
//! One test, because it sets a process-wide environment variable.

mod support;

use std::time::{Duration, Instant};

use ratelimit_core::{ErrorChain, Limiter, Policy};
use ratelimit_redis::{ConnectErrorKind, RedisLimiter, RedisOptions};
use ratelimit_redis_harness::{free_port, RedisServer, TestCertificates};

use support::{fresh_prefix, runtime};

#[test]
fn rediss_urls_talk_tls_and_check_the_certificate() {
    let certs = TestCertificates::generate();
    let tls_port = free_port();
    let args = certs.redis_server_args(tls_port);
    let server = RedisServer::start_with(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let tls_url = format!("rediss://127.0.0.1:{tls_port}");
    let policy = Policy::fixed_window(3, Duration::from_secs(60)).unwrap();
    let options = |url: &str| {
        RedisOptions::standalone(url)
            .with_prefix(fresh_prefix("tls"))
            .with_timeout(Duration::from_millis(500))
    };
    let rt = runtime();

    // Trusting another CA: the certificate is refused, quickly and clearly.
    let other = TestCertificates::generate();
    std::env::set_var("SSL_CERT_FILE", other.ca());
    let started = Instant::now();
    let err = rt
        .block_on(RedisLimiter::connect(policy, options(&tls_url)))
        .unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(10), "{err}");
    assert_eq!(err.kind(), ConnectErrorKind::Tls, "{err}");
    let chain = ErrorChain(&err).to_string();
    assert!(chain.contains("invalid peer certificate"), "{chain}");

    // A plain connection to the TLS port fails too, without hanging.
    let started = Instant::now();
    let plain = format!("redis://127.0.0.1:{tls_port}");
    let err = rt
        .block_on(RedisLimiter::connect(policy, options(&plain)))
        .unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(10), "{err}");

    // Trusted: decisions over TLS, the state on the server.
    std::env::set_var("SSL_CERT_FILE", certs.ca());
    rt.block_on(async {
        let limiter = RedisLimiter::connect(policy, options(&tls_url))
            .await
            .unwrap_or_else(|e| panic!("TLS connect: {e}"));
        for remaining in [2, 1, 0] {
            let decision = limiter.check_one(b"tls-client").await.unwrap();
            assert!(decision.allowed);
            assert_eq!(decision.remaining, remaining);
        }
        assert!(!limiter.check_one(b"tls-client").await.unwrap().allowed);
        let key = String::from_utf8(limiter.redis_key(b"tls-client")).unwrap();
        assert_eq!(server.cli(&["EXISTS", &key]), "1", "seen on the plain port");
    });
}
