//! Where a limiter key's state lives in Redis.

use ratelimit_core::{ConfigError, Policy};

/// Maps user keys (any bytes) to Redis keys `<prefix><algorithm>:{<key>}`.
///
/// The user key is escaped so that it contains no brace: `%` becomes `%25`,
/// `{` becomes `%7B` and `}` becomes `%7D`. The escape is injective, so two
/// distinct user keys never share a Redis key, and the braces around it are
/// the first and only ones in the Redis key (the prefix may not contain any),
/// so the whole escaped key is the cluster hash tag: one limiter key is one
/// Redis key in one slot, whatever bytes it holds. The algorithm's
/// [`key_tag`](ratelimit_core::AlgorithmName::key_tag) is part of the key
/// so that a key is never read with another algorithm's layout after a
/// configuration change.
#[derive(Debug, Clone)]
pub(crate) struct KeyLayout {
    head: Vec<u8>,
}

impl KeyLayout {
    pub(crate) fn new(prefix: &str, policy: &Policy) -> Self {
        let algorithm = policy.algorithm().key_tag();
        let mut head = Vec::with_capacity(prefix.len() + algorithm.len() + 2);
        head.extend_from_slice(prefix.as_bytes());
        head.extend_from_slice(algorithm.as_bytes());
        head.extend_from_slice(b":{");
        Self { head }
    }

    /// The Redis key holding `key`'s state.
    pub(crate) fn redis_key(&self, key: &[u8]) -> Vec<u8> {
        let escapes = key
            .iter()
            .filter(|b| matches!(b, b'%' | b'{' | b'}'))
            .count();
        let mut out = Vec::with_capacity(self.head.len() + key.len() + 2 * escapes + 1);
        out.extend_from_slice(&self.head);
        for &b in key {
            match b {
                b'%' => out.extend_from_slice(b"%25"),
                b'{' => out.extend_from_slice(b"%7B"),
                b'}' => out.extend_from_slice(b"%7D"),
                _ => out.push(b),
            }
        }
        out.push(b'}');
        out
    }
}

/// Checks a key prefix: braces would move the cluster hash tag into the
/// prefix and put every key in one slot.
pub(crate) fn validate_prefix(prefix: &str) -> Result<(), ConfigError> {
    if prefix.contains(['{', '}']) {
        return Err(ConfigError::new(
            "prefix",
            format!(
                "{prefix:?} contains a brace; braces would make the prefix the Redis Cluster \
                 hash tag and put every key in one slot"
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::time::Duration;

    use ratelimit_conformance::strategy::awkward_keys;

    use super::*;

    fn layout() -> KeyLayout {
        KeyLayout::new(
            "rl:",
            &Policy::fixed_window(1, Duration::from_secs(1)).unwrap(),
        )
    }

    /// The hash tag Redis Cluster would use: between the first `{` and the
    /// first `}` after it.
    fn tag(key: &[u8]) -> &[u8] {
        let open = key.iter().position(|&b| b == b'{').unwrap();
        let close = key[open + 1..].iter().position(|&b| b == b'}').unwrap();
        &key[open + 1..open + 1 + close]
    }

    #[test]
    fn awkward_keys_stay_distinct_and_tagged_whole() {
        let layout = layout();
        let mut seen = HashSet::new();
        for key in awkward_keys() {
            let redis_key = layout.redis_key(&key);
            assert!(redis_key.starts_with(b"rl:fw:{"));
            assert!(redis_key.ends_with(b"}"));
            // The tag is the whole escaped key: nothing after it.
            let t = tag(&redis_key);
            assert_eq!(redis_key.len(), b"rl:fw:{".len() + t.len() + 1);
            assert!(seen.insert(redis_key), "collision for {key:?}");
        }
    }

    #[test]
    fn escape_is_injective_on_escape_sequences() {
        let layout = layout();
        assert_ne!(layout.redis_key(b"%7B"), layout.redis_key(b"{"));
        assert_eq!(layout.redis_key(b"{%}"), b"rl:fw:{%7B%25%7D}".to_vec());
    }

    #[test]
    fn prefixes_with_braces_are_rejected() {
        assert!(validate_prefix("app:").is_ok());
        let err = validate_prefix("app{1}:").unwrap_err();
        assert_eq!(err.field(), "prefix");
    }
}
