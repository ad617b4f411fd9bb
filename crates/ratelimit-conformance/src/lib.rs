//! The conformance suite of the `ratelimit` workspace.
//!
//! Every backend runs these against itself, so that one set of checks says
//! what "correct" means (the invariants of SPEC section 4):
//!
//! - [`invariants`]: the pure invariant checks, step by step, over the
//!   [`Algorithm`](ratelimit_core::Algorithm) functions of a
//!   [`Policy`](ratelimit_core::Policy); used by the core's property tests
//!   and fuzz targets.
//! - [`scenarios`]: hand-written scenarios with known answers, run against
//!   any [`Limiter`](ratelimit_core::Limiter) built on a
//!   [`ManualClock`](ratelimit_core::ManualClock).
//! - [`differential`]: random multi-key operation sequences run against any
//!   `Limiter` and the pure model side by side, decision for decision.
//! - [`strategy`]: the proptest strategies that generate policies, awkward
//!   keys and operation sequences.
//!
//! # Examples
//!
//! ```
//! use std::sync::Arc;
//! use ratelimit_core::{Limiter, ReferenceLimiter};
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! ratelimit_conformance::scenarios::run_all(|policy, clock| async move {
//!     Arc::new(ReferenceLimiter::with_clock(policy, clock)) as Arc<dyn Limiter>
//! })
//! .await
//! .unwrap();
//! # });
//! ```

pub mod differential;
pub mod invariants;
pub mod ops;
pub mod scenarios;
pub mod strategy;
mod violation;

pub use violation::Violation;
