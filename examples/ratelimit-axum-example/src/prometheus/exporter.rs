//! The Prometheus recorder and the router that renders it.

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::Backend;

/// Installs the Prometheus recorder as the process's `metrics` recorder.
///
/// Call it before [`build_backend`](crate::build_backend): the limiter's
/// layers and the Redis backend register their metrics once, when they
/// are built, with whatever recorder is installed then.
///
/// # Errors
///
/// When a recorder is already installed.
pub fn install_recorder() -> anyhow::Result<PrometheusHandle> {
    PrometheusBuilder::new()
        .install_recorder()
        .map_err(|e| anyhow::anyhow!("cannot install the Prometheus recorder: {e}"))
}

#[derive(Clone)]
struct MetricsState {
    handle: PrometheusHandle,
    backend: Option<Backend>,
}

/// `GET /metrics`: every metric recorded so far in Prometheus's text
/// format, with `ratelimit_memory_keys{limiter}` (the keys an in-process
/// limiter holds: `"store"` for the memory backend, `"fallback"` for the
/// Redis backend's fallback) read at each scrape.
///
/// # Examples
///
/// ```
/// use axum::body::Body;
/// use metrics_exporter_prometheus::PrometheusBuilder;
/// use ratelimit_axum_example::{build_backend, metrics_app, Config};
/// use tower::ServiceExt;
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// // A recorder of this example's own; the binary installs it globally.
/// let recorder = PrometheusBuilder::new().build_recorder();
/// let handle = recorder.handle();
/// let _guard = metrics::set_default_local_recorder(&recorder);
///
/// let backend = build_backend(&Config::default()).await.unwrap();
/// backend.limiter().check_one(b"client").await.unwrap();
///
/// let res = metrics_app(handle, backend)
///     .oneshot(axum::http::Request::get("/metrics").body(Body::empty()).unwrap())
///     .await
///     .unwrap();
/// assert_eq!(res.status(), 200);
/// let body = axum::body::to_bytes(res.into_body(), 1 << 20).await.unwrap();
/// let text = String::from_utf8(body.to_vec()).unwrap();
/// assert!(text.contains(r#"ratelimit_memory_keys{limiter="store"} 1"#), "{text}");
/// assert!(
///     text.contains(r#"ratelimit_decisions_total{outcome="allowed",policy="fixed_window"} 1"#),
///     "{text}"
/// );
/// # });
/// ```
pub fn metrics_app(handle: PrometheusHandle, backend: Backend) -> Router {
    Router::new()
        .route("/metrics", get(render))
        .with_state(MetricsState {
            handle,
            backend: Some(backend),
        })
}

/// `GET /metrics` of the gateway profile: the recorder's metrics alone
/// (the set limiters register theirs, `policy = "set"`, as they are
/// built; the memory backend's `ratelimit_memory_keys{limiter="gateway"}`
/// is recorded as its store sweeps).
///
/// # Examples
///
/// ```
/// use ratelimit_axum_example::gateway_metrics_app;
///
/// let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
/// let _router = gateway_metrics_app(recorder.handle());
/// ```
pub fn gateway_metrics_app(handle: PrometheusHandle) -> Router {
    Router::new()
        .route("/metrics", get(render))
        .with_state(MetricsState {
            handle,
            backend: None,
        })
}

async fn render(State(state): State<MetricsState>) -> impl IntoResponse {
    for (limiter, keys) in state.backend.iter().flat_map(Backend::keys_held) {
        // A count of at most the memory's size: exact in an f64.
        #[allow(clippy::cast_precision_loss)]
        metrics::gauge!("ratelimit_memory_keys", "limiter" => limiter).set(keys as f64);
    }
    // Drains the histograms' buckets into their summaries; cheap, and a
    // scrape is the only time they are read.
    state.handle.run_upkeep();
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.handle.render(),
    )
}
