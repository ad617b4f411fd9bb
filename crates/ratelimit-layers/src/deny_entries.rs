//! The deny cache's table: recent denials by key, bounded.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use ratelimit_core::Decision;

/// Keys longer than this are not cached, so the table's memory is bounded
/// by `capacity * (MAX_KEY_LEN + a few words)`.
pub(crate) const MAX_KEY_LEN: usize = 1024;

#[derive(Debug, Clone, Copy)]
struct Entry {
    /// The cost denied. Only the same cost is answered from here: a larger
    /// one is denied too, but its wait is longer than this one's, and the
    /// store is the one that knows how much.
    cost: u64,
    /// µs at which that cost may fit again.
    until: u64,
    /// µs at which the key would be full again.
    reset_at: u64,
    limit: u64,
    remaining: u64,
}

/// Denials seen from the inner limiter, by key, until their `retry_after`
/// has passed.
#[derive(Debug)]
pub(crate) struct DenyEntries {
    capacity: usize,
    /// The map's length, read without the lock: while nothing is denied,
    /// checks take no lock at all.
    len: AtomicUsize,
    entries: Mutex<HashMap<Box<[u8]>, Entry>>,
}

impl DenyEntries {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            capacity,
            len: AtomicUsize::new(0),
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// The cached denial of `cost` for `key` at `now`, if any.
    pub(crate) fn lookup(&self, key: &[u8], cost: u64, now: u64) -> Option<Decision> {
        if self.len.load(Ordering::Relaxed) == 0 {
            return None;
        }
        let mut entries = self.entries();
        let entry = *entries.get(key)?;
        if now >= entry.until {
            entries.remove(key);
            self.len.store(entries.len(), Ordering::Relaxed);
            return None;
        }
        (cost == entry.cost).then(|| {
            Decision::from_micros(
                false,
                entry.limit,
                entry.remaining,
                entry.reset_at.saturating_sub(now),
                entry.until - now,
            )
        })
    }

    /// Records what the inner limiter decided for `cost` on `key` at `now`.
    pub(crate) fn record(&self, key: &[u8], cost: u64, now: u64, decision: &Decision) {
        let Some(retry_after) = decision.retry_after.filter(|_| !decision.allowed) else {
            // An admission means the key has room again.
            self.forget(key);
            return;
        };
        if key.len() > MAX_KEY_LEN {
            return;
        }
        let entry = Entry {
            cost,
            until: now.saturating_add(micros(retry_after)),
            reset_at: now.saturating_add(micros(decision.reset_after)),
            limit: decision.limit,
            remaining: decision.remaining,
        };
        let mut entries = self.entries();
        if entries.len() >= self.capacity && !entries.contains_key(key) {
            entries.retain(|_, e| now < e.until);
            if entries.len() >= self.capacity {
                // Still full of live denials: forget any one. Forgetting a
                // denial only costs a call to the store later.
                if let Some(victim) = entries.keys().next().cloned() {
                    entries.remove(&victim);
                }
            }
        }
        entries.insert(key.into(), entry);
        self.len.store(entries.len(), Ordering::Relaxed);
    }

    /// Forgets `key` (after an admission or a reset).
    pub(crate) fn forget(&self, key: &[u8]) {
        if self.len.load(Ordering::Relaxed) == 0 {
            return;
        }
        let mut entries = self.entries();
        entries.remove(key);
        self.len.store(entries.len(), Ordering::Relaxed);
    }

    /// How many denials are cached.
    pub(crate) fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }

    fn entries(&self) -> MutexGuard<'_, HashMap<Box<[u8]>, Entry>> {
        // Each operation leaves the map consistent; a panic elsewhere cannot
        // corrupt it.
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
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
    fn denies_the_same_cost_until_retry_after() {
        let cache = DenyEntries::new(4);
        cache.record(b"k", 2, 1_000, &denial(10));
        let d = cache.lookup(b"k", 2, 5_000).unwrap();
        assert!(!d.allowed);
        assert_eq!(d.retry_after, Some(Duration::from_millis(6)));
        assert_eq!(d.reset_after, Duration::from_millis(16));
        assert!(
            cache.lookup(b"k", 3, 5_000).is_none(),
            "its wait is the store's to say"
        );
        assert!(
            cache.lookup(b"k", 1, 5_000).is_none(),
            "a smaller cost may fit"
        );
        assert!(
            cache.lookup(b"k", 2, 11_000).is_none(),
            "retry_after has passed"
        );
        assert_eq!(cache.len(), 0, "and the entry is gone");
        assert!(cache.lookup(b"other", 2, 5_000).is_none());
    }

    #[test]
    fn an_admission_or_a_forget_drops_the_key() {
        let cache = DenyEntries::new(4);
        cache.record(b"k", 1, 0, &denial(10));
        cache.record(b"k", 1, 0, &Decision::allowed(5, 4, Duration::ZERO));
        assert!(cache.lookup(b"k", 1, 0).is_none());
        cache.record(b"k", 1, 0, &denial(10));
        cache.forget(b"k");
        assert!(cache.lookup(b"k", 1, 0).is_none());
    }

    #[test]
    fn stays_within_capacity() {
        let cache = DenyEntries::new(2);
        for i in 0..10u8 {
            cache.record(&[i], 1, 0, &denial(10));
        }
        assert_eq!(cache.len(), 2);
        cache.record(&[0; MAX_KEY_LEN + 1], 1, 0, &denial(10));
        assert!(cache.lookup(&[0; MAX_KEY_LEN + 1], 1, 0).is_none());
    }
}
