//! The batching of concurrent requests into shared script calls.
//!
//! Inside Redis a script call has a fixed cost (dispatching the call,
//! building its argument tables, reading `TIME` and `MGET`, writing the
//! reply) and a cost per request (a `SET` and some arithmetic). On the client,
//! each command is encoded, queued, parsed and handed back on its own. So
//! requests made while another call is on the wire wait for it to return
//! and then go together, in one call of the same script: each request is
//! still decided by exactly one script call, atomically, and the
//! requests of one call are decided in the order they were queued.
//!
//! A request made while nothing is in flight or queued goes at once, on its
//! own, sent by its caller's task (a lone call, see [`crate::flight`]): a
//! lone caller pays no queueing. Calls queued meanwhile wait for it to
//! return, and no request goes alone while one made before it is queued,
//! so calls reach Redis one after the other in the order their requests
//! were made.
//!
//! Every request keeps its own deadline: a call carrying requests queued
//! at different times answers each one's caller with a timeout when that
//! caller's time is up, and the others when Redis answers.

use std::fmt;
use std::sync::Arc;

use futures_util::stream::{FuturesUnordered, StreamExt};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::call::{Caller, Failure, Outcome, SharedError};
use crate::connection::CallError;
use crate::flight::{Flight, InFlight, LoneCall};
use crate::transport::Transport;

#[cfg(test)]
mod tests;

/// A request waiting for the call that will carry it.
struct Queued<T: Transport> {
    request: T::Request,
    waiter: Waiter<T::Reply>,
}

/// The caller of a queued request, waiting for its outcome.
struct Waiter<R> {
    /// When its caller's timeout runs out.
    deadline: Instant,
    outcome: oneshot::Sender<Outcome<R>>,
}

/// Sends requests made while a call is in flight together, in the next
/// call (see the module docs).
pub(crate) struct Batcher<T: Transport> {
    caller: Arc<Caller<T>>,
    queue: mpsc::UnboundedSender<Queued<T>>,
    /// Calls on the wire, lone or sent by the batching task.
    in_flight: Arc<Flight>,
}

impl<T: Transport> Batcher<T> {
    /// Starts the task that sends queued requests, at most `max_batch` in
    /// one call. It ends when the batcher is dropped.
    ///
    /// The queue is unbounded, but holds at most one request per caller
    /// waiting on this batcher.
    pub(crate) fn start(caller: Arc<Caller<T>>, max_batch: usize) -> Self {
        let (queue, receiver) = mpsc::unbounded_channel();
        let in_flight = Arc::new(Flight::default());
        tokio::spawn(drive(
            Arc::clone(&caller),
            receiver,
            max_batch,
            Arc::clone(&in_flight),
        ));
        Self {
            caller,
            queue,
            in_flight,
        }
    }

    /// Decides `request`: at once if no call is in flight, else in the next
    /// call the batching task sends. Either way within the timeout, queueing
    /// included: a queued request carries its deadline, and the call that
    /// carries it answers it with a timeout once that has passed (so no
    /// request needs a timer of its own).
    pub(crate) async fn decide(&self, request: T::Request) -> Outcome<T::Reply> {
        if let Some(_lone) = LoneCall::start(&self.in_flight) {
            return self.caller.run_one(request).await;
        }
        let (outcome, receiver) = oneshot::channel();
        let waiter = Waiter {
            deadline: Instant::now() + self.caller.timeout,
            outcome,
        };
        // Counted before it is queued, until its call is in flight, so
        // that no later request goes alone before it (see `crate::flight`).
        self.in_flight.queue();
        if self.queue.send(Queued { request, waiter }).is_err() {
            self.in_flight.unqueue(1);
            return Err(stopped());
        }
        receiver.await.unwrap_or_else(|_| Err(stopped()))
    }
}

impl<T: Transport> fmt::Debug for Batcher<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Batcher")
            .field("batches_in_flight", &self.in_flight.batches())
            .field("lone_in_flight", &self.in_flight.lone())
            .finish_non_exhaustive()
    }
}

/// The batching task's failure (its runtime shut down), as a call error.
fn stopped() -> Failure {
    let e: CallError =
        "the task batching Redis calls has stopped (was its runtime shut down?)".into();
    Failure::Call(SharedError::new(e))
}

/// How many calls the batching task keeps on the wire: while Redis runs
/// one, the client hands out the outcomes of the other and gathers the
/// next. Redis answers everything it read in one go, so more calls in
/// flight only merge on the server (measured: no gain at 3 or 4).
const CALLS_IN_FLIGHT: usize = 2;

/// The batching task: takes queued requests, decides them in one call,
/// hands out the outcomes; with up to [`CALLS_IN_FLIGHT`] calls at once.
///
/// Each call is polled, and so queued on the connection, before the next
/// is gathered, and none goes while a lone call is on its way: calls reach
/// Redis in the order their requests were made.
async fn drive<T: Transport>(
    caller: Arc<Caller<T>>,
    mut receiver: mpsc::UnboundedReceiver<Queued<T>>,
    max_batch: usize,
    in_flight: Arc<Flight>,
) {
    let mut calls = FuturesUnordered::new();
    let mut open = true;
    while open || !calls.is_empty() {
        let free = CALLS_IN_FLIGHT - calls.len();
        tokio::select! {
            biased;
            Some(()) = calls.next(), if !calls.is_empty() => {
                // Let the callers just answered run, and queue their next
                // requests, before the next call's outcomes are handed out:
                // their call then goes while this task is still busy.
                tokio::task::yield_now().await;
            }
            batch = gather(&mut receiver, max_batch, free, &in_flight), if open && free > 0 => {
                match batch {
                    Some((entered, batch)) => {
                        // Polled at once, so that it counts as in flight and
                        // its command is queued on the connection before
                        // anything else is gathered; then the connection's
                        // task gets to write it.
                        let mut call = Box::pin(send(Arc::clone(&caller), entered, batch));
                        if futures_util::poll!(call.as_mut()).is_pending() {
                            calls.push(call);
                        }
                        tokio::task::yield_now().await;
                    }
                    None => open = false,
                }
            }
        }
    }
}

/// The next requests in the queue, counted in flight: a share of it for
/// each of the `free` calls that may go now, and at most `max_batch`;
/// `None` once the batcher is gone.
///
/// Once it holds a request it waits only for a lone call (see
/// [`InFlight::enter`]), which can be in flight only while this task has
/// no call of its own in flight: `drive` then has nothing else to select,
/// and never drops this future holding requests. The rest of the share is
/// taken without waiting.
async fn gather<T: Transport>(
    receiver: &mut mpsc::UnboundedReceiver<Queued<T>>,
    max_batch: usize,
    free: usize,
    flight: &Arc<Flight>,
) -> Option<(InFlight, Vec<Queued<T>>)> {
    let mut batch = Vec::new();
    // Wait for the first request, then for the way to be clear, then take
    // a share of what is queued.
    if receiver.recv_many(&mut batch, 1).await == 0 {
        return None;
    }
    let entered = InFlight::enter(flight).await;
    // What is queued is taken without awaiting: an await here could be
    // `Pending` with requests held (tokio's cooperative budget makes a
    // receive wait even with messages queued), and `drive`, selecting a
    // call that returned meanwhile, would drop them unanswered.
    let share = (receiver.len() + 1).div_ceil(free).clamp(1, max_batch);
    batch.reserve(share - 1);
    while batch.len() < share {
        let Ok(queued) = receiver.try_recv() else {
            break;
        };
        batch.push(queued);
    }
    Some((entered, batch))
}

/// Decides `batch` in one call and hands out the outcomes, each caller's
/// by its own deadline. Requests whose deadline passed while they waited
/// fail without being sent; the call is given up once every caller's has.
async fn send<T: Transport>(caller: Arc<Caller<T>>, entered: InFlight, batch: Vec<Queued<T>>) {
    entered.carrying(batch.len());
    let _in_flight = entered;
    let now = Instant::now();
    let mut requests = Vec::with_capacity(batch.len());
    let mut waiters = Vec::with_capacity(batch.len());
    for Queued { request, waiter } in batch {
        if waiter.deadline > now {
            requests.push(request);
            waiters.push(Some(waiter));
        } else {
            let _ = waiter.outcome.send(Err(Failure::Timeout));
        }
    }
    if requests.is_empty() {
        return;
    }
    let n = requests.len();
    let call = caller.transport.call(&requests);
    tokio::pin!(call);
    loop {
        // The next deadline of a caller still waiting. (Queued in order
        // with one timeout, deadlines nearly ascend; nearly, as two threads
        // may read the clock and queue in opposite orders.)
        let Some(next) = waiters.iter().flatten().map(|w| w.deadline).min() else {
            caller.timed_out(n);
            return;
        };
        tokio::select! {
            biased;
            result = &mut call => {
                for (waiter, outcome) in waiters.into_iter().zip(caller.outcomes(result, n)) {
                    // A caller that gave up has dropped its end.
                    if let Some(waiter) = waiter {
                        let _ = waiter.outcome.send(outcome);
                    }
                }
                return;
            }
            () = tokio::time::sleep_until(next) => {
                let now = Instant::now();
                for slot in &mut waiters {
                    if let Some(waiter) = slot.take_if(|w| w.deadline <= now) {
                        let _ = waiter.outcome.send(Err(Failure::Timeout));
                    }
                }
            }
        }
    }
}
