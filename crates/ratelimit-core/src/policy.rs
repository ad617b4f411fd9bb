//! The policy an application picks from configuration.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::PolicyConfig;
use crate::{
    Algorithm, AlgorithmName, ConfigError, Decision, Error, FixedWindow, FixedWindowState,
    SlidingWindow, SlidingWindowState, TokenBucket, TokenBucketState,
};

/// One of the three algorithms, chosen at run time (from configuration).
///
/// Deserializes from the flat form documented on [`PolicyConfig`], so an
/// application swaps algorithms by editing its config file.
///
/// # Why a closed enum
///
/// `Policy`, [`PolicyState`] and [`AlgorithmName`] are deliberately not
/// `#[non_exhaustive]`. Every backend must implement every algorithm (a
/// memory table, a Redis Lua script and key tag, a property-test strategy,
/// a throughput bound), and the workspace's crates ship in lockstep. With
/// `#[non_exhaustive]`, every `match` outside this crate needs a wildcard
/// arm, and a forgotten algorithm would only show at run time (a panic, an
/// error at connect, a wrong fallback, or silently never being tested).
/// Closed, each of those sites is a compile error until the new algorithm
/// is handled there. An application's own `match` breaks the same way, on
/// purpose: a new algorithm is a new major version.
///
/// A visitor (`policy.visit(v)` calling one generic `v.run::<A: Algorithm>`)
/// was the alternative. It fits code that is the same for every algorithm,
/// but most per-algorithm sites are not: the Redis script, the key tag and
/// the throughput bound differ in kind, and a generic function cannot ask
/// for facts the [`Algorithm`] trait does not carry without a second,
/// backend-side trait per algorithm, whose implementations the compiler
/// again cannot list. An exhaustive `match` lists them.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use ratelimit_core::Policy;
///
/// let policy: Policy = toml::from_str(r#"
///     algorithm = "sliding_window"
///     limit = 5
///     window = "30s"
/// "#).unwrap();
/// assert_eq!(policy, Policy::sliding_window(5, Duration::from_secs(30)).unwrap());
///
/// let compact: Policy = toml::from_str(r#"
///     algorithm = "fixed_window"
///     rate = "5/30s"
/// "#).unwrap();
/// assert_eq!(compact.limit(), 5);
/// assert_eq!(compact.window(), Duration::from_secs(30));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "PolicyConfig", into = "PolicyConfig")]
pub enum Policy {
    /// See [`FixedWindow`].
    FixedWindow(FixedWindow),
    /// See [`SlidingWindow`].
    SlidingWindow(SlidingWindow),
    /// See [`TokenBucket`].
    TokenBucket(TokenBucket),
}

/// The stored state of a key under a [`Policy`].
///
/// A state of another algorithm than the policy's (after a configuration
/// change) is read as a key never seen. Closed, as [`Policy`] is, for the
/// reason given there.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum PolicyState {
    /// A key never seen.
    #[default]
    Empty,
    /// State of a fixed-window key.
    FixedWindow(FixedWindowState),
    /// State of a sliding-window key.
    SlidingWindow(SlidingWindowState),
    /// State of a token-bucket key.
    TokenBucket(TokenBucketState),
}

impl Policy {
    /// A [`FixedWindow`] policy.
    ///
    /// # Errors
    ///
    /// As [`FixedWindow::new`].
    ///
    /// # Examples
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use ratelimit_core::Policy;
    /// let p = Policy::fixed_window(5, Duration::from_secs(30)).unwrap();
    /// assert_eq!(p.algorithm_name(), "fixed_window");
    /// ```
    pub fn fixed_window(limit: u64, window: Duration) -> Result<Self, ConfigError> {
        FixedWindow::new(limit, window).map(Self::FixedWindow)
    }

    /// A [`SlidingWindow`] policy.
    ///
    /// # Errors
    ///
    /// As [`SlidingWindow::new`].
    ///
    /// # Examples
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use ratelimit_core::Policy;
    /// let p = Policy::sliding_window(5, Duration::from_secs(30)).unwrap();
    /// assert_eq!(p.algorithm_name(), "sliding_window");
    /// ```
    pub fn sliding_window(limit: u64, window: Duration) -> Result<Self, ConfigError> {
        SlidingWindow::new(limit, window).map(Self::SlidingWindow)
    }

    /// A [`TokenBucket`] policy.
    ///
    /// # Errors
    ///
    /// As [`TokenBucket::new`].
    ///
    /// # Examples
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use ratelimit_core::Policy;
    /// let p = Policy::token_bucket(10, 1, Duration::from_secs(1)).unwrap();
    /// assert_eq!(p.limit(), 10);
    /// ```
    pub fn token_bucket(capacity: u64, refill: u64, period: Duration) -> Result<Self, ConfigError> {
        TokenBucket::new(capacity, refill, period).map(Self::TokenBucket)
    }

    /// The limit reported in every decision: the window limit, or the
    /// bucket capacity.
    ///
    /// # Examples
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use ratelimit_core::Policy;
    /// assert_eq!(Policy::fixed_window(5, Duration::from_secs(30)).unwrap().limit(), 5);
    /// ```
    #[must_use]
    pub const fn limit(&self) -> u64 {
        match self {
            Self::FixedWindow(p) => p.limit(),
            Self::SlidingWindow(p) => p.limit(),
            Self::TokenBucket(p) => p.capacity(),
        }
    }

    /// The policy's algorithm.
    ///
    /// # Examples
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use ratelimit_core::{AlgorithmName, Policy};
    /// let p = Policy::token_bucket(10, 1, Duration::from_secs(1)).unwrap();
    /// assert_eq!(p.algorithm(), AlgorithmName::TokenBucket);
    /// ```
    #[must_use]
    pub const fn algorithm(&self) -> AlgorithmName {
        match self {
            Self::FixedWindow(_) => AlgorithmName::FixedWindow,
            Self::SlidingWindow(_) => AlgorithmName::SlidingWindow,
            Self::TokenBucket(_) => AlgorithmName::TokenBucket,
        }
    }

    /// The configuration name of the algorithm: `fixed_window`,
    /// `sliding_window` or `token_bucket` (`self.algorithm().as_str()`).
    ///
    /// # Examples
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use ratelimit_core::Policy;
    /// let p = Policy::sliding_window(5, Duration::from_secs(1)).unwrap();
    /// assert_eq!(p.algorithm_name(), "sliding_window");
    /// ```
    #[must_use]
    pub const fn algorithm_name(&self) -> &'static str {
        self.algorithm().as_str()
    }

    /// The window of the window policies; for a token bucket, the time an
    /// empty bucket takes to fill (`capacity * emission interval`). This is
    /// the `w` of a `RateLimit-Policy` header.
    ///
    /// # Examples
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use ratelimit_core::Policy;
    /// let p = Policy::token_bucket(10, 1, Duration::from_secs(1)).unwrap();
    /// assert_eq!(p.window(), Duration::from_secs(10));
    /// ```
    #[must_use]
    pub fn window(&self) -> Duration {
        match self {
            Self::FixedWindow(p) => p.window(),
            Self::SlidingWindow(p) => p.window(),
            Self::TokenBucket(p) => p.fill_time(),
        }
    }
}

impl From<FixedWindow> for Policy {
    fn from(p: FixedWindow) -> Self {
        Self::FixedWindow(p)
    }
}

impl From<SlidingWindow> for Policy {
    fn from(p: SlidingWindow) -> Self {
        Self::SlidingWindow(p)
    }
}

impl From<TokenBucket> for Policy {
    fn from(p: TokenBucket) -> Self {
        Self::TokenBucket(p)
    }
}

/// Runs `$body` with `$p` bound to the inner policy and `$s` to its state,
/// reading a state of another algorithm as a key never seen.
macro_rules! dispatch {
    ($policy:expr, $state:expr, |$p:ident, $s:ident, $wrap:ident| $body:expr) => {
        match $policy {
            Policy::FixedWindow($p) => {
                let $s = match $state {
                    PolicyState::FixedWindow(s) => *s,
                    _ => FixedWindowState::default(),
                };
                let $wrap = PolicyState::FixedWindow;
                $body
            }
            Policy::SlidingWindow($p) => {
                let $s = match $state {
                    PolicyState::SlidingWindow(s) => *s,
                    _ => SlidingWindowState::default(),
                };
                let $wrap = PolicyState::SlidingWindow;
                $body
            }
            Policy::TokenBucket($p) => {
                let $s = match $state {
                    PolicyState::TokenBucket(s) => *s,
                    _ => TokenBucketState::default(),
                };
                let $wrap = PolicyState::TokenBucket;
                $body
            }
        }
    };
}

impl Algorithm for Policy {
    type State = PolicyState;

    #[inline]
    fn limit(&self) -> u64 {
        Policy::limit(self)
    }

    #[inline(always)]
    fn check(
        &self,
        state: &PolicyState,
        now: u64,
        cost: u64,
    ) -> Result<(Decision, PolicyState), Error> {
        dispatch!(self, state, |p, s, wrap| {
            // The inner state is passed through as is, denials included, so
            // the property tests see exactly what each policy returns (a
            // denial is only possible on a state of the policy's own kind).
            let (decision, next) = p.check(&s, now, cost)?;
            Ok((decision, wrap(next)))
        })
    }

    #[inline]
    fn peek(&self, state: &PolicyState, now: u64) -> Decision {
        dispatch!(self, state, |p, s, _wrap| p.peek(&s, now))
    }

    fn expires_at(&self, state: &PolicyState) -> u64 {
        dispatch!(self, state, |p, s, _wrap| p.expires_at(&s))
    }
}
