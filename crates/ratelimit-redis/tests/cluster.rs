//! The conformance suite, the differential model test and a failover,
//! against a private Redis Cluster of three masters and three replicas.
//!
//! One cluster serves every check of this file, in one test function: a
//! cluster takes seconds to form, and the failover at the end kills a
//! master.

mod support;

use std::time::{Duration, Instant};

use proptest::prelude::*;
use ratelimit_conformance::differential::check_against_model;
use ratelimit_conformance::scenarios::run_all;
use ratelimit_conformance::strategy::awkward_keys;
use ratelimit_core::{Limiter, ManualClock, Policy};
use ratelimit_redis::{ConnectionMode, RedisLimiter, RedisOptions, Target};
use ratelimit_redis_harness::RedisCluster;

use support::{fresh_prefix, make, options, runtime};

#[test]
fn cluster_conformance_differential_and_failover() {
    let mut cluster = RedisCluster::start();
    let target = Target::Cluster(cluster.urls());
    let rt = runtime();

    rt.block_on(run_all(|policy, clock| {
        make(target.clone(), ConnectionMode::Multiplexed, policy, clock)
    }))
    .unwrap_or_else(|v| panic!("conformance on the cluster: {v}"));

    differential(&rt, &target);
    keys_spread_over_all_masters(&rt, &cluster, &target);
    failover(&rt, &mut cluster, &target);
}

fn differential(rt: &tokio::runtime::Runtime, target: &Target) {
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 48,
        // Failing cases are kept (and replayed first) like the
        // `proptest!` macro's regressions files.
        failure_persistence: Some(Box::new(
            proptest::test_runner::FileFailurePersistence::Direct(
                "tests/cluster.proptest-regressions",
            ),
        )),
        ..ProptestConfig::default()
    });
    let strategy = support::differential_cases();
    runner
        .run(&strategy, |(policy, start, steps)| {
            let clock = ManualClock::new(start);
            let outcome = rt.block_on(async {
                let limiter = RedisLimiter::connect(policy, options(target, &clock, "diff"))
                    .await
                    .expect("connect");
                check_against_model(&limiter, &clock, &policy, &awkward_keys(), start, &steps).await
            });
            prop_assert!(outcome.is_ok(), "{}", outcome.unwrap_err());
            Ok(())
        })
        .unwrap();
}

/// Awkward keys hash to many slots (no CROSSSLOT, no hot slot from the
/// prefix): every master holds some.
fn keys_spread_over_all_masters(
    rt: &tokio::runtime::Runtime,
    cluster: &RedisCluster,
    target: &Target,
) {
    rt.block_on(async {
        let clock = ManualClock::new(1_700_000_000_000_000);
        let policy = Policy::fixed_window(5, Duration::from_secs(60)).unwrap();
        let limiter = RedisLimiter::connect(policy, options(target, &clock, "spread"))
            .await
            .unwrap();
        for i in 0..60u32 {
            assert!(limiter.check(&i.to_be_bytes(), 1).await.unwrap().allowed);
        }
    });
    for master in cluster.masters() {
        let keys: u64 = cluster.cli(master, &["DBSIZE"]).parse().unwrap();
        assert!(keys > 0, "master {master} holds no key");
    }
}

/// A master is killed mid-run; its replica takes over and the same
/// limiter recovers, without being rebuilt.
fn failover(rt: &tokio::runtime::Runtime, cluster: &mut RedisCluster, target: &Target) {
    // One token back per hour: the two tokens each key takes stay visible.
    let policy = Policy::token_bucket(1_000, 1, Duration::from_secs(3600)).unwrap();
    let options = RedisOptions::new(target.clone())
        .with_prefix(fresh_prefix("failover"))
        .with_timeout(Duration::from_millis(500));
    let limiter = rt.block_on(RedisLimiter::connect(policy, options)).unwrap();
    let keys: Vec<Vec<u8>> = (0..30u32).map(|i| i.to_be_bytes().to_vec()).collect();
    rt.block_on(async {
        for key in &keys {
            assert!(limiter.check_one(key).await.unwrap().allowed);
        }
    });

    let victim = cluster.masters()[0];
    cluster.kill_master(victim);

    rt.block_on(async {
        // Tokens each key has taken through Redis (a call that failed took
        // none: a call that timed out might have, but none does here, as
        // the killed master never answers late).
        let mut taken = vec![1u64; keys.len()];
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let mut all_from_redis = true;
            for (key, taken) in keys.iter().zip(&mut taken) {
                let started = Instant::now();
                let outcome = limiter.check_one(key).await;
                match &outcome {
                    Ok(d) => {
                        assert!(d.allowed, "{d:?}");
                        *taken += 1;
                    }
                    Err(e) => assert!(e.is_backend(), "{e:?}"),
                }
                assert!(
                    started.elapsed() < Duration::from_secs(5),
                    "a 500 ms call took {:?}",
                    started.elapsed()
                );
                all_from_redis &= outcome.is_ok();
            }
            if all_from_redis {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "no recovery within 30 s of the failover"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        // The state survived on the promoted replica.
        for (key, taken) in keys.iter().zip(&taken) {
            let d = limiter.peek(key).await.unwrap();
            assert_eq!(d.remaining, 1_000 - taken, "{d:?}");
        }
    });
}
