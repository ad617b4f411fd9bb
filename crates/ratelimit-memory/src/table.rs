//! The sharded table: fingerprints to states, one lock per shard.

use ratelimit_core::{Decision, Error};

use crate::fingerprint::Fingerprint;
use crate::lock::ShardLock;
use crate::meters::Meters;
use crate::packed::Packing;
use crate::shard::{Rules, Shard};

/// A shard on its own cache lines, so that threads working on different
/// shards do not invalidate each other's lock word (128 bytes covers the
/// adjacent-line prefetcher of current x86 and the 128-byte lines of Apple
/// silicon).
#[derive(Debug, Default)]
#[repr(align(128))]
struct Padded<T>(T);

/// Keys of one algorithm, split over independently locked shards.
///
/// Every operation takes one shard lock for one table probe and one state
/// update; no lock is held across an `.await` (there is none inside). One
/// check in many then tries the lock of another shard, to lend it a turn
/// of sweeping (never waiting for it).
#[derive(Debug)]
pub(crate) struct Table<A: Packing> {
    shards: Box<[Padded<ShardLock<Shard<A>>>]>,
    mask: usize,
    rules: Rules<A>,
}

impl<A: Packing> Table<A> {
    /// A table of `shards` shards (a power of two).
    pub(crate) fn new(rules: Rules<A>, shards: usize) -> Self {
        debug_assert!(shards.is_power_of_two());
        Self {
            shards: (0..shards).map(|_| Padded::default()).collect(),
            mask: shards - 1,
            rules,
        }
    }

    #[inline]
    fn shard(&self, fp: Fingerprint) -> &ShardLock<Shard<A>> {
        &self.shards[fp.shard(self.mask)].0
    }

    /// See [`Shard::check_lending`].
    #[inline]
    pub(crate) fn check(&self, fp: Fingerprint, now: u64, cost: u64) -> Result<Decision, Error> {
        // Reject bad costs before taking the lock.
        self.rules.algorithm.validate_cost(cost)?;
        let from = fp.shard(self.mask);
        self.shards[from]
            .0
            .lock()
            .check_lending(&self.rules, fp, now, cost, |turn| {
                self.lend(from, turn, now);
            })
    }

    /// Lends turn `turn` of shard `from`'s sweeper to another shard, the
    /// next in `from`'s rotation over the others (see
    /// [`LEND_PERIOD`](crate::shard::LEND_PERIOD)). Called with `from`'s
    /// lock held, so it only tries the other's: skipped if that shard is
    /// busy, a lent turn never waits (and two shards lending to each other
    /// cannot deadlock).
    #[cold]
    #[inline(never)]
    fn lend(&self, from: usize, turn: u32, now: u64) {
        let others = self.mask;
        if others == 0 {
            return;
        }
        let to = (from + 1 + turn as usize % others) & self.mask;
        if let Some(mut shard) = self.shards[to].0.try_lock() {
            shard.sweep_lent(&self.rules, now);
        }
    }

    /// See [`Shard::peek`].
    #[inline]
    pub(crate) fn peek(&self, fp: Fingerprint, now: u64) -> Decision {
        self.shard(fp).lock().peek(&self.rules, fp, now)
    }

    /// See [`Shard::reset`].
    pub(crate) fn reset(&self, fp: Fingerprint) {
        self.shard(fp).lock().reset(fp);
    }

    /// Purges every shard in turn, one lock at a time.
    pub(crate) fn purge(&self, now: u64) -> usize {
        self.shards
            .iter()
            .map(|s| s.0.lock().purge(&self.rules, now))
            .sum()
    }

    /// Stored keys, summed shard by shard (not a snapshot under traffic).
    pub(crate) fn len(&self) -> usize {
        self.shards.iter().map(|s| s.0.lock().len()).sum()
    }

    /// The metric handles the shards count into.
    pub(crate) fn meters(&self) -> &Meters {
        &self.rules.meters
    }

    /// Bytes held: the shard array and every shard's table.
    pub(crate) fn allocation_size(&self) -> usize {
        std::mem::size_of_val(&*self.shards)
            + self
                .shards
                .iter()
                .map(|s| s.0.lock().allocation_size())
                .sum::<usize>()
    }
}
