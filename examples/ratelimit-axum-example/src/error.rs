//! The service's errors and the responses they become.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

/// Why a request failed before any answer was streamed.
///
/// The client sees a short plain-text reason; for internal errors it sees
/// only a generic line while the cause is logged.
#[derive(Debug)]
pub enum AppError {
    /// `400`: the request body is not a chat request; the reason is shown.
    BadRequest(String),
    /// `413`: the body is over the configured size (or announced so).
    PayloadTooLarge,
    /// `415`: the body is not declared as `application/json`.
    UnsupportedMediaType,
    /// `500`: something inside failed; logged, never shown.
    Internal(anyhow::Error),
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        match self {
            Self::BadRequest(reason) => (StatusCode::BAD_REQUEST, reason).into_response(),
            Self::PayloadTooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "The request body is too large.",
            )
                .into_response(),
            Self::UnsupportedMediaType => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "The request body must be JSON, sent with Content-Type: application/json.",
            )
                .into_response(),
            Self::Internal(err) => {
                tracing::error!(error = ?err, "request failed");
                (StatusCode::INTERNAL_SERVER_ERROR, "Internal error.").into_response()
            }
        }
    }
}
