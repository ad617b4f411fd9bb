//! The built-in model: no account, no network, the same answer every time.

use std::time::Duration;

use async_trait::async_trait;
use futures_util::StreamExt;

use super::{Deltas, Model, ModelError};
use crate::{ChatMessage, Role};

/// A deterministic model that streams a fixed-form answer word by word,
/// pausing `delta_delay` before each word as a hosted model would.
/// Tests set the delay to zero.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use futures_util::StreamExt;
/// use ratelimit_axum_example::{ChatMessage, Model, OfflineModel, Role};
///
/// # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
/// let model = OfflineModel::new(Duration::ZERO);
/// let messages = vec![ChatMessage { role: Role::User, content: "Hello".into() }];
/// let deltas: Vec<String> = model.stream(messages.clone()).await.unwrap()
///     .map(|d| d.unwrap()).collect().await;
/// assert!(deltas.len() > 5);
/// assert_eq!(deltas.concat(), OfflineModel::answer(&messages));
/// # });
/// ```
#[derive(Debug, Clone)]
pub struct OfflineModel {
    delta_delay: Duration,
}

impl OfflineModel {
    /// A model pausing `delta_delay` before each delta.
    #[must_use]
    pub fn new(delta_delay: Duration) -> Self {
        Self { delta_delay }
    }

    /// The full answer to `messages`.
    #[must_use]
    pub fn answer(messages: &[ChatMessage]) -> String {
        let question = messages
            .iter()
            .rev()
            .find(|m| m.role == Role::User)
            .map(|m| m.content.trim())
            .unwrap_or_default();
        let quoted: String = question.chars().take(80).collect();
        let ellipsis = if question.chars().count() > 80 {
            "…"
        } else {
            ""
        };
        format!(
            "You said: \"{quoted}{ellipsis}\". This is the built-in offline model of the \
             ratelimit example: it needs no account and no network, and it streams the same \
             answer word by word every time. Set OPENAI_API_KEY to talk to a real model."
        )
    }
}

#[async_trait]
impl Model for OfflineModel {
    async fn stream(&self, messages: Vec<ChatMessage>) -> Result<Deltas, ModelError> {
        let answer = Self::answer(&messages);
        // Each word keeps the space after it, so the deltas concatenate
        // back to the answer exactly.
        let words: Vec<String> = answer.split_inclusive(' ').map(str::to_owned).collect();
        let delay = self.delta_delay;
        Ok(futures_util::stream::iter(words)
            .then(move |word| async move {
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                Ok(word)
            })
            .boxed())
    }
}
