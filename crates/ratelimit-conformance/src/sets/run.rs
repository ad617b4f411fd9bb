//! The operations of a set sequence and what every runner shares.

use ratelimit_core::{Receipt, SetLimiter};

/// One operation of a policy-set sequence.
///
/// Receipts are addressed by `pick`: the `pick % n`-th of the `n` receipts
/// still open (allowed checks neither settled nor dropped), oldest first;
/// the operation is skipped when none is open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SetOp {
    /// `check_set(key, costs)`: one cost per policy, `0` gating; costs out
    /// of range (above a rate limit, above 1 on a concurrency policy) are
    /// included on purpose and must be errors that change nothing.
    Check {
        /// Index of the key in the run's keys.
        key: usize,
        /// One cost per policy, in set order.
        costs: Vec<u64>,
    },
    /// `settle(receipt, actual)`, one amount per policy; `None` settles
    /// what the check took (the only amount a policy not declared to
    /// settle accepts).
    Settle {
        /// Which open receipt.
        pick: usize,
        /// The actual amount per policy, or `None` for what was taken.
        actual: Vec<Option<u64>>,
    },
    /// `renew(receipt)`.
    Renew {
        /// Which open receipt.
        pick: usize,
    },
    /// The receipt dropped unsettled, as a [`Reservation`] is: its leases
    /// are released and its estimates stay charged.
    ///
    /// [`Reservation`]: ratelimit_core::Reservation
    Drop {
        /// Which open receipt.
        pick: usize,
    },
    /// `peek_set(key)`.
    Peek {
        /// Index of the key in the run's keys.
        key: usize,
    },
    /// `reset_set(key)`.
    Reset {
        /// Index of the key in the run's keys.
        key: usize,
    },
    /// Move the clock by this many µs; negative moves it back (saturating
    /// at the epoch).
    Advance {
        /// The step, µs.
        us: i64,
    },
}

/// How a runner drives the limiter under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct RunOptions {
    /// Whether [`SetLimiter::release`] takes effect before it returns (the
    /// in-process backends). When false (a remote store, whose release is
    /// sent without awaiting the answer), a [`SetOp::Drop`] settles the
    /// receipt with what it took instead: the same effect, awaited, so the
    /// next operation sees it.
    pub release_is_immediate: bool,
}

impl Default for RunOptions {
    fn default() -> Self {
        Self {
            release_is_immediate: true,
        }
    }
}

impl RunOptions {
    /// Options for a backend whose `release` is sent without waiting (a
    /// remote store): drops settle with what was taken instead.
    #[must_use]
    pub fn remote() -> Self {
        Self {
            release_is_immediate: false,
        }
    }
}

/// The amounts a settle of `receipt` sends: `None` is what was taken.
pub(crate) fn amounts(actual: &[Option<u64>], receipt: &Receipt) -> Vec<u64> {
    let taken = receipt.taken();
    taken
        .iter()
        .enumerate()
        .map(|(i, t)| actual.get(i).copied().flatten().unwrap_or(*t))
        .collect()
}

/// Drops `receipt` as the options say: `release`, or a settle of what it
/// took (whose answer is returned).
pub(crate) async fn drop_receipt(
    limiter: &dyn SetLimiter,
    receipt: Receipt,
    options: RunOptions,
) -> Option<Result<ratelimit_core::SetDecision, ratelimit_core::Error>> {
    if options.release_is_immediate {
        limiter.release(receipt);
        None
    } else {
        let taken = receipt.taken();
        Some(limiter.settle(receipt, &taken).await)
    }
}

/// The `pick`-th open receipt's position, if any is open.
pub(crate) fn picked<T>(open: &[T], pick: usize) -> Option<usize> {
    (!open.is_empty()).then(|| pick % open.len())
}
