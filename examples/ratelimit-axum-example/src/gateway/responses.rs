//! The gateway's refusals: `401`, `413`, `429` and `503`, in JSON when
//! the client asks for it.

use axum::http::header::{ACCEPT, CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse as _, Response};
use ratelimit_core::SetDecision;
use ratelimit_tower::ceil_seconds;
use serde_json::json;

use super::identity::AuthError;
use super::tiers::Tier;

/// Whether the client accepts `application/json` (an `Accept` naming it,
/// in any case, among other types).
pub(crate) fn wants_json(headers: &HeaderMap) -> bool {
    headers.get_all(ACCEPT).iter().any(|value| {
        value.to_str().is_ok_and(|v| {
            v.split(',').any(|t| {
                t.split(';')
                    .next()
                    .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"))
            })
        })
    })
}

fn json_response(status: StatusCode, body: &serde_json::Value) -> Response {
    let mut res = (status, body.to_string()).into_response();
    res.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    res
}

/// `401` with a JSON error, whatever the client accepts: a missing
/// credential is not a quota, and API clients read JSON.
pub(crate) fn unauthorized(err: AuthError) -> Response {
    let (kind, message) = match err {
        AuthError::Malformed => (
            "invalid_authorization",
            "Expected one `Authorization: Bearer <API key>` header.",
        ),
        AuthError::UnknownKey => ("invalid_api_key", "The API key is not valid."),
        AuthError::NoClientAddress => (
            "unidentified_client",
            "The client address is unknown; send an API key.",
        ),
    };
    let mut res = json_response(
        StatusCode::UNAUTHORIZED,
        &json!({ "error": { "type": kind, "message": message } }),
    );
    res.headers_mut()
        .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    res
}

/// `413`: the prompt and `max_output_tokens` exceed the tier's whole
/// token budget, so no wait would let the request through.
pub(crate) fn too_large(tier: &Tier, estimate: u64) -> Response {
    json_response(
        StatusCode::PAYLOAD_TOO_LARGE,
        &json!({ "error": {
            "type": "request_too_large",
            "policy": tier.set().limits()[tier.tokens].name(),
            "tokens": estimate,
            "limit": tier.tokens_limit(),
            "message": "The prompt and the answer's max_output_tokens exceed the token budget.",
        } }),
    )
}

/// `429` naming the policy that denied and the set's wait, in JSON when
/// asked for, else the configured plain body (`Ratelimited!`); every
/// policy's fields on it.
pub(crate) fn rate_limited(
    tier: &Tier,
    decision: &SetDecision,
    json: bool,
    plain_body: &str,
) -> Response {
    let mut res = if json {
        let policy = decision
            .first_denied()
            .map(|i| tier.set().limits()[i].name());
        let retry_after = decision.retry_after.map_or(1, |w| ceil_seconds(w).max(1));
        json_response(
            StatusCode::TOO_MANY_REQUESTS,
            &json!({ "error": {
                "type": "rate_limited",
                "policy": policy,
                "retry_after": retry_after,
                "message": format!(
                    "Rate limit \"{}\" exceeded; retry after {retry_after} s.",
                    policy.unwrap_or("?")
                ),
            } }),
        )
    } else {
        (StatusCode::TOO_MANY_REQUESTS, plain_body.to_owned()).into_response()
    };
    tier.headers.write(res.headers_mut(), decision);
    res
}

/// `503` with `Retry-After: 1`: the limiter could not decide, so nothing
/// was counted and the client is not told it spent a quota.
pub(crate) fn unavailable(json: bool) -> Response {
    const MESSAGE: &str = "Rate limiting is unavailable; try again shortly.";
    let mut res = if json {
        json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            &json!({ "error": { "type": "unavailable", "message": MESSAGE } }),
        )
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, MESSAGE).into_response()
    };
    res.headers_mut()
        .insert(RETRY_AFTER, HeaderValue::from_static("1"));
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_is_asked_for_by_media_type() {
        let accept = |v: &'static str| {
            let mut h = HeaderMap::new();
            h.insert(ACCEPT, HeaderValue::from_static(v));
            wants_json(&h)
        };
        assert!(accept("application/json"));
        assert!(accept("text/event-stream, Application/JSON;q=0.5"));
        assert!(!accept("text/event-stream"));
        assert!(!accept("application/jsonx"));
        assert!(!accept("*/*"));
        assert!(!wants_json(&HeaderMap::new()));
    }
}
