//! The Lua script of each policy, and how a call to it is built and read.

use ratelimit_core::{Decision, Policy};
use redis::{Script, ScriptInvocation};

/// Why the script is called.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    Check,
    Peek,
}

/// One policy's script and the parameters passed with every call.
#[derive(Debug, Clone)]
pub(crate) struct PolicyScript {
    script: Script,
    limit: u64,
    params: Vec<u64>,
}

/// The raw reply: `{allowed, remaining, reset_after_us, retry_after_us}`.
pub(crate) type Reply = (u8, u64, u64, u64);

impl PolicyScript {
    /// The script for `policy`, or `None` for an algorithm this backend does
    /// not know (the policy enum is non-exhaustive).
    pub(crate) fn new(policy: &Policy) -> Option<Self> {
        // The prelude is prepended at compile time so each policy is still
        // one script, loaded and cached by its own SHA1.
        let (code, params) = match policy {
            Policy::FixedWindow(p) => (
                concat!(
                    include_str!("lua/prelude.lua"),
                    include_str!("lua/fixed_window.lua")
                ),
                vec![p.limit(), p.window_micros()],
            ),
            Policy::SlidingWindow(p) => (
                concat!(
                    include_str!("lua/prelude.lua"),
                    include_str!("lua/sliding_window.lua")
                ),
                vec![p.limit(), p.window_micros(), p.window_micros() / 1000],
            ),
            Policy::TokenBucket(p) => {
                let interval = p.emission_interval_micros();
                (
                    concat!(
                        include_str!("lua/prelude.lua"),
                        include_str!("lua/token_bucket.lua")
                    ),
                    // capacity * interval < 2^51: checked when the bucket
                    // was built.
                    vec![p.capacity(), interval, p.capacity() * interval],
                )
            }
            _ => return None,
        };
        Some(Self {
            script: Script::new(code),
            limit: policy.limit(),
            params,
        })
    }

    /// The script itself (for loading it ahead of the first call).
    pub(crate) fn script(&self) -> &Script {
        &self.script
    }

    /// A call for `redis_key`: `now` is `None` on server time.
    pub(crate) fn invocation(
        &self,
        redis_key: &[u8],
        op: Op,
        now: Option<u64>,
        cost: u64,
        min_ttl_ms: u64,
    ) -> ScriptInvocation<'_> {
        let mut call = self.script.key(redis_key);
        call.arg(match op {
            Op::Check => "check",
            Op::Peek => "peek",
        });
        match now {
            Some(now) => call.arg(now),
            None => call.arg(""),
        };
        call.arg(cost).arg(min_ttl_ms).arg(&self.params[..]);
        call
    }

    /// The decision a reply stands for.
    pub(crate) fn decision(&self, (allowed, remaining, reset_us, retry_us): Reply) -> Decision {
        Decision::from_micros(allowed == 1, self.limit, remaining, reset_us, retry_us)
    }
}
