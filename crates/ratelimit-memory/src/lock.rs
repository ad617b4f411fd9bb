//! The shard lock: a spin lock released by a plain store, whose waiters
//! spin briefly and then yield.
//!
//! A check holds its shard's lock for one probe and one state update, tens
//! of nanoseconds. `parking_lot`'s mutex takes its lock with one locked
//! instruction and releases it with a second (a release must learn whether
//! a waiter parked, so it swaps); on the uncontended path those two were
//! most of a hot-key check. `spin`'s `SpinMutex` takes the lock with one
//! compare-and-exchange and releases it with a `Release` store, which on
//! x86 is a plain `mov`.
//!
//! A spin lock has no queue to park in, so a waiter must not burn its time
//! slice while the holder is off the CPU (preempted between taking and
//! releasing, more likely the fewer cores there are): after [`SPINS`]
//! pauses it yields to the scheduler, then spins again.

use std::cell::Cell;

use spin::relax::RelaxStrategy;

/// A lock around one shard.
pub(crate) type ShardLock<T> = spin::mutex::SpinMutex<T, SpinThenYield>;

/// Pauses a waiter makes between two yields. One pause is tens of cycles
/// to about 140 on recent Intel cores, so 16 of them cover several
/// critical sections of a running holder before the waiter gives up its
/// slice to a descheduled one.
const SPINS: u32 = 16;

thread_local! {
    /// Pauses this thread made since its last yield. It carries over from
    /// one wait to the next, so a wait may yield sooner than after
    /// [`SPINS`] pauses, never later.
    static PAUSES: Cell<u32> = const { Cell::new(0) };
}

/// Spins [`SPINS`] times, then yields the thread, while the lock is held.
pub(crate) struct SpinThenYield;

impl RelaxStrategy for SpinThenYield {
    #[inline]
    fn relax() {
        PAUSES.with(|pauses| {
            let n = pauses.get();
            if n < SPINS {
                pauses.set(n + 1);
                std::hint::spin_loop();
            } else {
                pauses.set(0);
                std::thread::yield_now();
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_waiter_gets_the_lock_once_the_holder_releases_it() {
        let lock = ShardLock::new(0u64);
        let threads = 4;
        let each = 10_000;
        std::thread::scope(|s| {
            for _ in 0..threads {
                s.spawn(|| {
                    for _ in 0..each {
                        *lock.lock() += 1;
                    }
                });
            }
        });
        assert_eq!(*lock.lock(), threads * each);
    }

    #[test]
    fn a_long_wait_yields_and_starts_counting_again() {
        PAUSES.with(|p| p.set(0));
        for _ in 0..SPINS {
            SpinThenYield::relax();
        }
        assert_eq!(PAUSES.with(Cell::get), SPINS);
        SpinThenYield::relax();
        assert_eq!(PAUSES.with(Cell::get), 0);
    }
}
