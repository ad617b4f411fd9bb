//! The trait every backend implements for policy sets, its receipts, and
//! the RAII [`Reservation`].

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::few::Few;
use crate::{Error, FailurePolicy, Lease, Limit, PolicyReceipt, PolicySet, SetDecision};

/// What an allowed set check took, per policy, for one key: settle it once
/// with the actual amounts ([`SetLimiter::settle`]), or drop it through a
/// [`Reservation`].
///
/// Not `Clone`: settling takes it by value, so a receipt settles at most
/// once (`SPEC.md` 5.2, S3).
#[must_use = "a receipt holds what the check took and any lease: settle it or hold it in a Reservation"]
#[derive(PartialEq, Eq)]
pub struct Receipt {
    // Inline for keys up to 32 bytes and sets up to four policies, so a
    // check allocates nothing for them.
    key: KeyBytes,
    parts: Few<PolicyReceipt>,
    degraded: Option<FailurePolicy>,
}

impl Receipt {
    /// A receipt for `key`, one part per policy of the set in set order.
    /// For backends: an application gets receipts from checks.
    #[inline]
    pub fn new(key: &[u8], parts: impl IntoIterator<Item = PolicyReceipt>) -> Self {
        Self {
            key: KeyBytes::new(key),
            parts: parts.into_iter().collect(),
            degraded: None,
        }
    }

    /// A receipt for `key` of the `parts` of a check of a short set, built
    /// whole (see `Few`).
    #[inline(always)]
    pub(crate) fn of_parts(key: &[u8], parts: &[PolicyReceipt]) -> Self {
        Self {
            key: KeyBytes::new(key),
            parts: Few::of_slice(parts),
            degraded: None,
        }
    }

    /// Appends the next policy's part, as a check makes its receipt.
    #[inline]
    pub(crate) fn push_part(&mut self, part: PolicyReceipt) {
        self.parts.push(part);
    }

    /// A receipt of a check that a [`FailurePolicy`] allowed while the
    /// store could not decide, holding `parts` of the limiter that did
    /// decide (a fallback's), or none (fail open). Only the layer that made
    /// it can settle it; a store given one refuses it as a receipt of
    /// another set.
    pub fn degraded(
        key: &[u8],
        policy: FailurePolicy,
        parts: impl IntoIterator<Item = PolicyReceipt>,
    ) -> Self {
        Self {
            degraded: Some(policy),
            ..Self::new(key, parts)
        }
    }

    /// `Some` when a [`FailurePolicy`] allowed the check instead of the
    /// store (see [`degraded`](Self::degraded)).
    #[must_use]
    pub fn degraded_by(&self) -> Option<FailurePolicy> {
        self.degraded
    }

    /// The same parts, no longer marked degraded: for the layer that made
    /// a degraded receipt, to hand it back to the limiter that decided.
    pub fn into_undegraded(mut self) -> Self {
        self.degraded = None;
        self
    }

    /// The key the check was made for.
    #[must_use]
    pub fn key(&self) -> &[u8] {
        self.key.as_slice()
    }

    /// The parts, one per policy, in set order. None for a
    /// [`degraded`](Self::degraded) receipt: a store given one sees a
    /// receipt of another set (its settle is refused, its release frees
    /// nothing), and only the layer that made it reads its parts, through
    /// [`into_undegraded`](Self::into_undegraded).
    #[must_use]
    pub fn parts(&self) -> &[PolicyReceipt] {
        if self.degraded.is_some() {
            return &[];
        }
        &self.parts
    }

    /// The parts, for a backend renewing the leases in place (none for a
    /// degraded receipt, as [`parts`](Self::parts)).
    pub fn parts_mut(&mut self) -> &mut [PolicyReceipt] {
        if self.degraded.is_some() {
            return &mut [];
        }
        &mut self.parts
    }

    /// What each policy took: settling with these amounts changes no rate
    /// policy and releases the leases.
    #[must_use]
    pub fn taken(&self) -> Vec<u64> {
        self.parts.iter().map(|p| p.taken).collect()
    }

    /// The leases held, in set order.
    pub fn leases(&self) -> impl Iterator<Item = Lease> + '_ {
        self.parts().iter().filter_map(PolicyReceipt::lease)
    }
}

impl fmt::Debug for Receipt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The key is the caller's identity (an IP, an API key's hash): it
        // stays out of debug output that may reach a log.
        f.debug_struct("Receipt")
            .field("key", &format_args!("<{} bytes>", self.key().len()))
            .field("parts", &&*self.parts)
            .field("degraded", &self.degraded)
            .finish()
    }
}

/// The most key bytes a [`Receipt`] holds inline.
const INLINE_KEY: usize = 32;

/// A receipt's copy of the key: inline up to [`INLINE_KEY`] bytes (the
/// bytes past `len` are zero, so the derived equality is the keys'), else
/// on the heap.
#[derive(PartialEq, Eq)]
enum KeyBytes {
    Inline { len: usize, bytes: [u8; INLINE_KEY] },
    Heap(Box<[u8]>),
}

impl KeyBytes {
    // Always inlined: returned through a call, the key was read back
    // wider than it was written (a store-forwarding stall).
    #[inline(always)]
    fn new(key: &[u8]) -> Self {
        if key.len() <= INLINE_KEY {
            // Built in four words, each a fixed-size load (the tail
            // gathered byte by byte), and stored at once: a copy into a
            // byte array at the key's length was a call to `memcpy`, or a
            // store at a variable offset read back wider (a stall).
            let len = key.len();
            let word = |at: usize| -> u64 {
                match key.get(at..at + 8) {
                    Some(w) => u64::from_le_bytes(w.try_into().unwrap_or([0; 8])),
                    None => key
                        .get(at..)
                        .unwrap_or(&[])
                        .iter()
                        .rev()
                        .fold(0, |acc, &b| (acc << 8) | u64::from(b)),
                }
            };
            let words = [word(0), word(8), word(16), word(24)];
            let mut bytes = [0; INLINE_KEY];
            for (to, w) in bytes.chunks_exact_mut(8).zip(words) {
                to.copy_from_slice(&w.to_le_bytes());
            }
            Self::Inline { len, bytes }
        } else {
            Self::Heap(key.into())
        }
    }

    #[inline]
    fn as_slice(&self) -> &[u8] {
        match self {
            Self::Inline { len, bytes } => &bytes[..*len],
            Self::Heap(key) => key,
        }
    }
}

/// The answer to a set check: the decision, and the receipt when allowed.
#[derive(Debug)]
#[non_exhaustive]
pub struct SetCheck {
    /// The set's decision.
    pub decision: SetDecision,
    /// What was taken, when the set allowed.
    pub receipt: Option<Receipt>,
}

impl SetCheck {
    /// A check's answer.
    #[must_use]
    pub fn new(decision: SetDecision, receipt: Option<Receipt>) -> Self {
        Self { decision, receipt }
    }
}

/// A keyed limiter over a [`PolicySet`] (`SPEC.md` section 5): checks all
/// or nothing, settles later, holds concurrency leases.
///
/// Object-safe, as [`Limiter`](crate::Limiter) is. A denial is
/// `Ok` with `decision.allowed == false`; `Err` means the backend could
/// not decide or the call can never succeed as made.
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
/// use ratelimit_core::{Concurrency, NamedLimit, Policy, PolicySet, ReferenceSetLimiter, SetLimiter};
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let set = PolicySet::new(vec![
///     NamedLimit::new("requests", Policy::fixed_window(5, Duration::from_secs(30)).unwrap()).unwrap(),
///     NamedLimit::new("tokens", Policy::fixed_window(20_000, Duration::from_secs(60)).unwrap())
///         .unwrap()
///         .settling(),
///     NamedLimit::new("streams", Concurrency::new(2, Duration::from_secs(30)).unwrap()).unwrap(),
/// ]).unwrap();
/// let limiter: Arc<dyn SetLimiter> = Arc::new(ReferenceSetLimiter::new(set));
///
/// // Reserve 1 request, an estimate of 1,500 tokens and a stream slot.
/// let check = limiter.check_set(b"user:42", &[1, 1_500, 1]).await.unwrap();
/// assert!(check.decision.allowed);
/// // The stream used 900 tokens: 600 come back, the lease is released.
/// let after = limiter.settle(check.receipt.unwrap(), &[1, 900, 0]).await.unwrap();
/// assert_eq!(after.decisions[1].remaining, 19_100);
/// assert_eq!(after.decisions[2].remaining, 2);
/// # });
/// ```
#[async_trait]
pub trait SetLimiter: Send + Sync {
    /// The policies this limiter applies, in order.
    fn policy_set(&self) -> &PolicySet;

    /// Checks `key` with one cost per policy, all or nothing (`SPEC.md`
    /// 5.1); a cost of 0 gates on the policy without taking from it, a
    /// concurrency policy's cost is 1 (take a lease) or 0.
    ///
    /// # Errors
    ///
    /// When the costs do not match the set (naming the policy; nothing is
    /// changed) or the backend cannot decide.
    async fn check_set(&self, key: &[u8], costs: &[u64]) -> Result<SetCheck, Error>;

    /// [`check_set`](Self::check_set) without awaiting, for a backend that
    /// decides in place (the in-process ones): `Some` with exactly what
    /// `check_set` would return, or `None` when the check must be awaited
    /// (the default). [`Reservation::acquire`] tries it first, so an
    /// in-process check allocates no future.
    ///
    /// # Errors
    ///
    /// Inside the `Some`, as [`check_set`](Self::check_set).
    fn check_set_now(&self, key: &[u8], costs: &[u64]) -> Option<Result<SetCheck, Error>> {
        let _ = (key, costs);
        None
    }

    /// Settles a receipt with the actual amount per policy (the value for
    /// a concurrency policy is ignored: its lease is released), in one
    /// atomic step; never denies (`SPEC.md` 5.2). Returns each policy's
    /// decision after it.
    ///
    /// # Errors
    ///
    /// When the receipt or amounts do not fit the set, an overshoot would
    /// leave the exact domain (the leases are still released), or the
    /// backend cannot be reached: then the estimate stays charged (a
    /// refund is lost, never doubled) and the leases expire by their TTL.
    async fn settle(&self, receipt: Receipt, actual: &[u64]) -> Result<SetDecision, Error>;

    /// Renews the receipt's leases to `now + lease_ttl`, updating their
    /// expiry in the receipt. `Ok(false)` when one was lost (it expired and
    /// its slot may have been taken): the holder should stop.
    ///
    /// # Errors
    ///
    /// When the backend cannot decide.
    async fn renew(&self, receipt: &mut Receipt) -> Result<bool, Error>;

    /// Each policy's decision for `key` at a check of cost 0, taking
    /// nothing.
    ///
    /// # Errors
    ///
    /// When the backend cannot decide.
    async fn peek_set(&self, key: &[u8]) -> Result<SetDecision, Error>;

    /// Forgets `key` under every policy of the set, leases included.
    ///
    /// # Errors
    ///
    /// When the backend cannot reach its store.
    async fn reset_set(&self, key: &[u8]) -> Result<(), Error>;

    /// Releases the receipt's leases without awaiting, and changes nothing
    /// else: what dropping a [`Reservation`] does. The in-process backends
    /// release at once; a remote one sends the release and does not wait
    /// for the answer (if it is lost, the leases expire by their TTL).
    fn release(&self, receipt: Receipt);
}

macro_rules! forward_set_limiter {
    ($pointer:ident) => {
        #[async_trait]
        impl<L: SetLimiter + ?Sized> SetLimiter for $pointer<L> {
            fn policy_set(&self) -> &PolicySet {
                (**self).policy_set()
            }

            async fn check_set(&self, key: &[u8], costs: &[u64]) -> Result<SetCheck, Error> {
                (**self).check_set(key, costs).await
            }

            fn check_set_now(&self, key: &[u8], costs: &[u64]) -> Option<Result<SetCheck, Error>> {
                (**self).check_set_now(key, costs)
            }

            async fn settle(&self, receipt: Receipt, actual: &[u64]) -> Result<SetDecision, Error> {
                (**self).settle(receipt, actual).await
            }

            async fn renew(&self, receipt: &mut Receipt) -> Result<bool, Error> {
                (**self).renew(receipt).await
            }

            async fn peek_set(&self, key: &[u8]) -> Result<SetDecision, Error> {
                (**self).peek_set(key).await
            }

            async fn reset_set(&self, key: &[u8]) -> Result<(), Error> {
                (**self).reset_set(key).await
            }

            fn release(&self, receipt: Receipt) {
                (**self).release(receipt)
            }
        }
    };
}

forward_set_limiter!(Arc);
forward_set_limiter!(Box);

/// An allowed set check held as a value: settle it with the actual amounts
/// when the work is done; **dropped without settling, it releases its
/// leases at once and leaves the estimate charged**.
///
/// Dropping is what happens when the task holding it is cancelled (a
/// client closed the connection, a timeout fired) or panics. Leaving the
/// estimate charged keeps the budget safe: the check admitted the work on
/// that estimate, and an abandoned holder can no longer say how much it
/// used (an LLM stream cut off may have generated most of its tokens), so
/// refunding anything could let aborted work escape the budget; charging
/// more than the estimate would bill work nobody measured. A holder that
/// knows what was used settles it, and an aborted stream should settle with
/// what was generated before the abort. See `docs/semantics.md`.
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
/// use ratelimit_core::{Concurrency, NamedLimit, PolicySet, ReferenceSetLimiter, Reservation};
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let set = PolicySet::new(vec![
///     NamedLimit::new("streams", Concurrency::new(1, Duration::from_secs(30)).unwrap()).unwrap(),
/// ]).unwrap();
/// let limiter = Arc::new(ReferenceSetLimiter::new(set));
///
/// let held = Reservation::acquire(limiter.clone(), b"k", &[1]).await.unwrap().unwrap();
/// let denied = Reservation::acquire(limiter.clone(), b"k", &[1]).await.unwrap().unwrap_err();
/// assert_eq!(denied.first_denied(), Some(0));
/// drop(held); // released at once
/// assert!(Reservation::acquire(limiter, b"k", &[1]).await.unwrap().is_ok());
/// # });
/// ```
#[must_use = "dropping a reservation releases its leases at once"]
pub struct Reservation<L: SetLimiter + ?Sized = dyn SetLimiter> {
    limiter: Arc<L>,
    // The check's answer kept whole, its receipt `Some` until consumed: a
    // reservation is made of the answer without taking it apart (its
    // receipt and decision moved into fields of their own were copied
    // again, piece by piece).
    check: SetCheck,
}

impl<L: SetLimiter + ?Sized> Reservation<L> {
    /// Checks `key` with `costs` on `limiter`: `Ok(Ok(reservation))` when
    /// allowed, `Ok(Err(decision))` when denied.
    ///
    /// # Errors
    ///
    /// As [`SetLimiter::check_set`].
    pub async fn acquire(
        limiter: Arc<L>,
        key: &[u8],
        costs: &[u64],
    ) -> Result<Result<Self, SetDecision>, Error> {
        // The answer (~460 bytes) is matched once, as a whole, where it
        // was returned (not `?` and then its receipt), and an `if let`
        // ends its temporary before the `await` below: a `match` on
        // `check_set_now` kept it across the `await`, in the future, from
        // where it was copied out again.
        //
        // Called on `L` itself, as every call of a reservation is: called
        // on the `Arc`, a check went through the `Arc`'s forwarding
        // implementation, one more call returning the answer through
        // memory (and, awaited, one more boxed future).
        if let Some(check) = L::check_set_now(&limiter, key, costs) {
            return Self::of_check(limiter, check);
        }
        let check = L::check_set(&limiter, key, costs).await;
        Self::of_check(limiter, check)
    }

    /// The reservation of an allowed check, or the decision of a denied
    /// one.
    #[inline(always)]
    fn of_check(
        limiter: Arc<L>,
        check: Result<SetCheck, Error>,
    ) -> Result<Result<Self, SetDecision>, Error> {
        match check {
            Ok(check) if check.receipt.is_some() => Ok(Ok(Self { limiter, check })),
            Ok(check) => Ok(Err(check.decision)),
            Err(e) => Err(e),
        }
    }

    /// The decision of the check that made this reservation.
    #[must_use]
    pub fn decision(&self) -> &SetDecision {
        &self.check.decision
    }

    /// What the check took.
    pub fn receipt(&self) -> &Receipt {
        self.check
            .receipt
            .as_ref()
            .expect("a reservation holds its receipt until it is consumed")
    }

    /// How often to [`renew`](Self::renew) so no lease expires while held:
    /// a third of the shortest lease TTL of the set, or `None` when the
    /// set has no concurrency policy.
    #[must_use]
    pub fn renew_every(&self) -> Option<Duration> {
        self.limiter
            .policy_set()
            .limits()
            .iter()
            .filter_map(|l| match l.limit() {
                Limit::Concurrency(c) => Some(c.lease_ttl() / 3),
                Limit::Rate(_) => None,
            })
            .min()
    }

    /// Renews the leases (see [`SetLimiter::renew`]).
    ///
    /// # Errors
    ///
    /// As [`SetLimiter::renew`].
    pub async fn renew(&mut self) -> Result<bool, Error> {
        let receipt = self
            .check
            .receipt
            .as_mut()
            .expect("a reservation holds its receipt until it is consumed");
        L::renew(&self.limiter, receipt).await
    }

    /// Settles with the actual amount per policy and releases the leases
    /// (see [`SetLimiter::settle`]).
    ///
    /// # Errors
    ///
    /// As [`SetLimiter::settle`]; the reservation is consumed either way.
    pub async fn settle(mut self, actual: &[u64]) -> Result<SetDecision, Error> {
        let receipt = self
            .check
            .receipt
            .take()
            .expect("a reservation holds its receipt until it is consumed");
        let limiter = Arc::clone(&self.limiter);
        L::settle(&limiter, receipt, actual).await
    }
}

impl<L: SetLimiter + ?Sized> Drop for Reservation<L> {
    fn drop(&mut self) {
        if let Some(receipt) = self.check.receipt.take() {
            L::release(&self.limiter, receipt);
        }
    }
}

impl<L: SetLimiter + ?Sized> fmt::Debug for Reservation<L> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reservation")
            .field("receipt", &self.check.receipt)
            .field("decision", &self.check.decision)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_receipt_keeps_every_key_length_exactly() {
        let long: Vec<u8> = (0..=255u8).rev().take(2 * INLINE_KEY + 3).collect();
        for len in 0..long.len() {
            let key = &long[..len];
            let receipt = Receipt::new(key, []);
            assert_eq!(receipt.key(), key, "{len} bytes");
            assert!(receipt == Receipt::new(key, []));
            if len > 0 {
                assert!(receipt != Receipt::new(&long[..len - 1], []), "{len} bytes");
            }
        }
    }
}
