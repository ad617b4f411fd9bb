//! The trait every backend implements.

use std::sync::Arc;

use async_trait::async_trait;

use crate::{Decision, Error, Policy};

/// A keyed rate limiter.
///
/// Object-safe, so an application holds an `Arc<dyn Limiter>` and picks the
/// backend and the algorithm from configuration. Keys are byte strings and
/// binary-safe: any bytes, of any length, name distinct keys.
///
/// A denial is `Ok(Decision { allowed: false, .. })`; `Err` means the
/// backend could not decide or the cost can never be taken.
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
/// use ratelimit_core::{Limiter, Policy, ReferenceLimiter};
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let policy = Policy::token_bucket(3, 1, Duration::from_secs(1)).unwrap();
/// let limiter: Arc<dyn Limiter> = Arc::new(ReferenceLimiter::new(policy));
///
/// let d = limiter.check(b"user:42", 3).await.unwrap();
/// assert!(d.allowed);
/// assert_eq!(d.remaining, 0);
/// assert!(!limiter.check_one(b"user:42").await.unwrap().allowed);
/// assert!(limiter.check(b"user:42", 4).await.unwrap_err().is_cost_rejected());
///
/// limiter.reset(b"user:42").await.unwrap();
/// assert_eq!(limiter.peek(b"user:42").await.unwrap().remaining, 3);
/// # });
/// ```
#[async_trait]
pub trait Limiter: Send + Sync {
    /// Takes `cost` from `key` if it fits.
    ///
    /// # Errors
    ///
    /// When `cost` is zero or above the limit (nothing is changed), or when
    /// the backend cannot decide.
    async fn check(&self, key: &[u8], cost: u64) -> Result<Decision, Error>;

    /// [`check`](Self::check) without awaiting, for a limiter that decides
    /// in place (the in-process ones): `Some` with exactly what `check`
    /// would return, or `None` when the check must be awaited (the
    /// default). A caller tries it first, so an in-process check allocates
    /// no future; `None` has changed nothing, so the caller then awaits
    /// `check`.
    ///
    /// # Errors
    ///
    /// Inside the `Some`, as [`check`](Self::check).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use ratelimit_core::{Limiter, Policy, ReferenceLimiter};
    ///
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// let policy = Policy::fixed_window(1, Duration::from_secs(60)).unwrap();
    /// let limiter = ReferenceLimiter::new(policy);
    /// let decision = match limiter.check_now(b"k", 1) {
    ///     Some(decided) => decided,
    ///     None => limiter.check(b"k", 1).await,
    /// };
    /// assert!(decision.unwrap().allowed);
    /// # });
    /// ```
    fn check_now(&self, key: &[u8], cost: u64) -> Option<Result<Decision, Error>> {
        let _ = (key, cost);
        None
    }

    /// Takes one unit from `key` if it fits: `check(key, 1)`.
    ///
    /// # Errors
    ///
    /// When the backend cannot decide.
    async fn check_one(&self, key: &[u8]) -> Result<Decision, Error> {
        self.check(key, 1).await
    }

    /// Reads `key` without taking anything: the decision a check of cost 1
    /// would see, with `remaining` and `reset_after` as they are.
    ///
    /// # Errors
    ///
    /// When the backend cannot decide.
    async fn peek(&self, key: &[u8]) -> Result<Decision, Error>;

    /// Forgets `key`: its next check sees a full quota.
    ///
    /// # Errors
    ///
    /// When the backend cannot reach its store.
    async fn reset(&self, key: &[u8]) -> Result<(), Error>;

    /// The policies this limiter applies, for headers such as
    /// `RateLimit-Policy`. One for the limiters of this workspace today; a
    /// limiter that enforces several policies at once lists them all.
    fn policies(&self) -> &[Policy];
}

// `Arc<L>` and `Box<L>` forward every method to the limiter they point
// to. One generic impl over `Deref` would be incoherent (it would overlap
// every concrete limiter), so the two impls are written once, here.
macro_rules! forward_limiter {
    ($(#[$doc:meta])* $pointer:ident) => {
        $(#[$doc])*
        #[async_trait]
        impl<L: Limiter + ?Sized> Limiter for $pointer<L> {
            async fn check(&self, key: &[u8], cost: u64) -> Result<Decision, Error> {
                (**self).check(key, cost).await
            }

            fn check_now(&self, key: &[u8], cost: u64) -> Option<Result<Decision, Error>> {
                (**self).check_now(key, cost)
            }

            async fn check_one(&self, key: &[u8]) -> Result<Decision, Error> {
                (**self).check_one(key).await
            }

            async fn peek(&self, key: &[u8]) -> Result<Decision, Error> {
                (**self).peek(key).await
            }

            async fn reset(&self, key: &[u8]) -> Result<(), Error> {
                (**self).reset(key).await
            }

            fn policies(&self) -> &[Policy] {
                (**self).policies()
            }
        }
    };
}

forward_limiter!(
    /// A shared limiter is a limiter, so a wrapper generic over `L: Limiter`
    /// (a timeout, a circuit breaker, …) takes an `Arc<dyn Limiter>` of any
    /// backend as well as a concrete one, as tower's wrappers take a boxed
    /// service.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// use std::time::Duration;
    /// use ratelimit_core::{Limiter, Policy, ReferenceLimiter};
    ///
    /// fn takes_any<L: Limiter>(limiter: L) -> L { limiter }
    ///
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// let policy = Policy::fixed_window(1, Duration::from_secs(60)).unwrap();
    /// let shared: Arc<dyn Limiter> = Arc::new(ReferenceLimiter::new(policy));
    /// let limiter = takes_any(Arc::clone(&shared));
    /// assert!(limiter.check_one(b"k").await.unwrap().allowed);
    /// assert!(!shared.check_one(b"k").await.unwrap().allowed, "one state behind both");
    /// # });
    /// ```
    Arc
);

forward_limiter!(
    /// A boxed limiter is a limiter (see the `Arc` impl).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use ratelimit_core::{Limiter, Policy, ReferenceLimiter};
    ///
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// let policy = Policy::fixed_window(1, Duration::from_secs(60)).unwrap();
    /// let boxed: Box<dyn Limiter> = Box::new(ReferenceLimiter::new(policy));
    /// assert_eq!(boxed.policies().len(), 1);
    /// assert!(boxed.check_one(b"k").await.unwrap().allowed);
    /// assert!(!boxed.peek(b"k").await.unwrap().allowed);
    /// # });
    /// ```
    Box
);
