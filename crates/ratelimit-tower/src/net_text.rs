//! The text of a client network, the key [`ClientIp`](crate::ClientIp)
//! counts a request against, written without `to_string`.
//!
//! `IpNet`'s `Display` goes through the formatting machinery piece by
//! piece and `to_string` grows its `String` as it goes; a key is made for
//! every request, so it is written here into a buffer on the stack and
//! copied out once, into a vector of its exact size. The text is the same
//! as `IpNet`'s `Display` (the crate's tests compare the two).

use std::fmt::{self, Write as _};
use std::net::Ipv4Addr;

use ipnet::IpNet;

use crate::Key;

/// Room for the longest text of a network, a full IPv6 address (39
/// characters) and `/128`, and more (45 characters would hold an IPv6
/// address written with an embedded IPv4 one).
const LONGEST: usize = 49;

/// A buffer on the stack that text is written into.
struct StackText {
    bytes: [u8; LONGEST],
    len: usize,
}

impl StackText {
    fn new() -> Self {
        Self {
            bytes: [0; LONGEST],
            len: 0,
        }
    }

    fn push(&mut self, byte: u8) {
        self.bytes[self.len] = byte;
        self.len += 1;
    }

    /// `n` in decimal.
    fn push_u8(&mut self, n: u8) {
        if n >= 100 {
            self.push(b'0' + n / 100);
        }
        if n >= 10 {
            self.push(b'0' + n / 10 % 10);
        }
        self.push(b'0' + n % 10);
    }

    fn push_v4(&mut self, addr: Ipv4Addr) {
        let [a, b, c, d] = addr.octets();
        self.push_u8(a);
        self.push(b'.');
        self.push_u8(b);
        self.push(b'.');
        self.push_u8(c);
        self.push(b'.');
        self.push_u8(d);
    }

    fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

impl fmt::Write for StackText {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let end = self.len + s.len();
        self.bytes
            .get_mut(self.len..end)
            .ok_or(fmt::Error)?
            .copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

/// `net` as text, `203.0.113.7/32` or `2001:db8:1:2::/64`.
pub(crate) fn net_text(net: IpNet) -> Vec<u8> {
    with_net_text(net, <[u8]>::to_vec)
}

/// [`net_text`] as a [`Key`], held inline.
pub(crate) fn net_key(net: IpNet) -> Key {
    with_net_text(net, Key::from_slice)
}

/// `net`'s text, written on the stack, given to `make`.
#[inline]
fn with_net_text<T>(net: IpNet, make: impl FnOnce(&[u8]) -> T) -> T {
    let mut text = StackText::new();
    match net {
        IpNet::V4(v4) => text.push_v4(v4.addr()),
        IpNet::V6(v6) => {
            if write!(text, "{}", v6.addr()).is_err() {
                // Cannot happen (the buffer holds the longest address);
                // should it, the slow way gives the same text.
                return make(net.to_string().as_bytes());
            }
        }
    }
    text.push(b'/');
    text.push_u8(net.prefix_len());
    make(text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_text_is_the_display_of_the_network() {
        let nets = [
            "0.0.0.0/1",
            "203.0.113.7/32",
            "10.0.0.0/8",
            "192.168.100.0/24",
            "255.255.255.255/32",
            "1.22.133.4/30",
            "2001:db8:1:2::/64",
            "::/1",
            "::1/128",
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/128",
            "1234:5678:9abc:def0:1234:5678:9abc:def0/128",
            "::ffff:255.255.255.255/128",
            "::255.255.255.255/128",
            "2001:db8::/48",
            "fe80::1:0:0:1/127",
        ];
        for net in nets {
            let net: IpNet = net.parse().unwrap();
            assert_eq!(net_text(net), net.to_string().into_bytes(), "{net}");
            assert_eq!(&*net_key(net), net.to_string().as_bytes(), "{net}");
        }
    }

    #[test]
    fn every_ipv4_octet_and_prefix_length() {
        for n in 0..=255u8 {
            for len in [1, 9, 10, 32] {
                let net = IpNet::new(Ipv4Addr::new(n, 255 - n, n / 3, n / 7).into(), len).unwrap();
                assert_eq!(net_text(net), net.to_string().into_bytes(), "{net}");
            }
        }
    }
}
