//! Policy sets on the memory backend: decision for decision against
//! `ReferenceSetLimiter`, C1 under threads, leases of cancelled and
//! panicking holders, a set of one policy against `MemoryLimiter`, and the
//! key cap.

use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use ratelimit_conformance::strategy::{small_policy, start_time};
use ratelimit_core::{
    Concurrency, Error, ManualClock, Mark, NamedLimit, Policy, PolicyReceipt, PolicySet, Receipt,
    ReferenceSetLimiter, Reservation, SetLimiter,
};
use ratelimit_memory::{
    MemoryLimiter, MemoryLimiterOptions, MemorySetLimiter, MemorySetLimiterOptions,
};

/// Longer than any generated sequence takes the clock back, so that
/// forgetting idle keys never shows.
const GRACE: Duration = Duration::from_secs(24 * 3600);

/// Keys of every stored form: empty, 8 bytes (one word), short, long.
fn keys() -> Vec<Vec<u8>> {
    vec![
        b"".to_vec(),
        42u64.to_le_bytes().to_vec(),
        b"user:1".to_vec(),
        vec![b'k'; 40],
    ]
}

/// One operation of a differential sequence; indices and costs are
/// reduced modulo what exists when the operation runs.
#[derive(Debug, Clone)]
enum Op {
    Check { key: usize, costs: Vec<u64> },
    Settle { receipt: usize, actual: Vec<u64> },
    Renew { receipt: usize },
    Drop { receipt: usize },
    Peek { key: usize },
    Reset { key: usize },
    Purge,
    Advance { ms: u64 },
    Back { ms: u64 },
}

fn op() -> impl Strategy<Value = Op> {
    let amounts = prop::collection::vec(any::<u64>(), 4);
    prop_oneof![
        8 => (0..4usize, amounts.clone()).prop_map(|(key, costs)| Op::Check { key, costs }),
        4 => (any::<usize>(), amounts).prop_map(|(receipt, actual)| Op::Settle { receipt, actual }),
        2 => any::<usize>().prop_map(|receipt| Op::Renew { receipt }),
        2 => any::<usize>().prop_map(|receipt| Op::Drop { receipt }),
        1 => (0..4usize).prop_map(|key| Op::Peek { key }),
        1 => (0..4usize).prop_map(|key| Op::Reset { key }),
        1 => Just(Op::Purge),
        4 => (0..2_000u64).prop_map(|ms| Op::Advance { ms }),
        1 => (0..2_000u64).prop_map(|ms| Op::Back { ms }),
    ]
}

/// One to three small rate policies (some settling) and a concurrency
/// policy at a random place.
fn small_set() -> impl Strategy<Value = PolicySet> {
    (
        prop::collection::vec((small_policy(), any::<bool>()), 1..=3),
        1u64..=3,
        1u64..=3_000,
        any::<prop::sample::Index>(),
    )
        .prop_map(|(rates, n, ttl_ms, at)| {
            let mut limits: Vec<NamedLimit> = rates
                .into_iter()
                .enumerate()
                .map(|(i, (p, settles))| {
                    let l = NamedLimit::new(&format!("p{i}"), p).unwrap();
                    if settles {
                        l.settling()
                    } else {
                        l
                    }
                })
                .collect();
            let streams = Concurrency::new(n, Duration::from_millis(ttl_ms)).unwrap();
            let at = at.index(limits.len() + 1);
            limits.insert(at, NamedLimit::new("streams", streams).unwrap());
            PolicySet::new(limits).unwrap()
        })
}

/// Reduces raw amounts to costs of `set`: mostly valid, sometimes one
/// above the limit (an error naming the policy).
fn costs(set: &PolicySet, raw: &[u64]) -> Vec<u64> {
    set.limits()
        .iter()
        .zip(raw)
        .map(|(l, r)| r % (l.limit().limit() + 2))
        .collect()
}

fn same_error(a: &Error, b: &Error) -> bool {
    a.kind() == b.kind() && a.to_string() == b.to_string()
}

fn same<T: PartialEq + std::fmt::Debug>(
    ours: &Result<T, Error>,
    reference: &Result<T, Error>,
) -> bool {
    match (ours, reference) {
        (Ok(a), Ok(b)) => a == b,
        (Err(a), Err(b)) => same_error(a, b),
        _ => false,
    }
}

/// The receipt with what may differ once a key was forgotten masked: a
/// token bucket's `tat` and `rf` as the receipt names them. A gate on an
/// idle bucket names its stale `tat` (a fresh key: 0), and a settling
/// bucket's receipts its `rf` so far (a fresh key: from 0); neither changes
/// what a settle does, which the sequence checks decision for decision.
fn masked(r: &Receipt) -> Vec<PolicyReceipt> {
    r.parts()
        .iter()
        .map(|p| match p.mark {
            Mark::Bucket { at, .. } => PolicyReceipt::new(
                p.taken,
                Mark::Bucket {
                    tat: 0,
                    refunded: 0,
                    at,
                },
            ),
            Mark::Window(_) | Mark::Lease(_) => *p,
        })
        .collect()
}

/// Runs `ops` on both limiters. With `exact`, receipts must be equal byte
/// for byte; without, up to [`masked`] (keys may be forgotten).
fn differential(
    set: PolicySet,
    start: u64,
    ops: &[Op],
    options: MemorySetLimiterOptions,
    exact: bool,
) -> Result<(), TestCaseError> {
    let clock = ManualClock::new(start);
    let ours = MemorySetLimiter::with_options(set.clone(), clock.clone(), options);
    let model = ReferenceSetLimiter::with_clock(set.clone(), clock.clone());
    let keys = keys();
    let mut open: Vec<(Receipt, Receipt)> = Vec::new();
    for (i, op) in ops.iter().enumerate() {
        match op {
            Op::Check { key, costs: raw } => {
                let c = costs(&set, raw);
                let a = ours.check_set_sync(&keys[*key], &c);
                let b = model.check_set_sync(&keys[*key], &c);
                match (a, b) {
                    (Ok(a), Ok(b)) => {
                        prop_assert_eq!(&a.decision, &b.decision, "step {}: {:?}", i, op);
                        if exact {
                            prop_assert_eq!(&a.receipt, &b.receipt, "step {}: {:?}", i, op);
                        } else {
                            prop_assert_eq!(
                                a.receipt.as_ref().map(masked),
                                b.receipt.as_ref().map(masked),
                                "step {}: {:?}",
                                i,
                                op
                            );
                        }
                        if let (Some(a), Some(b)) = (a.receipt, b.receipt) {
                            open.push((a, b));
                        }
                    }
                    (Err(a), Err(b)) => prop_assert!(same_error(&a, &b), "{a} / {b}"),
                    (a, b) => prop_assert!(false, "step {i}: {a:?} / {b:?}"),
                }
            }
            Op::Settle { receipt, actual } if !open.is_empty() => {
                let (a, b) = open.swap_remove(receipt % open.len());
                let actual: Vec<u64> = set
                    .limits()
                    .iter()
                    .zip(actual)
                    .map(|(l, r)| r % (2 * l.limit().limit() + 1))
                    .collect();
                let x = ours.settle_sync(a, &actual);
                let y = model.settle_sync(b, &actual);
                prop_assert!(same(&x, &y), "step {i}: {op:?}: {x:?} / {y:?}");
            }
            Op::Renew { receipt } if !open.is_empty() => {
                let at = receipt % open.len();
                let (a, b) = &mut open[at];
                let x = ours.renew_sync(a);
                let y = model.renew_sync(b);
                prop_assert_eq!(x, y, "step {}: {:?}", i, op);
                if exact {
                    prop_assert_eq!(&*a, &*b);
                } else {
                    prop_assert_eq!(masked(a), masked(b));
                }
            }
            Op::Drop { receipt } if !open.is_empty() => {
                let (a, b) = open.swap_remove(receipt % open.len());
                ours.release(a);
                model.release(b);
            }
            Op::Peek { key } => {
                prop_assert_eq!(
                    ours.peek_set_sync(&keys[*key]),
                    model.peek_set_sync(&keys[*key])
                );
            }
            Op::Reset { key } => {
                ours.reset_set_sync(&keys[*key]);
                model.reset_set_sync(&keys[*key]);
            }
            Op::Purge => {
                ours.purge_idle();
            }
            Op::Advance { ms } => clock.advance(Duration::from_millis(*ms)),
            Op::Back { ms } => clock.rewind(Duration::from_millis(*ms)),
            Op::Settle { .. } | Op::Renew { .. } | Op::Drop { .. } => {}
        }
        for key in &keys {
            prop_assert_eq!(ours.leases_held(key), model.leases_held(key), "step {}", i);
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Every decision, receipt, renewal and settle equals the reference's,
    /// with one shard (so every sweep walks over every key).
    #[test]
    fn sets_agree_with_the_reference(
        set in small_set(),
        start in start_time(),
        ops in prop::collection::vec(op(), 1..60),
    ) {
        let options = MemorySetLimiterOptions::default()
            .with_shards(NonZeroUsize::MIN)
            .with_idle_grace(GRACE);
        differential(set, start, &ops, options, true)?;
    }

    /// The same with default shards and no grace, while the clock only
    /// moves forward: forgetting idle keys never changes a decision.
    #[test]
    fn forgetting_idle_keys_changes_nothing_while_time_moves_forward(
        set in small_set(),
        start in start_time(),
        ops in prop::collection::vec(op(), 1..60),
    ) {
        let ops: Vec<Op> = ops.into_iter().filter(|o| !matches!(o, Op::Back { .. })).collect();
        differential(set, start, &ops, MemorySetLimiterOptions::default(), false)?;
    }

    /// A set of one rate policy answers as `MemoryLimiter` does, decision
    /// for decision.
    #[test]
    fn a_set_of_one_policy_is_the_policy_alone(
        policy in small_policy(),
        start in start_time(),
        ops in prop::collection::vec((0..4usize, any::<u64>(), -2_000i64..4_000), 1..80),
    ) {
        let clock = ManualClock::new(start);
        let single = MemoryLimiter::with_options(
            policy,
            clock.clone(),
            MemoryLimiterOptions::default().with_idle_grace(GRACE),
        );
        let set = MemorySetLimiter::with_options(
            PolicySet::single(policy),
            clock.clone(),
            MemorySetLimiterOptions::default().with_idle_grace(GRACE),
        );
        let keys = keys();
        for (key, raw, dt) in ops {
            let key = &keys[key];
            let cost = 1 + raw % (policy.limit() + 1);
            let a = single.check_sync(key, cost);
            let b = set.check_set_sync(key, &[cost]);
            match (a, b) {
                (Ok(a), Ok(b)) => {
                    prop_assert_eq!(a, b.decision.decisions[0]);
                    prop_assert_eq!(a.allowed, b.decision.allowed);
                    prop_assert_eq!(a.retry_after, b.decision.retry_after);
                }
                (Err(a), Err(b)) => prop_assert_eq!(a.kind(), b.kind()),
                (a, b) => prop_assert!(false, "{a:?} / {b:?}"),
            }
            prop_assert_eq!(single.peek_sync(key), set.peek_set_sync(key).decisions[0]);
            if dt >= 0 {
                clock.advance_micros(dt.unsigned_abs() * 1_000);
            } else {
                clock.rewind(Duration::from_millis(dt.unsigned_abs()));
            }
        }
    }
}

fn streams(n: u64) -> PolicySet {
    let c = Concurrency::new(n, Duration::from_secs(3600)).unwrap();
    PolicySet::new(vec![NamedLimit::new("streams", c).unwrap()]).unwrap()
}

/// C1: threads acquiring and releasing one key's leases never hold more
/// than `N` at once, and leave none behind.
#[test]
fn never_more_than_n_leases_under_threads() {
    const N: usize = 3;
    let limiter = Arc::new(MemorySetLimiter::new(streams(N as u64)));
    let holding = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let allowed = Arc::new(AtomicUsize::new(0));
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let (limiter, holding, most, allowed) = (
                Arc::clone(&limiter),
                Arc::clone(&holding),
                Arc::clone(&most),
                Arc::clone(&allowed),
            );
            std::thread::spawn(move || {
                for i in 0..5_000 {
                    let check = limiter.check_set_sync(b"k", &[1]).unwrap();
                    let Some(receipt) = check.receipt else {
                        continue;
                    };
                    allowed.fetch_add(1, Ordering::Relaxed);
                    let now = holding.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(now, Ordering::SeqCst);
                    std::hint::black_box(i);
                    holding.fetch_sub(1, Ordering::SeqCst);
                    if i % 2 == 0 {
                        limiter.release(receipt);
                    } else {
                        limiter.settle_sync(receipt, &[0]).unwrap();
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert!(most.load(Ordering::SeqCst) <= N);
    assert!(allowed.load(Ordering::Relaxed) > 0);
    assert_eq!(limiter.leases_held(b"k"), 0);
}

/// C3: 10,000 acquisitions through `Reservation::acquire` in tasks that
/// are aborted at random points, some holders panicking: no lease is left.
#[test]
fn cancelled_and_panicking_holders_leave_no_lease() {
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let planned = info
            .payload()
            .downcast_ref::<&str>()
            .is_some_and(|m| m.contains("holder panics"));
        if !planned {
            default_hook(info);
        }
    }));
    let limiter = Arc::new(MemorySetLimiter::new(streams(16)));
    let acquired = Arc::new(AtomicUsize::new(0));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let (cancelled, panicked) = runtime.block_on(async {
        let mut rng = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let mut handles = Vec::new();
        for i in 0..10_000u64 {
            let limiter = Arc::clone(&limiter);
            let acquired = Arc::clone(&acquired);
            let (hold, fate) = (next() % 8, next() % 10);
            handles.push(tokio::spawn(async move {
                tokio::task::yield_now().await;
                let Ok(held) = Reservation::acquire(limiter, b"k", &[1]).await.unwrap() else {
                    return;
                };
                acquired.fetch_add(1, Ordering::Relaxed);
                for _ in 0..hold {
                    tokio::task::yield_now().await;
                }
                match fate {
                    0 => panic!("holder panics with a lease"),
                    1..=3 => drop(held.settle(&[0]).await.unwrap()),
                    _ => drop(held),
                }
            }));
            // Abort some of the tasks spawned so far, wherever they are.
            if next() % 3 == 0 {
                let victim = usize::try_from(next() % (i + 1)).unwrap();
                handles[victim].abort();
            }
            if i % 64 == 0 {
                tokio::task::yield_now().await;
            }
        }
        let (mut cancelled, mut panicked) = (0, 0);
        for h in handles {
            match h.await {
                Err(e) if e.is_cancelled() => cancelled += 1,
                Err(e) if e.is_panic() => panicked += 1,
                Err(e) => panic!("{e}"),
                Ok(()) => {}
            }
        }
        (cancelled, panicked)
    });
    assert!(cancelled > 0 && panicked > 0, "{cancelled} {panicked}");
    assert!(acquired.load(Ordering::Relaxed) > 0);
    assert_eq!(limiter.leases_held(b"k"), 0);
}

/// A full shard denies a new key and keeps the key holding a lease; once
/// that key is idle, the new key gets its place.
#[test]
fn a_full_shard_denies_new_keys_and_keeps_leases() {
    let clock = ManualClock::new(0);
    let minute = Duration::from_secs(60);
    let set = PolicySet::new(vec![
        NamedLimit::new("requests", Policy::fixed_window(5, minute).unwrap()).unwrap(),
        NamedLimit::new("streams", Concurrency::new(1, minute).unwrap()).unwrap(),
    ])
    .unwrap();
    let options = MemorySetLimiterOptions::default().with_max_keys(NonZeroUsize::MIN);
    let limiter = MemorySetLimiter::with_options(set, clock.clone(), options);

    let mut held = limiter
        .check_set_sync(b"a", &[1, 1])
        .unwrap()
        .receipt
        .unwrap();
    let refused = limiter.check_set_sync(b"b", &[1, 1]).unwrap();
    assert!(!refused.decision.allowed && refused.receipt.is_none());
    assert!(refused.decision.decisions.iter().all(|d| d.remaining == 0));
    assert_eq!(refused.decision.retry_after, Some(minute));

    // The window ends but the lease runs: still not idle, still kept.
    clock.advance(minute - Duration::from_secs(1));
    assert!(limiter.renew_sync(&mut held));
    clock.advance(Duration::from_secs(1));
    assert!(
        !limiter
            .check_set_sync(b"b", &[1, 1])
            .unwrap()
            .decision
            .allowed
    );
    assert_eq!(limiter.leases_held(b"a"), 1);

    limiter.release(held);
    assert!(
        limiter
            .check_set_sync(b"b", &[1, 1])
            .unwrap()
            .decision
            .allowed
    );
    assert_eq!(limiter.len(), 1);
}

/// A settle whose key was forgotten meanwhile still stores its charge.
#[test]
fn a_late_overshoot_on_a_forgotten_key_is_charged() {
    let clock = ManualClock::new(0);
    let window = Duration::from_secs(10);
    let set = PolicySet::new(vec![NamedLimit::new(
        "tokens",
        Policy::fixed_window(100, window).unwrap(),
    )
    .unwrap()
    .settling()])
    .unwrap();
    let limiter = MemorySetLimiter::with_clock(set.clone(), clock.clone());
    let model = ReferenceSetLimiter::with_clock(set, clock.clone());
    let a = limiter
        .check_set_sync(b"k", &[10])
        .unwrap()
        .receipt
        .unwrap();
    let b = model.check_set_sync(b"k", &[10]).unwrap().receipt.unwrap();
    clock.advance(window);
    assert_eq!(limiter.purge_idle(), 1);
    let x = limiter.settle_sync(a, &[70]).unwrap();
    assert_eq!(x, model.settle_sync(b, &[70]).unwrap());
    assert_eq!(x.decisions[0].remaining, 40);
    assert_eq!(limiter.len(), 1);
    assert_eq!(limiter.peek_set_sync(b"k"), model.peek_set_sync(b"k"));
}

/// Keys that take a lease, release it and are forgotten (no grace) come
/// back on reused state: every answer stays the reference's, a gone key
/// reads as never seen, and no lease outlives its release.
#[test]
fn forgotten_keys_come_back_as_never_seen() {
    let clock = ManualClock::new(1_700_000_000_000_000);
    let minute = Duration::from_secs(60);
    let set = PolicySet::new(vec![
        NamedLimit::new("requests", Policy::fixed_window(3, minute).unwrap()).unwrap(),
        NamedLimit::new("streams", Concurrency::new(2, minute).unwrap()).unwrap(),
    ])
    .unwrap();
    let memory = MemorySetLimiter::with_clock(set.clone(), clock.clone());
    let reference = ReferenceSetLimiter::with_clock(set, clock.clone());
    for round in 0..4u64 {
        for k in 0..200u64 {
            let key = k.to_le_bytes();
            let costs = [u64::from(k % 2 == 0), 1];
            let m = memory.check_set_sync(&key, &costs).unwrap();
            let r = reference.check_set_sync(&key, &costs).unwrap();
            assert_eq!(m.decision, r.decision, "round {round}, key {k}");
            assert_eq!(
                m.receipt.as_ref().map(Receipt::taken),
                r.receipt.as_ref().map(Receipt::taken)
            );
            if let Some(receipt) = m.receipt {
                memory.release(receipt);
            }
            if let Some(receipt) = r.receipt {
                reference.release(receipt);
            }
            assert_eq!(memory.leases_held(&key), 0);
        }
        // Every window ends: each key is idle and may be forgotten.
        clock.advance(minute);
        memory.purge_idle();
        reference.purge_idle();
    }
}
