//! Reading the hop lists of `X-Forwarded-For` and `Forwarded`.
//!
//! A hop that does not parse as an address (`unknown`, an obfuscated
//! identifier, garbage) is kept as `None`: the caller must stop there
//! rather than skip it, or a client could hide behind it.

use std::net::{IpAddr, SocketAddr};

use http::header::{HeaderMap, FORWARDED};
use http::HeaderName;

use crate::forwarded;

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// The hops of every `X-Forwarded-For` field, left (client) to right
/// (nearest proxy), across repeated fields in order.
pub(crate) fn x_forwarded_for(headers: &HeaderMap) -> Vec<Option<IpAddr>> {
    let mut out = Vec::new();
    for value in headers.get_all(X_FORWARDED_FOR) {
        match value.to_str() {
            Ok(text) => out.extend(text.split(',').map(|hop| parse_node(hop.trim()))),
            // Opaque bytes name no address; keep the hop so the walk stops.
            Err(_) => out.push(None),
        }
    }
    out
}

/// The `for` nodes of every `Forwarded` field (RFC 7239), left to right,
/// across repeated fields in order (see [`forwarded::hops`] for the
/// grammar). A quoted string never spans two fields, so each is parsed
/// alone.
pub(crate) fn forwarded(headers: &HeaderMap) -> Vec<Option<IpAddr>> {
    let mut out = Vec::new();
    for value in headers.get_all(FORWARDED) {
        forwarded::hops(value.as_bytes(), &mut out);
    }
    out
}

/// An `X-Forwarded-For` address as proxies write it: `192.0.2.1`,
/// `192.0.2.1:8080`, `2001:db8::1`, `[2001:db8::1]` or
/// `[2001:db8::1]:8080`. The field has no grammar beyond commas, so any
/// of these is read.
fn parse_node(node: &str) -> Option<IpAddr> {
    let ip = node
        .parse::<IpAddr>()
        .ok()
        .or_else(|| node.parse::<SocketAddr>().ok().map(|s| s.ip()))
        .or_else(|| {
            node.strip_prefix('[')
                .and_then(|rest| rest.strip_suffix(']'))
                .and_then(|inner| inner.parse::<IpAddr>().ok())
        })?;
    Some(ip.to_canonical())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn map(name: &HeaderName, values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(name, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn xff_spans_repeated_fields_in_order() {
        let h = map(
            &X_FORWARDED_FOR,
            &["192.0.2.1, 198.51.100.2", "203.0.113.3:443"],
        );
        assert_eq!(
            x_forwarded_for(&h),
            vec![ip("192.0.2.1"), ip("198.51.100.2"), ip("203.0.113.3")]
        );
    }

    #[test]
    fn xff_keeps_unparseable_hops() {
        let h = map(
            &X_FORWARDED_FOR,
            &["unknown, [2001:db8::1]:80, 2001:db8::2, ::ffff:192.0.2.7"],
        );
        assert_eq!(
            x_forwarded_for(&h),
            vec![None, ip("2001:db8::1"), ip("2001:db8::2"), ip("192.0.2.7")]
        );
    }

    #[test]
    fn forwarded_spans_repeated_fields_in_order() {
        let h = map(
            &FORWARDED,
            &[
                r#"for=192.0.2.60;proto=http;by=203.0.113.43, For="[2001:db8:cafe::17]:4711""#,
                "proto=https, for=_hidden, for=unknown",
            ],
        );
        assert_eq!(
            forwarded(&h),
            vec![ip("192.0.2.60"), ip("2001:db8:cafe::17"), None, None, None]
        );
    }

    #[test]
    fn a_quote_never_spans_two_fields() {
        let h = map(&FORWARDED, &[r#"for="192.0.2.1"#, r#"for=198.51.100.2""#]);
        assert_eq!(forwarded(&h), vec![None, None]);
    }
}
