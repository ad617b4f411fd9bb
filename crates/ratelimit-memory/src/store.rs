//! The table of the policy's algorithm, chosen once at construction.

use ratelimit_core::{Decision, Error, FixedWindow, Policy, SlidingWindow, TokenBucket};

use crate::fingerprint::Fingerprint;
use crate::meters::Meters;
use crate::packed::{NarrowSliding, Packing};
use crate::shard::Rules;
use crate::table::Table;
use crate::MemoryLimiterOptions;

/// One monomorphic table per algorithm: the per-call `match` is a
/// predictable branch, and each table stores its algorithm's state in its
/// own form (12 bytes or less, `packed.rs`) beside the key's fingerprint.
/// A sliding window of a limit below `2^16` has a table of its own, whose
/// states are 8 bytes.
#[derive(Debug)]
pub(crate) enum Store {
    FixedWindow(Table<FixedWindow>),
    NarrowSliding(Table<NarrowSliding>),
    SlidingWindow(Table<SlidingWindow>),
    TokenBucket(Table<TokenBucket>),
}

/// Runs `$body` with `$t` bound to the table, whatever its algorithm.
macro_rules! each {
    ($store:expr, |$t:ident| $body:expr) => {
        match $store {
            Store::FixedWindow($t) => $body,
            Store::NarrowSliding($t) => $body,
            Store::SlidingWindow($t) => $body,
            Store::TokenBucket($t) => $body,
        }
    };
}

fn table<A: Packing>(algorithm: A, options: &MemoryLimiterOptions, meters: Meters) -> Table<A> {
    let shards = options.shard_count();
    let cap = options
        .max_keys()
        .map_or(usize::MAX, |keys| (keys / shards).max(1));
    let rules = Rules {
        algorithm,
        cap,
        when_full: options.when_full(),
        grace_us: u64::try_from(options.idle_grace().as_micros()).unwrap_or(u64::MAX),
        meters,
    };
    Table::new(rules, shards)
}

impl Store {
    /// The table for `policy`, counting into `meters`.
    pub(crate) fn new(policy: Policy, options: &MemoryLimiterOptions, meters: Meters) -> Self {
        match policy {
            Policy::FixedWindow(p) => Self::FixedWindow(table(p, options, meters)),
            Policy::SlidingWindow(p) => match NarrowSliding::new(p) {
                Some(narrow) => Self::NarrowSliding(table(narrow, options, meters)),
                None => Self::SlidingWindow(table(p, options, meters)),
            },
            Policy::TokenBucket(p) => Self::TokenBucket(table(p, options, meters)),
        }
    }

    #[inline]
    pub(crate) fn check(&self, fp: Fingerprint, now: u64, cost: u64) -> Result<Decision, Error> {
        each!(self, |t| t.check(fp, now, cost))
    }

    #[inline]
    pub(crate) fn peek(&self, fp: Fingerprint, now: u64) -> Decision {
        each!(self, |t| t.peek(fp, now))
    }

    pub(crate) fn reset(&self, fp: Fingerprint) {
        each!(self, |t| t.reset(fp));
    }

    pub(crate) fn purge(&self, now: u64) -> usize {
        each!(self, |t| t.purge(now))
    }

    pub(crate) fn len(&self) -> usize {
        each!(self, |t| t.len())
    }

    pub(crate) fn allocation_size(&self) -> usize {
        each!(self, |t| t.allocation_size())
    }

    pub(crate) fn meters(&self) -> &Meters {
        each!(self, |t| t.meters())
    }
}
