//! Streaming an answer while holding its reservation: renewing the lease,
//! counting the tokens generated, and settling with them however the
//! stream ends.

use std::sync::Arc;
use std::time::Duration;

use axum::response::Response;
use bytes::Bytes;
use futures_util::StreamExt as _;
use ratelimit_core::{ErrorChain, Reservation, SetDecision};
use serde_json::json;
use tokio::sync::mpsc;
use tokio::time::{Instant, Interval};

use crate::model::{Model, ModelError, ModelEvent, ModelRequest, Usage};
use crate::ui_stream::{spawn_stream, UiChunk, DONE};

/// The id of the one text part of an answer.
const TEXT_ID: &str = "txt-0";

/// An admitted answer's reservation, and what to settle it with.
pub(crate) struct Settlement {
    pub(crate) reservation: Reservation,
    /// The position of the `tokens` policy.
    pub(crate) tokens: usize,
    /// The prompt's estimated tokens: charged when the model reports no
    /// usage of its own.
    pub(crate) prompt_tokens: u64,
}

/// The tokens used so far.
#[derive(Debug, Clone, Copy)]
struct Used {
    prompt_estimate: u64,
    /// The deltas' tokens so far.
    output: u64,
    /// The model's own count, once it reported it.
    reported: Option<Usage>,
}

impl Used {
    /// The model's count when it gave one, else the prompt's estimate and
    /// the deltas' tokens.
    fn usage(&self) -> Usage {
        self.reported.unwrap_or(Usage {
            input_tokens: self.prompt_estimate,
            output_tokens: self.output,
        })
    }
}

impl Settlement {
    /// Settles with `usage` on `tokens` (every other policy with what it
    /// took, the lease released); the decision after it, or `None` when the
    /// settle failed (logged: the estimate stays charged, the lease expires
    /// by its TTL).
    async fn settle(self, usage: Usage) -> Option<SetDecision> {
        let mut actual = self.reservation.receipt().taken();
        actual[self.tokens] = usage.input_tokens.saturating_add(usage.output_tokens);
        match self.reservation.settle(&actual).await {
            Ok(after) => Some(after),
            Err(err) => {
                tracing::warn!(
                    error = %ErrorChain(&err),
                    "cannot settle an answer's tokens; its estimate stays charged"
                );
                None
            }
        }
    }
}

/// Why an answer stopped early.
enum Stop {
    Model(ModelError),
    /// The lease was lost (it expired, and its slot may be taken).
    LeaseLost,
    /// The client went away.
    Gone,
}

impl From<ModelError> for Stop {
    fn from(err: ModelError) -> Self {
        Self::Model(err)
    }
}

/// The streaming response for `request`: the model runs in its own task,
/// which owns the reservation and settles it when the answer ends:
///
/// - complete: with the model's reported usage (or the prompt's estimate
///   and the deltas' tokens), then a `message-metadata` chunk with the
///   usage and the tokens left;
/// - the client left (the response body was dropped): the model call is
///   dropped at once (for the OpenAI provider, its connection), then the
///   tokens generated so far and the prompt are charged and the lease is
///   released;
/// - the model failed: the same, and an error chunk.
///
/// A panic drops the reservation: the lease is released at once and the
/// estimate stays charged.
pub(crate) fn response(
    model: Arc<dyn Model>,
    request: ModelRequest,
    idle_timeout: Duration,
    settlement: Settlement,
) -> Response {
    spawn_stream(move |tx| async move {
        produce(&*model, request, idle_timeout, &tx, settlement).await;
    })
}

async fn produce(
    model: &dyn Model,
    request: ModelRequest,
    idle_timeout: Duration,
    tx: &mpsc::Sender<Bytes>,
    mut settlement: Settlement,
) {
    let mut used = Used {
        prompt_estimate: settlement.prompt_tokens,
        output: 0,
        reported: None,
    };
    let tokens = settlement.tokens;
    let outcome = run(
        model,
        request,
        idle_timeout,
        tx,
        &mut settlement.reservation,
        &mut used,
    )
    .await;
    // The model's stream is dropped by now: an upstream call is cancelled
    // before the settle is awaited.
    let usage = used.usage();
    let after = settlement.settle(usage).await;
    // Sends from here on fail only when the client has gone: nothing is
    // left to do then.
    let send = |chunk: UiChunk| tx.send(chunk.to_event());
    match outcome {
        Ok(started) => {
            if started {
                let _ = send(UiChunk::TextEnd { id: TEXT_ID.into() }).await;
            }
            let _ = send(UiChunk::FinishStep).await;
            let _ = send(metadata(usage, after.as_ref(), tokens)).await;
            let _ = send(UiChunk::Finish {
                finish_reason: "stop",
            })
            .await;
        }
        Err(Stop::Gone) => return,
        Err(Stop::Model(err)) => {
            tracing::error!(error = %err, "model failed while streaming");
            let _ = send(metadata(usage, after.as_ref(), tokens)).await;
            let _ = send(UiChunk::Error {
                error_text: err.public_text().into(),
            })
            .await;
        }
        Err(Stop::LeaseLost) => {
            tracing::warn!("an answer's stream lease was lost; stopping it");
            let _ = send(metadata(usage, after.as_ref(), tokens)).await;
            let _ = send(UiChunk::Error {
                error_text: "The answer was stopped.".into(),
            })
            .await;
        }
    }
    let _ = tx.send(Bytes::from_static(DONE)).await;
}

/// The `message-metadata` chunk: the usage, and the tokens left after the
/// settle when it succeeded.
fn metadata(usage: Usage, after: Option<&SetDecision>, tokens: usize) -> UiChunk {
    let mut meta = json!({
        "usage": {
            "inputTokens": usage.input_tokens,
            "outputTokens": usage.output_tokens,
            "totalTokens": usage.input_tokens.saturating_add(usage.output_tokens),
        },
    });
    if let Some(d) = after.and_then(|after| after.decisions.get(tokens)) {
        meta["remainingTokens"] = json!(d.remaining);
    }
    UiChunk::MessageMetadata {
        message_metadata: meta,
    }
}

/// Streams the answer's text; `Ok(started)` when the model finished
/// (`started`: a text part was opened).
async fn run(
    model: &dyn Model,
    request: ModelRequest,
    idle_timeout: Duration,
    tx: &mpsc::Sender<Bytes>,
    reservation: &mut Reservation,
    used: &mut Used,
) -> Result<bool, Stop> {
    let send =
        |chunk: UiChunk| async move { tx.send(chunk.to_event()).await.map_err(|_| Stop::Gone) };
    send(UiChunk::Start).await?;
    send(UiChunk::StartStep).await?;
    let mut events = tokio::select! {
        () = tx.closed() => return Err(Stop::Gone),
        started = tokio::time::timeout(idle_timeout, model.generate(request)) => {
            started.map_err(|_| ModelError::Timeout)??
        }
    };
    let mut renew = reservation
        .renew_every()
        .map(|every| tokio::time::interval_at(Instant::now() + every, every));
    let mut deadline = Instant::now() + idle_timeout;
    let mut started = false;
    loop {
        // Each wait is bounded by the idle deadline; the client leaving
        // and the lease's renewal are seen while the model is silent.
        let event = tokio::select! {
            biased;
            () = tx.closed() => return Err(Stop::Gone),
            () = tick(&mut renew) => {
                match reservation.renew().await {
                    Ok(true) => {}
                    Ok(false) => return Err(Stop::LeaseLost),
                    Err(err) => tracing::warn!(
                        error = %ErrorChain(&err),
                        "cannot renew an answer's stream lease; trying again"
                    ),
                }
                continue;
            }
            () = tokio::time::sleep_until(deadline) => return Err(ModelError::Timeout.into()),
            event = events.next() => event,
        };
        let Some(event) = event else {
            return Ok(started);
        };
        deadline = Instant::now() + idle_timeout;
        match event? {
            ModelEvent::Delta { text, tokens } => {
                used.output = used.output.saturating_add(tokens);
                if text.is_empty() {
                    continue;
                }
                if !started {
                    started = true;
                    send(UiChunk::TextStart { id: TEXT_ID.into() }).await?;
                }
                send(UiChunk::TextDelta {
                    id: TEXT_ID.into(),
                    delta: text,
                })
                .await?;
            }
            ModelEvent::Usage(usage) => used.reported = Some(usage),
        }
    }
}

/// The next tick of `interval`, or never without one.
async fn tick(interval: &mut Option<Interval>) {
    match interval {
        Some(interval) => {
            interval.tick().await;
        }
        None => std::future::pending().await,
    }
}
