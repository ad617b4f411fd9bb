//! The `Forwarded` field (RFC 7239), parsed by its grammar.
//!
//! ```text
//! Forwarded         = 1#forwarded-element                   ; ","-separated, OWS around
//! forwarded-element = [ forwarded-pair ] *( ";" [ forwarded-pair ] )
//! forwarded-pair    = token "=" value
//! value             = token / quoted-string                 ; RFC 7230 section 3.2.6
//! quoted-string     = DQUOTE *( qdtext / quoted-pair ) DQUOTE
//! quoted-pair       = "\" ( HTAB / SP / VCHAR / obs-text )
//! node              = nodename [ ":" node-port ]             ; the value of `for`
//! nodename          = IPv4address / "[" IPv6address "]" / "unknown" / obfnode
//! ```
//!
//! Each element is one hop. An element that breaks the grammar, repeats a
//! parameter, or has no `for` naming an address (`unknown`, an obfuscated
//! `_hidden`, a port that is no port) is an **unreadable hop**, `None`:
//! the caller must stop its walk there rather than skip it, or a client
//! could hide behind it. A malformed element ends at the next comma
//! outside a quoted string; an unterminated quoted string runs to the end
//! of the field. Empty elements (`a,,b`) are no hops, as RFC 7230's list
//! rule says. OWS is accepted around `;` as well as `,` (proxies write
//! it), never around `=`.
//!
//! ":" and "[" are not token characters, so a node with a port or an
//! IPv6 address must be quoted: `for=2001:db8::1` and `for=192.0.2.1:80`
//! are malformed, `for="[2001:db8::1]:4711"` is read.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Appends the hops of one `Forwarded` field value to `out`, left
/// (farthest) to right (nearest proxy).
///
/// The value is bytes, not text: `obs-text` (bytes 0x80 to 0xFF) is legal
/// inside a quoted string, and an element holding some must not make the
/// other elements of the field unreadable.
pub(crate) fn hops(value: &[u8], out: &mut Vec<Option<IpAddr>>) {
    let mut p = Parser { s: value, i: 0 };
    loop {
        p.skip_ows();
        match p.peek() {
            None => return,
            // An empty element, or the separator after the last one.
            Some(b',') => p.i += 1,
            Some(_) => {
                let hop = match p.element() {
                    Ok(hop) => hop,
                    Err(Malformed) => {
                        p.skip_element();
                        None
                    }
                };
                out.push(hop);
            }
        }
    }
}

/// A grammar error; what it was does not matter, the hop is unreadable.
struct Malformed;

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

/// The registered parameters, each allowed once per element (RFC 7239
/// section 4). Extension parameters are skipped, their repetition
/// unchecked: nothing here reads them.
const FOR: u8 = 1;
const BY: u8 = 2;
const HOST: u8 = 4;
const PROTO: u8 = 8;

impl<'a> Parser<'a> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn skip_ows(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.i += 1;
        }
    }

    /// One element, up to (not including) its terminating comma; the
    /// address of its `for` node, or `None` when it names none.
    fn element(&mut self) -> Result<Option<IpAddr>, Malformed> {
        let mut seen = 0u8;
        let mut node = None;
        loop {
            self.skip_ows();
            match self.peek() {
                None | Some(b',') => return Ok(node.and_then(|n: Vec<u8>| parse_node(&n))),
                Some(b';') => {
                    // An empty pair.
                    self.i += 1;
                    continue;
                }
                Some(_) => {}
            }
            let name = self.token()?;
            if self.peek() != Some(b'=') {
                return Err(Malformed);
            }
            self.i += 1;
            let param = match name.to_ascii_lowercase().as_slice() {
                b"for" => FOR,
                b"by" => BY,
                b"host" => HOST,
                b"proto" => PROTO,
                _ => 0,
            };
            if seen & param != 0 {
                return Err(Malformed);
            }
            seen |= param;
            let value = self.value()?;
            if param == FOR {
                node = Some(value);
            }
            self.skip_ows();
            match self.peek() {
                None | Some(b',') => {}
                Some(b';') => self.i += 1,
                Some(_) => return Err(Malformed),
            }
        }
    }

    /// `1*tchar`.
    fn token(&mut self) -> Result<&'a [u8], Malformed> {
        let start = self.i;
        while self.peek().is_some_and(is_tchar) {
            self.i += 1;
        }
        if self.i == start {
            return Err(Malformed);
        }
        Ok(&self.s[start..self.i])
    }

    /// A token or a quoted string, unescaped.
    fn value(&mut self) -> Result<Vec<u8>, Malformed> {
        if self.peek() != Some(b'"') {
            return self.token().map(<[u8]>::to_vec);
        }
        self.i += 1;
        let mut out = Vec::new();
        loop {
            let Some(b) = self.peek() else {
                return Err(Malformed); // unterminated
            };
            self.i += 1;
            match b {
                b'"' => return Ok(out),
                b'\\' => match self.peek() {
                    Some(c) if c == b'\t' || c >= 0x20 && c != 0x7f => {
                        self.i += 1;
                        out.push(c);
                    }
                    _ => return Err(Malformed),
                },
                // qdtext: HTAB, SP, VCHAR but `"` and `\`, obs-text.
                b'\t' | b' '..=b'~' => out.push(b),
                0x80.. => out.push(b),
                _ => return Err(Malformed),
            }
        }
    }

    /// Skips the rest of a malformed element, up to its terminating comma
    /// outside a quoted string.
    fn skip_element(&mut self) {
        let mut quoted = false;
        while let Some(b) = self.peek() {
            match b {
                b',' if !quoted => return,
                b'"' => quoted = !quoted,
                b'\\' if quoted => self.i += 1,
                _ => {}
            }
            self.i += 1;
        }
    }
}

/// `tchar` (RFC 7230 section 3.2.6).
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// The address of a `node`; `None` for `unknown`, an obfuscated
/// identifier, or anything that is not the grammar's node.
fn parse_node(node: &[u8]) -> Option<IpAddr> {
    let node = std::str::from_utf8(node).ok()?;
    let (ip, port) = match node.strip_prefix('[') {
        Some(rest) => {
            let (v6, port) = rest.split_once(']')?;
            (IpAddr::V6(v6.parse::<Ipv6Addr>().ok()?), port)
        }
        None => {
            let (v4, port) = node.find(':').map_or((node, ""), |i| node.split_at(i));
            (IpAddr::V4(v4.parse::<Ipv4Addr>().ok()?), port)
        }
    };
    if !port.is_empty() && !port.strip_prefix(':').is_some_and(is_node_port) {
        return None;
    }
    Some(ip.to_canonical())
}

/// `port = 1*5DIGIT` or `obfport = "_" 1*(ALPHA / DIGIT / "." / "_" / "-")`.
fn is_node_port(port: &str) -> bool {
    match port.strip_prefix('_') {
        Some(obf) => {
            !obf.is_empty()
                && obf
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        }
        None => (1..=5).contains(&port.len()) && port.bytes().all(|b| b.is_ascii_digit()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(value: &str) -> Vec<Option<IpAddr>> {
        let mut out = Vec::new();
        hops(value.as_bytes(), &mut out);
        out
    }

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn rfc_examples() {
        assert_eq!(parse(r#"for="_gazonk""#), vec![None]);
        assert_eq!(
            parse(r#"For="[2001:db8:cafe::17]:4711""#),
            vec![ip("2001:db8:cafe::17")]
        );
        assert_eq!(
            parse("for=192.0.2.60;proto=http;by=203.0.113.43"),
            vec![ip("192.0.2.60")]
        );
        assert_eq!(
            parse("for=192.0.2.43, for=198.51.100.17"),
            vec![ip("192.0.2.43"), ip("198.51.100.17")]
        );
    }

    #[test]
    fn an_unterminated_quote_is_not_an_address() {
        // The old reader trimmed quotes and read this as 198.51.100.1.
        assert_eq!(parse(r#"for="198.51.100.1"#), vec![None]);
        // It swallows the rest of the field: one unreadable hop.
        assert_eq!(
            parse(r#"for=192.0.2.1, for="198.51.100.1, for=10.0.0.1"#),
            vec![ip("192.0.2.1"), None]
        );
    }

    #[test]
    fn a_comma_inside_quotes_does_not_split() {
        // The old reader split on every comma first.
        assert_eq!(
            parse(r#"for="192.0.2.1, 198.51.100.2";proto=http, for=10.0.0.1"#),
            vec![None, ip("10.0.0.1")]
        );
        assert_eq!(
            parse(r#"by="a,b";for=192.0.2.7, for=10.0.0.1"#),
            vec![ip("192.0.2.7"), ip("10.0.0.1")]
        );
    }

    #[test]
    fn escapes_in_quoted_strings() {
        assert_eq!(parse(r#"for="\1\9\2.0.2.1""#), vec![ip("192.0.2.1")]);
        assert_eq!(parse(r#"by="\"x\\";for=192.0.2.2"#), vec![ip("192.0.2.2")]);
        // A backslash at the very end escapes nothing: unterminated.
        assert_eq!(parse(r#"for="192.0.2.1\"#), vec![None]);
        // Control characters are neither qdtext nor escapable.
        assert_eq!(parse("for=\"192.0.2.1\u{1}\""), vec![None]);
        // obs-text inside quotes is legal, and leaves the next hop readable.
        let mut out = Vec::new();
        hops(b"by=\"caf\xe9\";for=192.0.2.3, for=192.0.2.4", &mut out);
        assert_eq!(out, vec![ip("192.0.2.3"), ip("192.0.2.4")]);
    }

    #[test]
    fn duplicate_parameters_are_malformed() {
        assert_eq!(parse("for=192.0.2.1;for=192.0.2.2"), vec![None]);
        assert_eq!(
            parse("for=192.0.2.1;FOR=192.0.2.2, for=10.0.0.1"),
            vec![None, ip("10.0.0.1")]
        );
        assert_eq!(parse("proto=http;for=192.0.2.1;proto=https"), vec![None]);
        // Extension parameters are not checked.
        assert_eq!(parse("ext=1;ext=2;for=192.0.2.1"), vec![ip("192.0.2.1")]);
    }

    #[test]
    fn ipv6_must_be_quoted_and_bracketed() {
        assert_eq!(parse("for=2001:db8::1"), vec![None]);
        assert_eq!(parse("for=[2001:db8::1]"), vec![None]);
        assert_eq!(parse(r#"for="2001:db8::1""#), vec![None]);
        assert_eq!(parse(r#"for="[2001:db8::1]""#), vec![ip("2001:db8::1")]);
        assert_eq!(
            parse(r#"for="[2001:db8::1]:4711""#),
            vec![ip("2001:db8::1")]
        );
        assert_eq!(parse(r#"for="[::ffff:192.0.2.9]""#), vec![ip("192.0.2.9")]);
        assert_eq!(parse(r#"for="[2001:db8::1]x""#), vec![None]);
    }

    #[test]
    fn unknown_and_obfuscated_nodes_are_unreadable() {
        assert_eq!(parse("for=unknown"), vec![None]);
        assert_eq!(parse("for=_hidden"), vec![None]);
        assert_eq!(parse(r#"for="unknown:80""#), vec![None]);
        assert_eq!(parse("proto=https"), vec![None], "no for at all");
    }

    #[test]
    fn ports() {
        assert_eq!(parse(r#"for="192.0.2.1:8080""#), vec![ip("192.0.2.1")]);
        assert_eq!(parse(r#"for="192.0.2.1:_abc""#), vec![ip("192.0.2.1")]);
        assert_eq!(parse("for=192.0.2.1:8080"), vec![None], "':' is no tchar");
        assert_eq!(parse(r#"for="192.0.2.1:""#), vec![None]);
        assert_eq!(parse(r#"for="192.0.2.1:123456""#), vec![None]);
        assert_eq!(parse(r#"for="192.0.2.1:_""#), vec![None]);
        assert_eq!(parse(r#"for="192.0.2.1:8a""#), vec![None]);
    }

    #[test]
    fn whitespace_and_empty_elements() {
        assert_eq!(
            parse(" for=192.0.2.1 ; proto=http ,\t, for=192.0.2.2 ,"),
            vec![ip("192.0.2.1"), ip("192.0.2.2")]
        );
        assert_eq!(parse(";;for=192.0.2.1;"), vec![ip("192.0.2.1")]);
        assert_eq!(parse("for = 192.0.2.1"), vec![None], "no OWS around =");
        assert_eq!(parse("for=192.0.2.1 x"), vec![None]);
        assert_eq!(parse("for=, for=192.0.2.2"), vec![None, ip("192.0.2.2")]);
        assert_eq!(parse("=1, for=192.0.2.2"), vec![None, ip("192.0.2.2")]);
        assert_eq!(parse(""), vec![]);
        assert_eq!(parse(" , "), vec![]);
    }

    #[test]
    fn odd_ipv4_spellings_are_not_addresses() {
        for node in ["01.2.3.4", "1.2.3", "256.1.1.1", "1.2.3.4.5", "0x1.2.3.4"] {
            assert_eq!(parse(&format!("for={node}")), vec![None], "{node}");
        }
    }
}
