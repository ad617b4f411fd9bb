//! The Redis-backed [`SetLimiter`]: policy sets, settling and leases.

use std::collections::hash_map::RandomState;
use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use metrics::Counter;
use ratelimit_core::{
    Clock, Decision, Error, Lease, LeaseId, Limit, Mark, Policy, PolicyReceipt, PolicySet, Receipt,
    SetCheck, SetDecision, SetLimiter,
};
use tokio::runtime::Handle;

use crate::keys::SetKeyLayout;
use crate::link::{open, timed_out, Link};
use crate::options::RedisOptions;
use crate::set_script::{
    Arg, Entry, Op, Refusal, SetCalls, SetReply, SetRequest, SetScript, MAX_AMOUNT,
};
use crate::ConnectError;

/// A [`SetLimiter`] whose state lives in Redis or Redis Cluster: several
/// named policies checked all or nothing for one key, receipts settled
/// later, concurrency leases shared by every process (`SPEC.md` section 5).
///
/// Every operation is one call of one script: a set check (every policy,
/// a lease included), a settle (with the release of its leases), a renew,
/// a release, a peek. The script is loaded as a Redis function library and
/// called with `FCALL` where the server allows it, else with `EVALSHA`
/// (see [`RedisOptions::with_functions`](crate::RedisOptions::with_functions)). The script computes exactly what
/// `ratelimit-core`'s [`PolicySet`] functions compute, on the server's
/// `TIME` unless a clock is injected. A key's state under the whole set is
/// one Redis string, `<prefix>set:{<key>}` (the escaped key is the hash
/// tag, so a set works on Redis Cluster): a header, then one packed
/// section per policy, known by an id hashed from the policy's name and
/// tagged with its algorithm (a rate policy's state, a concurrency
/// policy's leases, each a 16-byte id and its expiry). Each operation
/// reads it (one `MGET` for all the operations of a batched call) and
/// writes it with at most one `SET` carrying the key's expiry; the key
/// expires when no part of its state matters any more (rounded up to a
/// whole second). A renamed policy, or one whose algorithm changed, reads
/// as new; a changed limit keeps the state; sections of policies the set
/// does not know (another configuration sharing the key) are kept as
/// they are. (Until this layout, the state was a hash under
/// `<prefix>s:{<key>}`, which this limiter no longer reads: such keys
/// expire on their own.)
///
/// Lease ids are 64 random bits drawn per limiter and a 64-bit counter, so
/// processes sharing a Redis never mint the same id.
///
/// A [`Reservation`](ratelimit_core::Reservation) dropped without a
/// settle sends its release from a task on the runtime the limiter was
/// made on, without waiting; if it is lost (Redis away), its leases expire
/// by their TTL. A check or settle whose caller gives up (cancelled, timed
/// out) releases the leases it may have taken the same way. A settle is
/// attempted once: if Redis cannot be reached, the estimate stays charged,
/// and the failure is counted (`ratelimit_redis_settles_failed_total`)
/// and logged.
///
/// # Examples
///
/// ```no_run
/// use std::time::Duration;
/// use ratelimit_core::{Concurrency, NamedLimit, Policy, PolicySet, SetLimiter};
/// use ratelimit_redis::{RedisOptions, RedisSetLimiter};
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let set = PolicySet::new(vec![
///     NamedLimit::new("requests", Policy::fixed_window(5, Duration::from_secs(30)).unwrap()).unwrap(),
///     NamedLimit::new("streams", Concurrency::new(2, Duration::from_secs(30)).unwrap()).unwrap(),
/// ]).unwrap();
/// let options = RedisOptions::standalone("redis://127.0.0.1:6379");
/// let limiter = RedisSetLimiter::connect(set, options).await.unwrap();
///
/// let check = limiter.check_set(b"203.0.113.7", &[1, 1]).await.unwrap();
/// assert!(check.decision.allowed);
/// limiter.settle(check.receipt.unwrap(), &[1, 0]).await.unwrap();
/// # });
/// ```
pub struct RedisSetLimiter {
    inner: Arc<Inner>,
}

/// What the limiter and its release tasks share.
struct Inner {
    set: PolicySet,
    keys: SetKeyLayout,
    link: Arc<Link<SetCalls>>,
    clock: Option<Arc<dyn Clock>>,
    timeout: Duration,
    /// The high 64 bits of every lease id this limiter mints.
    lease_seed: u64,
    next_lease: AtomicU64,
    /// Where releases are sent from.
    runtime: Handle,
    settles_failed: Counter,
    releases_lost: Counter,
}

impl RedisSetLimiter {
    /// Connects to Redis as `options` say and returns a limiter applying
    /// `set`. As [`RedisLimiter::connect`](crate::RedisLimiter::connect):
    /// the deployment is checked and the script loaded (in the background
    /// with [`with_lazy_connect`](RedisOptions::with_lazy_connect)).
    ///
    /// Must be called within a tokio runtime: the releases of dropped
    /// reservations are sent from tasks on it.
    ///
    /// # Errors
    ///
    /// A [`ConnectError`] as [`RedisLimiter::connect`](crate::RedisLimiter::connect)
    /// returns.
    pub async fn connect(set: PolicySet, options: RedisOptions) -> Result<Self, ConnectError> {
        let link = open(&options, SetScript::new(&set)).await?;
        let inner = Arc::new(Inner {
            keys: SetKeyLayout::new(&options.prefix),
            link,
            clock: options.clock.clone(),
            timeout: options.timeout,
            lease_seed: random_seed(),
            next_lease: AtomicU64::new(0),
            runtime: Handle::current(),
            settles_failed: metrics::counter!("ratelimit_redis_settles_failed_total"),
            releases_lost: metrics::counter!("ratelimit_redis_releases_lost_total"),
            set,
        });
        Ok(Self { inner })
    }

    /// Whether Redis has been reached (see
    /// [`RedisLimiter::is_connected`](crate::RedisLimiter::is_connected)).
    #[must_use]
    pub fn is_connected(&self) -> bool {
        self.inner.link.is_up()
    }

    /// The Redis key holding `key`'s state (for operators and tests): a
    /// string holding every policy's state.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn f(limiter: ratelimit_redis::RedisSetLimiter) {
    /// assert_eq!(limiter.redis_key(b"user:{42}"), b"ratelimit:set:{user:%7B42%7D}".to_vec());
    /// # }
    /// ```
    #[must_use]
    pub fn redis_key(&self, key: &[u8]) -> Vec<u8> {
        self.inner.keys.redis_key(key)
    }
}

/// 64 bits no other process draws: std's randomly keyed hasher over the
/// process id, the time and an address.
fn random_seed() -> u64 {
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    let since_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    hasher.write_u128(since_epoch.as_nanos());
    let local = 0u8;
    hasher.write_usize(std::ptr::addr_of!(local) as usize);
    hasher.finish()
}

impl Inner {
    fn new_lease(&self) -> LeaseId {
        let n = self.next_lease.fetch_add(1, Ordering::Relaxed);
        LeaseId::new((u128::from(self.lease_seed) << 64) | u128::from(n))
    }

    fn now(&self) -> Option<u64> {
        self.clock.as_ref().map(|c| c.now_micros())
    }

    /// One script call running `request`, within the timeout.
    async fn run(&self, request: SetRequest) -> Result<SetReply, Error> {
        self.link.ready()?.decide(request, self.timeout).await
    }

    /// The release of `ids` on `key`: one lease id (or none) per
    /// concurrency policy.
    fn release_request(&self, key: &[u8], ids: Vec<Arg>) -> SetRequest {
        SetRequest {
            redis_key: self.keys.redis_key(key),
            op: Op::Release,
            args: ids,
            now: self.now(),
        }
    }

    /// Sends `request` (a release) from a task, without waiting; a release
    /// that fails is counted, and its leases expire by their TTL.
    fn send_release(self: &Arc<Self>, request: SetRequest) {
        let inner = Arc::clone(self);
        self.runtime.spawn(async move {
            if let Err(e) = inner.run(request).await {
                inner.releases_lost.increment(1);
                tracing::debug!(
                    error = %e.chain(),
                    "a lease release did not reach Redis; the lease expires by its TTL"
                );
            }
        });
    }

    /// The lease ids of `parts`, one argument per concurrency policy.
    fn lease_args(&self, parts: &[PolicyReceipt]) -> Vec<Arg> {
        self.set
            .limits()
            .iter()
            .zip(parts)
            .filter(|(l, _)| matches!(l.limit(), Limit::Concurrency(_)))
            .map(|(_, part)| match part.lease() {
                Some(lease) => Arg::Id(lease.id.to_bytes()),
                None => Arg::None,
            })
            .collect()
    }

    fn decisions(&self, entries: &[Entry]) -> SetDecision {
        SetDecision::from_decisions(self.set.limits().iter().zip(entries).map(|(l, e)| {
            Decision::from_micros(
                e.allowed,
                l.limit().limit(),
                e.remaining,
                e.reset_after_us,
                e.retry_after_us,
            )
        }))
    }

    /// The error of a settle the script refused at policy `index`.
    fn refusal(
        &self,
        index: usize,
        refusal: Refusal,
        parts: &[PolicyReceipt],
        actual: &[u64],
    ) -> Error {
        let (taken, actual) = (parts[index].taken, actual[index]);
        let why = match refusal {
            Refusal::NotSettling => format!(
                "settling {actual} where the check took {taken}: the policy is not declared \
                 to settle (`settle = true`), so what its check took is final"
            ),
            Refusal::WindowDomain(count) => format!(
                "charging {} more to a count of {count} would leave the exact domain \
                 (a count above 2^32 - 1, or count times the window in ms at 2^53 or above)",
                actual.saturating_sub(taken)
            ),
            Refusal::BucketDomain => format!(
                "charging {} more tokens would take the bucket's time past 2^53 µs",
                actual.saturating_sub(taken)
            ),
        };
        Error::invalid(why).in_policy(self.set.limits()[index].name())
    }
}

/// Releases leases that an operation may have taken or still holds,
/// unless disarmed: a check or settle whose caller gave up (its future
/// dropped) or got no answer.
struct ReleaseGuard<'a> {
    inner: &'a Arc<Inner>,
    request: Option<SetRequest>,
}

impl ReleaseGuard<'_> {
    fn disarm(&mut self) {
        self.request = None;
    }
}

impl Drop for ReleaseGuard<'_> {
    fn drop(&mut self) {
        if let Some(request) = self.request.take() {
            self.inner.send_release(request);
        }
    }
}

#[async_trait]
impl SetLimiter for RedisSetLimiter {
    fn policy_set(&self) -> &PolicySet {
        &self.inner.set
    }

    async fn check_set(&self, key: &[u8], costs: &[u64]) -> Result<SetCheck, Error> {
        let inner = &self.inner;
        inner.set.validate_costs(costs)?;
        let mut args = Vec::with_capacity(costs.len() + 1);
        let mut ids = Vec::new();
        let mut taken = Vec::new();
        for (l, &cost) in inner.set.limits().iter().zip(costs) {
            args.push(Arg::Num(cost));
            if let Limit::Concurrency(_) = l.limit() {
                let id = (cost == 1).then(|| inner.new_lease());
                taken.push(id);
                let arg = id.map_or(Arg::None, |id| Arg::Id(id.to_bytes()));
                ids.push(arg.clone());
                args.push(arg);
            }
        }
        let request = SetRequest {
            redis_key: inner.keys.redis_key(key),
            op: Op::Check,
            args,
            now: inner.now(),
        };
        // Until the answer is read, the leases this check may take are
        // released if the caller gives up.
        let mut guard = ReleaseGuard {
            inner,
            request: taken
                .iter()
                .any(Option::is_some)
                .then(|| inner.release_request(key, ids)),
        };
        let reply = inner.run(request).await;
        let entries = match reply {
            Ok(SetReply::Done(entries)) if entries.len() == inner.set.len() => entries,
            Ok(_) => {
                return Err(Error::backend(
                    "the policy-set script answered a check with the wrong shape",
                ))
            }
            Err(e) => {
                // Failed or foreign: nothing taken, or (timed out) maybe
                // taken; the guard releases either way.
                return Err(e);
            }
        };
        guard.disarm();
        let decision = inner.decisions(&entries);
        if !decision.allowed {
            return Ok(SetCheck::new(decision, None));
        }
        let mut leases = taken.into_iter();
        let parts = inner
            .set
            .limits()
            .iter()
            .zip(costs)
            .zip(&entries)
            .map(|((l, &cost), e)| {
                let mark = match l.limit() {
                    Limit::Rate(Policy::TokenBucket(_)) => Mark::Bucket {
                        tat: e.marks[0],
                        refunded: e.marks[1],
                        at: e.marks[2],
                    },
                    Limit::Rate(_) => Mark::Window(e.marks[0]),
                    Limit::Concurrency(_) => {
                        Mark::Lease(leases.next().flatten().map(|id| Lease::new(id, e.marks[0])))
                    }
                };
                PolicyReceipt::new(cost, mark)
            });
        let receipt = Receipt::new(key, parts);
        Ok(SetCheck::new(decision, Some(receipt)))
    }

    async fn settle(&self, receipt: Receipt, actual: &[u64]) -> Result<SetDecision, Error> {
        let inner = &self.inner;
        let parts = receipt.parts();
        let ids = inner.lease_args(parts);
        let holds_leases = receipt.leases().next().is_some();
        if let Err(e) = inner.set.validate_receipt(parts, actual) {
            if holds_leases {
                // Awaited, so the leases are free when the error is seen.
                let _ = inner.run(inner.release_request(receipt.key(), ids)).await;
            }
            return Err(e);
        }
        let mut args = Vec::with_capacity(5 * parts.len());
        for ((l, part), &a) in inner.set.limits().iter().zip(parts).zip(actual) {
            match (l.limit(), part.mark) {
                (Limit::Concurrency(_), _) => args.push(match part.lease() {
                    Some(lease) => Arg::Id(lease.id.to_bytes()),
                    None => Arg::None,
                }),
                (_, mark) => {
                    let (ma, mb, mc) = match mark {
                        Mark::Window(k) => (k, 0, 0),
                        Mark::Bucket { tat, refunded, at } => (tat, refunded, at),
                        Mark::Lease(_) => (0, 0, 0),
                    };
                    args.extend([part.taken, a.min(MAX_AMOUNT), ma, mb, mc].map(Arg::Num));
                }
            }
        }
        let request = SetRequest {
            redis_key: inner.keys.redis_key(receipt.key()),
            op: Op::Settle,
            args,
            now: inner.now(),
        };
        let mut guard = ReleaseGuard {
            inner,
            request: holds_leases.then(|| inner.release_request(receipt.key(), ids)),
        };
        match inner.run(request).await {
            Ok(SetReply::Done(entries)) if entries.len() == inner.set.len() => {
                guard.disarm();
                Ok(inner.decisions(&entries))
            }
            Ok(SetReply::Refused(index, refusal)) => {
                guard.disarm();
                Err(inner.refusal(index, refusal, parts, actual))
            }
            Ok(SetReply::Done(_)) => Err(Error::backend(
                "the policy-set script answered a settle with the wrong shape",
            )),
            Err(e) => {
                // Attempted once: the estimate stays charged; the guard
                // sends the release of the leases once more.
                inner.settles_failed.increment(1);
                tracing::warn!(
                    error = %e.chain(),
                    "a settle did not reach Redis: the estimate stays charged"
                );
                Err(e)
            }
        }
    }

    async fn renew(&self, receipt: &mut Receipt) -> Result<bool, Error> {
        let inner = &self.inner;
        if receipt.leases().next().is_none() {
            return Ok(true);
        }
        let ids = inner.lease_args(receipt.parts());
        let request = SetRequest {
            redis_key: inner.keys.redis_key(receipt.key()),
            op: Op::Renew,
            args: ids,
            now: inner.now(),
        };
        let entries = match inner.run(request).await? {
            SetReply::Done(entries) if entries.len() == inner.set.len() => entries,
            _ => {
                return Err(Error::backend(
                    "the policy-set script answered a renew with the wrong shape",
                ))
            }
        };
        let mut all = true;
        for (part, e) in receipt.parts_mut().iter_mut().zip(&entries) {
            if let Mark::Lease(Some(lease)) = &mut part.mark {
                if e.allowed {
                    lease.expires_at = e.marks[0];
                } else {
                    all = false;
                }
            }
        }
        Ok(all)
    }

    async fn peek_set(&self, key: &[u8]) -> Result<SetDecision, Error> {
        let inner = &self.inner;
        let request = SetRequest {
            redis_key: inner.keys.redis_key(key),
            op: Op::Peek,
            args: Vec::new(),
            now: inner.now(),
        };
        match inner.run(request).await? {
            SetReply::Done(entries) if entries.len() == inner.set.len() => {
                Ok(inner.decisions(&entries))
            }
            _ => Err(Error::backend(
                "the policy-set script answered a peek with the wrong shape",
            )),
        }
    }

    /// Deletes exactly `key`'s Redis key (no `SCAN`).
    async fn reset_set(&self, key: &[u8]) -> Result<(), Error> {
        let inner = &self.inner;
        let ready = inner.link.ready()?;
        let keys = [inner.keys.redis_key(key)];
        match tokio::time::timeout(inner.timeout, ready.connection.del_all(&keys)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(Error::backend(e)),
            Err(_) => Err(timed_out(inner.timeout)),
        }
    }

    fn release(&self, receipt: Receipt) {
        if receipt.leases().next().is_none() {
            return;
        }
        let inner = &self.inner;
        let ids = inner.lease_args(receipt.parts());
        inner.send_release(inner.release_request(receipt.key(), ids));
    }
}

impl fmt::Debug for RedisSetLimiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisSetLimiter")
            .field("set", &self.inner.set)
            .field("keys", &self.inner.keys)
            .field("timeout", &self.inner.timeout)
            .field("connected", &self.inner.link.is_up())
            .field("clock", &self.inner.clock)
            .finish_non_exhaustive()
    }
}
