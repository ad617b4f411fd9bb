//! The seam between the batching of requests and Redis: one script call
//! deciding some requests.
//!
//! The batcher ([`Batcher`](crate::batch::Batcher)) only needs "decide
//! these requests, in order, in one call"; what carries the call is a
//! [`Transport`]. The limiters' is [`Calls`]: their [`LuaCode`] called on
//! a [`Connection`], as a function or as a script; the batcher's own
//! tests use a scripted one, which lets them hold calls, fail them and
//! answer them late on a paused clock.

use std::future::Future;
use std::sync::Arc;

use ratelimit_core::Decision;
use redis::{Cmd, Script, ScriptInvocation, ToRedisArgs, Value};

use crate::connection::{CallError, Connection};
use crate::script::{ForeignValue, PolicyScript};

/// What one call answers: for each of its requests, in order, a reply (a
/// decision, for the policy scripts), or why its key could not be decided.
pub(crate) type Replies<R = Decision> = Vec<Result<R, ForeignValue>>;

/// Carries script calls to Redis.
pub(crate) trait Transport: Send + Sync + 'static {
    /// One request of a call.
    type Request: Send + 'static;
    /// What one request gets back from Redis.
    type Reply: Send + 'static;

    /// Decides `requests` in one script call, in order, each as if it had
    /// a call of its own: one entry per request; `Err` when the call as a
    /// whole failed.
    ///
    /// Calls reach Redis in the order they are first polled: the batcher
    /// relies on it to keep requests in the order they were made.
    fn call(
        &self,
        requests: &[Self::Request],
    ) -> impl Future<Output = Result<Replies<Self::Reply>, CallError>> + Send;
}

/// Lua code a limiter calls, as a script and as a function library of the
/// same code: how a call's keys and arguments are written and its reply
/// read. What a limiter connects with (the code is loaded when it
/// connects).
pub(crate) trait LuaCode: Clone + Send + Sync + 'static {
    /// One request of a call.
    type Request: Send + Sync + 'static;
    /// What one request gets back.
    type Reply: Send + 'static;

    /// The code as a script.
    fn script(&self) -> &Script;

    /// The code as a function library.
    fn library(&self) -> &Library;

    /// Writes the keys, then the arguments, of a call deciding `requests`
    /// in order; keys written on an injected clock live at least
    /// `min_ttl_ms`.
    fn fill(&self, requests: &[Self::Request], min_ttl_ms: u64, call: &mut impl CallArgs);

    /// The invocation of the script deciding `requests`.
    fn invocation(&self, requests: &[Self::Request], min_ttl_ms: u64) -> ScriptInvocation<'_> {
        let mut invocation = self.script().prepare_invoke();
        self.fill(requests, min_ttl_ms, &mut invocation);
        invocation
    }

    /// The `FCALL` of the library's function deciding `requests`: the keys
    /// and arguments of [`invocation`](Self::invocation).
    fn fcall(&self, requests: &[Self::Request], min_ttl_ms: u64) -> Cmd {
        let mut cmd = self.library().fcall(requests.len());
        self.fill(requests, min_ttl_ms, &mut cmd);
        cmd
    }

    /// The replies a reply to `requests` stands for, in order.
    ///
    /// # Errors
    ///
    /// A reply of the wrong shape (not this code's) as a Redis error.
    fn replies_to(
        &self,
        reply: Value,
        requests: &[Self::Request],
    ) -> Result<Replies<Self::Reply>, redis::RedisError>;
}

/// A script's code as a Redis function library of one function: loaded
/// with `FUNCTION LOAD`, called with `FCALL`.
#[derive(Debug, Clone)]
pub(crate) struct Library {
    /// The function's name, the library's too: `ratelimit_<kind>_` and the
    /// script's SHA1, so that a limiter of another version (or, for a set,
    /// of another set) never calls it.
    pub(crate) function: Arc<str>,
    /// The library's code.
    pub(crate) code: Arc<str>,
}

impl Library {
    /// The library of `script`, whose code is `code` (ending in the
    /// `--@ENTRY@` line before its `return main(KEYS, ARGV)`).
    pub(crate) fn of(kind: &str, script: &Script, code: &str) -> Self {
        const ENTRY: &str = "--@ENTRY@\nreturn main(KEYS, ARGV)";
        debug_assert!(code.contains(ENTRY), "a script without its entry line");
        let function = format!("ratelimit_{kind}_{}", script.get_hash());
        let code = format!("#!lua name={function}\n{code}").replace(
            ENTRY,
            &format!("redis.register_function('{function}', main)"),
        );
        Self {
            function: function.into(),
            code: code.into(),
        }
    }

    /// An `FCALL` of the function on `keys` keys, its keys and arguments
    /// to follow.
    pub(crate) fn fcall(&self, keys: usize) -> Cmd {
        let mut cmd = redis::cmd("FCALL");
        cmd.arg(&*self.function).arg(keys);
        cmd
    }
}

/// Where a call's keys and arguments go, in that order: a script's
/// invocation (`EVALSHA`) or an `FCALL`.
pub(crate) trait CallArgs {
    fn key(&mut self, key: &[u8]);
    fn arg(&mut self, arg: impl ToRedisArgs);
}

impl CallArgs for ScriptInvocation<'_> {
    fn key(&mut self, key: &[u8]) {
        ScriptInvocation::key(self, key);
    }

    fn arg(&mut self, arg: impl ToRedisArgs) {
        ScriptInvocation::arg(self, arg);
    }
}

impl CallArgs for Cmd {
    fn key(&mut self, key: &[u8]) {
        Cmd::arg(self, key);
    }

    fn arg(&mut self, arg: impl ToRedisArgs) {
        Cmd::arg(self, arg);
    }
}

/// A limiter's transport: its Lua code called on a connection, as a
/// function (`FCALL`) or, invoked by redis-rs, as a script (`EVALSHA`, and
/// on `NOSCRIPT` a `SCRIPT LOAD` and the call again).
pub(crate) struct Calls<C> {
    pub(crate) connection: Connection,
    pub(crate) code: C,
    /// The least TTL of a key written on an injected clock.
    pub(crate) min_ttl_ms: u64,
    /// Whether the server took the function library when the limiter
    /// connected: calls are then `FCALL`s, else `EVALSHA`s.
    pub(crate) functions: bool,
}

/// The single-policy limiter's transport.
pub(crate) type ScriptCalls = Calls<PolicyScript>;

impl<C: LuaCode> Transport for Calls<C> {
    type Request = C::Request;
    type Reply = C::Reply;

    async fn call(&self, requests: &[C::Request]) -> Result<Replies<C::Reply>, CallError> {
        let reply = if self.functions {
            let fcall = self.code.fcall(requests, self.min_ttl_ms);
            self.connection
                .fcall(&fcall, &self.code.library().code)
                .await?
        } else {
            let invocation = self.code.invocation(requests, self.min_ttl_ms);
            self.connection.invoke(&invocation).await?
        };
        Ok(self.code.replies_to(reply, requests)?)
    }
}
