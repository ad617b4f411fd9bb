//! The seam between the batching of requests and Redis: one script call
//! deciding some requests.
//!
//! The batcher ([`Batcher`](crate::batch::Batcher)) only needs "decide
//! these requests, in order, in one call"; what carries the call is a
//! [`Transport`]. The limiter's is [`ScriptCalls`], redis-rs's script
//! invocation on a [`Connection`]; the batcher's own tests use a scripted
//! one, which lets them hold calls, fail them and answer them late on a
//! paused clock.

use std::future::Future;

use ratelimit_core::Decision;
use redis::Script;

use crate::connection::{CallError, Connection};
use crate::script::{ForeignValue, PolicyScript, Request};

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

/// A script and how to call it on a connection: what a limiter connects
/// with (the script is loaded when it connects).
pub(crate) trait ScriptSource: Send + Sync + 'static {
    /// The transport carrying calls of this script.
    type Transport: Transport;

    /// The script itself.
    fn script(&self) -> &Script;

    /// The same code as a Redis function library, if it has one: loaded
    /// when the limiter connects, where the server allows it.
    fn library(&self) -> Option<&str> {
        None
    }

    /// The transport calling this script on `connection`, as the function
    /// of [`library`](Self::library) if `functions`; keys written on an
    /// injected clock live at least `min_ttl_ms`.
    fn transport(
        &self,
        connection: Connection,
        min_ttl_ms: u64,
        functions: bool,
    ) -> Self::Transport;
}

impl ScriptSource for PolicyScript {
    type Transport = ScriptCalls;

    fn script(&self) -> &Script {
        PolicyScript::script(self)
    }

    fn transport(&self, connection: Connection, min_ttl_ms: u64, _: bool) -> ScriptCalls {
        ScriptCalls {
            connection,
            script: self.clone(),
            min_ttl_ms,
        }
    }
}

/// The limiter's transport: the policy's script, invoked by redis-rs
/// (`EVALSHA`, and on `NOSCRIPT` a `SCRIPT LOAD` and the call again) on a
/// connection.
pub(crate) struct ScriptCalls {
    pub(crate) connection: Connection,
    pub(crate) script: PolicyScript,
    /// The least TTL of a key written on an injected clock.
    pub(crate) min_ttl_ms: u64,
}

impl Transport for ScriptCalls {
    type Request = Request;
    type Reply = Decision;

    async fn call(&self, requests: &[Request]) -> Result<Replies, CallError> {
        let invocation = self.script.invocation(requests, self.min_ttl_ms);
        let reply = self.connection.invoke(&invocation).await?;
        Ok(self.script.decisions(reply, requests.len())?)
    }
}
