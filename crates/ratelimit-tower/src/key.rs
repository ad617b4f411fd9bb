//! What a request is counted against.

use std::fmt;
use std::ops::Deref;

use http::request::Parts;
use smallvec::SmallVec;

/// A request's rate-limit key: bytes held inline up to 56 (every client
/// network's text fits), on the heap beyond, so the layer allocates
/// nothing for the key of a [`ClientIp`](crate::ClientIp).
///
/// Its `Debug` shows the length only: a key is a caller's identity.
///
/// # Examples
///
/// ```
/// use ratelimit_tower::Key;
///
/// let key = Key::from_slice(b"203.0.113.7/32");
/// assert_eq!(&*key, b"203.0.113.7/32");
/// assert_eq!(Key::from(b"k-123".to_vec()), Key::from_slice(b"k-123"));
/// assert_eq!(format!("{key:?}"), "Key(<14 bytes>)");
/// ```
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct Key(SmallVec<[u8; 56]>);

impl Key {
    /// A key holding a copy of `bytes`.
    #[must_use]
    pub fn from_slice(bytes: &[u8]) -> Self {
        Self(SmallVec::from_slice(bytes))
    }

    /// The key's bytes.
    #[must_use]
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl Deref for Key {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.0
    }
}

impl AsRef<[u8]> for Key {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

/// Short keys move inline (the vector is freed); long ones keep their
/// heap buffer, uncopied.
impl From<Vec<u8>> for Key {
    fn from(bytes: Vec<u8>) -> Self {
        Self(SmallVec::from_vec(bytes))
    }
}

impl From<&[u8]> for Key {
    fn from(bytes: &[u8]) -> Self {
        Self::from_slice(bytes)
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Key(<{} bytes>)", self.0.len())
    }
}

/// Names the rate-limit key of a request.
///
/// Returning `None` means the request cannot be attributed (no peer
/// address, no API key, ...); the layer then answers with its configured
/// missing-key response instead of calling the service. Closures
/// `Fn(&Parts) -> Option<Vec<u8>>` are extractors.
///
/// # Examples
///
/// ```
/// use http::request::Parts;
/// use ratelimit_tower::KeyExtractor;
///
/// let by_api_key = |parts: &Parts| {
///     parts.headers.get("x-api-key").map(|v| v.as_bytes().to_vec())
/// };
/// let (parts, ()) = http::Request::builder()
///     .header("x-api-key", "k-123")
///     .body(())
///     .unwrap()
///     .into_parts();
/// assert_eq!(by_api_key.extract(&parts), Some(b"k-123".to_vec()));
/// ```
pub trait KeyExtractor: Send + Sync + 'static {
    /// The key of the request described by `parts`, or `None` when it has
    /// none.
    fn extract(&self, parts: &Parts) -> Option<Vec<u8>>;

    /// [`extract`](Self::extract) as a [`Key`], which the layer calls: an
    /// extractor whose keys are short overrides it to build them without
    /// allocating. The same bytes as `extract`, always.
    ///
    /// # Examples
    ///
    /// ```
    /// use http::request::Parts;
    /// use ratelimit_tower::{Key, KeyExtractor};
    ///
    /// let by_api_key = |parts: &Parts| {
    ///     parts.headers.get("x-api-key").map(|v| v.as_bytes().to_vec())
    /// };
    /// let (parts, ()) = http::Request::builder()
    ///     .header("x-api-key", "k-123")
    ///     .body(())
    ///     .unwrap()
    ///     .into_parts();
    /// assert_eq!(by_api_key.extract_key(&parts), Some(Key::from_slice(b"k-123")));
    /// ```
    fn extract_key(&self, parts: &Parts) -> Option<Key> {
        self.extract(parts).map(Key::from)
    }
}

impl<F> KeyExtractor for F
where
    F: Fn(&Parts) -> Option<Vec<u8>> + Send + Sync + 'static,
{
    fn extract(&self, parts: &Parts) -> Option<Vec<u8>> {
        self(parts)
    }
}
