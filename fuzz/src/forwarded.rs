//! Properties of the `Forwarded` parser of `ratelimit-tower`, for any bytes.

use std::net::IpAddr;

use http::header::{HeaderMap, HeaderValue, FORWARDED};
use ratelimit_tower::{ClientIp, ProxyHeader};

/// Parses `data` as one `Forwarded` field value and checks what any parse
/// must satisfy. Panics on a violation (that is the finding).
pub fn check(data: &[u8]) {
    let hops = ratelimit_tower::__fuzz::forwarded_hops(data);

    // Each hop is one element, and elements are separated by commas
    // (commas inside quoted strings only loosen the bound).
    let commas = data.iter().filter(|&&b| b == b',').count();
    assert!(
        hops.len() <= commas + 1,
        "{} hops from {commas} commas",
        hops.len()
    );

    // Addresses come out canonical: an IPv4-mapped IPv6 address is IPv4.
    for ip in hops.iter().flatten() {
        assert_eq!(*ip, ip.to_canonical());
    }

    // Without quoted strings, an element never spans a comma: parsing the
    // pieces between commas gives the same hops.
    if !data.contains(&b'"') {
        let pieces: Vec<_> = data
            .split(|&b| b == b',')
            .flat_map(ratelimit_tower::__fuzz::forwarded_hops)
            .collect();
        assert_eq!(hops, pieces);
    }

    // Every address read is read again from the element a proxy would
    // write for it.
    for ip in hops.iter().flatten() {
        let element = match ip {
            IpAddr::V4(v4) => format!("for={v4}"),
            IpAddr::V6(v6) => format!("for=\"[{v6}]:4711\""),
        };
        let again = ratelimit_tower::__fuzz::forwarded_hops(element.as_bytes());
        assert_eq!(again, [Some(*ip)], "{element}");
    }

    // Through the key extractor: a trusted peer's client is the peer or an
    // address of the field; an untrusted peer's header changes nothing.
    let Ok(value) = HeaderValue::from_bytes(data) else {
        return;
    };
    let mut headers = HeaderMap::new();
    headers.insert(FORWARDED, value);
    let client_ip = ClientIp::new()
        .with_trusted_proxies(["10.0.0.0/8".parse().unwrap()])
        .with_header(ProxyHeader::Forwarded);
    let proxy: IpAddr = [10, 0, 0, 1].into();
    let client = client_ip.client_ip(proxy, &headers);
    assert!(
        client == proxy || hops.contains(&Some(client)),
        "{client} is neither the peer nor a hop of {hops:?}"
    );
    let direct: IpAddr = [192, 0, 2, 200].into();
    assert_eq!(client_ip.client_ip(direct, &headers), direct);
}
