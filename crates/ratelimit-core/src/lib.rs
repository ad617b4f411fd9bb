#![doc = include_str!("../README.md")]

#[macro_use]
mod window_api;

mod algorithm;
mod algorithm_name;
mod clock;
mod concurrency;
mod config;
mod decision;
mod domain;
mod duration;
mod error;
mod failure;
mod few;
mod fixed_window;
mod limiter;
mod policy;
mod reference;
mod reference_set;
mod set;
mod set_config;
mod set_limiter;
mod settle;
mod sliding_window;
mod token_bucket;

pub use algorithm::Algorithm;
pub use algorithm_name::{AlgorithmName, ParseAlgorithmNameError};
pub use clock::{Clock, ManualClock, SystemClock};
pub use concurrency::{Concurrency, Lease, LeaseId, MAX_LEASES};
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
pub use reference_set::ReferenceSetLimiter;
pub use set::{
    Limit, NamedLimit, PartState, PolicySet, SetDecision, SetState, MAX_NAME_LEN, MAX_SET_LEN,
};
pub use set_config::LimitConfig;
pub use set_limiter::{Receipt, Reservation, SetCheck, SetLimiter};
pub use settle::{Ledger, Mark, PolicyReceipt, RateState};
pub use sliding_window::{SlidingWindow, SlidingWindowState};
pub use token_bucket::{TokenBucket, TokenBucketState};
