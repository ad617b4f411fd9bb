//! The policy-set script (`lua/set.lua`), and how a call to it is built
//! and read.

use ratelimit_core::{Limit, PolicySet};
use redis::{Script, ScriptInvocation, Value};

use crate::connection::{CallError, Connection};
use crate::keys::set_fields;
use crate::script::ForeignValue;
use crate::transport::{Replies, ScriptSource, Transport};

/// Bytes per policy in a reply: `ENTRY` in `lua/set.lua` (a status byte
/// and six doubles).
const ENTRY: usize = 49;

/// The policy kinds of the script's header.
const FIXED: u64 = 1;
const SLIDING: u64 = 2;
const BUCKET: u64 = 3;
const CONCURRENCY: u64 = 4;

/// The largest amount passed to the script: 2^53. An actual amount above
/// it only ever makes a charge leave the exact domain, which the script
/// then refuses, so capping it changes no answer.
pub(crate) const MAX_AMOUNT: u64 = 1 << 53;

/// One argument of an operation.
#[derive(Debug, Clone)]
pub(crate) enum Arg {
    /// A number.
    Num(u64),
    /// A lease id, as the 16 bytes stored.
    Id([u8; 16]),
    /// No lease.
    None,
}

/// What an operation does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    Check,
    Settle,
    Renew,
    Release,
    Peek,
}

impl Op {
    const fn code(self) -> u8 {
        match self {
            Self::Check => b'c',
            Self::Settle => b's',
            Self::Renew => b'r',
            Self::Release => b'x',
            Self::Peek => b'p',
        }
    }
}

/// An operation's one argument, packed as `lua/set.lua` reads it: the
/// code, the injected `now` if any, then each argument (a number as a
/// little-endian double, a lease as a byte 1 and its 16 bytes, no lease as
/// 17 zero bytes).
fn packed(request: &SetRequest) -> Vec<u8> {
    let mut out = Vec::with_capacity(9 + 17 * request.args.len());
    out.push(request.op.code());
    // Every number passed is below 2^53 (times, costs, marks; amounts are
    // capped at MAX_AMOUNT), so exact as a double.
    #[allow(clippy::cast_precision_loss)]
    let double = |n: u64| (n as f64).to_le_bytes();
    if let Some(now) = request.now {
        out.extend_from_slice(&double(now));
    }
    for arg in &request.args {
        match arg {
            Arg::Num(n) => out.extend_from_slice(&double(*n)),
            Arg::Id(id) => {
                out.push(1);
                out.extend_from_slice(id);
            }
            Arg::None => out.extend_from_slice(&[0; 17]),
        }
    }
    out
}

/// One operation of a set-script call, on one limiter key.
#[derive(Debug, Clone)]
pub(crate) struct SetRequest {
    /// The Redis key of the limiter key.
    pub(crate) redis_key: Vec<u8>,
    pub(crate) op: Op,
    /// The operation's arguments, as `lua/set.lua` lists them.
    pub(crate) args: Vec<Arg>,
    /// `now` in µs on an injected clock; `None` on the server's time.
    pub(crate) now: Option<u64>,
}

/// One policy's part of a reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Entry {
    pub(crate) allowed: bool,
    pub(crate) remaining: u64,
    pub(crate) reset_after_us: u64,
    pub(crate) retry_after_us: u64,
    /// The marks (see `lua/set.lua`).
    pub(crate) marks: [u64; 3],
}

/// Why the script refused a settle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// `actual != taken` on a policy not declared to settle.
    NotSettling,
    /// A window's count would leave the exact domain; the stored count.
    WindowDomain(u64),
    /// A bucket's time would pass 2^53 µs.
    BucketDomain,
}

/// What one operation got back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SetReply {
    /// Done: one entry per policy (a release: none).
    Done(Vec<Entry>),
    /// A settle refused by the policy at this index; only its leases were
    /// released.
    Refused(usize, Refusal),
}

/// The set script and the header passed with every call.
#[derive(Debug, Clone)]
pub(crate) struct SetScript {
    script: Script,
    /// Six values per policy (see `lua/set.lua`), formatted once.
    header: Vec<Vec<u8>>,
    names: Vec<String>,
}

impl SetScript {
    pub(crate) fn new(set: &PolicySet) -> Self {
        let mut header = Vec::with_capacity(6 * set.len());
        for (l, field) in set.limits().iter().zip(set_fields(set)) {
            let (kind, a, b, c) = match l.limit() {
                Limit::Rate(ratelimit_core::Policy::FixedWindow(p)) => (
                    FIXED,
                    p.limit(),
                    p.window_micros(),
                    p.window_micros() / 1000,
                ),
                Limit::Rate(ratelimit_core::Policy::SlidingWindow(p)) => (
                    SLIDING,
                    p.limit(),
                    p.window_micros(),
                    p.window_micros() / 1000,
                ),
                Limit::Rate(ratelimit_core::Policy::TokenBucket(p)) => (
                    BUCKET,
                    p.emission_interval_micros(),
                    // capacity * interval < 2^51: checked when the bucket
                    // was built.
                    p.capacity() * p.emission_interval_micros(),
                    0,
                ),
                Limit::Concurrency(c) => (CONCURRENCY, c.limit(), c.lease_ttl_micros(), 0),
            };
            header.extend(
                [kind, u64::from(l.settles()), a, b, c].map(|v| v.to_string().into_bytes()),
            );
            header.push(field.into_bytes());
        }
        Self {
            script: Script::new(include_str!("lua/set.lua")),
            header,
            names: set.names().map(str::to_owned).collect(),
        }
    }

    /// The invocation running `requests` in order.
    pub(crate) fn invocation(
        &self,
        requests: &[SetRequest],
        min_ttl_ms: u64,
    ) -> ScriptInvocation<'_> {
        let mut invocation = self.script.prepare_invoke();
        let mut injected = false;
        for request in requests {
            invocation.key(&request.redis_key[..]);
            injected = request.now.is_some();
        }
        invocation
            .arg(if injected { "injected" } else { "" })
            .arg(min_ttl_ms)
            .arg(self.names.len());
        for value in &self.header {
            invocation.arg(&value[..]);
        }
        for request in requests {
            invocation.arg(packed(request));
        }
        invocation
    }

    /// The replies a reply to `requests` stands for, in order.
    pub(crate) fn replies(
        &self,
        reply: Value,
        requests: &[SetRequest],
    ) -> Result<Replies<SetReply>, redis::RedisError> {
        let shape = || {
            redis::RedisError::from((
                redis::ErrorKind::Parse,
                "unexpected reply from the policy-set script",
            ))
        };
        let Value::Array(values) = reply else {
            return Err(shape());
        };
        if values.len() != requests.len() {
            return Err(shape());
        }
        let n = self.names.len();
        values
            .into_iter()
            .zip(requests)
            .map(|(value, request)| {
                let Value::BulkString(bytes) = value else {
                    return Err(shape());
                };
                match bytes.first() {
                    Some(0) if request.op == Op::Release => Ok(Ok(SetReply::Done(Vec::new()))),
                    Some(0) if bytes.len() == 1 + ENTRY * n => Ok(Ok(SetReply::Done(
                        bytes[1..]
                            .chunks_exact(ENTRY)
                            .map(|e| entry(e).ok_or_else(shape))
                            .collect::<Result<_, _>>()?,
                    ))),
                    Some(1) if bytes.len() == 11 && usize::from(bytes[1]) < n => {
                        let count = number(&bytes[3..11]).ok_or_else(shape)?;
                        let refusal = match bytes[2] {
                            1 => Refusal::NotSettling,
                            2 => Refusal::WindowDomain(count),
                            3 => Refusal::BucketDomain,
                            _ => return Err(shape()),
                        };
                        Ok(Ok(SetReply::Refused(usize::from(bytes[1]), refusal)))
                    }
                    Some(2) if bytes.len() >= 2 && usize::from(bytes[1]) < n => {
                        Ok(Err(ForeignValue(format!(
                            "policy {:?}: {}",
                            self.names[usize::from(bytes[1])],
                            String::from_utf8_lossy(&bytes[2..])
                        ))))
                    }
                    // The key itself is of another type (Redis's error,
                    // which names no key).
                    Some(2) if bytes.len() >= 2 && bytes[1] == 255 => Ok(Err(ForeignValue(
                        format!("the set's key: {}", String::from_utf8_lossy(&bytes[2..])),
                    ))),
                    _ => Err(shape()),
                }
            })
            .collect()
    }
}

/// An integer below 2^53 packed as a little-endian double.
fn number(b: &[u8]) -> Option<u64> {
    let v = f64::from_le_bytes(b.try_into().ok()?);
    // Integers below 2^53, exact in a double.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    (v >= 0.0 && v.fract() == 0.0 && v < 18_446_744_073_709_551_616.0).then_some(v as u64)
}

fn entry(e: &[u8]) -> Option<Entry> {
    let allowed = match e[0] {
        0 => false,
        1 => true,
        _ => return None,
    };
    Some(Entry {
        allowed,
        remaining: number(&e[1..9])?,
        reset_after_us: number(&e[9..17])?,
        retry_after_us: number(&e[17..25])?,
        marks: [
            number(&e[25..33])?,
            number(&e[33..41])?,
            number(&e[41..49])?,
        ],
    })
}

impl ScriptSource for SetScript {
    type Transport = SetCalls;

    fn script(&self) -> &Script {
        &self.script
    }

    fn transport(&self, connection: Connection, min_ttl_ms: u64) -> SetCalls {
        SetCalls {
            connection,
            script: self.clone(),
            min_ttl_ms,
        }
    }
}

/// The set limiter's transport: the set script on a connection.
pub(crate) struct SetCalls {
    connection: Connection,
    script: SetScript,
    min_ttl_ms: u64,
}

impl Transport for SetCalls {
    type Request = SetRequest;
    type Reply = SetReply;

    async fn call(&self, requests: &[SetRequest]) -> Result<Replies<SetReply>, CallError> {
        let invocation = self.script.invocation(requests, self.min_ttl_ms);
        let reply = self.connection.invoke(&invocation).await?;
        Ok(self.script.replies(reply, requests)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_operation_packs_its_code_now_numbers_and_id_slots() {
        let request = SetRequest {
            redis_key: b"k".to_vec(),
            op: Op::Check,
            args: vec![Arg::Num(3), Arg::Num(1), Arg::Id([7; 16]), Arg::None],
            now: Some(1_700_000_000_000_000),
        };
        let bytes = packed(&request);
        assert_eq!(bytes.len(), 1 + 8 + 8 + 8 + 17 + 17);
        assert_eq!(bytes[0], b'c');
        assert_eq!(f64::from_le_bytes(bytes[1..9].try_into().unwrap()), 1.7e15);
        assert_eq!(f64::from_le_bytes(bytes[9..17].try_into().unwrap()), 3.0);
        assert_eq!(f64::from_le_bytes(bytes[17..25].try_into().unwrap()), 1.0);
        assert_eq!(bytes[25], 1);
        assert_eq!(bytes[26..42], [7; 16]);
        assert_eq!(bytes[42..], [0; 17]);
        // On the server's time there is no `now`; the largest amount is
        // exact.
        let request = SetRequest {
            now: None,
            op: Op::Settle,
            args: vec![Arg::Num(MAX_AMOUNT)],
            ..request
        };
        let bytes = packed(&request);
        assert_eq!(bytes[0], b's');
        assert_eq!(
            f64::from_le_bytes(bytes[1..9].try_into().unwrap()),
            9_007_199_254_740_992.0
        );
        assert_eq!(bytes.len(), 9);
    }
}
