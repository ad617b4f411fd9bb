//! The serde form of a [`Policy`].

use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize};

use crate::algorithm_name::Expected;
use crate::domain::{validate_limit, validate_period};
use crate::duration::{duration, rate};
use crate::{AlgorithmName, ConfigError, Policy};

/// The flat, human-written form of a [`Policy`], as it appears in a TOML,
/// YAML or JSON file. [`Policy`] deserializes through it and validates.
///
/// | `algorithm`        | fields                                                |
/// |--------------------|-------------------------------------------------------|
/// | `"fixed_window"`   | `limit` and `window`, or `rate = "5/30s"`             |
/// | `"sliding_window"` | `limit` and `window`, or `rate = "5/30s"`             |
/// | `"token_bucket"`   | `capacity`, and `refill` and `period` or `rate = "1/2s"` |
///
/// Durations are strings such as `"30s"`, `"30 s"`, `"10 m"`, `"1h30m"`,
/// `"500ms"` (see [`parse_duration`](crate::parse_duration)). Unknown
/// fields, fields of another algorithm and out-of-range values are rejected
/// with an error naming the field and the accepted range.
///
/// # Examples
///
/// ```
/// use ratelimit_core::Policy;
///
/// let bucket: Policy = serde_json::from_str(
///     r#"{ "algorithm": "token_bucket", "capacity": 10, "refill": 1, "period": "2s" }"#,
/// ).unwrap();
/// assert_eq!(bucket.limit(), 10);
///
/// let err = toml::from_str::<Policy>(r#"
///     algorithm = "fixed_window"
///     limit = 0
///     window = "30s"
/// "#).unwrap_err();
/// assert!(err.to_string().contains("invalid `limit`: 0 is out of range"), "{err}");
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct PolicyConfig {
    /// `"fixed_window"`, `"sliding_window"` or `"token_bucket"`.
    pub algorithm: Option<AlgorithmName>,
    /// Window policies: the most cost per window.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "de_limit"
    )]
    pub limit: Option<u64>,
    /// Window policies: the window length, e.g. `"30s"`.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "de_window"
    )]
    pub window: Option<String>,
    /// `"<count>/<duration>"`: `limit`/`window` for the window policies,
    /// `refill`/`period` for the token bucket.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "de_rate"
    )]
    pub rate: Option<String>,
    /// Token bucket: the most tokens the bucket holds.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "de_capacity"
    )]
    pub capacity: Option<u64>,
    /// Token bucket: tokens added per `period`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refill: Option<u64>,
    /// Token bucket: the refill period, e.g. `"1s"`.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "de_period"
    )]
    pub period: Option<String>,
}

impl PolicyConfig {
    fn reject(
        &self,
        algorithm: &str,
        fields: &[(&'static str, bool)],
        hint: &str,
    ) -> Result<(), ConfigError> {
        match fields.iter().find(|(_, present)| *present) {
            Some((field, _)) => Err(ConfigError::new(
                field,
                format!("does not apply to {algorithm}; {hint}"),
            )),
            None => Ok(()),
        }
    }

    /// `(count, duration)` from `rate`, or from the two separate fields.
    fn pair(
        &self,
        count: (&'static str, Option<u64>),
        span: (&'static str, Option<&str>),
    ) -> Result<(u64, Duration), ConfigError> {
        match (&self.rate, count.1, span.1) {
            (Some(_), Some(_), _) => Err(ConfigError::new(
                count.0,
                format!(
                    "give either `rate` or `{}` and `{}`, not both",
                    count.0, span.0
                ),
            )),
            (Some(_), None, Some(_)) => Err(ConfigError::new(
                span.0,
                format!(
                    "give either `rate` or `{}` and `{}`, not both",
                    count.0, span.0
                ),
            )),
            (Some(text), None, None) => rate("rate", text),
            (None, Some(n), Some(text)) => Ok((n, duration(span.0, text)?)),
            (None, None, _) => Err(missing(count.0)),
            (None, Some(_), None) => Err(missing(span.0)),
        }
    }
}

// Each field is checked as it is read, so that a format that tracks
// positions (TOML, YAML) reports the line of the value at fault; checks that
// involve several fields run in `TryFrom` and point at the whole table.

fn checked<'de, D, T, U>(
    d: D,
    check: impl FnOnce(&T) -> Result<U, ConfigError>,
) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    let value = T::deserialize(d)?;
    check(&value).map_err(serde::de::Error::custom)?;
    Ok(Some(value))
}

fn de_limit<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    checked(d, |v: &u64| validate_limit(*v, "limit"))
}

fn de_capacity<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    checked(d, |v: &u64| validate_limit(*v, "capacity"))
}

fn de_window<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    checked(d, |v: &String| {
        validate_period(duration("window", v)?, "window")
    })
}

fn de_period<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    checked(d, |v: &String| {
        validate_period(duration("period", v)?, "period")
    })
}

fn de_rate<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    checked(d, |v: &String| {
        let (count, per) = rate("rate", v)?;
        validate_limit(count, "rate")?;
        validate_period(per, "rate")
    })
}

fn missing(field: &'static str) -> ConfigError {
    ConfigError::new(field, "is missing")
}

impl TryFrom<PolicyConfig> for Policy {
    type Error = ConfigError;

    fn try_from(c: PolicyConfig) -> Result<Self, ConfigError> {
        let algorithm = c.algorithm.ok_or_else(|| {
            ConfigError::new("algorithm", format!("is missing; expected {Expected}"))
        })?;
        let windowed = |make: fn(u64, Duration) -> Result<Policy, ConfigError>| {
            c.reject(
                algorithm.as_str(),
                &[
                    ("capacity", c.capacity.is_some()),
                    ("refill", c.refill.is_some()),
                    ("period", c.period.is_some()),
                ],
                "use `limit` and `window` (or `rate`)",
            )?;
            let (limit, window) = c.pair(("limit", c.limit), ("window", c.window.as_deref()))?;
            make(limit, window)
        };
        match algorithm {
            AlgorithmName::FixedWindow => windowed(Policy::fixed_window),
            AlgorithmName::SlidingWindow => windowed(Policy::sliding_window),
            AlgorithmName::TokenBucket => {
                c.reject(
                    algorithm.as_str(),
                    &[("limit", c.limit.is_some()), ("window", c.window.is_some())],
                    "use `capacity`, and `refill` and `period` (or `rate`)",
                )?;
                let capacity = c.capacity.ok_or_else(|| missing("capacity"))?;
                let (refill, period) =
                    c.pair(("refill", c.refill), ("period", c.period.as_deref()))?;
                Policy::token_bucket(capacity, refill, period)
            }
        }
    }
}

impl From<Policy> for PolicyConfig {
    fn from(policy: Policy) -> Self {
        let text = |d: Duration| humantime::format_duration(d).to_string();
        match policy {
            Policy::FixedWindow(p) => Self {
                algorithm: Some(AlgorithmName::FixedWindow),
                limit: Some(p.limit()),
                window: Some(text(p.window())),
                ..Self::default()
            },
            Policy::SlidingWindow(p) => Self {
                algorithm: Some(AlgorithmName::SlidingWindow),
                limit: Some(p.limit()),
                window: Some(text(p.window())),
                ..Self::default()
            },
            Policy::TokenBucket(p) => Self {
                algorithm: Some(AlgorithmName::TokenBucket),
                capacity: Some(p.capacity()),
                refill: Some(p.refill()),
                period: Some(text(p.period())),
                ..Self::default()
            },
        }
    }
}
