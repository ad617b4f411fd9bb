//! The pure-function contract every policy implements.

use std::fmt::Debug;

use crate::{Decision, Error};

/// A rate-limit policy as a pure function of `(state, now, cost)`.
///
/// No I/O and no clock inside: a backend stores `State` per key, reads the
/// time from its [`Clock`](crate::Clock), and applies [`check`](Self::check)
/// atomically. A key with no stored state is `State::default()`.
///
/// `now` is in microseconds since the UNIX epoch. Clocks may go backwards;
/// the policies never panic and never admit more than the latest time
/// already seen would.
///
/// # States are small, fixed-size and `Copy`
///
/// Every state is a few integers with no heap part, and its size is a
/// property of the algorithm alone (never of the traffic a key saw),
/// because every store relies on it:
///
/// - an in-process store keeps each key's state in a fixed slot of an
///   open-addressing table beside the key's fingerprint, and may update
///   it by compare-and-swap: a state is read out, passed to
///   [`check`](Self::check) by reference, and the result written back
///   whole, with no allocation and no destructor under the lock;
/// - the Redis store keeps it as one string of a fixed length, read and
///   written whole by one Lua script, so a value of any other length is
///   known not to be this policy's;
/// - bytes per key are what a limiter of millions of keys pays for, so
///   states hold the fewest bits that are exact: counts never exceed the
///   limit, which is at most [`MAX_LIMIT`](crate::MAX_LIMIT)` = 2^32 - 1`,
///   and are `u32`; window indices and instants are `u64`.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use ratelimit_core::{Algorithm, TokenBucket};
///
/// // 2 tokens, one more every 500 ms.
/// let bucket = TokenBucket::new(2, 1, Duration::from_millis(500)).unwrap();
/// let state = Default::default();
///
/// let (first, state) = bucket.check(&state, 0, 2).unwrap();
/// assert!(first.allowed);
/// let (second, after) = bucket.check(&state, 0, 1).unwrap();
/// assert!(!second.allowed);
/// assert_eq!(second.retry_after, Some(Duration::from_millis(500)));
/// assert_eq!(after, state, "a denial changes nothing");
/// ```
pub trait Algorithm: Debug + Send + Sync {
    /// What a backend stores per key. `Default` is a key never seen.
    type State: Copy + Default + Eq + Debug + Send + Sync;

    /// The limit (bucket capacity) reported in every decision.
    fn limit(&self) -> u64;

    /// Tries to take `cost` at `now`.
    ///
    /// Returns the decision and the state to store. On a denial the state
    /// returned equals `state`: denials consume nothing.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::ZeroCost`](crate::ErrorKind::ZeroCost) when `cost == 0`
    /// and [`ErrorKind::CostExceedsLimit`](crate::ErrorKind::CostExceedsLimit)
    /// when `cost > limit`; the state is unchanged in both cases.
    fn check(
        &self,
        state: &Self::State,
        now: u64,
        cost: u64,
    ) -> Result<(Decision, Self::State), Error>;

    /// The decision a check of cost 1 would see at `now`, taking nothing:
    /// `allowed` tells whether one unit is available, `remaining` and
    /// `reset_after` describe the state as it is, and `retry_after` is set
    /// when one unit is not available.
    fn peek(&self, state: &Self::State, now: u64) -> Decision;

    /// The first instant (µs since the epoch) from which `state` is
    /// equivalent to a key never seen, if time only moves forward; `0` when
    /// it already is at any time. Stores use it as the key's expiry.
    fn expires_at(&self, state: &Self::State) -> u64;

    /// Whether `state` is equivalent to a key never seen at `now`, so a store
    /// may forget it without changing any later decision.
    fn is_idle(&self, state: &Self::State, now: u64) -> bool {
        now >= self.expires_at(state)
    }

    /// Validates a cost against the limit.
    ///
    /// # Errors
    ///
    /// As [`check`](Self::check).
    #[inline]
    fn validate_cost(&self, cost: u64) -> Result<(), Error> {
        if cost == 0 {
            Err(Error::zero_cost())
        } else if cost > self.limit() {
            Err(Error::cost_exceeds_limit(cost, self.limit()))
        } else {
            Ok(())
        }
    }
}
