//! The invariants of `SPEC.md` section 5, checked over an operation
//! sequence on any [`SetLimiter`].
//!
//! [`check_set_invariants`] observes the limiter only through its answers
//! (decisions, receipts, `peek_set`), so it runs on every backend:
//!
//! - **5.1 all or nothing**: a denied check (or an error) leaves every
//!   policy's `peek` as it was; each policy's decision is its own (allowed
//!   iff its demand `max(c, 1)` fits its `remaining`); an allowed check
//!   takes exactly `c` from each policy; the set's `allowed` and
//!   `retry_after` are derived from the policies' as SPEC says;
//! - **invariant 3 for sets**: a denied check's `retry_after` is exact:
//!   replayed on a fresh key, the same costs are denied 1 µs before it and
//!   allowed at it (while the clock has only moved forward);
//! - **S3**: settling `actual == taken` leaves the policy's decision as it
//!   was (that a receipt settles at most once is the type system's: see
//!   [the module](super));
//! - **S1 / S2**: at the end, every key's rate policies are probed with
//!   `peek_set` at later instants (from the latest seen to three windows
//!   on) against the counterfactual (every allowed check takes its actual
//!   if settled, else its estimate, unconditionally at its own instant,
//!   computed on the pure policy). A policy whose every settle that
//!   changed something was a refund of a receipt still counted (fixed: the
//!   same window; sliding: the same or the next; bucket: `tat_receipt -
//!   now >= x*T`) made with only checks of that policy in between, under
//!   a clock that never went back, must answer *exactly* as the
//!   counterfactual (S1); every other admits no more (S2: `remaining` no
//!   larger, `allowed` only if it is allowed). S1 needs the forward
//!   clock even with no settle at all: after the clock went back, a check
//!   is charged where the policy already was (section 1: never admit more
//!   than the latest instant seen would), not at its own instant as the
//!   counterfactual charges it. Probing by `remaining`
//!   relies on invariant 2 (`remaining` is exact), which the single-policy
//!   suite checks;
//! - **C1**: never more than `N` leases held that no instant seen has
//!   expired; **C2**: a release or settle frees exactly one slot for a
//!   lease held, none for one expired; `renew` keeps held leases (never
//!   shortening them) and reports expired ones lost.
//!
//! [`check_set_of_one`] compares a set of one policy with the policy alone.

use std::collections::{HashMap, HashSet};
use std::fmt::Debug;

use ratelimit_core::{
    Algorithm, Decision, ErrorKind, Limit, Limiter, ManualClock, Mark, Policy, PolicyReceipt,
    PolicySet, RateState, Receipt, SetDecision, SetLimiter,
};

use super::run::{amounts, drop_receipt, picked};
use super::{RunOptions, SetOp};
use crate::ops::{Op, Step};
use crate::{ensure, Violation};

/// The key of index `k` in namespace `ns`: the main run is namespace 0,
/// each replay a fresh one.
fn key_of(ns: usize, k: usize) -> Vec<u8> {
    format!("set-inv:{ns}:{k}").into_bytes()
}

async fn peek(limiter: &dyn SetLimiter, key: &[u8]) -> Result<SetDecision, Violation> {
    let d = limiter
        .peek_set(key)
        .await
        .map_err(|e| Violation::new(format!("peek_set failed: {e}")))?;
    shape(limiter.policy_set(), &d)?;
    Ok(d)
}

/// The set decision's own fields agree with its policies' decisions.
fn shape(set: &PolicySet, d: &SetDecision) -> Result<(), Violation> {
    ensure!(
        d.decisions.len() == set.len(),
        "{} decisions for a set of {} policies",
        d.decisions.len(),
        set.len()
    );
    ensure!(
        d.degraded.is_none() && d.decisions.iter().all(|p| p.degraded.is_none()),
        "a decision the store made is marked degraded: {d:?}"
    );
    let all = d.decisions.iter().all(|p| p.allowed);
    ensure!(
        d.allowed == all,
        "5.1: the set's allowed is {} but its policies' are {:?}",
        d.allowed,
        d.decisions
    );
    let expected = if all {
        None
    } else {
        d.decisions.iter().filter_map(|p| p.retry_after).max()
    };
    ensure!(
        d.retry_after == expected,
        "5.1: the set's retry_after is {:?}, the longest of the denying policies' is {:?}",
        d.retry_after,
        expected
    );
    for (p, l) in d.decisions.iter().zip(set.limits()) {
        ensure!(
            p.limit == l.limit().limit(),
            "policy {}: limit {} reported, configured {}",
            l.name(),
            p.limit,
            l.limit().limit()
        );
    }
    Ok(())
}

fn costs_valid(set: &PolicySet, costs: &[u64]) -> bool {
    costs.len() == set.len()
        && set
            .limits()
            .iter()
            .zip(costs)
            .all(|(l, &c)| match l.limit() {
                Limit::Rate(p) => c <= p.limit(),
                Limit::Concurrency(_) => c <= 1,
            })
}

/// An allowed check of the run, for the counterfactual.
#[derive(Debug, Clone)]
struct Entry {
    at: u64,
    taken: Vec<u64>,
    actual: Option<Vec<u64>>,
}

struct Open {
    key: usize,
    receipt: Receipt,
    /// The operation index of the check.
    op: usize,
    /// The check's entry in its key's history.
    entry: usize,
    /// Whether the key was reset since (its leases were forgotten).
    reset: bool,
}

/// What a release of `parts` must free per concurrency policy: `Some(n)`
/// when known, `None` when the lease may or may not have been forgotten
/// (it expired at an instant seen before the clock went back).
fn expected_freed(parts: &[PolicyReceipt], now: u64, latest: u64, reset: bool) -> Vec<Option<u64>> {
    parts
        .iter()
        .map(|p| match p.mark {
            Mark::Lease(Some(_)) if reset => Some(0),
            Mark::Lease(Some(l)) if l.expires_at <= now => Some(0),
            Mark::Lease(Some(l)) if l.expires_at > latest => Some(1),
            Mark::Lease(Some(_)) => None,
            _ => Some(0),
        })
        .collect()
}

/// C2 and "a release changes no rate policy": `after` against `before`.
fn check_release(
    set: &PolicySet,
    before: &SetDecision,
    after: &[Decision],
    freed: &[Option<u64>],
    rate_unchanged: &[bool],
) -> Result<(), Violation> {
    for (i, l) in set.limits().iter().enumerate() {
        match l.limit() {
            Limit::Concurrency(_) => {
                let got = after[i]
                    .remaining
                    .checked_sub(before.decisions[i].remaining);
                let ok = match freed[i] {
                    Some(n) => got == Some(n),
                    None => matches!(got, Some(0 | 1)),
                };
                ensure!(
                    ok,
                    "C2: releasing freed {:?} slots of {}, expected {:?} (before {:?}, after {:?})",
                    got,
                    l.name(),
                    freed[i],
                    before.decisions[i],
                    after[i]
                );
            }
            Limit::Rate(_) if rate_unchanged[i] => {
                ensure!(
                    after[i] == before.decisions[i],
                    "S3: policy {} changed from {:?} to {:?} though nothing was charged or refunded",
                    l.name(),
                    before.decisions[i],
                    after[i]
                );
            }
            Limit::Rate(_) => {}
        }
    }
    Ok(())
}

/// Takes `x` unconditionally at `now` on the pure policy: the
/// counterfactual's charge at the check's own instant.
fn force(policy: &Policy, state: &RateState, now: u64, x: u64) -> Result<RateState, Violation> {
    if x == 0 {
        return Ok(*state);
    }
    let plain = RateState {
        state: state.state,
        ledger: Default::default(),
    };
    let (_, _, mark) = policy
        .check_part(&plain, now, 0, false)
        .map_err(|e| Violation::new(format!("counterfactual gate failed: {e}")))?;
    let (_, next) = policy
        .settle_part(&plain, now, &PolicyReceipt::new(0, mark), x, true)
        .map_err(|e| Violation::new(format!("counterfactual charge failed: {e}")))?;
    Ok(RateState {
        state: next.state,
        ledger: Default::default(),
    })
}

/// Whether a refund of `x` from receipt part `part` settled at `now` is
/// of a part still counted (S1's condition; forward clock, no settle of
/// the policy since the check).
fn still_counted(policy: &Policy, part: &PolicyReceipt, now: u64, x: u64) -> bool {
    let w = u64::try_from(policy.window().as_micros()).unwrap_or(u64::MAX);
    match (policy, part.mark) {
        (Policy::FixedWindow(_), Mark::Window(k)) => now / w == k,
        (Policy::SlidingWindow(_), Mark::Window(k)) => now / w == k || now / w == k + 1,
        (Policy::TokenBucket(b), Mark::Bucket { tat, .. }) => {
            u128::from(tat.saturating_sub(now))
                >= u128::from(x) * u128::from(b.emission_interval_micros())
        }
        _ => false,
    }
}

/// Replays `ops` on namespace `ns`, checking nothing: a copy of the main
/// run's keys as they were after `ops`.
async fn replay(
    limiter: &dyn SetLimiter,
    clock: &ManualClock,
    start: u64,
    ops: &[SetOp],
    ns: usize,
    options: RunOptions,
) -> u64 {
    let mut now = start;
    clock.set(now);
    let mut open: Vec<Receipt> = Vec::new();
    for op in ops {
        match op {
            SetOp::Advance { us } => {
                now = now.saturating_add_signed(*us);
                clock.set(now);
            }
            SetOp::Check { key, costs } => {
                if let Ok(check) = limiter.check_set(&key_of(ns, *key), costs).await {
                    open.extend(check.receipt);
                }
            }
            SetOp::Settle { pick, actual } => {
                if let Some(p) = picked(&open, *pick) {
                    let r = open.remove(p);
                    let a = amounts(actual, &r);
                    let _ = limiter.settle(r, &a).await;
                }
            }
            SetOp::Renew { pick } => {
                if let Some(p) = picked(&open, *pick) {
                    let _ = limiter.renew(&mut open[p]).await;
                }
            }
            SetOp::Drop { pick } => {
                if let Some(p) = picked(&open, *pick) {
                    let _ = drop_receipt(limiter, open.remove(p), options).await;
                }
            }
            SetOp::Peek { key } => {
                let _ = limiter.peek_set(&key_of(ns, *key)).await;
            }
            SetOp::Reset { key } => {
                let _ = limiter.reset_set(&key_of(ns, *key)).await;
            }
        }
    }
    now
}

/// Runs `ops` from `start` on `limiter` and checks the invariants of
/// section 5 listed in [the module](self) after every operation, then S1
/// and S2 at later instants.
///
/// The limiter must take its time from `clock` and be fresh: the run uses
/// keys `set-inv:{n}:{k}`, a fresh `n` for every replay. Sequences with
/// [`SetOp::Reset`] are accepted, but S1 and S2 are not checked on a key
/// once reset (the counterfactual is not defined across a reset).
///
/// # Errors
///
/// The first [`Violation`], naming the operation and the invariant.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use ratelimit_conformance::sets::invariants::check_set_invariants;
/// use ratelimit_conformance::sets::{RunOptions, SetOp};
/// use ratelimit_core::{ManualClock, NamedLimit, Policy, PolicySet, ReferenceSetLimiter};
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let set = PolicySet::new(vec![
///     NamedLimit::new("requests", Policy::fixed_window(2, Duration::from_secs(1)).unwrap()).unwrap(),
///     NamedLimit::new("tokens", Policy::sliding_window(10, Duration::from_secs(1)).unwrap())
///         .unwrap()
///         .settling(),
/// ]).unwrap();
/// let clock = ManualClock::new(0);
/// let limiter = ReferenceSetLimiter::with_clock(set, clock.clone());
/// let ops = [
///     SetOp::Check { key: 0, costs: vec![1, 8] },
///     SetOp::Check { key: 0, costs: vec![1, 5] }, // denied by "tokens"
///     SetOp::Advance { us: 300_000 },
///     SetOp::Settle { pick: 0, actual: vec![None, Some(2)] }, // 6 come back (S1)
///     SetOp::Check { key: 0, costs: vec![1, 5] },
/// ];
/// check_set_invariants(&limiter, &clock, 10_000_000, &ops, RunOptions::default())
///     .await
///     .unwrap();
/// # });
/// ```
#[allow(clippy::too_many_lines)] // one match over the operations, each checked in place
pub async fn check_set_invariants(
    limiter: &dyn SetLimiter,
    clock: &ManualClock,
    start: u64,
    ops: &[SetOp],
    options: RunOptions,
) -> Result<(), Violation> {
    let set = limiter.policy_set().clone();
    let mut now = start;
    let mut latest = start;
    let mut went_back = false;
    let mut next_ns = 1;
    let mut open: Vec<Open> = Vec::new();
    let mut history: HashMap<usize, Vec<Entry>> = HashMap::new();
    let mut inexact: HashSet<(usize, usize)> = HashSet::new();
    let mut last_change: HashMap<(usize, usize), usize> = HashMap::new();
    let mut was_reset: HashSet<usize> = HashSet::new();
    clock.set(now);
    for (i, op) in ops.iter().enumerate() {
        let at = |now: u64| format!("op {i} ({op:?}) at t={now}");
        match op {
            SetOp::Advance { us } => {
                now = now.saturating_add_signed(*us);
                went_back |= now < latest;
                latest = latest.max(now);
                clock.set(now);
            }
            SetOp::Check { key: k, costs } => {
                let key = key_of(0, *k);
                let before = peek(limiter, &key).await.map_err(|v| v.context(at(now)))?;
                let result = limiter.check_set(&key, costs).await;
                let valid = costs_valid(&set, costs);
                let check = match result {
                    Err(e) => {
                        let after = peek(limiter, &key).await.map_err(|v| v.context(at(now)))?;
                        ensure!(!valid, "{}: valid costs failed: {e}", at(now));
                        ensure!(
                            matches!(
                                e.kind(),
                                ErrorKind::Invalid | ErrorKind::CostExceedsLimit { .. }
                            ),
                            "{}: costs out of range gave {e:?}, not an invalid or cost error",
                            at(now)
                        );
                        ensure!(
                            e.policy().is_some() || costs.len() != set.len(),
                            "{}: the error names no policy: {e}",
                            at(now)
                        );
                        ensure!(
                            after == before,
                            "{}: 5.1: an error changed the key from {before:?} to {after:?}",
                            at(now)
                        );
                        continue;
                    }
                    Ok(check) => check,
                };
                ensure!(valid, "{}: costs out of range were not an error", at(now));
                let d = &check.decision;
                shape(&set, d).map_err(|v| v.context(at(now)))?;
                let after = peek(limiter, &key).await.map_err(|v| v.context(at(now)))?;
                if !went_back {
                    for (j, l) in set.limits().iter().enumerate() {
                        let demand = costs[j].max(1);
                        let fits = demand <= before.decisions[j].remaining;
                        ensure!(
                            d.decisions[j].allowed == fits,
                            "{}: 5.1: policy {} answered allowed={} for a demand of {demand} \
                             with {} remaining",
                            at(now),
                            l.name(),
                            d.decisions[j].allowed,
                            before.decisions[j].remaining
                        );
                        if costs[j] == 0 {
                            ensure!(
                                d.decisions[j] == before.decisions[j],
                                "{}: 5.1: a gate on {} answered {:?}, its peek {:?}",
                                at(now),
                                l.name(),
                                d.decisions[j],
                                before.decisions[j]
                            );
                        }
                    }
                }
                let Some(receipt) = check.receipt else {
                    ensure!(!d.allowed, "{}: allowed without a receipt", at(now));
                    ensure!(
                        after == before,
                        "{}: 5.1: a denied set changed the key from {before:?} to {after:?}",
                        at(now)
                    );
                    if !went_back {
                        let wait = d.retry_after.ok_or_else(|| {
                            Violation::new("denied without a retry_after").context(at(now))
                        })?;
                        let wait = u64::try_from(wait.as_micros()).unwrap_or(u64::MAX);
                        ensure!(wait > 0, "{}: denied with retry_after 0", at(now));
                        let ns = next_ns;
                        next_ns += 1;
                        replay(limiter, clock, start, &ops[..i], ns, options).await;
                        let fork = key_of(ns, *k);
                        clock.set(now + wait - 1);
                        let early = limiter.check_set(&fork, costs).await;
                        ensure!(
                            matches!(&early, Ok(c) if !c.decision.allowed),
                            "{}: invariant 3: 1 µs before retry_after ({wait} µs) the same \
                             costs gave {early:?}",
                            at(now)
                        );
                        clock.set(now + wait);
                        let then = limiter.check_set(&fork, costs).await;
                        ensure!(
                            matches!(&then, Ok(c) if c.decision.allowed),
                            "{}: invariant 3: after retry_after ({wait} µs) the same costs \
                             gave {then:?}",
                            at(now)
                        );
                        clock.set(now);
                    }
                    continue;
                };
                ensure!(d.allowed, "{}: denied with a receipt", at(now));
                ensure!(
                    receipt.key() == key.as_slice(),
                    "{}: a receipt for another key",
                    at(now)
                );
                ensure!(
                    receipt.taken() == *costs,
                    "{}: the receipt took {:?}, the costs were {costs:?}",
                    at(now),
                    receipt.taken()
                );
                for ((l, part), &c) in set.limits().iter().zip(receipt.parts()).zip(costs) {
                    let ok = match (l.limit(), part.mark) {
                        (Limit::Rate(Policy::TokenBucket(_)), Mark::Bucket { .. })
                        | (Limit::Rate(_), Mark::Window(_)) => true,
                        (Limit::Concurrency(cc), Mark::Lease(lease)) => match lease {
                            Some(lease) => {
                                c == 1 && lease.expires_at == now + cc.lease_ttl_micros()
                            }
                            None => c == 0,
                        },
                        _ => false,
                    };
                    ensure!(ok, "{}: receipt part {part:?} for {}", at(now), l.name());
                }
                if !went_back {
                    for (j, l) in set.limits().iter().enumerate() {
                        let b = before.decisions[j].remaining;
                        ensure!(
                            after.decisions[j].remaining == b - costs[j],
                            "{}: 5.1: {} took {} from {b} remaining, {} are left",
                            at(now),
                            l.name(),
                            costs[j],
                            after.decisions[j].remaining
                        );
                    }
                }
                let entries = history.entry(*k).or_default();
                entries.push(Entry {
                    at: now,
                    taken: costs.clone(),
                    actual: None,
                });
                let entry = entries.len() - 1;
                open.push(Open {
                    key: *k,
                    receipt,
                    op: i,
                    entry,
                    reset: false,
                });
                // C1: leases no instant seen has expired.
                for (j, l) in set.limits().iter().enumerate() {
                    if let Limit::Concurrency(c) = l.limit() {
                        let held = open
                            .iter()
                            .filter(|o| o.key == *k && !o.reset)
                            .filter_map(|o| o.receipt.parts()[j].lease())
                            .filter(|lease| lease.expires_at > latest)
                            .count() as u64;
                        ensure!(
                            held <= c.limit(),
                            "{}: C1: {held} leases of {} held, limit {}",
                            at(now),
                            l.name(),
                            c.limit()
                        );
                    }
                }
            }
            SetOp::Settle { pick, actual } => {
                let Some(p) = picked(&open, *pick) else {
                    continue;
                };
                let o = open.remove(p);
                let key = key_of(0, o.key);
                let before = peek(limiter, &key).await.map_err(|v| v.context(at(now)))?;
                let a = amounts(actual, &o.receipt);
                let taken = o.receipt.taken();
                let parts = o.receipt.parts().to_vec();
                let freed = expected_freed(&parts, now, latest, o.reset);
                let mismatched =
                    set.limits()
                        .iter()
                        .zip(a.iter().zip(&taken))
                        .any(|(l, (a, t))| {
                            matches!(l.limit(), Limit::Rate(_)) && !l.settles() && a != t
                        });
                match limiter.settle(o.receipt, &a).await {
                    Err(e) => {
                        ensure!(mismatched, "{}: settle failed: {e}", at(now));
                        ensure!(
                            e.is_invalid(),
                            "{}: settle gave {e:?}, not invalid",
                            at(now)
                        );
                        let after = peek(limiter, &key).await.map_err(|v| v.context(at(now)))?;
                        let unchanged = vec![true; set.len()];
                        check_release(&set, &before, &after.decisions, &freed, &unchanged)
                            .map_err(|v| v.context(format!("{} (failed settle)", at(now))))?;
                    }
                    Ok(d) => {
                        ensure!(
                            !mismatched,
                            "{}: a policy not declared to settle settled an amount other than \
                             what it took",
                            at(now)
                        );
                        shape(&set, &d).map_err(|v| v.context(at(now)))?;
                        let unchanged: Vec<bool> =
                            a.iter().zip(&taken).map(|(a, t)| a == t).collect();
                        check_release(&set, &before, &d.decisions, &freed, &unchanged)
                            .map_err(|v| v.context(at(now)))?;
                        if let Some(entries) = history.get_mut(&o.key).filter(|_| !o.reset) {
                            entries[o.entry].actual = Some(a.clone());
                        }
                        for (j, l) in set.limits().iter().enumerate() {
                            let Limit::Rate(policy) = l.limit() else {
                                continue;
                            };
                            if a[j] == taken[j] {
                                continue;
                            }
                            let clean = !went_back
                                && a[j] < taken[j]
                                && last_change.get(&(o.key, j)).is_none_or(|&c| c < o.op)
                                && still_counted(&policy, &parts[j], now, taken[j] - a[j]);
                            if !clean {
                                inexact.insert((o.key, j));
                            }
                            last_change.insert((o.key, j), i);
                        }
                    }
                }
            }
            SetOp::Renew { pick } => {
                let Some(p) = picked(&open, *pick) else {
                    continue;
                };
                let key = key_of(0, open[p].key);
                let before = peek(limiter, &key).await.map_err(|v| v.context(at(now)))?;
                let old: Vec<_> = open[p].receipt.leases().collect();
                let reset = open[p].reset;
                let kept = limiter
                    .renew(&mut open[p].receipt)
                    .await
                    .map_err(|e| Violation::new(format!("renew failed: {e}")).context(at(now)))?;
                let any_expired =
                    old.iter().any(|l| l.expires_at <= now) || (reset && !old.is_empty());
                let all_held = !reset && old.iter().all(|l| l.expires_at > latest);
                ensure!(
                    !(kept && any_expired),
                    "{}: renew kept an expired lease: {old:?}",
                    at(now)
                );
                ensure!(
                    kept || !all_held,
                    "{}: renew lost a lease still held: {old:?}",
                    at(now)
                );
                if kept {
                    for ((l, part), was) in set
                        .limits()
                        .iter()
                        .zip(open[p].receipt.parts())
                        .filter_map(|(l, part)| part.lease().map(|lease| (l, lease)))
                        .zip(&old)
                    {
                        let Limit::Concurrency(c) = l.limit() else {
                            continue;
                        };
                        let expected = was.expires_at.max(now + c.lease_ttl_micros());
                        ensure!(
                            part.expires_at == expected && part.id == was.id,
                            "{}: renew made {part:?} of {was:?}, expected expiry {expected}",
                            at(now)
                        );
                    }
                }
                let after = peek(limiter, &key).await.map_err(|v| v.context(at(now)))?;
                for (j, l) in set.limits().iter().enumerate() {
                    if matches!(l.limit(), Limit::Rate(_)) {
                        ensure!(
                            after.decisions[j] == before.decisions[j],
                            "{}: renew changed rate policy {}",
                            at(now),
                            l.name()
                        );
                    }
                }
            }
            SetOp::Drop { pick } => {
                let Some(p) = picked(&open, *pick) else {
                    continue;
                };
                let o = open.remove(p);
                let key = key_of(0, o.key);
                let before = peek(limiter, &key).await.map_err(|v| v.context(at(now)))?;
                let freed = expected_freed(o.receipt.parts(), now, latest, o.reset);
                let after = match drop_receipt(limiter, o.receipt, options).await {
                    None => peek(limiter, &key).await.map_err(|v| v.context(at(now)))?,
                    Some(settled) => settled.map_err(|e| {
                        Violation::new(format!("settling what was taken failed: {e}"))
                            .context(at(now))
                    })?,
                };
                let unchanged = vec![true; set.len()];
                check_release(&set, &before, &after.decisions, &freed, &unchanged)
                    .map_err(|v| v.context(format!("{} (dropped)", at(now))))?;
            }
            SetOp::Peek { key } => {
                peek(limiter, &key_of(0, *key))
                    .await
                    .map_err(|v| v.context(at(now)))?;
            }
            SetOp::Reset { key: k } => {
                limiter
                    .reset_set(&key_of(0, *k))
                    .await
                    .map_err(|e| Violation::new(format!("reset failed: {e}")).context(at(now)))?;
                was_reset.insert(*k);
                for o in open.iter_mut().filter(|o| o.key == *k) {
                    o.reset = true;
                }
            }
        }
    }
    probe_counterfactual(
        limiter, clock, &set, latest, went_back, &history, &inexact, &was_reset,
    )
    .await
}

/// S1 and S2: each key's rate policies, probed at later instants, against
/// the counterfactual of its history.
#[allow(clippy::too_many_arguments)]
async fn probe_counterfactual(
    limiter: &dyn SetLimiter,
    clock: &ManualClock,
    set: &PolicySet,
    latest: u64,
    went_back: bool,
    history: &HashMap<usize, Vec<Entry>>,
    inexact: &HashSet<(usize, usize)>,
    was_reset: &HashSet<usize>,
) -> Result<(), Violation> {
    let mut offsets: Vec<u64> = vec![0, 1];
    for l in set.limits() {
        if let Limit::Rate(p) = l.limit() {
            let w = u64::try_from(p.window().as_micros()).unwrap_or(u64::MAX);
            offsets.extend([w / 3, w / 2, w - 1, w, 2 * w, 3 * w]);
        }
    }
    offsets.sort_unstable();
    offsets.dedup();
    let mut keys: Vec<_> = history
        .iter()
        .filter(|(k, _)| !was_reset.contains(k))
        .collect();
    keys.sort_by_key(|(k, _)| **k);
    // The counterfactual state of each (key, rate policy).
    let mut cf: HashMap<(usize, usize), (Policy, RateState)> = HashMap::new();
    for (k, entries) in &keys {
        for (j, l) in set.limits().iter().enumerate() {
            let Limit::Rate(policy) = l.limit() else {
                continue;
            };
            let mut state = RateState::default();
            for e in *entries {
                let x = e.actual.as_ref().map_or(e.taken[j], |a| a[j]);
                state = force(&policy, &state, e.at, x)?;
            }
            cf.insert((**k, j), (policy, state));
        }
    }
    for off in offsets {
        let t = latest.saturating_add(off);
        clock.set(t);
        for (k, _) in &keys {
            let ours = peek(limiter, &key_of(0, **k)).await?;
            for (j, l) in set.limits().iter().enumerate() {
                let Some((policy, state)) = cf.get(&(**k, j)) else {
                    continue;
                };
                let theirs = policy.peek(&state.state, t);
                let mine = &ours.decisions[j];
                if !went_back && !inexact.contains(&(**k, j)) {
                    ensure!(
                        *mine == theirs,
                        "S1: key {k}, policy {} at t={t}: {mine:?}, the counterfactual {theirs:?} \
                         ({state:?})",
                        l.name()
                    );
                } else {
                    ensure!(
                        mine.remaining <= theirs.remaining && (!mine.allowed || theirs.allowed),
                        "S2: key {k}, policy {} at t={t} admits more than the counterfactual: \
                         {mine:?} against {theirs:?} ({state:?})",
                        l.name()
                    );
                }
            }
        }
    }
    Ok(())
}

/// Runs `steps` on `set_limiter` (built on [`PolicySet::single`] of
/// `policy`) and on `limiter` (the policy alone), sharing `clock`, and
/// requires the same answers: a set of one behaves exactly as the policy
/// alone (`SPEC.md` 5.1).
///
/// A check of cost 0 is a gate in a set and an error alone, so it is
/// compared as a `peek` on both.
///
/// # Errors
///
/// The first disagreement, naming the step.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use ratelimit_conformance::ops::{Op, Step};
/// use ratelimit_conformance::sets::invariants::check_set_of_one;
/// use ratelimit_core::{ManualClock, Policy, PolicySet, ReferenceLimiter, ReferenceSetLimiter};
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let policy = Policy::token_bucket(3, 1, Duration::from_secs(1)).unwrap();
/// let clock = ManualClock::new(0);
/// let set = ReferenceSetLimiter::with_clock(PolicySet::single(policy), clock.clone());
/// let alone = ReferenceLimiter::with_clock(policy, clock.clone());
/// let steps = [
///     Step { advance_us: 0, key: 0, op: Op::Check { cost: 3 } },
///     Step { advance_us: 10, key: 0, op: Op::Check { cost: 1 } },
/// ];
/// let keys = vec![b"k".to_vec()];
/// check_set_of_one(&set, &alone, &clock, &keys, 5_000_000, &steps).await.unwrap();
/// # });
/// ```
pub async fn check_set_of_one(
    set_limiter: &dyn SetLimiter,
    limiter: &dyn Limiter,
    clock: &ManualClock,
    keys: &[Vec<u8>],
    start: u64,
    steps: &[Step],
) -> Result<(), Violation> {
    ensure!(
        set_limiter.policy_set().len() == 1,
        "a set of {} policies, not one",
        set_limiter.policy_set().len()
    );
    let mut now = start;
    clock.set(now);
    for (i, step) in steps.iter().enumerate() {
        now = step.apply_time(now);
        clock.set(now);
        let at = || format!("step {i} ({step:?}) at t={now}");
        let key = keys
            .get(step.key)
            .ok_or_else(|| Violation::new("key index out of range").context(at()))?;
        match step.op {
            Op::Check { cost } if cost > 0 => {
                let alone = limiter.check(key, cost).await;
                let in_set = set_limiter.check_set(key, &[cost]).await;
                match (alone, in_set) {
                    (Ok(a), Ok(s)) => {
                        same(&s.decision.decisions[0], &a).map_err(|v| v.context(at()))?;
                        ensure!(
                            s.decision.allowed == a.allowed
                                && s.decision.retry_after == a.retry_after,
                            "{}: the set answered {:?}, the policy {a:?}",
                            at(),
                            s.decision
                        );
                    }
                    (Err(a), Err(s)) if a.kind() == s.kind() => {}
                    (a, s) => {
                        return Err(Violation::new(format!(
                            "the policy answered {a:?}, the set {:?}",
                            s.map(|c| c.decision)
                        ))
                        .context(at()))
                    }
                }
            }
            Op::Check { .. } | Op::Peek => {
                let alone = limiter.peek(key).await;
                let in_set = set_limiter.peek_set(key).await;
                match (alone, in_set) {
                    (Ok(a), Ok(s)) => same(&s.decisions[0], &a).map_err(|v| v.context(at()))?,
                    (a, s) => {
                        return Err(Violation::new(format!(
                            "peek: the policy answered {a:?}, the set {s:?}"
                        ))
                        .context(at()))
                    }
                }
            }
            Op::Reset => {
                let a = limiter.reset(key).await;
                let s = set_limiter.reset_set(key).await;
                ensure!(
                    a.is_ok() && s.is_ok(),
                    "{}: reset failed: {a:?} {s:?}",
                    at()
                );
            }
        }
    }
    Ok(())
}

fn same<T: PartialEq + Debug>(ours: &T, theirs: &T) -> Result<(), Violation> {
    ensure!(
        ours == theirs,
        "the set answered {ours:?}, the policy {theirs:?}"
    );
    Ok(())
}
