//! The invariants every policy keeps, checked step by step on the pure
//! policy functions.

use std::collections::HashMap;

use ratelimit_core::{Algorithm, Decision, ErrorKind, Policy, PolicyState};

pub use crate::ops::{Op, Step};
use crate::{ensure, Violation};

/// The invariants that hold without a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Invariant {
    /// 1. A denied check leaves the state as it was.
    DenialsAreFree,
    /// 2. At the same instant, a check of cost `remaining` is allowed and
    ///    one of `remaining + 1` is denied.
    RemainingIsExact,
    /// 3. The same cost is allowed at `now + retry_after` and denied 1 µs
    ///    earlier.
    RetryAfterIsExact,
    /// 4. `peek` at `now + reset_after` shows a full quota, and 1 µs
    ///    earlier does not.
    ResetAfterIsExact,
    /// 5. Admitted cost stays within each algorithm's throughput bound
    ///    (checked while the clock only moves forward).
    ThroughputBounds,
    /// 6. A fresh key admits any cost up to the limit at once.
    Liveness,
    /// 7. A clock going back never panics and never admits more than the
    ///    latest time already seen would.
    ClockGoingBack,
    /// 8. A cost of zero or above the limit is an error and changes nothing.
    CostOutOfRange,
}

impl Invariant {
    /// Every invariant.
    pub const ALL: [Self; 8] = [
        Self::DenialsAreFree,
        Self::RemainingIsExact,
        Self::RetryAfterIsExact,
        Self::ResetAfterIsExact,
        Self::ThroughputBounds,
        Self::Liveness,
        Self::ClockGoingBack,
        Self::CostOutOfRange,
    ];
}

/// Runs `steps` from time `start` on the pure functions of `policy`, with
/// one state per key index, and checks the `enabled` invariants after every
/// step.
///
/// # Errors
///
/// The first [`Violation`], naming the step, the invariant and the values.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use ratelimit_conformance::invariants::{check_sequence, Invariant, Op, Step};
/// use ratelimit_core::Policy;
///
/// let policy = Policy::sliding_window(3, Duration::from_secs(1)).unwrap();
/// let steps = [
///     Step { advance_us: 0, key: 0, op: Op::Check { cost: 3 } },
///     Step { advance_us: 1_200_000, key: 0, op: Op::Check { cost: 2 } },
///     Step { advance_us: -3_600_000_000, key: 0, op: Op::Check { cost: 1 } },
/// ];
/// check_sequence(&policy, 1_700_000_000_000_000, &steps, &Invariant::ALL).unwrap();
/// ```
pub fn check_sequence(
    policy: &Policy,
    start: u64,
    steps: &[Step],
    enabled: &[Invariant],
) -> Result<(), Violation> {
    let mut model = Model::new(*policy, start, enabled);
    for (i, step) in steps.iter().enumerate() {
        model
            .step(step)
            .map_err(|v| v.context(format_args!("step {i} ({step:?}) at t={}", model.now)))?;
    }
    Ok(())
}

/// The pure model: per-key states, the clock, and what each key admitted.
struct Model<'a> {
    policy: Policy,
    enabled: &'a [Invariant],
    states: HashMap<usize, PolicyState>,
    admitted: HashMap<usize, Vec<(u64, u64)>>,
    now: u64,
    max_seen: u64,
    went_back: bool,
}

impl<'a> Model<'a> {
    fn new(policy: Policy, start: u64, enabled: &'a [Invariant]) -> Self {
        Self {
            policy,
            enabled,
            states: HashMap::new(),
            admitted: HashMap::new(),
            now: start,
            max_seen: start,
            went_back: false,
        }
    }

    fn on(&self, invariant: Invariant) -> bool {
        self.enabled.contains(&invariant)
    }

    fn step(&mut self, step: &Step) -> Result<(), Violation> {
        self.now = step.apply_time(self.now);
        if self.now < self.max_seen {
            self.went_back = true;
        }
        self.max_seen = self.max_seen.max(self.now);
        let state = self.states.get(&step.key).copied().unwrap_or_default();
        match step.op {
            Op::Reset => {
                self.states.remove(&step.key);
                self.admitted.remove(&step.key);
                Ok(())
            }
            Op::Peek => {
                let d = self.policy.peek(&state, self.now);
                ensure!(
                    d.allowed == (d.remaining > 0),
                    "peek: allowed {} disagrees with remaining {}",
                    d.allowed,
                    d.remaining
                );
                if self.on(Invariant::RemainingIsExact) {
                    remaining_is_exact(&self.policy, &state, self.now, &d)?;
                }
                if self.on(Invariant::ResetAfterIsExact) {
                    reset_after_is_exact(&self.policy, &state, self.now, &d)?;
                }
                if !d.allowed && self.on(Invariant::RetryAfterIsExact) {
                    retry_after_is_exact(&self.policy, &state, self.now, 1, &d)?;
                }
                Ok(())
            }
            Op::Check { cost } => self.check(step.key, state, cost),
        }
    }

    fn check(&mut self, key: usize, state: PolicyState, cost: u64) -> Result<(), Violation> {
        let (policy, now, limit) = (self.policy, self.now, self.policy.limit());
        if cost == 0 || cost > limit {
            if self.on(Invariant::CostOutOfRange) {
                cost_out_of_range(&policy, &state, now, cost)?;
            }
            return Ok(());
        }
        if self.on(Invariant::Liveness) {
            let (fresh, _) = policy
                .check(&PolicyState::default(), now, cost)
                .map_err(|e| Violation::new(format!("liveness: fresh key errored: {e}")))?;
            ensure!(
                fresh.allowed,
                "liveness: a fresh key denied cost {cost}: {fresh:?}"
            );
        }
        let (d, next) = policy
            .check(&state, now, cost)
            .map_err(|e| Violation::new(format!("cost {cost} <= limit {limit} errored: {e}")))?;
        ensure!(
            d.limit == limit,
            "decision limit {} != policy limit {limit}",
            d.limit
        );
        ensure!(
            d.allowed == d.retry_after.is_none(),
            "retry_after must be set exactly when denied: {d:?}"
        );
        if !d.allowed && self.on(Invariant::DenialsAreFree) {
            ensure!(
                next == state,
                "denial changed the state: {state:?} -> {next:?}"
            );
            let (before, after) = (policy.peek(&state, now), policy.peek(&next, now));
            ensure!(
                before == after,
                "denial changed peek: {before:?} -> {after:?}"
            );
        }
        if self.on(Invariant::RemainingIsExact) {
            remaining_is_exact(&policy, &next, now, &d)?;
        }
        if !d.allowed && self.on(Invariant::RetryAfterIsExact) {
            retry_after_is_exact(&policy, &state, now, cost, &d)?;
        }
        if self.on(Invariant::ResetAfterIsExact) {
            reset_after_is_exact(&policy, &next, now, &d)?;
        }
        if self.now < self.max_seen && self.on(Invariant::ClockGoingBack) {
            clock_going_back(&policy, &state, now, self.max_seen, cost, &d)?;
        }
        if d.allowed {
            self.states.insert(key, next);
            if !self.went_back {
                let events = self.admitted.entry(key).or_default();
                events.push((now, cost));
                if self.enabled.contains(&Invariant::ThroughputBounds) {
                    throughput_bounds(&policy, events)?;
                }
            }
        }
        Ok(())
    }
}

fn allowed(policy: &Policy, state: &PolicyState, now: u64, cost: u64) -> Result<bool, Violation> {
    policy
        .check(state, now, cost)
        .map(|(d, _)| d.allowed)
        .map_err(|e| Violation::new(format!("probe of cost {cost} errored: {e}")))
}

/// Invariant 2, for the state `after` a decision `d` taken at `now`.
///
/// # Errors
///
/// When a check of cost `remaining` is denied or one of `remaining + 1` is
/// allowed.
pub fn remaining_is_exact(
    policy: &Policy,
    after: &PolicyState,
    now: u64,
    d: &Decision,
) -> Result<(), Violation> {
    let r = d.remaining;
    ensure!(r <= policy.limit(), "remaining {r} above the limit");
    if r > 0 {
        ensure!(
            allowed(policy, after, now, r)?,
            "remaining is {r} but a check of cost {r} is denied at the same instant"
        );
    }
    if r < policy.limit() {
        ensure!(
            !allowed(policy, after, now, r + 1)?,
            "remaining is {r} but a check of cost {} is allowed at the same instant",
            r + 1
        );
    }
    Ok(())
}

/// Invariant 3, for a denied decision `d` of `cost` on `state` at `now`.
///
/// # Errors
///
/// When `retry_after` is missing or zero, the cost is denied at
/// `now + retry_after`, or allowed 1 µs earlier.
pub fn retry_after_is_exact(
    policy: &Policy,
    state: &PolicyState,
    now: u64,
    cost: u64,
    d: &Decision,
) -> Result<(), Violation> {
    let retry = d
        .retry_after
        .ok_or_else(|| Violation::new(format!("denied without retry_after: {d:?}")))?;
    let retry = u64::try_from(retry.as_micros()).unwrap_or(u64::MAX);
    ensure!(retry > 0, "denied with a zero retry_after: {d:?}");
    let at = now.saturating_add(retry);
    ensure!(
        allowed(policy, state, at, cost)?,
        "retry_after {retry} µs: cost {cost} still denied at t={at}"
    );
    ensure!(
        !allowed(policy, state, at - 1, cost)?,
        "retry_after {retry} µs is not the smallest wait: cost {cost} allowed 1 µs earlier"
    );
    Ok(())
}

/// Invariant 4, for the state `after` a decision `d` taken at `now`.
///
/// # Errors
///
/// When the quota is not full at `now + reset_after`, or already full 1 µs
/// earlier.
pub fn reset_after_is_exact(
    policy: &Policy,
    after: &PolicyState,
    now: u64,
    d: &Decision,
) -> Result<(), Violation> {
    let limit = policy.limit();
    let reset = u64::try_from(d.reset_after.as_micros()).unwrap_or(u64::MAX);
    let at = now.saturating_add(reset);
    let full = policy.peek(after, at);
    ensure!(
        full.remaining == limit,
        "reset_after {reset} µs: remaining is {} (not {limit}) at t={at}",
        full.remaining
    );
    if reset > 0 {
        let early = policy.peek(after, at - 1);
        ensure!(
            early.remaining < limit,
            "reset_after {reset} µs is too long: already full 1 µs earlier"
        );
    }
    Ok(())
}

/// Invariant 7, for a decision `d` of `cost` on `state` at `now`, earlier
/// than the latest time seen, `max_seen`.
///
/// # Errors
///
/// When the decision admits what `max_seen` would not, or shows more
/// remaining than `max_seen` would.
pub fn clock_going_back(
    policy: &Policy,
    state: &PolicyState,
    now: u64,
    max_seen: u64,
    cost: u64,
    d: &Decision,
) -> Result<(), Violation> {
    if d.allowed {
        ensure!(
            allowed(policy, state, max_seen, cost)?,
            "clock went back to t={now}: cost {cost} allowed, but denied at the latest time t={max_seen}"
        );
    }
    let (then, latest) = (policy.peek(state, now), policy.peek(state, max_seen));
    ensure!(
        then.remaining <= latest.remaining,
        "clock went back to t={now}: remaining {} exceeds {} at the latest time t={max_seen}",
        then.remaining,
        latest.remaining
    );
    Ok(())
}

/// Invariant 8 (costs), for `cost` of zero or above the limit.
///
/// # Errors
///
/// When the check does not fail with the right error kind.
pub fn cost_out_of_range(
    policy: &Policy,
    state: &PolicyState,
    now: u64,
    cost: u64,
) -> Result<(), Violation> {
    let limit = policy.limit();
    match policy.check(state, now, cost) {
        Ok(d) => Err(Violation::new(format!(
            "cost {cost} with limit {limit} returned a decision instead of an error: {d:?}"
        ))),
        Err(e) => {
            let expected = if cost == 0 {
                ErrorKind::ZeroCost
            } else {
                ErrorKind::CostExceedsLimit { cost, limit }
            };
            ensure!(
                e.kind() == &expected,
                "cost {cost}: expected {expected:?}, got {e:?}"
            );
            Ok(())
        }
    }
}

/// Invariant 5, for the admissions `(time, cost)` of one key, in order, the
/// last one just added. Checks every bound that involves the last one.
///
/// # Errors
///
/// When an aligned window, a sliding interval or a token-bucket interval
/// holds more than its bound.
pub fn throughput_bounds(policy: &Policy, events: &[(u64, u64)]) -> Result<(), Violation> {
    let Some(&(t, c)) = events.last() else {
        return Ok(());
    };
    let sum = |from: u64, to: u64| -> u64 {
        events
            .iter()
            .filter(|(at, _)| (from..=to).contains(at))
            .map(|(_, cost)| cost)
            .sum()
    };
    // No wildcard arm: a new algorithm fails to compile here until it has
    // a throughput bound.
    match policy {
        Policy::FixedWindow(p) => {
            let (w, l) = (p.window_micros(), p.limit());
            let start = t / w * w;
            let total = sum(start, t);
            ensure!(
                total <= l,
                "fixed window [{start}, {}) admitted {total} > {l}",
                start + w
            );
        }
        Policy::SlidingWindow(p) => {
            let (w, l) = (p.window_micros(), p.limit());
            let start = t / w * w;
            let total = sum(start, t);
            ensure!(
                total <= l,
                "aligned window [{start}, {}) admitted {total} > {l}",
                start + w
            );
            let from = t.saturating_sub(w - 1);
            let span = sum(from, t);
            ensure!(
                span <= 2 * l,
                "interval [{from}, {t}] of one window admitted {span} > 2*{l}"
            );
            // The exact real-valued estimate before this admission:
            // prev * (W - e) / W + curr + c <= L, in integers times W.
            let prev = sum(start.saturating_sub(w), start.saturating_sub(1));
            let prev = if start == 0 { 0 } else { prev };
            let curr = total - c;
            let elapsed = t - start;
            let lhs =
                u128::from(prev) * u128::from(w - elapsed) + u128::from(curr + c) * u128::from(w);
            ensure!(
                lhs <= u128::from(l) * u128::from(w),
                "admitted {c} at t={t} beyond the exact estimate: prev {prev}, curr {curr}, elapsed {elapsed} µs of {w}"
            );
        }
        Policy::TokenBucket(p) => {
            let (b, tau) = (p.capacity(), p.emission_interval_micros());
            let mut total: u128 = 0;
            for &(at, cost) in events.iter().rev() {
                total += u128::from(cost);
                let bound = u128::from(b) * u128::from(tau) + u128::from(t - at);
                ensure!(
                    total * u128::from(tau) <= bound,
                    "interval [{at}, {t}] admitted {total} > {b} + {}/{tau}",
                    t - at
                );
            }
        }
    }
    Ok(())
}
