//! The Lua script of each policy, and how a call to it is built and read.

use std::fmt;

use ratelimit_core::{Decision, Policy};
use redis::{Cmd, Script, Value};

/// Bytes per request in a reply: `struct.pack('<Bddd', ...)`.
const ENTRY: usize = 25;

/// One request of a script call.
#[derive(Debug)]
pub(crate) struct Request {
    /// The Redis key holding the limiter key's state.
    pub(crate) redis_key: Vec<u8>,
    /// The cost to take, or 0 to peek.
    pub(crate) cost: u64,
    /// `now` in µs on an injected clock; `None` on the server's time.
    pub(crate) now: Option<u64>,
}

/// Why the script could not decide one request while Redis answered: the
/// request's key holds a value the script did not write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ForeignValue(pub(crate) String);

impl fmt::Display for ForeignValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ForeignValue {}

/// One policy's script and the parameters passed with every call.
#[derive(Debug, Clone)]
pub(crate) struct PolicyScript {
    script: Script,
    code: &'static str,
    limit: u64,
    params: Vec<u64>,
}

impl PolicyScript {
    /// The script for `policy`, or `None` for an algorithm this backend does
    /// not know (the policy enum is non-exhaustive).
    pub(crate) fn new(policy: &Policy) -> Option<Self> {
        // One script per policy, loaded and cached by its own SHA1: the
        // size of the packed state and the number of parameters, the shared
        // prelude, the policy's `decide`, and the loop running it for each
        // request of the call (see the Lua files for the calling convention).
        let (code, params) = match policy {
            Policy::FixedWindow(p) => (
                concat!(
                    "local SIZE, PARAMS = 16, 2\n",
                    include_str!("lua/prelude.lua"),
                    include_str!("lua/fixed_window.lua"),
                    include_str!("lua/decide_all.lua")
                ),
                vec![p.limit(), p.window_micros()],
            ),
            Policy::SlidingWindow(p) => (
                concat!(
                    "local SIZE, PARAMS = 24, 3\n",
                    include_str!("lua/prelude.lua"),
                    include_str!("lua/sliding_window.lua"),
                    include_str!("lua/decide_all.lua")
                ),
                vec![p.limit(), p.window_micros(), p.window_micros() / 1000],
            ),
            Policy::TokenBucket(p) => {
                let interval = p.emission_interval_micros();
                (
                    concat!(
                        "local SIZE, PARAMS = 8, 2\n",
                        include_str!("lua/prelude.lua"),
                        include_str!("lua/token_bucket.lua"),
                        include_str!("lua/decide_all.lua")
                    ),
                    // capacity * interval < 2^51: checked when the bucket
                    // was built.
                    vec![interval, p.capacity() * interval],
                )
            }
            _ => return None,
        };
        Some(Self {
            script: Script::new(code),
            code,
            limit: policy.limit(),
            params,
        })
    }

    /// The script itself (for loading it ahead of the first call).
    pub(crate) fn script(&self) -> &Script {
        &self.script
    }

    /// `SCRIPT LOAD` of the script, for a connection that finds it missing.
    pub(crate) fn load_command(&self) -> Cmd {
        let mut cmd = redis::cmd("SCRIPT");
        cmd.arg("LOAD").arg(self.code);
        cmd
    }

    /// One `EVALSHA` deciding `requests` in order. They all read the
    /// server's time, or all carry their own `now`.
    pub(crate) fn command<'a>(
        &self,
        requests: impl ExactSizeIterator<Item = &'a Request> + Clone,
        min_ttl_ms: u64,
    ) -> Cmd {
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(self.script.get_hash()).arg(requests.len());
        let mut injected = false;
        for request in requests.clone() {
            cmd.arg(&request.redis_key[..]);
            injected = request.now.is_some();
        }
        cmd.arg(if injected { "injected" } else { "" })
            .arg(min_ttl_ms)
            .arg(&self.params[..]);
        for request in requests {
            cmd.arg(request.cost);
            if let Some(now) = request.now {
                cmd.arg(now);
            }
        }
        cmd
    }

    /// The decisions a reply to `n` requests stands for, in order.
    ///
    /// # Errors
    ///
    /// A reply of the wrong shape (not this script's) as a Redis error.
    pub(crate) fn decisions(
        &self,
        reply: Value,
        n: usize,
    ) -> Result<Vec<Result<Decision, ForeignValue>>, redis::RedisError> {
        let shape = || {
            redis::RedisError::from((
                redis::ErrorKind::Parse,
                "unexpected reply from the rate-limit script",
            ))
        };
        // The packed decisions alone, or followed by the problems' messages.
        let (packed, mut messages) = match reply {
            Value::BulkString(packed) => (packed, Vec::new().into_iter()),
            Value::Array(values) => {
                let mut values = values.into_iter();
                let Some(Value::BulkString(packed)) = values.next() else {
                    return Err(shape());
                };
                (packed, values)
            }
            _ => return Err(shape()),
        };
        if packed.len() != ENTRY * n {
            return Err(shape());
        }
        let number = |b: &[u8]| {
            let v = f64::from_le_bytes(b.try_into().expect("8 bytes"));
            // Integers below 2^53, exact in a double.
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            (v >= 0.0 && v.fract() == 0.0)
                .then_some(v as u64)
                .ok_or_else(shape)
        };
        packed
            .chunks_exact(ENTRY)
            .map(|e| match e[0] {
                status @ (0 | 1) => Ok(Ok(Decision::from_micros(
                    status == 1,
                    self.limit,
                    number(&e[1..9])?,
                    number(&e[9..17])?,
                    number(&e[17..25])?,
                ))),
                2 => match messages.next() {
                    Some(Value::BulkString(message)) => Ok(Err(ForeignValue(
                        String::from_utf8_lossy(&message).into_owned(),
                    ))),
                    _ => Err(shape()),
                },
                _ => Err(shape()),
            })
            .collect()
    }
}
