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
mod reload;
mod responses;
mod set_backend;
mod stream;
mod tiers;

use std::sync::Arc;

use ratelimit_tower::{ClientIp, OutageLog};

pub use config::{
    check_profile, ApiKeyConfig, GatewaySettings, KeyHash, Profile, TierConfig, TierSpec,
    ANONYMOUS, TOKENS,
};
pub(crate) use handler::generate;
pub use identity::{AuthError, Caller, KeyHasher, MIN_SECRET_LEN};
pub use reload::{spawn_reloader, RELOAD_DEBOUNCE};
pub use set_backend::{
    build_set_limiter_factory, factory_of, memory_set_limiter_factory, SetLimiterFactory,
};

use tiers::{Current, Tiers};

use crate::{AppOptions, Config};

/// The gateway's state shared by every request: the tiers in force, how
/// clients are told apart, and the limiter's health.
pub struct Gateway {
    current: Current,
    client_ip: ClientIp,
    outage: OutageLog,
    factory: SetLimiterFactory,
    /// Held by a reload from reading the tiers in force to swapping in the
    /// new ones, so two reloads never build on the same old tiers.
    reloading: tokio::sync::Mutex<()>,
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
    /// [`build_set_limiter_factory`]).
    ///
    /// # Errors
    ///
    /// When the profile is invalid (see [`check_profile`]), keys are
    /// configured without a key secret, the secret is too short, or the
    /// factory fails (e.g. Redis cannot be reached).
    ///
    /// # Examples
    ///
    /// ```
    /// use ratelimit_axum_example::{memory_set_limiter_factory, Config, Gateway};
    ///
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// let config = Config::from_toml_str(include_str!("../../gateway.toml")).unwrap();
    /// let gateway = Gateway::from_config(&config, memory_set_limiter_factory()).await.unwrap();
    /// assert_eq!(gateway.tier_names(), ["anonymous", "free", "pro"]);
    /// assert!(Gateway::from_config(&Config::default(), memory_set_limiter_factory()).await.is_err());
    /// # });
    /// ```
    pub async fn from_config(config: &Config, factory: SetLimiterFactory) -> anyhow::Result<Self> {
        let tiers = Tiers::build(config, &factory, None).await?;
        Ok(Self {
            current: Current::new(tiers),
            client_ip: config.client_ip_extractor()?,
            outage: OutageLog::default(),
            factory,
            reloading: tokio::sync::Mutex::new(()),
        })
    }

    /// Swaps in the tiers, keys and key secret of `config` (`[gateway]`,
    /// `[tiers.*]`, `[[keys]]`; every other setting needs a restart),
    /// resetting no one's counters: a tier whose set did not change keeps
    /// its limiter, and a changed one gets a limiter over the same store
    /// (in memory, [`MemorySetLimiter::reconfigured`](ratelimit_memory::MemorySetLimiter::reconfigured);
    /// on Redis, the same keys, named by policy). Requests admitted before
    /// settle on the limiter that admitted them.
    ///
    /// `cause` says what asked for it in the log line (`sighup`, `file`).
    ///
    /// # Errors
    ///
    /// As [`from_config`](Self::from_config); the tiers in force are then
    /// kept as they are.
    ///
    /// # Examples
    ///
    /// ```
    /// use ratelimit_axum_example::{memory_set_limiter_factory, Config, Gateway};
    ///
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// let text = include_str!("../../gateway.toml");
    /// let config = Config::from_toml_str(text).unwrap();
    /// let gateway = Gateway::from_config(&config, memory_set_limiter_factory()).await.unwrap();
    ///
    /// let fewer = Config::from_toml_str(&text.replace("[tiers.pro]", "[tiers.team]")
    ///     .replace("tiers.pro.", "tiers.team.").replace("tier = \"pro\"", "tier = \"team\"")).unwrap();
    /// gateway.reload(&fewer, "test").await.unwrap();
    /// assert_eq!(gateway.tier_names(), ["anonymous", "free", "team"]);
    ///
    /// assert!(gateway.reload(&Config::default(), "test").await.is_err());
    /// assert_eq!(gateway.tier_names(), ["anonymous", "free", "team"], "kept");
    /// # });
    /// ```
    pub async fn reload(&self, config: &Config, cause: &str) -> anyhow::Result<()> {
        let _one_at_a_time = self.reloading.lock().await;
        let previous = self.current.0.load_full();
        let tiers = Tiers::build(config, &self.factory, Some(&previous)).await?;
        let kept = tiers
            .tiers
            .iter()
            .filter(|(name, tier)| {
                previous
                    .tiers
                    .get(*name)
                    .is_some_and(|old| Arc::ptr_eq(&old.limiter, &tier.limiter))
            })
            .count();
        let (count, keys) = (tiers.tiers.len(), tiers.keys.tiers.len());
        self.current.0.store(Arc::new(tiers));
        tracing::info!(
            cause,
            tiers = count,
            unchanged = kept,
            keys,
            "configuration reloaded; counters kept"
        );
        Ok(())
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
