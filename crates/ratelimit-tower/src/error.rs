//! Errors of the layer's configuration.

use std::error::Error as StdError;
use std::fmt;

/// A grouping prefix length outside the address family's range.
///
/// # Examples
///
/// ```
/// use ratelimit_tower::ClientIp;
///
/// let err = ClientIp::new().with_ipv6_prefix_len(129).unwrap_err();
/// assert_eq!(err.len(), 129);
/// assert_eq!(err.to_string(), "IPv6 prefix length 129 is out of range; expected 1 to 128");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PrefixLenError {
    len: u8,
    max: u8,
}

impl PrefixLenError {
    pub(crate) fn new(len: u8, max: u8) -> Self {
        Self { len, max }
    }

    /// The prefix length that was given.
    ///
    /// # Examples
    ///
    /// ```
    /// let err = ratelimit_tower::ClientIp::new().with_ipv4_prefix_len(0).unwrap_err();
    /// assert_eq!(err.len(), 0);
    /// ```
    #[must_use]
    #[allow(clippy::len_without_is_empty)] // a prefix length, not a collection
    pub fn len(&self) -> u8 {
        self.len
    }
}

impl fmt::Display for PrefixLenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let family = if self.max == 32 { "IPv4" } else { "IPv6" };
        write!(
            f,
            "{family} prefix length {} is out of range; expected 1 to {}",
            self.len, self.max
        )
    }
}

impl StdError for PrefixLenError {}
