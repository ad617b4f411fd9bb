//! How a [`MemoryLimiter`](crate::MemoryLimiter) is sized and bounded.

use std::num::NonZeroUsize;
use std::time::Duration;

/// What a check of a **new** key does when the key cap is reached and no
/// stored key can be forgotten. Keys already stored are never affected.
///
/// # Examples
///
/// ```
/// use ratelimit_memory::WhenFull;
/// assert_eq!(WhenFull::default(), WhenFull::DenyNewKeys);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum WhenFull {
    /// Deny the request: `allowed == false`, `remaining == 0`, and
    /// `retry_after` (also `reset_after`) the time until the first stored
    /// key can be forgotten. Fails closed: a flood of new keys cannot buy
    /// unlimited requests.
    #[default]
    DenyNewKeys,
    /// Allow the request without storing the key: the decision a fresh key
    /// would get, but nothing is counted. Fails open: availability first.
    AllowUnlimited,
}

/// Sizing and bounds of a [`MemoryLimiter`](crate::MemoryLimiter).
///
/// # Examples
///
/// ```
/// use std::num::NonZeroUsize;
/// use std::time::Duration;
/// use ratelimit_memory::{MemoryLimiterOptions, WhenFull};
///
/// let options = MemoryLimiterOptions::default()
///     .with_max_keys(NonZeroUsize::new(100_000).unwrap())
///     .with_when_full(WhenFull::AllowUnlimited)
///     .with_shards(NonZeroUsize::new(16).unwrap());
/// assert_eq!(options.max_keys(), Some(100_000));
/// assert_eq!(options.shard_count(), 16);
/// assert_eq!(options.idle_grace(), Duration::ZERO);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryLimiterOptions {
    shards: Option<NonZeroUsize>,
    max_keys: Option<NonZeroUsize>,
    when_full: WhenFull,
    idle_grace: Duration,
    name: &'static str,
}

impl Default for MemoryLimiterOptions {
    fn default() -> Self {
        Self {
            shards: None,
            max_keys: None,
            when_full: WhenFull::DenyNewKeys,
            idle_grace: Duration::ZERO,
            name: "default",
        }
    }
}

impl MemoryLimiterOptions {
    /// The number of independently locked shards, rounded up to a power of
    /// two. With a key cap below the shard count, fewer shards are used so
    /// each holds a key.
    ///
    /// Default: 16 per available CPU and at least 512, and with a key cap
    /// at most one per 64 keys of the cap (but at least 16). Threads that
    /// check the same keys contend on their shards' lock words, and the
    /// fewer keys a shard holds, the less often two threads take turns on
    /// one: two threads over 1,024 keys check about 1.5 times as fast with
    /// 512 shards as with 16 (`BENCHMARKS.md`). An empty shard allocates
    /// nothing beyond its 128 bytes (64 KiB for 512), and since the cap is
    /// split over the shards, a capped limiter keeps enough keys per shard
    /// for the split to stay even.
    ///
    /// # Examples
    ///
    /// ```
    /// # use std::num::NonZeroUsize;
    /// # use ratelimit_memory::MemoryLimiterOptions;
    /// let o = MemoryLimiterOptions::default().with_shards(NonZeroUsize::new(5).unwrap());
    /// assert_eq!(o.shard_count(), 8);
    /// ```
    #[must_use]
    pub const fn with_shards(mut self, shards: NonZeroUsize) -> Self {
        self.shards = Some(shards);
        self
    }

    /// At most `max_keys` keys are stored. The cap is split evenly across
    /// the shards (each holds at most `max_keys / shards`), so a new key
    /// may meet a full shard while others have room. When a new key meets a
    /// full shard, the shard first forgets every idle key; if none is idle,
    /// [`with_when_full`](Self::with_when_full) decides. Default: no cap.
    ///
    /// # Examples
    ///
    /// ```
    /// # use std::num::NonZeroUsize;
    /// # use ratelimit_memory::MemoryLimiterOptions;
    /// let o = MemoryLimiterOptions::default().with_max_keys(NonZeroUsize::new(10).unwrap());
    /// assert_eq!(o.max_keys(), Some(10));
    /// ```
    #[must_use]
    pub const fn with_max_keys(mut self, max_keys: NonZeroUsize) -> Self {
        self.max_keys = Some(max_keys);
        self
    }

    /// What a new key gets when the cap is reached and nothing can be
    /// forgotten. Default: [`WhenFull::DenyNewKeys`].
    ///
    /// # Examples
    ///
    /// ```
    /// # use ratelimit_memory::{MemoryLimiterOptions, WhenFull};
    /// let o = MemoryLimiterOptions::default().with_when_full(WhenFull::AllowUnlimited);
    /// assert_eq!(o.when_full(), WhenFull::AllowUnlimited);
    /// ```
    #[must_use]
    pub const fn with_when_full(mut self, when_full: WhenFull) -> Self {
        self.when_full = when_full;
        self
    }

    /// How long after a key's state became equivalent to "never seen" it
    /// may be forgotten. Default: zero.
    ///
    /// Forgetting an idle key never changes a decision while time moves
    /// forward. A clock that goes back can reach a time when the forgotten
    /// state still counted; the limiter then treats the key as new, which
    /// admits no more than the latest time seen would, but differs from a
    /// store that kept the key. Decisions stay identical to
    /// `ReferenceLimiter` as long as the clock never goes back by more than
    /// this grace, nor, for a window policy, by `2^31` windows or more (24.8
    /// days of 1 ms windows): a window state that old is forgotten whatever
    /// the grace (`docs/semantics.md`, "Stored states"). The default
    /// [`SystemClock`](ratelimit_core::SystemClock) never goes back.
    ///
    /// # Examples
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use ratelimit_memory::MemoryLimiterOptions;
    /// let o = MemoryLimiterOptions::default().with_idle_grace(Duration::from_secs(3600));
    /// assert_eq!(o.idle_grace(), Duration::from_secs(3600));
    /// ```
    #[must_use]
    pub const fn with_idle_grace(mut self, grace: Duration) -> Self {
        self.idle_grace = grace;
        self
    }

    /// The limiter's name: the `limiter` label of its metrics, so that the
    /// metrics of several limiters in one process stay apart (the `policy`
    /// label, the algorithm's name, is set too). A fixed string: it is
    /// registered once, when the limiter is built. Default: `"default"`.
    ///
    /// # Examples
    ///
    /// ```
    /// # use ratelimit_memory::MemoryLimiterOptions;
    /// assert_eq!(MemoryLimiterOptions::default().name(), "default");
    /// let o = MemoryLimiterOptions::default().with_name("login");
    /// assert_eq!(o.name(), "login");
    /// ```
    #[must_use]
    pub const fn with_name(mut self, name: &'static str) -> Self {
        self.name = name;
        self
    }

    /// The shard count that will be used: a power of two.
    ///
    /// # Examples
    ///
    /// ```
    /// # use ratelimit_memory::MemoryLimiterOptions;
    /// let n = MemoryLimiterOptions::default().shard_count();
    /// assert!(n.is_power_of_two() && n >= 512);
    /// ```
    #[must_use]
    pub fn shard_count(&self) -> usize {
        let many = available_cpus().saturating_mul(16).max(512);
        let default = match self.max_keys {
            // A power of two, rounded down: at least 64 keys each.
            Some(cap) => many.min(1 << (cap.get() / 64).max(16).ilog2()),
            None => many,
        };
        self.shards_or(default)
    }

    /// The shard count, `default` if none was set: rounded up to a power
    /// of two, and down to the largest one not above the key cap.
    pub(crate) fn shards_or(&self, default: usize) -> usize {
        let wanted = self.shards.map_or(default, NonZeroUsize::get);
        let wanted = wanted.checked_next_power_of_two().unwrap_or(1 << 16);
        match self.max_keys {
            // The largest power of two not above the cap, so every shard
            // may hold at least one key.
            Some(cap) if cap.get() < wanted => 1 << cap.get().ilog2(),
            _ => wanted,
        }
    }

    /// The key cap, if any.
    ///
    /// # Examples
    ///
    /// ```
    /// # use ratelimit_memory::MemoryLimiterOptions;
    /// assert_eq!(MemoryLimiterOptions::default().max_keys(), None);
    /// ```
    #[must_use]
    pub const fn max_keys(&self) -> Option<usize> {
        match self.max_keys {
            Some(n) => Some(n.get()),
            None => None,
        }
    }

    /// The policy for new keys when full.
    ///
    /// # Examples
    ///
    /// ```
    /// # use ratelimit_memory::{MemoryLimiterOptions, WhenFull};
    /// assert_eq!(MemoryLimiterOptions::default().when_full(), WhenFull::DenyNewKeys);
    /// ```
    #[must_use]
    pub const fn when_full(&self) -> WhenFull {
        self.when_full
    }

    /// The grace before an idle key may be forgotten.
    ///
    /// # Examples
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use ratelimit_memory::MemoryLimiterOptions;
    /// assert_eq!(MemoryLimiterOptions::default().idle_grace(), Duration::ZERO);
    /// ```
    #[must_use]
    pub const fn idle_grace(&self) -> Duration {
        self.idle_grace
    }

    /// The `limiter` label of the metrics.
    ///
    /// # Examples
    ///
    /// ```
    /// # use ratelimit_memory::MemoryLimiterOptions;
    /// assert_eq!(MemoryLimiterOptions::default().with_name("api").name(), "api");
    /// ```
    #[must_use]
    pub const fn name(&self) -> &'static str {
        self.name
    }
}

/// The CPUs the process may use (1 if unknown).
pub(crate) fn available_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, NonZeroUsize::get)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_small_cap_reduces_the_shards() {
        let cap = |n| MemoryLimiterOptions::default().with_max_keys(NonZeroUsize::new(n).unwrap());
        assert_eq!(cap(1).shard_count(), 1);
        assert_eq!(cap(5).shard_count(), 4);
        assert_eq!(cap(1_000).shard_count(), 16);
        // At least 64 keys of the cap per shard, in a power of two.
        assert_eq!(cap(10_000).shard_count(), 128);
        assert!(cap(1_000_000).shard_count() >= 512);
        // An explicit count is kept, a cap permitting.
        let explicit = cap(10_000).with_shards(NonZeroUsize::new(1_000).unwrap());
        assert_eq!(explicit.shard_count(), 1_024);
    }

    #[test]
    fn without_a_cap_there_are_many_shards() {
        let n = MemoryLimiterOptions::default().shard_count();
        assert!(n.is_power_of_two() && n >= 512, "{n}");
    }
}
