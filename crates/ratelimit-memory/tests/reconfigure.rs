//! `MemorySetLimiter::reconfigured`: a new set over the same keys keeps
//! every count and lease that still means the same, resets what does not,
//! and the old limiter's receipts still settle and free their leases.

use std::time::Duration;

use ratelimit_core::{
    Concurrency, ManualClock, NamedLimit, Policy, PolicySet, ReferenceSetLimiter, SetLimiter,
};
use ratelimit_memory::MemorySetLimiter;

const MINUTE: Duration = Duration::from_secs(60);

fn named(name: &str, limit: impl Into<ratelimit_core::Limit>) -> NamedLimit {
    NamedLimit::new(name, limit).unwrap()
}

/// The gateway's shape: requests, settling tokens, streams.
fn gateway(requests: u64, tokens: u64, streams: u64) -> PolicySet {
    PolicySet::new(vec![
        named("requests", Policy::fixed_window(requests, MINUTE).unwrap()),
        named(
            "tokens",
            Policy::token_bucket(tokens, tokens, MINUTE).unwrap(),
        )
        .settling(),
        named("streams", Concurrency::new(streams, MINUTE).unwrap()),
    ])
    .unwrap()
}

#[test]
fn new_limits_keep_counts_tokens_and_leases() {
    let clock = ManualClock::new(1_000_000);
    let old = MemorySetLimiter::with_clock(gateway(5, 1_000, 2), clock.clone());
    let first = old.check_set_sync(b"k", &[1, 300, 1]).unwrap();
    let second = old.check_set_sync(b"k", &[1, 200, 1]).unwrap();
    assert!(first.decision.allowed && second.decision.allowed);

    let new = old.reconfigured(gateway(10, 2_000, 3));
    let seen = new.peek_set_sync(b"k");
    assert_eq!(seen.decisions[0].remaining, 8, "two requests counted");
    assert_eq!(seen.decisions[1].remaining, 2_000 - 500, "500 tokens taken");
    assert_eq!(new.leases_held(b"k"), 2);

    // The reference of the new set, fed the same history, agrees.
    let reference = ReferenceSetLimiter::with_clock(gateway(10, 2_000, 3), clock.clone());
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(async {
        for tokens in [300, 200] {
            let check = reference.check_set(b"k", &[1, tokens, 1]).await.unwrap();
            std::mem::forget(check.receipt);
        }
        assert_eq!(
            reference.peek_set(b"k").await.unwrap().decisions[..2],
            seen.decisions[..2]
        );
    });

    // The old receipts settle through the old limiter: the refund and the
    // freed lease show in the new one.
    old.settle_sync(first.receipt.unwrap(), &[1, 100, 0])
        .unwrap();
    let seen = new.peek_set_sync(b"k");
    assert_eq!(seen.decisions[1].remaining, 2_000 - 300);
    assert_eq!(new.leases_held(b"k"), 1);
    old.release(second.receipt.unwrap());
    assert_eq!(new.leases_held(b"k"), 0);
    assert_eq!(new.peek_set_sync(b"k").decisions[0].remaining, 8);
}

#[test]
fn a_lowered_limit_denies_until_the_count_drains() {
    let clock = ManualClock::new(0);
    let old = MemorySetLimiter::with_clock(gateway(5, 1_000, 2), clock.clone());
    for _ in 0..4 {
        let check = old.check_set_sync(b"k", &[1, 1, 0]).unwrap();
        assert!(check.decision.allowed);
    }
    let new = old.reconfigured(gateway(3, 1_000, 2));
    let denied = new.check_set_sync(b"k", &[1, 1, 0]).unwrap();
    assert!(!denied.decision.allowed);
    assert_eq!(denied.decision.first_denied(), Some(0));
    clock.advance(MINUTE);
    assert!(
        new.check_set_sync(b"k", &[1, 1, 0])
            .unwrap()
            .decision
            .allowed
    );
}

#[test]
fn a_new_algorithm_window_or_name_starts_empty_and_others_are_kept() {
    let clock = ManualClock::new(0);
    let old = MemorySetLimiter::with_clock(gateway(5, 1_000, 2), clock.clone());
    let check = old.check_set_sync(b"k", &[1, 400, 1]).unwrap();
    std::mem::forget(check.receipt);
    // Reordered; "requests" now a sliding window, "tokens" kept, the
    // streams renamed.
    let new = old.reconfigured(
        PolicySet::new(vec![
            named("answers", Concurrency::new(2, MINUTE).unwrap()),
            named(
                "tokens",
                Policy::token_bucket(1_000, 1_000, MINUTE).unwrap(),
            )
            .settling(),
            named("requests", Policy::sliding_window(5, MINUTE).unwrap()),
        ])
        .unwrap(),
    );
    let seen = new.peek_set_sync(b"k");
    assert_eq!(seen.decisions[0].remaining, 2, "a new name: no lease");
    assert_eq!(seen.decisions[1].remaining, 600, "same bucket: kept");
    assert_eq!(seen.decisions[2].remaining, 5, "another algorithm: empty");

    let window = old.reconfigured(
        gateway(5, 1_000, 2)
            .limits()
            .to_vec()
            .into_iter()
            .map(|l| {
                if l.name() == "requests" {
                    named("requests", Policy::fixed_window(5, 2 * MINUTE).unwrap())
                } else {
                    l
                }
            })
            .collect::<Vec<_>>()
            .try_into()
            .unwrap(),
    );
    assert_eq!(
        window.peek_set_sync(b"k").decisions[0].remaining,
        5,
        "another window: empty"
    );
}

#[test]
fn an_equal_set_shares_the_alignment_and_keys_are_shared() {
    let clock = ManualClock::new(0);
    let old = MemorySetLimiter::with_clock(gateway(5, 1_000, 2), clock.clone());
    old.check_set_sync(b"a", &[1, 1, 0]).unwrap();
    let same = old.reconfigured(gateway(5, 1_000, 2));
    assert_eq!(same.policy_set(), old.policy_set());
    same.check_set_sync(b"b", &[1, 1, 0]).unwrap();
    assert_eq!(old.len(), 2);
    assert_eq!(old.peek_set_sync(b"b").decisions[0].remaining, 4);
}

#[test]
fn idle_states_of_another_set_are_judged_by_their_own_set() {
    let clock = ManualClock::new(0);
    let long = PolicySet::new(vec![named(
        "requests",
        Policy::fixed_window(5, Duration::from_secs(3600)).unwrap(),
    )])
    .unwrap();
    let old = MemorySetLimiter::with_clock(long, clock.clone());
    old.check_set_sync(b"k", &[1]).unwrap();
    // A set in which the key's state would already be idle after a
    // minute: the old state is still live under its own hour.
    let new = old.reconfigured(gateway(5, 1_000, 2));
    clock.advance(2 * MINUTE);
    assert_eq!(new.purge_idle(), 0);
    assert_eq!(old.peek_set_sync(b"k").decisions[0].remaining, 4);
    clock.advance(Duration::from_secs(3600));
    assert_eq!(new.purge_idle(), 1);
}

#[test]
fn lease_ids_stay_unique_across_limiters() {
    let clock = ManualClock::new(0);
    let old = MemorySetLimiter::with_clock(gateway(50, 1_000, 50), clock.clone());
    let new = old.reconfigured(gateway(50, 1_000, 40));
    let a = old
        .check_set_sync(b"k", &[1, 1, 1])
        .unwrap()
        .receipt
        .unwrap();
    let b = new
        .check_set_sync(b"k", &[1, 1, 1])
        .unwrap()
        .receipt
        .unwrap();
    let id = |r: &ratelimit_core::Receipt| r.leases().next().unwrap().id;
    assert_ne!(id(&a), id(&b));
    assert_eq!(new.leases_held(b"k"), 2);
    old.release(a);
    assert_eq!(new.leases_held(b"k"), 1, "only its own lease freed");
    new.release(b);
    assert_eq!(old.leases_held(b"k"), 0);
}

/// States forgotten under the old set are kept for new keys; the new
/// limiter's keys on them read as never seen and then count under the new
/// set, as its reference does, whether the new set has the old shape or
/// another.
#[test]
fn states_forgotten_under_the_old_set_serve_the_new_one_as_never_seen() {
    let reordered = PolicySet::new(vec![
        named("streams", Concurrency::new(1, MINUTE).unwrap()),
        named("requests", Policy::sliding_window(2, MINUTE).unwrap()),
        named("tokens", Policy::token_bucket(30, 30, MINUTE).unwrap()).settling(),
    ])
    .unwrap();
    for (set, costs) in [(gateway(2, 30, 1), [1, 20, 1]), (reordered, [1, 1, 20])] {
        let clock = ManualClock::new(1_700_000_000_000_000);
        let old = MemorySetLimiter::with_clock(gateway(5, 100, 2), clock.clone());
        for k in 0..100u64 {
            let check = old.check_set_sync(&k.to_le_bytes(), &[1, 10, 1]).unwrap();
            let receipt = check.receipt.unwrap();
            if k % 2 == 0 {
                old.release(receipt);
            } else {
                // Left to expire: its lease is in the state until purged.
                std::mem::forget(receipt);
            }
        }
        clock.advance(10 * MINUTE);
        assert_eq!(old.purge_idle(), 100);

        let new = old.reconfigured(set.clone());
        let reference = ReferenceSetLimiter::with_clock(set, clock.clone());
        for k in 0..150u64 {
            let key = k.to_le_bytes();
            for _ in 0..2 {
                let m = new.check_set_sync(&key, &costs).unwrap();
                let r = reference.check_set_sync(&key, &costs).unwrap();
                assert_eq!(m.decision, r.decision, "key {k}");
                assert_eq!(new.leases_held(&key), r.receipt.is_some().into());
                if let Some(receipt) = m.receipt {
                    new.release(receipt);
                }
                if let Some(receipt) = r.receipt {
                    reference.release(receipt);
                }
                assert_eq!(new.leases_held(&key), 0);
            }
        }
    }
}
