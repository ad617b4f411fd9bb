//! What a request is counted against.

use http::request::Parts;

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
}

impl<F> KeyExtractor for F
where
    F: Fn(&Parts) -> Option<Vec<u8>> + Send + Sync + 'static,
{
    fn extract(&self, parts: &Parts) -> Option<Vec<u8>> {
        self(parts)
    }
}
