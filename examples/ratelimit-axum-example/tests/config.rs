//! The configuration refuses, at load, values that would break the
//! service without saying so: zero timeouts and a zero connection cap.

use std::time::Duration;

use ratelimit_axum_example::{AppOptions, Config};

/// Every timeout of the sections whose values are checked as they are
/// read, so the error points at the line.
const TIMEOUTS: [(&str, &str); 6] = [
    ("http", "request_timeout"),
    ("http", "stream_idle_timeout"),
    ("model", "connect_timeout"),
    ("server", "header_read_timeout"),
    ("server", "idle_timeout"),
    ("server", "shutdown_grace"),
];

#[test]
fn a_zero_timeout_in_the_file_is_refused_at_its_line() {
    for (section, key) in TIMEOUTS {
        for zero in ["0s", "0ms", "0 s"] {
            let text = format!("bind = \"127.0.0.1:0\"\n\n[{section}]\n{key} = \"{zero}\"\n");
            let err = Config::from_toml_str(&text).unwrap_err();
            assert_eq!(err.message(), "a timeout must be longer than zero", "{key}");
            let span = err.span().expect("a located error");
            assert_eq!(
                text[..span.start].lines().count(),
                4,
                "{key}: the error is on the key's line"
            );
        }
        // One millisecond is a (short) timeout.
        let text = format!("[{section}]\n{key} = \"1ms\"\n");
        assert!(Config::from_toml_str(&text).is_ok(), "{key}");
    }
}

#[test]
fn a_zero_backend_timeout_is_refused_naming_the_field() {
    let config = Config::from_toml_str("[backend]\ntimeout = \"0ms\"\n").unwrap();
    let err = AppOptions::from_config(&config).unwrap_err();
    assert_eq!(
        format!("{err:#}"),
        "invalid `backend.timeout`: must be longer than zero"
    );
}

#[test]
fn a_zero_timeout_set_in_code_is_refused_naming_the_field() {
    type Zero = fn(&mut Config);
    let fields: [(&str, Zero); 7] = [
        ("backend.timeout", |c| c.backend.timeout = Duration::ZERO),
        ("http.request_timeout", |c| {
            c.http.request_timeout = Duration::ZERO
        }),
        ("http.stream_idle_timeout", |c| {
            c.http.stream_idle_timeout = Duration::ZERO
        }),
        ("model.connect_timeout", |c| {
            c.model.connect_timeout = Duration::ZERO
        }),
        ("server.header_read_timeout", |c| {
            c.server.header_read_timeout = Duration::ZERO
        }),
        ("server.idle_timeout", |c| {
            c.server.idle_timeout = Duration::ZERO
        }),
        ("server.shutdown_grace", |c| {
            c.server.shutdown_grace = Duration::ZERO
        }),
    ];
    for (field, zero) in fields {
        let mut config = Config::default();
        zero(&mut config);
        let err = config.validate().unwrap_err().to_string();
        assert_eq!(err, format!("invalid `{field}`: must be longer than zero"));
    }
    assert!(Config::default().validate().is_ok());
}

#[test]
fn zero_connections_is_refused() {
    let err = Config::from_toml_str("[server]\nmax_connections = 0\n").unwrap_err();
    assert!(err.message().contains("nonzero"), "{err}");
}

#[test]
fn the_server_section_defaults() {
    let server = Config::default().server;
    assert_eq!(server.header_read_timeout, Duration::from_secs(10));
    assert_eq!(server.idle_timeout, Duration::from_secs(60));
    assert_eq!(server.max_connections.get(), 1024);
    assert_eq!(server.shutdown_grace, Duration::from_secs(10));
    let text = "[server]\nheader_read_timeout = \"2s\"\nidle_timeout = \"5m\"\nmax_connections = 8\nshutdown_grace = \"500ms\"\n";
    let server = Config::from_toml_str(text).unwrap().server;
    assert_eq!(server.header_read_timeout, Duration::from_secs(2));
    assert_eq!(server.idle_timeout, Duration::from_secs(300));
    assert_eq!(server.max_connections.get(), 8);
    assert_eq!(server.shutdown_grace, Duration::from_millis(500));
}
