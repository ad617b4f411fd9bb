//! A broken invariant, with what was seen.

use std::fmt;

/// A broken invariant or scenario expectation: which one, and the values
/// that show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    what: String,
}

impl Violation {
    /// A violation described by `what`.
    #[must_use]
    pub fn new(what: impl Into<String>) -> Self {
        Self { what: what.into() }
    }

    /// Prefixes the description with where it happened.
    #[must_use]
    pub fn context(self, at: impl fmt::Display) -> Self {
        Self {
            what: format!("{at}: {}", self.what),
        }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.what)
    }
}

impl std::error::Error for Violation {}

/// Returns a [`Violation`] built from a format string unless `cond` holds.
#[macro_export]
macro_rules! ensure {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err($crate::Violation::new(format!($($fmt)+)));
        }
    };
}
