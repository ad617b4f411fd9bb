//! Settling a cost after the fact: the receipt a check leaves, and the
//! overshoot and refund rules of `SPEC.md` section 5.2, per algorithm.

use crate::domain::MAX_PRODUCT;
use crate::{
    Algorithm, Decision, Error, FixedWindowState, Lease, Policy, PolicyState, SlidingWindowState,
    TokenBucketState,
};

/// What a token bucket whose receipts are settled keeps beside its `tat`
/// (`SPEC.md` 5.2): `refunded` (`rf`), the total µs refunded so far, and
/// `seen`, the latest `now` applied to the key. Both zero for a key never
/// seen; a policy that never settles never stores them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Ledger {
    /// `rf`: µs refunded so far.
    pub refunded: u64,
    /// The latest instant (µs) a check or settle applied to the key.
    pub seen: u64,
}

/// The state of one rate policy of a set, for one key.
///
/// `ledger` is kept only by a token bucket declared to settle (see
/// [`NamedLimit::settles`](crate::NamedLimit::settles)); it stays zero
/// otherwise.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct RateState {
    /// The policy's own state, as a single-policy limiter stores it.
    pub state: PolicyState,
    /// The refund ledger of a settling token bucket.
    pub ledger: Ledger,
}

/// Where a check took its cost, as settling needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mark {
    /// A window policy: the stored window index `k_s` after the check.
    Window(u64),
    /// A token bucket: the stored `tat` and `rf` after the check, and the
    /// check's instant.
    Bucket {
        /// `tat` after the check, µs.
        tat: u64,
        /// `rf` after the check, µs.
        refunded: u64,
        /// The check's `now`, µs: an overshoot is never charged before it,
        /// even when the clock went back since.
        at: u64,
    },
    /// A concurrency policy: the lease taken, or `None` when the check only
    /// gated on it (cost 0).
    Lease(Option<Lease>),
}

/// One policy's part of a [`Receipt`](crate::Receipt): what the check took
/// and where.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PolicyReceipt {
    /// The cost taken: `0` for a policy the check only gated on.
    pub taken: u64,
    /// Where it was taken.
    pub mark: Mark,
}

impl PolicyReceipt {
    /// A receipt part.
    #[must_use]
    pub const fn new(taken: u64, mark: Mark) -> Self {
        Self { taken, mark }
    }

    /// The lease this part holds, if any.
    #[must_use]
    pub const fn lease(&self) -> Option<Lease> {
        match self.mark {
            Mark::Lease(lease) => lease,
            _ => None,
        }
    }
}

fn fixed_state(s: &PolicyState) -> FixedWindowState {
    match s {
        PolicyState::FixedWindow(s) => *s,
        _ => FixedWindowState::default(),
    }
}

fn sliding_state(s: &PolicyState) -> SlidingWindowState {
    match s {
        PolicyState::SlidingWindow(s) => *s,
        _ => SlidingWindowState::default(),
    }
}

fn bucket_state(s: &PolicyState) -> TokenBucketState {
    match s {
        PolicyState::TokenBucket(s) => *s,
        _ => TokenBucketState::default(),
    }
}

/// The window length in µs of a window policy (whole milliseconds).
fn window_us(policy: &Policy) -> u64 {
    // Cannot truncate: windows are at most 2^36 ms.
    policy.window().as_micros() as u64
}

/// The window index of a receipt: `now`'s window, or the stored window
/// `stored` when the clock went back before it. Out of line: the hot paths
/// read it from the state they just rolled forward.
#[cold]
#[inline(never)]
fn window_mark(policy: &Policy, now: u64, stored: u64) -> u64 {
    (now / window_us(policy)).max(stored)
}

/// A count past the limit stays exact: it fits the stored 32 bits and
/// `count * window_ms` stays below 2^53 (section 1).
fn overshoot_count(count: u64, x: u64, window_us: u64) -> Result<u32, Error> {
    let total = count.checked_add(x).filter(|t| {
        *t <= u64::from(u32::MAX)
            && u128::from(*t) * u128::from(window_us / 1000) < u128::from(MAX_PRODUCT)
    });
    match total {
        // Cannot truncate: checked just above.
        Some(t) => Ok(t as u32),
        None => Err(Error::invalid(format!(
            "charging {x} more to a count of {count} would leave the exact domain \
             (a count above 2^32 - 1, or count times the window in ms at 2^53 or above)"
        ))),
    }
}

impl Policy {
    /// Checks `cost` as one policy of a set (`SPEC.md` 5.1): `cost == 0`
    /// gates without taking (the decision is [`peek`](Algorithm::peek)'s),
    /// else as [`check`](Algorithm::check). Returns the decision, the state
    /// to store if the whole set allows, and where the cost was taken.
    ///
    /// `settles` is whether the policy keeps a refund [`Ledger`] (token
    /// buckets only; ignored by the windows, whose refunds need none).
    ///
    /// # Errors
    ///
    /// When `cost > limit`; nothing is changed.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use ratelimit_core::{Mark, Policy, RateState};
    ///
    /// let p = Policy::fixed_window(5, Duration::from_secs(1)).unwrap();
    /// let (d, state, mark) = p.check_part(&RateState::default(), 2_500_000, 3, false).unwrap();
    /// assert!(d.allowed && d.remaining == 2);
    /// assert_eq!(mark, Mark::Window(2));
    /// let (gate, same, _) = p.check_part(&state, 2_500_000, 0, false).unwrap();
    /// assert!(gate.allowed && gate.remaining == 2 && same == state);
    /// ```
    #[inline(always)]
    pub fn check_part(
        &self,
        state: &RateState,
        now: u64,
        cost: u64,
        settles: bool,
    ) -> Result<(Decision, RateState, Mark), Error> {
        let ledger_kept = settles && matches!(self, Policy::TokenBucket(_));
        // A bucket that keeps a ledger never applies an instant before the
        // latest it saw: under a clock gone back, a charge made earlier in
        // the sequence at a later instant would otherwise be outrun by this
        // check (see docs/semantics.md, "Settling").
        let now = if ledger_kept {
            now.max(state.ledger.seen)
        } else {
            now
        };
        let (decision, next) = if cost == 0 {
            // A gate takes nothing, but a window policy stores its state
            // rolled forward to `now` (the same admission from `now` on):
            // a later check or settle under a clock gone back then lands
            // in this window, not an earlier one.
            (
                self.peek(&state.state, now),
                self.rolled(&state.state, now, 0),
            )
        } else {
            self.check(&state.state, now, cost)?
        };
        let mut ledger = state.ledger;
        if ledger_kept && decision.allowed {
            ledger.seen = now;
        }
        // An allowed check or a gate stores its window rolled forward to
        // `now`: its index is already `max(now / window, stored)`, so only
        // a denial (whose receipt no one keeps) divides again.
        let mark = match self {
            Policy::FixedWindow(_) => {
                let k = fixed_state(&next).window;
                Mark::Window(if decision.allowed || cost == 0 {
                    k
                } else {
                    window_mark(self, now, k)
                })
            }
            Policy::SlidingWindow(_) => {
                let k = sliding_state(&next).window;
                Mark::Window(if decision.allowed || cost == 0 {
                    k
                } else {
                    window_mark(self, now, k)
                })
            }
            Policy::TokenBucket(_) => Mark::Bucket {
                tat: bucket_state(&next).tat,
                refunded: ledger.refunded,
                at: now,
            },
        };
        Ok((
            decision,
            RateState {
                state: next,
                ledger,
            },
            mark,
        ))
    }

    /// Settles a receipt part with the `actual` cost (`SPEC.md` 5.2): an
    /// overshoot is charged even past the limit, a refund returns only what
    /// is still counted from that receipt. Never denies; returns the
    /// policy's [`peek`](Algorithm::peek) decision after it and the state
    /// to store.
    ///
    /// Only a policy declared to settle (`settles`) may settle an amount
    /// other than what its check took; a token bucket so declared keeps a
    /// [`Ledger`] and applies no instant before its `seen`.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Invalid`](crate::ErrorKind::Invalid) when the receipt
    /// is not a rate policy's, is another algorithm's, `actual != taken` on
    /// a policy not declared to settle, or the overshoot would take a
    /// counter out of the exact domain; nothing is changed.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use ratelimit_core::{Policy, PolicyReceipt, RateState};
    ///
    /// let p = Policy::fixed_window(100, Duration::from_secs(60)).unwrap();
    /// let (_, state, mark) = p.check_part(&RateState::default(), 0, 40, false).unwrap();
    /// let receipt = PolicyReceipt::new(40, mark);
    /// // 10 actually used: 30 come back.
    /// let (d, _) = p.settle_part(&state, 1_000, &receipt, 10, true).unwrap();
    /// assert_eq!(d.remaining, 90);
    /// // 150 actually used: 110 more are charged, past the limit.
    /// let (d, _) = p.settle_part(&state, 1_000, &receipt, 150, true).unwrap();
    /// assert_eq!((d.allowed, d.remaining), (false, 0));
    /// // A policy not declared to settle keeps what its check took.
    /// assert!(p.settle_part(&state, 1_000, &receipt, 10, false).unwrap_err().is_invalid());
    /// ```
    pub fn settle_part(
        &self,
        state: &RateState,
        now: u64,
        receipt: &PolicyReceipt,
        actual: u64,
        settles: bool,
    ) -> Result<(Decision, RateState), Error> {
        let taken = receipt.taken;
        let mut next = *state;
        if actual != taken && !settles {
            return Err(Error::invalid(format!(
                "settling {actual} where the check took {taken}: the policy is not declared \
                 to settle (`settle = true`), so what its check took is final"
            )));
        }
        if actual == taken && !matches!(receipt.mark, Mark::Lease(_)) {
            // S3: nothing to charge or refund, and nothing is written.
            return Ok((self.peek(&state.state, now), next));
        }
        match (self, receipt.mark) {
            (Policy::FixedWindow(_), Mark::Window(k_r)) => {
                let w = window_us(self);
                // Never before the receipt's window, even when the clock
                // went back since the check.
                let mut s = fixed_state(&self.rolled(&state.state, now, k_r));
                if actual > taken {
                    s.count = overshoot_count(u64::from(s.count), actual - taken, w)?;
                } else if actual < taken && k_r == s.window {
                    s.count = s.count.saturating_sub(clamp_u32(taken - actual));
                }
                next.state = PolicyState::FixedWindow(s);
            }
            (Policy::SlidingWindow(_), Mark::Window(k_r)) => {
                let w = window_us(self);
                let mut s = sliding_state(&self.rolled(&state.state, now, k_r));
                if actual > taken {
                    s.current = overshoot_count(u64::from(s.current), actual - taken, w)?;
                } else if actual < taken {
                    let x = clamp_u32(taken - actual);
                    if k_r == s.window {
                        s.current = s.current.saturating_sub(x);
                    } else if k_r.checked_add(1) == Some(s.window) {
                        s.previous = s.previous.saturating_sub(x);
                    }
                }
                next.state = PolicyState::SlidingWindow(s);
            }
            (
                Policy::TokenBucket(b),
                Mark::Bucket {
                    tat: tat_r,
                    refunded: rf_r,
                    at,
                },
            ) => {
                let t_int = b.emission_interval_micros();
                let mut s = bucket_state(&state.state);
                // As at a check: never an instant before the latest seen.
                let now = now.max(state.ledger.seen);
                if actual > taken {
                    let x = actual - taken;
                    let from = s.tat.max(now).max(at);
                    let charged = u128::from(from) + u128::from(x) * u128::from(t_int);
                    if charged >= u128::from(MAX_PRODUCT) {
                        return Err(Error::invalid(format!(
                            "charging {x} more tokens would take the bucket's time past 2^53 µs"
                        )));
                    }
                    // Cannot truncate: below 2^53 was just checked.
                    s.tat = charged as u64;
                } else if actual < taken && state.ledger.refunded >= rf_r {
                    let x = taken - actual;
                    let end = tat_r.saturating_sub(state.ledger.refunded - rf_r);
                    let t = now;
                    // `min(end, tat)`: never more than the stored bucket
                    // still counts (it differs from `end` only on a key
                    // forgotten and seen again under a clock gone back).
                    let r = x.min(end.min(s.tat).saturating_sub(t) / t_int);
                    s.tat -= r * t_int;
                    next.ledger.refunded += r * t_int;
                }
                next.ledger.seen = now;
                next.state = PolicyState::TokenBucket(s);
                return Ok((self.peek(&next.state, now), next));
            }
            (_, mark) => {
                return Err(Error::invalid(format!(
                    "a receipt part of kind {mark:?} cannot settle a {} policy",
                    self.algorithm_name()
                )));
            }
        }
        Ok((self.peek(&next.state, now), next))
    }
}

impl Policy {
    /// A window policy's state rolled forward to the window of `now` (or
    /// `floor`, if later); never back. A token bucket's state as it is.
    fn rolled(&self, state: &PolicyState, now: u64, floor: u64) -> PolicyState {
        match self {
            Policy::FixedWindow(_) => {
                let s = fixed_state(state);
                let k = (now / window_us(self)).max(floor);
                PolicyState::FixedWindow(if k > s.window {
                    FixedWindowState::new(k, 0)
                } else {
                    s
                })
            }
            Policy::SlidingWindow(_) => {
                let s = sliding_state(state);
                let k = (now / window_us(self)).max(floor);
                PolicyState::SlidingWindow(if k == s.window + 1 {
                    SlidingWindowState::new(k, s.current, 0)
                } else if k > s.window {
                    SlidingWindowState::new(k, 0, 0)
                } else {
                    s
                })
            }
            Policy::TokenBucket(_) => *state,
        }
    }
}

/// A refund larger than any stored count is the same as the whole count.
fn clamp_u32(x: u64) -> u32 {
    u32::try_from(x).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn receipt(
        p: &Policy,
        state: &RateState,
        now: u64,
        cost: u64,
        settles: bool,
    ) -> (RateState, PolicyReceipt) {
        let (d, next, mark) = p.check_part(state, now, cost, settles).unwrap();
        assert!(d.allowed);
        (next, PolicyReceipt::new(cost, mark))
    }

    #[test]
    fn fixed_window_refunds_only_in_the_receipts_window() {
        let p = Policy::fixed_window(10, Duration::from_secs(1)).unwrap();
        let (s, r) = receipt(&p, &RateState::default(), 0, 8, false);
        let (d, _) = p.settle_part(&s, 999_999, &r, 3, true).unwrap();
        assert_eq!(d.remaining, 7);
        let (d, late) = p.settle_part(&s, 1_000_000, &r, 3, true).unwrap();
        assert_eq!(
            d.remaining, 10,
            "a new window: nothing of the receipt is counted"
        );
        assert_eq!(
            late.state,
            PolicyState::FixedWindow(FixedWindowState::new(1, 0))
        );
    }

    #[test]
    fn sliding_window_refunds_from_the_previous_window() {
        let p = Policy::sliding_window(10, Duration::from_secs(1)).unwrap();
        let (s, r) = receipt(&p, &RateState::default(), 0, 8, false);
        let (_, next) = p.settle_part(&s, 1_000_000, &r, 2, true).unwrap();
        assert_eq!(
            next.state,
            PolicyState::SlidingWindow(SlidingWindowState::new(1, 2, 0))
        );
        let (_, next) = p.settle_part(&s, 2_000_000, &r, 2, true).unwrap();
        assert_eq!(
            next.state,
            PolicyState::SlidingWindow(SlidingWindowState::new(2, 0, 0))
        );
    }

    #[test]
    fn bucket_overshoot_counts_the_debt() {
        let p = Policy::token_bucket(10, 1, Duration::from_secs(1)).unwrap();
        let (s, r) = receipt(&p, &RateState::default(), 0, 10, true);
        let (d, _) = p.settle_part(&s, 0, &r, 15, true).unwrap();
        assert!(!d.allowed);
        assert_eq!(d.retry_after, Some(Duration::from_secs(6)));
        assert_eq!(d.reset_after, Duration::from_secs(15));
    }

    #[test]
    fn bucket_refund_stops_at_what_refilled() {
        let p = Policy::token_bucket(10, 1, Duration::from_secs(1)).unwrap();
        let (s, r) = receipt(&p, &RateState::default(), 0, 10, true);
        // 4 s later 4 tokens came back; of the 6 still counted, 5 return.
        let (d, next) = p.settle_part(&s, 4_000_000, &r, 5, true).unwrap();
        assert_eq!(d.remaining, 9);
        assert_eq!(
            next.ledger,
            Ledger {
                refunded: 5_000_000,
                seen: 4_000_000
            }
        );
        let (d, _) = p.settle_part(&s, 4_000_000, &r, 0, true).unwrap();
        assert_eq!(d.remaining, 10, "only the 6 still counted came back");
        let err = p.settle_part(&s, 4_000_000, &r, 0, false).unwrap_err();
        assert!(err.is_invalid(), "not declared to settle: {err}");
    }

    #[test]
    fn overshoot_out_of_the_domain_is_an_error() {
        let p = Policy::fixed_window(10, Duration::from_secs(1)).unwrap();
        let (s, r) = receipt(&p, &RateState::default(), 0, 1, false);
        let err = p
            .settle_part(&s, 0, &r, u64::from(u32::MAX) + 1, false)
            .unwrap_err();
        assert!(err.is_invalid(), "{err}");
    }
}
