//! An OpenAI-compatible chat-completions provider, streaming.

use std::collections::VecDeque;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::stream::BoxStream;
use futures_util::StreamExt;
use serde_json::{json, Value};

use super::sse::DataLines;
use super::{Deltas, Model, ModelError};
use crate::ChatMessage;

/// `POST {base_url}/chat/completions` with `"stream": true`, reading the
/// `choices[0].delta.content` of each event until `data: [DONE]`.
///
/// Works with OpenAI and with the many servers that speak its protocol
/// (selected by `OPENAI_BASE_URL`). An error status before the stream, an
/// `error` event inside it, a broken connection or a stream that ends
/// without `[DONE]` are [`ModelError`]s.
#[derive(Debug, Clone)]
pub struct OpenAiCompatible {
    client: reqwest::Client,
    url: String,
    api_key: String,
    model: String,
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
        api_key: String,
        model: &str,
        connect_timeout: Duration,
    ) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder()
            .connect_timeout(connect_timeout)
            .build()?;
        Ok(Self {
            client,
            url: format!("{}/chat/completions", base_url.trim_end_matches('/')),
            api_key,
            model: model.to_owned(),
        })
    }
}

#[async_trait]
impl Model for OpenAiCompatible {
    async fn stream(&self, messages: Vec<ChatMessage>) -> Result<Deltas, ModelError> {
        let messages: Vec<Value> = messages
            .iter()
            .map(|m| json!({ "role": m.role.as_str(), "content": m.content }))
            .collect();
        let res = self
            .client
            .post(&self.url)
            .bearer_auth(&self.api_key)
            .json(&json!({ "model": self.model, "messages": messages, "stream": true }))
            .send()
            .await
            .map_err(|e| ModelError::Transport(e.to_string()))?;
        let status = res.status();
        if !status.is_success() {
            let detail = res.text().await.unwrap_or_default();
            return Err(ModelError::Upstream {
                status: Some(status.as_u16()),
                detail: detail.chars().take(500).collect(),
            });
        }
        Ok(deltas(res.bytes_stream().boxed()))
    }
}

struct State {
    body: BoxStream<'static, reqwest::Result<bytes::Bytes>>,
    lines: DataLines,
    pending: VecDeque<Result<String, ModelError>>,
    done: bool,
}

fn deltas(body: BoxStream<'static, reqwest::Result<bytes::Bytes>>) -> Deltas {
    let state = State {
        body,
        lines: DataLines::default(),
        pending: VecDeque::new(),
        done: false,
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
                            Event::Delta(text) => s.pending.push_back(Ok(text)),
                            Event::Nothing => {}
                            Event::Failed(err) => {
                                s.pending.push_back(Err(err));
                                s.done = true;
                            }
                        }
                        if s.done {
                            break;
                        }
                    }
                }
                Some(Err(e)) => {
                    s.pending
                        .push_back(Err(ModelError::Transport(e.to_string())));
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
        // Role-only first events, finish events and usage events.
        _ => Event::Nothing,
    }
}
