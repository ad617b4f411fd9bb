//! An OpenAI-compatible chat-completions provider, streaming.

use std::collections::VecDeque;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::stream::BoxStream;
use futures_util::StreamExt;
use serde_json::{json, Value};

use super::sse::DataLines;
use super::{Deltas, Events, Model, ModelError, ModelEvent, ModelRequest, Usage};
use crate::{ChatMessage, Secret, SecretUrl};

/// `POST {base_url}/chat/completions` with `"stream": true`, reading the
/// `choices[0].delta.content` of each event until `data: [DONE]`.
///
/// [`generate`](Model::generate) also sends `max_tokens` (the request's
/// `max_output_tokens`) and `stream_options.include_usage`, and reports
/// the `usage` (`prompt_tokens`, `completion_tokens`) of the last event;
/// each delta counts [`estimate_tokens`](super::estimate_tokens) of its
/// text until then, which is what an answer cut short is charged.
///
/// Works with OpenAI and with the many servers that speak its protocol
/// (selected by `OPENAI_BASE_URL`). An error status before the stream, an
/// `error` event inside it, a broken connection or a stream that ends
/// without `[DONE]` are [`ModelError`]s.
///
/// Its `Debug` shows neither the key nor credentials in the URL, and an
/// error naming the key (a provider echoing it back) has it redacted.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use ratelimit_axum_example::{OpenAiCompatible, Secret};
///
/// let model = OpenAiCompatible::new(
///     "https://user:hunter2@llm.internal/v1",
///     Secret::new("sk-123".to_owned()),
///     "gpt-4o-mini",
///     Duration::from_secs(5),
/// ).unwrap();
/// let debug = format!("{model:?}");
/// assert!(!debug.contains("sk-123") && !debug.contains("hunter2"), "{debug}");
/// assert!(debug.contains("llm.internal/v1/chat/completions"), "{debug}");
/// ```
#[derive(Debug, Clone)]
pub struct OpenAiCompatible {
    client: reqwest::Client,
    credentials: Credentials,
    model: String,
}

/// What the provider is reached with, and what must be scrubbed from
/// every message that might quote it.
#[derive(Debug, Clone)]
struct Credentials {
    url: SecretUrl,
    api_key: Secret<String>,
}

impl OpenAiCompatible {
    /// A provider at `base_url` (such as `https://api.openai.com/v1`)
    /// answering with `model`.
    ///
    /// # Errors
    ///
    /// When the HTTP client cannot be built.
    pub fn new(
        base_url: &str,
        api_key: Secret<String>,
        model: &str,
        connect_timeout: Duration,
    ) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder()
            .connect_timeout(connect_timeout)
            .build()?;
        Ok(Self {
            client,
            credentials: Credentials {
                url: SecretUrl::new(format!(
                    "{}/chat/completions",
                    base_url.trim_end_matches('/')
                )),
                api_key,
            },
            model: model.to_owned(),
        })
    }
}

#[async_trait]
impl Model for OpenAiCompatible {
    async fn stream(&self, messages: Vec<ChatMessage>) -> Result<Deltas, ModelError> {
        let body = json!({ "model": self.model, "messages": wire(&messages), "stream": true });
        let events = self.call(&body).await?;
        Ok(events
            .filter_map(|e| async move {
                match e {
                    Ok(ModelEvent::Delta { text, .. }) => Some(Ok(text)),
                    Ok(ModelEvent::Usage(_)) => None,
                    Err(err) => Some(Err(err)),
                }
            })
            .boxed())
    }

    async fn generate(&self, request: ModelRequest) -> Result<Events, ModelError> {
        let mut body = json!({
            "model": self.model,
            "messages": wire(&request.messages),
            "stream": true,
            "stream_options": { "include_usage": true },
        });
        if let Some(max) = request.max_output_tokens {
            body["max_tokens"] = json!(max);
        }
        self.call(&body).await
    }
}

/// The messages in the chat-completions form.
fn wire(messages: &[ChatMessage]) -> Vec<Value> {
    messages
        .iter()
        .map(|m| json!({ "role": m.role.as_str(), "content": m.content }))
        .collect()
}

impl OpenAiCompatible {
    /// Sends `body` and streams the answer's events.
    async fn call(&self, body: &Value) -> Result<Events, ModelError> {
        let c = &self.credentials;
        let res = self
            .client
            .post(c.url.expose())
            .bearer_auth(c.api_key.expose())
            .json(body)
            .send()
            .await
            .map_err(|e| c.transport(e))?;
        let status = res.status();
        if !status.is_success() {
            let detail = res.text().await.unwrap_or_default();
            return Err(ModelError::Upstream {
                status: Some(status.as_u16()),
                detail: c.scrub(&detail.chars().take(500).collect::<String>()),
            });
        }
        Ok(deltas(res.bytes_stream().boxed(), c.clone()))
    }
}

impl Credentials {
    /// A transport error with its causes, naming the URL only in its
    /// redacted form: reqwest's own message quotes the URL it was given.
    fn transport(&self, err: reqwest::Error) -> ModelError {
        let err = err.without_url();
        let chain = ratelimit_core::ErrorChain(&err).to_string();
        ModelError::Transport(format!("{} ({})", self.scrub(&chain), self.url))
    }

    /// `err` with its detail scrubbed.
    fn scrubbed(&self, err: ModelError) -> ModelError {
        match err {
            ModelError::Upstream { status, detail } => ModelError::Upstream {
                status,
                detail: self.scrub(&detail),
            },
            ModelError::Transport(detail) => ModelError::Transport(self.scrub(&detail)),
            ModelError::Protocol(detail) => ModelError::Protocol(self.scrub(&detail)),
            ModelError::Timeout => ModelError::Timeout,
        }
    }

    /// `text` with the key and the URL's credentials taken out: a provider
    /// may echo what it was sent in its error message.
    fn scrub(&self, text: &str) -> String {
        let key = self.api_key.expose();
        let text = if key.is_empty() {
            text.to_owned()
        } else {
            text.replace(key.as_str(), "[redacted]")
        };
        text.replace(self.url.expose(), &self.url.to_string())
    }
}

struct State {
    body: BoxStream<'static, reqwest::Result<bytes::Bytes>>,
    lines: DataLines,
    pending: VecDeque<Result<ModelEvent, ModelError>>,
    done: bool,
    credentials: Credentials,
}

fn deltas(
    body: BoxStream<'static, reqwest::Result<bytes::Bytes>>,
    credentials: Credentials,
) -> Events {
    let state = State {
        body,
        lines: DataLines::default(),
        pending: VecDeque::new(),
        done: false,
        credentials,
    };
    futures_util::stream::unfold(state, |mut s| async move {
        loop {
            if let Some(item) = s.pending.pop_front() {
                return Some((item, s));
            }
            if s.done {
                return None;
            }
            match s.body.next().await {
                Some(Ok(bytes)) => {
                    for data in s.lines.push(&bytes) {
                        match event(&data) {
                            Event::Done => s.done = true,
                            Event::Delta(text) => s.pending.push_back(Ok(ModelEvent::Delta {
                                tokens: super::estimate_tokens(&text),
                                text,
                            })),
                            Event::Usage(usage) => {
                                s.pending.push_back(Ok(ModelEvent::Usage(usage)));
                            }
                            Event::Nothing => {}
                            Event::Failed(err) => {
                                s.pending.push_back(Err(s.credentials.scrubbed(err)));
                                s.done = true;
                            }
                        }
                        if s.done {
                            break;
                        }
                    }
                }
                Some(Err(e)) => {
                    s.pending.push_back(Err(s.credentials.transport(e)));
                    s.done = true;
                }
                None => {
                    s.pending.push_back(Err(ModelError::Protocol(
                        "the stream ended without [DONE]".into(),
                    )));
                    s.done = true;
                }
            }
        }
    })
    .boxed()
}

enum Event {
    Done,
    Delta(String),
    Usage(Usage),
    Nothing,
    Failed(ModelError),
}

fn event(data: &str) -> Event {
    if data.trim() == "[DONE]" {
        return Event::Done;
    }
    let value: Value = match serde_json::from_str(data) {
        Ok(v) => v,
        Err(e) => return Event::Failed(ModelError::Protocol(format!("bad event JSON: {e}"))),
    };
    if let Some(error) = value.get("error") {
        return Event::Failed(ModelError::Upstream {
            status: None,
            detail: error.to_string().chars().take(500).collect(),
        });
    }
    match value
        .pointer("/choices/0/delta/content")
        .and_then(Value::as_str)
    {
        Some(text) if !text.is_empty() => Event::Delta(text.to_owned()),
        // Role-only first events and finish events; with
        // `include_usage`, the last event before [DONE] has no choices
        // and the usage.
        _ => match usage(&value) {
            Some(usage) => Event::Usage(usage),
            None => Event::Nothing,
        },
    }
}

/// The `usage` object of an event, when it has one with both counts.
fn usage(value: &Value) -> Option<Usage> {
    let usage = value.get("usage")?;
    Some(Usage {
        input_tokens: usage.get("prompt_tokens")?.as_u64()?,
        output_tokens: usage.get("completion_tokens")?.as_u64()?,
    })
}
