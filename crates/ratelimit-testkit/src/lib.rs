//! Test support shared by the tests of the ratelimit crates (unpublished,
//! a dev-dependency only).
//!
//! - [`Capture`]: the log events and spans of the current thread, from a
//!   global subscriber installed once, so tests running in parallel each
//!   see their own events and none is lost.
//! - [`TestRecorder`]: a `metrics` recorder whose values can be read back
//!   any number of times.

mod logs;
mod recorder;

pub use logs::{Capture, CaptureGuard, Captured};
pub use recorder::TestRecorder;
