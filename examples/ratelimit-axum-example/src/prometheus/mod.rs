//! The Prometheus endpoint: `[metrics]`, the recorder and its router.

mod config;
mod exporter;

pub use config::MetricsConfig;
pub use exporter::{install_recorder, metrics_app};
