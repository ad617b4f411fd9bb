//! Duration and rate strings, parsed once at the configuration edge.

use std::time::Duration;

use crate::ConfigError;

/// Parses a duration as configuration files write it: `"30s"`, `"30 s"`,
/// `"10 m"`, `"1h"`, `"1d"`, `"500ms"`, `"1h30m"`, `"1h 30m"`.
///
/// Units are those of [`humantime`]: `ms`, `s`, `m`, `h`, `d` and their
/// long forms (`sec`, `min`, `hours`, `days`, …), also `us`, `ns`, `w`.
/// Whether the result is a valid window is checked by the policy.
///
/// # Errors
///
/// A [`ConfigError`] on field `duration` that quotes the input and says
/// what was wrong: empty, missing or unknown unit, or a number too large.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use ratelimit_core::parse_duration;
///
/// assert_eq!(parse_duration("30 s").unwrap(), Duration::from_secs(30));
/// assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
/// let err = parse_duration("30").unwrap_err();
/// assert!(err.to_string().contains("missing a unit"), "{err}");
/// ```
pub fn parse_duration(text: &str) -> Result<Duration, ConfigError> {
    duration("duration", text)
}

/// Parses a compact rate `"<count>/<duration>"`: `"5/30s"`, `"100 / 1 m"`,
/// or `"10/s"` for one unit.
///
/// # Errors
///
/// A [`ConfigError`] on field `rate` that quotes the input and says what was
/// wrong.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use ratelimit_core::parse_rate;
///
/// assert_eq!(parse_rate("5/30s").unwrap(), (5, Duration::from_secs(30)));
/// assert_eq!(parse_rate("10/m").unwrap(), (10, Duration::from_secs(60)));
/// assert!(parse_rate("5 per 30s").is_err());
/// ```
pub fn parse_rate(text: &str) -> Result<(u64, Duration), ConfigError> {
    rate("rate", text)
}

/// [`parse_duration`] reporting errors against `field`.
pub(crate) fn duration(field: &'static str, text: &str) -> Result<Duration, ConfigError> {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(ConfigError::new(
            field,
            "the duration is empty; write e.g. \"30s\", \"10 m\" or \"1h30m\"",
        ));
    }
    if trimmed.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ConfigError::new(
            field,
            format!("{text:?} is missing a unit; write e.g. \"{trimmed}s\" or \"{trimmed}ms\""),
        ));
    }
    humantime::parse_duration(trimmed).map_err(|e| {
        ConfigError::new(
            field,
            format!("{text:?} is not a duration ({e}); write e.g. \"30s\", \"10 m\" or \"1h30m\""),
        )
    })
}

/// [`parse_rate`] reporting errors against `field`.
pub(crate) fn rate(field: &'static str, text: &str) -> Result<(u64, Duration), ConfigError> {
    let shape = || {
        ConfigError::new(
            field,
            format!("{text:?} is not a rate; write \"<count>/<duration>\", e.g. \"5/30s\""),
        )
    };
    let (count, per) = text.split_once('/').ok_or_else(shape)?;
    let count: u64 = count.trim().parse().map_err(|_| shape())?;
    let per = per.trim();
    let per = if per.starts_with(|c: char| c.is_ascii_alphabetic()) {
        duration(field, &format!("1{per}"))?
    } else {
        duration(field, per)?
    };
    Ok((count, per))
}
