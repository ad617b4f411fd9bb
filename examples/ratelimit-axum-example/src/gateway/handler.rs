//! `POST /api/generate` in the gateway profile.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{FromRequest as _, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse as _, Response};
use ratelimit_core::{ErrorChain, Reservation};

use super::responses::{rate_limited, too_large, unauthorized, unavailable, wants_json};
use super::stream::{self, Settlement};
use super::GatewayState;
use crate::model::{estimate_prompt_tokens, ModelRequest};
use crate::{json_body, parse_chat_request, AppError};

/// Identifies the caller (`401` before anything is read), reads and
/// parses the body (bounded), reserves the prompt's tokens plus the
/// tier's `max_output_tokens`, a request and a stream in one set check,
/// and streams the answer holding the reservation.
pub(crate) async fn generate(State(state): State<GatewayState>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let json = wants_json(&parts.headers);
    // Loaded once: this request checks and settles on the tiers it saw,
    // whatever is swapped in meanwhile.
    let tiers = state.gateway.current.0.load_full();
    let caller = match super::identity::identify(&parts, &tiers.keys, &state.gateway.client_ip) {
        Ok(caller) => caller,
        Err(err) => return unauthorized(err),
    };
    let Some(tier) = tiers.tiers.get(&caller.tier).map(Arc::clone) else {
        return AppError::Internal(anyhow::anyhow!("a key names a tier that does not exist"))
            .into_response();
    };
    let options = &state.options;
    if let Err(refusal) = json_body::check(&parts.headers, options.max_body_bytes) {
        return refusal.into_response();
    }
    let body = match Bytes::from_request(Request::from_parts(parts, body), &()).await {
        Ok(body) => body,
        Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            return AppError::PayloadTooLarge.into_response()
        }
        Err(_) => {
            return AppError::BadRequest("Could not read the request body.".into()).into_response()
        }
    };
    let messages = match parse_chat_request(&body) {
        Ok(messages) => messages,
        Err(err) => return err.into_response(),
    };
    let prompt_tokens = estimate_prompt_tokens(&messages);
    let estimate = prompt_tokens.saturating_add(tier.max_output_tokens);
    if estimate > tier.tokens_limit() {
        return too_large(&tier, estimate);
    }
    let costs = tier.costs(estimate);
    let checked = tokio::time::timeout(
        options.check_timeout,
        Reservation::acquire(Arc::clone(&tier.limiter), &caller.key, &costs),
    )
    .await;
    let reservation = match checked {
        Ok(Ok(Ok(reservation))) => reservation,
        Ok(Ok(Err(denied))) => {
            state.gateway.outage.answered();
            return rate_limited(&tier, &denied, json, &options.denied_body);
        }
        Ok(Err(err)) => {
            state.gateway.outage.failed(&ErrorChain(&err));
            return unavailable(json);
        }
        Err(_) => {
            state.gateway.outage.failed(&"the check timed out");
            return unavailable(json);
        }
    };
    state.gateway.outage.answered();
    tracing::debug!(tier = %tier.name, estimate, "answer admitted");
    let decision = reservation.decision().clone();
    let settlement = Settlement {
        reservation,
        tokens: tier.tokens,
        prompt_tokens,
    };
    let request = ModelRequest {
        messages,
        max_output_tokens: Some(tier.max_output_tokens),
    };
    let mut res = stream::response(
        Arc::clone(&state.model),
        request,
        options.stream_idle_timeout,
        settlement,
    );
    tier.headers.write(res.headers_mut(), &decision);
    res
}
