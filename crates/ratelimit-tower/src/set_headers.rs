//! The rate-limit header fields of a policy set: every policy in one
//! `RateLimit-Policy` and one `RateLimit` field, the OpenAI-style
//! per-resource fields, and the set's `Retry-After`.

use std::fmt::Write as _;
use std::time::Duration;

use http::header::{HeaderMap, HeaderName, HeaderValue, RETRY_AFTER};
use ratelimit_core::{ConfigError, Decision, Limit, PolicySet, SetDecision};

use crate::ceil_seconds;

const RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");

/// The quota unit the draft assumes when `qu` is absent.
const DEFAULT_UNIT: &str = "requests";

/// Writes the rate-limit fields of a [`SetDecision`], one entry per policy
/// of the set (IETF `draft-ietf-httpapi-ratelimit-headers-08`, plus the
/// fields OpenAI's API writes):
///
/// | field | example |
/// |---|---|
/// | `RateLimit-Policy` | `"requests";q=5;w=30, "tokens";q=20000;w=60;qu="tokens", "streams";q=2;qu="concurrent-requests"` |
/// | `RateLimit` | `"requests";r=4;t=30, "tokens";r=18500;t=60, "streams";r=1` |
/// | `x-ratelimit-limit-requests`, `x-ratelimit-remaining-requests`, `x-ratelimit-reset-requests` | `5`, `4`, `30s` |
/// | `x-ratelimit-limit-tokens`, `x-ratelimit-remaining-tokens`, `x-ratelimit-reset-tokens` | `20000`, `18500`, `1m0s` |
/// | `Retry-After` | denials only: the set's exact wait in whole seconds, rounded up |
///
/// - `q` is the policy's limit, `w` its window in seconds (rounded up; for
///   a token bucket the time an empty bucket takes to fill); a concurrency
///   policy has no window, so no `w`, and its `RateLimit` item no `t`
///   (its slots come back when streams end, not at a time).
/// - `qu` is the quota unit, a structured-field string: omitted for the
///   draft's default `"requests"`, `"concurrent-requests"` for a
///   concurrency policy, `"tokens"` for a policy named `tokens`, or what
///   [`with_quota_unit`](Self::with_quota_unit) sets.
/// - `t` reads each policy's reset in its own terms, exactly as
///   [`RateLimitHeaders`](crate::RateLimitHeaders) does for one policy (a
///   sliding window resets at the end of its current window), and is never
///   past the policy's own wait when it denied.
/// - The OpenAI fields are written for the policies given an OpenAI
///   resource name: by default a policy named `requests` or `tokens` is
///   that resource ([`with_openai_resource`](Self::with_openai_resource)
///   changes it). Their reset is a duration written as OpenAI writes it
///   (`20ms`, `1s`, `6m0s`, `1h0m0s`), rounded up to the millisecond.
///
/// The policy names and units are validated once, when built, so writing
/// a decision allocates only the field values.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use http::HeaderMap;
/// use ratelimit_core::{Concurrency, Decision, NamedLimit, Policy, PolicySet, SetDecision};
/// use ratelimit_tower::SetHeaders;
///
/// let set = PolicySet::new(vec![
///     NamedLimit::new("requests", Policy::fixed_window(5, Duration::from_secs(30)).unwrap()).unwrap(),
///     NamedLimit::new("tokens", Policy::fixed_window(20_000, Duration::from_secs(60)).unwrap())
///         .unwrap()
///         .settling(),
///     NamedLimit::new("streams", Concurrency::new(2, Duration::from_secs(30)).unwrap()).unwrap(),
/// ]).unwrap();
/// let headers = SetHeaders::new(&set);
/// let decision = SetDecision::from_decisions([
///     Decision::allowed(5, 4, Duration::from_secs(30)),
///     Decision::denied(20_000, 100, Duration::from_millis(11_200), Duration::from_millis(11_200)),
///     Decision::allowed(2, 1, Duration::from_secs(30)),
/// ]);
/// let mut fields = HeaderMap::new();
/// headers.write(&mut fields, &decision);
/// assert_eq!(
///     fields["ratelimit-policy"],
///     r#""requests";q=5;w=30, "tokens";q=20000;w=60;qu="tokens", "streams";q=2;qu="concurrent-requests""#
/// );
/// assert_eq!(fields["ratelimit"], r#""requests";r=4;t=30, "tokens";r=100;t=12, "streams";r=1"#);
/// assert_eq!(fields["x-ratelimit-remaining-tokens"], "100");
/// assert_eq!(fields["x-ratelimit-reset-tokens"], "11.2s");
/// assert_eq!(fields["retry-after"], "12");
/// ```
#[derive(Debug, Clone)]
pub struct SetHeaders {
    policies: Vec<PolicyFields>,
    /// `RateLimit-Policy`, the same on every response.
    policy_value: HeaderValue,
}

#[derive(Debug, Clone)]
struct PolicyFields {
    name: String,
    /// The name as a structured-field string, quotes included.
    quoted: String,
    limit: Limit,
    unit: Option<String>,
    /// The OpenAI resource (`requests` in `x-ratelimit-limit-requests`)
    /// and its three field names.
    openai: Option<OpenAiFields>,
}

#[derive(Debug, Clone)]
struct OpenAiFields {
    limit: HeaderName,
    remaining: HeaderName,
    reset: HeaderName,
}

impl OpenAiFields {
    fn new(resource: &str) -> Result<Self, ConfigError> {
        let name = |kind: &str| {
            HeaderName::from_bytes(format!("x-ratelimit-{kind}-{resource}").as_bytes()).map_err(
                |_| {
                    ConfigError::new(
                        "openai_resource",
                        format!("{resource:?} does not make a header name"),
                    )
                },
            )
        };
        let valid = !resource.is_empty()
            && resource
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !valid {
            return Err(ConfigError::new(
                "openai_resource",
                format!("{resource:?}: expected lowercase ASCII letters, digits and `-`"),
            ));
        }
        Ok(Self {
            limit: name("limit")?,
            remaining: name("remaining")?,
            reset: name("reset")?,
        })
    }
}

impl SetHeaders {
    /// The fields of `set`, with the default units and OpenAI resources
    /// (see the type's documentation).
    #[must_use]
    pub fn new(set: &PolicySet) -> Self {
        let policies = set
            .limits()
            .iter()
            .map(|l| {
                let unit = match (l.limit(), l.name()) {
                    (Limit::Concurrency(_), _) => Some("concurrent-requests".to_owned()),
                    (Limit::Rate(_), "tokens") => Some("tokens".to_owned()),
                    (Limit::Rate(_), _) => None,
                };
                let openai = match (l.limit(), l.name()) {
                    (Limit::Rate(_), name @ ("requests" | "tokens")) => {
                        // Both names are lowercase letters: valid.
                        OpenAiFields::new(name).ok()
                    }
                    _ => None,
                };
                PolicyFields {
                    name: l.name().to_owned(),
                    // Policy names are ASCII letters, digits, `_`, `-`
                    // and `.`: nothing to escape.
                    quoted: format!("\"{}\"", l.name()),
                    limit: l.limit(),
                    unit,
                    openai,
                }
            })
            .collect();
        let mut headers = Self {
            policies,
            policy_value: HeaderValue::from_static(""),
        };
        headers.policy_value = headers.policy_field();
        headers
    }

    /// These fields with the policy named `policy` counted in `unit` (its
    /// `qu`): one of the draft's `"requests"`, `"content-bytes"`,
    /// `"concurrent-requests"`, or a unit of the service's own such as
    /// `"tokens"`. `"requests"` is the draft's default and is not written.
    ///
    /// # Errors
    ///
    /// When the set has no such policy, or `unit` is empty or holds more
    /// than ASCII letters, digits and `-`.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use ratelimit_core::{NamedLimit, Policy, PolicySet};
    /// use ratelimit_tower::SetHeaders;
    ///
    /// let set = PolicySet::new(vec![
    ///     NamedLimit::new("upload", Policy::fixed_window(1_000_000, Duration::from_secs(60)).unwrap()).unwrap(),
    /// ]).unwrap();
    /// let headers = SetHeaders::new(&set).with_quota_unit("upload", "content-bytes").unwrap();
    /// assert_eq!(headers.policy_value(), r#""upload";q=1000000;w=60;qu="content-bytes""#);
    /// assert!(SetHeaders::new(&set).with_quota_unit("upload", "two words").is_err());
    /// ```
    pub fn with_quota_unit(mut self, policy: &str, unit: &str) -> Result<Self, ConfigError> {
        let valid =
            !unit.is_empty() && unit.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
        if !valid {
            return Err(ConfigError::new(
                "quota_unit",
                format!("{unit:?}: expected ASCII letters, digits and `-`"),
            ));
        }
        let p = self.policy_mut(policy)?;
        p.unit = (unit != DEFAULT_UNIT).then(|| unit.to_owned());
        self.policy_value = self.policy_field();
        Ok(self)
    }

    /// These fields with the policy named `policy` reported as OpenAI's
    /// `resource` (`x-ratelimit-limit-<resource>` and its remaining and
    /// reset fields), or as none with `None`. At most one policy should
    /// name a resource: a later one overwrites an earlier one's fields.
    ///
    /// # Errors
    ///
    /// When the set has no such policy, or the resource is not lowercase
    /// ASCII letters, digits and `-`.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use ratelimit_core::{Decision, NamedLimit, Policy, PolicySet, SetDecision};
    /// use ratelimit_tower::SetHeaders;
    ///
    /// let set = PolicySet::new(vec![
    ///     NamedLimit::new("rpm", Policy::fixed_window(60, Duration::from_secs(60)).unwrap()).unwrap(),
    /// ]).unwrap();
    /// let headers = SetHeaders::new(&set).with_openai_resource("rpm", Some("requests")).unwrap();
    /// let mut fields = http::HeaderMap::new();
    /// headers.write(&mut fields, &SetDecision::from_decisions([Decision::allowed(60, 59, Duration::from_secs(60))]));
    /// assert_eq!(fields["x-ratelimit-limit-requests"], "60");
    /// assert_eq!(fields["x-ratelimit-reset-requests"], "1m0s");
    /// ```
    pub fn with_openai_resource(
        mut self,
        policy: &str,
        resource: Option<&str>,
    ) -> Result<Self, ConfigError> {
        let fields = resource.map(OpenAiFields::new).transpose()?;
        self.policy_mut(policy)?.openai = fields;
        Ok(self)
    }

    fn policy_mut(&mut self, name: &str) -> Result<&mut PolicyFields, ConfigError> {
        self.policies
            .iter_mut()
            .find(|p| p.name == name)
            .ok_or_else(|| {
                ConfigError::new("name", format!("the set has no policy named {name:?}"))
            })
    }

    /// The `RateLimit-Policy` value, the same on every response.
    #[must_use]
    pub fn policy_value(&self) -> &HeaderValue {
        &self.policy_value
    }

    fn policy_field(&self) -> HeaderValue {
        let mut value = String::new();
        for (i, p) in self.policies.iter().enumerate() {
            if i > 0 {
                value.push_str(", ");
            }
            // Writing to a String cannot fail.
            let _ = write!(value, "{};q={}", p.quoted, p.limit.limit());
            if let Some(window) = p.limit.window() {
                let _ = write!(value, ";w={}", ceil_seconds(window));
            }
            if let Some(unit) = &p.unit {
                let _ = write!(value, ";qu=\"{unit}\"");
            }
        }
        text(&value)
    }

    /// Writes the fields of `decision` (one decision per policy, in set
    /// order, as the set's limiter returns it) into `headers`, replacing
    /// any there. `Retry-After` is written on a denial and removed
    /// otherwise.
    ///
    /// A decision with fewer decisions than the set has policies (it
    /// cannot come from this set's limiter) writes only the policies it
    /// covers.
    pub fn write(&self, headers: &mut HeaderMap, decision: &SetDecision) {
        headers.insert(RATELIMIT_POLICY, self.policy_value.clone());
        let mut value = String::new();
        for (i, (p, d)) in self
            .policies
            .iter()
            .zip(decision.decisions.iter())
            .enumerate()
        {
            if i > 0 {
                value.push_str(", ");
            }
            let _ = write!(value, "{};r={}", p.quoted, d.remaining);
            let reset = reset(d, &p.limit);
            if let Some(reset) = reset {
                let _ = write!(value, ";t={}", ceil_seconds(reset));
            }
            if let Some(openai) = &p.openai {
                headers.insert(openai.limit.clone(), HeaderValue::from(d.limit));
                headers.insert(openai.remaining.clone(), HeaderValue::from(d.remaining));
                headers.insert(
                    openai.reset.clone(),
                    text(&openai_duration(reset.unwrap_or(Duration::ZERO))),
                );
            }
        }
        headers.insert(RATELIMIT, text(&value));
        match decision.retry_after {
            Some(wait) => {
                headers.insert(RETRY_AFTER, HeaderValue::from(ceil_seconds(wait).max(1)));
            }
            None => {
                headers.remove(RETRY_AFTER);
            }
        }
    }
}

/// The `t` of one policy: `None` for a concurrency policy; for a rate
/// policy the time until its quota resets in its own terms (a sliding
/// window: the end of its current window, read back from `reset_after`),
/// never past its window nor its own `retry_after` when it denied.
///
/// Only the policy's own wait caps it: the set's `Retry-After` may come
/// from another policy, and a `requests` quota does not reset because the
/// `tokens` quota will admit again.
fn reset(decision: &Decision, limit: &Limit) -> Option<Duration> {
    match limit {
        // The same rule as a single policy's `t` (`headers::reset`).
        Limit::Rate(policy) => Some(crate::headers::reset(decision, Some(policy))),
        Limit::Concurrency(_) => None,
    }
}

/// A duration as OpenAI's `x-ratelimit-reset-*` fields write it (Go's
/// duration format), rounded up to whole milliseconds: `0s`, `20ms`,
/// `1s`, `11.2s`, `6m0s`, `1h0m0s`.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use ratelimit_tower::openai_duration;
///
/// assert_eq!(openai_duration(Duration::ZERO), "0s");
/// assert_eq!(openai_duration(Duration::from_micros(19_001)), "20ms");
/// assert_eq!(openai_duration(Duration::from_secs(1)), "1s");
/// assert_eq!(openai_duration(Duration::from_millis(11_200)), "11.2s");
/// assert_eq!(openai_duration(Duration::from_secs(360)), "6m0s");
/// assert_eq!(openai_duration(Duration::from_millis(3_723_450)), "1h2m3.45s");
/// ```
#[must_use]
pub fn openai_duration(d: Duration) -> String {
    let ms = d.as_nanos().div_ceil(1_000_000);
    if ms == 0 {
        return "0s".to_owned();
    }
    if ms < 1_000 {
        return format!("{ms}ms");
    }
    let (hours, rest) = (ms / 3_600_000, ms % 3_600_000);
    let (minutes, rest) = (rest / 60_000, rest % 60_000);
    let (seconds, millis) = (rest / 1_000, rest % 1_000);
    let mut out = String::new();
    if hours > 0 {
        let _ = write!(out, "{hours}h");
    }
    if hours > 0 || minutes > 0 {
        let _ = write!(out, "{minutes}m");
    }
    let _ = write!(out, "{seconds}");
    if millis > 0 {
        let fraction = format!("{millis:03}");
        let _ = write!(out, ".{}", fraction.trim_end_matches('0'));
    }
    out.push('s');
    out
}

/// A header value of text built from printable ASCII only.
fn text(s: &str) -> HeaderValue {
    // Names and units are validated to ASCII letters, digits and
    // punctuation; the rest are digits: always a valid header value.
    HeaderValue::from_str(s).expect("rate-limit fields are printable ASCII")
}

#[cfg(test)]
mod tests {
    use super::*;
    use ratelimit_core::{Concurrency, NamedLimit, Policy};

    const S: Duration = Duration::from_secs(1);

    fn gateway_set(tokens: Policy) -> PolicySet {
        PolicySet::new(vec![
            NamedLimit::new("requests", Policy::fixed_window(5, 30 * S).unwrap()).unwrap(),
            NamedLimit::new("tokens", tokens).unwrap().settling(),
            NamedLimit::new("streams", Concurrency::new(2, 30 * S).unwrap()).unwrap(),
        ])
        .unwrap()
    }

    fn written(headers: &SetHeaders, decision: &SetDecision) -> HeaderMap {
        let mut fields = HeaderMap::new();
        headers.write(&mut fields, decision);
        fields
    }

    #[test]
    fn an_allowed_set_lists_every_policy() {
        let set = gateway_set(Policy::token_bucket(20_000, 20_000, 60 * S).unwrap());
        let h = SetHeaders::new(&set);
        let d = SetDecision::from_decisions([
            Decision::allowed(5, 4, 30 * S),
            Decision::allowed(20_000, 18_500, Duration::from_millis(4_500)),
            Decision::allowed(2, 1, 30 * S),
        ]);
        let f = written(&h, &d);
        assert_eq!(
            f["ratelimit-policy"],
            r#""requests";q=5;w=30, "tokens";q=20000;w=60;qu="tokens", "streams";q=2;qu="concurrent-requests""#
        );
        assert_eq!(
            f["ratelimit"],
            r#""requests";r=4;t=30, "tokens";r=18500;t=5, "streams";r=1"#
        );
        assert_eq!(f["x-ratelimit-limit-requests"], "5");
        assert_eq!(f["x-ratelimit-remaining-requests"], "4");
        assert_eq!(f["x-ratelimit-reset-requests"], "30s");
        assert_eq!(f["x-ratelimit-limit-tokens"], "20000");
        assert_eq!(f["x-ratelimit-remaining-tokens"], "18500");
        assert_eq!(f["x-ratelimit-reset-tokens"], "4.5s");
        assert!(f.get("retry-after").is_none());
        assert!(f.get("x-ratelimit-limit-streams").is_none());
    }

    #[test]
    fn a_denied_set_waits_for_its_longest_denial() {
        let set = gateway_set(Policy::fixed_window(20_000, 60 * S).unwrap());
        let h = SetHeaders::new(&set);
        let d = SetDecision::from_decisions([
            Decision::allowed(5, 3, 25 * S),
            Decision::denied(20_000, 10, 41 * S, Duration::from_micros(40_000_001)),
            Decision::denied(2, 0, 30 * S, Duration::from_millis(29_500)),
        ]);
        let mut f = HeaderMap::new();
        f.insert(RETRY_AFTER, HeaderValue::from_static("999"));
        h.write(&mut f, &d);
        assert_eq!(f["retry-after"], "41");
        assert_eq!(
            f["ratelimit"],
            r#""requests";r=3;t=25, "tokens";r=10;t=41, "streams";r=0"#
        );
        assert_eq!(f["x-ratelimit-reset-tokens"], "40.001s");
        // Allowed again: Retry-After goes.
        let d = SetDecision::from_decisions([
            Decision::allowed(5, 2, 25 * S),
            Decision::allowed(20_000, 10, 41 * S),
            Decision::allowed(2, 1, 30 * S),
        ]);
        h.write(&mut f, &d);
        assert!(f.get("retry-after").is_none());
    }

    #[test]
    fn a_sliding_window_resets_at_the_end_of_its_current_window() {
        let set = PolicySet::new(vec![NamedLimit::new(
            "requests",
            Policy::sliding_window(5, 30 * S).unwrap(),
        )
        .unwrap()])
        .unwrap();
        let h = SetHeaders::new(&set);
        let d = SetDecision::from_decisions([Decision::allowed(5, 4, 58 * S)]);
        let f = written(&h, &d);
        assert_eq!(f["ratelimit"], r#""requests";r=4;t=28"#);
        assert_eq!(f["x-ratelimit-reset-requests"], "28s");
    }

    #[test]
    fn units_and_resources_are_configurable() {
        let set = gateway_set(Policy::fixed_window(20_000, 60 * S).unwrap());
        let h = SetHeaders::new(&set)
            .with_quota_unit("tokens", "requests")
            .unwrap()
            .with_openai_resource("tokens", None)
            .unwrap()
            .with_openai_resource("streams", Some("streams"))
            .unwrap();
        assert_eq!(
            h.policy_value(),
            r#""requests";q=5;w=30, "tokens";q=20000;w=60, "streams";q=2;qu="concurrent-requests""#
        );
        let d = SetDecision::from_decisions([
            Decision::allowed(5, 4, 30 * S),
            Decision::allowed(20_000, 1, 60 * S),
            Decision::allowed(2, 1, 30 * S),
        ]);
        let f = written(&h, &d);
        assert!(f.get("x-ratelimit-limit-tokens").is_none());
        assert_eq!(f["x-ratelimit-limit-streams"], "2");
        assert_eq!(f["x-ratelimit-reset-streams"], "0s");
        assert!(SetHeaders::new(&set)
            .with_quota_unit("nope", "tokens")
            .is_err());
        assert!(SetHeaders::new(&set)
            .with_quota_unit("tokens", "to\"kens")
            .is_err());
        assert!(SetHeaders::new(&set)
            .with_openai_resource("tokens", Some("Tokens"))
            .is_err());
    }

    #[test]
    fn openai_durations_round_up_to_the_millisecond() {
        assert_eq!(openai_duration(Duration::from_nanos(1)), "1ms");
        assert_eq!(openai_duration(Duration::from_millis(999)), "999ms");
        assert_eq!(openai_duration(Duration::from_micros(999_001)), "1s");
        assert_eq!(openai_duration(Duration::from_millis(60_010)), "1m0.01s");
        assert_eq!(openai_duration(3_600 * S), "1h0m0s");
    }
}
