//! Reading the hop list of `X-Forwarded-For` and `Forwarded`.
//!
//! A hop that does not parse as an address (`unknown`, an obfuscated
//! identifier, garbage) is kept as `None`: the caller must stop there
//! rather than skip it, or a client could hide behind it.

use std::net::{IpAddr, SocketAddr};

use http::header::{HeaderMap, FORWARDED};
use http::HeaderName;

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// The hops of every `X-Forwarded-For` field, left (client) to right
/// (nearest proxy), across repeated fields in order.
pub(crate) fn x_forwarded_for(headers: &HeaderMap) -> Vec<Option<IpAddr>> {
    hops(headers, &X_FORWARDED_FOR, parse_node)
}

/// The `for=` nodes of every `Forwarded` field (RFC 7239), left to right.
/// An element without `for=` is an unknown hop.
pub(crate) fn forwarded(headers: &HeaderMap) -> Vec<Option<IpAddr>> {
    hops(headers, &FORWARDED, forwarded_for)
}

fn hops(
    headers: &HeaderMap,
    name: &HeaderName,
    parse: fn(&str) -> Option<IpAddr>,
) -> Vec<Option<IpAddr>> {
    let mut out = Vec::new();
    for value in headers.get_all(name) {
        match value.to_str() {
            Ok(text) => out.extend(text.split(',').map(|hop| parse(hop.trim()))),
            // Opaque bytes name no address; keep the hop so the walk stops.
            Err(_) => out.push(None),
        }
    }
    out
}

/// One `Forwarded` element: `for=...;proto=...;by=...`.
fn forwarded_for(element: &str) -> Option<IpAddr> {
    element.split(';').find_map(|pair| {
        let (name, value) = pair.trim().split_once('=')?;
        name.trim()
            .eq_ignore_ascii_case("for")
            .then(|| parse_node(value.trim().trim_matches('"')))?
    })
}

/// An address as proxies write it: `192.0.2.1`, `192.0.2.1:8080`,
/// `2001:db8::1`, `[2001:db8::1]` or `[2001:db8::1]:8080`.
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
    fn forwarded_reads_for_nodes() {
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
}
