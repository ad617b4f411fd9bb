//! `[metrics]`: where Prometheus metrics are served, if anywhere.

use std::net::SocketAddr;

use serde::Deserialize;

/// `[metrics]`: off by default; `bind = "127.0.0.1:9090"` (or
/// `RATELIMIT_METRICS_BIND`) serves Prometheus text at `GET /metrics` on
/// a listener of its own, apart from the public one, so it can stay on a
/// private interface.
///
/// # Examples
///
/// ```
/// use ratelimit_axum_example::Config;
///
/// assert_eq!(Config::default().metrics.bind, None, "off by default");
/// let config = Config::from_toml_str("[metrics]\nbind = \"127.0.0.1:9090\"\n").unwrap();
/// assert_eq!(config.metrics.bind, Some("127.0.0.1:9090".parse().unwrap()));
/// ```
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Where to serve `GET /metrics`; unset: no metrics at all (no
    /// recorder is installed, so recording them costs nothing).
    #[serde(default)]
    pub bind: Option<SocketAddr>,
}
