//! The gateway profile: `POST /api/generate` run as an LLM gateway runs
//! it. Callers are API keys (`Authorization: Bearer <key>`, stored and
//! logged only as keyed hashes) in tiers, or anonymous by client IP; each
//! tier has a policy set of `requests`, `tokens` and `streams`, checked
//! in one decision before the model is called, settled with the actual
//! usage when the answer ends.
//!
//! Switched on by `[tiers.*]` in the configuration (see `gateway.toml`);
//! without it the service is the default one, unchanged.

mod config;
mod handler;
mod identity;
mod outage;
mod responses;
mod set_backend;
mod stream;
mod tiers;

use std::sync::Arc;

use ratelimit_tower::ClientIp;

pub use config::{
    check_profile, ApiKeyConfig, GatewaySettings, KeyHash, Profile, TierConfig, TierSpec,
    ANONYMOUS, TOKENS,
};
pub(crate) use handler::generate;
pub use identity::{AuthError, Caller, KeyHasher, MIN_SECRET_LEN};
pub use set_backend::{build_set_limiter, default_set_limiter_factory, SetLimiterFactory};

use outage::Outage;
use tiers::{Current, Tiers};

use crate::{AppOptions, Config};

/// The gateway's state shared by every request: the tiers in force, how
/// clients are told apart, and the limiter's health.
pub struct Gateway {
    current: Current,
    client_ip: ClientIp,
    outage: Outage,
    factory: SetLimiterFactory,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let tiers = self.current.0.load();
        let mut names: Vec<&String> = tiers.tiers.keys().collect();
        names.sort();
        f.debug_struct("Gateway")
            .field("tiers", &names)
            .field("keys", &tiers.keys.tiers.len())
            .finish_non_exhaustive()
    }
}

impl Gateway {
    /// The gateway of `config`'s tiers and keys, each tier counting in a
    /// limiter that `factory` builds (in the service,
    /// [`default_set_limiter_factory`]).
    ///
    /// # Errors
    ///
    /// When the profile is invalid (see [`check_profile`]), keys are
    /// configured without a key secret, or the secret is too short.
    ///
    /// # Examples
    ///
    /// ```
    /// use ratelimit_axum_example::{default_set_limiter_factory, AppOptions, Config, Gateway};
    ///
    /// let config = Config::from_toml_str(include_str!("../../gateway.toml")).unwrap();
    /// let gateway = Gateway::from_config(&config, default_set_limiter_factory()).unwrap();
    /// assert_eq!(gateway.tier_names(), ["anonymous", "free", "pro"]);
    /// assert!(Gateway::from_config(&Config::default(), default_set_limiter_factory()).is_err());
    /// ```
    pub fn from_config(config: &Config, factory: SetLimiterFactory) -> anyhow::Result<Self> {
        let tiers = Tiers::build(config, &factory)?;
        Ok(Self {
            current: Current::new(tiers),
            client_ip: config.client_ip_extractor()?,
            outage: Outage::default(),
            factory,
        })
    }

    /// The names of the tiers in force, sorted.
    #[must_use]
    pub fn tier_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.current.0.load().tiers.keys().cloned().collect();
        names.sort();
        names
    }

    /// The factory the tiers' limiters are built with.
    #[must_use]
    pub fn set_limiter_factory(&self) -> &SetLimiterFactory {
        &self.factory
    }
}

/// The state of the gateway's route.
#[derive(Clone)]
pub(crate) struct GatewayState {
    pub(crate) gateway: Arc<Gateway>,
    pub(crate) model: Arc<dyn crate::Model>,
    pub(crate) options: Arc<AppOptions>,
}
