//! A value that must never reach a log line.

use std::fmt;

use serde::Deserialize;

/// A secret (an API key, a password): its [`Debug`](fmt::Debug) and
/// [`Display`](fmt::Display) print `[redacted]`, so deriving `Debug` on a
/// struct that holds one, or logging it by mistake, leaks nothing. The
/// value comes out only through [`expose`](Self::expose), which a reader
/// can search for.
///
/// # Examples
///
/// ```
/// use ratelimit_axum_example::Secret;
///
/// let key = Secret::new(String::from("sk-live-123"));
/// assert_eq!(format!("{key:?} {key}"), "[redacted] [redacted]");
/// assert_eq!(key.expose(), "sk-live-123");
/// ```
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret<T>(T);

impl<T> Secret<T> {
    /// Wraps `value`.
    ///
    /// # Examples
    ///
    /// ```
    /// let pin = ratelimit_axum_example::Secret::new(1234);
    /// assert_eq!(*pin.expose(), 1234);
    /// ```
    #[must_use]
    pub const fn new(value: T) -> Self {
        Self(value)
    }

    /// The secret itself, for the one place that must send it.
    ///
    /// # Examples
    ///
    /// ```
    /// let key = ratelimit_axum_example::Secret::new("k");
    /// assert_eq!(*key.expose(), "k");
    /// ```
    #[must_use]
    pub const fn expose(&self) -> &T {
        &self.0
    }
}

impl<T> fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl<T> fmt::Display for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}
