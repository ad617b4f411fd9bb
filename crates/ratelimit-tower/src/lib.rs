#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]

#[doc(hidden)]
#[path = "fuzz.rs"]
pub mod __fuzz;
mod body;
mod client_ip;
mod cost;
mod digits;
mod error;
mod forwarded;
mod headers;
mod hops;
mod key;
mod layer;
mod net_text;
mod outage;
mod peer;
mod responses;
mod service;
mod set_headers;

pub use body::RateLimitBody;
pub use client_ip::{ClientIp, ProxyHeader};
pub use cost::{CostFunction, UnitCost};
pub use error::PrefixLenError;
pub use headers::{ceil_seconds, RateLimitHeaders};
pub use key::{Key, KeyExtractor};
pub use layer::RateLimitLayer;
pub use outage::OutageLog;
pub use peer::PeerAddr;
pub use responses::PlainResponse;
pub use service::{RateLimitService, ResponseFuture};
pub use set_headers::{openai_duration, SetHeaders};
