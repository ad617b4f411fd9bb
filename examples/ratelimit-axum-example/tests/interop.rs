//! Interop with the real client: the `ai` npm package (v5, pinned in
//! `interop/package-lock.json`) consumes the service's stream with its own
//! parser, schema and message reader. Needs `node` and `npm` on PATH; the
//! test installs the package itself (`npm ci`) when `node_modules` is
//! missing, and fails loudly when node or npm is missing.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use common::*;
use ratelimit_axum_example::{ChatMessage, OfflineModel, Role};
use serde_json::Value;

/// One `npm ci` at a time: the tests of this file share `node_modules`.
static NPM: Mutex<()> = Mutex::new(());

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
    if dir.join("node_modules/ai/package.json").exists() {
        return;
    }
    let status = Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund"])
        .current_dir(&dir)
        .status()
        .expect("npm runs");
    assert!(status.success(), "`npm ci` failed in {}", dir.display());
}

fn consume(url: &str, shape: &str, question: &str) -> Value {
    let out = Command::new("node")
        .arg("consume.mjs")
        .args([url, shape, question])
        .current_dir(interop_dir())
        .output()
        .expect("node runs");
    assert!(
        out.status.success(),
        "node consume.mjs {shape} failed:\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("consume.mjs prints one JSON line")
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
    let t = test_app(|_| {});
    let url = format!("http://{}/api/generate", serve(t.router).await);
    let question = "How do \"quotes\", ünïcödé and\nnewlines survive? 🚀";
    let result = tokio::task::spawn_blocking(move || consume(&url, "sdk", question))
        .await
        .unwrap();
    check(&result, question);
    // The transport sent the useChat body, and the service accepted it.
    let body = &result["requestBody"];
    assert_eq!(body["trigger"], "submit-message");
    assert_eq!(body["messages"][0]["parts"][0]["type"], "text");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ai_sdk_parser_reads_the_stream_of_the_plain_body() {
    ensure_sdk_installed();
    let t = test_app(|_| {});
    let url = format!("http://{}/api/generate", serve(t.router).await);
    let question = "Why is the sky blue?";
    let result = tokio::task::spawn_blocking(move || consume(&url, "plain", question))
        .await
        .unwrap();
    check(&result, question);
    assert!(result["requestBody"]["messages"][0]["content"].is_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ai_sdk_reads_the_gateway_usage_metadata() {
    use ratelimit_axum_example::{
        gateway_app, memory_set_limiter_factory, AppOptions, Config, Gateway,
    };
    use std::sync::Arc;

    ensure_sdk_installed();
    let config = Config::from_toml_str(include_str!("../gateway.toml")).unwrap();
    let gateway = Gateway::from_config(&config, memory_set_limiter_factory())
        .await
        .unwrap();
    let router = gateway_app(
        &AppOptions::from_config(&config).unwrap(),
        Arc::new(gateway),
        Arc::new(OfflineModel::new(std::time::Duration::ZERO)),
    );
    let url = format!("http://{}/api/generate", serve(router).await);
    let question = "Why is the sky blue?";
    let result = tokio::task::spawn_blocking(move || consume(&url, "sdk", question))
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
        ["text-end", "finish-step", "message-metadata", "finish"]
    );
    // readUIMessageStream put the chunk's metadata on the message.
    let meta = &result["metadata"];
    let words = OfflineModel::answer(&[ChatMessage {
        role: Role::User,
        content: question.into(),
    }])
    .split_inclusive(' ')
    .count() as u64;
    assert_eq!(meta["usage"]["inputTokens"], 5);
    assert_eq!(meta["usage"]["outputTokens"], words);
    assert_eq!(meta["usage"]["totalTokens"], 5 + words);
    // The anonymous bucket holds 2,000 tokens; a refill of a few tokens
    // may come in while the answer streams, never more than were used.
    let remaining = meta["remainingTokens"].as_u64().unwrap();
    assert!(
        (2_000 - 5 - words..=2_000).contains(&remaining),
        "{remaining}"
    );
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
