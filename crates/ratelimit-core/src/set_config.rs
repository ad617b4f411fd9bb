//! The serde form of a [`NamedLimit`].

use serde::{Deserialize, Serialize};

use crate::domain::validate_period;
use crate::duration::duration;
use crate::set::validate_name;
use crate::{AlgorithmName, Concurrency, ConfigError, Limit, NamedLimit, Policy, PolicyConfig};

/// The flat form of one policy of a [`PolicySet`](crate::PolicySet): a
/// `name`, the fields of a [`PolicyConfig`] (for the rate algorithms), or
/// `algorithm = "concurrency"` with `limit` and `lease_ttl`, and
/// optionally `settle = true` (see [`NamedLimit::settling`]).
///
/// Unknown fields and fields of another algorithm are rejected with an
/// error naming the field.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use ratelimit_core::{Limit, NamedLimit};
///
/// let streams: NamedLimit = toml::from_str(r#"
///     name = "streams"
///     algorithm = "concurrency"
///     limit = 2
///     lease_ttl = "30s"
/// "#).unwrap();
/// let Limit::Concurrency(c) = streams.limit() else { panic!() };
/// assert_eq!(c.lease_ttl(), Duration::from_secs(30));
///
/// let err = toml::from_str::<NamedLimit>(r#"
///     name = "streams"
///     algorithm = "concurrency"
///     limit = 2
///     window = "30s"
/// "#).unwrap_err();
/// assert!(err.to_string().contains("`window`"), "{err}");
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct LimitConfig {
    /// The policy's name, unique in its set.
    pub name: String,
    /// A rate algorithm's name, or `"concurrency"`.
    pub algorithm: String,
    /// Window policies and concurrency: the limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u64>,
    /// Window policies: the window length.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<String>,
    /// Rate policies: `"<count>/<duration>"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<String>,
    /// Token bucket: capacity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity: Option<u64>,
    /// Token bucket: tokens per period.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refill: Option<u64>,
    /// Token bucket: refill period.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub period: Option<String>,
    /// Concurrency: how long a lease is held unless renewed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_ttl: Option<String>,
    /// Whether the policy's receipts are settled later with a refund.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub settle: bool,
}

const CONCURRENCY: &str = "concurrency";

impl TryFrom<LimitConfig> for NamedLimit {
    type Error = ConfigError;

    fn try_from(c: LimitConfig) -> Result<Self, ConfigError> {
        validate_name(&c.name)?;
        let limit = if c.algorithm == CONCURRENCY {
            let stray = [
                ("window", c.window.is_some()),
                ("rate", c.rate.is_some()),
                ("capacity", c.capacity.is_some()),
                ("refill", c.refill.is_some()),
                ("period", c.period.is_some()),
            ];
            if let Some((field, _)) = stray.iter().find(|(_, present)| *present) {
                return Err(ConfigError::new(
                    field,
                    "does not apply to concurrency; use `limit` and `lease_ttl`",
                ));
            }
            let limit = c
                .limit
                .ok_or_else(|| ConfigError::new("limit", "is missing"))?;
            let ttl = c
                .lease_ttl
                .as_deref()
                .ok_or_else(|| ConfigError::new("lease_ttl", "is missing"))?;
            let ttl = duration("lease_ttl", ttl)?;
            validate_period(ttl, "lease_ttl")?;
            Limit::Concurrency(Concurrency::new(limit, ttl)?)
        } else {
            if c.lease_ttl.is_some() {
                return Err(ConfigError::new(
                    "lease_ttl",
                    format!("does not apply to {}; only to concurrency", c.algorithm),
                ));
            }
            let algorithm: AlgorithmName = c.algorithm.parse().map_err(|_| {
                ConfigError::new(
                    "algorithm",
                    format!(
                        "unknown algorithm {:?}; expected \"fixed_window\", \"sliding_window\", \
                         \"token_bucket\" or \"concurrency\"",
                        c.algorithm
                    ),
                )
            })?;
            let policy = PolicyConfig {
                algorithm: Some(algorithm),
                limit: c.limit,
                window: c.window,
                rate: c.rate,
                capacity: c.capacity,
                refill: c.refill,
                period: c.period,
            };
            Limit::Rate(Policy::try_from(policy)?)
        };
        let named = NamedLimit::new(&c.name, limit)?;
        Ok(if c.settle { named.settling() } else { named })
    }
}

impl From<NamedLimit> for LimitConfig {
    fn from(l: NamedLimit) -> Self {
        let mut config = match l.limit() {
            Limit::Rate(p) => {
                let p = PolicyConfig::from(p);
                Self {
                    algorithm: p
                        .algorithm
                        .map(|a| a.as_str().to_owned())
                        .unwrap_or_default(),
                    limit: p.limit,
                    window: p.window,
                    rate: p.rate,
                    capacity: p.capacity,
                    refill: p.refill,
                    period: p.period,
                    ..Self::default()
                }
            }
            Limit::Concurrency(c) => Self {
                algorithm: CONCURRENCY.to_owned(),
                limit: Some(c.limit()),
                lease_ttl: Some(humantime::format_duration(c.lease_ttl()).to_string()),
                ..Self::default()
            },
        };
        config.name = l.name().to_owned();
        config.settle = l.settles();
        config
    }
}

impl Serialize for NamedLimit {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        LimitConfig::from(self.clone()).serialize(s)
    }
}

impl<'de> Deserialize<'de> for NamedLimit {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let config = LimitConfig::deserialize(d)?;
        NamedLimit::try_from(config).map_err(serde::de::Error::custom)
    }
}

impl Serialize for crate::PolicySet {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.limits())
    }
}

impl<'de> Deserialize<'de> for crate::PolicySet {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let limits = Vec::<NamedLimit>::deserialize(d)?;
        crate::PolicySet::new(limits).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::PolicySet;

    #[test]
    fn a_set_round_trips_through_toml() {
        #[derive(Debug, PartialEq, Serialize, Deserialize)]
        struct File {
            limits: PolicySet,
        }
        let file: File = toml::from_str(
            r#"
            [[limits]]
            name = "requests"
            algorithm = "fixed_window"
            rate = "5/30s"

            [[limits]]
            name = "tokens"
            algorithm = "token_bucket"
            capacity = 20000
            rate = "20000/1m"
            settle = true

            [[limits]]
            name = "streams"
            algorithm = "concurrency"
            limit = 2
            lease_ttl = "30s"
            "#,
        )
        .unwrap();
        assert!(file.limits.limits()[1].settles());
        let text = toml::to_string(&file).unwrap();
        assert_eq!(toml::from_str::<File>(&text).unwrap(), file);
    }

    #[test]
    fn bad_sets_name_the_fault() {
        let err = |text: &str| {
            #[derive(Debug, Deserialize)]
            #[allow(dead_code)]
            struct File {
                limits: PolicySet,
            }
            toml::from_str::<File>(text).unwrap_err().to_string()
        };
        let two = err(r#"
            [[limits]]
            name = "a"
            algorithm = "fixed_window"
            rate = "5/30s"
            [[limits]]
            name = "a"
            algorithm = "fixed_window"
            rate = "5/30s"
        "#);
        assert!(two.contains("names two policies"), "{two}");
        let unknown = err(r#"
            [[limits]]
            name = "a"
            algorithm = "leaky_bucket"
            rate = "5/30s"
        "#);
        assert!(unknown.contains("unknown algorithm"), "{unknown}");
        let ttl = err(r#"
            [[limits]]
            name = "a"
            algorithm = "fixed_window"
            rate = "5/30s"
            lease_ttl = "1s"
        "#);
        assert!(ttl.contains("`lease_ttl`"), "{ttl}");
        assert!(err("limits = []").contains("a set of 0 policies"));
    }
}
