//! Where a limiter key's state lives in Redis.

use ratelimit_core::{ConfigError, Limit, Policy, PolicySet};

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
        tagged(&self.head, key)
    }
}

/// `head`, the escaped `key` and the closing brace.
fn tagged(head: &[u8], key: &[u8]) -> Vec<u8> {
    let escapes = key
        .iter()
        .filter(|b| matches!(b, b'%' | b'{' | b'}'))
        .count();
    let mut out = Vec::with_capacity(head.len() + key.len() + 2 * escapes + 1);
    out.extend_from_slice(head);
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

/// Maps user keys to the Redis keys of a policy set, one per policy:
/// `<prefix>s:<policy name>:<tag>:{<key>}`, escaped as [`KeyLayout`]
/// escapes. Policy names hold no brace, so the escaped user key is the
/// only hash tag: all the keys of one (set, key) share a slot, and one
/// script call may touch them all on Redis Cluster. The tag is the
/// algorithm's key tag, `tbs` for a token bucket keeping a refund ledger
/// (its state is longer) and `cc` for a concurrency policy's leases, so a
/// key is never read with another layout after a configuration change.
#[derive(Debug, Clone)]
pub(crate) struct SetKeyLayout {
    heads: Vec<Vec<u8>>,
}

impl SetKeyLayout {
    pub(crate) fn new(prefix: &str, set: &PolicySet) -> Self {
        let heads = set
            .limits()
            .iter()
            .map(|l| {
                let tag = match l.limit() {
                    Limit::Rate(_) if l.keeps_ledger() => "tbs",
                    Limit::Rate(p) => p.algorithm().key_tag(),
                    Limit::Concurrency(_) => "cc",
                };
                format!("{prefix}s:{}:{tag}:{{", l.name()).into_bytes()
            })
            .collect();
        Self { heads }
    }

    /// The Redis keys holding `key`'s state, one per policy in set order.
    ///
    /// The empty key is written `%`: Redis Cluster hashes a key whose
    /// braces enclose nothing whole, which would scatter the set's keys
    /// over slots. A lone `%` is no escape's output, so the mapping stays
    /// injective.
    pub(crate) fn redis_keys(&self, key: &[u8]) -> Vec<Vec<u8>> {
        self.heads
            .iter()
            .map(|head| {
                if key.is_empty() {
                    let mut out = head.clone();
                    out.extend_from_slice(b"%}");
                    out
                } else {
                    tagged(head, key)
                }
            })
            .collect()
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
    fn set_keys_share_one_nonempty_tag_and_stay_distinct() {
        let set = PolicySet::new(vec![
            ratelimit_core::NamedLimit::new(
                "a",
                Policy::fixed_window(1, Duration::from_secs(1)).unwrap(),
            )
            .unwrap(),
            ratelimit_core::NamedLimit::new(
                "b",
                ratelimit_core::Concurrency::new(1, Duration::from_secs(1)).unwrap(),
            )
            .unwrap(),
        ])
        .unwrap();
        let layout = SetKeyLayout::new("rl:", &set);
        let mut seen = HashSet::new();
        for key in awkward_keys().into_iter().chain([b"%".to_vec()]) {
            let keys = layout.redis_keys(&key);
            assert!(!tag(&keys[0]).is_empty(), "an empty hash tag for {key:?}");
            assert_eq!(tag(&keys[0]), tag(&keys[1]));
            assert!(seen.insert(keys[0].clone()), "collision for {key:?}");
        }
        assert_eq!(layout.redis_keys(b"")[1], b"rl:s:b:cc:{%}".to_vec());
    }

    #[test]
    fn prefixes_with_braces_are_rejected() {
        assert!(validate_prefix("app:").is_ok());
        let err = validate_prefix("app{1}:").unwrap_err();
        assert_eq!(err.field(), "prefix");
    }
}
