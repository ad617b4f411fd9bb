//! Operation sequences, shared by the pure checks and the differential runs.

/// One operation on one key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `check(key, cost)`; costs of 0 and above the limit are included on
    /// purpose (they must be errors that change nothing).
    Check {
        /// The cost asked for.
        cost: u64,
    },
    /// `peek(key)`.
    Peek,
    /// `reset(key)`.
    Reset,
}

/// Move the clock, then apply an operation to a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    /// Microseconds to move the clock by before the operation; negative
    /// moves it back (saturating at the epoch).
    pub advance_us: i64,
    /// Index of the key in the run's key list.
    pub key: usize,
    /// What to do.
    pub op: Op,
}

impl Step {
    /// The time after this step's clock move from `now`.
    #[must_use]
    pub fn apply_time(&self, now: u64) -> u64 {
        now.saturating_add_signed(self.advance_us)
    }
}
