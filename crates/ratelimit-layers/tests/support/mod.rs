//! Shared parts of the layer tests: a store that fails on cue, and
//! recorders for logs and metrics.

#![allow(dead_code, unreachable_pub)] // each test binary uses a subset

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};
use metrics_util::registry::{AtomicStorage, Registry};
use ratelimit_core::{Decision, Error, Limiter, ManualClock, Policy, ReferenceLimiter};
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;

/// The policy of most tests: 3 per minute.
pub fn policy() -> Policy {
    Policy::fixed_window(3, Duration::from_secs(60)).unwrap()
}

/// A [`ReferenceLimiter`] that fails (`Err` backend, "connection refused")
/// for the next `n` calls it is told to, or hangs while told to.
#[derive(Debug)]
pub struct Scripted {
    pub store: ReferenceLimiter,
    fail_next: AtomicU64,
    hang: AtomicBool,
    calls: AtomicUsize,
}

impl Scripted {
    pub fn new(policy: Policy, clock: ManualClock) -> Arc<Self> {
        Arc::new(Self {
            store: ReferenceLimiter::with_clock(policy, clock),
            fail_next: AtomicU64::new(0),
            hang: AtomicBool::new(false),
            calls: AtomicUsize::new(0),
        })
    }

    /// The next `n` calls fail.
    pub fn fail_next(&self, n: u64) {
        self.fail_next.store(n, Ordering::SeqCst);
    }

    /// Calls hang (forever) from now on, or not.
    pub fn hang(&self, hang: bool) {
        self.hang.store(hang, Ordering::SeqCst);
    }

    /// Calls that reached this store, failed ones included.
    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    async fn gate(&self) -> Result<(), Error> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if self.hang.load(Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
        let failing = self
            .fail_next
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if failing {
            let io =
                std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "connection refused");
            return Err(Error::backend(io));
        }
        Ok(())
    }
}

#[async_trait]
impl Limiter for Scripted {
    async fn check(&self, key: &[u8], cost: u64) -> Result<Decision, Error> {
        self.gate().await?;
        self.store.check_sync(key, cost)
    }

    async fn peek(&self, key: &[u8]) -> Result<Decision, Error> {
        self.gate().await?;
        Ok(self.store.peek_sync(key))
    }

    async fn reset(&self, key: &[u8]) -> Result<(), Error> {
        self.gate().await?;
        self.store.reset_sync(key);
        Ok(())
    }

    fn policies(&self) -> &[Policy] {
        self.store.policies()
    }
}

/// One captured log event or span.
#[derive(Debug, Clone)]
pub struct Captured {
    pub level: Level,
    /// `"event"`, or the span's name.
    pub name: String,
    /// The message (events), then every field as ` name=value`.
    pub text: String,
}

/// A tracing layer keeping every event and span it sees.
#[derive(Debug, Clone, Default)]
pub struct Capture(Arc<Mutex<Vec<Captured>>>);

impl Capture {
    /// Installs a capturing subscriber for this thread (every level), as
    /// long as the guard lives.
    pub fn install() -> (Self, tracing::subscriber::DefaultGuard) {
        let capture = Self::default();
        let subscriber = tracing_subscriber::registry().with(capture.clone());
        (capture, tracing::subscriber::set_default(subscriber))
    }

    pub fn all(&self) -> Vec<Captured> {
        self.0.lock().unwrap().clone()
    }

    /// The events at `level`.
    pub fn events(&self, level: Level) -> Vec<String> {
        self.all()
            .into_iter()
            .filter(|c| c.name == "event" && c.level == level)
            .map(|c| c.text)
            .collect()
    }

    pub fn clear(&self) {
        self.0.lock().unwrap().clear();
    }
}

struct Text<'a>(&'a mut String);

impl Visit for Text<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.0, "{value:?}");
        } else {
            let _ = write!(self.0, " {}={value:?}", field.name());
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.0.push_str(value);
        } else {
            let _ = write!(self.0, " {}={value}", field.name());
        }
    }
}

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Capture {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let mut text = String::new();
        event.record(&mut Text(&mut text));
        self.0.lock().unwrap().push(Captured {
            level: *event.metadata().level(),
            name: "event".into(),
            text,
        });
    }

    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        _id: &tracing::span::Id,
        _ctx: Context<'_, S>,
    ) {
        let mut text = String::new();
        attrs.record(&mut Text(&mut text));
        self.0.lock().unwrap().push(Captured {
            level: *attrs.metadata().level(),
            name: attrs.metadata().name().into(),
            text,
        });
    }

    fn on_record(
        &self,
        id: &tracing::span::Id,
        values: &tracing::span::Record<'_>,
        ctx: Context<'_, S>,
    ) {
        let mut text = String::new();
        values.record(&mut Text(&mut text));
        let name = ctx.span(id).map_or("?", |s| s.name()).to_string();
        self.0.lock().unwrap().push(Captured {
            level: Level::TRACE,
            name: format!("{name} (recorded)"),
            text,
        });
    }
}

/// A metrics recorder whose values can be read any number of times (the
/// debugging recorder of `metrics-util` resets what it reports).
#[derive(Debug)]
pub struct TestRecorder(Registry<Key, AtomicStorage>);

impl Default for TestRecorder {
    fn default() -> Self {
        Self(Registry::atomic())
    }
}

fn matches(key: &Key, name: &str, labels: &[(&str, &str)]) -> bool {
    key.name() == name
        && key.labels().count() == labels.len()
        && labels
            .iter()
            .all(|(k, v)| key.labels().any(|l| l.key() == *k && l.value() == *v))
}

impl TestRecorder {
    /// A counter's value; 0 when never registered.
    pub fn counter(&self, name: &str, labels: &[(&str, &str)]) -> u64 {
        self.0
            .get_counter_handles()
            .into_iter()
            .find(|(key, _)| matches(key, name, labels))
            .map_or(0, |(_, c)| c.load(Ordering::SeqCst))
    }

    /// A gauge's value.
    pub fn gauge(&self, name: &str) -> f64 {
        self.0
            .get_gauge_handles()
            .into_iter()
            .find(|(key, _)| matches(key, name, &[]))
            .map(|(_, g)| f64::from_bits(g.load(Ordering::SeqCst)))
            .unwrap_or_else(|| panic!("no gauge {name}"))
    }

    /// A histogram's values.
    pub fn histogram(&self, name: &str, labels: &[(&str, &str)]) -> Vec<f64> {
        self.0
            .get_histogram_handles()
            .into_iter()
            .find(|(key, _)| matches(key, name, labels))
            .map(|(_, h)| h.data())
            .unwrap_or_default()
    }
}

impl Recorder for TestRecorder {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        self.0
            .get_or_create_counter(key, |c| Counter::from_arc(Arc::clone(c)))
    }

    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        self.0
            .get_or_create_gauge(key, |g| Gauge::from_arc(Arc::clone(g)))
    }

    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        self.0
            .get_or_create_histogram(key, |h| Histogram::from_arc(Arc::clone(h)))
    }
}
