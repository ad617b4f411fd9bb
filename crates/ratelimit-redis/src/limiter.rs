//! The Redis-backed [`Limiter`].

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use ratelimit_core::{Algorithm, Clock, Decision, Error, Limiter, Policy};

use crate::keys::KeyLayout;
use crate::link::{open, timed_out, Link};
use crate::options::{RedisOptions, Target};
use crate::script::{PolicyScript, Request};
use crate::ConnectError;

/// A [`Limiter`] whose state lives in Redis or Redis Cluster, so that many
/// processes share one limit.
///
/// Each check or peek is decided inside one call of the policy's Lua code
/// (an `FCALL` of it loaded as a Redis function where the server allows
/// it, else an `EVALSHA`; see [`RedisOptions::with_functions`]): one round
/// trip, atomic, computing exactly the decisions of the
/// pure functions of `ratelimit-core`. On the default multiplexed
/// connection, requests made while a call is on the wire share the next
/// call (see [`RedisOptions::with_max_batch`]). Time is the server's
/// `TIME` unless a clock is injected.
///
/// When Redis cannot decide (unreachable, an error, no answer within the
/// timeout) a call returns `Err`, of kind backend or timeout: the limiter
/// never decides in Redis's place. What to do then (deny, allow, count
/// locally), a circuit breaker and a deny cache are layers around any
/// limiter: see the `ratelimit-layers` crate and its `ResilienceConfig`.
///
/// A call that times out after its request was sent may still be applied
/// by Redis when it answers late (a frozen server that thaws): its cost may
/// have been taken although the caller saw an error.
///
/// # Examples
///
/// ```no_run
/// use std::time::Duration;
/// use ratelimit_core::{Limiter, Policy};
/// use ratelimit_redis::{RedisLimiter, RedisOptions};
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let policy = Policy::fixed_window(5, Duration::from_secs(30)).unwrap();
/// let options = RedisOptions::standalone("redis://127.0.0.1:6379");
/// let limiter = RedisLimiter::connect(policy, options).await.unwrap();
///
/// let d = limiter.check_one(b"203.0.113.7").await.unwrap();
/// assert!(d.allowed);
/// assert_eq!(d.remaining, 4);
/// assert!(limiter.is_connected());
/// # });
/// ```
pub struct RedisLimiter {
    policy: Policy,
    keys: KeyLayout,
    link: Arc<Link>,
    clock: Option<Arc<dyn Clock>>,
    timeout: Duration,
}

impl RedisLimiter {
    /// Connects to Redis as `options` say and returns a limiter applying
    /// `policy`.
    ///
    /// Connecting checks the deployment: the server answers, accepts the
    /// credentials, is a cluster node exactly when `options` name a
    /// cluster, and runs the policy's script (which is loaded here). All of
    /// it within `max(5 × timeout, 2 s)`. With
    /// [`with_lazy_connect`](RedisOptions::with_lazy_connect) this happens
    /// in a background task instead (which needs a tokio runtime), and
    /// calls fail until it has.
    ///
    /// # Errors
    ///
    /// A [`ConnectError`] saying what to fix: an invalid prefix or URL,
    /// and, unless connecting lazily, an unreachable server, refused
    /// credentials, a cluster/standalone mismatch, or a timeout.
    pub async fn connect(policy: Policy, options: RedisOptions) -> Result<Self, ConnectError> {
        let link = open(&options, PolicyScript::new(&policy)).await?;
        Ok(Self {
            keys: KeyLayout::new(&options.prefix, &policy),
            link,
            clock: options.clock,
            timeout: options.timeout,
            policy,
        })
    }

    /// Whether Redis has been reached: always after an eager `connect`;
    /// with a lazy one, once the background task has succeeded. (Reached
    /// once is not up now: a call still fails while Redis is away.)
    #[must_use]
    pub fn is_connected(&self) -> bool {
        self.link.is_up()
    }

    /// The Redis key holding `key`'s state (for operators and tests).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn f(limiter: ratelimit_redis::RedisLimiter) {
    /// assert_eq!(limiter.redis_key(b"user:{42}"), b"ratelimit:fw:{user:%7B42%7D}".to_vec());
    /// # }
    /// ```
    #[must_use]
    pub fn redis_key(&self, key: &[u8]) -> Vec<u8> {
        self.keys.redis_key(key)
    }

    /// One script call deciding `cost` (0: a peek) on `key`, within the
    /// timeout.
    async fn call(&self, key: &[u8], cost: u64) -> Result<Decision, Error> {
        let ready = self.link.ready()?;
        let request = Request {
            redis_key: self.keys.redis_key(key),
            cost,
            now: self.clock.as_ref().map(|c| c.now_micros()),
        };
        ready.decide(request, self.timeout).await
    }
}

/// Checks that the URLs parse, without connecting: a lazy connection
/// still refuses a configuration that could never work.
pub(crate) fn validate_urls(target: &Target) -> Result<(), ConnectError> {
    let urls = match target {
        Target::Standalone(url) => std::slice::from_ref(url),
        Target::Cluster(urls) => urls.as_slice(),
    };
    for url in urls {
        redis::Client::open(url.as_str())
            .map_err(|e| crate::connect_error::invalid_config(url, e))?;
    }
    Ok(())
}

#[async_trait]
impl Limiter for RedisLimiter {
    async fn check(&self, key: &[u8], cost: u64) -> Result<Decision, Error> {
        // Checked here: nothing is sent for a cost that can never be taken
        // (and a script call of cost 0 would be a peek).
        self.policy.validate_cost(cost)?;
        self.call(key, cost).await
    }

    async fn peek(&self, key: &[u8]) -> Result<Decision, Error> {
        // The script peeks on cost 0.
        self.call(key, 0).await
    }

    /// Deletes exactly `key`'s Redis key (no `SCAN`).
    async fn reset(&self, key: &[u8]) -> Result<(), Error> {
        let ready = self.link.ready()?;
        let redis_key = self.keys.redis_key(key);
        match tokio::time::timeout(self.timeout, ready.connection.del(&redis_key)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(Error::backend(e)),
            Err(_) => Err(timed_out(self.timeout)),
        }
    }

    fn policies(&self) -> &[Policy] {
        std::slice::from_ref(&self.policy)
    }
}

impl fmt::Debug for RedisLimiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisLimiter")
            .field("policy", &self.policy)
            .field("keys", &self.keys)
            .field("timeout", &self.timeout)
            .field("connected", &self.link.is_up())
            .field("clock", &self.clock)
            .finish_non_exhaustive()
    }
}
