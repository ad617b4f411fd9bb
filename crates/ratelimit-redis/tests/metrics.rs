//! The Redis metrics: one count per script call by result, and the size
//! of each call.

mod support;

use std::sync::Arc;
use std::time::Duration;

use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};
use metrics_util::registry::{AtomicStorage, Registry};
use ratelimit_core::{Limiter, Policy};
use ratelimit_redis::{RedisLimiter, RedisOptions};
use ratelimit_redis_harness::RedisServer;

use support::fresh_prefix;

/// A recorder whose values can be read any number of times.
struct TestRecorder(Registry<Key, AtomicStorage>);

impl TestRecorder {
    fn calls(&self, result: &str) -> u64 {
        self.0
            .get_counter_handles()
            .into_iter()
            .find(|(k, _)| {
                k.name() == "ratelimit_redis_calls_total"
                    && k.labels()
                        .any(|l| l.key() == "result" && l.value() == result)
            })
            .map_or(0, |(_, c)| c.load(std::sync::atomic::Ordering::SeqCst))
    }

    fn batch_sizes(&self) -> Vec<f64> {
        self.0
            .get_histogram_handles()
            .into_iter()
            .find(|(k, _)| k.name() == "ratelimit_redis_batch_size")
            .map(|(_, h)| h.data())
            .unwrap_or_default()
    }
}

impl Recorder for TestRecorder {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        self.0
            .get_or_create_counter(key, |c| Counter::from_arc(Arc::clone(c)))
    }
    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        self.0
            .get_or_create_gauge(key, |g| Gauge::from_arc(Arc::clone(g)))
    }
    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        self.0
            .get_or_create_histogram(key, |h| Histogram::from_arc(Arc::clone(h)))
    }
}

#[test]
fn script_calls_are_counted_by_result_with_their_size() {
    let mut server = RedisServer::start();
    let recorder = TestRecorder(Registry::atomic());
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
        assert_eq!(recorder.calls("ok"), 3);
        assert_eq!(recorder.batch_sizes(), [1.0; 3]);

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
        let sizes = recorder.batch_sizes();
        assert_eq!(sizes.iter().sum::<f64>(), 23.0, "{sizes:?}");
        assert!(sizes.iter().any(|n| *n > 1.0), "{sizes:?}");
        assert_eq!(recorder.calls("ok"), sizes.len() as u64);

        server.pause();
        assert!(limiter.check_one(b"k").await.unwrap_err().is_timeout());
        assert_eq!(recorder.calls("timeout"), 1);
        server.resume();

        server.stop();
        assert!(limiter.check_one(b"k").await.is_err());
        assert!(
            recorder.calls("error") + recorder.calls("timeout") >= 2,
            "the call to a stopped server counts"
        );
        let sizes = recorder.batch_sizes();
        let calls = recorder.calls("ok") + recorder.calls("error") + recorder.calls("timeout");
        assert_eq!(calls, sizes.len() as u64, "one size per call");
    });
}
