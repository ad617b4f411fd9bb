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

/// Maps user keys to the Redis key of a policy set: one hash per (set,
/// key), `<prefix>s:{<key>}`, escaped as [`KeyLayout`] escapes, so one key
/// is trivially in one slot of a Redis Cluster. Each policy is a field of
/// the hash ([`set_fields`]).
#[derive(Debug, Clone)]
pub(crate) struct SetKeyLayout {
    head: Vec<u8>,
}

impl SetKeyLayout {
    pub(crate) fn new(prefix: &str) -> Self {
        Self {
            head: format!("{prefix}s:{{").into_bytes(),
        }
    }

    /// The Redis key holding `key`'s state.
    ///
    /// The empty key is written `%`: Redis Cluster hashes a key whose
    /// braces enclose nothing whole, which would put every empty key's
    /// hash in the slot of its whole name. A lone `%` is no escape's
    /// output, so the mapping stays injective.
    pub(crate) fn redis_key(&self, key: &[u8]) -> Vec<u8> {
        if key.is_empty() {
            let mut out = self.head.clone();
            out.extend_from_slice(b"%}");
            out
        } else {
            tagged(&self.head, key)
        }
    }
}

/// The hash fields of a set's policies, in set order: `<name>:<tag>`, the
/// tag the algorithm's key tag, `tbs` for a token bucket keeping a refund
/// ledger (its state is longer) and `cc` for a concurrency policy's
/// leases. A change of algorithm thus reads as a field never written,
/// while a changed limit (or a reload keeping names and algorithms) keeps
/// the state. Policy names hold no `:`, so the fields stay distinct.
pub(crate) fn set_fields(set: &PolicySet) -> Vec<String> {
    set.limits()
        .iter()
        .map(|l| {
            let tag = match l.limit() {
                Limit::Rate(_) if l.keeps_ledger() => "tbs",
                Limit::Rate(p) => p.algorithm().key_tag(),
                Limit::Concurrency(_) => "cc",
            };
            format!("{}:{tag}", l.name())
        })
        .collect()
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
    fn set_keys_have_a_nonempty_tag_and_stay_distinct() {
        let layout = SetKeyLayout::new("rl:");
        let mut seen = HashSet::new();
        for key in awkward_keys().into_iter().chain([b"%".to_vec()]) {
            let redis_key = layout.redis_key(&key);
            assert!(!tag(&redis_key).is_empty(), "an empty hash tag for {key:?}");
            assert!(seen.insert(redis_key), "collision for {key:?}");
        }
        assert_eq!(layout.redis_key(b""), b"rl:s:{%}".to_vec());
        assert_eq!(layout.redis_key(b"a{b"), b"rl:s:{a%7Bb}".to_vec());
    }

    #[test]
    fn set_fields_name_the_policy_and_its_layout() {
        let set = PolicySet::new(vec![
            ratelimit_core::NamedLimit::new(
                "a",
                Policy::fixed_window(1, Duration::from_secs(1)).unwrap(),
            )
            .unwrap(),
            ratelimit_core::NamedLimit::new(
                "t",
                Policy::token_bucket(1, 1, Duration::from_secs(1)).unwrap(),
            )
            .unwrap()
            .settling(),
            ratelimit_core::NamedLimit::new(
                "b",
                ratelimit_core::Concurrency::new(1, Duration::from_secs(1)).unwrap(),
            )
            .unwrap(),
        ])
        .unwrap();
        assert_eq!(set_fields(&set), ["a:fw", "t:tbs", "b:cc"]);
    }

    #[test]
    fn prefixes_with_braces_are_rejected() {
        assert!(validate_prefix("app:").is_ok());
        let err = validate_prefix("app{1}:").unwrap_err();
        assert_eq!(err.field(), "prefix");
    }
}
