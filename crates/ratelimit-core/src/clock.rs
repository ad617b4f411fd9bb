//! Where `now` comes from.

use std::fmt::Debug;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A source of time in microseconds since the UNIX epoch.
///
/// Backends take a clock by injection so tests, replays and simulations
/// control time; [`SystemClock`] is the default.
pub trait Clock: Debug + Send + Sync {
    /// The current time, µs since the UNIX epoch.
    fn now_micros(&self) -> u64;
}

impl<C: Clock + ?Sized> Clock for Arc<C> {
    fn now_micros(&self) -> u64 {
        (**self).now_micros()
    }
}

impl<C: Clock + ?Sized> Clock for &C {
    fn now_micros(&self) -> u64 {
        (**self).now_micros()
    }
}

/// The wall clock read once at construction plus a monotonic offset:
/// aligned to the epoch, and never going back even when the system time is
/// stepped.
///
/// The offset comes from [`quanta`], which reads the CPU's invariant
/// timestamp counter where there is one (a few nanoseconds, where
/// [`std::time::Instant::now`] is a `clock_gettime` call costing several
/// times more on virtual machines) and the OS monotonic clock elsewhere. The
/// counter is calibrated once per process, on the first `SystemClock::new`
/// (up to about 200 ms).
///
/// # Examples
///
/// ```
/// use ratelimit_core::{Clock, SystemClock};
///
/// let clock = SystemClock::new();
/// let a = clock.now_micros();
/// let b = clock.now_micros();
/// assert!(b >= a);
/// assert!(a > 1_600_000_000_000_000, "after September 2020");
/// ```
#[derive(Debug, Clone)]
pub struct SystemClock {
    epoch_at_start: u64,
    monotonic: quanta::Clock,
    start: quanta::Instant,
}

impl SystemClock {
    /// Reads the wall clock now and anchors the monotonic clock to it.
    #[must_use]
    pub fn new() -> Self {
        let monotonic = quanta::Clock::new();
        let start = monotonic.now();
        // A wall clock set before 1970 is read as the epoch itself.
        let since_epoch = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO);
        Self {
            epoch_at_start: duration_micros(since_epoch),
            monotonic,
            start,
        }
    }
}

impl Default for SystemClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for SystemClock {
    #[inline]
    fn now_micros(&self) -> u64 {
        // `duration_since` is zero, never negative, for a reading before
        // `start`; quanta's clock is monotonic per instance.
        let elapsed = self.monotonic.now().duration_since(self.start);
        self.epoch_at_start.saturating_add(duration_micros(elapsed))
    }
}

/// A clock that moves only when told to; clones share the same time.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use ratelimit_core::{Clock, ManualClock};
///
/// let clock = ManualClock::new(1_000);
/// let shared = clock.clone();
/// clock.advance(Duration::from_millis(2));
/// assert_eq!(shared.now_micros(), 3_000);
/// clock.rewind(Duration::from_millis(1));
/// assert_eq!(shared.now_micros(), 2_000);
/// ```
#[derive(Debug, Clone, Default)]
pub struct ManualClock {
    now: Arc<AtomicU64>,
}

impl ManualClock {
    /// A clock showing `now_micros`.
    #[must_use]
    pub fn new(now_micros: u64) -> Self {
        Self {
            now: Arc::new(AtomicU64::new(now_micros)),
        }
    }

    /// Sets the time, forward or back.
    pub fn set(&self, now_micros: u64) {
        self.now.store(now_micros, Ordering::SeqCst);
    }

    /// Moves the time forward by `by` (saturating).
    pub fn advance(&self, by: Duration) {
        self.advance_micros(duration_micros(by));
    }

    /// Moves the time forward by `micros` (saturating).
    pub fn advance_micros(&self, micros: u64) {
        // The closure always returns Some, so fetch_update cannot fail.
        let _ = self
            .now
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |t| {
                Some(t.saturating_add(micros))
            });
    }

    /// Moves the time back by `by` (saturating at the epoch).
    pub fn rewind(&self, by: Duration) {
        let micros = duration_micros(by);
        let _ = self
            .now
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |t| {
                Some(t.saturating_sub(micros))
            });
    }
}

impl Clock for ManualClock {
    #[inline]
    fn now_micros(&self) -> u64 {
        self.now.load(Ordering::SeqCst)
    }
}

/// A duration in whole microseconds, saturating at `u64::MAX`.
fn duration_micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}
