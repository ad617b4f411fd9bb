//! The gateway profile's configuration: `[gateway]`, `[tiers.<name>]` and
//! `[[keys]]`.

use std::collections::BTreeMap;

use anyhow::{bail, Context as _};
use ratelimit_core::{Limit, LimitConfig, NamedLimit, PolicySet};
use serde::Deserialize;

use crate::Secret;

/// The tier of callers without an `Authorization` header.
pub const ANONYMOUS: &str = "anonymous";

/// The policy a tier's token estimate is charged to.
pub const TOKENS: &str = "tokens";

/// `[gateway]`: what the profile needs besides its tiers and keys.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewaySettings {
    /// The HMAC-SHA256 secret API keys are hashed with (at least 16
    /// bytes; `RATELIMIT_KEY_SECRET` overrides it). Never printed.
    #[serde(default)]
    pub key_secret: Option<Secret<String>>,
}

/// `[tiers.<name>]`: one tier's policy set and model budget.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TierConfig {
    /// The most tokens one answer may hold: passed to the model, and
    /// reserved (with the prompt's) before it is called.
    pub max_output_tokens: u64,
    /// The tier's policies, checked all or nothing (`[[tiers.<name>.limits]]`,
    /// in `ratelimit-core`'s `PolicySet` form). A policy named `tokens`
    /// (a rate policy with `settle = true`) is charged the token estimate
    /// and settled with the actual usage; a concurrency policy takes one
    /// lease per answer; every other policy is charged 1 per request.
    pub limits: Vec<LimitConfig>,
}

/// `[[keys]]`: one API key, by its hash.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyConfig {
    /// The key's HMAC-SHA256 under `gateway.key_secret`, in hex (64
    /// digits): `ratelimit-axum-example hash-key` prints it. The key itself
    /// is never stored.
    pub hash: String,
    /// The tier the key belongs to.
    pub tier: String,
    /// A label for logs (e.g. the customer); the key and its hash are
    /// never logged in full.
    #[serde(default)]
    pub label: Option<String>,
}

impl std::fmt::Debug for ApiKeyConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiKeyConfig")
            .field("hash", &format_args!("{}…", prefix(&self.hash)))
            .field("tier", &self.tier)
            .field("label", &self.label)
            .finish()
    }
}

/// The first 8 characters of a hash: enough to tell keys apart in a log.
pub(crate) fn prefix(hash: &str) -> &str {
    hash.get(..8).unwrap_or(hash)
}

/// One tier, checked: its set and the position of its `tokens` policy.
#[derive(Debug, Clone)]
pub struct TierSpec {
    /// The tier's name.
    pub name: String,
    /// Its policies.
    pub set: PolicySet,
    /// The position of the `tokens` policy in `set`.
    pub tokens: usize,
    /// The most tokens one answer may hold.
    pub max_output_tokens: u64,
}

/// A key's hash, decoded.
pub type KeyHash = [u8; 32];

/// The gateway profile, checked. Its `Debug` shows each key's hash by its
/// first 8 hex digits only, as the config's does.
#[derive(Clone)]
#[non_exhaustive]
pub struct Profile {
    /// The tiers, sorted by name.
    pub tiers: Vec<TierSpec>,
    /// Each key's hash and tier.
    pub keys: Vec<(KeyHash, String)>,
}

impl std::fmt::Debug for Profile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        struct Keys<'a>(&'a [(KeyHash, String)]);
        impl std::fmt::Debug for Keys<'_> {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_list()
                    .entries(self.0.iter().map(|(hash, tier)| {
                        let head: String = hash[..4].iter().map(|b| format!("{b:02x}")).collect();
                        (format!("{head}…"), tier)
                    }))
                    .finish()
            }
        }
        f.debug_struct("Profile")
            .field("tiers", &self.tiers)
            .field("keys", &Keys(&self.keys))
            .finish()
    }
}

/// Checks the tiers and keys of the profile and builds each tier's set.
///
/// # Errors
///
/// Naming the tier, policy or key at fault: no `anonymous` tier, a tier
/// without a settling `tokens` rate policy, a `max_output_tokens` of zero
/// or above the tokens limit, a key hash that is not 64 hex digits, a key
/// of an unknown tier, or the same key listed twice.
pub fn check_profile(
    tiers: &BTreeMap<String, TierConfig>,
    keys: &[ApiKeyConfig],
) -> anyhow::Result<Profile> {
    if !tiers.contains_key(ANONYMOUS) {
        bail!("the gateway profile needs a `[tiers.{ANONYMOUS}]` for callers without a key");
    }
    let mut specs = Vec::with_capacity(tiers.len());
    for (name, tier) in tiers {
        let limits = tier
            .limits
            .iter()
            .cloned()
            .map(NamedLimit::try_from)
            .collect::<Result<Vec<_>, _>>()
            .with_context(|| format!("invalid `tiers.{name}.limits`"))?;
        let set =
            PolicySet::new(limits).with_context(|| format!("invalid `tiers.{name}.limits`"))?;
        let tokens = set.index_of(TOKENS).with_context(|| {
            format!("`tiers.{name}` needs a policy named \"{TOKENS}\" for the token budget")
        })?;
        let policy = &set.limits()[tokens];
        let Limit::Rate(rate) = policy.limit() else {
            bail!("`tiers.{name}`: the \"{TOKENS}\" policy must be a rate policy, not concurrency");
        };
        if !policy.settles() {
            bail!(
                "`tiers.{name}`: the \"{TOKENS}\" policy needs `settle = true`: it is reserved \
                 with an estimate and settled with the actual usage"
            );
        }
        if tier.max_output_tokens == 0 || tier.max_output_tokens >= rate.limit() {
            bail!(
                "invalid `tiers.{name}.max_output_tokens`: {} must be at least 1 and below the \
                 \"{TOKENS}\" limit {}, so that a prompt fits too",
                tier.max_output_tokens,
                rate.limit()
            );
        }
        specs.push(TierSpec {
            name: name.clone(),
            set,
            tokens,
            max_output_tokens: tier.max_output_tokens,
        });
    }
    let mut hashes: Vec<(KeyHash, String)> = Vec::with_capacity(keys.len());
    for (i, key) in keys.iter().enumerate() {
        let hash = decode_hash(&key.hash)
            .with_context(|| format!("invalid `keys[{i}].hash`: expected 64 hex digits"))?;
        if key.tier == ANONYMOUS || !tiers.contains_key(&key.tier) {
            bail!(
                "invalid `keys[{i}].tier`: {:?} is not a tier for keys (tiers: {})",
                key.tier,
                tiers
                    .keys()
                    .filter(|t| *t != ANONYMOUS)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        if hashes.iter().any(|(h, _)| *h == hash) {
            bail!("invalid `keys[{i}].hash`: the same key is listed twice");
        }
        hashes.push((hash, key.tier.clone()));
    }
    Ok(Profile {
        tiers: specs,
        keys: hashes,
    })
}

fn decode_hash(hex: &str) -> Option<KeyHash> {
    let bytes = hex.as_bytes();
    if bytes.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in bytes.chunks_exact(2).enumerate() {
        let digit = |b: u8| (b as char).to_digit(16);
        out[i] = u8::try_from(digit(pair[0])? * 16 + digit(pair[1])?).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_decode_from_64_hex_digits_only() {
        let hex = "00ff".repeat(16);
        let hash = decode_hash(&hex).unwrap();
        assert_eq!(hash[..2], [0x00, 0xff]);
        assert_eq!(decode_hash(&hex.to_uppercase()), Some(hash));
        assert_eq!(decode_hash(&hex[..62]), None);
        assert_eq!(decode_hash(&format!("{}zz", &hex[..62])), None);
        assert_eq!(decode_hash(&format!("{}+f", &hex[..62])), None);
    }

    #[test]
    fn a_profile_debugs_key_hashes_by_their_first_digits_only() {
        let hash = [0xab; 32];
        let profile = Profile {
            tiers: Vec::new(),
            keys: vec![(hash, "pro".to_owned())],
        };
        let text = format!("{profile:?}");
        assert!(text.contains("abababab…") && text.contains("pro"), "{text}");
        assert!(!text.contains(&"ab".repeat(5)), "{text}");
    }
}
