//! Any [`SetLimiter`] against [`ReferenceSetLimiter`], decision for
//! decision (C4: backends agree under an injected clock).

use std::collections::HashSet;
use std::fmt::Debug;

use ratelimit_core::{Error, LeaseId, ManualClock, Mark, Receipt, ReferenceSetLimiter, SetLimiter};

use super::run::{amounts, drop_receipt, picked};
use super::{RunOptions, SetOp};
use crate::Violation;

/// Runs `ops` on `limiter` and on a [`ReferenceSetLimiter`] of the same
/// set sharing `clock`, and requires identical answers: every
/// [`SetDecision`](ratelimit_core::SetDecision) field for field, the same error kinds (and policy
/// named), and receipts equal in every part but the lease ids, which are
/// each backend's own (they must only never repeat).
///
/// Operation `key` indices address `keys`; distinct byte strings must
/// behave as independent keys, so
/// [`awkward_keys`](crate::strategy::awkward_keys) catch collisions. The
/// clock is set to `start` first; the limiter must take its time from
/// `clock` (a Redis backend through its injected clock) and be fresh: none
/// of `keys` may hold state yet.
///
/// # Errors
///
/// The first disagreement, naming the operation.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use ratelimit_conformance::sets::differential::run_against_reference;
/// use ratelimit_conformance::sets::{RunOptions, SetOp};
/// use ratelimit_core::{Concurrency, ManualClock, NamedLimit, Policy, PolicySet, ReferenceSetLimiter};
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let set = PolicySet::new(vec![
///     NamedLimit::new("tokens", Policy::token_bucket(10, 1, Duration::from_secs(1)).unwrap())
///         .unwrap()
///         .settling(),
///     NamedLimit::new("streams", Concurrency::new(1, Duration::from_secs(5)).unwrap()).unwrap(),
/// ]).unwrap();
/// let clock = ManualClock::new(0);
/// let limiter = ReferenceSetLimiter::with_clock(set, clock.clone());
/// let ops = [
///     SetOp::Check { key: 0, costs: vec![8, 1] },
///     SetOp::Check { key: 0, costs: vec![1, 1] },
///     SetOp::Advance { us: 1_000 },
///     SetOp::Settle { pick: 0, actual: vec![Some(3), None] },
/// ];
/// let keys = vec![b"a".to_vec()];
/// run_against_reference(&limiter, &clock, &keys, 1_000_000, &ops, RunOptions::default())
///     .await
///     .unwrap();
/// # });
/// ```
pub async fn run_against_reference(
    limiter: &dyn SetLimiter,
    clock: &ManualClock,
    keys: &[Vec<u8>],
    start: u64,
    ops: &[SetOp],
    options: RunOptions,
) -> Result<(), Violation> {
    let reference = ReferenceSetLimiter::with_clock(limiter.policy_set().clone(), clock.clone());
    let mut open: Vec<(Receipt, Receipt)> = Vec::new();
    let mut ids: HashSet<LeaseId> = HashSet::new();
    let mut now = start;
    clock.set(now);
    for (i, op) in ops.iter().enumerate() {
        let at = |now: u64| format!("op {i} ({op:?}) at t={now}");
        let key = |k: usize| {
            keys.get(k)
                .map(Vec::as_slice)
                .ok_or_else(|| Violation::new(format!("key index {k} out of range")))
        };
        match op {
            SetOp::Advance { us } => {
                now = now.saturating_add_signed(*us);
                clock.set(now);
            }
            SetOp::Check { key: k, costs } => {
                let key = key(*k).map_err(|v| v.context(at(now)))?;
                let ours = limiter.check_set(key, costs).await;
                let theirs = reference.check_set(key, costs).await;
                let (ours, theirs) = match (ours, theirs) {
                    (Ok(o), Ok(t)) => (o, t),
                    (o, t) => {
                        same_outcome(&o.map(|c| c.decision), &t.map(|c| c.decision))
                            .map_err(|v| v.context(at(now)))?;
                        continue;
                    }
                };
                same(&ours.decision, &theirs.decision, "decision")
                    .map_err(|v| v.context(at(now)))?;
                match (ours.receipt, theirs.receipt) {
                    (Some(o), Some(t)) => {
                        same_receipt(&o, &t).map_err(|v| v.context(at(now)))?;
                        for lease in o.leases() {
                            if !ids.insert(lease.id) {
                                return Err(Violation::new(format!(
                                    "C4: lease id {} issued twice",
                                    lease.id
                                ))
                                .context(at(now)));
                            }
                        }
                        open.push((o, t));
                    }
                    (None, None) => {}
                    (o, t) => {
                        return Err(
                            Violation::new(format!("receipt: expected {t:?}, got {o:?}"))
                                .context(at(now)),
                        )
                    }
                }
            }
            SetOp::Settle { pick, actual } => {
                let Some(p) = picked(&open, *pick) else {
                    continue;
                };
                let (o, t) = open.remove(p);
                let amounts = amounts(actual, &t);
                let ours = limiter.settle(o, &amounts).await;
                let theirs = reference.settle(t, &amounts).await;
                same_outcome(&ours, &theirs).map_err(|v| v.context(at(now)))?;
            }
            SetOp::Renew { pick } => {
                let Some(p) = picked(&open, *pick) else {
                    continue;
                };
                let (o, t) = &mut open[p];
                let ours = limiter.renew(o).await;
                let theirs = reference.renew(t).await;
                same_outcome(&ours, &theirs).map_err(|v| v.context(at(now)))?;
                same_receipt(o, t).map_err(|v| v.context(at(now)))?;
            }
            SetOp::Drop { pick } => {
                let Some(p) = picked(&open, *pick) else {
                    continue;
                };
                let (o, t) = open.remove(p);
                let ours = drop_receipt(limiter, o, options).await;
                let theirs = drop_receipt(&reference, t, options).await;
                if let (Some(ours), Some(theirs)) = (ours, theirs) {
                    same_outcome(&ours, &theirs).map_err(|v| v.context(at(now)))?;
                }
            }
            SetOp::Peek { key: k } => {
                let key = key(*k).map_err(|v| v.context(at(now)))?;
                let ours = limiter.peek_set(key).await;
                let theirs = reference.peek_set(key).await;
                same_outcome(&ours, &theirs).map_err(|v| v.context(at(now)))?;
            }
            SetOp::Reset { key: k } => {
                let key = key(*k).map_err(|v| v.context(at(now)))?;
                limiter
                    .reset_set(key)
                    .await
                    .map_err(|e| Violation::new(format!("reset failed: {e}")).context(at(now)))?;
                reference.reset_set_sync(key);
            }
        }
    }
    Ok(())
}

fn same<T: PartialEq + Debug>(ours: &T, theirs: &T, what: &str) -> Result<(), Violation> {
    if ours == theirs {
        Ok(())
    } else {
        Err(Violation::new(format!(
            "{what}: expected {theirs:?}, got {ours:?}"
        )))
    }
}

/// The same answer, or errors of the same kind about the same policy.
fn same_outcome<T: PartialEq + Debug>(
    ours: &Result<T, Error>,
    theirs: &Result<T, Error>,
) -> Result<(), Violation> {
    match (ours, theirs) {
        (Ok(o), Ok(t)) => same(o, t, "answer"),
        (Err(o), Err(t)) if o.kind() == t.kind() && o.policy() == t.policy() => Ok(()),
        (o, t) => Err(Violation::new(format!("expected {t:?}, got {o:?}"))),
    }
}

/// Equal receipts but for the lease ids.
pub(crate) fn same_receipt(ours: &Receipt, theirs: &Receipt) -> Result<(), Violation> {
    let erase = |r: &Receipt| -> Vec<(u64, Mark)> {
        r.parts()
            .iter()
            .map(|p| {
                let mark = match p.mark {
                    Mark::Lease(Some(mut l)) => {
                        l.id = LeaseId::new(0);
                        Mark::Lease(Some(l))
                    }
                    m => m,
                };
                (p.taken, mark)
            })
            .collect()
    };
    if ours.key() != theirs.key() {
        return Err(Violation::new("receipt: issued for another key"));
    }
    same(
        &erase(ours),
        &erase(theirs),
        "receipt parts (lease ids aside)",
    )
}
