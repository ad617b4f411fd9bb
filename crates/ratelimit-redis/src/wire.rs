//! A lean connection for the script calls a request makes alone.
//!
//! A multiplexed connection hands every command to a task of its own,
//! which writes it, reads the reply and hands that back: two task switches
//! and a channel each way, several microseconds per call. A request that
//! finds nothing in flight (see [`Batcher`](crate::batch::Batcher)) is the
//! only call on its way, so it writes its command and reads its reply on
//! this connection itself. It serves plain TCP with RESP2, the default;
//! TLS, Unix sockets and RESP3 keep to the multiplexed connection.

use std::sync::{Mutex, PoisonError};

use redis::{
    Cmd, ConnectionAddr, ErrorKind, IntoConnectionInfo, ProtocolVersion, RedisError, Value,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::connection::is_noscript;
use crate::script::PolicyScript;

/// Where a [`Wire`] connects, and the commands it sends first.
#[derive(Debug)]
pub(crate) struct WireTarget {
    host: String,
    port: u16,
    /// `AUTH` and `SELECT` as the URL asks, each answered before the next.
    handshake: Vec<Cmd>,
}

impl WireTarget {
    /// The target of `url`, or `None` when a lean connection cannot serve it
    /// (TLS, a Unix socket, RESP3, or a URL redis-rs does not take).
    pub(crate) fn of(url: &str) -> Option<Self> {
        let info = url.into_connection_info().ok()?;
        let ConnectionAddr::Tcp(host, port) = info.addr() else {
            return None;
        };
        let settings = info.redis_settings();
        if settings.protocol() != ProtocolVersion::RESP2 {
            return None;
        }
        let mut handshake = Vec::new();
        if let Some(password) = settings.password() {
            let mut auth = redis::cmd("AUTH");
            if let Some(username) = settings.username() {
                auth.arg(username);
            }
            auth.arg(password);
            handshake.push(auth);
        }
        if settings.db() != 0 {
            let mut select = redis::cmd("SELECT");
            select.arg(settings.db());
            handshake.push(select);
        }
        Some(Self {
            host: host.clone(),
            port: *port,
            handshake,
        })
    }
}

/// One TCP connection, used by one call at a time.
#[derive(Debug)]
pub(crate) struct Wire {
    stream: TcpStream,
    /// The command being sent, then the reply being read.
    buf: Vec<u8>,
}

impl Wire {
    /// Connects and sends the handshake.
    async fn connect(target: &WireTarget) -> Result<Self, RedisError> {
        let stream = TcpStream::connect((target.host.as_str(), target.port)).await?;
        stream.set_nodelay(true)?;
        let mut wire = Self {
            stream,
            buf: Vec::with_capacity(512),
        };
        for cmd in &target.handshake {
            wire.call(cmd).await?;
        }
        Ok(wire)
    }

    /// Sends `cmd` and reads its reply; a server error is an `Err`.
    async fn call(&mut self, cmd: &Cmd) -> Result<Value, RedisError> {
        self.buf.clear();
        cmd.write_packed_command(&mut self.buf);
        self.stream.write_all(&self.buf).await?;
        self.read_reply().await
    }

    /// Reads one reply. Anything after it is a protocol error: this
    /// connection sends one command at a time.
    async fn read_reply(&mut self) -> Result<Value, RedisError> {
        self.buf.clear();
        loop {
            if let Some(end) = frame_end(&self.buf, 0, 0)? {
                if end != self.buf.len() {
                    return Err(protocol("more than one reply to one command"));
                }
                return parse(&self.buf);
            }
            if self.buf.capacity() - self.buf.len() < 256 {
                self.buf.reserve(self.buf.len().max(512));
            }
            if self.stream.read_buf(&mut self.buf).await? == 0 {
                return Err(RedisError::from((
                    ErrorKind::Io,
                    "Redis closed the connection",
                )));
            }
        }
    }
}

/// The lean connection of a limiter, for one call at a time; reconnected
/// by the next call after a failure, or after a call given up half-way.
#[derive(Debug)]
pub(crate) struct Direct {
    target: WireTarget,
    wire: Mutex<Option<Wire>>,
}

impl Direct {
    /// Connects a first wire to `target`.
    pub(crate) async fn connect(target: WireTarget) -> Result<Self, RedisError> {
        let wire = Wire::connect(&target).await?;
        Ok(Self {
            target,
            wire: Mutex::new(Some(wire)),
        })
    }

    /// Runs `evalsha`, a call of `script`, connecting first if the last
    /// call failed; on `NOSCRIPT` loads the script and runs the call again.
    /// One call at a time: the caller makes sure of it.
    ///
    /// A call that fails, or that is dropped before its reply is read,
    /// drops its connection: what is still on it is unknown.
    pub(crate) async fn evalsha(
        &self,
        evalsha: &Cmd,
        script: &PolicyScript,
    ) -> Result<Value, RedisError> {
        let taken = self.slot().take();
        let mut wire = match taken {
            Some(wire) => wire,
            None => Wire::connect(&self.target).await?,
        };
        let mut reply = wire.call(evalsha).await;
        if matches!(&reply, Err(e) if is_noscript(e)) {
            // A restarted server, or SCRIPT FLUSH.
            reply = match wire.call(&script.load_command()).await {
                Ok(_) => wire.call(evalsha).await,
                Err(e) => Err(e),
            };
        }
        // A server error leaves the connection in step; any other error
        // (I/O, protocol) drops it.
        let in_step = match &reply {
            Ok(_) => true,
            Err(e) => matches!(e.kind(), ErrorKind::Server(_)),
        };
        if in_step {
            *self.slot() = Some(wire);
        }
        reply
    }

    fn slot(&self) -> std::sync::MutexGuard<'_, Option<Wire>> {
        self.wire.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn protocol(what: &'static str) -> RedisError {
    RedisError::from((
        ErrorKind::Parse,
        "unexpected reply from Redis",
        what.to_string(),
    ))
}

/// Arrays nested deeper than this are not replies to our commands.
const MAX_DEPTH: usize = 4;

/// Where the RESP2 value starting at `at` ends, or `None` while it is
/// incomplete.
fn frame_end(buf: &[u8], at: usize, depth: usize) -> Result<Option<usize>, RedisError> {
    let Some(&kind) = buf.get(at) else {
        return Ok(None);
    };
    let Some(eol) = buf[at..].windows(2).position(|w| w == b"\r\n") else {
        return Ok(None);
    };
    let line_end = at + eol + 2;
    match kind {
        b'+' | b'-' | b':' => Ok(Some(line_end)),
        b'$' | b'*' => {
            let n: i64 = std::str::from_utf8(&buf[at + 1..at + eol])
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| protocol("a length that is not a number"))?;
            if n < 0 {
                return Ok(Some(line_end));
            }
            let n = usize::try_from(n).map_err(|_| protocol("a length out of range"))?;
            if kind == b'$' {
                let end = line_end.saturating_add(n).saturating_add(2);
                return Ok((buf.len() >= end).then_some(end));
            }
            if depth >= MAX_DEPTH {
                return Err(protocol("arrays nested too deep"));
            }
            let mut end = line_end;
            for _ in 0..n {
                match frame_end(buf, end, depth + 1)? {
                    Some(next) => end = next,
                    None => return Ok(None),
                }
            }
            Ok(Some(end))
        }
        _ => Err(protocol("not a RESP2 value")),
    }
}

/// The value of one complete reply. A bulk string (every call deciding its
/// requests) is read here; anything else by redis-rs's parser.
fn parse(reply: &[u8]) -> Result<Value, RedisError> {
    if reply.first() == Some(&b'$') {
        if let Some(eol) = reply.windows(2).position(|w| w == b"\r\n") {
            let start = eol + 2;
            if reply.len() >= start + 2 && reply[1] != b'-' {
                return Ok(Value::BulkString(reply[start..reply.len() - 2].to_vec()));
            }
        }
    }
    redis::parse_redis_value(reply)?.extract_error()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_end_where_resp2_says() {
        let cases: [(&[u8], Option<usize>); 9] = [
            (b"", None),
            (b"+OK\r", None),
            (b"+OK\r\n", Some(5)),
            (b"$3\r\nab", None),
            (b"$3\r\nabc\r\n", Some(9)),
            (b"$-1\r\n", Some(5)),
            (b"*2\r\n$1\r\na\r\n", None),
            (b"*2\r\n$1\r\na\r\n-ERR x\r\n", Some(19)),
            (b"*0\r\n", Some(4)),
        ];
        for (bytes, end) in cases {
            assert_eq!(frame_end(bytes, 0, 0).unwrap(), end, "{bytes:?}");
        }
        assert!(frame_end(b"?\r\n", 0, 0).is_err());
        assert!(frame_end(b"$x\r\n", 0, 0).is_err());
        assert!(frame_end(b"*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n:1\r\n", 0, 0).is_err());
    }

    #[test]
    fn replies_parse_to_values_and_errors() {
        assert_eq!(
            parse(b"$4\r\na\r\nb\r\n").unwrap(),
            Value::BulkString(b"a\r\nb".to_vec())
        );
        assert_eq!(parse(b"$0\r\n\r\n").unwrap(), Value::BulkString(Vec::new()));
        assert_eq!(parse(b"$-1\r\n").unwrap(), Value::Nil);
        assert_eq!(parse(b"+OK\r\n").unwrap(), Value::Okay);
        assert_eq!(
            parse(b"*2\r\n$1\r\na\r\n:7\r\n").unwrap(),
            Value::Array(vec![Value::BulkString(b"a".to_vec()), Value::Int(7)])
        );
        let e = parse(b"-NOSCRIPT No matching script.\r\n").unwrap_err();
        assert!(is_noscript(&e), "{e}");
        let e = parse(b"-WRONGPASS invalid username-password pair\r\n").unwrap_err();
        assert!(e.to_string().contains("WRONGPASS"), "{e}");
    }

    #[test]
    fn targets_only_plain_tcp_with_resp2() {
        let plain = WireTarget::of("redis://127.0.0.1:6390").unwrap();
        assert_eq!((plain.host.as_str(), plain.port), ("127.0.0.1", 6390));
        assert!(plain.handshake.is_empty());
        let auth = WireTarget::of("redis://user:secret@localhost:6390/3").unwrap();
        let handshake: Vec<String> = auth
            .handshake
            .iter()
            .map(|c| String::from_utf8(c.get_packed_command()).unwrap())
            .collect();
        assert_eq!(handshake.len(), 2);
        assert!(handshake[0].contains("AUTH") && handshake[0].contains("user"));
        assert!(handshake[0].contains("secret") && handshake[1].contains("SELECT"));
        let v6 = WireTarget::of("redis://[::1]:6390").unwrap();
        assert_eq!(v6.host, "::1", "no brackets: it is given to connect as is");
        assert!(WireTarget::of("rediss://127.0.0.1:6390").is_none());
        assert!(WireTarget::of("redis+unix:///tmp/redis.sock").is_none());
        assert!(WireTarget::of("redis://127.0.0.1:6390?protocol=resp3").is_none());
        assert!(WireTarget::of("not a url").is_none());
    }
}
