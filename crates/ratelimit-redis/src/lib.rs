#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod batch;
mod call_error;
mod call_metrics;
mod config;
mod connect_error;
mod connection;
mod error;
mod keys;
mod limiter;
mod link;
mod options;
mod script;
mod wire;

pub use config::RedisConfig;
pub use error::{ConnectError, ConnectErrorKind};
pub use limiter::RedisLimiter;
pub use options::{ConnectionMode, RedisOptions, Target};
