//! TOML errors, told without quoting the file.

/// Where a TOML error is and what it says, without the excerpt of the
/// file that `toml`'s own message quotes: that line may hold an API key or
/// a Redis password (a typo in a secret is still a secret). The key of
/// the line is named, never its value.
pub(crate) fn located(err: &toml::de::Error, text: &str) -> String {
    let Some(span) = err.span() else {
        return err.message().to_owned();
    };
    // A span always falls on a character boundary; `get` only keeps a
    // surprise from becoming a panic.
    let before = text.get(..span.start).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    let line_text = text[line_start..].lines().next().unwrap_or_default();
    match key_of(line_text) {
        Some(key) => format!("line {line}, column {column}, `{key}`: {}", err.message()),
        None => format!("line {line}, column {column}: {}", err.message()),
    }
}

/// The bare (or dotted) key of a `key = value` line.
fn key_of(line: &str) -> Option<&str> {
    let (key, _value) = line.split_once('=')?;
    let key = key.trim();
    let bare = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.');
    (!key.is_empty() && key.chars().all(bare)).then_some(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_line_column_and_key_but_not_the_value() {
        let text = "[model]\nname = \"m\"\napi_key = sk-secret\n";
        let err = toml::from_str::<toml::Table>(text).unwrap_err();
        let told = located(&err, text);
        assert!(told.starts_with("line 3, column 11, `api_key`: "), "{told}");
        assert!(!told.contains("sk-secret"), "{told}");
    }

    #[test]
    fn keys_are_bare_or_dotted_only() {
        assert_eq!(key_of("a.b_c-d = 1"), Some("a.b_c-d"));
        assert_eq!(key_of("  x=1"), Some("x"));
        assert_eq!(key_of("\"quoted\" = 1"), None);
        assert_eq!(key_of("[table]"), None);
        assert_eq!(key_of("= 1"), None);
    }
}
