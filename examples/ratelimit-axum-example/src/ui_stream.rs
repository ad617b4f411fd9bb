//! The ai SDK v5 UI message stream: what `toUIMessageStreamResponse()`
//! sends for a text answer.

use std::convert::Infallible;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use futures_util::{FutureExt as _, StreamExt};
use serde::Serialize;
use tokio::sync::mpsc;

use crate::{ChatMessage, Model, ModelError};

/// The response headers of a UI message stream.
pub const UI_MESSAGE_STREAM_HEADERS: [(&str, &str); 4] = [
    ("content-type", "text/event-stream"),
    ("cache-control", "no-cache"),
    ("x-vercel-ai-ui-message-stream", "v1"),
    ("x-accel-buffering", "no"),
];

/// The id of the one text part of an answer.
const TEXT_ID: &str = "txt-0";

/// One chunk of the stream, serialized as the SDK's `uiMessageChunkSchema`
/// expects.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum UiChunk {
    /// The message begins.
    Start,
    /// A model call begins.
    StartStep,
    /// A text part begins.
    TextStart {
        /// The part's id.
        id: String,
    },
    /// More text of a part.
    TextDelta {
        /// The part's id.
        id: String,
        /// The new text.
        delta: String,
    },
    /// A text part ends.
    TextEnd {
        /// The part's id.
        id: String,
    },
    /// A model call ends.
    FinishStep,
    /// The message ends.
    Finish {
        /// Why: `stop` for a complete answer.
        #[serde(rename = "finishReason")]
        finish_reason: &'static str,
    },
    /// Metadata for the message (the gateway's usage and token budget),
    /// which the SDK merges into `message.metadata`.
    MessageMetadata {
        /// Any JSON value.
        #[serde(rename = "messageMetadata")]
        message_metadata: serde_json::Value,
    },
    /// The answer failed; the text is safe to show.
    Error {
        /// What the user sees.
        #[serde(rename = "errorText")]
        error_text: String,
    },
}

impl UiChunk {
    /// The chunk as one server-sent event: `data: <compact JSON>\n\n`.
    #[must_use]
    pub fn to_event(&self) -> Bytes {
        // A plain enum of strings always serializes.
        let json = serde_json::to_string(self).expect("chunks serialize");
        Bytes::from(format!("data: {json}\n\n"))
    }
}

pub(crate) const DONE: &[u8] = b"data: [DONE]\n\n";

/// The streaming response for `messages`: the model runs in its own task
/// and its deltas are framed as they come. A slow client holds the model
/// back (the channel is small); a client that leaves stops it.
pub(crate) fn response(
    model: Arc<dyn Model>,
    messages: Vec<ChatMessage>,
    idle_timeout: Duration,
) -> Response {
    // `Err(Gone)` only means the client went away; nothing is left to do.
    spawn_stream(move |tx| async move {
        let _ = produce(&*model, messages, idle_timeout, &tx).await;
    })
}

/// A UI message stream response whose events `produce` sends, run on a
/// task of its own (a small channel: a slow client holds it back, a
/// client that leaves closes it). A panic in `produce` still ends the
/// stream as the SDK expects: an error chunk, then `[DONE]`.
pub(crate) fn spawn_stream<P, F>(produce: P) -> Response
where
    P: FnOnce(mpsc::Sender<Bytes>) -> F + Send + 'static,
    F: Future<Output = ()> + Send,
{
    let (tx, rx) = mpsc::channel::<Bytes>(8);
    tokio::spawn(async move {
        let run = AssertUnwindSafe(produce(tx.clone())).catch_unwind();
        if run.await.is_err() {
            tracing::error!("the model panicked while streaming");
            let error = UiChunk::Error {
                error_text: "The model failed to answer.".into(),
            };
            let _ = tx.send(error.to_event()).await;
            let _ = tx.send(Bytes::from_static(DONE)).await;
        }
    });
    stream_response(rx)
}

/// A UI message stream response whose events come from `rx`; dropping the
/// response (the client left) closes `rx`, which the sender sees.
pub(crate) fn stream_response(rx: mpsc::Receiver<Bytes>) -> Response {
    let body = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<_, Infallible>(b), rx))
    });
    let mut res = Response::new(Body::from_stream(body));
    for (name, value) in UI_MESSAGE_STREAM_HEADERS {
        res.headers_mut()
            .insert(name, value.parse().expect("static header values are valid"));
    }
    res
}

struct Gone;

/// Why the answer stopped early.
enum Stop {
    Model(ModelError),
    Gone,
}

impl From<ModelError> for Stop {
    fn from(err: ModelError) -> Self {
        Self::Model(err)
    }
}

impl From<Gone> for Stop {
    fn from(_: Gone) -> Self {
        Self::Gone
    }
}

async fn produce(
    model: &dyn Model,
    messages: Vec<ChatMessage>,
    idle_timeout: Duration,
    tx: &mpsc::Sender<Bytes>,
) -> Result<(), Gone> {
    let send = |chunk: UiChunk| async move { tx.send(chunk.to_event()).await.map_err(|_| Gone) };
    send(UiChunk::Start).await?;
    send(UiChunk::StartStep).await?;

    let outcome: Result<bool, Stop> = async {
        let mut deltas = tokio::time::timeout(idle_timeout, model.stream(messages))
            .await
            .map_err(|_| ModelError::Timeout)??;
        let mut started = false;
        // Each wait is bounded, so a stalled upstream cannot hold the
        // connection (or a graceful shutdown) forever.
        while let Some(delta) = tokio::time::timeout(idle_timeout, deltas.next())
            .await
            .map_err(|_| ModelError::Timeout)?
        {
            let delta = delta?;
            if delta.is_empty() {
                continue;
            }
            if !started {
                started = true;
                send(UiChunk::TextStart { id: TEXT_ID.into() }).await?;
            }
            send(UiChunk::TextDelta {
                id: TEXT_ID.into(),
                delta,
            })
            .await?;
        }
        Ok(started)
    }
    .await;

    match outcome {
        Ok(started) => {
            if started {
                send(UiChunk::TextEnd { id: TEXT_ID.into() }).await?;
            }
            send(UiChunk::FinishStep).await?;
            send(UiChunk::Finish {
                finish_reason: "stop",
            })
            .await?;
        }
        Err(Stop::Gone) => return Err(Gone),
        Err(Stop::Model(err)) => {
            tracing::error!(error = %err, "model failed while streaming");
            send(UiChunk::Error {
                error_text: err.public_text().into(),
            })
            .await?;
        }
    }
    tx.send(Bytes::from_static(DONE)).await.map_err(|_| Gone)
}
