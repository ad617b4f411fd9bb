//! What a generate request's headers must say before its body is read.

use axum::extract::{Request, State};
use axum::http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::{IntoResponse as _, Response};

use crate::AppError;

/// Middleware: refuses, from the headers alone, a request whose body is
/// not JSON or is announced larger than `max_body_bytes`.
///
/// It sits inside the rate limit, so the refused request has already
/// been counted (see the README: a malformed flood still spends quota),
/// and before the body is read, so an announced 10 MB that never comes
/// is a `413` at once rather than a wait.
pub(crate) async fn require_json_body(
    State(max_body_bytes): State<usize>,
    request: Request,
    next: Next,
) -> Response {
    match check(request.headers(), max_body_bytes) {
        Ok(()) => next.run(request).await,
        Err(refusal) => refusal.into_response(),
    }
}

/// The checks, in order: the type (`415`), then the announced length
/// (`413`). A body without `Content-Length` (chunked) is measured as it
/// is read instead.
pub(crate) fn check(headers: &HeaderMap, max_body_bytes: usize) -> Result<(), AppError> {
    if !is_json(headers) {
        return Err(AppError::UnsupportedMediaType);
    }
    let Some(announced) = headers.get(CONTENT_LENGTH) else {
        return Ok(());
    };
    // hyper refuses a malformed Content-Length before the router runs;
    // this only guards the router served some other way.
    let announced = announced
        .to_str()
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .ok_or_else(|| AppError::BadRequest("Invalid Content-Length.".into()))?;
    if announced > max_body_bytes as u64 {
        return Err(AppError::PayloadTooLarge);
    }
    Ok(())
}

/// Exactly one `Content-Type`, `application/json` with any parameters
/// (`; charset=utf-8`), in any case.
///
/// A browser sends `text/plain`, `multipart/form-data` and
/// `application/x-www-form-urlencoded` across sites without a CORS
/// preflight; `application/json` needs one, which this service does not
/// grant. Requiring it keeps another site's page from spending its
/// visitors' quota and the operator's model budget.
fn is_json(headers: &HeaderMap) -> bool {
    let mut values = headers.get_all(CONTENT_TYPE).iter();
    let (Some(value), None) = (values.next(), values.next()) else {
        return false;
    };
    let Ok(text) = value.to_str() else {
        return false;
    };
    let essence = text.split(';').next().unwrap_or_default().trim();
    essence.eq_ignore_ascii_case("application/json")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                axum::http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                value.parse().unwrap(),
            );
        }
        map
    }

    #[test]
    fn json_with_parameters_in_any_case_passes() {
        for ct in [
            "application/json",
            "Application/JSON",
            "application/json; charset=utf-8",
            " application/json ;charset=UTF-8",
        ] {
            assert!(check(&headers(&[("content-type", ct)]), 10).is_ok(), "{ct}");
        }
    }

    #[test]
    fn anything_else_is_415() {
        let cases: &[&[(&str, &str)]] = &[
            &[],
            &[("content-type", "text/plain")],
            &[("content-type", "text/plain; x=application/json")],
            &[("content-type", "application/x-www-form-urlencoded")],
            &[("content-type", "multipart/form-data; boundary=x")],
            &[("content-type", "application/jsonp")],
            &[("content-type", "application/json+x")],
            &[
                ("content-type", "application/json"),
                ("content-type", "text/plain"),
            ],
        ];
        for case in cases {
            assert!(
                matches!(
                    check(&headers(case), 10),
                    Err(AppError::UnsupportedMediaType)
                ),
                "{case:?}"
            );
        }
    }

    #[test]
    fn an_announced_length_over_the_limit_is_413() {
        let json = ("content-type", "application/json");
        assert!(check(&headers(&[json, ("content-length", "10")]), 10).is_ok());
        assert!(matches!(
            check(&headers(&[json, ("content-length", "11")]), 10),
            Err(AppError::PayloadTooLarge)
        ));
        assert!(matches!(
            check(
                &headers(&[json, ("content-length", "99999999999999999999")]),
                10
            ),
            Err(AppError::BadRequest(_))
        ));
    }
}
