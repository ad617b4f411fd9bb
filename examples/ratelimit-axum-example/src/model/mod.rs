//! The models that answer: a trait, the offline default and an
//! OpenAI-compatible provider.

mod error;
mod offline;
mod openai;
mod sse;

use std::sync::Arc;

use async_trait::async_trait;
use futures_util::stream::BoxStream;

pub use error::ModelError;
pub use offline::OfflineModel;
pub use openai::OpenAiCompatible;

use crate::{ChatMessage, Config, ProviderKind};

/// The text deltas of one answer, in order.
pub type Deltas = BoxStream<'static, Result<String, ModelError>>;

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
