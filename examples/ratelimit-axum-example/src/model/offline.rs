//! The built-in model: no account, no network, the same answer every time.

use std::time::Duration;

use async_trait::async_trait;
use futures_util::StreamExt;

use super::{Deltas, Events, Model, ModelError, ModelEvent, ModelRequest, Usage};
use crate::{ChatMessage, Role};

/// A deterministic model that streams a fixed-form answer word by word,
/// pausing `delta_delay` before each word as a hosted model would.
/// Tests set the delay to zero.
///
/// Its tokenizer is simple and documented, so its usage is exact and
/// predictable: **each word of the answer (a delta) is one token**, and
/// the prompt's tokens are [`estimate_prompt_tokens`](super::estimate_prompt_tokens)
/// (its bytes over four, rounded up). [`generate`](Model::generate)
/// stops after `max_output_tokens` words and then reports its usage.
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

    async fn generate(&self, request: ModelRequest) -> Result<Events, ModelError> {
        let input_tokens = super::estimate_prompt_tokens(&request.messages);
        let limit = request
            .max_output_tokens
            .and_then(|n| usize::try_from(n).ok())
            .unwrap_or(usize::MAX);
        let words: Vec<String> = Self::answer(&request.messages)
            .split_inclusive(' ')
            .take(limit)
            .map(str::to_owned)
            .collect();
        let usage = Usage {
            input_tokens,
            output_tokens: words.len() as u64,
        };
        let delay = self.delta_delay;
        let deltas = futures_util::stream::iter(words).then(move |word| async move {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            Ok(ModelEvent::Delta {
                text: word,
                tokens: 1,
            })
        });
        Ok(deltas
            .chain(futures_util::stream::once(async move {
                Ok(ModelEvent::Usage(usage))
            }))
            .boxed())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn generate_stops_at_max_output_tokens_and_reports_usage() {
        let model = OfflineModel::new(Duration::ZERO);
        let messages = vec![ChatMessage {
            role: Role::User,
            content: "Why is the sky blue?".into(),
        }];
        let events: Vec<ModelEvent> = model
            .generate(ModelRequest {
                messages: messages.clone(),
                max_output_tokens: Some(3),
            })
            .await
            .unwrap()
            .map(Result::unwrap)
            .collect()
            .await;
        assert_eq!(events.len(), 4);
        assert_eq!(
            events[0],
            ModelEvent::Delta {
                text: "You ".into(),
                tokens: 1
            }
        );
        assert_eq!(
            events[3],
            ModelEvent::Usage(Usage {
                input_tokens: 5,
                output_tokens: 3
            })
        );
        // Unbounded: the whole answer, one token per word.
        let all = model
            .generate(ModelRequest {
                messages: messages.clone(),
                max_output_tokens: None,
            })
            .await
            .unwrap()
            .count()
            .await;
        let words = OfflineModel::answer(&messages).split_inclusive(' ').count();
        assert_eq!(all, words + 1);
    }
}
