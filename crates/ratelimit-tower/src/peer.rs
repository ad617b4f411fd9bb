//! Where the connection's peer address is found.

use std::net::{IpAddr, SocketAddr};

use http::Extensions;

/// The address of the connection's peer, put into the request's
/// extensions by the server (or by a test).
///
/// [`ClientIp`](crate::ClientIp) reads it first; with the `axum` feature it
/// also reads axum's `ConnectInfo<SocketAddr>`, which
/// `into_make_service_with_connect_info::<SocketAddr>()` provides.
///
/// # Examples
///
/// ```
/// use std::net::SocketAddr;
/// use ratelimit_tower::PeerAddr;
///
/// let addr: SocketAddr = "198.51.100.4:5000".parse().unwrap();
/// let mut req = http::Request::new(());
/// req.extensions_mut().insert(PeerAddr::new(addr));
/// assert_eq!(PeerAddr::from_extensions(req.extensions()), Some(addr.ip()));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PeerAddr(SocketAddr);

impl PeerAddr {
    /// The peer at `addr`.
    ///
    /// # Examples
    ///
    /// ```
    /// let peer = ratelimit_tower::PeerAddr::new(([127, 0, 0, 1], 80).into());
    /// assert_eq!(peer.addr().port(), 80);
    /// ```
    #[must_use]
    pub const fn new(addr: SocketAddr) -> Self {
        Self(addr)
    }

    /// The peer's socket address.
    ///
    /// # Examples
    ///
    /// ```
    /// let peer = ratelimit_tower::PeerAddr::new(([192, 0, 2, 1], 443).into());
    /// assert_eq!(peer.addr().to_string(), "192.0.2.1:443");
    /// ```
    #[must_use]
    pub const fn addr(&self) -> SocketAddr {
        self.0
    }

    /// The peer's IP address from a request's extensions: a [`PeerAddr`],
    /// else (feature `axum`) axum's `ConnectInfo<SocketAddr>` or
    /// `MockConnectInfo<SocketAddr>`; `None` when
    /// the server recorded neither.
    ///
    /// # Examples
    ///
    /// ```
    /// use axum::extract::ConnectInfo;
    /// use ratelimit_tower::PeerAddr;
    ///
    /// let mut ext = http::Extensions::new();
    /// assert_eq!(PeerAddr::from_extensions(&ext), None);
    /// ext.insert(ConnectInfo(std::net::SocketAddr::from(([192, 0, 2, 9], 1))));
    /// assert_eq!(PeerAddr::from_extensions(&ext), Some([192, 0, 2, 9].into()));
    /// ```
    #[must_use]
    pub fn from_extensions(extensions: &Extensions) -> Option<IpAddr> {
        if let Some(peer) = extensions.get::<PeerAddr>() {
            return Some(peer.0.ip());
        }
        #[cfg(feature = "axum")]
        if let Some(info) = extensions.get::<axum::extract::ConnectInfo<SocketAddr>>() {
            return Some(info.0.ip());
        }
        // What axum's own `ConnectInfo` extractor falls back to in tests.
        #[cfg(feature = "axum")]
        if let Some(mock) =
            extensions.get::<axum::extract::connect_info::MockConnectInfo<SocketAddr>>()
        {
            return Some(mock.0.ip());
        }
        None
    }
}
