//! Who is calling: an API key's tier, or the anonymous tier by client IP.

use std::collections::HashMap;

use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use hmac::{Hmac, Mac as _};
use ratelimit_tower::{ClientIp, KeyExtractor as _};
use sha2::Sha256;

use super::config::KeyHash;
use crate::Secret;

/// The shortest `key_secret` accepted, in bytes.
pub const MIN_SECRET_LEN: usize = 16;

/// Hashes API keys with HMAC-SHA256 under a secret, so neither the
/// configuration nor the store nor a log ever holds a key: a leaked
/// configuration file gives no key, and without the secret a list of
/// hashes cannot be checked against guesses.
///
/// # Examples
///
/// ```
/// use ratelimit_axum_example::{KeyHasher, Secret};
///
/// let hasher = KeyHasher::new(Secret::new("a secret of 16+ bytes".to_owned())).unwrap();
/// let hash = hasher.hex(b"sk-live-123");
/// assert_eq!(hash.len(), 64);
/// assert_eq!(hash, hasher.hex(b"sk-live-123"));
/// assert_ne!(hash, hasher.hex(b"sk-live-124"));
/// assert!(KeyHasher::new(Secret::new("short".to_owned())).is_err());
/// ```
#[derive(Clone)]
pub struct KeyHasher {
    mac: Hmac<Sha256>,
}

impl std::fmt::Debug for KeyHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyHasher([redacted])")
    }
}

impl KeyHasher {
    /// A hasher keyed with `secret`.
    ///
    /// # Errors
    ///
    /// When the secret is shorter than [`MIN_SECRET_LEN`] bytes.
    pub fn new(secret: Secret<String>) -> anyhow::Result<Self> {
        let secret = secret.expose().as_bytes();
        if secret.len() < MIN_SECRET_LEN {
            anyhow::bail!(
                "the key secret (`gateway.key_secret` or RATELIMIT_KEY_SECRET) must be at \
                 least {MIN_SECRET_LEN} bytes"
            );
        }
        // HMAC takes keys of any length.
        let mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC accepts any key length");
        Ok(Self { mac })
    }

    /// The hash of `key`.
    #[must_use]
    pub fn hash(&self, key: &[u8]) -> KeyHash {
        let mut mac = self.mac.clone();
        mac.update(key);
        mac.finalize().into_bytes().into()
    }

    /// The hash of `key` in lowercase hex, as `[[keys]] hash` holds it.
    #[must_use]
    pub fn hex(&self, key: &[u8]) -> String {
        self.hash(key).iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// A caller, resolved: its tier and the key its counts are kept under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The tier's name.
    pub tier: String,
    /// The limiter key: `key:` and the key's hash, or `ip:` and the client
    /// IP's network.
    pub key: Vec<u8>,
}

/// Why a request has no caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthError {
    /// An `Authorization` header that is not `Bearer <key>`.
    Malformed,
    /// A key that is not configured.
    UnknownKey,
    /// No `Authorization` and no peer address to count by.
    NoClientAddress,
}

/// The keys of the configuration and how to hash what a caller sends.
#[derive(Debug, Clone)]
pub(crate) struct Keys {
    pub(crate) hasher: Option<KeyHasher>,
    pub(crate) tiers: HashMap<KeyHash, String>,
}

/// The longest key accepted: a longer header is refused unhashed.
const MAX_KEY_LEN: usize = 512;

/// The caller of `parts`: `Authorization: Bearer <key>` names a key's tier;
/// without the header, the anonymous tier by client IP.
pub(crate) fn identify(
    parts: &Parts,
    keys: &Keys,
    client_ip: &ClientIp,
) -> Result<Caller, AuthError> {
    let mut values = parts.headers.get_all(AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        let ip = client_ip.extract(parts).ok_or(AuthError::NoClientAddress)?;
        let mut key = b"ip:".to_vec();
        key.extend_from_slice(&ip);
        return Ok(Caller {
            tier: super::ANONYMOUS.to_owned(),
            key,
        });
    };
    if values.next().is_some() {
        return Err(AuthError::Malformed);
    }
    let token = bearer(value.as_bytes()).ok_or(AuthError::Malformed)?;
    let hasher = keys.hasher.as_ref().ok_or(AuthError::UnknownKey)?;
    let hash = hasher.hash(token);
    let tier = keys.tiers.get(&hash).ok_or(AuthError::UnknownKey)?;
    let mut key = b"key:".to_vec();
    key.extend_from_slice(&hash);
    Ok(Caller {
        tier: tier.clone(),
        key,
    })
}

/// The token of `Bearer <token>` (the scheme in any case, RFC 9110), when
/// it is a token68 of at most [`MAX_KEY_LEN`] bytes.
fn bearer(value: &[u8]) -> Option<&[u8]> {
    let (scheme, rest) = value.split_at_checked(7)?;
    if !scheme.eq_ignore_ascii_case(b"bearer ") {
        return None;
    }
    let token = rest.trim_ascii();
    let token68 = |b: &u8| b.is_ascii_alphanumeric() || b"-._~+/=".contains(b);
    (!token.is_empty() && token.len() <= MAX_KEY_LEN && token.iter().all(token68)).then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_tokens_are_token68() {
        assert_eq!(bearer(b"Bearer sk-123"), Some(&b"sk-123"[..]));
        assert_eq!(bearer(b"bearer  sk-123 "), Some(&b"sk-123"[..]));
        assert_eq!(bearer(b"Basic dXNlcjpwYXNz"), None);
        assert_eq!(bearer(b"Bearer "), None);
        assert_eq!(bearer(b"Bearer a b"), None);
        assert_eq!(bearer(b"Bearer"), None);
        assert_eq!(bearer(b"Bearer \xff"), None);
        assert!(bearer(format!("Bearer {}", "a".repeat(MAX_KEY_LEN + 1)).as_bytes()).is_none());
    }

    #[test]
    fn hashes_are_keyed() {
        let a = KeyHasher::new(Secret::new("0123456789abcdef".into())).unwrap();
        let b = KeyHasher::new(Secret::new("0123456789abcdeg".into())).unwrap();
        assert_ne!(a.hash(b"k"), b.hash(b"k"));
        // RFC 4231 test case 2 (key "Jefe" is too short for us, so compare
        // against a direct HMAC instead).
        let mut mac = Hmac::<Sha256>::new_from_slice(b"0123456789abcdef").unwrap();
        mac.update(b"k");
        let direct: [u8; 32] = mac.finalize().into_bytes().into();
        assert_eq!(a.hash(b"k"), direct);
    }
}
