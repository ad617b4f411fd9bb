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

/// Maps user keys to the Redis key of a policy set: one string per (set,
/// key), `<prefix>set:{<key>}`, escaped as [`KeyLayout`] escapes, so one
/// key is trivially in one slot of a Redis Cluster. Each policy is a
/// section of the string, known by its id ([`set_ids`]; the layout is
/// described in `lua/set.lua`).
#[derive(Debug, Clone)]
pub(crate) struct SetKeyLayout {
    head: Vec<u8>,
}

impl SetKeyLayout {
    pub(crate) fn new(prefix: &str) -> Self {
        Self {
            head: format!("{prefix}set:{{").into_bytes(),
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

/// The tag of a policy's section: how its state is laid out.
const fn section_tag(limit: &ratelimit_core::NamedLimit) -> u64 {
    match limit.limit() {
        Limit::Rate(Policy::FixedWindow(_)) => 1,
        Limit::Rate(Policy::SlidingWindow(_)) => 2,
        Limit::Rate(Policy::TokenBucket(_)) if limit.keeps_ledger() => 4,
        Limit::Rate(Policy::TokenBucket(_)) => 3,
        Limit::Concurrency(_) => 5,
    }
}

/// The ids of a set's policies' sections, in set order: a 49-bit hash of
/// the name (FNV-1a, the same in every process and release) times 8 plus
/// the tag of the section's layout (1 fixed window, 2 sliding window, 3
/// token bucket, 4 token bucket keeping a refund ledger, 5 concurrency).
/// Below 2^52, so exact in a double. A renamed policy or a change of
/// algorithm thus reads as a section never written, while a changed limit
/// (or a reload keeping names and algorithms) keeps the state.
pub(crate) fn set_ids(set: &PolicySet) -> Vec<u64> {
    set.limits()
        .iter()
        .map(|l| {
            let hash = l.name().bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
                (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
            });
            ((hash & ((1 << 49) - 1)) << 3) | section_tag(l)
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
        assert_eq!(layout.redis_key(b""), b"rl:set:{%}".to_vec());
        assert_eq!(layout.redis_key(b"a{b"), b"rl:set:{a%7Bb}".to_vec());
    }

    #[test]
    fn set_ids_hash_the_name_and_tag_the_layout() {
        let named = |name: &str, limit: Limit| match limit {
            Limit::Rate(p) => ratelimit_core::NamedLimit::new(name, p).unwrap(),
            Limit::Concurrency(c) => ratelimit_core::NamedLimit::new(name, c).unwrap(),
        };
        let window = || Limit::Rate(Policy::fixed_window(1, Duration::from_secs(1)).unwrap());
        let bucket = || Limit::Rate(Policy::token_bucket(1, 1, Duration::from_secs(1)).unwrap());
        let set = PolicySet::new(vec![
            named("a", window()),
            named("t", bucket()).settling(),
            named(
                "b",
                Limit::Concurrency(
                    ratelimit_core::Concurrency::new(1, Duration::from_secs(1)).unwrap(),
                ),
            ),
        ])
        .unwrap();
        let ids = set_ids(&set);
        // FNV-1a of "a": 0xaf63dc4c8601ec8c.
        assert_eq!(
            ids[0],
            ((0xaf63_dc4c_8601_ec8c_u64 & ((1 << 49) - 1)) << 3) | 1
        );
        assert_eq!(ids[1] & 7, 4);
        assert_eq!(ids[2] & 7, 5);
        assert!(ids.iter().all(|&id| id < 1 << 52));
        // A changed limit keeps the id; a changed algorithm or name does not.
        let other = PolicySet::new(vec![
            named(
                "a",
                Limit::Rate(Policy::fixed_window(9, Duration::from_secs(60)).unwrap()),
            ),
            named("t", bucket()),
            named("c", window()),
        ])
        .unwrap();
        let other_ids = set_ids(&other);
        assert_eq!(other_ids[0], ids[0]);
        assert_eq!(other_ids[1], ids[1] - 1, "the same name, no ledger");
        assert_ne!(other_ids[2] >> 3, ids[2] >> 3);
    }

    #[test]
    fn prefixes_with_braces_are_rejected() {
        assert!(validate_prefix("app:").is_ok());
        let err = validate_prefix("app{1}:").unwrap_err();
        assert_eq!(err.field(), "prefix");
    }
}
