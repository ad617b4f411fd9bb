//! What an operator sees of a limiter's table, through the `metrics` facade.
//!
//! Handles are registered once, when the limiter is built, so an event costs
//! one call on a handle: no name lookup and no label strings built per
//! event. Only cold paths touch them (the sweeper forgetting keys, a full
//! shard refusing one, an explicit read of the key count); a check of a
//! stored key never does.

use metrics::{Counter, Gauge, Unit};

/// Keys forgotten because their state was back to "never seen".
pub(crate) const KEYS_RECLAIMED: &str = "ratelimit_memory_keys_reclaimed_total";
/// New keys not stored because their shard was full of live keys.
pub(crate) const KEYS_REFUSED: &str = "ratelimit_memory_keys_refused_total";
/// Keys held, as last recorded.
const KEYS: &str = "ratelimit_memory_keys";

/// The metric handles of one limiter.
#[derive(Debug, Clone)]
pub(crate) struct Meters {
    /// Counts keys the sweeper (or a purge) forgot because they were idle.
    pub(crate) reclaimed: Counter,
    /// Counts new keys refused because `max_keys` was reached.
    pub(crate) refused: Counter,
    /// The number of keys held, set on demand (a total needs every shard's
    /// lock, so no single shard can keep it up to date).
    pub(crate) keys: Gauge,
}

impl Meters {
    /// Registers the handles with the recorder in effect now, labelled
    /// with the policy's algorithm and the limiter's name.
    pub(crate) fn register(policy: &'static str, limiter: &'static str) -> Self {
        metrics::describe_counter!(
            KEYS_RECLAIMED,
            Unit::Count,
            "Keys the in-process limiter forgot because their state was back to never seen."
        );
        metrics::describe_counter!(
            KEYS_REFUSED,
            Unit::Count,
            "New keys the in-process limiter did not store because max_keys was reached."
        );
        metrics::describe_gauge!(
            KEYS,
            Unit::Count,
            "Keys held by the in-process limiter, as last recorded."
        );
        Self {
            reclaimed: metrics::counter!(KEYS_RECLAIMED, "policy" => policy, "limiter" => limiter),
            refused: metrics::counter!(KEYS_REFUSED, "policy" => policy, "limiter" => limiter),
            keys: metrics::gauge!(KEYS, "policy" => policy, "limiter" => limiter),
        }
    }
}
