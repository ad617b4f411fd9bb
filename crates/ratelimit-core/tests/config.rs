//! Configuration: every accepted form parses to the expected policy, and
//! every bad input is rejected at load time with an error that names the
//! field (and, from TOML, the line).

use std::time::Duration;

use ratelimit_core::{parse_duration, parse_rate, Policy};

fn toml_policy(text: &str) -> Result<Policy, String> {
    toml::from_str::<Policy>(text).map_err(|e| e.to_string())
}

fn window(algorithm: &str, limit: u64, window: &str) -> Result<Policy, String> {
    toml_policy(&format!(
        "algorithm = \"{algorithm}\"\nlimit = {limit}\nwindow = \"{window}\"\n"
    ))
}

#[test]
fn upstash_and_common_duration_forms_parse() {
    let cases = [
        ("30s", 30_000),
        ("30 s", 30_000),
        ("10 m", 600_000),
        ("10m", 600_000),
        ("1h", 3_600_000),
        ("1d", 86_400_000),
        ("500ms", 500),
        ("500 ms", 500),
        ("1h30m", 5_400_000),
        ("1h 30m", 5_400_000),
        ("2min", 120_000),
        ("1sec", 1_000),
    ];
    for (text, ms) in cases {
        assert_eq!(
            parse_duration(text).unwrap(),
            Duration::from_millis(ms),
            "{text}"
        );
        let policy = window("fixed_window", 5, text).unwrap();
        assert_eq!(policy.window(), Duration::from_millis(ms), "{text}");
    }
}

#[test]
fn each_algorithm_loads_from_toml_and_json() {
    let fixed = window("fixed_window", 5, "30s").unwrap();
    assert_eq!(
        fixed,
        Policy::fixed_window(5, Duration::from_secs(30)).unwrap()
    );
    let sliding = window("sliding_window", 100, "1m").unwrap();
    assert_eq!(
        sliding,
        Policy::sliding_window(100, Duration::from_secs(60)).unwrap()
    );
    let bucket =
        toml_policy("algorithm = \"token_bucket\"\ncapacity = 10\nrefill = 2\nperiod = \"1s\"\n")
            .unwrap();
    assert_eq!(
        bucket,
        Policy::token_bucket(10, 2, Duration::from_secs(1)).unwrap()
    );
    let json: Policy =
        serde_json::from_str(r#"{"algorithm": "sliding_window", "limit": 100, "window": "1m"}"#)
            .unwrap();
    assert_eq!(json, sliding);
}

#[test]
fn compact_rate_form() {
    assert_eq!(parse_rate("5/30s").unwrap(), (5, Duration::from_secs(30)));
    assert_eq!(
        parse_rate(" 5 / 30 s ").unwrap(),
        (5, Duration::from_secs(30))
    );
    assert_eq!(parse_rate("100/m").unwrap(), (100, Duration::from_secs(60)));
    let fixed = toml_policy("algorithm = \"fixed_window\"\nrate = \"5/30s\"\n").unwrap();
    assert_eq!(
        fixed,
        Policy::fixed_window(5, Duration::from_secs(30)).unwrap()
    );
    let bucket =
        toml_policy("algorithm = \"token_bucket\"\ncapacity = 4\nrate = \"1/500ms\"\n").unwrap();
    assert_eq!(
        bucket,
        Policy::token_bucket(4, 1, Duration::from_millis(500)).unwrap()
    );
}

#[test]
fn policies_serialize_back_to_the_same_policy() {
    for policy in [
        Policy::fixed_window(5, Duration::from_secs(30)).unwrap(),
        Policy::sliding_window(7, Duration::from_millis(5_400_500)).unwrap(),
        Policy::token_bucket(10, 3, Duration::from_secs(86_400)).unwrap(),
    ] {
        let text = toml::to_string(&policy).unwrap();
        assert_eq!(toml_policy(&text).unwrap(), policy, "{text}");
        let json = serde_json::to_string(&policy).unwrap();
        assert_eq!(
            serde_json::from_str::<Policy>(&json).unwrap(),
            policy,
            "{json}"
        );
    }
}

/// Asserts that `text` is rejected with every fragment of `expected` in the
/// message.
fn rejected(text: &str, expected: &[&str]) {
    let err = toml_policy(text).expect_err(text);
    for fragment in expected {
        assert!(
            err.contains(fragment),
            "error for {text:?} lacks {fragment:?}:\n{err}"
        );
    }
}

#[test]
fn bad_values_name_the_field_the_range_and_the_line() {
    rejected(
        "algorithm = \"fixed_window\"\nlimit = 0\nwindow = \"30s\"\n",
        &[
            "invalid `limit`",
            "0 is out of range",
            "1 to 4294967295",
            "line 2",
        ],
    );
    rejected(
        "algorithm = \"fixed_window\"\nlimit = 4294967296\nwindow = \"30s\"\n",
        &["invalid `limit`", "4294967296 is out of range"],
    );
    rejected(
        "algorithm = \"sliding_window\"\nlimit = 5\nwindow = \"0s\"\n",
        &["invalid `window`", "out of range", "1 ms", "line 3"],
    );
    rejected(
        "algorithm = \"sliding_window\"\nlimit = 5\nwindow = \"30x\"\n",
        &[
            "invalid `window`",
            "\"30x\" is not a duration",
            "unknown time unit",
        ],
    );
    rejected(
        "algorithm = \"fixed_window\"\nlimit = 5\nwindow = \"30\"\n",
        &["invalid `window`", "missing a unit"],
    );
    rejected(
        "algorithm = \"fixed_window\"\nlimit = 5\nwindow = \"1500us\"\n",
        &["invalid `window`", "not a whole number of milliseconds"],
    );
    rejected(
        "algorithm = \"fixed_window\"\nlimit = 5\nwindow = \"1000 days\"\n",
        &["invalid `window`", "out of range"],
    );
    rejected(
        "algorithm = \"fixed_window\"\nlimit = 4000000000\nwindow = \"30d\"\n",
        &["invalid `limit`", "below 2^53"],
    );
    rejected(
        "algorithm = \"token_bucket\"\ncapacity = 10\nrefill = 0\nperiod = \"1s\"\n",
        &["invalid `refill`", "0 is out of range"],
    );
    rejected(
        "algorithm = \"token_bucket\"\ncapacity = 4000000000\nrefill = 1\nperiod = \"795d\"\n",
        &["invalid `capacity`", "2^51"],
    );
}

#[test]
fn bad_shapes_are_rejected_with_the_field_named() {
    rejected(
        "limit = 5\nwindow = \"30s\"\n",
        &["invalid `algorithm`", "is missing"],
    );
    rejected(
        "algorithm = \"leaky_bucket\"\nlimit = 5\nwindow = \"30s\"\n",
        &["unknown variant `leaky_bucket`", "fixed_window", "line 1"],
    );
    rejected(
        "algorithm = \"fixed_window\"\nlimit = 5\nwindow = \"30s\"\nburst = 3\n",
        &["unknown field `burst`"],
    );
    rejected(
        "algorithm = \"fixed_window\"\nlimit = 5\n",
        &["invalid `window`", "is missing"],
    );
    rejected(
        "algorithm = \"fixed_window\"\nlimit = 5\nwindow = \"30s\"\ncapacity = 3\n",
        &["invalid `capacity`", "does not apply to fixed_window"],
    );
    rejected(
        "algorithm = \"token_bucket\"\nlimit = 5\nrefill = 1\nperiod = \"1s\"\n",
        &["invalid `limit`", "does not apply to token_bucket"],
    );
    rejected(
        "algorithm = \"sliding_window\"\nrate = \"5/30s\"\nlimit = 5\n",
        &["invalid `limit`", "either `rate` or"],
    );
    rejected(
        "algorithm = \"sliding_window\"\nrate = \"5 per 30s\"\n",
        &["invalid `rate`", "\"<count>/<duration>\""],
    );
    rejected(
        "algorithm = \"fixed_window\"\nlimit = 5\nwindow = 30\n",
        &["invalid type: integer `30`, expected a string", "line 3"],
    );
    rejected(
        "algorithm = \"fixed_window\"\nlimit = -1\nwindow = \"30s\"\n",
        &["line 2"],
    );
}

#[test]
fn nested_policies_report_the_line_of_their_table() {
    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct App {
        generate: Policy,
    }
    let text =
        "\n[generate]\nalgorithm = \"fixed_window\"\nlimit = 5\nwindow = \"30s\"\ncapacity = 3\n";
    let err = toml::from_str::<App>(text).unwrap_err().to_string();
    assert!(err.contains("line 2"), "{err}");
    assert!(
        err.contains("invalid `capacity`: does not apply to fixed_window"),
        "{err}"
    );
}
