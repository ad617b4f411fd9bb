#![doc = include_str!("../README.md")]

mod batch;
mod breaker;
mod config;
mod connect_error;
mod connection;
mod deny_cache;
mod error;
mod keys;
mod limiter;
mod options;
mod outcome;
mod script;
mod wire;

pub use config::RedisConfig;
pub use error::{ConnectError, ConnectErrorKind};
pub use limiter::RedisLimiter;
pub use options::{BreakerOptions, ConnectionMode, FailurePolicy, RedisOptions, Target};
pub use outcome::{Outcome, Source};
