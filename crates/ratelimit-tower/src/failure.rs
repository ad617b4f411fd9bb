//! What the layer does when the limiter cannot decide.

/// What happens to a request when the limiter returns a backend error or
/// times out.
///
/// Either way the error is logged with `tracing` and the request never
/// panics or waits past the layer's check timeout.
///
/// # Examples
///
/// ```
/// use ratelimit_tower::FailureMode;
///
/// assert_eq!(FailureMode::default(), FailureMode::Closed);
/// assert_ne!(FailureMode::Open, FailureMode::Closed);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FailureMode {
    /// Let the request through, without rate-limit headers: availability
    /// over protection.
    Open,
    /// Answer `503 Service Unavailable` with a short plain-text body:
    /// protection over availability. The default, because a limit usually
    /// guards something costly.
    #[default]
    Closed,
}
