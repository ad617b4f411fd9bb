//! The client's IP address, read safely, as a rate-limit key.

use std::net::IpAddr;

use http::request::Parts;
use http::HeaderMap;
use ipnet::IpNet;

use crate::net_text::{net_key, net_text};
use crate::{hops, Key, KeyExtractor, PeerAddr, PrefixLenError};

/// Which header a trusted proxy uses to name the address it saw.
///
/// # Examples
///
/// ```
/// use ratelimit_tower::ProxyHeader;
/// assert_eq!(ProxyHeader::default(), ProxyHeader::XForwardedFor);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ProxyHeader {
    /// `X-Forwarded-For: client, proxy1, proxy2`.
    #[default]
    XForwardedFor,
    /// `Forwarded: for=client, for=proxy1` (RFC 7239), parsed by its
    /// grammar: a node with a port or an IPv6 address is quoted
    /// (`for="[2001:db8::1]:4711"`), and an element that breaks the
    /// grammar, repeats a parameter or names no address (`unknown`,
    /// `_hidden`) is a hop that cannot be read.
    Forwarded,
}

/// Keys a request by its client's IP address, grouped by network prefix.
///
/// The client is the connection's peer ([`PeerAddr`]). Only when the peer
/// is inside one of the trusted-proxy networks is the configured
/// [`ProxyHeader`] read, **right to left**: each hop inside a trusted
/// network is a proxy and is skipped; the first hop outside them is the
/// client. A hop that names no address stops the walk at the last trusted
/// address, and a chain of trusted hops only yields its leftmost one. So a
/// forged header from an untrusted peer changes nothing, and a client can
/// only ever add hops to the left of the ones the trusted proxies wrote.
///
/// IPv4-mapped IPv6 addresses count as IPv4. The address is then widened
/// to its network: `/32` for IPv4 and `/64` for IPv6 by default, since one
/// IPv6 host usually holds a whole `/64` and could otherwise rotate through
/// it. The key is the network's text, such as `203.0.113.7/32` or
/// `2001:db8:1:2::/64`.
///
/// # Examples
///
/// ```
/// use std::net::IpAddr;
/// use http::HeaderMap;
/// use ratelimit_tower::ClientIp;
///
/// let client_ip = ClientIp::new().with_trusted_proxies(["10.0.0.0/8".parse().unwrap()]);
/// let mut headers = HeaderMap::new();
/// headers.insert("x-forwarded-for", "198.51.100.1, 203.0.113.9, 10.0.0.2".parse().unwrap());
///
/// // Behind the trusted load balancer: the first untrusted hop from the right.
/// let lb: IpAddr = "10.1.2.3".parse().unwrap();
/// assert_eq!(client_ip.client_ip(lb, &headers), "203.0.113.9".parse::<IpAddr>().unwrap());
///
/// // Straight from the internet: the header is ignored.
/// let direct: IpAddr = "192.0.2.44".parse().unwrap();
/// assert_eq!(client_ip.client_ip(direct, &headers), direct);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientIp {
    trusted: Vec<IpNet>,
    header: ProxyHeader,
    ipv4_prefix_len: u8,
    ipv6_prefix_len: u8,
}

impl Default for ClientIp {
    fn default() -> Self {
        Self::new()
    }
}

impl ClientIp {
    /// The peer address alone (no trusted proxies), IPv4 per address and
    /// IPv6 per `/64`.
    ///
    /// # Examples
    ///
    /// ```
    /// let client_ip = ratelimit_tower::ClientIp::new();
    /// assert!(client_ip.trusted_proxies().is_empty());
    /// assert_eq!(client_ip.ipv6_prefix_len(), 64);
    /// ```
    #[must_use]
    pub fn new() -> Self {
        Self {
            trusted: Vec::new(),
            header: ProxyHeader::XForwardedFor,
            ipv4_prefix_len: 32,
            ipv6_prefix_len: 64,
        }
    }

    /// Adds networks whose peers are proxies allowed to name the client.
    ///
    /// # Examples
    ///
    /// ```
    /// let client_ip = ratelimit_tower::ClientIp::new()
    ///     .with_trusted_proxies(["127.0.0.1/32".parse().unwrap(), "::1/128".parse().unwrap()]);
    /// assert_eq!(client_ip.trusted_proxies().len(), 2);
    /// ```
    #[must_use]
    pub fn with_trusted_proxies(mut self, networks: impl IntoIterator<Item = IpNet>) -> Self {
        self.trusted
            .extend(networks.into_iter().map(|net| canonical_net(net.trunc())));
        self
    }

    /// Reads `header` from trusted proxies (default `X-Forwarded-For`).
    ///
    /// # Examples
    ///
    /// ```
    /// use ratelimit_tower::{ClientIp, ProxyHeader};
    /// let client_ip = ClientIp::new().with_header(ProxyHeader::Forwarded);
    /// assert_eq!(client_ip.header(), ProxyHeader::Forwarded);
    /// ```
    #[must_use]
    pub fn with_header(mut self, header: ProxyHeader) -> Self {
        self.header = header;
        self
    }

    /// Groups IPv6 clients by a prefix of `len` bits (1 to 128).
    ///
    /// # Errors
    ///
    /// When `len` is 0 or above 128.
    ///
    /// # Examples
    ///
    /// ```
    /// let client_ip = ratelimit_tower::ClientIp::new().with_ipv6_prefix_len(48).unwrap();
    /// assert_eq!(client_ip.ipv6_prefix_len(), 48);
    /// ```
    pub fn with_ipv6_prefix_len(mut self, len: u8) -> Result<Self, PrefixLenError> {
        if !(1..=128).contains(&len) {
            return Err(PrefixLenError::new(len, 128));
        }
        self.ipv6_prefix_len = len;
        Ok(self)
    }

    /// Groups IPv4 clients by a prefix of `len` bits (1 to 32; default 32).
    ///
    /// # Errors
    ///
    /// When `len` is 0 or above 32.
    ///
    /// # Examples
    ///
    /// ```
    /// let client_ip = ratelimit_tower::ClientIp::new().with_ipv4_prefix_len(24).unwrap();
    /// assert_eq!(client_ip.group("192.0.2.77".parse().unwrap()).to_string(), "192.0.2.0/24");
    /// ```
    pub fn with_ipv4_prefix_len(mut self, len: u8) -> Result<Self, PrefixLenError> {
        if !(1..=32).contains(&len) {
            return Err(PrefixLenError::new(len, 32));
        }
        self.ipv4_prefix_len = len;
        Ok(self)
    }

    /// The trusted-proxy networks.
    ///
    /// # Examples
    ///
    /// ```
    /// assert!(ratelimit_tower::ClientIp::new().trusted_proxies().is_empty());
    /// ```
    #[must_use]
    pub fn trusted_proxies(&self) -> &[IpNet] {
        &self.trusted
    }

    /// The header read from trusted proxies.
    ///
    /// # Examples
    ///
    /// ```
    /// use ratelimit_tower::{ClientIp, ProxyHeader};
    /// assert_eq!(ClientIp::new().header(), ProxyHeader::XForwardedFor);
    /// ```
    #[must_use]
    pub fn header(&self) -> ProxyHeader {
        self.header
    }

    /// The IPv6 grouping prefix length.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(ratelimit_tower::ClientIp::new().ipv6_prefix_len(), 64);
    /// ```
    #[must_use]
    pub fn ipv6_prefix_len(&self) -> u8 {
        self.ipv6_prefix_len
    }

    /// Whether `ip` is inside a trusted-proxy network.
    ///
    /// # Examples
    ///
    /// ```
    /// let client_ip = ratelimit_tower::ClientIp::new().with_trusted_proxies(["10.0.0.0/8".parse().unwrap()]);
    /// assert!(client_ip.is_trusted("10.9.9.9".parse().unwrap()));
    /// assert!(client_ip.is_trusted("::ffff:10.9.9.9".parse().unwrap()));
    /// assert!(!client_ip.is_trusted("11.0.0.1".parse().unwrap()));
    /// ```
    #[must_use]
    pub fn is_trusted(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.trusted.iter().any(|net| net.contains(&ip))
    }

    /// The client's address for a connection from `peer` carrying
    /// `headers` (see the type's documentation for the rules).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::net::IpAddr;
    /// use http::HeaderMap;
    /// use ratelimit_tower::{ClientIp, ProxyHeader};
    ///
    /// let client_ip = ClientIp::new()
    ///     .with_trusted_proxies(["10.0.0.0/8".parse().unwrap()])
    ///     .with_header(ProxyHeader::Forwarded);
    /// let mut headers = HeaderMap::new();
    /// headers.insert("forwarded", r#"for="[2001:db8::7]:4711", for=10.0.0.5"#.parse().unwrap());
    /// let peer: IpAddr = "10.0.0.1".parse().unwrap();
    /// assert_eq!(client_ip.client_ip(peer, &headers), "2001:db8::7".parse::<IpAddr>().unwrap());
    /// ```
    #[must_use]
    pub fn client_ip(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let mut client = peer.to_canonical();
        if !self.is_trusted(client) {
            return client;
        }
        let hops = match self.header {
            ProxyHeader::XForwardedFor => hops::x_forwarded_for(headers),
            ProxyHeader::Forwarded => hops::forwarded(headers),
        };
        for hop in hops.into_iter().rev() {
            // An unreadable hop was written by the trusted proxy to its
            // right: what lies beyond it cannot be trusted, so the last
            // trusted address stands for the client.
            let Some(ip) = hop else { return client };
            client = ip;
            if !self.is_trusted(ip) {
                return ip;
            }
        }
        client
    }

    /// The network `ip` is counted in: its prefix of the configured length.
    ///
    /// # Examples
    ///
    /// ```
    /// let client_ip = ratelimit_tower::ClientIp::new();
    /// assert_eq!(client_ip.group("2001:db8:1:2:aaaa::1".parse().unwrap()).to_string(), "2001:db8:1:2::/64");
    /// assert_eq!(client_ip.group("203.0.113.7".parse().unwrap()).to_string(), "203.0.113.7/32");
    /// ```
    #[must_use]
    pub fn group(&self, ip: IpAddr) -> IpNet {
        let ip = ip.to_canonical();
        let len = match ip {
            IpAddr::V4(_) => self.ipv4_prefix_len,
            IpAddr::V6(_) => self.ipv6_prefix_len,
        };
        // The lengths were range-checked by the setters.
        IpNet::new(ip, len)
            .expect("prefix lengths are validated when set")
            .trunc()
    }

    /// The rate-limit key for a connection from `peer` carrying `headers`:
    /// the text of the client's network.
    ///
    /// # Examples
    ///
    /// ```
    /// let client_ip = ratelimit_tower::ClientIp::new();
    /// let key = client_ip.key(&"192.0.2.1".parse().unwrap(), &http::HeaderMap::new());
    /// assert_eq!(key, b"192.0.2.1/32");
    /// ```
    #[must_use]
    pub fn key(&self, peer: &IpAddr, headers: &HeaderMap) -> Vec<u8> {
        net_text(self.group(self.client_ip(*peer, headers)))
    }
}

impl KeyExtractor for ClientIp {
    fn extract(&self, parts: &Parts) -> Option<Vec<u8>> {
        let peer = PeerAddr::from_extensions(&parts.extensions)?;
        Some(self.key(&peer, &parts.headers))
    }

    fn extract_key(&self, parts: &Parts) -> Option<Key> {
        let peer = PeerAddr::from_extensions(&parts.extensions)?;
        Some(net_key(self.group(self.client_ip(peer, &parts.headers))))
    }
}

/// An IPv4-mapped IPv6 network written as the IPv4 network it maps.
fn canonical_net(net: IpNet) -> IpNet {
    match net {
        IpNet::V6(v6) if v6.prefix_len() >= 96 => match v6.addr().to_ipv4_mapped() {
            Some(v4) => IpNet::new(IpAddr::V4(v4), v6.prefix_len() - 96).unwrap_or(net),
            None => net,
        },
        _ => net,
    }
}
