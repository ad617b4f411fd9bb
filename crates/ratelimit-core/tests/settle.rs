//! S2 and S3 of `SPEC.md` 5.2 on the pure set math, for every algorithm:
//! random checks and settles, late and out of order, with the clock going
//! back, never leave a state that admits more than the counterfactual; a
//! settle with `actual == taken` changes nothing.

use proptest::prelude::*;
use ratelimit_conformance::strategy::small_policy;
use ratelimit_core::{
    Algorithm, LeaseId, Limit, NamedLimit, PartState, Policy, PolicyReceipt, PolicySet, RateState,
    SetState,
};

#[derive(Debug, Clone)]
enum Op {
    /// Move the clock by this many µs (negative: back), then check `cost`.
    Check { step: i64, cost: u64 },
    /// Move the clock, then settle the `pick`-th unsettled receipt with
    /// `actual`.
    Settle { step: i64, pick: usize, actual: u64 },
}

fn ops(limit: u64, window: u64) -> impl Strategy<Value = Vec<Op>> {
    let w = i64::try_from(window).unwrap();
    let step = prop_oneof![
        6 => 0..w,
        2 => w..3 * w,
        1 => -w..0,
    ];
    let op = prop_oneof![
        (step.clone(), 0..=limit).prop_map(|(step, cost)| Op::Check { step, cost }),
        (step, any::<usize>(), 0..=2 * limit + 1).prop_map(|(step, pick, actual)| Op::Settle {
            step,
            pick,
            actual
        }),
    ];
    proptest::collection::vec(op, 1..12)
}

/// Takes `x` unconditionally at `now`: the counterfactual's charge, at the
/// real instant (no ledger, so no instant is raised to a later one seen).
fn force(policy: &Policy, state: &RateState, now: u64, x: u64) -> RateState {
    let plain = RateState {
        state: state.state,
        ledger: Default::default(),
    };
    let (_, _, mark) = policy.check_part(&plain, now, 0, false).unwrap();
    if x == 0 {
        return *state;
    }
    let (_, next) = policy
        .settle_part(&plain, now, &PolicyReceipt::new(0, mark), x, true)
        .unwrap();
    RateState {
        state: next.state,
        ledger: Default::default(),
    }
}

fn rate(state: &SetState) -> RateState {
    match &state.parts[..] {
        [PartState::Rate(s)] => *s,
        _ => RateState::default(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn settles_admit_no_more_than_the_counterfactual(
        (policy, ops, start) in small_policy().prop_flat_map(|p| {
            let w = u64::try_from(p.window().as_micros()).unwrap();
            (Just(p), ops(p.limit(), w), 10 * w..20 * w)
        })
    ) {
        let set = PolicySet::new(vec![NamedLimit::new("p", Limit::Rate(policy)).unwrap().settling()]).unwrap();
        let mut state = SetState::default();
        let mut now = start;
        let mut latest = now;
        // (instant, taken, settled actual) of every allowed check.
        let mut history: Vec<(u64, u64, Option<u64>)> = Vec::new();
        let mut open: Vec<(usize, Vec<PolicyReceipt>)> = Vec::new();
        let mut no_lease = || LeaseId::new(0);
        for op in &ops {
            match *op {
                Op::Check { step, cost } => {
                    now = now.saturating_add_signed(step);
                    latest = latest.max(now);
                    let (d, receipt) = set.check(b"k", &mut state, now, &[cost], &mut no_lease).unwrap();
                    if let Some(receipt) = receipt {
                        let parts = receipt.parts().to_vec();
                        prop_assert!(d.allowed);
                        history.push((now, cost, None));
                        open.push((history.len() - 1, parts));
                    }
                }
                Op::Settle { step, pick, actual } => {
                    if open.is_empty() {
                        continue;
                    }
                    now = now.saturating_add_signed(step);
                    latest = latest.max(now);
                    let (i, parts) = open.remove(pick % open.len());
                    let before = state.clone();
                    let taken = parts[0].taken;
                    if set.settle(&mut state, now, &parts, &[actual]).is_ok() {
                        history[i].2 = Some(actual);
                    }
                    if actual == taken {
                        // S3: only the ledger's `seen` may move.
                        let (a, b) = (rate(&before), rate(&state));
                        prop_assert_eq!(a.state, b.state, "S3: settling what was taken changed the state");
                    }
                }
            }
        }
        // The counterfactual: every allowed check takes its actual (if
        // settled) or its estimate, unconditionally, at its own instant.
        let mut cf = RateState::default();
        for &(at, taken, actual) in &history {
            cf = force(&policy, &cf, at, actual.unwrap_or(taken));
        }
        let ours = rate(&state);
        let w = u64::try_from(policy.window().as_micros()).unwrap();
        for t in [latest, latest + 1, latest + w / 3, latest + w / 2, latest + w, latest + 2 * w, latest + 3 * w] {
            for c in 1..=policy.limit() {
                let a = policy.check(&ours.state, t, c).unwrap().0.allowed;
                let b = policy.check(&cf.state, t, c).unwrap().0.allowed;
                prop_assert!(!a || b, "S2: at {} cost {} ours allows, the counterfactual does not\nours {:?}\ncf {:?}", t, c, ours, cf);
            }
        }
    }
}
