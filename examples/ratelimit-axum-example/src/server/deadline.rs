//! The deadlines of a connection's silent phases.
//!
//! A connection is in one of three phases: **idle** (a kept-alive
//! connection between two requests), **head** (a request head is being
//! read) or **busy** (a request is being answered). Only the first two
//! belong to the client alone, so only they have a deadline; a busy
//! connection is bounded by the request and stream timeouts instead.
//!
//! hyper's own `header_read_timeout` cannot tell the first two apart: it
//! starts whenever hyper waits for a head, which on a kept-alive
//! connection is as soon as the previous response is written, so it
//! would close every kept-alive connection after the head's budget (10 s)
//! rather than the idle one (60 s). The phase is therefore tracked here:
//! the service marks a request busy, the response body marks the
//! connection idle when hyper drops it, and the socket moves idle to head
//! on the first byte of the next request, and fails a read that is still
//! waiting when the phase's deadline passes. hyper then closes the
//! connection.

use std::future::Future as _;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// How long each silent phase may last.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// From the first byte of a request head (or the connection's start)
    /// to its end.
    pub(crate) header_read: Duration,
    /// Between the end of a response and the next request's first byte.
    pub(crate) idle: Duration,
}

#[derive(Debug, Clone, Copy)]
enum Phase {
    Idle { since: Instant },
    Head { since: Instant },
    Busy,
}

/// The phase of one connection, shared by its socket, its service and
/// its response bodies.
#[derive(Debug, Clone)]
pub(crate) struct ConnPhase(Arc<Mutex<State>>);

#[derive(Debug)]
struct State {
    phase: Phase,
    /// The task of a read left pending while busy, without a deadline:
    /// it must be woken to arm the idle deadline when the response ends,
    /// since a silent client would never wake it.
    reader: Option<Waker>,
}

impl ConnPhase {
    /// A new connection: its first request head is due within the head's
    /// budget from now. A client has no reason to open a connection and
    /// say nothing, so a silent one gets no idle allowance.
    pub(crate) fn new() -> Self {
        Self(Arc::new(Mutex::new(State {
            phase: Phase::Head {
                since: Instant::now(),
            },
            reader: None,
        })))
    }

    /// A request head is complete and handed to the service.
    pub(crate) fn busy(&self) {
        self.set(|_| Phase::Busy);
    }

    /// Whether a request is being answered.
    pub(crate) fn is_busy(&self) -> bool {
        matches!(self.lock().phase, Phase::Busy)
    }

    /// The response is written (its body dropped): the wait for the next
    /// request starts.
    fn idle(&self) {
        let reader = {
            let mut state = self.lock();
            state.phase = Phase::Idle {
                since: Instant::now(),
            };
            state.reader.take()
        };
        if let Some(reader) = reader {
            reader.wake();
        }
    }

    /// Bytes arrived: if the connection was idle, a request head starts.
    fn bytes_arrived(&self) {
        self.set(|phase| match phase {
            Phase::Idle { .. } => Phase::Head {
                since: Instant::now(),
            },
            other => other,
        });
    }

    /// When the current phase must end, and its name for the error.
    fn deadline(&self, limits: Limits) -> Option<(Instant, &'static str)> {
        deadline(self.lock().phase, limits)
    }

    /// The deadline, as [`deadline`](Self::deadline); with none (busy),
    /// `waker` is kept to be woken when the connection turns idle.
    fn deadline_or_wake_later(
        &self,
        limits: Limits,
        waker: &Waker,
    ) -> Option<(Instant, &'static str)> {
        let mut state = self.lock();
        let deadline = deadline(state.phase, limits);
        if deadline.is_none() {
            match &mut state.reader {
                Some(kept) => kept.clone_from(waker),
                None => state.reader = Some(waker.clone()),
            }
        }
        deadline
    }

    fn set(&self, next: impl FnOnce(Phase) -> Phase) {
        let mut state = self.lock();
        state.phase = next(state.phase);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // Every write is a whole value: a panic cannot leave half of one.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn deadline(phase: Phase, limits: Limits) -> Option<(Instant, &'static str)> {
    match phase {
        Phase::Idle { since } => Some((since + limits.idle, "idle timeout")),
        Phase::Head { since } => Some((since + limits.header_read, "header read timeout")),
        Phase::Busy => None,
    }
}

/// A socket whose reads fail with [`io::ErrorKind::TimedOut`] once the
/// connection's current silent phase outlasts its deadline.
#[derive(Debug)]
pub(crate) struct DeadlineIo<S> {
    inner: S,
    phase: ConnPhase,
    limits: Limits,
    timer: Pin<Box<Sleep>>,
}

impl<S> DeadlineIo<S> {
    pub(crate) fn new(inner: S, phase: ConnPhase, limits: Limits) -> Self {
        let first = phase
            .deadline(limits)
            .map_or_else(Instant::now, |(at, _)| at);
        Self {
            inner,
            phase,
            limits,
            timer: Box::pin(tokio::time::sleep_until(first)),
        }
    }

    /// Called when a read is pending: registers the phase's deadline with
    /// the task, and fails the read once it has passed.
    fn poll_deadline(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let Some((deadline, what)) = self.phase.deadline_or_wake_later(self.limits, cx.waker())
        else {
            return Poll::Pending;
        };
        if self.timer.deadline() != deadline {
            self.timer.as_mut().reset(deadline);
        }
        match self.timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, what))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for DeadlineIo<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    this.phase.bytes_arrived();
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(err)) => Poll::Ready(Err(err)),
            Poll::Pending => this.poll_deadline(cx),
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for DeadlineIo<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// A response body that marks its connection idle when hyper drops it,
/// which hyper does once the last frame is written (or the connection
/// is gone).
#[derive(Debug)]
pub(crate) struct ResponseBody {
    inner: axum::body::Body,
    phase: ConnPhase,
}

impl ResponseBody {
    pub(crate) fn new(inner: axum::body::Body, phase: ConnPhase) -> Self {
        Self { inner, phase }
    }
}

impl Drop for ResponseBody {
    fn drop(&mut self) {
        self.phase.idle();
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        header_read: Duration::from_secs(10),
        idle: Duration::from_secs(60),
    };

    #[tokio::test(start_paused = true)]
    async fn each_silent_phase_has_its_own_deadline() {
        let start = Instant::now();
        let phase = ConnPhase::new();
        assert_eq!(
            phase.deadline(LIMITS),
            Some((start + LIMITS.header_read, "header read timeout"))
        );
        phase.busy();
        assert_eq!(
            phase.deadline(LIMITS),
            None,
            "answering has no deadline here"
        );
        tokio::time::advance(Duration::from_secs(100)).await;
        phase.idle();
        let idle_since = Instant::now();
        assert_eq!(
            phase.deadline(LIMITS),
            Some((idle_since + LIMITS.idle, "idle timeout"))
        );
        tokio::time::advance(Duration::from_secs(30)).await;
        phase.bytes_arrived();
        let head_since = Instant::now();
        assert_eq!(
            phase.deadline(LIMITS),
            Some((head_since + LIMITS.header_read, "header read timeout"))
        );
        tokio::time::advance(Duration::from_secs(5)).await;
        phase.bytes_arrived();
        assert_eq!(
            phase.deadline(LIMITS),
            Some((head_since + LIMITS.header_read, "header read timeout")),
            "more bytes of the same head do not extend its deadline"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_read_left_pending_while_busy_gets_the_idle_deadline_when_the_response_ends() {
        let (_client, server) = tokio::io::duplex(64);
        let phase = ConnPhase::new();
        phase.busy();
        let mut io = DeadlineIo::new(server, phase.clone(), LIMITS);
        let read = tokio::spawn(async move {
            let mut buf = [0u8; 8];
            tokio::io::AsyncReadExt::read(&mut io, &mut buf).await
        });
        tokio::time::advance(Duration::from_secs(100)).await;
        tokio::task::yield_now().await;
        assert!(!read.is_finished(), "no deadline while answering");

        drop(ResponseBody::new(axum::body::Body::empty(), phase.clone()));
        let ended = Instant::now();
        // A silent client never wakes the read: the end of the response must.
        let err = tokio::time::timeout(Duration::from_secs(3600), read)
            .await
            .expect("the idle deadline was armed")
            .unwrap()
            .unwrap_err();
        assert_eq!(err.to_string(), "idle timeout");
        assert_eq!(ended.elapsed(), LIMITS.idle);
    }

    #[tokio::test(start_paused = true)]
    async fn a_pending_read_fails_when_the_head_is_late() {
        let start = Instant::now();
        let (client, server) = tokio::io::duplex(64);
        let mut io = DeadlineIo::new(server, ConnPhase::new(), LIMITS);
        let mut buf = [0u8; 8];
        let err = tokio::io::AsyncReadExt::read(&mut io, &mut buf)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert_eq!(err.to_string(), "header read timeout");
        // The paused clock jumps straight to the first timer: the deadline.
        assert_eq!(start.elapsed(), LIMITS.header_read);
        drop(client);
    }
}
