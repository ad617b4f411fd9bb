//! A URL that may carry credentials, printed without them.

use std::borrow::Cow;
use std::convert::Infallible;
use std::fmt;
use std::str::FromStr;

use serde::Deserialize;

/// A URL such as `redis://app:s3cret@host:6379` or
/// `https://user:pass@proxy/v1`: [`Display`](fmt::Display) and
/// [`Debug`](fmt::Debug) print it [redacted](redact_url), so it can be
/// logged and put in error messages; [`expose`](Self::expose) (or
/// `String::from`) gives the real one to the client that connects.
///
/// # Examples
///
/// ```
/// use ratelimit_axum_example::SecretUrl;
///
/// let url = SecretUrl::new("redis://app:s3cret@10.0.0.5:6379/0");
/// assert_eq!(url.to_string(), "redis://app:[redacted]@10.0.0.5:6379/0");
/// assert_eq!(format!("{url:?}"), r#""redis://app:[redacted]@10.0.0.5:6379/0""#);
/// assert_eq!(url.expose(), "redis://app:s3cret@10.0.0.5:6379/0");
/// ```
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct SecretUrl(String);

impl SecretUrl {
    /// Wraps `url`; it is not parsed, so any text is kept as given.
    ///
    /// # Examples
    ///
    /// ```
    /// let url = ratelimit_axum_example::SecretUrl::new("redis://127.0.0.1:6379");
    /// assert_eq!(url.to_string(), "redis://127.0.0.1:6379");
    /// ```
    #[must_use]
    pub fn new(url: impl Into<String>) -> Self {
        Self(url.into())
    }

    /// The URL with its credentials, for the one place that connects.
    ///
    /// # Examples
    ///
    /// ```
    /// let url = ratelimit_axum_example::SecretUrl::new("redis://:pw@h");
    /// assert_eq!(url.expose(), "redis://:pw@h");
    /// ```
    #[must_use]
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&redact_url(&self.0))
    }
}

impl fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*redact_url(&self.0), f)
    }
}

impl FromStr for SecretUrl {
    type Err = Infallible;

    fn from_str(s: &str) -> Result<Self, Infallible> {
        Ok(Self::new(s))
    }
}

/// The way out, for clients that take the URL as a `String`
/// (`RedisOptions::standalone(url)`).
impl From<SecretUrl> for String {
    fn from(url: SecretUrl) -> Self {
        url.0
    }
}

/// Query parameters that carry a password (redis-rs reads `pass` and
/// `password` for `redis+unix://` URLs).
const SECRET_PARAMS: [&str; 2] = ["pass", "password"];

/// `url` with its credentials replaced by `[redacted]`: the password of
/// `user:password@`, the whole user part when it has no `:` (a token
/// written as `https://TOKEN@host`), and the values of `pass=` and
/// `password=` query parameters.
///
/// The text is not parsed as a URL, so a malformed one is redacted too:
/// everything before the **last** `@` counts as the user part, which
/// hides a password with an unescaped `@` or `/` in it (at the price of
/// hiding more than needed when a path or query holds an `@`).
///
/// # Examples
///
/// ```
/// use ratelimit_axum_example::redact_url;
///
/// assert_eq!(redact_url("redis://:pw@h:6379"), "redis://:[redacted]@h:6379");
/// assert_eq!(redact_url("https://sk-123@proxy/v1"), "https://[redacted]@proxy/v1");
/// assert_eq!(redact_url("redis://:p@ss/w@h"), "redis://:[redacted]@h");
/// assert_eq!(redact_url("redis+unix:///run/redis.sock?db=1&pass=pw"), "redis+unix:///run/redis.sock?db=1&pass=[redacted]");
/// assert_eq!(redact_url("redis://h:6379"), "redis://h:6379");
/// ```
#[must_use]
pub fn redact_url(url: &str) -> Cow<'_, str> {
    let (scheme, rest) = match url.find("://") {
        Some(i) => url.split_at(i + 3),
        None => ("", url),
    };
    let mut out = match rest.rsplit_once('@') {
        Some((user_info, host)) => {
            let user = match user_info.split_once(':') {
                Some((user, _password)) => format!("{user}:[redacted]"),
                None => "[redacted]".to_owned(),
            };
            Cow::Owned(format!("{scheme}{user}@{host}"))
        }
        None => Cow::Borrowed(url),
    };
    if let Some((head, query)) = out.split_once('?') {
        let (query, fragment) = match query.split_once('#') {
            Some((q, f)) => (q, Some(f)),
            None => (query, None),
        };
        let mut changed = false;
        let params: Vec<Cow<'_, str>> = query
            .split('&')
            .map(|param| match param.split_once('=') {
                Some((name, _)) if SECRET_PARAMS.iter().any(|s| s.eq_ignore_ascii_case(name)) => {
                    changed = true;
                    Cow::Owned(format!("{name}=[redacted]"))
                }
                _ => Cow::Borrowed(param),
            })
            .collect();
        if changed {
            let fragment = fragment.map(|f| format!("#{f}")).unwrap_or_default();
            out = Cow::Owned(format!("{head}?{}{fragment}", params.join("&")));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_anywhere_are_hidden() {
        let cases = [
            ("redis://user:pw@h:1/0", "redis://user:[redacted]@h:1/0"),
            ("rediss://:pw@h", "rediss://:[redacted]@h"),
            // No scheme: still a user part.
            (":pw@h:6379", ":[redacted]@h:6379"),
            ("tok@h", "[redacted]@h"),
            ("redis://h?password=pw#f", "redis://h?password=[redacted]#f"),
            (
                "redis://u:pw@h?PASS=pw2",
                "redis://u:[redacted]@h?PASS=[redacted]",
            ),
            ("", ""),
            ("not a url", "not a url"),
        ];
        for (url, want) in cases {
            assert_eq!(redact_url(url), want, "{url}");
        }
    }
}
