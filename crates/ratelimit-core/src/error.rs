//! Errors: "could not decide" and "can never succeed", and bad configuration.

use std::error::Error as StdError;
use std::fmt;

type BoxError = Box<dyn StdError + Send + Sync + 'static>;

/// Why a limiter returned no [`Decision`](crate::Decision).
///
/// A denial is never an error. An `Error` means the cost can never be taken
/// ([`ErrorKind::CostExceedsLimit`], [`ErrorKind::ZeroCost`]) or that the
/// backend could not decide ([`ErrorKind::Backend`], [`ErrorKind::Timeout`]).
///
/// # Examples
///
/// ```
/// use ratelimit_core::{Error, ErrorKind};
///
/// let err = Error::cost_exceeds_limit(7, 5);
/// assert!(err.is_cost_rejected());
/// assert_eq!(err.kind(), &ErrorKind::CostExceedsLimit { cost: 7, limit: 5 });
/// assert_eq!(err.to_string(), "cost 7 exceeds the policy's limit of 5 and can never be allowed");
/// ```
#[derive(Debug)]
pub struct Error {
    kind: ErrorKind,
    source: Option<BoxError>,
    /// The policy of a set the error is about, when it is about one.
    policy: Option<Box<str>>,
}

/// The kind of an [`Error`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The cost is larger than the policy's limit: no wait would ever allow
    /// it. Nothing was changed.
    CostExceedsLimit {
        /// The cost asked for.
        cost: u64,
        /// The policy's limit (bucket capacity).
        limit: u64,
    },
    /// A cost of zero was asked for; use `peek` to read a key's state.
    ZeroCost,
    /// The backend failed to answer (connection, protocol or script error).
    Backend,
    /// The backend did not answer within its timeout.
    Timeout,
    /// The store answered, but what it holds for this key is not a state
    /// this limiter wrote (another program's value, another layout): the
    /// key's failure, not the store's, so it says nothing about the
    /// store's health.
    Data,
    /// The call itself is wrong and can never succeed as made: costs that
    /// do not match the policy set, a receipt of another set, a settle that
    /// would take a counter out of the exact domain. Nothing was changed
    /// (but a lease the call would have released). The message is the
    /// [`source`](StdError::source).
    Invalid,
}

impl Error {
    /// A cost above the policy's limit.
    #[must_use]
    pub fn cost_exceeds_limit(cost: u64, limit: u64) -> Self {
        Self::new(ErrorKind::CostExceedsLimit { cost, limit })
    }

    /// A zero cost.
    #[must_use]
    pub fn zero_cost() -> Self {
        Self::new(ErrorKind::ZeroCost)
    }

    /// A backend failure, keeping its cause as [`source`](StdError::source).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::error::Error as _;
    /// let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
    /// let err = ratelimit_core::Error::backend(io);
    /// assert!(err.is_backend());
    /// assert_eq!(err.source().unwrap().to_string(), "refused");
    /// ```
    #[must_use]
    pub fn backend(source: impl Into<BoxError>) -> Self {
        Self {
            kind: ErrorKind::Backend,
            source: Some(source.into()),
            policy: None,
        }
    }

    /// A key whose stored value this limiter did not write, keeping what
    /// was found as [`source`](StdError::source).
    ///
    /// # Examples
    ///
    /// ```
    /// let err = ratelimit_core::Error::data("a string of 3 bytes, not the 16 of a state");
    /// assert!(err.is_data() && !err.is_backend());
    /// assert_eq!(
    ///     err.chain().to_string(),
    ///     "the key holds a value this limiter did not write: a string of 3 bytes, not the 16 of a state"
    /// );
    /// ```
    #[must_use]
    pub fn data(source: impl Into<BoxError>) -> Self {
        Self {
            kind: ErrorKind::Data,
            source: Some(source.into()),
            policy: None,
        }
    }

    /// A timeout, optionally with its cause.
    #[must_use]
    pub fn timeout(source: Option<BoxError>) -> Self {
        Self {
            kind: ErrorKind::Timeout,
            source,
            policy: None,
        }
    }

    /// A call that can never succeed as made, saying why.
    ///
    /// # Examples
    ///
    /// ```
    /// let err = ratelimit_core::Error::invalid("3 costs for a set of 2 policies");
    /// assert!(err.is_invalid() && !err.is_backend());
    /// assert_eq!(err.chain().to_string(), "invalid rate-limit call: 3 costs for a set of 2 policies");
    /// ```
    #[must_use]
    pub fn invalid(why: impl Into<BoxError>) -> Self {
        Self {
            kind: ErrorKind::Invalid,
            source: Some(why.into()),
            policy: None,
        }
    }

    /// This error, as being about the policy named `name` of a set; its
    /// `Display` then starts with the name.
    ///
    /// # Examples
    ///
    /// ```
    /// let err = ratelimit_core::Error::cost_exceeds_limit(7, 5).in_policy("tokens");
    /// assert_eq!(err.policy(), Some("tokens"));
    /// assert!(err.is_cost_rejected());
    /// assert_eq!(
    ///     err.to_string(),
    ///     "policy \"tokens\": cost 7 exceeds the policy's limit of 5 and can never be allowed"
    /// );
    /// ```
    #[must_use]
    pub fn in_policy(mut self, name: &str) -> Self {
        self.policy = Some(name.into());
        self
    }

    /// The name of the policy of a set this error is about, if any.
    #[must_use]
    pub fn policy(&self) -> Option<&str> {
        self.policy.as_deref()
    }

    /// True when the call can never succeed as made (see
    /// [`ErrorKind::Invalid`]).
    #[must_use]
    pub fn is_invalid(&self) -> bool {
        matches!(self.kind, ErrorKind::Invalid)
    }

    /// An error of the given kind with no cause.
    #[must_use]
    pub fn new(kind: ErrorKind) -> Self {
        Self {
            kind,
            source: None,
            policy: None,
        }
    }

    /// What went wrong.
    #[must_use]
    pub fn kind(&self) -> &ErrorKind {
        &self.kind
    }

    /// True when the cost can never be taken (zero, or above the limit).
    #[must_use]
    pub fn is_cost_rejected(&self) -> bool {
        matches!(
            self.kind,
            ErrorKind::CostExceedsLimit { .. } | ErrorKind::ZeroCost
        )
    }

    /// True when the backend failed to answer.
    #[must_use]
    pub fn is_backend(&self) -> bool {
        matches!(self.kind, ErrorKind::Backend | ErrorKind::Timeout)
    }

    /// True when the store answered but holds, for this key, a value this
    /// limiter did not write.
    #[must_use]
    pub fn is_data(&self) -> bool {
        matches!(self.kind, ErrorKind::Data)
    }

    /// True when the backend did not answer in time.
    #[must_use]
    pub fn is_timeout(&self) -> bool {
        matches!(self.kind, ErrorKind::Timeout)
    }

    /// This error and its causes, for a log line: see [`ErrorChain`].
    #[must_use]
    pub fn chain(&self) -> ErrorChain<'_> {
        ErrorChain(self)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(policy) = &self.policy {
            write!(f, "policy {policy:?}: ")?;
        }
        match &self.kind {
            ErrorKind::CostExceedsLimit { cost, limit } => write!(
                f,
                "cost {cost} exceeds the policy's limit of {limit} and can never be allowed"
            ),
            ErrorKind::ZeroCost => f.write_str("cost must be at least 1; use peek to read a key"),
            // The cause is the `source`, printed by whoever prints the
            // chain (see `ErrorChain`), so it is never printed twice.
            ErrorKind::Backend => f.write_str("rate-limit backend failed"),
            ErrorKind::Timeout => f.write_str("rate-limit backend timed out"),
            ErrorKind::Data => f.write_str("the key holds a value this limiter did not write"),
            ErrorKind::Invalid => f.write_str("invalid rate-limit call"),
        }
    }
}

impl StdError for Error {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn StdError + 'static))
    }
}

/// Prints an error and each of its causes, separated by `": "`, each
/// once: `Display` of the errors of this workspace leaves the cause to
/// [`source`](StdError::source), as the Rust API guidelines ask, and this
/// is how a log line shows the whole story.
///
/// # Examples
///
/// ```
/// use ratelimit_core::{Error, ErrorChain};
///
/// let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "Connection refused");
/// let err = Error::backend(io);
/// assert_eq!(err.to_string(), "rate-limit backend failed");
/// assert_eq!(
///     ErrorChain(&err).to_string(),
///     "rate-limit backend failed: Connection refused"
/// );
/// ```
#[derive(Clone, Copy)]
pub struct ErrorChain<'a>(pub &'a (dyn StdError + 'static));

impl fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut previous = self.0.to_string();
        let mut next = self.0.source();
        while let Some(cause) = next {
            let text = cause.to_string();
            // Some errors (io's among them) repeat their inner error's text
            // in their own: print each distinct text once.
            if !previous.ends_with(&text) {
                write!(f, ": {text}")?;
            }
            previous = text;
            next = cause.source();
        }
        Ok(())
    }
}

impl fmt::Debug for ErrorChain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// A policy that cannot be built: names the field, what was given and what
/// is accepted.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use ratelimit_core::FixedWindow;
///
/// let err = FixedWindow::new(0, Duration::from_secs(30)).unwrap_err();
/// assert_eq!(err.field(), "limit");
/// assert_eq!(err.to_string(), "invalid `limit`: 0 is out of range; expected an integer from 1 to 4294967295");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    field: &'static str,
    message: String,
}

impl ConfigError {
    /// An error about `field`, with a message that says what was wrong and
    /// what is accepted.
    #[must_use]
    pub fn new(field: &'static str, message: impl Into<String>) -> Self {
        Self {
            field,
            message: message.into(),
        }
    }

    /// The configuration field at fault.
    #[must_use]
    pub fn field(&self) -> &'static str {
        self.field
    }

    /// What was wrong, without the field name.
    #[must_use]
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid `{}`: {}", self.field, self.message)
    }
}

impl StdError for ConfigError {}
