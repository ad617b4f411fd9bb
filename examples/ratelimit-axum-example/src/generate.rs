//! `POST /api/generate`.

use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use bytes::Bytes;

use crate::app::AppState;
use crate::{parse_chat_request, ui_stream, AppError};

/// Reads the chat request (the rate limit has already passed) and streams
/// the model's answer.
pub(crate) async fn generate(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, AppError> {
    let body = body.map_err(|rejection| match rejection.status() {
        StatusCode::PAYLOAD_TOO_LARGE => AppError::PayloadTooLarge,
        _ => AppError::BadRequest("Could not read the request body.".into()),
    })?;
    let messages = parse_chat_request(&body)?;
    Ok(ui_stream::response(
        state.model,
        messages,
        state.stream_idle_timeout,
    ))
}
