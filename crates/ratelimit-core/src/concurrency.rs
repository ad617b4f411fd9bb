//! Concurrency: at most `N` leases per key, each expiring unless renewed.

use std::fmt;
use std::time::Duration;

use crate::domain::validate_period;
use crate::{ConfigError, Decision};

/// The most leases a [`Concurrency`] policy may hold per key.
pub const MAX_LEASES: u64 = 65_536;

/// At most `limit` streams in flight per key, each holding a lease that
/// expires `lease_ttl` after it was taken or last renewed.
///
/// The TTL is the backstop for a holder that vanished (a crashed process);
/// a live holder releases its lease at once and renews it well inside the
/// TTL while it streams. See `SPEC.md` section 5.3.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use ratelimit_core::{Concurrency, Lease, LeaseId};
///
/// let streams = Concurrency::new(2, Duration::from_secs(30)).unwrap();
/// let mut held = Vec::new();
/// assert!(streams.acquire(&mut held, 0, LeaseId::new(1)).allowed);
/// assert!(streams.acquire(&mut held, 0, LeaseId::new(2)).allowed);
/// let denied = streams.acquire(&mut held, 1_000_000, LeaseId::new(3));
/// assert!(!denied.allowed);
/// assert_eq!(denied.retry_after, Some(Duration::from_secs(29)));
/// assert!(streams.release(&mut held, 1_000_000, LeaseId::new(1)));
/// assert!(streams.acquire(&mut held, 1_000_000, LeaseId::new(3)).allowed);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Concurrency {
    limit: u64,
    ttl_us: u64,
}

/// The identity of a lease: unique among the leases of one store (a
/// counter in process, random and counter bits across processes).
///
/// Held as two `u64` halves (high first, so the derived order is the
/// 128-bit number's): aligned to 8 bytes, not 16, so a [`Lease`] is 24
/// bytes and the receipts and states that hold one carry no padding.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LeaseId {
    high: u64,
    low: u64,
}

impl LeaseId {
    /// A lease id from its 128 bits.
    #[must_use]
    #[inline]
    pub const fn new(id: u128) -> Self {
        Self {
            // Cannot truncate: the high and the low 64 bits.
            high: (id >> 64) as u64,
            low: id as u64,
        }
    }

    /// The id's 128 bits.
    #[must_use]
    #[inline]
    pub const fn get(self) -> u128 {
        ((self.high as u128) << 64) | self.low as u128
    }

    /// The id as 16 big-endian bytes, as a store writes it.
    #[must_use]
    pub const fn to_bytes(self) -> [u8; 16] {
        self.get().to_be_bytes()
    }

    /// The id from 16 big-endian bytes.
    #[must_use]
    pub const fn from_bytes(bytes: [u8; 16]) -> Self {
        Self::new(u128::from_be_bytes(bytes))
    }
}

impl fmt::Debug for LeaseId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LeaseId({:032x})", self.get())
    }
}

impl fmt::Display for LeaseId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.get())
    }
}

/// One lease: held at `t` iff `t < expires_at` (µs since the epoch).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Lease {
    /// The lease's identity.
    pub id: LeaseId,
    /// The first instant at which the lease is no longer held.
    pub expires_at: u64,
}

impl Lease {
    /// A lease.
    #[must_use]
    pub const fn new(id: LeaseId, expires_at: u64) -> Self {
        Self { id, expires_at }
    }
}

impl Concurrency {
    /// At most `limit` leases per key, each held for `lease_ttl` unless
    /// renewed.
    ///
    /// # Errors
    ///
    /// When `limit` is not in `1..=`[`MAX_LEASES`], or `lease_ttl` is not
    /// a whole number of milliseconds in `1 ms..=2^36 ms`.
    ///
    /// # Examples
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use ratelimit_core::Concurrency;
    /// assert!(Concurrency::new(0, Duration::from_secs(1)).is_err());
    /// let c = Concurrency::new(4, Duration::from_secs(60)).unwrap();
    /// assert_eq!((c.limit(), c.lease_ttl()), (4, Duration::from_secs(60)));
    /// ```
    pub fn new(limit: u64, lease_ttl: Duration) -> Result<Self, ConfigError> {
        if limit == 0 || limit > MAX_LEASES {
            return Err(ConfigError::new(
                "limit",
                format!("{limit} is out of range; expected an integer from 1 to {MAX_LEASES}"),
            ));
        }
        let ttl_ms = validate_period(lease_ttl, "lease_ttl")?;
        Ok(Self {
            limit,
            ttl_us: ttl_ms * 1000,
        })
    }

    /// The most leases held at once per key.
    #[must_use]
    pub const fn limit(&self) -> u64 {
        self.limit
    }

    /// How long a lease is held after it was taken or renewed.
    #[must_use]
    pub const fn lease_ttl(&self) -> Duration {
        Duration::from_micros(self.ttl_us)
    }

    /// The lease TTL in microseconds.
    #[must_use]
    pub const fn lease_ttl_micros(&self) -> u64 {
        self.ttl_us
    }

    /// Forgets the leases of `held` that have expired at `now`. Every call
    /// on a key does this first, so at most `limit` leases are ever stored.
    pub fn forget_expired(&self, held: &mut Vec<Lease>, now: u64) {
        held.retain(|lease| lease.expires_at > now);
    }

    /// The decision for `held` as it is at `now` (expired leases already
    /// forgotten): `allowed` when one more lease fits.
    fn decide(&self, held: &[Lease], now: u64, allowed: bool) -> Decision {
        let count = held.len() as u64;
        let first = held.iter().map(|l| l.expires_at).min().unwrap_or(now);
        let last = held.iter().map(|l| l.expires_at).max().unwrap_or(now);
        Decision::from_micros(
            allowed,
            self.limit,
            self.limit.saturating_sub(count),
            last.saturating_sub(now),
            first.saturating_sub(now),
        )
    }

    /// Whether one more lease fits at `now`, taking nothing: the decision
    /// an [`acquire`](Self::acquire) would see, with `remaining` as it is.
    #[must_use]
    pub fn peek(&self, held: &[Lease], now: u64) -> Decision {
        // One pass over the live leases, allocating nothing.
        let (mut count, mut first, mut last) = (0u64, u64::MAX, 0u64);
        for l in held.iter().filter(|l| l.expires_at > now) {
            count += 1;
            first = first.min(l.expires_at);
            last = last.max(l.expires_at);
        }
        if count == 0 {
            (first, last) = (now, now);
        }
        Decision::from_micros(
            count < self.limit,
            self.limit,
            self.limit.saturating_sub(count),
            last.saturating_sub(now),
            first.saturating_sub(now),
        )
    }

    /// The decision [`acquire`](Self::acquire) would return at `now` for
    /// `held` (expired leases already forgotten), taking nothing: allowed,
    /// its `remaining` and `reset_after` count the lease it would take.
    #[must_use]
    pub fn would_acquire(&self, held: &[Lease], now: u64) -> Decision {
        if (held.len() as u64) < self.limit {
            let count = held.len() as u64 + 1;
            let last = held
                .iter()
                .map(|l| l.expires_at)
                .max()
                .unwrap_or(0)
                .max(now.saturating_add(self.ttl_us));
            Decision::from_micros(
                true,
                self.limit,
                self.limit - count,
                last.saturating_sub(now),
                0,
            )
        } else {
            self.decide(held, now, false)
        }
    }

    /// Takes a lease `id` expiring at `now + lease_ttl` if fewer than
    /// `limit` are held. Denied, `retry_after` is the time until the
    /// earliest held lease expires.
    pub fn acquire(&self, held: &mut Vec<Lease>, now: u64, id: LeaseId) -> Decision {
        self.forget_expired(held, now);
        if (held.len() as u64) < self.limit {
            held.push(Lease::new(id, now.saturating_add(self.ttl_us)));
            self.decide(held, now, true)
        } else {
            self.decide(held, now, false)
        }
    }

    /// Frees lease `id` at once; true when it was held (exactly one slot
    /// freed), false when it had expired or is unknown (none freed).
    pub fn release(&self, held: &mut Vec<Lease>, now: u64, id: LeaseId) -> bool {
        // One pass: the expired leases forgotten and `id` released.
        let mut freed = false;
        held.retain(|lease| {
            let live = lease.expires_at > now;
            freed |= live && lease.id == id;
            live && lease.id != id
        });
        freed
    }

    /// Moves lease `id`'s expiry to `now + lease_ttl` if it is still held;
    /// `None` when it is lost (expired or unknown).
    pub fn renew(&self, held: &mut Vec<Lease>, now: u64, id: LeaseId) -> Option<Lease> {
        self.forget_expired(held, now);
        let lease = held.iter_mut().find(|lease| lease.id == id)?;
        // A clock that went back never shortens a lease.
        lease.expires_at = lease.expires_at.max(now.saturating_add(self.ttl_us));
        Some(*lease)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(n: u64) -> Concurrency {
        Concurrency::new(n, Duration::from_secs(10)).unwrap()
    }

    #[test]
    fn expired_leases_free_their_slots() {
        let c = c(1);
        let mut held = Vec::new();
        assert!(c.acquire(&mut held, 0, LeaseId::new(1)).allowed);
        assert!(!c.acquire(&mut held, 9_999_999, LeaseId::new(2)).allowed);
        assert!(c.acquire(&mut held, 10_000_000, LeaseId::new(2)).allowed);
        assert_eq!(held.len(), 1, "the expired lease was forgotten");
    }

    #[test]
    fn releasing_frees_exactly_one_slot_and_only_once() {
        let c = c(2);
        let mut held = Vec::new();
        c.acquire(&mut held, 0, LeaseId::new(1));
        c.acquire(&mut held, 0, LeaseId::new(2));
        assert!(c.release(&mut held, 5, LeaseId::new(1)));
        assert!(
            !c.release(&mut held, 5, LeaseId::new(1)),
            "already released"
        );
        assert!(!c.release(&mut held, 5, LeaseId::new(9)), "unknown");
        assert_eq!(c.peek(&held, 5).remaining, 1);
    }

    #[test]
    fn renew_extends_a_held_lease_and_reports_a_lost_one() {
        let c = c(1);
        let mut held = Vec::new();
        c.acquire(&mut held, 0, LeaseId::new(1));
        let renewed = c.renew(&mut held, 6_000_000, LeaseId::new(1)).unwrap();
        assert_eq!(renewed.expires_at, 16_000_000);
        assert!(c.renew(&mut held, 16_000_000, LeaseId::new(1)).is_none());
    }

    #[test]
    fn decision_fields() {
        let c = c(2);
        let mut held = Vec::new();
        let d = c.acquire(&mut held, 1_000_000, LeaseId::new(1));
        assert_eq!((d.remaining, d.reset_after), (1, Duration::from_secs(10)));
        c.acquire(&mut held, 3_000_000, LeaseId::new(2));
        let d = c.acquire(&mut held, 4_000_000, LeaseId::new(3));
        assert!(!d.allowed);
        assert_eq!(d.remaining, 0);
        assert_eq!(d.retry_after, Some(Duration::from_secs(7)));
        assert_eq!(d.reset_after, Duration::from_secs(9));
        assert_eq!(c.peek(&[], 0).reset_after, Duration::ZERO);
    }
}
