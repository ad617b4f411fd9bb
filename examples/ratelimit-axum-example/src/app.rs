//! The router.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::middleware;
use axum::response::IntoResponse as _;
use axum::routing::{get, post};
use axum::Router;
use ratelimit_core::Limiter;
use ratelimit_tower::{ClientIp, PlainResponse, RateLimitLayer};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::{DefaultMakeSpan, DefaultOnFailure, DefaultOnResponse, TraceLayer};
use tracing::Level;

use crate::gateway::GatewayState;
use crate::{generate, json_body, Config, Gateway, Model};

/// The settings [`app`] needs, prepared (and validated) from a [`Config`].
#[derive(Debug, Clone)]
pub struct AppOptions {
    /// How clients are told apart.
    pub client_ip: ClientIp,
    /// The longest wait for one check.
    pub check_timeout: Duration,
    /// The largest body accepted.
    pub max_body_bytes: usize,
    /// The longest time until the response starts.
    pub request_timeout: Duration,
    /// The longest wait for the model's next delta.
    pub stream_idle_timeout: Duration,
    /// The body of a `429`.
    pub denied_body: String,
}

impl AppOptions {
    /// The options of `config`.
    ///
    /// # Errors
    ///
    /// When the configuration is inconsistent (see [`Config::validate`]).
    ///
    /// # Examples
    ///
    /// ```
    /// use ratelimit_axum_example::{AppOptions, Config};
    /// let options = AppOptions::from_config(&Config::default()).unwrap();
    /// assert_eq!(options.denied_body, "Ratelimited!");
    /// ```
    pub fn from_config(config: &Config) -> anyhow::Result<Self> {
        config.validate()?;
        Ok(Self {
            client_ip: config.client_ip_extractor()?,
            // A backstop behind the backend's own per-call timeout (which
            // the resilience layers answer with the failure policy): twice
            // as long, so the backend's answer normally wins.
            check_timeout: config.backend.timeout * 2,
            max_body_bytes: config.http.max_body_bytes,
            request_timeout: config.http.request_timeout,
            stream_idle_timeout: config.http.stream_idle_timeout,
            denied_body: config.http.denied_body.clone(),
        })
    }
}

#[derive(Clone)]
pub(crate) struct AppState {
    pub(crate) model: Arc<dyn Model>,
    pub(crate) stream_idle_timeout: Duration,
}

/// The service: `POST /api/generate` behind the rate limit, and an
/// unlimited `GET /healthz`.
///
/// The limit wraps the route, so it is checked before the body is read:
/// a denied request costs no body transfer and no model call. Inside it,
/// before the body is read too, a request must declare
/// `Content-Type: application/json` (else `415`) and announce no more
/// than `max_body_bytes` (else `413`); those refusals have been counted,
/// as has a malformed body (`400`). The peer address comes from
/// `ConnectInfo<SocketAddr>`, which [`serve`](crate::serve) provides (as
/// does `into_make_service_with_connect_info::<SocketAddr>()`, or
/// `MockConnectInfo` in tests).
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
/// use axum::body::Body;
/// use axum::extract::connect_info::MockConnectInfo;
/// use ratelimit_axum_example::{app, AppOptions, Config, OfflineModel};
/// use ratelimit_core::ReferenceLimiter;
/// use tower::ServiceExt;
///
/// # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
/// let config = Config::default();
/// let router = app(
///     &AppOptions::from_config(&config).unwrap(),
///     Arc::new(ReferenceLimiter::new(config.limit)),
///     Arc::new(OfflineModel::new(Duration::ZERO)),
/// )
/// .layer(MockConnectInfo(std::net::SocketAddr::from(([192, 0, 2, 1], 1))));
/// let req = axum::http::Request::post("/api/generate")
///     .header("content-type", "application/json")
///     .body(Body::from(r#"{"messages":[{"role":"user","content":"Hi"}]}"#))
///     .unwrap();
/// let res = router.oneshot(req).await.unwrap();
/// assert_eq!(res.status(), 200);
/// let remaining = res.headers()["ratelimit"].to_str().unwrap();
/// assert!(remaining.starts_with(r#""default";r=4;t="#), "{remaining}");
/// # });
/// ```
pub fn app(options: &AppOptions, limiter: Arc<dyn Limiter>, model: Arc<dyn Model>) -> Router {
    let rate_limit = RateLimitLayer::new(limiter)
        .with_key_extractor(options.client_ip.clone())
        .with_check_timeout(Some(options.check_timeout))
        .with_denied_response(PlainResponse::new(
            StatusCode::TOO_MANY_REQUESTS,
            options.denied_body.clone(),
        ));
    let state = AppState {
        model,
        stream_idle_timeout: options.stream_idle_timeout,
    };
    let router = Router::new()
        .route(
            "/api/generate",
            // Layers added later wrap the earlier ones: the limit first,
            // then the header checks, then the handler reads the body.
            post(generate::generate)
                .route_layer(middleware::from_fn_with_state(
                    options.max_body_bytes,
                    json_body::require_json_body,
                ))
                .route_layer(rate_limit),
        )
        .route("/healthz", get(|| async { "ok" }))
        .with_state(state);
    common_layers(router, options)
}

/// The service in the gateway profile: `POST /api/generate` as an LLM
/// gateway (see [`Gateway`]), and an unlimited `GET /healthz`.
///
/// A request is identified first (`401` for an unknown or malformed
/// `Authorization`, before the body is read); then its body is read
/// (bounded by `max_body_bytes`) and parsed, since the check needs the
/// prompt's tokens; then one set check reserves a request, the prompt's
/// tokens plus the tier's `max_output_tokens`, and a stream, before the
/// model is called. A malformed body is refused before the check and is
/// not counted.
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
/// use axum::body::Body;
/// use axum::extract::connect_info::MockConnectInfo;
/// use ratelimit_axum_example::{memory_set_limiter_factory, gateway_app, AppOptions, Config, Gateway, OfflineModel};
/// use tower::ServiceExt;
///
/// # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
/// let config = Config::from_toml_str(include_str!("../gateway.toml")).unwrap();
/// let gateway = Gateway::from_config(&config, memory_set_limiter_factory()).await.unwrap();
/// let router = gateway_app(
///     &AppOptions::from_config(&config).unwrap(),
///     Arc::new(gateway),
///     Arc::new(OfflineModel::new(Duration::ZERO)),
/// )
/// .layer(MockConnectInfo(std::net::SocketAddr::from(([192, 0, 2, 1], 1))));
/// let req = axum::http::Request::post("/api/generate")
///     .header("content-type", "application/json")
///     .body(Body::from(r#"{"messages":[{"role":"user","content":"Hi"}]}"#))
///     .unwrap();
/// let res = router.oneshot(req).await.unwrap();
/// assert_eq!(res.status(), 200);
/// let fields = res.headers()["ratelimit"].to_str().unwrap();
/// assert!(fields.starts_with(r#""requests";r=4;t="#), "{fields}");
/// # });
/// ```
pub fn gateway_app(options: &AppOptions, gateway: Arc<Gateway>, model: Arc<dyn Model>) -> Router {
    let state = GatewayState {
        gateway,
        model,
        options: Arc::new(options.clone()),
    };
    let router = Router::new()
        .route("/api/generate", post(crate::gateway::generate))
        .route("/healthz", get(|| async { "ok" }))
        .with_state(state);
    common_layers(router, options)
}

/// What every route shares: the body limit, a panic as a logged `500`,
/// the request timeout and the request log.
fn common_layers(router: Router, options: &AppOptions) -> Router {
    router
        .layer(DefaultBodyLimit::max(options.max_body_bytes))
        // A panic anywhere below (a handler, a backend) becomes a logged 500
        // instead of a dropped connection.
        .layer(CatchPanicLayer::custom(panic_response))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            options.request_timeout,
        ))
        // One span and one "finished processing request" event per request
        // at INFO, so the default log level shows traffic and statuses.
        //
        // Its "response failed" event for every 5xx is kept at DEBUG: the
        // status is already in the INFO line, a 500 is logged with its
        // cause where it happens, and while the rate-limit store is away
        // every request is a 503 that the failure policy chose on purpose,
        // logged once by the layers at WARN; an ERROR line per request
        // would bury that line.
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(DefaultMakeSpan::new().level(Level::INFO))
                .on_response(DefaultOnResponse::new().level(Level::INFO))
                .on_failure(DefaultOnFailure::new().level(Level::DEBUG)),
        )
}

fn panic_response(panic: Box<dyn std::any::Any + Send + 'static>) -> axum::response::Response {
    let detail = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("(no message)");
    crate::AppError::Internal(anyhow::anyhow!("request panicked: {detail}")).into_response()
}
