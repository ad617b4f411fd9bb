//! The response body of a limited service: the inner service's body, or a
//! short body the layer wrote itself.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

pin_project! {
    /// The body of a [`RateLimitService`](crate::RateLimitService) response:
    /// the inner service's body when the request went through, or the
    /// layer's own short body (`429`, `503`, ...) when it did not.
    ///
    /// # Examples
    ///
    /// ```
    /// use http_body::Body as _;
    /// use ratelimit_tower::RateLimitBody;
    ///
    /// let own: RateLimitBody<String> = RateLimitBody::full("Ratelimited!");
    /// assert_eq!(own.size_hint().exact(), Some(12));
    /// let passed = RateLimitBody::inner(String::from("hi"));
    /// assert_eq!(passed.size_hint().exact(), Some(2));
    /// ```
    #[project = BodyProj]
    #[derive(Debug)]
    pub struct RateLimitBody<B> {
        #[pin]
        kind: Kind<B>,
    }
}

pin_project! {
    #[project = KindProj]
    #[derive(Debug)]
    enum Kind<B> {
        Inner { #[pin] body: B },
        Full { data: Option<Bytes> },
    }
}

impl<B> RateLimitBody<B> {
    /// Wraps the inner service's body.
    ///
    /// # Examples
    ///
    /// ```
    /// # use http_body::Body as _;
    /// let body = ratelimit_tower::RateLimitBody::inner(String::new());
    /// assert!(body.is_end_stream());
    /// ```
    pub fn inner(body: B) -> Self {
        Self {
            kind: Kind::Inner { body },
        }
    }

    /// A body the layer wrote: `data` in one frame.
    ///
    /// # Examples
    ///
    /// ```
    /// # use http_body::Body as _;
    /// let body: ratelimit_tower::RateLimitBody<String> = ratelimit_tower::RateLimitBody::full("");
    /// assert!(body.is_end_stream());
    /// ```
    pub fn full(data: impl Into<Bytes>) -> Self {
        let data: Bytes = data.into();
        Self {
            kind: Kind::Full {
                // An empty frame would still be a frame; an empty body has none.
                data: (!data.is_empty()).then_some(data),
            },
        }
    }
}

impl RateLimitBody<std::convert::Infallible> {
    /// The layer's own body, as a body of the inner service's type: it
    /// holds no inner body to convert.
    pub(crate) fn cast<B>(self) -> RateLimitBody<B> {
        RateLimitBody {
            kind: match self.kind {
                Kind::Inner { body } => match body {},
                Kind::Full { data } => Kind::Full { data },
            },
        }
    }
}

impl<B> Body for RateLimitBody<B>
where
    B: Body<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        match self.project().kind.project() {
            KindProj::Inner { body } => body.poll_frame(cx),
            KindProj::Full { data } => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Inner { body } => body.is_end_stream(),
            Kind::Full { data } => data.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Inner { body } => body.size_hint(),
            Kind::Full { data } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
        }
    }
}
