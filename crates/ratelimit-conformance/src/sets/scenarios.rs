//! Hand-written policy-set scenarios with exact expected decisions, for
//! any [`SetLimiter`].
//!
//! Each scenario builds a fresh limiter through the caller's `make`
//! function on a [`ManualClock`] it controls. [`run_all`] runs them all.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use ratelimit_core::{
    Concurrency, ManualClock, Mark, NamedLimit, Policy, PolicySet, Receipt, Reservation,
    SetDecision, SetLimiter,
};

use super::run::drop_receipt;
use super::RunOptions;
use crate::scenarios::ALIGNED;
use crate::strategy::awkward_keys;
use crate::{ensure, Violation};

const SEC: u64 = 1_000_000;

/// Runs every scenario. `make(set, clock)` must return a fresh limiter (no
/// key holds state) that applies `set` with time from `clock`.
///
/// With [`RunOptions::remote`], the scenario of a dropped
/// [`Reservation`] releasing its lease at once (C3, in process) is left
/// out: a remote store's release is sent without waiting, and its tests
/// wait for it themselves.
///
/// # Errors
///
/// The first violation, prefixed with the scenario.
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use ratelimit_conformance::sets::{scenarios, RunOptions};
/// use ratelimit_core::{ReferenceSetLimiter, SetLimiter};
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// scenarios::run_all(
///     |set, clock| async move {
///         Arc::new(ReferenceSetLimiter::with_clock(set, clock)) as Arc<dyn SetLimiter>
///     },
///     RunOptions::default(),
/// )
/// .await
/// .unwrap();
/// # });
/// ```
pub async fn run_all<F, Fut>(make: F, options: RunOptions) -> Result<(), Violation>
where
    F: Fn(PolicySet, ManualClock) -> Fut,
    Fut: Future<Output = Arc<dyn SetLimiter>>,
{
    llm_route(&make).await.map_err(|v| v.context("llm_route"))?;
    refunds_after_time_passed(&make)
        .await
        .map_err(|v| v.context("refunds_after_time_passed"))?;
    lease_expires(&make, options)
        .await
        .map_err(|v| v.context("lease_expires"))?;
    gates(&make).await.map_err(|v| v.context("gates"))?;
    a_gate_is_seen(&make)
        .await
        .map_err(|v| v.context("a_gate_is_seen"))?;
    longest_retry(&make)
        .await
        .map_err(|v| v.context("longest_retry"))?;
    settle_errors(&make)
        .await
        .map_err(|v| v.context("settle_errors"))?;
    keys_are_independent(&make)
        .await
        .map_err(|v| v.context("keys_are_independent"))?;
    if options.release_is_immediate {
        dropped_reservations_release(&make)
            .await
            .map_err(|v| v.context("dropped_reservations_release"))?;
    }
    Ok(())
}

fn named(name: &str, limit: impl Into<ratelimit_core::Limit>) -> NamedLimit {
    NamedLimit::new(name, limit).expect("a valid literal name")
}

fn set(limits: Vec<NamedLimit>) -> PolicySet {
    PolicySet::new(limits).expect("a valid literal set")
}

fn fixed(limit: u64, secs: u64) -> Policy {
    Policy::fixed_window(limit, Duration::from_secs(secs)).expect("a valid literal policy")
}

fn streams(limit: u64, ttl: Duration) -> Concurrency {
    Concurrency::new(limit, ttl).expect("a valid literal policy")
}

async fn build<F, Fut>(make: &F, set: PolicySet, start: u64) -> (Arc<dyn SetLimiter>, ManualClock)
where
    F: Fn(PolicySet, ManualClock) -> Fut,
    Fut: Future<Output = Arc<dyn SetLimiter>>,
{
    let clock = ManualClock::new(start);
    let limiter = make(set, clock.clone()).await;
    (limiter, clock)
}

async fn check(
    limiter: &dyn SetLimiter,
    key: &[u8],
    costs: &[u64],
) -> Result<(SetDecision, Option<Receipt>), Violation> {
    let c = limiter
        .check_set(key, costs)
        .await
        .map_err(|e| Violation::new(format!("check {costs:?} failed: {e}")))?;
    Ok((c.decision, c.receipt))
}

async fn peek(limiter: &dyn SetLimiter, key: &[u8]) -> Result<SetDecision, Violation> {
    limiter
        .peek_set(key)
        .await
        .map_err(|e| Violation::new(format!("peek failed: {e}")))
}

async fn settle(
    limiter: &dyn SetLimiter,
    receipt: Receipt,
    actual: &[u64],
) -> Result<SetDecision, Violation> {
    limiter
        .settle(receipt, actual)
        .await
        .map_err(|e| Violation::new(format!("settle {actual:?} failed: {e}")))
}

fn receipt_of(what: &str, r: Option<Receipt>) -> Result<Receipt, Violation> {
    r.ok_or_else(|| Violation::new(format!("{what}: allowed without a receipt")))
}

/// `(allowed, remaining)` of each policy.
fn counts(d: &SetDecision) -> Vec<(bool, u64)> {
    d.decisions
        .iter()
        .map(|d| (d.allowed, d.remaining))
        .collect()
}

fn us(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// Requests, tokens and streams of an LLM route: an estimate taken, then
/// settled lower (a refund) and higher (a debt counted exactly).
async fn llm_route<F, Fut>(make: &F) -> Result<(), Violation>
where
    F: Fn(PolicySet, ManualClock) -> Fut,
    Fut: Future<Output = Arc<dyn SetLimiter>>,
{
    // 1,000 tokens a minute: one token every 60 ms.
    let tokens = Policy::token_bucket(1_000, 1_000, Duration::from_secs(60)).expect("valid");
    let route = set(vec![
        named("requests", fixed(5, 30)),
        named("tokens", tokens).settling(),
        named("streams", streams(2, Duration::from_secs(30))),
    ]);
    let (l, clock) = build(make, route, ALIGNED).await;
    let l = &*l;
    let t_ms = 60_000;

    let (d, r) = check(l, b"user", &[1, 600, 1]).await?;
    ensure!(
        counts(&d) == [(true, 4), (true, 400), (true, 1)],
        "estimate of 600: {d:?}"
    );
    ensure!(
        d.decisions[0].reset_after == Duration::from_secs(30)
            && us(d.decisions[1].reset_after) == 600 * t_ms
            && d.decisions[2].reset_after == Duration::from_secs(30),
        "estimate of 600, reset_after: {d:?}"
    );
    let first = receipt_of("estimate", r)?;
    ensure!(
        matches!(first.parts()[2].mark, Mark::Lease(Some(lease)) if lease.expires_at == ALIGNED + 30 * SEC),
        "the lease: {:?}",
        first.parts()[2]
    );

    let d = settle(l, first, &[1, 250, 0]).await?;
    ensure!(
        counts(&d) == [(true, 4), (true, 750), (true, 2)],
        "settled at 250: 350 come back, the stream ends: {d:?}"
    );

    let (d, r) = check(l, b"user", &[1, 600, 1]).await?;
    ensure!(
        counts(&d) == [(true, 3), (true, 150), (true, 1)],
        "second estimate: {d:?}"
    );
    let second = receipt_of("second estimate", r)?;

    // 600 more do not fit in 150: denied by "tokens" alone, and nothing is
    // taken from the others.
    let (d, r) = check(l, b"user", &[1, 600, 1]).await?;
    ensure!(r.is_none() && !d.allowed, "third estimate allowed: {d:?}");
    ensure!(
        d.decisions[0].allowed && !d.decisions[1].allowed && d.decisions[2].allowed,
        "only tokens deny: {d:?}"
    );
    // 600 fit once 450 more have refilled: 27 s.
    ensure!(
        d.retry_after == Some(Duration::from_micros(450 * t_ms)),
        "retry_after: {d:?}"
    );
    let p = peek(l, b"user").await?;
    ensure!(
        counts(&p) == [(true, 3), (true, 150), (true, 1)],
        "a denied set took something: {p:?}"
    );

    // The stream used 900: 300 more are charged past the limit.
    let d = settle(l, second, &[1, 900, 0]).await?;
    ensure!(
        counts(&d) == [(true, 3), (false, 0), (true, 2)],
        "settled at 900: {d:?}"
    );
    // tat is 1,150 tokens ahead: one token is free 151 tokens' time on.
    ensure!(
        d.decisions[1].retry_after == Some(Duration::from_micros(151 * t_ms))
            && us(d.decisions[1].reset_after) == 1_150 * t_ms,
        "the debt counted exactly: {:?}",
        d.decisions[1]
    );
    clock.set(ALIGNED + 151 * t_ms - 1);
    let (d, _) = check(l, b"user", &[1, 1, 0]).await?;
    ensure!(!d.allowed, "1 µs before the debt is paid: {d:?}");
    clock.set(ALIGNED + 151 * t_ms);
    let (d, _) = check(l, b"user", &[1, 1, 0]).await?;
    ensure!(
        counts(&d) == [(true, 2), (true, 0), (true, 2)],
        "the debt paid: {d:?}"
    );
    Ok(())
}

/// Refunds once time has passed: a fixed window refunds nothing after its
/// window rolled, a sliding window refunds from the previous window, a
/// token bucket only what has not refilled yet.
async fn refunds_after_time_passed<F, Fut>(make: &F) -> Result<(), Violation>
where
    F: Fn(PolicySet, ManualClock) -> Fut,
    Fut: Future<Output = Arc<dyn SetLimiter>>,
{
    let bucket = Policy::token_bucket(10, 1, Duration::from_secs(1)).expect("valid");
    let sliding = Policy::sliding_window(10, Duration::from_secs(1)).expect("valid");
    let all = set(vec![
        named("fixed", fixed(10, 1)).settling(),
        named("sliding", sliding).settling(),
        named("bucket", bucket).settling(),
    ]);
    let (l, clock) = build(make, all, ALIGNED).await;
    let l = &*l;
    clock.set(ALIGNED + SEC / 2);
    let mut receipts = Vec::new();
    for key in [b"a", b"b"] {
        let (d, r) = check(l, key, &[8, 8, 10]).await?;
        ensure!(
            counts(&d) == [(true, 2), (true, 2), (true, 0)],
            "the estimates: {d:?}"
        );
        receipts.push(receipt_of("estimates", r)?);
    }
    let b = receipts.pop().expect("two receipts");
    let a = receipts.pop().expect("two receipts");
    // The next window begins, half a second on.
    clock.set(ALIGNED + SEC);
    let d = settle(l, a, &[3, 2, 5]).await?;
    // fixed: the receipt's window is gone, nothing comes back (a fresh
    // window); sliding: 6 come back from the previous window, which still
    // weighs in fully at the window's start; bucket: the 10 tokens are
    // counted until 10.5 s, 9.5 tokens' time ahead, so all 5 come back.
    ensure!(
        counts(&d) == [(true, 10), (true, 8), (true, 5)],
        "settled half a second later: {d:?}"
    );
    ensure!(
        us(d.decisions[2].reset_after) == 4 * SEC + SEC / 2,
        "the bucket's tat 4.5 s ahead: {:?}",
        d.decisions[2]
    );
    // 8 s on, the sliding window too has forgotten the receipt; of the
    // bucket's 10 tokens only 2.5 tokens' time is still ahead: 2 come back
    // of the 5 asked.
    clock.set(ALIGNED + 8 * SEC);
    let d = settle(l, b, &[3, 2, 5]).await?;
    ensure!(
        counts(&d) == [(true, 10), (true, 10), (true, 9)],
        "settled 7.5 s later: {d:?}"
    );
    ensure!(
        us(d.decisions[2].reset_after) == SEC / 2,
        "the bucket's tat half a second ahead: {:?}",
        d.decisions[2]
    );
    Ok(())
}

/// A lease expires by its TTL; renewing it then reports it lost, settling
/// it frees no slot; a held lease renews and is released.
async fn lease_expires<F, Fut>(make: &F, options: RunOptions) -> Result<(), Violation>
where
    F: Fn(PolicySet, ManualClock) -> Fut,
    Fut: Future<Output = Arc<dyn SetLimiter>>,
{
    let one = set(vec![named("streams", streams(1, Duration::from_secs(1)))]);
    let (l, clock) = build(make, one, ALIGNED).await;
    let l = &*l;
    let (d, r) = check(l, b"k", &[1]).await?;
    ensure!(counts(&d) == [(true, 0)], "the first lease: {d:?}");
    let mut first = receipt_of("first lease", r)?;
    clock.set(ALIGNED + SEC - 1);
    let (d, r) = check(l, b"k", &[1]).await?;
    ensure!(
        r.is_none() && d.retry_after == Some(Duration::from_micros(1)),
        "1 µs before the lease expires: {d:?}"
    );
    clock.set(ALIGNED + SEC);
    let (d, r) = check(l, b"k", &[1]).await?;
    ensure!(
        counts(&d) == [(true, 0)],
        "the slot of the expired lease: {d:?}"
    );
    let mut second = receipt_of("second lease", r)?;
    let kept = l
        .renew(&mut first)
        .await
        .map_err(|e| Violation::new(format!("renew failed: {e}")))?;
    ensure!(!kept, "an expired lease renewed");
    let d = settle(l, first, &[0]).await?;
    ensure!(
        counts(&d) == [(false, 0)],
        "settling an expired lease freed a slot: {d:?}"
    );
    clock.set(ALIGNED + SEC + SEC / 2);
    let kept = l
        .renew(&mut second)
        .await
        .map_err(|e| Violation::new(format!("renew failed: {e}")))?;
    ensure!(kept, "a held lease was lost");
    ensure!(
        second
            .leases()
            .map(|l| l.expires_at)
            .eq([ALIGNED + 2 * SEC + SEC / 2]),
        "renewed to now + ttl: {second:?}"
    );
    clock.set(ALIGNED + 2 * SEC + SEC / 4);
    let (d, _) = check(l, b"k", &[1]).await?;
    ensure!(!d.allowed, "the renewed lease is still held: {d:?}");
    let _ = drop_receipt(l, second, options).await;
    let p = peek(l, b"k").await?;
    ensure!(counts(&p) == [(true, 1)], "released: {p:?}");
    Ok(())
}

/// A gate takes nothing but needs a unit; a post-paid amount is charged at
/// settle; a gate on a concurrency policy takes no lease.
async fn gates<F, Fut>(make: &F) -> Result<(), Violation>
where
    F: Fn(PolicySet, ManualClock) -> Fut,
    Fut: Future<Output = Arc<dyn SetLimiter>>,
{
    let s = set(vec![
        named("requests", fixed(2, 10)),
        named("tokens", fixed(100, 10)).settling(),
        named("streams", streams(1, Duration::from_secs(30))),
    ]);
    let (l, clock) = build(make, s, ALIGNED).await;
    let l = &*l;
    clock.set(ALIGNED + 4 * SEC);
    let (d, r) = check(l, b"k", &[1, 0, 0]).await?;
    ensure!(
        counts(&d) == [(true, 1), (true, 100), (true, 1)],
        "gates on tokens and streams: {d:?}"
    );
    let r = receipt_of("gated", r)?;
    ensure!(
        r.taken() == [1, 0, 0] && r.leases().count() == 0,
        "a gate takes nothing: {r:?}"
    );
    // Post-paid: 120 tokens, past the limit.
    let d = settle(l, r, &[1, 120, 0]).await?;
    ensure!(
        counts(&d) == [(true, 1), (false, 0), (true, 1)],
        "120 tokens charged: {d:?}"
    );
    ensure!(
        d.decisions[1].retry_after == Some(Duration::from_secs(6)),
        "the window ends in 6 s: {:?}",
        d.decisions[1]
    );
    let (d, r) = check(l, b"k", &[1, 0, 1]).await?;
    ensure!(
        r.is_none() && d.denied_by().eq([1]) && d.retry_after == Some(Duration::from_secs(6)),
        "a gate on an exhausted policy denies: {d:?}"
    );
    let p = peek(l, b"k").await?;
    ensure!(
        counts(&p) == [(true, 1), (false, 0), (true, 1)],
        "the denial took nothing: {p:?}"
    );
    clock.set(ALIGNED + 10 * SEC);
    let (d, _) = check(l, b"k", &[1, 0, 1]).await?;
    ensure!(
        counts(&d) == [(true, 1), (true, 100), (true, 0)],
        "a new window: {d:?}"
    );
    Ok(())
}

/// A gate on a new key of a settling bucket is an instant the bucket has
/// seen: a settle made after the clock went back applies that instant, as
/// a check would (`SPEC.md` 5.2, `seen`), even on a key the gate found
/// empty and left full.
async fn a_gate_is_seen<F, Fut>(make: &F) -> Result<(), Violation>
where
    F: Fn(PolicySet, ManualClock) -> Fut,
    Fut: Future<Output = Arc<dyn SetLimiter>>,
{
    let bucket = Policy::token_bucket(1, 1, Duration::from_secs(1)).expect("valid");
    let (l, clock) = build(make, set(vec![named("tokens", bucket).settling()]), ALIGNED).await;
    let l = &*l;
    clock.set(ALIGNED + 4 * SEC);
    let (d, r) = check(l, b"k", &[0]).await?;
    ensure!(counts(&d) == [(true, 1)], "a gate on a new key: {d:?}");
    let r = receipt_of("gated", r)?;
    clock.set(ALIGNED + 4 * SEC - 2);
    // 3 tokens charged from the gate's instant, answered at that instant.
    let d = settle(l, r, &[3]).await?;
    ensure!(
        counts(&d) == [(false, 0)]
            && d.decisions[0].reset_after == Duration::from_secs(3)
            && d.retry_after == Some(Duration::from_secs(3)),
        "3 tokens settled 2 µs before the gate: {d:?}"
    );
    Ok(())
}

/// A set denied by two policies waits for the longer.
async fn longest_retry<F, Fut>(make: &F) -> Result<(), Violation>
where
    F: Fn(PolicySet, ManualClock) -> Fut,
    Fut: Future<Output = Arc<dyn SetLimiter>>,
{
    let s = set(vec![
        named("short", fixed(1, 10)),
        named("long", fixed(1, 30)),
    ]);
    let (l, clock) = build(make, s, ALIGNED).await;
    let l = &*l;
    clock.set(ALIGNED + 5 * SEC);
    let (d, _) = check(l, b"k", &[1, 1]).await?;
    ensure!(d.allowed, "the first: {d:?}");
    let (d, _) = check(l, b"k", &[1, 1]).await?;
    ensure!(
        d.denied_by().eq([0, 1])
            && d.decisions[0].retry_after == Some(Duration::from_secs(5))
            && d.retry_after == Some(Duration::from_secs(25))
            && d.first_denied() == Some(1),
        "denied by both: {d:?}"
    );
    clock.set(ALIGNED + 10 * SEC);
    let (d, _) = check(l, b"k", &[1, 1]).await?;
    ensure!(
        !d.allowed && d.denied_by().eq([1]),
        "the short window turned, not the long: {d:?}"
    );
    clock.set(ALIGNED + 30 * SEC - 1);
    let (d, _) = check(l, b"k", &[1, 1]).await?;
    ensure!(!d.allowed, "1 µs before the retry: {d:?}");
    clock.set(ALIGNED + 30 * SEC);
    let (d, _) = check(l, b"k", &[1, 1]).await?;
    ensure!(d.allowed, "at the retry: {d:?}");
    Ok(())
}

/// Settling an amount other than what was taken on a policy not declared
/// to settle is an error naming it; the rate policies keep the estimate
/// and the lease is released anyway. Costs out of range are errors too.
async fn settle_errors<F, Fut>(make: &F) -> Result<(), Violation>
where
    F: Fn(PolicySet, ManualClock) -> Fut,
    Fut: Future<Output = Arc<dyn SetLimiter>>,
{
    let s = set(vec![
        named("requests", fixed(5, 30)),
        named("streams", streams(1, Duration::from_secs(30))),
    ]);
    let (l, _clock) = build(make, s, ALIGNED).await;
    let l = &*l;
    for costs in [&[6, 1][..], &[1, 2], &[1], &[1, 1, 1]] {
        let e = l.check_set(b"k", costs).await;
        ensure!(
            matches!(&e, Err(e) if e.is_invalid() || e.is_cost_rejected()),
            "costs {costs:?}: {e:?}"
        );
    }
    let e = l.check_set(b"k", &[6, 1]).await;
    ensure!(
        matches!(&e, Err(e) if e.policy() == Some("requests")),
        "the error names the policy: {e:?}"
    );
    let (d, r) = check(l, b"k", &[2, 1]).await?;
    ensure!(counts(&d) == [(true, 3), (true, 0)], "the check: {d:?}");
    let r = receipt_of("check", r)?;
    let e = l.settle(r, &[1, 0]).await;
    ensure!(
        matches!(&e, Err(e) if e.is_invalid() && e.policy() == Some("requests")),
        "settling 1 of 2 on a policy not declared to settle: {e:?}"
    );
    let p = peek(l, b"k").await?;
    ensure!(
        counts(&p) == [(true, 3), (true, 1)],
        "the estimate stays, the lease is released: {p:?}"
    );
    Ok(())
}

/// Every awkward key holds its own leases.
async fn keys_are_independent<F, Fut>(make: &F) -> Result<(), Violation>
where
    F: Fn(PolicySet, ManualClock) -> Fut,
    Fut: Future<Output = Arc<dyn SetLimiter>>,
{
    let s = set(vec![
        named("requests", fixed(1, 30)),
        named("streams", streams(1, Duration::from_secs(30))),
    ]);
    let (l, _clock) = build(make, s, ALIGNED).await;
    let l = &*l;
    let keys = awkward_keys();
    for key in &keys {
        let (d, _) = check(l, key, &[1, 1]).await?;
        ensure!(d.allowed, "key of {} bytes: {d:?}", key.len());
    }
    for key in &keys {
        let (d, _) = check(l, key, &[0, 0]).await?;
        ensure!(
            counts(&d) == [(false, 0), (false, 0)],
            "key of {} bytes after one check: {d:?}",
            key.len()
        );
    }
    Ok(())
}

/// C3: a reservation dropped (cancelled task, panicking holder) releases
/// its lease at once and keeps the estimate charged.
async fn dropped_reservations_release<F, Fut>(make: &F) -> Result<(), Violation>
where
    F: Fn(PolicySet, ManualClock) -> Fut,
    Fut: Future<Output = Arc<dyn SetLimiter>>,
{
    let s = set(vec![
        named("tokens", fixed(100, 30)).settling(),
        named("streams", streams(1, Duration::from_secs(30))),
    ]);
    let (l, _clock) = build(make, s, ALIGNED).await;
    let acquire = |costs: [u64; 2]| {
        let l = Arc::clone(&l);
        async move {
            Reservation::acquire(l, b"k", &costs)
                .await
                .map_err(|e| Violation::new(format!("acquire failed: {e}")))
        }
    };
    let held = acquire([40, 1])
        .await?
        .map_err(|d| Violation::new(format!("the first reservation was denied: {d:?}")))?;
    let denied = acquire([1, 1]).await?;
    ensure!(denied.is_err(), "a second stream while one is held");

    // A task cancelled before it finished drops what it held.
    let task = async move {
        let _held = held;
        std::future::pending::<()>().await;
    };
    drop(task);
    let p = peek(&*l, b"k").await?;
    ensure!(
        counts(&p) == [(true, 60), (true, 1)],
        "a cancelled holder: the lease is free, the estimate charged: {p:?}"
    );

    // A holder that panics drops it while unwinding.
    let held = acquire([10, 1])
        .await?
        .map_err(|d| Violation::new(format!("denied after the release: {d:?}")))?;
    let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
        let _held = held;
        panic!("the holder fails");
    }));
    ensure!(panicked.is_err(), "the holder did not panic");
    let p = peek(&*l, b"k").await?;
    ensure!(
        counts(&p) == [(true, 50), (true, 1)],
        "a panicking holder: {p:?}"
    );
    Ok(())
}
