#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod batch;
mod call;
mod call_error;
mod call_metrics;
mod config;
mod connect_error;
mod connection;
mod error;
mod flight;
mod keys;
mod limiter;
mod link;
mod options;
mod script;
mod set_fast;
mod set_limiter;
mod set_script;
mod transport;

pub use config::RedisConfig;
pub use error::{ConnectError, ConnectErrorKind};
pub use limiter::RedisLimiter;
pub use options::{ConnectionMode, RedisOptions, Target};
pub use set_limiter::RedisSetLimiter;
