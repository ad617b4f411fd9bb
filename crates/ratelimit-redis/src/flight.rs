//! Which calls are in flight: the batching task's and the requests queued
//! for it, counted, and at most one lone call (a request made while
//! nothing was in flight or queued, sent at once by its own task), as a
//! flag.
//!
//! While anything is in flight or queued, new requests queue for the
//! batching task; a batch waits for a lone call in flight to return before
//! it goes, so that calls reach Redis in the order their requests were
//! made. A queued request counts until the call that carries it is in
//! flight: were it not counted, a request made after it (the release of a
//! lease its caller gave up on, say) could go alone in between and reach
//! Redis first.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::Notify;

/// The calls in flight.
#[derive(Debug, Default)]
pub(crate) struct Flight {
    /// The batching task's calls and the requests queued for it, plus
    /// [`LONE`] while a lone call is in flight.
    count: AtomicUsize,
    /// Told when the lone call has returned.
    lone_done: Notify,
}

/// The flag bit of a lone call.
const LONE: usize = 1 << (usize::BITS - 1);

impl Flight {
    /// The batching task's calls in flight and the requests queued for
    /// it.
    pub(crate) fn batches(&self) -> usize {
        self.count.load(Ordering::Relaxed) & !LONE
    }

    /// Counts a request about to be queued for the batching task: from now
    /// on no request goes alone until the call that carries it is in
    /// flight ([`InFlight::carrying`]).
    pub(crate) fn queue(&self) {
        self.count.fetch_add(1, Ordering::AcqRel);
    }

    /// Stops counting `n` queued requests: their call is in flight, or
    /// they were never queued.
    pub(crate) fn unqueue(&self, n: usize) {
        self.count.fetch_sub(n, Ordering::AcqRel);
    }

    /// Whether a lone call is in flight.
    pub(crate) fn lone(&self) -> bool {
        self.count.load(Ordering::Relaxed) & LONE != 0
    }
}

/// A lone call, flagged in flight until dropped (also when its caller
/// gives up half-way).
pub(crate) struct LoneCall<'a>(&'a Flight);

impl<'a> LoneCall<'a> {
    /// Flags a lone call, if nothing is in flight or queued.
    pub(crate) fn start(flight: &'a Flight) -> Option<Self> {
        flight
            .count
            .compare_exchange(0, LONE, Ordering::AcqRel, Ordering::Acquire)
            .ok()
            .map(|_| Self(flight))
    }
}

impl Drop for LoneCall<'_> {
    fn drop(&mut self) {
        self.0.count.fetch_and(!LONE, Ordering::AcqRel);
        self.0.lone_done.notify_waiters();
    }
}

/// Counts one of the batching task's calls in flight until dropped.
pub(crate) struct InFlight(Arc<Flight>);

impl InFlight {
    /// Counts one more call in flight: from now on no request goes alone.
    /// Returns once a lone call started before has returned, so that this
    /// one reaches Redis after it.
    pub(crate) async fn enter(flight: &Arc<Flight>) -> Self {
        let done = flight.lone_done.notified();
        tokio::pin!(done);
        // Registered before the flag is read, so the wake-up is not lost.
        done.as_mut().enable();
        let before = flight.count.fetch_add(1, Ordering::AcqRel);
        let guard = Self(Arc::clone(flight));
        if before & LONE != 0 {
            while flight.count.load(Ordering::Acquire) & LONE != 0 {
                done.as_mut().await;
                done.set(flight.lone_done.notified());
                done.as_mut().enable();
            }
        }
        guard
    }

    /// Stops counting the `n` queued requests this call carries: it counts
    /// in their stead, so the count does not drop to zero in between.
    pub(crate) fn carrying(&self, n: usize) {
        self.0.unqueue(n);
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.count.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_call_goes_alone_while_a_request_waits_in_the_queue() {
        let flight = Arc::new(Flight::default());
        let lone = LoneCall::start(&flight).expect("nothing in flight");
        assert!(
            LoneCall::start(&flight).is_none(),
            "one lone call at a time"
        );
        // A request queued behind the lone call.
        flight.queue();
        drop(lone);
        // The lone call returned, and the batching task has not taken the
        // request yet: a later request must queue behind it.
        assert!(
            LoneCall::start(&flight).is_none(),
            "a lone call overtook the queue"
        );
        assert_eq!(flight.batches(), 1);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let call = runtime.block_on(InFlight::enter(&flight));
        call.carrying(1);
        assert_eq!(
            flight.batches(),
            1,
            "the call counts in the request's stead"
        );
        assert!(LoneCall::start(&flight).is_none());
        drop(call);
        assert_eq!(flight.batches(), 0);
        assert!(
            LoneCall::start(&flight).is_some(),
            "all returned: alone again"
        );
    }
}
