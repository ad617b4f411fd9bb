//! Which calls are in flight: the batching task's, counted, and at most
//! one lone call (a request made while nothing was in flight, sent at once
//! by its own task), as a flag.
//!
//! While anything is in flight, new requests queue for the batching task;
//! a batch waits for a lone call in flight to return before it goes, so
//! that calls reach Redis in the order their requests were made.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::Notify;

/// The calls in flight.
#[derive(Debug, Default)]
pub(crate) struct Flight {
    /// The batching task's calls, plus [`LONE`] while a lone call is.
    count: AtomicUsize,
    /// Told when the lone call has returned.
    lone_done: Notify,
}

/// The flag bit of a lone call.
const LONE: usize = 1 << (usize::BITS - 1);

impl Flight {
    /// The batching task's calls in flight.
    pub(crate) fn batches(&self) -> usize {
        self.count.load(Ordering::Relaxed) & !LONE
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
    /// Flags a lone call, if nothing is in flight.
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
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.count.fetch_sub(1, Ordering::AcqRel);
    }
}
