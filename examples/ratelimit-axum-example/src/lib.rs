//! `POST /api/generate` behind `ratelimit-tower`: five requests per 30 s
//! per client IP, and otherwise the model's answer streamed in the ai SDK
//! v5 UI message stream format (`toUIMessageStreamResponse()`), so a
//! `useChat` front end consumes it unchanged.
//!
//! The binary (`src/main.rs`) reads the configuration and serves [`app`]
//! with [`serve`]; tests drive [`app`] directly with `oneshot`, or serve it
//! on a socket.

mod app;
mod backend_config;
mod chat;
mod config;
mod error;
mod gateway;
mod generate;
mod json_body;
mod limiter;
pub mod model;
mod prometheus;
mod secret;
mod secret_url;
mod server;
mod toml_error;
mod ui_stream;

pub use app::{app, gateway_app, AppOptions};
pub use backend_config::{BackendConfig, BackendKind};
pub use chat::{parse_chat_request, ChatMessage, Role};
pub use config::{ClientIpConfig, Config, HttpConfig, ModelConfig, ProviderKind};
pub use error::AppError;
pub use gateway::{
    build_set_limiter_factory, check_profile, factory_of, memory_set_limiter_factory,
    spawn_reloader, ApiKeyConfig, AuthError, Caller, Gateway, GatewaySettings, KeyHash, KeyHasher,
    Profile, SetLimiterFactory, TierConfig, TierSpec, ANONYMOUS, MIN_SECRET_LEN, RELOAD_DEBOUNCE,
    TOKENS,
};
pub use limiter::{build_backend, Backend};
pub use model::{
    build_model, Model, ModelError, ModelEvent, ModelRequest, OfflineModel, OpenAiCompatible, Usage,
};
pub use prometheus::{gateway_metrics_app, install_recorder, metrics_app, MetricsConfig};
pub use secret::Secret;
pub use secret_url::{redact_url, SecretUrl};
pub use server::{serve, ServerConfig};
pub use ui_stream::{UiChunk, UI_MESSAGE_STREAM_HEADERS};

// The workspace README's Rust examples use this crate's dependencies (the
// memory backend, the middleware, axum), so they are compiled and run here.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
struct WorkspaceReadme;
