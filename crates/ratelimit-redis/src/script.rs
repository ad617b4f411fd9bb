//! The Lua script of each policy, and how a call to it is built and read.

use std::fmt;

use ratelimit_core::{Decision, FixedWindow, Policy, SlidingWindow, TokenBucket};
use redis::{Script, Value};

use crate::transport::{CallArgs, Library, LuaCode, Replies};

/// Bytes per request in a reply: the size of `REPLY` in `lua/prelude.lua`
/// (checked by a test).
const ENTRY: usize = 25;

/// One request of a script call.
#[derive(Debug, Clone)]
pub(crate) struct Request {
    /// The Redis key holding the limiter key's state.
    pub(crate) redis_key: Vec<u8>,
    /// The cost to take, or 0 to peek.
    pub(crate) cost: u64,
    /// `now` in µs on an injected clock; `None` on the server's time.
    pub(crate) now: Option<u64>,
}

/// Why the script could not decide one request while Redis answered: the
/// request's key holds a value the script did not write. It holds what the
/// script found wrong with the value, never the key: errors end up in log
/// lines, and a limiter key is often a client's IP address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ForeignValue(pub(crate) String);

impl fmt::Display for ForeignValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "a key holds a value this script did not write ({})",
            self.0
        )
    }
}

impl std::error::Error for ForeignValue {}

/// One parameter of a script: its name in the Lua file's `params(...)`
/// line, and its value for a policy.
type Param<P> = (&'static str, fn(&P) -> u64);

/// How one algorithm's script is called: its source and its parameters.
///
/// The layout itself (the stored state's format and the parameters' order)
/// is declared once, at the top of the algorithm's `.lua` file (see
/// `lua/prelude.lua`); `params` lists the same names in the same order,
/// each beside the accessor that computes it, and the tests below check
/// the two against each other.
struct Layout<P: 'static> {
    /// The whole script: the prelude, the algorithm's file, decide_all.
    code: &'static str,
    /// The algorithm's own file, where its layout is declared.
    #[cfg_attr(not(test), allow(dead_code))]
    lua: &'static str,
    /// The parameters, in the order the Lua file names them.
    params: &'static [Param<P>],
}

/// The whole script of the algorithm whose file is `$file`.
macro_rules! script {
    ($file:literal) => {
        concat!(
            include_str!("lua/prelude.lua"),
            include_str!($file),
            include_str!("lua/decide_all.lua")
        )
    };
}

const FIXED_WINDOW: Layout<FixedWindow> = Layout {
    code: script!("lua/fixed_window.lua"),
    lua: include_str!("lua/fixed_window.lua"),
    params: &[
        ("limit", FixedWindow::limit),
        ("window_us", FixedWindow::window_micros),
    ],
};

const SLIDING_WINDOW: Layout<SlidingWindow> = Layout {
    code: script!("lua/sliding_window.lua"),
    lua: include_str!("lua/sliding_window.lua"),
    params: &[
        ("limit", SlidingWindow::limit),
        ("window_us", SlidingWindow::window_micros),
        ("window_ms", |p| p.window_micros() / 1000),
    ],
};

const TOKEN_BUCKET: Layout<TokenBucket> = Layout {
    code: script!("lua/token_bucket.lua"),
    lua: include_str!("lua/token_bucket.lua"),
    params: &[
        ("interval_us", TokenBucket::emission_interval_micros),
        // capacity * interval < 2^51: checked when the bucket was built.
        ("span_us", |p| p.capacity() * p.emission_interval_micros()),
    ],
};

/// One policy's script and the parameters passed with every call.
#[derive(Debug, Clone)]
pub(crate) struct PolicyScript {
    script: Script,
    /// The same code as a function library: one per algorithm, as the
    /// script.
    library: Library,
    limit: u64,
    params: Vec<u64>,
}

impl PolicyScript {
    /// The script for `policy`: one per algorithm, loaded and cached by its
    /// own SHA1, with the parameters its layout declares.
    pub(crate) fn new(policy: &Policy) -> Self {
        // No wildcard arm: an algorithm without a script is a compile error.
        match policy {
            Policy::FixedWindow(p) => Self::with_layout(&FIXED_WINDOW, p, policy.limit()),
            Policy::SlidingWindow(p) => Self::with_layout(&SLIDING_WINDOW, p, policy.limit()),
            Policy::TokenBucket(p) => Self::with_layout(&TOKEN_BUCKET, p, policy.limit()),
        }
    }

    fn with_layout<P>(layout: &Layout<P>, policy: &P, limit: u64) -> Self {
        let script = Script::new(layout.code);
        Self {
            library: Library::of("policy", &script, layout.code),
            script,
            limit,
            params: layout
                .params
                .iter()
                .map(|(_, value)| value(policy))
                .collect(),
        }
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

impl LuaCode for PolicyScript {
    type Request = Request;
    type Reply = Decision;

    fn script(&self) -> &Script {
        &self.script
    }

    fn library(&self) -> &Library {
        &self.library
    }

    // They all read the server's time, or all carry their own `now`.
    fn fill(&self, requests: &[Request], min_ttl_ms: u64, call: &mut impl CallArgs) {
        let mut injected = false;
        for request in requests {
            call.key(&request.redis_key[..]);
            injected = request.now.is_some();
        }
        call.arg(if injected { "injected" } else { "" });
        call.arg(min_ttl_ms);
        call.arg(&self.params[..]);
        for request in requests {
            call.arg(request.cost);
            if let Some(now) = request.now {
                call.arg(now);
            }
        }
    }

    fn replies_to(&self, reply: Value, requests: &[Request]) -> Result<Replies, redis::RedisError> {
        self.decisions(reply, requests.len())
    }
}

#[cfg(test)]
mod tests {
    use proptest::strategy::{Strategy, ValueTree};
    use proptest::test_runner::TestRunner;
    use ratelimit_conformance::strategy::policy_of;
    use ratelimit_core::{Algorithm, AlgorithmName};
    use ratelimit_redis_harness::RedisServer;

    use super::*;

    /// `algorithm`'s Lua file and the parameter names the Rust side sends,
    /// in order. No wildcard arm: a new algorithm's layout is checked too.
    fn layout(algorithm: AlgorithmName) -> (&'static str, Vec<&'static str>) {
        fn erase<P>(layout: &Layout<P>) -> (&'static str, Vec<&'static str>) {
            (
                layout.lua,
                layout.params.iter().map(|(name, _)| *name).collect(),
            )
        }
        match algorithm {
            AlgorithmName::FixedWindow => erase(&FIXED_WINDOW),
            AlgorithmName::SlidingWindow => erase(&SLIDING_WINDOW),
            AlgorithmName::TokenBucket => erase(&TOKEN_BUCKET),
        }
    }

    /// The right-hand side of the one line of `lua` that starts with
    /// `local <names> = ` followed by `rhs_start`, and the names.
    fn declaration<'a>(lua: &'a str, rhs_start: &str) -> (Vec<&'a str>, &'a str) {
        let found: Vec<(Vec<&str>, &str)> = lua
            .lines()
            .filter_map(|line| {
                let (names, rhs) = line.strip_prefix("local ")?.split_once(" = ")?;
                rhs.starts_with(rhs_start)
                    .then(|| (names.split(',').map(str::trim).collect(), rhs))
            })
            .collect();
        assert_eq!(found.len(), 1, "want one `local … = {rhs_start}…` line");
        found.into_iter().next().expect("one line, just checked")
    }

    /// The names and the right-hand side of the one assignment of `lua`
    /// from `params(`, in its `parameters()`: `  a, b = params('a', 'b')`,
    /// the names declared by a `local a, b` line of their own.
    fn parameters(lua: &str) -> (Vec<&str>, &str) {
        let found: Vec<(Vec<&str>, &str)> = lua
            .lines()
            .filter_map(|line| {
                let (names, rhs) = line.trim_start().split_once(" = ")?;
                rhs.starts_with("params(")
                    .then(|| (names.split(',').map(str::trim).collect(), rhs))
            })
            .collect();
        assert_eq!(found.len(), 1, "want one `… = params(…)` line");
        let (names, rhs) = found.into_iter().next().expect("one line, just checked");
        let declared = format!("local {}", names.join(", "));
        assert!(
            lua.lines().any(|line| line == declared),
            "want the line {declared:?}"
        );
        (names, rhs)
    }

    /// The string literal of `local <name> = '<format>'`.
    fn format_of<'a>(lua: &'a str, name: &str) -> &'a str {
        let (names, rhs) = declaration(lua, "'");
        assert_eq!(names, [name]);
        rhs.trim_matches('\'')
    }

    /// What `struct.size` answers for a little-endian format of `B` and `d`.
    fn struct_size(format: &str) -> usize {
        let fields = format.strip_prefix('<').expect("little-endian formats");
        fields
            .chars()
            .map(|c| match c {
                'B' => 1,
                'd' => 8,
                other => panic!("format {format:?}: unexpected {other:?}"),
            })
            .sum()
    }

    /// The first argument of every call of `function` in `lua`.
    fn first_arguments<'a>(lua: &'a str, function: &str) -> Vec<&'a str> {
        let call = format!("{function}(");
        lua.match_indices(&call)
            .filter(|(at, _)| {
                // `encode(` must not match inside `xencode(`.
                !lua[..*at].ends_with(|c: char| c.is_alphanumeric() || c == '_')
            })
            .map(|(at, _)| {
                let rest = &lua[at + call.len()..];
                rest[..rest.find([',', ')']).expect("a closed call")].trim()
            })
            .collect()
    }

    #[test]
    fn each_lua_layout_matches_the_parameters_rust_sends() {
        for algorithm in AlgorithmName::ALL {
            let (lua, rust) = layout(algorithm);
            let (locals, rhs) = parameters(lua);
            let lua_names: Vec<&str> = rhs
                .trim_start_matches("params(")
                .trim_end_matches(')')
                .split(',')
                .map(|name| name.trim().trim_matches('\''))
                .collect();
            assert_eq!(lua_names, rust, "{algorithm}: parameter order");
            assert_eq!(locals.len(), rust.len(), "{algorithm}: one local each");
            // Parameters are read through `params` only.
            assert!(!lua.contains("ARGV"), "{algorithm} reads ARGV itself");
        }
    }

    #[test]
    fn states_and_replies_are_encoded_only_through_their_declared_formats() {
        for algorithm in AlgorithmName::ALL {
            let (lua, _) = layout(algorithm);
            let state = format_of(lua, "STATE");
            assert!(
                state.len() > 1 && state[1..].chars().all(|c| c == 'd'),
                "{algorithm}: STATE {state:?} is not little-endian doubles"
            );
            for function in ["encode", "decode"] {
                let firsts = first_arguments(lua, function);
                assert!(!firsts.is_empty(), "{algorithm} never calls {function}");
                assert!(
                    firsts.iter().all(|a| *a == "STATE"),
                    "{algorithm}: {firsts:?}"
                );
            }
            assert!(!lua.contains("struct."), "{algorithm} calls struct itself");
        }
        let prelude = include_str!("lua/prelude.lua");
        assert_eq!(struct_size(format_of(prelude, "REPLY")), ENTRY);
        let all = include_str!("lua/decide_all.lua");
        for (function, format) in [("encode", "REPLY"), ("encoded_size", "STATE")] {
            let firsts = first_arguments(all, function);
            assert!(
                !firsts.is_empty() && firsts.iter().all(|a| *a == format),
                "{firsts:?}"
            );
        }
    }

    #[test]
    fn prelude_leaves_luas_unpack_alone() {
        let prelude = include_str!("lua/prelude.lua");
        for file in [prelude, include_str!("lua/decide_all.lua")]
            .into_iter()
            .chain(AlgorithmName::ALL.map(|a| layout(a).0))
        {
            // No `local unpack = …` nor `local a, unpack = …`.
            let shadows = file.lines().any(|line| {
                line.strip_prefix("local ")
                    .and_then(|l| l.split_once('='))
                    .is_some_and(|(names, _)| names.split(',').any(|n| n.trim() == "unpack"))
            });
            assert!(!shadows, "a script shadows Lua's unpack");
        }
    }

    /// One policy of `algorithm`, from the conformance strategies.
    fn sample(algorithm: AlgorithmName) -> Policy {
        let mut runner = TestRunner::deterministic();
        policy_of(algorithm)
            .new_tree(&mut runner)
            .expect("the strategy generates policies")
            .current()
    }

    #[test]
    fn redis_stores_the_declared_state_size_and_decides_as_the_core() {
        let server = RedisServer::start();
        let client = redis::Client::open(server.url()).expect("a loopback URL");
        let mut connection = client.get_connection().expect("the server is up");
        let now = 1_700_000_000_123_456;
        for algorithm in AlgorithmName::ALL {
            let policy = sample(algorithm);
            let script = PolicyScript::new(&policy);
            let request = Request {
                redis_key: format!("layout:{algorithm}:{{k}}").into_bytes(),
                cost: 1,
                now: Some(now),
            };
            // No SCRIPT LOAD first: the invocation loads it on NOSCRIPT.
            let reply: Value = script
                .invocation(std::slice::from_ref(&request), 1_000)
                .invoke(&mut connection)
                .expect("the script runs");
            let decisions = script.decisions(reply, 1).expect("a reply of the script");
            let (expected, _) = policy
                .check(&Default::default(), now, 1)
                .expect("cost 1 is valid");
            assert_eq!(decisions, [Ok(expected)], "{algorithm}: {policy:?}");

            let stored: usize = redis::cmd("STRLEN")
                .arg(&request.redis_key[..])
                .query(&mut connection)
                .expect("STRLEN answers");
            let declared = struct_size(format_of(layout(algorithm).0, "STATE"));
            assert_eq!(stored, declared, "{algorithm}: stored state size");
        }
    }
}
