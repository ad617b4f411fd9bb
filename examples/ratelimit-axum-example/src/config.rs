//! The service's configuration: embedded defaults, a TOML file, then
//! environment variables.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context as _};
use ipnet::IpNet;
use ratelimit_core::Policy;
use ratelimit_tower::ProxyHeader;
use serde::{Deserialize, Deserializer};

use crate::{
    ApiKeyConfig, BackendConfig, BackendKind, GatewaySettings, MetricsConfig, Secret, SecretUrl,
    ServerConfig, TierConfig,
};

/// Everything the service reads at start-up. Every field has a default,
/// so an empty file (or none) is the documented default service: five
/// requests per 30 s per client IP, fixed window, in memory, on
/// `127.0.0.1:3000`, answered by the offline model.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where to listen.
    #[serde(default = "default_bind")]
    pub bind: SocketAddr,
    /// The rate-limit policy, in `ratelimit-core`'s form (`algorithm`,
    /// `limit` and `window`, or `rate = "5/30s"`).
    #[serde(default = "default_policy")]
    pub limit: Policy,
    /// Where the counters live and what happens when that store fails.
    #[serde(default)]
    pub backend: BackendConfig,
    /// How the client's address is found.
    #[serde(default)]
    pub client_ip: ClientIpConfig,
    /// Request limits.
    #[serde(default)]
    pub http: HttpConfig,
    /// Which model answers.
    #[serde(default)]
    pub model: ModelConfig,
    /// How connections are served.
    #[serde(default)]
    pub server: ServerConfig,
    /// The Prometheus endpoint (off unless `bind` is set).
    #[serde(default)]
    pub metrics: MetricsConfig,
    /// The gateway profile's settings (the API keys' hash secret).
    #[serde(default)]
    pub gateway: GatewaySettings,
    /// The gateway profile's tiers: when any is set, `/api/generate` runs
    /// as an LLM gateway (see `gateway.toml`) and `limit` is not used.
    #[serde(default)]
    pub tiers: BTreeMap<String, TierConfig>,
    /// The gateway profile's API keys, by hash.
    #[serde(default)]
    pub keys: Vec<ApiKeyConfig>,
}

/// `[client_ip]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientIpConfig {
    /// Networks of the proxies allowed to name the client, e.g.
    /// `["10.0.0.0/8"]`. Empty (default): only the peer address counts.
    #[serde(default)]
    pub trusted_proxies: Vec<IpNet>,
    /// `"x-forwarded-for"` (default) or `"forwarded"`.
    #[serde(default, deserialize_with = "proxy_header")]
    pub header: ProxyHeader,
    /// IPv6 clients are grouped by this prefix (default 64).
    #[serde(default = "default_ipv6_prefix")]
    pub ipv6_prefix: u8,
    /// IPv4 clients are grouped by this prefix (default 32).
    #[serde(default = "default_ipv4_prefix")]
    pub ipv4_prefix: u8,
}

/// `[http]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// The largest request body accepted, in bytes (default 64 KiB).
    #[serde(default = "default_max_body")]
    pub max_body_bytes: usize,
    /// The longest time until the response starts, e.g. `"30s"`.
    #[serde(
        default = "default_request_timeout",
        deserialize_with = "positive_duration"
    )]
    pub request_timeout: Duration,
    /// The longest wait for the model's next delta, e.g. `"30s"`.
    #[serde(
        default = "default_request_timeout",
        deserialize_with = "positive_duration"
    )]
    pub stream_idle_timeout: Duration,
    /// The body of a `429` (default `Ratelimited!`).
    #[serde(default = "default_denied_body")]
    pub denied_body: String,
}

/// `[model]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// `"offline"` or `"openai"`; unset: `openai` when an API key is set.
    #[serde(default)]
    pub provider: Option<ProviderKind>,
    /// The provider's model name (`OPENAI_MODEL`).
    #[serde(default = "default_model_name")]
    pub name: String,
    /// The provider's base URL (`OPENAI_BASE_URL`); credentials in it are
    /// never printed.
    #[serde(default = "default_base_url")]
    pub base_url: SecretUrl,
    /// The API key (`OPENAI_API_KEY`, which overrides it). Prefer the
    /// variable: a file holding a key must not be committed. Never printed.
    #[serde(default)]
    pub api_key: Option<Secret<String>>,
    /// The offline model's pause before each delta, e.g. `"40ms"`.
    #[serde(default = "default_delta_delay", deserialize_with = "duration")]
    pub delta_delay: Duration,
    /// The provider's connect timeout.
    #[serde(
        default = "default_connect_timeout",
        deserialize_with = "positive_duration"
    )]
    pub connect_timeout: Duration,
}

/// Which model answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProviderKind {
    /// [`OfflineModel`](crate::OfflineModel).
    Offline,
    /// [`OpenAiCompatible`](crate::OpenAiCompatible).
    Openai,
}

fn default_bind() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 3000))
}
fn default_policy() -> Policy {
    // Constants inside every range the policy checks.
    Policy::fixed_window(5, Duration::from_secs(30)).expect("5 per 30 s is a valid policy")
}
fn default_ipv6_prefix() -> u8 {
    64
}
fn default_ipv4_prefix() -> u8 {
    32
}
fn default_max_body() -> usize {
    64 * 1024
}
fn default_request_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_denied_body() -> String {
    "Ratelimited!".into()
}
fn default_model_name() -> String {
    "gpt-4o-mini".into()
}
fn default_base_url() -> SecretUrl {
    SecretUrl::new("https://api.openai.com/v1")
}
fn default_delta_delay() -> Duration {
    Duration::from_millis(40)
}
fn default_connect_timeout() -> Duration {
    Duration::from_secs(10)
}

pub(crate) fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(d)?;
    ratelimit_core::parse_duration(&text).map_err(serde::de::Error::custom)
}

/// A timeout: zero would fail every request (or, for the server's own,
/// close every connection) at once, so it is refused where it is written.
pub(crate) fn positive_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let value = duration(d)?;
    if value.is_zero() {
        return Err(serde::de::Error::custom(
            "a timeout must be longer than zero",
        ));
    }
    Ok(value)
}

fn proxy_header<'de, D: Deserializer<'de>>(d: D) -> Result<ProxyHeader, D::Error> {
    let text = String::deserialize(d)?;
    parse_proxy_header(&text).map_err(serde::de::Error::custom)
}

fn parse_proxy_header(text: &str) -> Result<ProxyHeader, String> {
    match text.to_ascii_lowercase().as_str() {
        "x-forwarded-for" => Ok(ProxyHeader::XForwardedFor),
        "forwarded" => Ok(ProxyHeader::Forwarded),
        _ => Err(format!(
            "unknown header {text:?}; expected \"x-forwarded-for\" or \"forwarded\""
        )),
    }
}

impl Default for ClientIpConfig {
    fn default() -> Self {
        Self {
            trusted_proxies: Vec::new(),
            header: ProxyHeader::XForwardedFor,
            ipv6_prefix: default_ipv6_prefix(),
            ipv4_prefix: default_ipv4_prefix(),
        }
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            max_body_bytes: default_max_body(),
            request_timeout: default_request_timeout(),
            stream_idle_timeout: default_request_timeout(),
            denied_body: default_denied_body(),
        }
    }
}

impl Default for ModelConfig {
    fn default() -> Self {
        Self {
            provider: None,
            name: default_model_name(),
            base_url: default_base_url(),
            api_key: None,
            delta_delay: default_delta_delay(),
            connect_timeout: default_connect_timeout(),
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            bind: default_bind(),
            limit: default_policy(),
            backend: BackendConfig::default(),
            client_ip: ClientIpConfig::default(),
            http: HttpConfig::default(),
            model: ModelConfig::default(),
            server: ServerConfig::default(),
            metrics: MetricsConfig::default(),
            gateway: GatewaySettings::default(),
            tiers: BTreeMap::new(),
            keys: Vec::new(),
        }
    }
}

impl Config {
    /// Parses a TOML configuration.
    ///
    /// # Errors
    ///
    /// A message naming the line, the column and the field at fault.
    ///
    /// # Examples
    ///
    /// ```
    /// use ratelimit_axum_example::Config;
    ///
    /// let config = Config::from_toml_str("[limit]\nalgorithm = \"sliding_window\"\nrate = \"10/1m\"\n").unwrap();
    /// assert_eq!(config.limit.limit(), 10);
    ///
    /// let err = Config::from_toml_str("[limit]\nalgorithm = \"fixed_window\"\nlimit = 0\nwindow = \"30s\"\n").unwrap_err();
    /// assert!(err.to_string().contains("line 3"), "{err}");
    /// assert!(err.to_string().contains("invalid `limit`"), "{err}");
    /// ```
    pub fn from_toml_str(text: &str) -> Result<Self, toml::de::Error> {
        toml::from_str(text)
    }

    /// The defaults, then the file at `path` if given, then the
    /// environment (see [`apply_env`](Self::apply_env)).
    ///
    /// # Errors
    ///
    /// When the file cannot be read or is invalid, or an environment
    /// variable is invalid; the message names the file, line and field,
    /// or the variable.
    pub fn load(path: Option<&Path>) -> anyhow::Result<Self> {
        let mut config = match path {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read config file {}", path.display()))?;
                Self::from_toml_str(&text).map_err(|e| {
                    anyhow::anyhow!(
                        "invalid config file {}: {}",
                        path.display(),
                        crate::toml_error::located(&e, &text)
                    )
                })?
            }
            None => Self::default(),
        };
        config.apply_env(|name| std::env::var(name).ok())?;
        Ok(config)
    }

    /// Applies the environment variables that `var` returns:
    ///
    /// | variable | effect |
    /// |---|---|
    /// | `RATELIMIT_BIND` | `bind` |
    /// | `RATELIMIT_ALGORITHM` | the algorithm, keeping the limit and window (a token bucket holds `limit` and refills `limit` per window) |
    /// | `RATELIMIT_RATE` | `limit`/`window`, e.g. `5/30s` |
    /// | `RATELIMIT_FAILURE` | `backend.failure`: `open`, `closed` or `fallback` |
    /// | `RATELIMIT_METRICS_BIND` | `metrics.bind`: serve Prometheus metrics there, e.g. `127.0.0.1:9090` |
    /// | `RATELIMIT_TRUSTED_PROXIES` | `client_ip.trusted_proxies`, comma-separated |
    /// | `RATELIMIT_DELTA_DELAY` | `model.delta_delay`, e.g. `0ms` |
    /// | `REDIS_URL` | `backend.kind = "redis"` and `backend.url` |
    /// | `OPENAI_API_KEY`, `OPENAI_BASE_URL`, `OPENAI_MODEL` | `model.api_key`, `model.base_url`, `model.name` |
    /// | `RATELIMIT_KEY_SECRET` | `gateway.key_secret`: the secret API keys are hashed with |
    ///
    /// # Errors
    ///
    /// When a variable's value is invalid; the message names it.
    ///
    /// # Examples
    ///
    /// ```
    /// use ratelimit_axum_example::Config;
    ///
    /// let mut config = Config::default();
    /// config.apply_env(|name| match name {
    ///     "RATELIMIT_RATE" => Some("100/1m".into()),
    ///     "RATELIMIT_ALGORITHM" => Some("sliding_window".into()),
    ///     _ => None,
    /// }).unwrap();
    /// assert_eq!(config.limit.algorithm_name(), "sliding_window");
    /// assert_eq!(config.limit.limit(), 100);
    /// ```
    pub fn apply_env(&mut self, var: impl Fn(&str) -> Option<String>) -> anyhow::Result<()> {
        if let Some(v) = var("RATELIMIT_BIND") {
            self.bind = v.parse().with_context(|| {
                format!("RATELIMIT_BIND={v:?} is not an address like 127.0.0.1:3000")
            })?;
        }
        let algorithm = var("RATELIMIT_ALGORITHM");
        let rate = var("RATELIMIT_RATE");
        if algorithm.is_some() || rate.is_some() {
            let (limit, window) = match &rate {
                Some(text) => ratelimit_core::parse_rate(text)
                    .with_context(|| format!("RATELIMIT_RATE={text:?}"))?,
                None => (self.limit.limit(), self.limit.window()),
            };
            use ratelimit_core::AlgorithmName;
            let name = match &algorithm {
                // The parse error names the value and every algorithm.
                Some(text) => text
                    .parse::<AlgorithmName>()
                    .map_err(|e| anyhow::anyhow!("RATELIMIT_ALGORITHM: {e}"))?,
                None => self.limit.algorithm(),
            };
            self.limit = match name {
                AlgorithmName::FixedWindow => Policy::fixed_window(limit, window),
                AlgorithmName::SlidingWindow => Policy::sliding_window(limit, window),
                AlgorithmName::TokenBucket => Policy::token_bucket(limit, limit, window),
            }
            .with_context(|| {
                format!("RATELIMIT_ALGORITHM/RATELIMIT_RATE ({name}, {limit} per {window:?})")
            })?;
        }
        if let Some(v) = var("RATELIMIT_FAILURE") {
            // The core's parser: the same spellings as the file.
            self.backend.failure = v
                .parse::<ratelimit_core::FailurePolicy>()
                .map_err(|e| anyhow::anyhow!("RATELIMIT_FAILURE: {e}"))?;
        }
        if let Some(v) = var("RATELIMIT_METRICS_BIND").filter(|v| !v.is_empty()) {
            self.metrics.bind = Some(v.parse().with_context(|| {
                format!("RATELIMIT_METRICS_BIND={v:?} is not an address like 127.0.0.1:9090")
            })?);
        }
        if let Some(v) = var("RATELIMIT_TRUSTED_PROXIES") {
            self.client_ip.trusted_proxies = v
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| {
                    s.parse::<IpNet>().with_context(|| {
                        format!("RATELIMIT_TRUSTED_PROXIES: {s:?} is not a CIDR network")
                    })
                })
                .collect::<Result<_, _>>()?;
        }
        if let Some(v) = var("RATELIMIT_DELTA_DELAY") {
            self.model.delta_delay = ratelimit_core::parse_duration(&v)
                .with_context(|| format!("RATELIMIT_DELTA_DELAY={v:?}"))?;
        }
        if let Some(v) = var("REDIS_URL").filter(|v| !v.is_empty()) {
            self.backend.kind = BackendKind::Redis;
            self.backend.url = Some(SecretUrl::new(v));
        }
        if let Some(v) = var("OPENAI_API_KEY").filter(|v| !v.is_empty()) {
            self.model.api_key = Some(Secret::new(v));
        }
        if let Some(v) = var("OPENAI_BASE_URL").filter(|v| !v.is_empty()) {
            self.model.base_url = SecretUrl::new(v);
        }
        if let Some(v) = var("OPENAI_MODEL").filter(|v| !v.is_empty()) {
            self.model.name = v;
        }
        if let Some(v) = var("RATELIMIT_KEY_SECRET").filter(|v| !v.is_empty()) {
            self.gateway.key_secret = Some(Secret::new(v));
        }
        Ok(())
    }

    /// Checks what serde cannot: prefix ranges, a Redis URL when the
    /// Redis backend is chosen, and (again, for configurations built in
    /// code) that no timeout is zero.
    ///
    /// # Errors
    ///
    /// Naming the field at fault.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use ratelimit_axum_example::Config;
    ///
    /// let mut config = Config::default();
    /// assert!(config.validate().is_ok());
    /// config.server.idle_timeout = Duration::ZERO;
    /// let err = config.validate().unwrap_err().to_string();
    /// assert_eq!(err, "invalid `server.idle_timeout`: must be longer than zero");
    /// ```
    pub fn validate(&self) -> anyhow::Result<()> {
        self.client_ip_extractor()?;
        if self.is_gateway() {
            crate::check_profile(&self.tiers, &self.keys)?;
        } else if !self.keys.is_empty() {
            bail!("`[[keys]]` needs the gateway profile's `[tiers.*]`");
        }
        // A zero timeout fails every request (or closes every connection)
        // at once: a typo, never a wish.
        let timeouts = [
            ("backend.timeout", self.backend.timeout),
            ("http.request_timeout", self.http.request_timeout),
            ("http.stream_idle_timeout", self.http.stream_idle_timeout),
            ("model.connect_timeout", self.model.connect_timeout),
            (
                "server.header_read_timeout",
                self.server.header_read_timeout,
            ),
            ("server.idle_timeout", self.server.idle_timeout),
            ("server.shutdown_grace", self.server.shutdown_grace),
        ];
        if let Some((field, _)) = timeouts.iter().find(|(_, value)| value.is_zero()) {
            bail!("invalid `{field}`: must be longer than zero");
        }
        let b = &self.backend;
        if b.kind == BackendKind::Redis && b.url.is_none() && b.cluster.is_none() {
            bail!("backend.kind = \"redis\" needs backend.url or backend.cluster (or --redis-url / REDIS_URL)");
        }
        if b.kind == BackendKind::Memory && b.failure == ratelimit_core::FailurePolicy::Fallback {
            bail!(
                "invalid `backend.failure`: \"fallback\" applies to the Redis backend only \
                 (the memory backend has no store to lose; it already counts in this process)"
            );
        }
        if self.http.max_body_bytes == 0 {
            bail!("invalid `http.max_body_bytes`: must be at least 1");
        }
        Ok(())
    }

    /// Whether the configuration is the gateway profile (it has tiers).
    ///
    /// # Examples
    ///
    /// ```
    /// use ratelimit_axum_example::Config;
    /// assert!(!Config::default().is_gateway());
    /// assert!(Config::from_toml_str(include_str!("../gateway.toml")).unwrap().is_gateway());
    /// ```
    #[must_use]
    pub fn is_gateway(&self) -> bool {
        !self.tiers.is_empty()
    }

    /// The key extractor of `[client_ip]`.
    ///
    /// # Errors
    ///
    /// When a prefix length is out of range.
    pub fn client_ip_extractor(&self) -> anyhow::Result<ratelimit_tower::ClientIp> {
        let c = &self.client_ip;
        ratelimit_tower::ClientIp::new()
            .with_trusted_proxies(c.trusted_proxies.iter().copied())
            .with_header(c.header)
            .with_ipv6_prefix_len(c.ipv6_prefix)
            .context("invalid `client_ip.ipv6_prefix`")?
            .with_ipv4_prefix_len(c.ipv4_prefix)
            .context("invalid `client_ip.ipv4_prefix`")
    }
}
