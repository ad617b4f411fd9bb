#![doc = include_str!("../README.md")]

mod fingerprint;
mod hash;
mod limiter;
mod lock;
mod meters;
mod options;
mod packed;
mod robin_hood;
mod set;
mod set_options;
mod set_store;
mod shard;
mod siphash;
mod slots;
mod store;
mod table;

pub use limiter::MemoryLimiter;
pub use options::{MemoryLimiterOptions, WhenFull};
pub use set::MemorySetLimiter;
pub use set_options::MemorySetLimiterOptions;
