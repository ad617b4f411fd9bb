//! A tower [`Layer`](tower_layer::Layer) that rate-limits any HTTP service
//! through a [`ratelimit_core::Limiter`].
//!
//! - [`RateLimitLayer`] wraps a service in a [`RateLimitService`]; it takes
//!   an `Arc<dyn Limiter>` of any backend, a [`KeyExtractor`] (by default
//!   [`ClientIp`]) and a [`CostFunction`] (by default [`UnitCost`]).
//! - [`ClientIp`] keys requests by the connection's peer address; only a
//!   peer inside the trusted-proxy networks may name the client through
//!   `X-Forwarded-For` or `Forwarded`, read right to left. IPv6 clients are
//!   grouped by prefix (default `/64`).
//! - Every limited response, allowed or denied, carries the IETF draft
//!   `RateLimit-Policy` and `RateLimit` fields and the `X-RateLimit-*`
//!   fields; a denial is `429` with `Retry-After` in whole seconds rounded
//!   up (see [`RateLimitHeaders`]).
//! - A backend error never panics or hangs the request: the check has a
//!   timeout, and the [`FailureMode`] decides whether the request goes on.
//!
//! # Examples
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//! use http::{Request, StatusCode};
//! use ratelimit_core::{Limiter, ManualClock, Policy, ReferenceLimiter};
//! use ratelimit_tower::{PeerAddr, RateLimitLayer};
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//!
//! # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
//! let policy = Policy::fixed_window(1, Duration::from_secs(30)).unwrap();
//! let clock = ManualClock::new(0); // the start of a window
//! let limiter: Arc<dyn Limiter> = Arc::new(ReferenceLimiter::with_clock(policy, clock));
//! let service = ServiceBuilder::new()
//!     .layer(RateLimitLayer::new(limiter))
//!     .service(service_fn(|_req: Request<String>| async {
//!         Ok::<_, std::convert::Infallible>(http::Response::new(String::from("hello")))
//!     }));
//!
//! let request = || {
//!     let mut req = Request::new(String::new());
//!     req.extensions_mut().insert(PeerAddr::new(([203, 0, 113, 7], 50_000).into()));
//!     req
//! };
//! let first = service.clone().oneshot(request()).await.unwrap();
//! assert_eq!(first.status(), StatusCode::OK);
//! assert_eq!(first.headers()["ratelimit"], r#""default";r=0;t=30"#);
//!
//! let second = service.oneshot(request()).await.unwrap();
//! assert_eq!(second.status(), StatusCode::TOO_MANY_REQUESTS);
//! assert_eq!(second.headers()["retry-after"], "30");
//! # });
//! ```

mod body;
mod client_ip;
mod cost;
mod error;
mod failure;
mod forwarded;
mod headers;
mod key;
mod layer;
mod peer;
mod responses;
mod service;

pub use body::RateLimitBody;
pub use client_ip::{ClientIp, ProxyHeader};
pub use cost::{CostFunction, UnitCost};
pub use error::PrefixLenError;
pub use failure::FailureMode;
pub use headers::{ceil_seconds, RateLimitHeaders};
pub use key::KeyExtractor;
pub use layer::RateLimitLayer;
pub use peer::PeerAddr;
pub use responses::PlainResponse;
pub use service::{RateLimitService, ResponseFuture};
