//! `[server]`: the settings of [`serve`](crate::serve).

use std::num::NonZeroUsize;
use std::time::Duration;

use serde::Deserialize;

use crate::config::positive_duration;

/// `[server]`: how connections are held and let go (HTTP/1.1).
///
/// # Examples
///
/// ```
/// use ratelimit_axum_example::Config;
///
/// let config = Config::from_toml_str("[server]\nidle_timeout = \"2m\"\n").unwrap();
/// assert_eq!(config.server.idle_timeout.as_secs(), 120);
/// assert_eq!(config.server.max_connections.get(), 1024);
/// ```
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// The longest a connection may take to send a complete request head,
    /// counted from its first byte, or from the connection's start for
    /// its first request (default `"10s"`).
    #[serde(
        default = "default_header_read_timeout",
        deserialize_with = "positive_duration"
    )]
    pub header_read_timeout: Duration,
    /// The longest a kept-alive connection may sit silent between two
    /// requests (default `"60s"`).
    #[serde(
        default = "default_idle_timeout",
        deserialize_with = "positive_duration"
    )]
    pub idle_timeout: Duration,
    /// The most connections served at once (default 1024). Beyond it a
    /// new connection is accepted and closed at once.
    #[serde(default = "default_max_connections")]
    pub max_connections: NonZeroUsize,
    /// On SIGTERM or SIGINT, how long in-flight requests and streams may
    /// take to finish before their connections are closed (default
    /// `"10s"`).
    #[serde(
        default = "default_shutdown_grace",
        deserialize_with = "positive_duration"
    )]
    pub shutdown_grace: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            header_read_timeout: default_header_read_timeout(),
            idle_timeout: default_idle_timeout(),
            max_connections: default_max_connections(),
            shutdown_grace: default_shutdown_grace(),
        }
    }
}

fn default_header_read_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_idle_timeout() -> Duration {
    Duration::from_secs(60)
}
fn default_max_connections() -> NonZeroUsize {
    NonZeroUsize::new(1024).expect("1024 is not zero")
}
fn default_shutdown_grace() -> Duration {
    Duration::from_secs(10)
}
