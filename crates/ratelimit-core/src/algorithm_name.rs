//! The name of each algorithm, and the facts about it every backend shares.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Which algorithm a [`Policy`](crate::Policy) runs: the `algorithm` of a
/// [`PolicyConfig`](crate::PolicyConfig), and the one list of algorithms
/// the workspace iterates ([`ALL`](Self::ALL)) so that property tests, fuzz
/// targets and benchmarks cover a new algorithm without being edited.
///
/// Not `#[non_exhaustive]`, for the reason given on [`Policy`](crate::Policy):
/// a `match` on it must name every algorithm, so that adding one is a
/// compile error wherever an algorithm needs its own code.
///
/// # Examples
///
/// ```
/// use ratelimit_core::AlgorithmName;
///
/// let name: AlgorithmName = "sliding_window".parse().unwrap();
/// assert_eq!(name, AlgorithmName::SlidingWindow);
/// assert_eq!(name.to_string(), "sliding_window");
/// assert_eq!(name.key_tag(), "sw");
///
/// let err = "leaky_bucket".parse::<AlgorithmName>().unwrap_err();
/// assert_eq!(
///     err.to_string(),
///     "unknown algorithm \"leaky_bucket\"; expected \"fixed_window\", \"sliding_window\" or \"token_bucket\""
/// );
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlgorithmName {
    /// [`FixedWindow`](crate::FixedWindow).
    FixedWindow,
    /// [`SlidingWindow`](crate::SlidingWindow).
    SlidingWindow,
    /// [`TokenBucket`](crate::TokenBucket).
    TokenBucket,
}

impl AlgorithmName {
    /// Every algorithm, in the order of the enum. Checked at compile time
    /// to list every variant once (see `every_variant_is_in_all`).
    ///
    /// # Examples
    ///
    /// ```
    /// use ratelimit_core::AlgorithmName;
    ///
    /// for name in AlgorithmName::ALL {
    ///     assert_eq!(name.as_str().parse::<AlgorithmName>(), Ok(name));
    /// }
    /// ```
    pub const ALL: [Self; 3] = [Self::FixedWindow, Self::SlidingWindow, Self::TokenBucket];

    /// The configuration spelling: `"fixed_window"`, `"sliding_window"` or
    /// `"token_bucket"` (the same as serde's).
    ///
    /// # Examples
    ///
    /// ```
    /// use ratelimit_core::AlgorithmName;
    ///
    /// assert_eq!(AlgorithmName::TokenBucket.as_str(), "token_bucket");
    /// ```
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::FixedWindow => "fixed_window",
            Self::SlidingWindow => "sliding_window",
            Self::TokenBucket => "token_bucket",
        }
    }

    /// A short tag naming the algorithm inside stored keys (the Redis
    /// backend's keys are `<prefix><tag>:{<key>}`), so that a key is never
    /// read with another algorithm's layout after a configuration change.
    ///
    /// Tags are distinct, contain no `{`, `}` or `:`, and never change: a
    /// new tag for an existing algorithm would orphan every stored key.
    ///
    /// # Examples
    ///
    /// ```
    /// use ratelimit_core::AlgorithmName;
    ///
    /// assert_eq!(AlgorithmName::FixedWindow.key_tag(), "fw");
    /// assert_eq!(AlgorithmName::TokenBucket.key_tag(), "tb");
    /// ```
    #[must_use]
    pub const fn key_tag(self) -> &'static str {
        match self {
            Self::FixedWindow => "fw",
            Self::SlidingWindow => "sw",
            Self::TokenBucket => "tb",
        }
    }
}

/// How many times `ALL` lists `name`.
const fn listed(name: AlgorithmName) -> usize {
    let (mut i, mut n) = (0, 0);
    while i < AlgorithmName::ALL.len() {
        if AlgorithmName::ALL[i] as u8 == name as u8 {
            n += 1;
        }
        i += 1;
    }
    n
}

/// The compile-time proof that [`AlgorithmName::ALL`] lists every variant
/// exactly once, which is what lets the property tests and fuzz targets
/// generate a new algorithm without being edited: this `match` has no
/// wildcard, so a new variant fails to compile here until it has an arm,
/// and its arm fails to compile until `ALL` lists it once. Never called;
/// the `const` blocks are evaluated by the compiler all the same.
#[allow(dead_code)]
const fn every_variant_is_in_all(name: AlgorithmName) {
    match name {
        AlgorithmName::FixedWindow => const { assert!(listed(AlgorithmName::FixedWindow) == 1) },
        AlgorithmName::SlidingWindow => {
            const { assert!(listed(AlgorithmName::SlidingWindow) == 1) }
        }
        AlgorithmName::TokenBucket => const { assert!(listed(AlgorithmName::TokenBucket) == 1) },
    }
}

impl fmt::Display for AlgorithmName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `"fixed_window", "sliding_window" or "token_bucket"`, from
/// [`AlgorithmName::ALL`], for error messages.
pub(crate) struct Expected;

impl fmt::Display for Expected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let last = AlgorithmName::ALL.len() - 1;
        for (i, name) in AlgorithmName::ALL.iter().enumerate() {
            let sep = match i {
                0 => "",
                _ if i == last => " or ",
                _ => ", ",
            };
            write!(f, "{sep}{:?}", name.as_str())?;
        }
        Ok(())
    }
}

/// The error of parsing an [`AlgorithmName`] from text.
///
/// # Examples
///
/// ```
/// use ratelimit_core::AlgorithmName;
///
/// assert!("gcra".parse::<AlgorithmName>().unwrap_err().to_string().contains("\"gcra\""));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseAlgorithmNameError(String);

impl fmt::Display for ParseAlgorithmNameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown algorithm {:?}; expected {Expected}", self.0)
    }
}

impl std::error::Error for ParseAlgorithmNameError {}

impl FromStr for AlgorithmName {
    type Err = ParseAlgorithmNameError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|name| name.as_str() == s)
            .ok_or_else(|| ParseAlgorithmNameError(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn names_agree_with_serde_and_tags_are_distinct_and_brace_free() {
        let mut tags = HashSet::new();
        for name in AlgorithmName::ALL {
            let json = serde_json::to_string(&name).unwrap();
            assert_eq!(json, format!("\"{name}\""));
            assert_eq!(serde_json::from_str::<AlgorithmName>(&json).unwrap(), name);
            let tag = name.key_tag();
            assert!(!tag.is_empty() && !tag.contains(['{', '}', ':']), "{tag:?}");
            assert!(tags.insert(tag), "tag {tag:?} used twice");
        }
    }
}
