//! The policy-set script (`lua/set.lua`), and how a call to it is built
//! and read.

use ratelimit_core::{Limit, PolicySet};
use redis::{Script, Value};

use crate::keys::set_ids;
use crate::script::ForeignValue;
use crate::set_fast::fast_paths;
use crate::transport::{CallArgs, Calls, Library, LuaCode, Replies};

/// The policy kinds of the script's set description.
const FIXED: u8 = 1;
const SLIDING: u8 = 2;
const BUCKET: u8 = 3;
const CONCURRENCY: u8 = 4;

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

/// An operation's argument, packed as `lua/set.lua` reads it, appended to
/// `out`: the code, the injected `now` if any, then each argument (a
/// number as a little-endian double, a lease as a byte 1 and its 16 bytes,
/// no lease as a byte 0).
fn pack(request: &SetRequest, out: &mut Vec<u8>) {
    out.reserve(9 + 17 * request.args.len());
    out.push(request.op.code());
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
            Arg::None => out.push(0),
        }
    }
}

/// `n` as the script reads a number: a little-endian double. Every number
/// passed is below 2^53 (times, costs, marks, parameters, ids; amounts are
/// capped at [`MAX_AMOUNT`]), so exact.
fn double(n: u64) -> [u8; 8] {
    #[allow(clippy::cast_precision_loss)]
    (n as f64).to_le_bytes()
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

/// The set script (`lua/set.lua` with the fast paths written for the set,
/// see [`crate::set_fast`]: one script, loaded and cached by its own SHA1,
/// per set) and the description of the set passed with every call.
#[derive(Debug, Clone)]
pub(crate) struct SetScript {
    script: Script,
    /// The same code as a Redis function library: one per set, as the
    /// script.
    library: Library,
    /// The set, packed as `lua/set.lua` reads it: per policy its kind,
    /// whether it settles, three parameters and its id.
    set: Vec<u8>,
    /// Each policy's kind, in set order.
    kinds: Vec<u8>,
    names: Vec<String>,
}

impl SetScript {
    pub(crate) fn new(set: &PolicySet) -> Self {
        let mut packed = Vec::with_capacity(34 * set.len());
        let mut kinds = Vec::with_capacity(set.len());
        for (l, id) in set.limits().iter().zip(set_ids(set)) {
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
            kinds.push(kind);
            packed.push(kind);
            packed.push(u8::from(l.settles()));
            for v in [a, b, c, id] {
                packed.extend_from_slice(&double(v));
            }
        }
        let code = include_str!("lua/set.lua").replace(
            "--@FAST_CHECK@",
            &fast_paths(set, &set_ids(set)).unwrap_or_default(),
        );
        let script = Script::new(&code);
        Self {
            library: Library::of("set", &script, &code),
            script,
            set: packed,
            kinds,
            names: set.names().map(str::to_owned).collect(),
        }
    }

    /// The replies a reply to `requests` stands for, in order: one string,
    /// each operation's reply after the other's (see `lua/set.lua`).
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
        let Value::BulkString(bytes) = reply else {
            return Err(shape());
        };
        let mut rest = &bytes[..];
        let replies = requests
            .iter()
            .map(|request| self.reply(request.op, &mut rest).ok_or_else(shape))
            .collect::<Result<_, _>>()?;
        if rest.is_empty() {
            Ok(replies)
        } else {
            Err(shape())
        }
    }

    /// The reply to an operation `op` at the start of `rest`, which then
    /// starts after it; `None` if there is none.
    fn reply(&self, op: Op, rest: &mut &[u8]) -> Option<Result<SetReply, ForeignValue>> {
        let n = self.kinds.len();
        let (&status, tail) = rest.split_first()?;
        *rest = tail;
        let mut take = |len: usize| -> Option<&[u8]> {
            let (head, tail) = (rest.get(..len)?, rest.get(len..)?);
            *rest = tail;
            Some(head)
        };
        Some(match status {
            0 => {
                let numbers = match op {
                    Op::Release => 1,
                    Op::Settle | Op::Peek => 3 * n,
                    Op::Check => self.checked_numbers(),
                    Op::Renew => self.kinds.iter().filter(|&&k| k == CONCURRENCY).count(),
                };
                Ok(SetReply::Done(self.done(op, take(8 * numbers)?)?))
            }
            // A check denied (its marks mean nothing).
            3 if op == Op::Check => Ok(SetReply::Done(
                self.checked(take(8 * self.checked_numbers())?)?,
            )),
            1 => {
                let b = take(10)?;
                let index = usize::from(b[0]);
                let count = number(&b[2..10])?;
                let refusal = match b[1] {
                    1 => Refusal::NotSettling,
                    2 => Refusal::WindowDomain(count),
                    3 => Refusal::BucketDomain,
                    _ => return None,
                };
                (index < n).then_some(Ok(SetReply::Refused(index, refusal)))?
            }
            2 => {
                let b = take(3)?;
                let (index, len) = (b[0], usize::from(u16::from_le_bytes([b[1], b[2]])));
                let message = String::from_utf8_lossy(take(len)?);
                let index = usize::from(index);
                if index < n {
                    Err(ForeignValue(format!(
                        "policy {:?}: {message}",
                        self.names[index]
                    )))
                } else if index == 255 {
                    // The key itself (its value, or a key of another type:
                    // Redis's error, which names no key).
                    Err(ForeignValue(format!("the set's key: {message}")))
                } else {
                    return None;
                }
            }
            _ => return None,
        })
    }

    /// The entries of a done reply to `op`, its numbers `bytes`, or `None`
    /// if it is not one.
    fn done(&self, op: Op, bytes: &[u8]) -> Option<Vec<Entry>> {
        let mut numbers = bytes.chunks_exact(8);
        if !numbers.remainder().is_empty() {
            return None;
        }
        let mut next = || numbers.next().and_then(number);
        let entries = match op {
            Op::Release => {
                next()?;
                Vec::new()
            }
            Op::Settle | Op::Peek => return self.decided(bytes),
            Op::Check => return self.checked(bytes),
            // Per concurrency policy its lease's expiry, 0 when not held.
            Op::Renew => self
                .kinds
                .iter()
                .map(|&kind| {
                    let expiry = if kind == CONCURRENCY { next()? } else { 0 };
                    Some(Entry {
                        allowed: kind != CONCURRENCY || expiry > 0,
                        remaining: 0,
                        reset_after_us: 0,
                        retry_after_us: 0,
                        marks: [expiry, 0, 0],
                    })
                })
                .collect::<Option<_>>()?,
        };
        numbers.next().is_none().then_some(entries)
    }

    /// The numbers of a check's reply: per policy 4, a bucket 6.
    fn checked_numbers(&self) -> usize {
        self.kinds
            .iter()
            .map(|&k| if k == BUCKET { 6 } else { 4 })
            .sum()
    }

    /// A check's decisions: per policy `r, remaining, reset_after_us` as
    /// [`decided`](Self::decided) reads them, then its marks (a bucket 3,
    /// any other policy 1), or `None`.
    fn checked(&self, bytes: &[u8]) -> Option<Vec<Entry>> {
        let mut rest = bytes;
        let entries = self
            .kinds
            .iter()
            .map(|&kind| {
                let marks = if kind == BUCKET { 3 } else { 1 };
                let (entry, tail) = rest.split_at_checked(24 + 8 * marks)?;
                rest = tail;
                let mut e = decision(&entry[..24])?;
                for (m, b) in e.marks.iter_mut().zip(entry[24..].chunks_exact(8)) {
                    *m = number(b)?;
                }
                Some(e)
            })
            .collect::<Option<_>>()?;
        rest.is_empty().then_some(entries)
    }

    /// One decision per policy, each `r, remaining, reset_after_us` (`r`
    /// -1 when allowed, else the retry_after), or `None`.
    fn decided(&self, bytes: &[u8]) -> Option<Vec<Entry>> {
        if bytes.len() != 24 * self.kinds.len() {
            return None;
        }
        bytes.chunks_exact(24).map(decision).collect()
    }
}

/// A decision packed as `r, remaining, reset_after_us` (`r` -1 when
/// allowed, else the retry_after), with no marks.
fn decision(e: &[u8]) -> Option<Entry> {
    let allowed = f64::from_le_bytes(e[..8].try_into().ok()?) == -1.0;
    Some(Entry {
        allowed,
        remaining: number(&e[8..16])?,
        reset_after_us: number(&e[16..24])?,
        retry_after_us: if allowed { 0 } else { number(&e[..8])? },
        marks: [0; 3],
    })
}

impl LuaCode for SetScript {
    type Request = SetRequest;
    type Reply = SetReply;

    fn script(&self) -> &Script {
        &self.script
    }

    fn library(&self) -> &Library {
        &self.library
    }

    /// Writes the keys, then the arguments, of a call running `requests`:
    /// the clock (`injected` when the requests carry their `now`, else
    /// empty: the server's time), the least TTL, the set, and the
    /// operations packed one after the other.
    fn fill(&self, requests: &[SetRequest], min_ttl_ms: u64, call: &mut impl CallArgs) {
        for request in requests {
            call.key(&request.redis_key[..]);
        }
        let injected = requests.last().is_some_and(|r| r.now.is_some());
        call.arg(if injected { "injected" } else { "" });
        call.arg(min_ttl_ms);
        call.arg(&self.set[..]);
        let mut operations = Vec::new();
        for request in requests {
            pack(request, &mut operations);
        }
        call.arg(operations);
    }

    fn replies_to(
        &self,
        reply: Value,
        requests: &[SetRequest],
    ) -> Result<Replies<SetReply>, redis::RedisError> {
        self.replies(reply, requests)
    }
}

/// An integer below 2^64 packed as a little-endian double.
fn number(b: &[u8]) -> Option<u64> {
    let v = f64::from_le_bytes(b.try_into().ok()?);
    // Integers below 2^64 (the script's are below 2^53, exact in a double).
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    (v >= 0.0 && v.fract() == 0.0 && v < 18_446_744_073_709_551_616.0).then_some(v as u64)
}

/// The set limiter's transport.
pub(crate) type SetCalls = Calls<SetScript>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operations_pack_their_code_now_numbers_and_id_slots_one_after_the_other() {
        let request = SetRequest {
            redis_key: b"k".to_vec(),
            op: Op::Check,
            args: vec![Arg::Num(3), Arg::Num(1), Arg::Id([7; 16]), Arg::None],
            now: Some(1_700_000_000_000_000),
        };
        let mut bytes = Vec::new();
        pack(&request, &mut bytes);
        assert_eq!(bytes.len(), 1 + 8 + 8 + 8 + 17 + 1);
        assert_eq!(bytes[0], b'c');
        assert_eq!(f64::from_le_bytes(bytes[1..9].try_into().unwrap()), 1.7e15);
        assert_eq!(f64::from_le_bytes(bytes[9..17].try_into().unwrap()), 3.0);
        assert_eq!(f64::from_le_bytes(bytes[17..25].try_into().unwrap()), 1.0);
        assert_eq!(bytes[25], 1);
        assert_eq!(bytes[26..42], [7; 16]);
        assert_eq!(bytes[42..], [0]);
        // On the server's time there is no `now`; the largest amount is
        // exact.
        let request = SetRequest {
            now: None,
            op: Op::Settle,
            args: vec![Arg::Num(MAX_AMOUNT)],
            ..request
        };
        // Appended after what the buffer holds.
        pack(&request, &mut bytes);
        let bytes = &bytes[43..];
        assert_eq!(bytes[0], b's');
        assert_eq!(
            f64::from_le_bytes(bytes[1..9].try_into().unwrap()),
            9_007_199_254_740_992.0
        );
        assert_eq!(bytes.len(), 9);
    }
}
