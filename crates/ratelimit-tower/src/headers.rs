//! The rate-limit header fields written on limited responses.

use std::time::Duration;

use http::header::{HeaderMap, HeaderName, HeaderValue, RETRY_AFTER};
use ratelimit_core::{Decision, Policy};

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
/// | `RateLimit` | `"default";r=4;t=30` | `r` remaining, full again in `t` seconds (IETF draft) |
/// | `X-RateLimit-Limit` | `5` | the quota |
/// | `X-RateLimit-Remaining` | `4` | what is left |
/// | `X-RateLimit-Reset` | `30` | seconds until the quota is full again |
/// | `Retry-After` | `30` | denials only: seconds until the same request fits |
///
/// Every duration is rounded up to whole seconds ([`ceil_seconds`]). A
/// token bucket's `w` is the time an empty bucket takes to fill.
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
}

/// What the layer derives once from the limiter's policies, rather than
/// per response: they do not change.
#[derive(Debug, Clone)]
pub(crate) struct PolicyFields {
    /// `RateLimit-Policy`; `None` when the limiter names no policy.
    header: Option<HeaderValue>,
    /// The policy a decision describes (the first).
    first: Option<Policy>,
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
        Self { quoted_name }
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
        let reset = ceil_seconds(decision.reset_after);
        if let Some(value) = &policy.header {
            headers.insert(RATELIMIT_POLICY, value.clone());
        }
        headers.insert(
            RATELIMIT,
            text(&format!(
                "{};r={};t={reset}",
                self.quoted_name, decision.remaining
            )),
        );
        headers.insert(X_LIMIT, HeaderValue::from(decision.limit));
        headers.insert(X_REMAINING, HeaderValue::from(decision.remaining));
        headers.insert(X_RESET, HeaderValue::from(reset));
        match decision.retry_after {
            Some(wait) => write_retry_after(headers, wait),
            None => {
                headers.remove(RETRY_AFTER);
            }
        }
    }

    /// Only what the policy says, not the key's state: `RateLimit-Policy`
    /// and `X-RateLimit-Limit`. For a request whose cost can never fit,
    /// where the limiter read no state to report.
    pub(crate) fn write_policy(&self, headers: &mut HeaderMap, policy: &PolicyFields) {
        if let Some(value) = &policy.header {
            headers.insert(RATELIMIT_POLICY, value.clone());
        }
        if let Some(first) = &policy.first {
            headers.insert(X_LIMIT, HeaderValue::from(first.limit()));
        }
    }

    /// The fields of `policies` that every response shares.
    pub(crate) fn policy_fields(&self, policies: &[Policy]) -> PolicyFields {
        PolicyFields {
            header: self.policy_value(policies),
            first: policies.first().copied(),
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
    headers.insert(RETRY_AFTER, HeaderValue::from(ceil_seconds(wait).max(1)));
}

/// A header value of text built from printable ASCII only.
fn text(s: &str) -> HeaderValue {
    // The name is filtered to printable ASCII and the rest are digits and
    // punctuation, which are always valid in a header value.
    HeaderValue::from_str(s).expect("rate-limit fields are printable ASCII")
}
