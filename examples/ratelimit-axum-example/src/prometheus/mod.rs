//! The Prometheus endpoint: `[metrics]`, the recorder and its router.

mod config;
mod exporter;

pub use config::MetricsConfig;
pub use exporter::{gateway_metrics_app, install_recorder, metrics_app};
