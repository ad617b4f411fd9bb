//! The contract of the `ratelimit` workspace.
//!
//! This crate holds everything that every backend shares and nothing that
//! does I/O:
//!
//! - [`Limiter`], the object-safe async trait an application holds as
//!   `Arc<dyn Limiter>`;
//! - [`Decision`], the answer to one check;
//! - the three policies — [`FixedWindow`], [`SlidingWindow`] and
//!   [`TokenBucket`] — as pure functions of `(state, now, cost)` through the
//!   [`Algorithm`] trait, and [`Policy`], the enum an application picks from
//!   configuration;
//! - [`Clock`], with [`SystemClock`] and [`ManualClock`];
//! - [`ReferenceLimiter`], the pure policies over an in-process map, which
//!   every other backend must agree with.
//!
//! Time is an integer count of microseconds since the UNIX epoch throughout.
//!
//! # Examples
//!
//! ```
//! use ratelimit_core::{Limiter, ManualClock, Policy, ReferenceLimiter};
//!
//! # tokio_test();
//! # fn tokio_test() {
//! # let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
//! # rt.block_on(async {
//! let policy: Policy = toml::from_str(r#"
//!     algorithm = "fixed_window"
//!     limit = 5
//!     window = "30s"
//! "#).unwrap();
//! let clock = ManualClock::new(0);
//! let limiter = ReferenceLimiter::with_clock(policy, clock.clone());
//!
//! for _ in 0..5 {
//!     assert!(limiter.check_one(b"203.0.113.7").await.unwrap().allowed);
//! }
//! let sixth = limiter.check_one(b"203.0.113.7").await.unwrap();
//! assert!(!sixth.allowed);
//! assert_eq!(sixth.retry_after, Some(std::time::Duration::from_secs(30)));
//! # });
//! # }
//! ```

#[macro_use]
mod window_api;

mod algorithm;
mod algorithm_name;
mod clock;
mod config;
mod decision;
mod domain;
mod duration;
mod error;
mod failure;
mod fixed_window;
mod limiter;
mod policy;
mod reference;
mod sliding_window;
mod token_bucket;

pub use algorithm::Algorithm;
pub use algorithm_name::{AlgorithmName, ParseAlgorithmNameError};
pub use clock::{Clock, ManualClock, SystemClock};
pub use config::PolicyConfig;
pub use decision::Decision;
pub use domain::{MAX_BUCKET_SPAN_US, MAX_LIMIT, MAX_PERIOD_MS, MAX_PRODUCT, MAX_TIMESTAMP_US};
pub use duration::{parse_duration, parse_rate};
pub use error::{ConfigError, Error, ErrorChain, ErrorKind};
pub use failure::{FailurePolicy, ParseFailurePolicyError};
pub use fixed_window::{FixedWindow, FixedWindowState};
pub use limiter::Limiter;
pub use policy::{Policy, PolicyState};
pub use reference::ReferenceLimiter;
pub use sliding_window::{SlidingWindow, SlidingWindowState};
pub use token_bucket::{TokenBucket, TokenBucketState};
