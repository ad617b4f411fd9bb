//! The short plain-text responses the layer writes itself.

use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_TYPE};
use http::{Response, StatusCode};

use crate::RateLimitBody;

/// A status and a short body the layer answers with instead of calling
/// the service: the denial (`429 Ratelimited!` by default), the missing-key
/// answer and the fail-closed answer.
///
/// # Examples
///
/// ```
/// use http::StatusCode;
/// use ratelimit_tower::PlainResponse;
///
/// let r = PlainResponse::new(StatusCode::TOO_MANY_REQUESTS, "Slow down");
/// assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
/// assert_eq!(r.body(), "Slow down");
/// let r = r.with_content_type(http::HeaderValue::from_static("application/json"));
/// assert_eq!(r.content_type(), "application/json");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlainResponse {
    status: StatusCode,
    body: Bytes,
    content_type: HeaderValue,
}

impl PlainResponse {
    /// `status` with `body` as `text/plain; charset=utf-8`.
    ///
    /// # Examples
    ///
    /// ```
    /// let r = ratelimit_tower::PlainResponse::new(http::StatusCode::BAD_REQUEST, "no client address");
    /// assert_eq!(r.content_type(), "text/plain; charset=utf-8");
    /// ```
    #[must_use]
    pub fn new(status: StatusCode, body: impl Into<Bytes>) -> Self {
        Self {
            status,
            body: body.into(),
            content_type: HeaderValue::from_static("text/plain; charset=utf-8"),
        }
    }

    /// The same response with another `Content-Type`.
    ///
    /// # Examples
    ///
    /// ```
    /// let r = ratelimit_tower::PlainResponse::new(http::StatusCode::OK, "{}")
    ///     .with_content_type(http::HeaderValue::from_static("application/json"));
    /// assert_eq!(r.content_type(), "application/json");
    /// ```
    #[must_use]
    pub fn with_content_type(mut self, content_type: HeaderValue) -> Self {
        self.content_type = content_type;
        self
    }

    /// The status code.
    ///
    /// # Examples
    ///
    /// ```
    /// let r = ratelimit_tower::PlainResponse::new(http::StatusCode::IM_A_TEAPOT, "");
    /// assert_eq!(r.status().as_u16(), 418);
    /// ```
    #[must_use]
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The body.
    ///
    /// # Examples
    ///
    /// ```
    /// let r = ratelimit_tower::PlainResponse::new(http::StatusCode::OK, "ok");
    /// assert_eq!(r.body(), "ok");
    /// ```
    #[must_use]
    pub fn body(&self) -> &Bytes {
        &self.body
    }

    /// The `Content-Type`.
    ///
    /// # Examples
    ///
    /// ```
    /// let r = ratelimit_tower::PlainResponse::new(http::StatusCode::OK, "ok");
    /// assert!(r.content_type().to_str().unwrap().starts_with("text/plain"));
    /// ```
    #[must_use]
    pub fn content_type(&self) -> &HeaderValue {
        &self.content_type
    }

    /// An HTTP response with this status, body and `Content-Type`.
    ///
    /// # Examples
    ///
    /// ```
    /// use ratelimit_tower::{PlainResponse, RateLimitBody};
    /// let res = PlainResponse::new(http::StatusCode::SERVICE_UNAVAILABLE, "busy")
    ///     .to_response::<String>();
    /// assert_eq!(res.status(), 503);
    /// assert_eq!(res.headers()["content-length"], "4");
    /// ```
    #[must_use]
    pub fn to_response<B>(&self) -> Response<RateLimitBody<B>> {
        let mut res = Response::new(RateLimitBody::full(self.body.clone()));
        *res.status_mut() = self.status;
        res.headers_mut()
            .insert(CONTENT_TYPE, self.content_type.clone());
        res.headers_mut().insert(
            http::header::CONTENT_LENGTH,
            crate::digits::value(self.body.len() as u64),
        );
        res
    }
}
