//! The tiers the gateway runs: each with its limiter and header fields,
//! swappable as a whole.

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use ratelimit_core::{PolicySet, SetLimiter};
use ratelimit_tower::SetHeaders;

use super::config::check_profile;
use super::identity::Keys;
use super::{KeyHasher, SetLimiterFactory};
use crate::Config;

/// One tier, ready to serve.
pub(crate) struct Tier {
    pub(crate) name: String,
    pub(crate) limiter: Arc<dyn SetLimiter>,
    pub(crate) headers: SetHeaders,
    /// The position of the `tokens` policy.
    pub(crate) tokens: usize,
    pub(crate) max_output_tokens: u64,
}

impl Tier {
    /// The set's policies.
    pub(crate) fn set(&self) -> &PolicySet {
        self.limiter.policy_set()
    }

    /// The check's costs: the token estimate on `tokens`, one lease on a
    /// concurrency policy, 1 on every other policy.
    pub(crate) fn costs(&self, estimate: u64) -> Vec<u64> {
        let mut costs = vec![1; self.set().len()];
        costs[self.tokens] = estimate;
        costs
    }

    /// The `tokens` policy's limit.
    pub(crate) fn tokens_limit(&self) -> u64 {
        self.set().limits()[self.tokens].limit().limit()
    }
}

/// Everything the gateway reads per request, built from one configuration.
pub(crate) struct Tiers {
    pub(crate) tiers: HashMap<String, Arc<Tier>>,
    pub(crate) keys: Keys,
}

impl Tiers {
    /// The tiers of `config`, each counting in a limiter `factory` builds,
    /// except that a tier of `previous` with the same name and the same set
    /// keeps its limiter (and with it, in memory, its counters) as is.
    pub(crate) async fn build(
        config: &Config,
        factory: &SetLimiterFactory,
        previous: Option<&Tiers>,
    ) -> anyhow::Result<Self> {
        let profile = check_profile(&config.tiers, &config.keys)?;
        let (specs, hashes) = (profile.tiers, profile.keys);
        let hasher = match &config.gateway.key_secret {
            Some(secret) => Some(KeyHasher::new(secret.clone())?),
            None if hashes.is_empty() => None,
            None => anyhow::bail!(
                "`[[keys]]` needs `gateway.key_secret` (or RATELIMIT_KEY_SECRET): the key \
                 hashes are keyed with it"
            ),
        };
        let mut tiers = HashMap::with_capacity(specs.len());
        for spec in specs {
            let kept = previous
                .and_then(|p| p.tiers.get(&spec.name))
                .filter(|t| *t.set() == spec.set)
                .map(|t| Arc::clone(&t.limiter));
            let limiter = match kept {
                Some(limiter) => limiter,
                None => factory(spec.set.clone()).await?,
            };
            let tier = Tier {
                name: spec.name.clone(),
                headers: SetHeaders::new(&spec.set),
                limiter,
                tokens: spec.tokens,
                max_output_tokens: spec.max_output_tokens,
            };
            tiers.insert(spec.name, Arc::new(tier));
        }
        Ok(Self {
            tiers,
            keys: Keys {
                hasher,
                tiers: hashes.into_iter().collect(),
            },
        })
    }
}

/// The tiers in force, behind an [`ArcSwap`]: a request loads them once
/// and keeps what it loaded for its whole life (its reservation settles
/// on the limiter that checked it), while a new configuration can be
/// swapped in for the requests after it.
pub(crate) struct Current(pub(crate) ArcSwap<Tiers>);

impl Current {
    pub(crate) fn new(tiers: Tiers) -> Self {
        Self(ArcSwap::from_pointee(tiers))
    }
}
