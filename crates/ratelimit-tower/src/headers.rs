//! The rate-limit header fields written on limited responses.

use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue, RETRY_AFTER};
use ratelimit_core::{Decision, Policy};

use crate::digits;

const RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");
const X_LIMIT: HeaderName = HeaderName::from_static("x-ratelimit-limit");
const X_REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining");
const X_RESET: HeaderName = HeaderName::from_static("x-ratelimit-reset");

/// A duration in whole seconds, rounded **up**: a 300 ms wait is `1`,
/// never `0`, so a client that waits that long is not refused again.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use ratelimit_tower::ceil_seconds;
///
/// assert_eq!(ceil_seconds(Duration::from_millis(300)), 1);
/// assert_eq!(ceil_seconds(Duration::from_secs(30)), 30);
/// assert_eq!(ceil_seconds(Duration::from_micros(30_000_001)), 31);
/// assert_eq!(ceil_seconds(Duration::ZERO), 0);
/// ```
#[must_use]
pub const fn ceil_seconds(d: Duration) -> u64 {
    d.as_secs() + (d.subsec_nanos() > 0) as u64
}

/// Writes the rate-limit fields of a [`Decision`]:
///
/// | field | example | meaning |
/// |---|---|---|
/// | `RateLimit-Policy` | `"default";q=5;w=30` | quota `q` per window `w` seconds (IETF draft) |
/// | `RateLimit` | `"default";r=4;t=30` | `r` remaining; `t`, the seconds until the quota resets (below) |
/// | `X-RateLimit-Limit` | `5` | the quota |
/// | `X-RateLimit-Remaining` | `4` | what is left |
/// | `X-RateLimit-Reset` | `30` | the same `t` |
/// | `Retry-After` | `30` | denials only: seconds until the same request fits |
///
/// `t` is the time until the quota resets in the policy's own terms, and
/// never more than its `w`:
///
/// - **fixed window**: the end of the current window, when the whole
///   quota is back;
/// - **sliding window**: the end of the current window, when the count
///   taken in it starts to expire (it then weighs less and less over the
///   next window); the previous window no longer counts from then on;
/// - **token bucket**: the time until the bucket is full again (`w` is
///   the time an empty bucket takes to fill).
///
/// On a denial `t` is at most the `Retry-After`, as the draft asks. Every
/// duration is rounded up to whole seconds ([`ceil_seconds`]). The
/// reasoning is in the workspace's `docs/semantics.md`, "What the
/// RateLimit header's t means".
///
/// Either family can be turned off
/// ([`with_ietf_fields`](Self::with_ietf_fields),
/// [`with_legacy_fields`](Self::with_legacy_fields)): each field costs
/// every response its bytes and the client its parsing (`BENCHMARKS.md`
/// measures it). `Retry-After` is written on denials whatever the choice.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use http::HeaderMap;
/// use ratelimit_core::{Decision, Policy};
/// use ratelimit_tower::RateLimitHeaders;
///
/// let policy = Policy::fixed_window(5, Duration::from_secs(30)).unwrap();
/// let mut headers = HeaderMap::new();
/// let denied = Decision::denied(5, 0, Duration::from_millis(12_300), Duration::from_millis(12_300));
/// RateLimitHeaders::new("default").write(&mut headers, &denied, &[policy]);
///
/// assert_eq!(headers["ratelimit-policy"], r#""default";q=5;w=30"#);
/// assert_eq!(headers["ratelimit"], r#""default";r=0;t=13"#);
/// assert_eq!(headers["x-ratelimit-limit"], "5");
/// assert_eq!(headers["x-ratelimit-remaining"], "0");
/// assert_eq!(headers["x-ratelimit-reset"], "13");
/// assert_eq!(headers["retry-after"], "13");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimitHeaders {
    /// The policy name as a structured-field string, quotes included.
    quoted_name: String,
    /// `RateLimit-Policy` and `RateLimit`.
    ietf: bool,
    /// `X-RateLimit-Limit`, `X-RateLimit-Remaining`, `X-RateLimit-Reset`.
    legacy: bool,
}

/// What the layer derives once from the limiter's policies, rather than
/// per response: they do not change.
#[derive(Debug, Clone)]
pub(crate) struct PolicyFields {
    /// `RateLimit-Policy`; `None` when the limiter names no policy.
    header: Option<HeaderValue>,
    /// The policy a decision describes (the first), which says how to read
    /// its `reset_after` as a `t`.
    first: Option<Policy>,
    /// `X-RateLimit-Limit` of the first policy, the limit of nearly every
    /// decision; cloning it allocates nothing where formatting a limit
    /// of 1000 or more would.
    limit: Option<HeaderValue>,
}

impl PolicyFields {
    /// `X-RateLimit-Limit: limit`.
    fn limit_value(&self, limit: u64) -> HeaderValue {
        match (&self.limit, &self.first) {
            (Some(value), Some(first)) if first.limit() == limit => value.clone(),
            _ => digits::value(limit),
        }
    }
}

impl Default for RateLimitHeaders {
    fn default() -> Self {
        Self::new("default")
    }
}

impl RateLimitHeaders {
    /// Headers naming the policy `name`. The name is written as a
    /// structured-field string: `"` and `\` are escaped and characters
    /// outside printable ASCII are dropped, since the field cannot carry
    /// them.
    ///
    /// # Examples
    ///
    /// ```
    /// use ratelimit_tower::RateLimitHeaders;
    /// assert_eq!(RateLimitHeaders::new(r#"per "ip""#).quoted_name(), r#""per \"ip\"""#);
    /// ```
    #[must_use]
    pub fn new(name: &str) -> Self {
        let mut quoted_name = String::with_capacity(name.len() + 2);
        quoted_name.push('"');
        for c in name.chars().filter(|c| (' '..='~').contains(c)) {
            if c == '"' || c == '\\' {
                quoted_name.push('\\');
            }
            quoted_name.push(c);
        }
        quoted_name.push('"');
        Self {
            quoted_name,
            ietf: true,
            legacy: true,
        }
    }

    /// Whether responses carry the IETF draft's `RateLimit-Policy` and
    /// `RateLimit` fields; on by default.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use ratelimit_core::Decision;
    /// use ratelimit_tower::RateLimitHeaders;
    ///
    /// let legacy_only = RateLimitHeaders::default().with_ietf_fields(false);
    /// let mut headers = http::HeaderMap::new();
    /// legacy_only.write(&mut headers, &Decision::allowed(5, 4, Duration::from_secs(30)), &[]);
    /// assert_eq!(headers["x-ratelimit-remaining"], "4");
    /// assert!(headers.get("ratelimit").is_none());
    /// assert!(!legacy_only.ietf_fields());
    /// ```
    #[must_use]
    pub fn with_ietf_fields(mut self, on: bool) -> Self {
        self.ietf = on;
        self
    }

    /// Whether responses carry `X-RateLimit-Limit`, `X-RateLimit-Remaining`
    /// and `X-RateLimit-Reset`, the fields many clients read today; on by
    /// default. Off, a response carries the draft's two fields, which say
    /// the same (and the window) in fewer bytes.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use ratelimit_core::{Decision, Policy};
    /// use ratelimit_tower::RateLimitHeaders;
    ///
    /// let policy = Policy::fixed_window(5, Duration::from_secs(30)).unwrap();
    /// let ietf_only = RateLimitHeaders::default().with_legacy_fields(false);
    /// let mut headers = http::HeaderMap::new();
    /// let denied = Decision::denied(5, 0, Duration::from_secs(9), Duration::from_secs(9));
    /// ietf_only.write(&mut headers, &denied, &[policy]);
    /// assert_eq!(headers.len(), 3);
    /// assert_eq!(headers["ratelimit-policy"], r#""default";q=5;w=30"#);
    /// assert_eq!(headers["ratelimit"], r#""default";r=0;t=9"#);
    /// assert_eq!(headers["retry-after"], "9");
    /// assert!(!ietf_only.legacy_fields());
    /// ```
    #[must_use]
    pub fn with_legacy_fields(mut self, on: bool) -> Self {
        self.legacy = on;
        self
    }

    /// Whether the IETF draft's two fields are written.
    #[must_use]
    pub fn ietf_fields(&self) -> bool {
        self.ietf
    }

    /// Whether the three `X-RateLimit-*` fields are written.
    #[must_use]
    pub fn legacy_fields(&self) -> bool {
        self.legacy
    }

    /// The policy name as written in the fields, quotes included.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(ratelimit_tower::RateLimitHeaders::default().quoted_name(), r#""default""#);
    /// ```
    #[must_use]
    pub fn quoted_name(&self) -> &str {
        &self.quoted_name
    }

    /// Writes the fields of `decision` into `headers`, replacing any there.
    /// `policies` are the limiter's; the decision describes the first.
    /// Further policies are listed in `RateLimit-Policy` under the name
    /// with `-2`, `-3`, ... appended.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use ratelimit_core::{Decision, Policy};
    /// use ratelimit_tower::RateLimitHeaders;
    ///
    /// let mut headers = http::HeaderMap::new();
    /// let allowed = Decision::allowed(5, 4, Duration::from_secs(30));
    /// RateLimitHeaders::default().write(&mut headers, &allowed, &[]);
    /// assert_eq!(headers["ratelimit"], r#""default";r=4;t=30"#);
    /// assert!(headers.get("retry-after").is_none());
    /// assert!(headers.get("ratelimit-policy").is_none(), "no policy to describe");
    ///
    /// // A sliding window is full again only at the end of the next
    /// // window (45 s here); `t` is the end of the current one.
    /// let sliding = Policy::sliding_window(5, Duration::from_secs(30)).unwrap();
    /// let allowed = Decision::allowed(5, 4, Duration::from_secs(45));
    /// RateLimitHeaders::default().write(&mut headers, &allowed, &[sliding]);
    /// assert_eq!(headers["ratelimit"], r#""default";r=4;t=15"#);
    /// assert_eq!(headers["x-ratelimit-reset"], "15");
    /// ```
    pub fn write(&self, headers: &mut HeaderMap, decision: &Decision, policies: &[Policy]) {
        self.write_decision(headers, decision, &self.policy_fields(policies));
    }

    /// [`write`](Self::write) with the policy fields derived beforehand.
    pub(crate) fn write_decision(
        &self,
        headers: &mut HeaderMap,
        decision: &Decision,
        policy: &PolicyFields,
    ) {
        let reset = ceil_seconds(reset(decision, policy.first.as_ref()));
        if self.ietf {
            if let Some(value) = &policy.header {
                headers.insert(RATELIMIT_POLICY, value.clone());
            }
            headers.insert(RATELIMIT, self.ratelimit_value(decision.remaining, reset));
        }
        if self.legacy {
            headers.insert(X_LIMIT, policy.limit_value(decision.limit));
            headers.insert(X_REMAINING, digits::value(decision.remaining));
            headers.insert(X_RESET, digits::value(reset));
        }
        match decision.retry_after {
            Some(wait) => write_retry_after(headers, wait),
            None => {
                headers.remove(RETRY_AFTER);
            }
        }
    }

    /// The `RateLimit` field: `"name";r=remaining;t=reset`, written into
    /// one buffer of its exact size (one allocation; `format!` and a copy
    /// into the value took several).
    fn ratelimit_value(&self, remaining: u64, reset: u64) -> HeaderValue {
        let mut r = itoa::Buffer::new();
        let r = r.format(remaining).as_bytes();
        let mut t = itoa::Buffer::new();
        let t = t.format(reset).as_bytes();
        let mut value = Vec::with_capacity(self.quoted_name.len() + 6 + r.len() + t.len());
        value.extend_from_slice(self.quoted_name.as_bytes());
        value.extend_from_slice(b";r=");
        value.extend_from_slice(r);
        value.extend_from_slice(b";t=");
        value.extend_from_slice(t);
        // A vector as long as its capacity becomes `Bytes` without a copy.
        HeaderValue::from_maybe_shared(Bytes::from(value))
            .expect("rate-limit fields are printable ASCII")
    }

    /// Only what the policy says, not the key's state: `RateLimit-Policy`
    /// and `X-RateLimit-Limit`. For a request whose cost can never fit,
    /// where the limiter read no state to report.
    pub(crate) fn write_policy(&self, headers: &mut HeaderMap, policy: &PolicyFields) {
        if let (true, Some(value)) = (self.ietf, &policy.header) {
            headers.insert(RATELIMIT_POLICY, value.clone());
        }
        if let (true, Some(first)) = (self.legacy, &policy.first) {
            headers.insert(X_LIMIT, policy.limit_value(first.limit()));
        }
    }

    /// The fields of `policies` that every response shares.
    pub(crate) fn policy_fields(&self, policies: &[Policy]) -> PolicyFields {
        let first = policies.first().copied();
        PolicyFields {
            header: self.policy_value(policies),
            first,
            limit: first.map(|first| digits::value(first.limit())),
        }
    }

    /// The `RateLimit-Policy` value of `policies`; `None` when there are
    /// none to describe.
    fn policy_value(&self, policies: &[Policy]) -> Option<HeaderValue> {
        if policies.is_empty() {
            return None;
        }
        let mut value = String::new();
        for (i, policy) in policies.iter().enumerate() {
            if i > 0 {
                value.push_str(", ");
            }
            let name = if i == 0 {
                self.quoted_name.clone()
            } else {
                format!(
                    "{}-{}\"",
                    &self.quoted_name[..self.quoted_name.len() - 1],
                    i + 1
                )
            };
            value.push_str(&format!(
                "{name};q={};w={}",
                policy.limit(),
                ceil_seconds(policy.window())
            ));
        }
        Some(text(&value))
    }
}

/// `Retry-After: wait`, in whole seconds rounded up and at least `1`: `0`
/// would invite the client to retry at once and be refused again.
pub(crate) fn write_retry_after(headers: &mut HeaderMap, wait: Duration) {
    headers.insert(RETRY_AFTER, digits::value(ceil_seconds(wait).max(1)));
}

/// The `t` of the `RateLimit` field (and `X-RateLimit-Reset`): the time
/// until the quota resets in `policy`'s terms, never past its window, and
/// never past the decision's `retry_after`.
///
/// A decision's `reset_after` is the time until the key is entirely full
/// (see `Decision::reset_after`). That is the reset of a fixed window and of a token
/// bucket. A sliding window is entirely full only at the end of the
/// **next** window (its current count decays over that one), up to two
/// windows away, so its `t` is the end of the current window, read back
/// from `reset_after` with the sliding window's formula: `reset_after` is the
/// end of the next window when the current count is not zero, which is
/// exactly when it exceeds one window; otherwise it is the end of this
/// window (or zero).
pub(crate) fn reset(decision: &Decision, policy: Option<&Policy>) -> Duration {
    let full = decision.reset_after;
    let reset = match policy {
        Some(Policy::SlidingWindow(p)) => {
            let window = p.window();
            let end = full.checked_sub(window).filter(|end| !end.is_zero());
            // The cap only matters after the clock went back before the
            // stored window, where `reset_after` counts from the earlier
            // instant.
            end.unwrap_or(full).min(window)
        }
        // Fixed windows, token buckets, and any policy added later:
        // `reset_after` is the time to a full quota, the natural reset.
        _ => full,
    };
    // The draft: Retry-After SHOULD NOT point earlier than `t`. A denied
    // cost fits after `retry_after`, which for a sliding window can come
    // before the window's end (the previous window decays) and for a
    // token bucket comes before the bucket is full.
    match decision.retry_after {
        Some(wait) => reset.min(wait),
        None => reset,
    }
}

/// A header value of text built from printable ASCII only.
fn text(s: &str) -> HeaderValue {
    // The name is filtered to printable ASCII and the rest are digits and
    // punctuation, which are always valid in a header value.
    HeaderValue::from_str(s).expect("rate-limit fields are printable ASCII")
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    fn sliding() -> Policy {
        Policy::sliding_window(5, 30 * S).unwrap()
    }

    #[test]
    fn fixed_window_and_token_bucket_reset_when_full() {
        let fixed = Policy::fixed_window(5, 30 * S).unwrap();
        let bucket = Policy::token_bucket(5, 1, 6 * S).unwrap();
        let allowed = Decision::allowed(5, 3, 12 * S);
        assert_eq!(reset(&allowed, Some(&fixed)), 12 * S);
        assert_eq!(reset(&allowed, Some(&bucket)), 12 * S);
        assert_eq!(reset(&allowed, None), 12 * S);
    }

    #[test]
    fn sliding_window_resets_at_the_end_of_the_current_window() {
        // Current count > 0: full at the end of the next window.
        let allowed = Decision::allowed(5, 4, 58 * S);
        assert_eq!(reset(&allowed, Some(&sliding())), 28 * S);
        // Exactly two windows away (taken at the window's first instant).
        let allowed = Decision::allowed(5, 4, 60 * S);
        assert_eq!(reset(&allowed, Some(&sliding())), 30 * S);
        // Only the previous window counts: full at the end of this one.
        let peek = Decision::allowed(5, 2, 7 * S);
        assert_eq!(reset(&peek, Some(&sliding())), 7 * S);
        // Exactly one window away: only the previous window counts, read
        // at this window's first instant (a current count would put the
        // reset past one window).
        let start = Decision::allowed(5, 2, 30 * S);
        assert_eq!(reset(&start, Some(&sliding())), 30 * S);
        // Clock went back: never past one window.
        let back = Decision::allowed(5, 4, 95 * S);
        assert_eq!(reset(&back, Some(&sliding())), 30 * S);
        assert_eq!(
            reset(&Decision::allowed(5, 5, Duration::ZERO), Some(&sliding())),
            Duration::ZERO
        );
    }

    #[test]
    fn a_denial_resets_no_later_than_its_retry_after() {
        let denied = Decision::denied(5, 0, 50 * S, 3 * S);
        assert_eq!(reset(&denied, Some(&sliding())), 3 * S);
        let denied = Decision::denied(5, 0, 50 * S, 25 * S);
        assert_eq!(reset(&denied, Some(&sliding())), 20 * S);
        let bucket = Policy::token_bucket(5, 1, 6 * S).unwrap();
        let denied = Decision::denied(5, 0, 30 * S, 6 * S);
        assert_eq!(reset(&denied, Some(&bucket)), 6 * S);
    }
}
