//! A log capture per test: a global subscriber filing each event and span
//! under the thread it happens on.

use std::cell::RefCell;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, Once, PoisonError};

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt as _};
use tracing_subscriber::registry::LookupSpan;

/// One captured log event or span.
///
/// # Examples
///
/// ```
/// use ratelimit_testkit::Capture;
/// use tracing::Level;
///
/// let (logs, _guard) = Capture::install();
/// tracing::info!(keys = 2, "swept");
/// let captured = &logs.all()[0];
/// assert_eq!(captured.level, Level::INFO);
/// assert_eq!(captured.name, "event");
/// assert_eq!(captured.text, "swept keys=2");
/// ```
#[derive(Debug, Clone)]
pub struct Captured {
    /// The event's or span's level; `TRACE` for values recorded on a span
    /// after it was created.
    pub level: Level,
    /// `"event"`, the span's name, or the span's name followed by
    /// `" (recorded)"` for values recorded later.
    pub name: String,
    /// The message (events), then every field as ` name=value`.
    pub text: String,
}

/// The events and spans (every level) of the thread that installed it, as
/// long as its [`CaptureGuard`] lives. Tests that capture run on a
/// current-thread runtime, so that everything they cause happens on their
/// thread.
///
/// The subscriber is global, installed once, and files each event under
/// the thread that emitted it. A scoped subscriber per test (`set_default`)
/// loses events when tests run in parallel: tracing caches each call
/// site's interest (and the maximum level) across threads, and a call site
/// first reached by a test without a subscriber is cached as disabled.
/// A test binary using `Capture` must therefore not set another global
/// subscriber.
///
/// # Examples
///
/// ```
/// use ratelimit_testkit::Capture;
/// use tracing::Level;
///
/// let (logs, guard) = Capture::install();
/// tracing::warn!(errors = 3, "store down");
/// tracing::debug!("still down");
/// assert_eq!(logs.events(Level::WARN), ["store down errors=3"]);
/// assert_eq!(logs.all().len(), 2);
///
/// logs.clear();
/// drop(guard);
/// tracing::warn!("not captured");
/// assert!(logs.all().is_empty());
/// ```
#[derive(Debug, Clone, Default)]
pub struct Capture(Arc<Mutex<Vec<Captured>>>);

thread_local! {
    /// The capture of this thread's events, while a guard lives.
    static CURRENT: RefCell<Option<Capture>> = const { RefCell::new(None) };
}

/// Stops capturing this thread's events when dropped.
///
/// # Examples
///
/// ```
/// let (logs, guard) = ratelimit_testkit::Capture::install();
/// drop(guard);
/// tracing::error!("after the guard");
/// assert!(logs.all().is_empty());
/// ```
#[derive(Debug)]
#[must_use = "the capture stops when the guard is dropped"]
pub struct CaptureGuard(());

impl Drop for CaptureGuard {
    fn drop(&mut self) {
        CURRENT.with(|current| *current.borrow_mut() = None);
    }
}

impl Capture {
    /// Captures this thread's events and spans until the guard is dropped,
    /// installing the global subscriber on first use.
    ///
    /// # Panics
    ///
    /// When another global subscriber was set in this process.
    ///
    /// # Examples
    ///
    /// ```
    /// let (logs, _guard) = ratelimit_testkit::Capture::install();
    /// let other = std::thread::spawn(|| tracing::warn!("another thread"));
    /// other.join().unwrap();
    /// assert!(logs.all().is_empty(), "only this thread's events");
    /// ```
    pub fn install() -> (Self, CaptureGuard) {
        static GLOBAL: Once = Once::new();
        GLOBAL.call_once(|| {
            tracing::subscriber::set_global_default(
                tracing_subscriber::registry().with(ThreadCapture),
            )
            .expect("no other global subscriber in the tests");
        });
        let capture = Self::default();
        CURRENT.with(|current| *current.borrow_mut() = Some(capture.clone()));
        (capture, CaptureGuard(()))
    }

    /// Everything captured so far, in order: events and spans.
    ///
    /// # Examples
    ///
    /// ```
    /// let (logs, _guard) = ratelimit_testkit::Capture::install();
    /// let _span = tracing::info_span!("check", cost = 2).entered();
    /// assert_eq!(logs.all()[0].name, "check");
    /// assert_eq!(logs.all()[0].text, " cost=2");
    /// ```
    #[must_use]
    pub fn all(&self) -> Vec<Captured> {
        self.lock().clone()
    }

    /// The text of each event at `level`, in order (spans left out).
    ///
    /// # Examples
    ///
    /// ```
    /// use tracing::Level;
    /// let (logs, _guard) = ratelimit_testkit::Capture::install();
    /// tracing::info!(peer = %"192.0.2.1", "connected");
    /// assert_eq!(logs.events(Level::INFO), ["connected peer=192.0.2.1"]);
    /// assert!(logs.events(Level::WARN).is_empty());
    /// ```
    #[must_use]
    pub fn events(&self, level: Level) -> Vec<String> {
        self.lock()
            .iter()
            .filter(|c| c.name == "event" && c.level == level)
            .map(|c| c.text.clone())
            .collect()
    }

    /// Forgets what was captured so far; capturing goes on.
    ///
    /// # Examples
    ///
    /// ```
    /// let (logs, _guard) = ratelimit_testkit::Capture::install();
    /// tracing::warn!("before");
    /// logs.clear();
    /// tracing::warn!("after");
    /// assert_eq!(logs.events(tracing::Level::WARN), ["after"]);
    /// ```
    pub fn clear(&self) {
        self.lock().clear();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Captured>> {
        // A test that panicked while holding the lock left whole entries:
        // what it captured is still worth showing.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn push(&self, level: Level, name: String, record: impl FnOnce(&mut Text<'_>)) {
        let mut text = String::new();
        record(&mut Text(&mut text));
        self.lock().push(Captured { level, name, text });
    }
}

/// Writes the message, then every other field as ` name=value`.
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

/// The global layer: hands each event and span to the capture of the
/// thread it happens on, if any.
struct ThreadCapture;

impl ThreadCapture {
    fn with(f: impl FnOnce(&Capture)) {
        CURRENT.with(|current| {
            if let Some(capture) = current.borrow().as_ref() {
                f(capture);
            }
        });
    }
}

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for ThreadCapture {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        Self::with(|capture| {
            capture.push(*event.metadata().level(), "event".into(), |text| {
                event.record(text);
            });
        });
    }

    fn on_new_span(&self, attrs: &Attributes<'_>, _id: &Id, _ctx: Context<'_, S>) {
        Self::with(|capture| {
            let metadata = attrs.metadata();
            capture.push(*metadata.level(), metadata.name().into(), |text| {
                attrs.record(text);
            });
        });
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        Self::with(|capture| {
            let name = ctx.span(id).map_or("?", |s| s.name());
            capture.push(Level::TRACE, format!("{name} (recorded)"), |text| {
                values.record(text);
            });
        });
    }
}
