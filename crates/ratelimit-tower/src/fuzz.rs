//! **Not API.** What the `forwarded` fuzz target (`fuzz/`) calls: no
//! semver promise, may change or vanish in any release.
//!
//! A hidden module rather than a public `ForwardedElements` type, because
//! the parser's output is shaped by what [`ClientIp`](crate::ClientIp)'s
//! walk needs (one `Option<IpAddr>` per element, nothing else), not by
//! what a general `Forwarded` API would offer (`by`, `host`, `proto`,
//! ports, obfuscated names). Publishing it would freeze that shape or
//! invite a second, fuller parser later; the fuzzer needs neither, only a
//! way past `ClientIp`'s walk to the raw hops, so it can check properties
//! of the parse itself.

use std::net::IpAddr;

/// The hops of one `Forwarded` field value, left to right: the address of
/// each element's `for`, or `None` for an element that names none or
/// breaks the grammar.
///
/// # Examples
///
/// ```
/// let hops = ratelimit_tower::__fuzz::forwarded_hops(br#"for=192.0.2.1, for="[2001:db8::1]:80", for=unknown"#);
/// assert_eq!(hops, [Some([192, 0, 2, 1].into()), Some("2001:db8::1".parse().unwrap()), None]);
/// ```
#[must_use]
pub fn forwarded_hops(value: &[u8]) -> Vec<Option<IpAddr>> {
    let mut out = Vec::new();
    crate::forwarded::hops(value, &mut out);
    out
}
