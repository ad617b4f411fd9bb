//! The `data:` payloads of a server-sent event stream, cut from arbitrary
//! byte chunks.

/// Buffers bytes and yields complete `data:` payloads. Lines are split on
/// bytes, so a multi-byte character cut across two chunks stays whole.
#[derive(Debug, Default)]
pub(crate) struct DataLines {
    buf: Vec<u8>,
}

impl DataLines {
    /// Adds `bytes` and returns the payloads of the lines now complete.
    pub(crate) fn push(&mut self, bytes: &[u8]) -> Vec<String> {
        self.buf.extend_from_slice(bytes);
        let mut out = Vec::new();
        while let Some(end) = self.buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.buf.drain(..=end).collect();
            let line = String::from_utf8_lossy(&line);
            let line = line.trim_end_matches(['\n', '\r']);
            // Comments (`: keep-alive`), `event:` and `id:` lines carry no data.
            if let Some(data) = line.strip_prefix("data:") {
                out.push(data.strip_prefix(' ').unwrap_or(data).to_owned());
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_across_chunks_and_crlf() {
        let mut lines = DataLines::default();
        assert!(lines.push(b"data: {\"a\":").is_empty());
        assert_eq!(lines.push(b"1}\r\n\r\n: ping\n"), vec!["{\"a\":1}"]);
        let e = "é".as_bytes();
        assert!(lines
            .push(&[b"data: ".as_slice(), &e[..1]].concat())
            .is_empty());
        assert_eq!(
            lines.push(&[&e[1..], b"\ndata:[DONE]\n"].concat()),
            vec!["é", "[DONE]"]
        );
    }
}
