//! Policy sets: a byte-driven sequence of set operations on
//! `MemorySetLimiter` and `ReferenceSetLimiter` under one `ManualClock`;
//! every decision, receipt and error must agree, and nothing may panic.

use std::num::NonZeroUsize;
use std::time::Duration;

use arbitrary::Arbitrary;
use ratelimit_core::{
    Concurrency, Error, ManualClock, NamedLimit, Policy, PolicySet, Receipt, ReferenceSetLimiter,
    SetLimiter, MAX_TIMESTAMP_US,
};
use ratelimit_memory::{MemorySetLimiter, MemorySetLimiterOptions};

/// Longer than a sequence can take the clock back (at most 2,000
/// operations of at most 4 s): the memory limiter never forgets a key whose
/// state could still show.
const GRACE: Duration = Duration::from_secs(24 * 3600);

/// A fuzzer-chosen rate policy of the set.
#[derive(Debug, Arbitrary)]
pub struct RawPolicy {
    algorithm: u8,
    limit: u8,
    period_ms: u16,
    refill: u8,
    settles: bool,
}

/// One fuzzer-chosen operation, reduced into range when it runs.
#[derive(Debug, Arbitrary)]
pub struct RawOp {
    op: u8,
    key: u8,
    amounts: [u64; 4],
    ms: u16,
}

/// A set (one to three rate policies, maybe a concurrency policy), a start
/// time and the operations.
#[derive(Debug, Arbitrary)]
pub struct SetInput {
    policies: Vec<RawPolicy>,
    streams: Option<(u8, u16, u8)>,
    start: u64,
    ops: Vec<RawOp>,
}

fn rate(raw: &RawPolicy) -> Option<Policy> {
    let limit = 1 + u64::from(raw.limit % 8);
    let period = Duration::from_millis(1 + u64::from(raw.period_ms % 4_000));
    match raw.algorithm % 3 {
        0 => Policy::fixed_window(limit, period).ok(),
        1 => Policy::sliding_window(limit, period).ok(),
        _ => Policy::token_bucket(limit, 1 + u64::from(raw.refill) % limit, period).ok(),
    }
}

fn set(input: &SetInput) -> Option<PolicySet> {
    let mut limits = Vec::new();
    for (i, raw) in input.policies.iter().take(3).enumerate() {
        let l = NamedLimit::new(&format!("p{i}"), rate(raw)?).ok()?;
        limits.push(if raw.settles { l.settling() } else { l });
    }
    if let Some((n, ttl_ms, at)) = input.streams {
        let c = Concurrency::new(
            1 + u64::from(n % 4),
            Duration::from_millis(1 + u64::from(ttl_ms % 4_000)),
        )
        .ok()?;
        let at = usize::from(at) % (limits.len() + 1);
        limits.insert(at, NamedLimit::new("streams", c).ok()?);
    }
    PolicySet::new(limits).ok()
}

fn same_error(a: &Error, b: &Error) -> bool {
    a.kind() == b.kind() && a.to_string() == b.to_string()
}

fn agree<T: PartialEq + std::fmt::Debug>(what: &str, a: &Result<T, Error>, b: &Result<T, Error>) {
    let ok = match (a, b) {
        (Ok(x), Ok(y)) => x == y,
        (Err(x), Err(y)) => same_error(x, y),
        _ => false,
    };
    assert!(ok, "{what}: memory {a:?}, reference {b:?}");
}

/// Runs the sequence on both limiters; panics on the first disagreement.
pub fn run_sets(input: &SetInput) {
    let Some(set) = set(input) else { return };
    let start = input.start % (MAX_TIMESTAMP_US / 2);
    let clock = ManualClock::new(start);
    let options = MemorySetLimiterOptions::default()
        .with_shards(NonZeroUsize::MIN)
        .with_idle_grace(GRACE);
    let ours = MemorySetLimiter::with_options(set.clone(), clock.clone(), options);
    let model = ReferenceSetLimiter::with_clock(set.clone(), clock.clone());
    let keys: [&[u8]; 4] = [b"", &42u64.to_le_bytes(), b"user:1", &[b'k'; 40]];
    let mut open: Vec<(Receipt, Receipt)> = Vec::new();
    for raw in input.ops.iter().take(2_000) {
        let key = keys[usize::from(raw.key % 4)];
        let pick = |n: usize| usize::from(raw.key) % n.max(1);
        match raw.op % 9 {
            0 | 1 | 2 => {
                let costs: Vec<u64> = set
                    .limits()
                    .iter()
                    .zip(raw.amounts)
                    .map(|(l, a)| a % (l.limit().limit() + 2))
                    .collect();
                let a = ours.check_set_sync(key, &costs);
                let b = model.check_set_sync(key, &costs);
                match (a, b) {
                    (Ok(a), Ok(b)) => {
                        assert_eq!(a.decision, b.decision, "check {costs:?}");
                        assert_eq!(a.receipt, b.receipt, "check {costs:?}");
                        if let (Some(a), Some(b)) = (a.receipt, b.receipt) {
                            open.push((a, b));
                        }
                    }
                    (a, b) => agree("check", &a.map(|c| c.decision), &b.map(|c| c.decision)),
                }
            }
            3 if !open.is_empty() => {
                let (a, b) = open.swap_remove(pick(open.len()));
                let actual: Vec<u64> = set
                    .limits()
                    .iter()
                    .zip(raw.amounts)
                    .map(|(l, a)| a % (2 * l.limit().limit() + 1))
                    .collect();
                agree(
                    "settle",
                    &ours.settle_sync(a, &actual),
                    &model.settle_sync(b, &actual),
                );
            }
            4 if !open.is_empty() => {
                let at = pick(open.len());
                let (a, b) = &mut open[at];
                assert_eq!(ours.renew_sync(a), model.renew_sync(b), "renew");
                assert_eq!(a, b, "renewed receipts");
            }
            5 if !open.is_empty() => {
                let (a, b) = open.swap_remove(pick(open.len()));
                ours.release(a);
                model.release(b);
            }
            6 => {
                assert_eq!(ours.peek_set_sync(key), model.peek_set_sync(key), "peek");
                if raw.ms % 7 == 0 {
                    ours.reset_set_sync(key);
                    model.reset_set_sync(key);
                } else if raw.ms % 7 == 1 {
                    ours.purge_idle();
                }
            }
            7 => clock.advance(Duration::from_millis(u64::from(raw.ms % 4_000))),
            8 => clock.rewind(Duration::from_millis(u64::from(raw.ms % 4_000))),
            _ => {}
        }
        for key in keys {
            assert_eq!(ours.leases_held(key), model.leases_held(key), "leases held");
        }
    }
}
