//! The models that answer: a trait, the offline default and an
//! OpenAI-compatible provider.

mod error;
mod offline;
mod openai;
mod sse;
mod tokens;

use std::sync::Arc;

use async_trait::async_trait;
use futures_util::stream::BoxStream;

pub use error::ModelError;
pub use offline::OfflineModel;
pub use openai::OpenAiCompatible;
pub use tokens::{estimate_prompt_tokens, estimate_tokens};

use crate::{ChatMessage, Config, ProviderKind};

/// The text deltas of one answer, in order.
pub type Deltas = BoxStream<'static, Result<String, ModelError>>;

/// The events of one answer, in order: text deltas, then (when the model
/// reports it) its usage.
pub type Events = BoxStream<'static, Result<ModelEvent, ModelError>>;

/// What one call asks of a model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelRequest {
    /// The conversation.
    pub messages: Vec<ChatMessage>,
    /// The most tokens the answer may hold; `None`: the model's own limit.
    pub max_output_tokens: Option<u64>,
}

/// The tokens one call used, as the model counts them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    /// The prompt's tokens.
    pub input_tokens: u64,
    /// The answer's tokens.
    pub output_tokens: u64,
}

/// One event of an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelEvent {
    /// More text, and how many tokens it holds (the model's count, or an
    /// estimate when the model gives none per delta): what an answer cut
    /// short has used so far.
    Delta {
        /// The new text.
        text: String,
        /// Its tokens.
        tokens: u64,
    },
    /// The call's usage, reported once, after the last delta; it replaces
    /// the deltas' count.
    Usage(Usage),
}

/// Something that answers a conversation as a stream of text deltas.
#[async_trait]
pub trait Model: Send + Sync + std::fmt::Debug {
    /// Starts answering `messages`.
    ///
    /// # Errors
    ///
    /// When the answer cannot start (the provider refused the request, is
    /// unreachable, ...). Errors after the start come through the stream.
    async fn stream(&self, messages: Vec<ChatMessage>) -> Result<Deltas, ModelError>;

    /// Starts answering `request`, reporting what it uses.
    ///
    /// The default calls [`stream`](Self::stream), ignores
    /// `max_output_tokens`, counts each delta with [`estimate_tokens`] and
    /// reports no usage; the built-in models override it.
    ///
    /// # Errors
    ///
    /// As [`stream`](Self::stream).
    async fn generate(&self, request: ModelRequest) -> Result<Events, ModelError> {
        use futures_util::StreamExt as _;
        let deltas = self.stream(request.messages).await?;
        Ok(deltas
            .map(|d| {
                d.map(|text| ModelEvent::Delta {
                    tokens: estimate_tokens(&text),
                    text,
                })
            })
            .boxed())
    }
}

/// The model the configuration selects: the OpenAI-compatible provider
/// when `model.provider = "openai"` (or, with no provider set, when an API
/// key is configured), else the offline model.
///
/// # Errors
///
/// When the OpenAI provider is selected without an API key, or its HTTP
/// client cannot be built.
pub fn build_model(config: &Config) -> anyhow::Result<Arc<dyn Model>> {
    let m = &config.model;
    let provider = m.provider.unwrap_or(if m.api_key.is_some() {
        ProviderKind::Openai
    } else {
        ProviderKind::Offline
    });
    Ok(match provider {
        ProviderKind::Offline => Arc::new(OfflineModel::new(m.delta_delay)),
        ProviderKind::Openai => {
            let key = m.api_key.clone().ok_or_else(|| {
                anyhow::anyhow!("model.provider = \"openai\" needs an API key (OPENAI_API_KEY)")
            })?;
            Arc::new(OpenAiCompatible::new(
                m.base_url.expose(),
                key,
                &m.name,
                m.connect_timeout,
            )?)
        }
    })
}
