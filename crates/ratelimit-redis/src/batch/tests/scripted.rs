//! A transport the test scripts: each call is handed to the test, which
//! decides when and how it is answered.

use std::collections::HashMap;

use ratelimit_core::{Algorithm, Decision, Policy, PolicyState};
use tokio::sync::{mpsc, oneshot};

use crate::connection::CallError;
use crate::script::{ForeignValue, Request};
use crate::transport::{Replies, Transport};

/// Hands every call to the test, in the order the calls are first polled
/// (the order they would reach Redis).
pub(super) struct Scripted {
    calls: mpsc::UnboundedSender<HeldCall>,
}

impl Scripted {
    /// The transport, and the calls it receives.
    pub(super) fn new() -> (Self, mpsc::UnboundedReceiver<HeldCall>) {
        let (calls, received) = mpsc::unbounded_channel();
        (Self { calls }, received)
    }
}

impl Transport for Scripted {
    type Request = Request;
    type Reply = ratelimit_core::Decision;

    async fn call(&self, requests: &[Request]) -> Result<Replies, CallError> {
        let (reply, answer) = oneshot::channel();
        let held = HeldCall {
            requests: requests.to_vec(),
            reply,
        };
        if self.calls.send(held).is_err() {
            return Err("the test stopped taking calls".into());
        }
        answer
            .await
            .unwrap_or_else(|_| Err("the test dropped the call".into()))
    }
}

/// A call on its way, held until the test answers it (or drops it, which
/// fails it).
pub(super) struct HeldCall {
    pub(super) requests: Vec<Request>,
    reply: oneshot::Sender<Result<Replies, CallError>>,
}

impl HeldCall {
    /// The Redis keys of its requests, in order, as text.
    pub(super) fn keys(&self) -> Vec<String> {
        self.requests
            .iter()
            .map(|r| String::from_utf8_lossy(&r.redis_key).into_owned())
            .collect()
    }

    /// Answers the call. (Its caller may have given up: then nobody hears.)
    pub(super) fn answer(self, replies: Result<Replies, CallError>) {
        let _ = self.reply.send(replies);
    }
}

/// What Redis would store and answer: the pure policy, one state per key,
/// requests applied in the order they are given.
pub(super) struct Model {
    policy: Policy,
    states: HashMap<Vec<u8>, PolicyState>,
}

impl Model {
    pub(super) fn new(policy: Policy) -> Self {
        Self {
            policy,
            states: HashMap::new(),
        }
    }

    /// Decides `request` (a peek at cost 0) as the script would, on its
    /// injected `now`.
    pub(super) fn decide(&mut self, request: &Request) -> Decision {
        let now = request.now.expect("the tests inject the time");
        let state = self.states.entry(request.redis_key.clone()).or_default();
        if request.cost == 0 {
            return self.policy.peek(state, now);
        }
        let (decision, next) = self
            .policy
            .check(state, now, request.cost)
            .expect("the tests take valid costs");
        if decision.allowed {
            *state = next;
        }
        decision
    }

    /// The replies to a call, decided in order.
    pub(super) fn replies(&mut self, requests: &[Request]) -> Vec<Result<Decision, ForeignValue>> {
        requests.iter().map(|r| Ok(self.decide(r))).collect()
    }
}
