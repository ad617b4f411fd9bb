//! Any [`Limiter`] against the pure model, decision for decision.

use std::collections::HashMap;

use ratelimit_core::{Algorithm, Decision, Error, Limiter, ManualClock, Policy, PolicyState};

pub use crate::ops::{Op, Step};
use crate::Violation;

/// Runs `steps` against `limiter` (built on `policy` and `clock`) and the
/// pure functions of `policy`, and requires identical answers: every field
/// of every decision, and the same error kinds.
///
/// Step `key` indices address `keys`; distinct byte strings must behave as
/// independent keys, so awkward keys (see
/// [`awkward_keys`](crate::strategy::awkward_keys)) catch collisions. The
/// clock is set to `start` first. The limiter must be fresh: none of `keys`
/// may hold state yet.
///
/// # Errors
///
/// The first disagreement, naming the step.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use ratelimit_conformance::differential::{check_against_model, Op, Step};
/// use ratelimit_core::{ManualClock, Policy, ReferenceLimiter};
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let policy = Policy::token_bucket(2, 1, Duration::from_secs(1)).unwrap();
/// let clock = ManualClock::new(0);
/// let limiter = ReferenceLimiter::with_clock(policy, clock.clone());
/// let keys = vec![b"a".to_vec(), b"b".to_vec()];
/// let steps = [
///     Step { advance_us: 0, key: 0, op: Op::Check { cost: 2 } },
///     Step { advance_us: 10, key: 1, op: Op::Check { cost: 1 } },
///     Step { advance_us: 10, key: 0, op: Op::Check { cost: 1 } },
/// ];
/// check_against_model(&limiter, &clock, &policy, &keys, 1_000_000, &steps).await.unwrap();
/// # });
/// ```
pub async fn check_against_model(
    limiter: &dyn Limiter,
    clock: &ManualClock,
    policy: &Policy,
    keys: &[Vec<u8>],
    start: u64,
    steps: &[Step],
) -> Result<(), Violation> {
    let mut states: HashMap<usize, PolicyState> = HashMap::new();
    let mut now = start;
    clock.set(now);
    for (i, step) in steps.iter().enumerate() {
        now = step.apply_time(now);
        clock.set(now);
        let Some(key) = keys.get(step.key) else {
            return Err(Violation::new(format!(
                "step {i}: key index {} out of range",
                step.key
            )));
        };
        let state = states.get(&step.key).copied().unwrap_or_default();
        let at = || format!("step {i} ({step:?}) at t={now}");
        match step.op {
            Op::Check { cost } => {
                let expected = policy.check(&state, now, cost);
                let got = limiter.check(key, cost).await;
                compare(&expected.as_ref().map(|(d, _)| d), &got).map_err(|v| v.context(at()))?;
                if let Ok((d, next)) = expected {
                    if d.allowed {
                        states.insert(step.key, next);
                    }
                }
            }
            Op::Peek => {
                let expected = policy.peek(&state, now);
                let got = limiter.peek(key).await;
                compare(&Ok(&expected), &got).map_err(|v| v.context(at()))?;
            }
            Op::Reset => {
                limiter
                    .reset(key)
                    .await
                    .map_err(|e| Violation::new(format!("reset failed: {e}")).context(at()))?;
                states.remove(&step.key);
            }
        }
    }
    Ok(())
}

fn compare(
    expected: &Result<&Decision, &Error>,
    got: &Result<Decision, Error>,
) -> Result<(), Violation> {
    match (expected, got) {
        (Ok(e), Ok(g)) if *e == g => Ok(()),
        (Err(e), Err(g)) if e.kind() == g.kind() => Ok(()),
        (Ok(e), Ok(g)) => Err(Violation::new(format!("expected {e:?}, got {g:?}"))),
        (e, g) => Err(Violation::new(format!("expected {e:?}, got {g:?}"))),
    }
}
