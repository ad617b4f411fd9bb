#![doc = include_str!("../README.md")]

mod breaker_options;
mod breaker_state;
mod circuit_breaker;
mod config;
mod deny_cache;
mod deny_entries;
mod failover;
mod key_hash;
mod metered;
mod outage;
mod set_layers;
mod timeout;

pub use breaker_options::BreakerOptions;
pub use breaker_state::BreakerState;
pub use circuit_breaker::CircuitBreaker;
pub use config::ResilienceConfig;
pub use deny_cache::DenyCache;
pub use failover::Failover;
pub use key_hash::KeyHash;
pub use metered::Metered;
pub use set_layers::SetFailover;
pub use timeout::Timeout;
