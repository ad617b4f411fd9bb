//! The limiter's way to Redis: made in `connect`, or in the background.

use std::sync::{Arc, Mutex, OnceLock, PoisonError, Weak};
use std::time::Duration;

use ratelimit_core::{Error, ErrorChain};

use crate::batch::Batcher;
use crate::call::{Caller, Failure};
use crate::call_error::{NotConnected, TimedOut};
use crate::call_metrics::CallMetrics;
use crate::connection::Connection;
use crate::keys::validate_prefix;
use crate::limiter::validate_urls;
use crate::options::validate_max_batch;
use crate::options::{ConnectionMode, RedisOptions, Target};
use crate::transport::{Calls, LuaCode, ScriptCalls, Transport};
use crate::{ConnectError, ConnectErrorKind};

/// The first wait between two attempts of a lazy connection.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// The longest.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// What calls need once Redis is reached.
pub(crate) struct Ready<T: Transport = ScriptCalls> {
    /// For the commands besides script calls (`DEL`).
    pub(crate) connection: Connection,
    pub(crate) caller: Arc<Caller<T>>,
    /// Present on a multiplexed connection to one server: batches the
    /// requests made while a call is in flight.
    pub(crate) batcher: Option<Batcher<T>>,
}

impl<T: Transport> Ready<T> {
    /// Decides `request`: in the next batched call, or in a call of its
    /// own, giving up after `timeout` (a wait for a call in flight
    /// included).
    pub(crate) async fn decide(
        &self,
        request: T::Request,
        timeout: Duration,
    ) -> Result<T::Reply, Error> {
        let outcome = match &self.batcher {
            Some(batcher) => batcher.decide(request).await,
            None => self.caller.run_one(request).await,
        };
        outcome.map_err(|failure| match failure {
            // Redis answered, but this key holds a value the script did
            // not write: this key's failure, not Redis's.
            Failure::Foreign(e) => Error::data(e),
            Failure::Call(e) => Error::backend(e),
            Failure::Timeout => timed_out(timeout),
        })
    }
}

/// The error of a call Redis did not answer within `timeout`.
pub(crate) fn timed_out(timeout: Duration) -> Error {
    Error::timeout(Some(Box::new(TimedOut(timeout))))
}

/// Connected, or not yet (and why not).
pub(crate) struct Link<T: Transport = ScriptCalls> {
    ready: OnceLock<Ready<T>>,
    last_failure: Mutex<Option<Arc<ConnectError>>>,
}

impl<T: Transport> Link<T> {
    /// A link that is up.
    pub(crate) fn up(ready: Ready<T>) -> Self {
        Self {
            ready: OnceLock::from(ready),
            last_failure: Mutex::new(None),
        }
    }

    /// A link a background task brings up (see [`connect_in_background`]).
    pub(crate) fn pending() -> Self {
        Self {
            ready: OnceLock::new(),
            last_failure: Mutex::new(None),
        }
    }

    /// The connection, or `Err` (backend) while there is none yet.
    #[inline]
    pub(crate) fn ready(&self) -> Result<&Ready<T>, Error> {
        match self.ready.get() {
            Some(ready) => Ok(ready),
            None => Err(Error::backend(NotConnected(self.last_failure().clone()))),
        }
    }

    /// Whether Redis has been reached.
    pub(crate) fn is_up(&self) -> bool {
        self.ready.get().is_some()
    }

    fn last_failure(&self) -> std::sync::MutexGuard<'_, Option<Arc<ConnectError>>> {
        // A single assignment under the lock: nothing to leave half-done.
        self.last_failure
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// Connects as `options` say, checks the deployment, loads the code (as a
/// function library too, unless turned off) and starts the batching,
/// every step within `deadline`.
pub(crate) async fn establish<S: LuaCode>(
    options: &RedisOptions,
    code: &S,
    deadline: Duration,
) -> Result<Ready<Calls<S>>, ConnectError> {
    let library = options.functions.then(|| &*code.library().code);
    let (connection, functions) =
        Connection::open(options, code.script(), library, deadline).await?;
    let caller = Arc::new(Caller {
        transport: Calls {
            connection: connection.clone(),
            code: code.clone(),
            min_ttl_ms: u64::try_from(options.min_ttl.as_millis()).unwrap_or(u64::MAX),
            functions,
        },
        timeout: options.timeout,
        metrics: CallMetrics::new(),
    });
    // A cluster call may only touch keys of one slot, and a pooled
    // connection carries one call at a time: only a multiplexed connection
    // to one server batches.
    let batcher = match (&options.target, options.connection) {
        (Target::Standalone(_), ConnectionMode::Multiplexed) if options.max_batch.get() > 1 => {
            Some(Batcher::start(Arc::clone(&caller), options.max_batch.get()))
        }
        _ => None,
    };
    Ok(Ready {
        connection,
        caller,
        batcher,
    })
}

/// What every limiter's `connect` does: checks `options`, then connects
/// as they say, at once, or (with `lazy_connect`) from a background task,
/// the link failing calls until it is up. Either within `max(5 × timeout,
/// 2 s)` per attempt.
pub(crate) async fn open<S: LuaCode>(
    options: &RedisOptions,
    script: S,
) -> Result<Arc<Link<Calls<S>>>, ConnectError> {
    validate_prefix(&options.prefix)
        .and_then(|()| validate_max_batch(options.max_batch))
        .map_err(|e| ConnectError::new(ConnectErrorKind::InvalidConfig, e.to_string()))?;
    if options.timeout.is_zero() {
        return Err(ConnectError::new(
            ConnectErrorKind::InvalidConfig,
            "invalid `timeout`: must be longer than zero",
        ));
    }
    let deadline = (options.timeout * 5).max(Duration::from_secs(2));
    if options.lazy_connect {
        validate_urls(&options.target)?;
        let link = Arc::new(Link::pending());
        connect_in_background(Arc::downgrade(&link), options.clone(), script, deadline);
        Ok(link)
    } else {
        Ok(Arc::new(Link::up(
            establish(options, &script, deadline).await?,
        )))
    }
}

/// Brings `link` up from a background task: attempts until one succeeds,
/// waiting 100 ms after the first failure, doubling up to 5 s. The first
/// failure is logged at WARN, the next ones at DEBUG, the success at INFO.
/// The task ends when it succeeds or when the limiter is dropped.
pub(crate) fn connect_in_background<S: LuaCode>(
    link: Weak<Link<Calls<S>>>,
    options: RedisOptions,
    script: S,
    deadline: Duration,
) {
    tokio::spawn(async move {
        let mut backoff = FIRST_BACKOFF;
        let mut failures = 0u64;
        loop {
            let attempt = establish(&options, &script, deadline).await;
            let Some(link) = link.upgrade() else {
                return;
            };
            match attempt {
                Ok(ready) => {
                    // Only this task sets it.
                    let _ = link.ready.set(ready);
                    tracing::info!(failed_attempts = failures, "connected to Redis");
                    return;
                }
                Err(e) => {
                    if failures == 0 {
                        tracing::warn!(
                            error = %ErrorChain(&e),
                            "cannot connect to Redis yet; calls fail until it is reached, \
                             retrying in the background"
                        );
                    } else {
                        tracing::debug!(error = %ErrorChain(&e), "Redis still unreachable");
                    }
                    failures += 1;
                    *link.last_failure() = Some(Arc::new(e));
                }
            }
            drop(link);
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    });
}
