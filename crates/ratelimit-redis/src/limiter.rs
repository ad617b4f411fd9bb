//! The Redis-backed [`Limiter`].

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use ratelimit_core::{Algorithm, Clock, Decision, Error, Limiter, Policy};
use ratelimit_memory::MemoryLimiter;

use crate::batch::{Batcher, Caller, Failure};
use crate::breaker::Breaker;
use crate::connection::{open_direct, Connection};
use crate::deny_cache::DenyCache;
use crate::keys::{validate_prefix, KeyLayout};
use crate::options::{validate_max_batch, ConnectionMode, FailurePolicy, RedisOptions, Target};
use crate::script::{PolicyScript, Request};
use crate::{ConnectError, ConnectErrorKind, Outcome, Source};

/// A [`Limiter`] whose state lives in Redis or Redis Cluster, so that many
/// processes share one limit.
///
/// Each check or peek is decided inside one `EVALSHA` of the policy's Lua
/// script: one round trip, atomic, computing exactly the decisions of the
/// pure functions of `ratelimit-core`. On the default multiplexed
/// connection, requests made while a call is on the wire share the next
/// call (see [`RedisOptions::with_max_batch`]). Time is the server's
/// `TIME` unless a clock is injected. When Redis cannot decide within the
/// timeout, the [`FailurePolicy`] decides instead; a circuit breaker stops
/// waiting on a dead server and lets one call probe it now and then.
///
/// A call that times out after its request was sent may still be applied
/// by Redis when it answers late (a frozen server that thaws): the failure
/// policy decided that call, but its cost may have been taken as well.
///
/// # Examples
///
/// ```no_run
/// use std::time::Duration;
/// use ratelimit_core::{Limiter, Policy};
/// use ratelimit_redis::{FailurePolicy, RedisLimiter, RedisOptions};
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let policy = Policy::fixed_window(5, Duration::from_secs(30)).unwrap();
/// let options = RedisOptions::standalone("redis://127.0.0.1:6379")
///     .with_failure_policy(FailurePolicy::Fallback);
/// let limiter = RedisLimiter::connect(policy, options).await.unwrap();
///
/// let d = limiter.check_one(b"203.0.113.7").await.unwrap();
/// assert!(d.allowed);
/// assert_eq!(d.remaining, 4);
/// let detailed = limiter.check_detailed(b"203.0.113.7", 1).await.unwrap();
/// assert!(!detailed.is_degraded(), "Redis decided");
/// # });
/// ```
pub struct RedisLimiter {
    policy: Policy,
    keys: KeyLayout,
    caller: Arc<Caller>,
    /// Present on a multiplexed connection to one server: batches the
    /// requests made while a call is in flight.
    batcher: Option<Batcher>,
    failure: FailurePolicy,
    open_for: Duration,
    breaker: Breaker,
    deny_cache: Option<DenyCache>,
    clock: Option<Arc<dyn Clock>>,
    started: Instant,
    fallback: Arc<dyn Limiter>,
    degraded: AtomicU64,
    /// Why Redis last failed to decide, for operators: the failure policy
    /// hides it from callers.
    last_error: Mutex<Option<String>>,
}

/// Why Redis is asked (and, when it cannot answer, the failure policy).
#[derive(Debug, Clone, Copy)]
enum Op {
    Check,
    Peek,
}

impl RedisLimiter {
    /// Connects to Redis as `options` say and returns a limiter applying
    /// `policy`.
    ///
    /// Connecting checks the deployment: the server answers, accepts the
    /// credentials, is a cluster node exactly when `options` name a
    /// cluster, and runs the policy's script (which is loaded here). All of
    /// it within `max(5 × timeout, 2 s)`.
    ///
    /// # Errors
    ///
    /// A [`ConnectError`] saying what to fix: an invalid prefix or URL,
    /// an unreachable server, refused credentials, a cluster/standalone
    /// mismatch, or a timeout.
    pub async fn connect(policy: Policy, options: RedisOptions) -> Result<Self, ConnectError> {
        validate_prefix(&options.prefix)
            .and_then(|()| validate_max_batch(options.max_batch))
            .map_err(|e| ConnectError::new(ConnectErrorKind::InvalidConfig, e.to_string()))?;
        if options.timeout.is_zero() {
            return Err(ConnectError::new(
                ConnectErrorKind::InvalidConfig,
                "invalid `timeout`: must be longer than zero",
            ));
        }
        let script = PolicyScript::new(&policy);
        let deadline = (options.timeout * 5).max(Duration::from_secs(2));
        let connection = Connection::open(&options, script.script(), deadline).await?;
        let fallback = options
            .fallback
            .clone()
            .unwrap_or_else(|| match &options.clock {
                Some(clock) => Arc::new(MemoryLimiter::with_clock(policy, Arc::clone(clock))),
                None => Arc::new(MemoryLimiter::new(policy)),
            });
        let caller = Arc::new(Caller {
            connection,
            script,
            min_ttl_ms: u64::try_from(options.min_ttl.as_millis()).unwrap_or(u64::MAX),
            timeout: options.timeout,
        });
        // A cluster call may only touch keys of one slot, and a pooled
        // connection carries one call at a time: only a multiplexed
        // connection to one server batches.
        let batcher = match (&options.target, options.connection) {
            (Target::Standalone(url), ConnectionMode::Multiplexed)
                if options.max_batch.get() > 1 =>
            {
                let direct = open_direct(url, deadline).await?;
                Some(Batcher::start(
                    Arc::clone(&caller),
                    options.max_batch.get(),
                    direct,
                ))
            }
            _ => None,
        };
        Ok(Self {
            keys: KeyLayout::new(&options.prefix, &policy),
            caller,
            batcher,
            failure: options.failure,
            open_for: options.breaker.open_for,
            breaker: Breaker::new(options.breaker),
            deny_cache: options
                .deny_cache
                .map(|n| DenyCache::new(n.get(), policy.limit())),
            clock: options.clock,
            started: Instant::now(),
            fallback,
            degraded: AtomicU64::new(0),
            last_error: Mutex::new(None),
            policy,
        })
    }

    /// [`Limiter::check`], also saying who decided.
    ///
    /// # Errors
    ///
    /// When `cost` is zero or above the limit (checked locally: nothing is
    /// sent), or when Redis cannot decide and the fallback limiter fails.
    /// With [`FailurePolicy::FailClosed`] and [`FailurePolicy::FailOpen`] a
    /// Redis failure is a degraded decision, not an error.
    pub async fn check_detailed(&self, key: &[u8], cost: u64) -> Result<Outcome, Error> {
        self.policy.validate_cost(cost)?;
        if let Some(cache) = &self.deny_cache {
            if let Some(decision) = cache.lookup(key, cost, self.local_now()) {
                return Ok(Outcome::new(decision, Source::DenyCache));
            }
        }
        let now = self.now_arg();
        match self.call(key, Op::Check, now, cost).await {
            Ok(decision) => {
                if let Some(cache) = &self.deny_cache {
                    // On server time the reply's arrival is later than the
                    // server's decision: a conservative start for the wait.
                    let at = now.unwrap_or_else(|| self.local_now());
                    cache.record(key, cost, at, &decision);
                }
                Ok(Outcome::new(decision, Source::Redis))
            }
            Err(e) => self.degrade(key, Op::Check, cost, &e).await,
        }
    }

    /// [`Limiter::peek`], also saying who decided.
    ///
    /// # Errors
    ///
    /// When Redis cannot decide and the fallback limiter fails.
    pub async fn peek_detailed(&self, key: &[u8]) -> Result<Outcome, Error> {
        match self.call(key, Op::Peek, self.now_arg(), 1).await {
            Ok(decision) => Ok(Outcome::new(decision, Source::Redis)),
            Err(e) => self.degrade(key, Op::Peek, 1, &e).await,
        }
    }

    /// True while the circuit breaker is open: Redis recently failed and
    /// calls are decided by the failure policy without waiting on it.
    #[must_use]
    pub fn is_degraded(&self) -> bool {
        self.breaker.is_open()
    }

    /// How many decisions the failure policy has made since this limiter
    /// was built.
    #[must_use]
    pub fn degraded_decisions(&self) -> u64 {
        self.degraded.load(Ordering::Relaxed)
    }

    /// Why Redis last failed to decide (a timeout, a refused connection,
    /// the open breaker, …), if it ever did: the failure policy hides these
    /// errors from callers, so operators read them here.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn f(limiter: ratelimit_redis::RedisLimiter) {
    /// if limiter.is_degraded() {
    ///     let why = limiter.last_error().unwrap_or_default();
    ///     assert!(!why.is_empty());
    /// }
    /// # }
    /// ```
    #[must_use]
    pub fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
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

    /// `now` for the script: the injected clock, or `None` for server time.
    fn now_arg(&self) -> Option<u64> {
        self.clock.as_ref().map(|c| c.now_micros())
    }

    /// Local µs for the deny cache: the injected clock, or a monotonic clock.
    fn local_now(&self) -> u64 {
        match &self.clock {
            Some(clock) => clock.now_micros(),
            None => u64::try_from(self.started.elapsed().as_micros()).unwrap_or(u64::MAX),
        }
    }

    /// One request through the breaker, within the timeout.
    async fn call(
        &self,
        key: &[u8],
        op: Op,
        now: Option<u64>,
        cost: u64,
    ) -> Result<Decision, Error> {
        let Some(permit) = self.breaker.permit() else {
            return Err(Error::backend(
                "circuit breaker open: Redis recently failed",
            ));
        };
        let request = Request {
            redis_key: self.keys.redis_key(key),
            // The script peeks on cost 0.
            cost: match op {
                Op::Check => cost,
                Op::Peek => 0,
            },
            now,
        };
        // Both give up after the timeout, waits for a call in flight
        // included.
        let outcome = match &self.batcher {
            Some(batcher) => batcher.decide(request).await,
            None => self.caller.run_one(&request, None).await,
        };
        match outcome {
            Ok(decision) => {
                permit.succeeded();
                Ok(decision)
            }
            // Redis is fine; this key's data is not.
            Err(Failure::Foreign(e)) => {
                permit.succeeded();
                Err(Error::backend(e))
            }
            Err(Failure::Call(e)) => {
                permit.failed();
                Err(Error::backend(e))
            }
            Err(Failure::Timeout) => {
                permit.failed();
                Err(Error::timeout(None))
            }
        }
    }

    /// The failure policy's decision when Redis could not make one.
    async fn degrade(
        &self,
        key: &[u8],
        op: Op,
        cost: u64,
        error: &Error,
    ) -> Result<Outcome, Error> {
        self.degraded.fetch_add(1, Ordering::Relaxed);
        let mut text = error.to_string();
        if let Some(source) = std::error::Error::source(error) {
            text = format!("{text}: {source}");
        }
        *self
            .last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(text);
        let limit = self.policy.limit();
        Ok(match self.failure {
            // Retry once the breaker may have probed Redis again.
            FailurePolicy::FailClosed => Outcome::new(
                Decision::denied(limit, 0, Duration::ZERO, self.open_for),
                Source::FailClosed,
            ),
            // Anything up to the limit would be allowed: remaining is the limit.
            FailurePolicy::FailOpen => Outcome::new(
                Decision::allowed(limit, limit, Duration::ZERO),
                Source::FailOpen,
            ),
            FailurePolicy::Fallback => {
                let decision = match op {
                    Op::Check => self.fallback.check(key, cost).await?,
                    Op::Peek => self.fallback.peek(key).await?,
                };
                Outcome::new(decision, Source::Fallback)
            }
        })
    }
}

#[async_trait]
impl Limiter for RedisLimiter {
    async fn check(&self, key: &[u8], cost: u64) -> Result<Decision, Error> {
        Ok(self.check_detailed(key, cost).await?.decision)
    }

    async fn peek(&self, key: &[u8]) -> Result<Decision, Error> {
        Ok(self.peek_detailed(key).await?.decision)
    }

    /// Deletes exactly `key`'s Redis key (no `SCAN`), and forgets it in the
    /// deny cache and the fallback limiter.
    async fn reset(&self, key: &[u8]) -> Result<(), Error> {
        if let Some(cache) = &self.deny_cache {
            cache.forget(key);
        }
        self.fallback.reset(key).await?;
        let Some(permit) = self.breaker.permit() else {
            return Err(Error::backend(
                "circuit breaker open: Redis recently failed",
            ));
        };
        let redis_key = self.keys.redis_key(key);
        match tokio::time::timeout(self.caller.timeout, self.caller.connection.del(&redis_key))
            .await
        {
            Ok(Ok(())) => {
                permit.succeeded();
                Ok(())
            }
            Ok(Err(e)) => {
                permit.failed();
                Err(Error::backend(e))
            }
            Err(_) => {
                permit.failed();
                Err(Error::timeout(None))
            }
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
            .field("timeout", &self.caller.timeout)
            .field("failure", &self.failure)
            .field("breaker", &self.breaker)
            .field("deny_cache", &self.deny_cache.is_some())
            .field("clock", &self.clock)
            .finish_non_exhaustive()
    }
}
