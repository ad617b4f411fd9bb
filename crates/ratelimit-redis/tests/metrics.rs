//! The Redis metrics: one count per script call by result, and the size
//! of each call.

mod support;

use std::sync::Arc;
use std::time::Duration;

use ratelimit_core::{Limiter, Policy};
use ratelimit_redis::{RedisLimiter, RedisOptions};
use ratelimit_redis_harness::RedisServer;
use ratelimit_testkit::TestRecorder;

use support::fresh_prefix;

const CALLS: &str = "ratelimit_redis_calls_total";
const BATCH_SIZE: &str = "ratelimit_redis_batch_size";

#[test]
fn script_calls_are_counted_by_result_with_their_size() {
    let mut server = RedisServer::start();
    let recorder = TestRecorder::default();
    let calls = |result| recorder.counter(CALLS, &[("result", result)]);
    let batch_sizes = || recorder.histogram(BATCH_SIZE, &[]);
    // One thread: the recorder set for it is the one the limiter registers
    // its handles with when it connects.
    let _guard = metrics::set_default_local_recorder(&recorder);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let policy = Policy::fixed_window(100, Duration::from_secs(60)).unwrap();
        let options = RedisOptions::standalone(server.url())
            .with_prefix(fresh_prefix("metrics"))
            .with_timeout(Duration::from_millis(300));
        let limiter = Arc::new(RedisLimiter::connect(policy, options).await.unwrap());
        for _ in 0..3 {
            limiter.check_one(b"lone").await.unwrap();
        }
        assert_eq!(calls("ok"), 3);
        assert_eq!(batch_sizes(), [1.0; 3]);

        // Requests made while the server is frozen queue behind the first
        // and go together once it thaws.
        server.pause();
        let tasks: Vec<_> = (0..20)
            .map(|_| {
                let limiter = Arc::clone(&limiter);
                tokio::spawn(async move { limiter.check_one(b"many").await })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(20)).await;
        server.resume();
        for task in tasks {
            task.await.unwrap().expect("Redis decided");
        }
        let sizes = batch_sizes();
        assert_eq!(sizes.iter().sum::<f64>(), 23.0, "{sizes:?}");
        assert!(sizes.iter().any(|n| *n > 1.0), "{sizes:?}");
        assert_eq!(calls("ok"), sizes.len() as u64);

        server.pause();
        assert!(limiter.check_one(b"k").await.unwrap_err().is_timeout());
        assert_eq!(calls("timeout"), 1);
        server.resume();

        server.stop();
        assert!(limiter.check_one(b"k").await.is_err());
        assert!(
            calls("error") + calls("timeout") >= 2,
            "the call to a stopped server counts"
        );
        let sizes = batch_sizes();
        let calls = calls("ok") + calls("error") + calls("timeout");
        assert_eq!(calls, sizes.len() as u64, "one size per call");
    });
}
