//! How a [`MemorySetLimiter`](crate::MemorySetLimiter) is sized and bounded.

use std::num::NonZeroUsize;
use std::time::Duration;

use crate::MemoryLimiterOptions;

/// Sizing and bounds of a [`MemorySetLimiter`](crate::MemorySetLimiter):
/// shards, a key cap, the idle grace and the metrics name, as for the
/// single-policy limiter.
///
/// There is no [`WhenFull`](crate::WhenFull) choice: a set limiter always
/// **denies a new key** when its shard is full of live keys. Allowing it
/// without counting would hand out leases nobody counts, more streams than
/// the set allows, so failing open is not offered. Keys already stored are
/// never affected, and a key that holds a live lease is never forgotten
/// (its state is not idle while the lease runs), so no slot leaks.
///
/// # Examples
///
/// ```
/// use std::num::NonZeroUsize;
/// use std::time::Duration;
/// use ratelimit_memory::MemorySetLimiterOptions;
///
/// let options = MemorySetLimiterOptions::default()
///     .with_max_keys(NonZeroUsize::new(100_000).unwrap())
///     .with_shards(NonZeroUsize::new(16).unwrap())
///     .with_idle_grace(Duration::from_secs(1))
///     .with_name("llm");
/// assert_eq!(options.max_keys(), Some(100_000));
/// assert_eq!(options.shard_count(), 16);
/// assert_eq!(options.idle_grace(), Duration::from_secs(1));
/// assert_eq!(options.name(), "llm");
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemorySetLimiterOptions {
    // The same settings, read the same way; `when_full` is left at its
    // default (deny), the only choice a set limiter offers.
    inner: MemoryLimiterOptions,
}

impl MemorySetLimiterOptions {
    /// The number of independently locked shards, rounded up to a power of
    /// two, and with a key cap below it, fewer (see
    /// [`MemoryLimiterOptions::with_shards`]).
    ///
    /// Default: four per available CPU, at least 16, fewer than a
    /// [`MemoryLimiter`](crate::MemoryLimiter)'s. A set's key is a map
    /// entry and a state on the heap, not a slot of a few words: spread
    /// over hundreds of shards, a thousand keys' entries take more cache
    /// lines, and a 3-policy set check measured a quarter slower on one
    /// thread (`BENCHMARKS.md`).
    ///
    /// # Examples
    ///
    /// ```
    /// # use std::num::NonZeroUsize;
    /// # use ratelimit_memory::MemorySetLimiterOptions;
    /// let o = MemorySetLimiterOptions::default().with_shards(NonZeroUsize::new(3).unwrap());
    /// assert_eq!(o.shard_count(), 4);
    /// ```
    #[must_use]
    pub const fn with_shards(mut self, shards: NonZeroUsize) -> Self {
        self.inner = self.inner.with_shards(shards);
        self
    }

    /// At most `max_keys` keys are stored, split evenly across the shards.
    /// A new key that meets a full shard first makes the shard forget its
    /// idle keys; if none is idle, the check is denied (`remaining == 0`,
    /// `retry_after` the time until the shard's first key may be
    /// forgotten). Default: no cap.
    ///
    /// A settle of a receipt whose key was forgotten meanwhile stores its
    /// charge even in a full shard (a charge is never dropped): a shard
    /// may go over its cap by at most one key per receipt held.
    ///
    /// # Examples
    ///
    /// ```
    /// # use std::num::NonZeroUsize;
    /// # use ratelimit_memory::MemorySetLimiterOptions;
    /// let o = MemorySetLimiterOptions::default().with_max_keys(NonZeroUsize::new(10).unwrap());
    /// assert_eq!(o.max_keys(), Some(10));
    /// ```
    #[must_use]
    pub const fn with_max_keys(mut self, max_keys: NonZeroUsize) -> Self {
        self.inner = self.inner.with_max_keys(max_keys);
        self
    }

    /// How long after a key's state became equivalent to "never seen" it
    /// may be forgotten (see [`MemoryLimiterOptions::with_idle_grace`]):
    /// decisions stay identical to
    /// [`ReferenceSetLimiter`](ratelimit_core::ReferenceSetLimiter)'s as
    /// long as the clock never goes back by more than this. Default: zero.
    ///
    /// # Examples
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use ratelimit_memory::MemorySetLimiterOptions;
    /// let o = MemorySetLimiterOptions::default().with_idle_grace(Duration::from_secs(60));
    /// assert_eq!(o.idle_grace(), Duration::from_secs(60));
    /// ```
    #[must_use]
    pub const fn with_idle_grace(mut self, grace: Duration) -> Self {
        self.inner = self.inner.with_idle_grace(grace);
        self
    }

    /// The `limiter` label of the limiter's metrics (their `policy` label
    /// is `set`). Default: `"default"`.
    ///
    /// # Examples
    ///
    /// ```
    /// # use ratelimit_memory::MemorySetLimiterOptions;
    /// assert_eq!(MemorySetLimiterOptions::default().with_name("api").name(), "api");
    /// ```
    #[must_use]
    pub const fn with_name(mut self, name: &'static str) -> Self {
        self.inner = self.inner.with_name(name);
        self
    }

    /// The shard count that will be used: a power of two.
    ///
    /// # Examples
    ///
    /// ```
    /// # use ratelimit_memory::MemorySetLimiterOptions;
    /// assert!(MemorySetLimiterOptions::default().shard_count().is_power_of_two());
    /// ```
    #[must_use]
    pub fn shard_count(&self) -> usize {
        self.inner
            .shards_or(crate::options::available_cpus().saturating_mul(4).max(16))
    }

    /// The key cap, if any.
    ///
    /// # Examples
    ///
    /// ```
    /// # use ratelimit_memory::MemorySetLimiterOptions;
    /// assert_eq!(MemorySetLimiterOptions::default().max_keys(), None);
    /// ```
    #[must_use]
    pub const fn max_keys(&self) -> Option<usize> {
        self.inner.max_keys()
    }

    /// The grace before an idle key may be forgotten.
    ///
    /// # Examples
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use ratelimit_memory::MemorySetLimiterOptions;
    /// assert_eq!(MemorySetLimiterOptions::default().idle_grace(), Duration::ZERO);
    /// ```
    #[must_use]
    pub const fn idle_grace(&self) -> Duration {
        self.inner.idle_grace()
    }

    /// The `limiter` label of the metrics.
    ///
    /// # Examples
    ///
    /// ```
    /// # use ratelimit_memory::MemorySetLimiterOptions;
    /// assert_eq!(MemorySetLimiterOptions::default().name(), "default");
    /// ```
    #[must_use]
    pub const fn name(&self) -> &'static str {
        self.inner.name()
    }
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroUsize;

    use super::*;

    #[test]
    fn a_set_limiter_has_fewer_shards_than_a_single_policy_one() {
        let set = MemorySetLimiterOptions::default().shard_count();
        assert!(set.is_power_of_two() && set >= 16, "{set}");
        assert!(set < MemoryLimiterOptions::default().shard_count());
        // A cap below the count still reduces it; an explicit count holds.
        let capped =
            MemorySetLimiterOptions::default().with_max_keys(NonZeroUsize::new(5).unwrap());
        assert_eq!(capped.shard_count(), 4);
        let explicit =
            MemorySetLimiterOptions::default().with_shards(NonZeroUsize::new(1_000).unwrap());
        assert_eq!(explicit.shard_count(), 1_024);
    }
}
