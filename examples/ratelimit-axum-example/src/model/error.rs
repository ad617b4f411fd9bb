//! Why a model could not answer.

use std::fmt;

/// A model failure. [`Display`](fmt::Display) has the details, for logs;
/// [`public_text`](Self::public_text) is what a user may see.
#[derive(Debug)]
#[non_exhaustive]
pub enum ModelError {
    /// The provider answered with an error status or an error event.
    Upstream {
        /// The HTTP status, when the error came as one.
        status: Option<u16>,
        /// The provider's message (may name accounts or keys: log only).
        detail: String,
    },
    /// The provider could not be reached, or the connection broke.
    Transport(String),
    /// The provider's stream was not what the protocol says.
    Protocol(String),
    /// No delta within the idle timeout.
    Timeout,
}

impl ModelError {
    /// A short message safe to stream to the user as the `errorText` of
    /// an error chunk: it never carries the provider's own text.
    #[must_use]
    pub fn public_text(&self) -> &'static str {
        match self {
            Self::Upstream {
                status: Some(401 | 403),
                ..
            } => "The model provider refused the request.",
            Self::Upstream {
                status: Some(429), ..
            } => "The model provider is busy; try again later.",
            Self::Timeout => "The model took too long to answer.",
            _ => "The model failed to answer.",
        }
    }
}

impl fmt::Display for ModelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Upstream {
                status: Some(status),
                detail,
            } => write!(f, "provider answered {status}: {detail}"),
            Self::Upstream {
                status: None,
                detail,
            } => write!(f, "provider error: {detail}"),
            Self::Transport(detail) => write!(f, "provider unreachable: {detail}"),
            Self::Protocol(detail) => write!(f, "provider stream malformed: {detail}"),
            Self::Timeout => f.write_str("no answer from the model within the idle timeout"),
        }
    }
}

impl std::error::Error for ModelError {}
