#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]

// Everything of the contract at the top: `Limiter`, `Decision`, `Policy`,
// the clocks, the errors. The other crates' usual entry points sit beside
// it, and each whole crate is a module for the rest.
pub use ratelimit_core::*;
pub use ratelimit_layers::ResilienceConfig;
#[cfg(feature = "memory")]
pub use ratelimit_memory::{MemoryLimiter, MemorySetLimiter};
#[cfg(feature = "redis")]
pub use ratelimit_redis::{RedisLimiter, RedisOptions, RedisSetLimiter};
#[cfg(feature = "tower")]
pub use ratelimit_tower::{RateLimitLayer, SetHeaders};

/// The resilience layers (`ratelimit-layers`): timeout, circuit breaker,
/// deny cache, failure policy and metrics around any [`Limiter`].
pub mod layers {
    pub use ratelimit_layers::*;
}

/// The in-process backend (`ratelimit-memory`).
#[cfg(feature = "memory")]
pub mod memory {
    pub use ratelimit_memory::*;
}

/// The Redis and Redis Cluster backend (`ratelimit-redis`).
#[cfg(feature = "redis")]
pub mod redis {
    pub use ratelimit_redis::*;
}

/// The tower/axum middleware (`ratelimit-tower`).
#[cfg(feature = "tower")]
pub mod tower {
    pub use ratelimit_tower::*;
}
