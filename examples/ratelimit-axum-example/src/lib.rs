//! `POST /api/generate` behind `ratelimit-tower`: five requests per 30 s
//! per client IP, and otherwise the model's answer streamed in the ai SDK
//! v5 UI message stream format (`toUIMessageStreamResponse()`), so a
//! `useChat` front end consumes it unchanged.
//!
//! The binary (`src/main.rs`) reads the configuration and serves [`app`]
//! with [`serve`]; tests drive [`app`] directly with `oneshot`, or serve it
//! on a socket.

mod app;
mod chat;
mod config;
mod error;
mod generate;
mod json_body;
mod limiter;
pub mod model;
mod secret;
mod secret_url;
mod server;
mod toml_error;
mod ui_stream;

pub use app::{app, AppOptions};
pub use chat::{parse_chat_request, ChatMessage, Role};
pub use config::{
    BackendConfig, BackendKind, ClientIpConfig, Config, FailureConfig, HttpConfig, ModelConfig,
    ProviderKind,
};
pub use error::AppError;
pub use limiter::build_limiter;
pub use model::{build_model, Model, ModelError, OfflineModel, OpenAiCompatible};
pub use secret::Secret;
pub use secret_url::{redact_url, SecretUrl};
pub use server::{serve, ServerConfig};
pub use ui_stream::{UiChunk, UI_MESSAGE_STREAM_HEADERS};

// The workspace README's Rust examples use this crate's dependencies (the
// memory backend, the middleware, axum), so they are compiled and run here.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
struct WorkspaceReadme;
