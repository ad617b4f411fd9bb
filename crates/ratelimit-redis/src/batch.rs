//! Script calls, and the batching of concurrent requests into one call.
//!
//! Inside Redis a script call has a fixed cost (dispatching `EVALSHA`,
//! building its argument tables, reading `TIME` and `MGET`, writing the
//! reply) and a cost per request (a `SET` and some arithmetic). On the client,
//! each command is encoded, queued, parsed and handed back on its own. So
//! requests made while another call is on the wire wait for it to return
//! and then go together, in one call of the same script: each request is
//! still decided by exactly one script call, atomically, and the
//! requests of one call are decided in the order they were queued.
//!
//! A request made while nothing is in flight goes at once, on its own: a
//! lone caller pays no queueing. On plain TCP it goes on a lean connection
//! of its own ([`Direct`]), written and read by the caller itself; calls
//! queued meanwhile wait for it to return, so calls still reach Redis one
//! after the other in the order their requests were made.

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::{FuturesUnordered, StreamExt};
use ratelimit_core::Decision;
use tokio::sync::{mpsc, oneshot, Notify};
use tokio::time::Instant;

use crate::call_metrics::{CallMetrics, CallResult};
use crate::connection::{CallError, Connection};
use crate::script::{ForeignValue, PolicyScript, Request};
use crate::wire::Direct;

/// Why a request got no decision from Redis.
#[derive(Debug, Clone)]
pub(crate) enum Failure {
    /// Redis did not answer within the timeout.
    Timeout,
    /// The call failed (connection, server error); shared by every request
    /// of the call.
    Call(SharedError),
    /// Redis answered, but this request's key holds a value the script did
    /// not write.
    Foreign(ForeignValue),
}

/// One call's error, handed to each request of the call.
#[derive(Debug, Clone)]
pub(crate) struct SharedError(Arc<CallError>);

impl fmt::Display for SharedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl std::error::Error for SharedError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

/// A request's outcome.
pub(crate) type Outcome = Result<Decision, Failure>;

/// What every script call needs.
pub(crate) struct Caller {
    pub(crate) connection: Connection,
    pub(crate) script: PolicyScript,
    pub(crate) min_ttl_ms: u64,
    pub(crate) timeout: Duration,
    pub(crate) metrics: CallMetrics,
}

impl Caller {
    /// Decides `requests` in one script call, giving up at `deadline`; one
    /// outcome per request, in order. The call goes on `direct` when given,
    /// else on the shared connection.
    pub(crate) async fn run<'a>(
        &self,
        requests: impl ExactSizeIterator<Item = &'a Request> + Clone,
        deadline: Instant,
        direct: Option<&Direct>,
    ) -> Vec<Outcome> {
        let n = requests.len();
        let evalsha = self.script.command(requests, self.min_ttl_ms);
        let call = async {
            match direct {
                Some(direct) => Ok(direct.evalsha(&evalsha, &self.script).await?),
                None => {
                    self.connection
                        .evalsha(&evalsha, self.script.script())
                        .await
                }
            }
        };
        let failure = match tokio::time::timeout_at(deadline, call).await {
            Ok(Ok(reply)) => match self.script.decisions(reply, n) {
                Ok(decisions) => {
                    self.metrics.call(n, CallResult::Ok);
                    return decisions
                        .into_iter()
                        .map(|d| d.map_err(Failure::Foreign))
                        .collect();
                }
                Err(e) => Failure::Call(SharedError(Arc::new(Box::new(e)))),
            },
            Ok(Err(e)) => Failure::Call(SharedError(Arc::new(e))),
            Err(_) => Failure::Timeout,
        };
        let result = match failure {
            Failure::Timeout => CallResult::Timeout,
            _ => CallResult::Error,
        };
        self.metrics.call(n, result);
        vec![Err(failure); n]
    }

    /// Decides one request in a call of its own, within the timeout, on
    /// `direct` when given.
    pub(crate) async fn run_one(&self, request: &Request, direct: Option<&Direct>) -> Outcome {
        let deadline = Instant::now() + self.timeout;
        let mut outcomes = self.run(std::iter::once(request), deadline, direct).await;
        outcomes.pop().unwrap_or(Err(Failure::Timeout))
    }
}

/// A request waiting for the call that will carry it.
struct Queued {
    request: Request,
    /// When its caller's timeout runs out.
    deadline: Instant,
    outcome: oneshot::Sender<Outcome>,
}

/// Sends requests made while a call is in flight together, in the next
/// call (see the module docs).
pub(crate) struct Batcher {
    caller: Arc<Caller>,
    queue: mpsc::UnboundedSender<Queued>,
    /// Calls on the wire, sent directly or by the batching task.
    in_flight: Arc<Flight>,
    /// The lean connection of the requests that go at once, where the
    /// target allows one.
    direct: Option<Direct>,
}

impl Batcher {
    /// Starts the task that sends queued requests, at most `max_batch` in
    /// one call. It ends when the batcher is dropped.
    ///
    /// The queue is unbounded, but holds at most one request per caller
    /// waiting on this batcher.
    pub(crate) fn start(caller: Arc<Caller>, max_batch: usize, direct: Option<Direct>) -> Self {
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
            direct,
        }
    }

    /// Decides `request`: at once if no call is in flight, else in the next
    /// call the batching task sends. Either way within the timeout: a
    /// queued request carries its deadline, and its call gives up at the
    /// earliest deadline of the requests it carries (so no request needs a
    /// timer of its own).
    pub(crate) async fn decide(&self, request: Request) -> Outcome {
        if let Some(_direct) = DirectCall::start(&self.in_flight) {
            return self.caller.run_one(&request, self.direct.as_ref()).await;
        }
        let (outcome, receiver) = oneshot::channel();
        let deadline = Instant::now() + self.caller.timeout;
        let queued = Queued {
            request,
            deadline,
            outcome,
        };
        if self.queue.send(queued).is_err() {
            return Err(stopped());
        }
        receiver.await.unwrap_or_else(|_| Err(stopped()))
    }
}

impl fmt::Debug for Batcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let count = self.in_flight.count.load(Ordering::Relaxed);
        f.debug_struct("Batcher")
            .field("batches_in_flight", &(count & !DIRECT))
            .field("direct_in_flight", &(count & DIRECT != 0))
            .field("direct_connection", &self.direct.is_some())
            .finish_non_exhaustive()
    }
}

/// The batching task's failure (its runtime shut down), as a call error.
fn stopped() -> Failure {
    let e: CallError =
        "the task batching Redis calls has stopped (was its runtime shut down?)".into();
    Failure::Call(SharedError(Arc::new(e)))
}

/// The calls in flight: the batching task's, counted, and at most one
/// request that went at once, as a flag.
#[derive(Debug, Default)]
struct Flight {
    count: AtomicUsize,
    /// Told when the call that went at once has returned.
    direct_done: Notify,
}

/// The flag bit of a call that went at once.
const DIRECT: usize = 1 << (usize::BITS - 1);

/// A request going at once, flagged in flight until dropped (also when its
/// caller gives up).
struct DirectCall<'a>(&'a Flight);

impl<'a> DirectCall<'a> {
    /// Flags a call going at once, if nothing is in flight.
    fn start(flight: &'a Flight) -> Option<Self> {
        flight
            .count
            .compare_exchange(0, DIRECT, Ordering::AcqRel, Ordering::Acquire)
            .ok()
            .map(|_| Self(flight))
    }
}

impl Drop for DirectCall<'_> {
    fn drop(&mut self) {
        self.0.count.fetch_and(!DIRECT, Ordering::AcqRel);
        self.0.direct_done.notify_waiters();
    }
}

/// Counts one of the batching task's calls in flight until dropped.
struct InFlight(Arc<Flight>);

impl InFlight {
    /// Counts one more call in flight: from now on no request goes at
    /// once. Returns once a call that went at once before has returned,
    /// so that this one reaches Redis after it.
    async fn enter(flight: &Arc<Flight>) -> Self {
        let done = flight.direct_done.notified();
        tokio::pin!(done);
        // Registered before the flag is read, so the wake-up is not lost.
        done.as_mut().enable();
        let before = flight.count.fetch_add(1, Ordering::AcqRel);
        let guard = Self(Arc::clone(flight));
        if before & DIRECT != 0 {
            while flight.count.load(Ordering::Acquire) & DIRECT != 0 {
                done.as_mut().await;
                done.set(flight.direct_done.notified());
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

/// How many calls the batching task keeps on the wire: while Redis runs
/// one, the client hands out the outcomes of the other and gathers the
/// next. Redis answers everything it read in one go, so more calls in
/// flight only merge on the server (measured: no gain at 3 or 4).
const CALLS_IN_FLIGHT: usize = 2;

/// The batching task: takes queued requests, decides them in one call,
/// hands out the outcomes; with up to [`CALLS_IN_FLIGHT`] calls at once.
///
/// Each call is polled, and so queued on the connection, before the next
/// is gathered, and none goes while a request that went at once is on its
/// way: calls reach Redis in the order their requests were made.
async fn drive(
    caller: Arc<Caller>,
    mut receiver: mpsc::UnboundedReceiver<Queued>,
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
/// Once it holds a request it waits only for a request that went at once
/// (see [`InFlight::enter`]), which can be in flight only while this task
/// has no call of its own in flight: `drive` then has nothing else to
/// select, and never drops this future holding requests.
async fn gather(
    receiver: &mut mpsc::UnboundedReceiver<Queued>,
    max_batch: usize,
    free: usize,
    flight: &Arc<Flight>,
) -> Option<(InFlight, Vec<Queued>)> {
    let mut batch = Vec::new();
    // Wait for the first request, then for the way to be clear, then take
    // a share of what is queued.
    if receiver.recv_many(&mut batch, 1).await == 0 {
        return None;
    }
    let entered = InFlight::enter(flight).await;
    let share = (receiver.len() + 1).div_ceil(free).clamp(1, max_batch);
    if share > 1 {
        batch.reserve(share - 1);
        receiver.recv_many(&mut batch, share - 1).await;
    }
    Some((entered, batch))
}

/// Decides `batch` in one call and hands out the outcomes. Requests whose
/// deadline has passed while they waited fail without being sent.
async fn send(caller: Arc<Caller>, entered: InFlight, mut batch: Vec<Queued>) {
    let _in_flight = entered;
    let now = Instant::now();
    let live = batch
        .iter()
        .position(|q| q.deadline > now)
        .unwrap_or(batch.len());
    for expired in batch.drain(..live) {
        let _ = expired.outcome.send(Err(Failure::Timeout));
    }
    // Queued in order, with one timeout: the first deadline is the earliest.
    let Some(deadline) = batch.first().map(|q| q.deadline) else {
        return;
    };
    let outcomes = caller
        .run(batch.iter().map(|q| &q.request), deadline, None)
        .await;
    for (queued, outcome) in batch.into_iter().zip(outcomes) {
        // A caller that gave up has dropped its end.
        let _ = queued.outcome.send(outcome);
    }
}
