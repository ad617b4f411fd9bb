//! Free loopback ports.

use std::net::{Ipv4Addr, TcpListener};

/// A loopback port nothing listens on right now.
///
/// The port is released before it is returned, so another process could
/// take it first; the servers of this crate then fail to start loudly
/// rather than talk to a stranger.
///
/// # Panics
///
/// When the OS has no free port to give.
#[must_use]
pub fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .expect("the OS gives out a free loopback port")
        .port()
}

/// A free loopback port `p` whose cluster bus port `p + 10000` is free too.
///
/// # Panics
///
/// When no such port is found in a thousand tries.
#[must_use]
pub fn free_port_with_bus() -> u16 {
    for _ in 0..1000 {
        let port = free_port();
        let Some(bus) = port.checked_add(10_000) else {
            continue;
        };
        if TcpListener::bind((Ipv4Addr::LOCALHOST, bus)).is_ok() {
            return port;
        }
    }
    panic!("found no free loopback port p with p + 10000 free as well");
}
