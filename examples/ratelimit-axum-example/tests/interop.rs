//! Interop with the real client: the `ai` npm package, v5 and the current
//! major v7 (both pinned in `interop/package-lock.json`, as `ai-v5` and
//! `ai-v7`), consumes the service's stream with its own parser, schema
//! and message reader; every test runs against both. Needs `node` and
//! `npm` on PATH; the test installs the packages itself (`npm ci`) when
//! `node_modules` lacks one, and fails loudly when node or npm is missing.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use common::*;
use ratelimit_axum_example::{ChatMessage, OfflineModel, Role};
use serde_json::Value;

/// One `npm ci` at a time: the tests of this file share `node_modules`.
static NPM: Mutex<()> = Mutex::new(());

/// The pinned majors of the `ai` package every test runs against.
const SDKS: [&str; 2] = ["ai-v5", "ai-v7"];

fn interop_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("interop")
}

fn require(tool: &str) {
    let found = Command::new(tool).arg("--version").output();
    match found {
        Ok(out) if out.status.success() => {}
        _ => panic!(
            "`{tool}` is required by the ai SDK interop test and was not found on PATH. \
             Install Node.js 20+ with npm (Debian: `apt-get install -y nodejs npm`); \
             the test then runs `npm ci` in {} by itself.",
            interop_dir().display()
        ),
    }
}

fn ensure_sdk_installed() {
    let _guard = NPM
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    require("node");
    require("npm");
    let dir = interop_dir();
    if SDKS.iter().all(|sdk| {
        dir.join(format!("node_modules/{sdk}/package.json"))
            .exists()
    }) {
        return;
    }
    let status = Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund"])
        .current_dir(&dir)
        .status()
        .expect("npm runs");
    assert!(status.success(), "`npm ci` failed in {}", dir.display());
}

fn consume(sdk: &str, url: &str, shape: &str, question: &str) -> Value {
    consume_with(sdk, &[url, shape, question])
}

fn consume_with(sdk: &str, args: &[&str]) -> Value {
    let shape = args[1];
    let out = Command::new("node")
        .arg("consume.mjs")
        .args(args)
        .env("AI_SDK", sdk)
        .current_dir(interop_dir())
        .output()
        .expect("node runs");
    assert!(
        out.status.success(),
        "AI_SDK={sdk} node consume.mjs {shape} failed:\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let result: Value =
        serde_json::from_slice(&out.stdout).expect("consume.mjs prints one JSON line");
    assert_eq!(result["sdk"], sdk, "the package asked for was used");
    result
}

fn check(result: &Value, question: &str) {
    let expected = OfflineModel::answer(&[ChatMessage {
        role: Role::User,
        content: question.into(),
    }]);
    assert_eq!(result["deltas"], expected.as_str(), "the streamed deltas");
    assert_eq!(
        result["text"],
        expected.as_str(),
        "the message readUIMessageStream rebuilt"
    );
    assert_eq!(result["role"], "assistant");
    let types: Vec<&str> = result["types"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    assert_eq!(&types[..3], ["start", "start-step", "text-start"]);
    assert_eq!(
        &types[types.len() - 3..],
        ["text-end", "finish-step", "finish"]
    );
    assert!(types.iter().filter(|t| **t == "text-delta").count() > 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ai_sdk_default_chat_transport_reads_the_stream() {
    ensure_sdk_installed();
    for sdk in SDKS {
        let t = test_app(|_| {});
        let url = format!("http://{}/api/generate", serve(t.router).await);
        let question = "How do \"quotes\", ünïcödé and\nnewlines survive? 🚀";
        let result = tokio::task::spawn_blocking(move || consume(sdk, &url, "sdk", question))
            .await
            .unwrap();
        check(&result, question);
        // The transport sent the useChat body, and the service accepted it.
        let body = &result["requestBody"];
        assert_eq!(body["trigger"], "submit-message", "{sdk}");
        assert_eq!(body["messages"][0]["parts"][0]["type"], "text", "{sdk}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ai_sdk_parser_reads_the_stream_of_the_plain_body() {
    ensure_sdk_installed();
    for sdk in SDKS {
        let t = test_app(|_| {});
        let url = format!("http://{}/api/generate", serve(t.router).await);
        let question = "Why is the sky blue?";
        let result = tokio::task::spawn_blocking(move || consume(sdk, &url, "plain", question))
            .await
            .unwrap();
        check(&result, question);
        assert!(result["requestBody"]["messages"][0]["content"].is_string());
    }
}

/// The gateway profile, each test's own, with the anonymous tier's token
/// bucket refilling 2,000 a day instead of a minute, so that what a
/// request was charged shows exactly in the next one's headers.
async fn gateway_url(model: OfflineModel) -> String {
    use ratelimit_axum_example::{
        gateway_app, memory_set_limiter_factory, AppOptions, Config, Gateway,
    };
    use std::sync::Arc;

    let text = include_str!("../gateway.toml").replace("rate = \"2000/1m\"", "rate = \"2000/1d\"");
    let config = Config::from_toml_str(&text).unwrap();
    let gateway = Gateway::from_config(&config, memory_set_limiter_factory())
        .await
        .unwrap();
    let router = gateway_app(
        &AppOptions::from_config(&config).unwrap(),
        Arc::new(gateway),
        Arc::new(model),
    );
    format!("http://{}/api/generate", serve(router).await)
}

fn answer_words(question: &str) -> u64 {
    OfflineModel::answer(&[ChatMessage {
        role: Role::User,
        content: question.into(),
    }])
    .split_inclusive(' ')
    .count() as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ai_sdk_reads_the_gateway_usage_metadata() {
    ensure_sdk_installed();
    for sdk in SDKS {
        let url = gateway_url(OfflineModel::new(std::time::Duration::ZERO)).await;
        let question = "Why is the sky blue?";
        let result = tokio::task::spawn_blocking(move || consume(sdk, &url, "sdk", question))
            .await
            .unwrap();
        // The anonymous tier's max_output_tokens (256) holds the whole answer.
        check_text(&result, question);
        let types: Vec<&str> = result["types"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_str().unwrap())
            .collect();
        assert_eq!(
            &types[types.len() - 4..],
            ["text-end", "finish-step", "message-metadata", "finish"],
            "{sdk}"
        );
        // readUIMessageStream put the chunk's metadata on the message.
        let meta = &result["metadata"];
        let words = answer_words(question);
        assert_eq!(meta["usage"]["inputTokens"], 5, "{sdk}");
        assert_eq!(meta["usage"]["outputTokens"], words, "{sdk}");
        assert_eq!(meta["usage"]["totalTokens"], 5 + words, "{sdk}");
        // The anonymous bucket holds 2,000 tokens and refills 2,000 a day:
        // what the answer used is gone, give or take a token refilled.
        let remaining = meta["remainingTokens"].as_u64().unwrap();
        assert!(
            (2_000 - 5 - words..=2_000 - 5 - words + 1).contains(&remaining),
            "{sdk}: {remaining}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ai_sdk_abort_releases_the_lease_and_charges_the_partial_usage() {
    ensure_sdk_installed();
    let question = "Why is the sky blue?";
    let words = answer_words(question);
    let client = reqwest::Client::new();
    for sdk in SDKS {
        // Words every 20 ms; the anonymous tier streams one answer at a
        // time.
        let url = gateway_url(OfflineModel::new(std::time::Duration::from_millis(20))).await;
        let target = url.clone();
        let result = tokio::task::spawn_blocking(move || {
            consume_with(sdk, &[&target, "abort", question, "3"])
        })
        .await
        .unwrap();
        assert_eq!(result["deltas"], 3, "{sdk}: {result}");
        assert_eq!(result["ended"], "AbortError", "{sdk}: {result}");

        // The abort closed the connection: the service notices at its next
        // write and releases the lease. Until then a request is denied by
        // "streams" alone (and charged nothing); then it is let through.
        let mut tries = 0;
        let res = loop {
            let res = client
                .post(&url)
                .header("content-type", "application/json")
                .header("accept", "application/json")
                .body(format!(
                    r#"{{"messages":[{{"role":"user","content":"{question}"}}]}}"#
                ))
                .send()
                .await
                .unwrap();
            if res.status() != 429 {
                break res;
            }
            let body: Value = res.json().await.unwrap();
            assert_eq!(body["error"]["policy"], "streams", "{sdk}: {body}");
            tries += 1;
            assert!(
                tries < 500,
                "{sdk}: the aborted stream's lease was never released"
            );
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        };
        assert_eq!(res.status(), 200, "{sdk}");
        // Its headers show what the aborted answer was charged: the prompt
        // (5) and the words generated before the abort (at least those
        // read; at most those and the ones in flight: 8 buffered, one being
        // sent), not the estimate (5 + 256), not zero.
        let remaining: u64 = res.headers()["x-ratelimit-remaining-tokens"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        let charged = 2_000 - remaining - (5 + 256);
        let output = charged - 5;
        assert!(
            (3..=3 + 9).contains(&output),
            "{sdk}: charged {output} output tokens after 3 were read"
        );
        assert!(output < words, "{sdk}: not the whole answer");
        res.text().await.unwrap();
    }
}

fn check_text(result: &Value, question: &str) {
    let expected = OfflineModel::answer(&[ChatMessage {
        role: Role::User,
        content: question.into(),
    }]);
    assert_eq!(result["deltas"], expected.as_str());
    assert_eq!(result["text"], expected.as_str());
    assert_eq!(result["role"], "assistant");
}
