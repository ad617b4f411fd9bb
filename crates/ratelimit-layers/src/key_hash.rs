//! A key as it may appear in logs: hashed, never raw.

use std::collections::hash_map::RandomState;
use std::fmt;
use std::hash::BuildHasher;
use std::sync::OnceLock;

/// Shows a rate-limit key as 16 hex digits of a keyed hash (SipHash with a
/// random key drawn once per process): the same key shows the same digits
/// in every log line of a process, so one client's requests can be
/// followed, but the digits cannot be turned back into the key (an IP
/// address, an API key) nor matched against a guess from outside the
/// process.
///
/// The hash is computed only when the value is formatted, so a disabled
/// log line costs nothing.
///
/// # Examples
///
/// ```
/// use ratelimit_layers::KeyHash;
///
/// let shown = KeyHash(b"203.0.113.7").to_string();
/// assert_eq!(shown.len(), 16);
/// assert!(!shown.contains("203"));
/// assert_eq!(shown, KeyHash(b"203.0.113.7").to_string(), "stable within a process");
/// assert_ne!(shown, KeyHash(b"203.0.113.8").to_string());
/// ```
#[derive(Clone, Copy)]
pub struct KeyHash<'a>(pub &'a [u8]);

impl KeyHash<'_> {
    /// The hash as a number.
    #[must_use]
    pub fn value(&self) -> u64 {
        static SECRET: OnceLock<RandomState> = OnceLock::new();
        SECRET.get_or_init(RandomState::new).hash_one(self.0)
    }
}

impl fmt::Display for KeyHash<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.value())
    }
}

impl fmt::Debug for KeyHash<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}
