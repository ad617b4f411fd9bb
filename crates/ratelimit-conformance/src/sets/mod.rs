//! The conformance suite for policy sets (`SPEC.md` section 5): several
//! policies checked all or nothing, settled later, with concurrency leases.
//!
//! - [`strategy`]: random [`PolicySet`](ratelimit_core::PolicySet)s (one to
//!   four small rate policies, some declared to settle, and perhaps a
//!   concurrency policy) and random operation sequences ([`SetOp`]);
//! - [`differential`]: any [`SetLimiter`](ratelimit_core::SetLimiter)
//!   against [`ReferenceSetLimiter`](ratelimit_core::ReferenceSetLimiter),
//!   decision for decision and receipt for receipt (C4);
//! - [`invariants`]: the invariants of section 5 (all or nothing, an exact
//!   set `retry_after`, S1, S2, S3, C1, C2) checked over a sequence on any
//!   `SetLimiter`, and a set of one against the policy alone;
//! - [`scenarios`]: hand-written sets with exact expected decisions (an
//!   LLM route's requests, tokens and streams; late refunds; expiring
//!   leases; gates; C3, a dropped reservation releasing its lease).
//!
//! A receipt settles at most once by construction:
//! [`SetLimiter::settle`](ratelimit_core::SetLimiter::settle) takes the
//! [`Receipt`](ratelimit_core::Receipt) by value and it is not `Clone`, so
//! a second settle does not compile (S3's second half):
//!
//! ```compile_fail
//! # use ratelimit_core::{PolicySet, Policy, ReferenceSetLimiter};
//! # let set = PolicySet::single(Policy::fixed_window(5, std::time::Duration::from_secs(1)).unwrap());
//! let limiter = ReferenceSetLimiter::new(set);
//! let receipt = limiter.check_set_sync(b"k", &[2]).unwrap().receipt.unwrap();
//! limiter.settle_sync(receipt, &[2]).unwrap();
//! limiter.settle_sync(receipt, &[2]).unwrap(); // use of a moved value
//! ```

pub mod differential;
pub mod invariants;
pub mod scenarios;
pub mod strategy;

mod run;

pub use run::{RunOptions, SetOp};
