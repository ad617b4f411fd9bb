//! The optional local deny cache: repeat a recent denial without a round trip.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

use ratelimit_core::Decision;

/// Keys longer than this are not cached, so the cache's memory is bounded
/// by `entries * (MAX_KEY_LEN + a few words)`.
const MAX_KEY_LEN: usize = 1024;

#[derive(Debug, Clone, Copy)]
struct Entry {
    /// The smallest cost denied; larger costs are denied too, since a larger
    /// cost never fits earlier than a smaller one.
    cost: u64,
    /// Local µs at which that cost may fit again.
    until: u64,
    /// Local µs at which the key would be full again.
    reset_at: u64,
    remaining: u64,
}

/// Denials seen from Redis, by key, until their `retry_after` has passed.
///
/// Times are the limiter's local µs: the injected clock, or a monotonic
/// clock started with the limiter. On server time the local deadline is
/// taken when the reply arrives, after the server decided, so it is never
/// earlier than the server's: the cache may deny for up to one round trip
/// longer than Redis would, and never admits anything.
#[derive(Debug)]
pub(crate) struct DenyCache {
    capacity: usize,
    limit: u64,
    entries: Mutex<HashMap<Box<[u8]>, Entry>>,
}

impl DenyCache {
    pub(crate) fn new(capacity: usize, limit: u64) -> Self {
        Self {
            capacity,
            limit,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// The cached denial of `cost` for `key` at local time `now`, if any.
    pub(crate) fn lookup(&self, key: &[u8], cost: u64, now: u64) -> Option<Decision> {
        let mut entries = self.entries();
        let entry = *entries.get(key)?;
        if now >= entry.until {
            entries.remove(key);
            return None;
        }
        (cost >= entry.cost).then(|| {
            Decision::from_micros(
                false,
                self.limit,
                entry.remaining,
                entry.reset_at.saturating_sub(now),
                entry.until - now,
            )
        })
    }

    /// Records what Redis decided for `cost` on `key` at local time `now`.
    pub(crate) fn record(&self, key: &[u8], cost: u64, now: u64, decision: &Decision) {
        let mut entries = self.entries();
        let Some(retry_after) = decision.retry_after.filter(|_| !decision.allowed) else {
            // An admission means the key has room again.
            entries.remove(key);
            return;
        };
        if key.len() > MAX_KEY_LEN {
            return;
        }
        let micros = |d: std::time::Duration| u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        let entry = Entry {
            cost,
            until: now.saturating_add(micros(retry_after)),
            reset_at: now.saturating_add(micros(decision.reset_after)),
            remaining: decision.remaining,
        };
        if entries.len() >= self.capacity && !entries.contains_key(key) {
            entries.retain(|_, e| now < e.until);
            if entries.len() >= self.capacity {
                // Still full of live denials: forget any one. Forgetting a
                // denial only costs a round trip later.
                if let Some(victim) = entries.keys().next().cloned() {
                    entries.remove(&victim);
                }
            }
        }
        entries.insert(key.into(), entry);
    }

    /// Forgets `key` (after a reset).
    pub(crate) fn forget(&self, key: &[u8]) {
        self.entries().remove(key);
    }

    fn entries(&self) -> MutexGuard<'_, HashMap<Box<[u8]>, Entry>> {
        // Each operation leaves the map consistent; a panic elsewhere cannot
        // corrupt it.
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn denial(retry_ms: u64) -> Decision {
        Decision::denied(
            5,
            1,
            Duration::from_millis(retry_ms * 2),
            Duration::from_millis(retry_ms),
        )
    }

    #[test]
    fn denies_equal_or_larger_costs_until_retry_after() {
        let cache = DenyCache::new(4, 5);
        cache.record(b"k", 2, 1_000, &denial(10));
        let d = cache.lookup(b"k", 2, 5_000).unwrap();
        assert!(!d.allowed);
        assert_eq!(d.retry_after, Some(Duration::from_millis(6)));
        assert!(cache.lookup(b"k", 3, 5_000).is_some());
        assert!(
            cache.lookup(b"k", 1, 5_000).is_none(),
            "a smaller cost may fit"
        );
        assert!(
            cache.lookup(b"k", 2, 11_000).is_none(),
            "retry_after has passed"
        );
        assert!(cache.lookup(b"other", 2, 5_000).is_none());
    }

    #[test]
    fn an_admission_or_a_reset_forgets_the_key() {
        let cache = DenyCache::new(4, 5);
        cache.record(b"k", 1, 0, &denial(10));
        cache.record(b"k", 1, 0, &Decision::allowed(5, 4, Duration::ZERO));
        assert!(cache.lookup(b"k", 1, 0).is_none());
        cache.record(b"k", 1, 0, &denial(10));
        cache.forget(b"k");
        assert!(cache.lookup(b"k", 1, 0).is_none());
    }

    #[test]
    fn stays_within_capacity() {
        let cache = DenyCache::new(2, 5);
        for i in 0..10u8 {
            cache.record(&[i], 1, 0, &denial(10));
        }
        assert!(cache.entries().len() <= 2);
        cache.record(&[0; MAX_KEY_LEN + 1], 1, 0, &denial(10));
        assert!(cache.lookup(&[0; MAX_KEY_LEN + 1], 1, 0).is_none());
    }
}
