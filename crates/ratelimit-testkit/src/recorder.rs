//! A metrics recorder for tests, read back by name and labels.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};
use metrics_util::registry::{AtomicStorage, Registry};

/// A metrics recorder whose values can be read any number of times (the
/// debugging recorder of `metrics-util` resets what it reports). Install it
/// for a thread or a closure with `metrics::set_default_local_recorder` or
/// `metrics::with_local_recorder`; a limiter registers its handles when it
/// is built, so build it while the recorder is installed.
///
/// A series is found by its name and its exact label set.
///
/// # Examples
///
/// ```
/// use ratelimit_testkit::TestRecorder;
///
/// let recorder = TestRecorder::default();
/// metrics::with_local_recorder(&recorder, || {
///     metrics::counter!("calls_total", "result" => "ok").increment(2);
///     metrics::gauge!("state").set(1.0);
///     metrics::histogram!("batch_size").record(3.0);
/// });
/// assert_eq!(recorder.counter("calls_total", &[("result", "ok")]), 2);
/// assert_eq!(recorder.counter("calls_total", &[("result", "error")]), 0);
/// assert_eq!(recorder.gauge("state"), 1.0);
/// assert_eq!(recorder.histogram("batch_size", &[]), [3.0]);
/// ```
#[derive(Debug)]
pub struct TestRecorder(Registry<Key, AtomicStorage>);

impl Default for TestRecorder {
    fn default() -> Self {
        Self(Registry::atomic())
    }
}

/// Whether `key` is `name` with exactly `labels` (in any order).
fn matches(key: &Key, name: &str, labels: &[(&str, &str)]) -> bool {
    key.name() == name
        && key.labels().count() == labels.len()
        && labels
            .iter()
            .all(|(k, v)| key.labels().any(|l| l.key() == *k && l.value() == *v))
}

impl TestRecorder {
    /// A counter's value; 0 when never registered.
    ///
    /// # Examples
    ///
    /// ```
    /// let recorder = ratelimit_testkit::TestRecorder::default();
    /// assert_eq!(recorder.counter("never_total", &[]), 0);
    /// ```
    #[must_use]
    pub fn counter(&self, name: &str, labels: &[(&str, &str)]) -> u64 {
        self.0
            .get_counter_handles()
            .into_iter()
            .find(|(key, _)| matches(key, name, labels))
            .map_or(0, |(_, c)| c.load(Ordering::SeqCst))
    }

    /// The value of gauge `name` (without labels).
    ///
    /// # Panics
    ///
    /// When no such gauge was registered: a gauge has no meaningful
    /// default.
    ///
    /// # Examples
    ///
    /// ```
    /// let recorder = ratelimit_testkit::TestRecorder::default();
    /// metrics::with_local_recorder(&recorder, || metrics::gauge!("keys").set(7.0));
    /// assert_eq!(recorder.gauge("keys"), 7.0);
    /// ```
    #[must_use]
    pub fn gauge(&self, name: &str) -> f64 {
        self.0
            .get_gauge_handles()
            .into_iter()
            .find(|(key, _)| matches(key, name, &[]))
            .map(|(_, g)| f64::from_bits(g.load(Ordering::SeqCst)))
            .unwrap_or_else(|| panic!("no gauge {name}"))
    }

    /// A histogram's values, in the order recorded; empty when never
    /// registered.
    ///
    /// # Examples
    ///
    /// ```
    /// let recorder = ratelimit_testkit::TestRecorder::default();
    /// metrics::with_local_recorder(&recorder, || {
    ///     metrics::histogram!("seconds", "policy" => "gcra").record(0.5);
    /// });
    /// assert_eq!(recorder.histogram("seconds", &[("policy", "gcra")]), [0.5]);
    /// assert!(recorder.histogram("seconds", &[]).is_empty());
    /// ```
    #[must_use]
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
