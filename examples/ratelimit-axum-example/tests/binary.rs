//! The compiled service: start-up errors and graceful shutdown.

mod common;

use std::io::Read as _;

use common::process::{start_stream, ConfigFile, Process, START};

fn fails_to_start(text: &str) -> String {
    let config = ConfigFile::new("bad", text);
    let mut service = Process::start(&["--config", config.arg()], &[], "info");
    // A service that accepts the bad config would serve forever: the
    // wait is bounded, so the test fails instead of hanging.
    let status = service.exits_within(START);
    assert!(!status.success(), "started with a bad config:\n{text}");
    service.output()
}

#[test]
fn bad_config_stops_start_up_naming_line_and_field() {
    let err = fails_to_start("bind = \"127.0.0.1:0\"\n\n[limit]\nalgorithm = \"fixed_window\"\nlimit = 0\nwindow = \"30s\"\n");
    assert!(
        err.contains("line 5"),
        "the line of the value at fault: {err}"
    );
    assert!(err.contains("invalid `limit`: 0 is out of range"), "{err}");

    let err = fails_to_start("[http]\nmax_body = 10\n");
    assert!(err.contains("line 2"), "{err}");
    assert!(err.contains("unknown field `max_body`"), "{err}");

    let err = fails_to_start("[client_ip]\ntrusted_proxies = [\"10.0.0.0/33\"]\n");
    assert!(
        err.contains("line 2") && err.contains("trusted_proxies"),
        "{err}"
    );

    let err = fails_to_start("[http]\nrequest_timeout = \"soon\"\n");
    assert!(
        err.contains("line 2") && err.contains("request_timeout"),
        "{err}"
    );

    let err = fails_to_start("[client_ip]\nipv6_prefix = 200\n");
    assert!(err.contains("ipv6_prefix"), "{err}");

    let err = fails_to_start("[backend]\nmax_batch = 0\n");
    assert!(err.contains("line 2") && err.contains("max_batch"), "{err}");

    let err = fails_to_start("[server]\nidle_timeout = \"0s\"\n");
    assert!(
        err.contains("line 2, column 16, `idle_timeout`: a timeout must be longer than zero"),
        "{err}"
    );

    let err = fails_to_start("[backend]\ntimeout = \"0ms\"\n");
    assert!(
        err.contains("invalid `backend.timeout`: must be longer than zero"),
        "{err}"
    );
}

#[test]
fn the_sample_config_file_is_the_default_service() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/ratelimit-axum-example.toml"
    ))
    .unwrap();
    let config = ratelimit_axum_example::Config::from_toml_str(&text).unwrap();
    let default = ratelimit_axum_example::Config::default();
    assert_eq!(config.limit, default.limit);
    assert_eq!(config.bind, default.bind);
    assert_eq!(config.http.denied_body, "Ratelimited!");
    assert_eq!(
        format!("{:?}", config.server),
        format!("{:?}", default.server)
    );
}

#[test]
fn sigterm_lets_the_in_flight_stream_finish() {
    let mut service = Process::start(&[], &[("RATELIMIT_DELTA_DELAY", "40ms")], "info");
    // The answer has begun: the stream is then in flight, with about a
    // second of deltas still to come.
    let mut reader = start_stream(service.addr(), START);

    service.sigterm();

    let mut rest = String::new();
    reader.read_to_string(&mut rest).unwrap();
    assert!(
        rest.contains("\"type\":\"finish\""),
        "the stream finished: {rest}"
    );
    assert!(rest.contains("data: [DONE]"), "{rest}");
    let status = service.exits_within(START);
    assert!(status.success(), "clean exit after shutdown: {status:?}");
    let log = service.output();
    assert!(log.contains("shutting down"), "{log}");
}
