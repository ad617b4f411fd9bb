//! A degraded receipt (made by a failure policy) never acts on a store.

use std::time::Duration;

use ratelimit_core::{
    Concurrency, FailurePolicy, ManualClock, NamedLimit, Policy, PolicySet, Receipt,
    ReferenceSetLimiter,
};

#[test]
fn a_store_refuses_a_degraded_receipt_and_frees_nothing_for_it() {
    let set = PolicySet::new(vec![
        NamedLimit::new(
            "requests",
            Policy::fixed_window(5, Duration::from_secs(60)).unwrap(),
        )
        .unwrap(),
        NamedLimit::new(
            "streams",
            Concurrency::new(1, Duration::from_secs(10)).unwrap(),
        )
        .unwrap(),
    ])
    .unwrap();
    let store = ReferenceSetLimiter::with_clock(set, ManualClock::new(0));
    let held = store
        .check_set_sync(b"k", &[1, 1])
        .unwrap()
        .receipt
        .unwrap();
    // A fallback's receipt with the very same parts, marked degraded.
    let forged = Receipt::degraded(b"k", FailurePolicy::Fallback, held.parts().iter().copied());
    assert!(forged.parts().is_empty() && forged.leases().next().is_none());
    let mut renewed =
        Receipt::degraded(b"k", FailurePolicy::Fallback, held.parts().iter().copied());
    assert!(
        !store.renew_sync(&mut renewed),
        "nothing of it is held here"
    );
    assert!(store.settle_sync(forged, &[1, 0]).unwrap_err().is_invalid());
    ratelimit_core::SetLimiter::release(
        &store,
        Receipt::degraded(b"k", FailurePolicy::Open, held.parts().iter().copied()),
    );
    assert_eq!(store.leases_held(b"k"), 1, "the real lease is still held");
    assert!(store.settle_sync(held, &[1, 0]).is_ok());
    assert_eq!(store.leases_held(b"k"), 0);
}
