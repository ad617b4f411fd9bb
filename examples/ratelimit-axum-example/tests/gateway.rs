//! The gateway profile over real loopback sockets: API-key tiers, the
//! three policies checked at once, their headers, settling with the
//! actual usage (complete, aborted by the client, failed), and the token
//! budget under concurrent requests.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures_util::StreamExt as _;
use ratelimit_axum_example::model::{Deltas, Events};
use ratelimit_axum_example::{
    factory_of, gateway_app, AppOptions, ChatMessage, Config, Gateway, KeyHasher, Model,
    ModelError, ModelEvent, ModelRequest, OfflineModel, Secret, SetLimiterFactory,
};
use ratelimit_core::{
    Error, ManualClock, PolicySet, Receipt, ReferenceSetLimiter, SetCheck, SetDecision, SetLimiter,
};
use reqwest::StatusCode;
use serde_json::Value;

use common::{chunks, serve, WINDOW_START_US};

const SECRET: &str = "test-secret-0123456789";
const FREE_KEY: &str = "sk-test-free";
const PRO_KEY: &str = "sk-test-pro";

/// "Why is the sky blue?": 20 bytes, 5 tokens by the estimator.
const PROMPT_TOKENS: u64 = 5;

/// The offline model's answer to the test question has more words than
/// any tier's `max_output_tokens` here, so an answer uses exactly its
/// tier's `max_output_tokens`.
fn config(tokens: u64, max_output: u64, free_streams: u64) -> Config {
    let hasher = KeyHasher::new(Secret::new(SECRET.to_owned())).unwrap();
    let text = format!(
        r#"
[gateway]
key_secret = "{SECRET}"

[[keys]]
hash = "{free}"
tier = "free"

[[keys]]
hash = "{pro}"
tier = "pro"

[tiers.anonymous]
max_output_tokens = 10
[[tiers.anonymous.limits]]
name = "requests"
algorithm = "fixed_window"
limit = 5
window = "30s"
[[tiers.anonymous.limits]]
name = "tokens"
algorithm = "fixed_window"
limit = 1000
window = "1m"
settle = true
[[tiers.anonymous.limits]]
name = "streams"
algorithm = "concurrency"
limit = 1
lease_ttl = "60s"

[tiers.free]
max_output_tokens = {max_output}
[[tiers.free.limits]]
name = "requests"
algorithm = "fixed_window"
limit = 100
window = "1m"
[[tiers.free.limits]]
name = "tokens"
algorithm = "token_bucket"
capacity = {tokens}
rate = "{tokens}/1m"
settle = true
[[tiers.free.limits]]
name = "streams"
algorithm = "concurrency"
limit = {free_streams}
lease_ttl = "60s"

[tiers.pro]
max_output_tokens = 30
[[tiers.pro.limits]]
name = "requests"
algorithm = "fixed_window"
limit = 1000
window = "1m"
[[tiers.pro.limits]]
name = "tokens"
algorithm = "fixed_window"
limit = 100000
window = "1m"
settle = true
[[tiers.pro.limits]]
name = "streams"
algorithm = "concurrency"
limit = 8
lease_ttl = "60s"
"#,
        free = hasher.hex(FREE_KEY.as_bytes()),
        pro = hasher.hex(PRO_KEY.as_bytes()),
    );
    let mut config = Config::from_toml_str(&text).unwrap();
    config.model.delta_delay = Duration::ZERO;
    config
}

/// The limiters the gateway built, by tier name (sorted: anonymous, free,
/// pro), on one manual clock.
struct Limiters(Arc<Mutex<Vec<Arc<ReferenceSetLimiter>>>>);

impl Limiters {
    fn tier(&self, i: usize) -> Arc<ReferenceSetLimiter> {
        Arc::clone(&self.0.lock().unwrap()[i])
    }
}

struct Served {
    url: String,
    limiters: Limiters,
}

fn factory(clock: &ManualClock) -> (SetLimiterFactory, Limiters) {
    let built = Arc::new(Mutex::new(Vec::new()));
    let clock = clock.clone();
    let sink = Arc::clone(&built);
    let factory: SetLimiterFactory = factory_of(move |set: PolicySet| {
        let limiter = Arc::new(ReferenceSetLimiter::with_clock(set, clock.clone()));
        sink.lock().unwrap().push(Arc::clone(&limiter));
        limiter as Arc<dyn SetLimiter>
    });
    (factory, Limiters(built))
}

async fn start_with(config: &Config, model: Arc<dyn Model>, factory: SetLimiterFactory) -> String {
    let gateway = Gateway::from_config(config, factory).await.unwrap();
    let options = AppOptions::from_config(config).unwrap();
    let addr = serve(gateway_app(&options, Arc::new(gateway), model)).await;
    format!("http://{addr}/api/generate")
}

async fn start(config: &Config, model: Arc<dyn Model>) -> Served {
    let clock = ManualClock::new(WINDOW_START_US);
    let (factory, limiters) = factory(&clock);
    let url = start_with(config, model, factory).await;
    Served { url, limiters }
}

fn offline() -> Arc<dyn Model> {
    Arc::new(OfflineModel::new(Duration::ZERO))
}

fn key_of(api_key: &str) -> Vec<u8> {
    let hasher = KeyHasher::new(Secret::new(SECRET.to_owned())).unwrap();
    [b"key:".as_slice(), &hasher.hash(api_key.as_bytes())].concat()
}

async fn post(url: &str, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut req = reqwest::Client::new()
        .post(url)
        .header("content-type", "application/json")
        .body(common::PLAIN_BODY);
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    req.send().await.unwrap()
}

fn h<'a>(res: &'a reqwest::Response, name: &str) -> &'a str {
    res.headers()
        .get(name)
        .unwrap_or_else(|| panic!("no {name}"))
        .to_str()
        .unwrap()
}

fn metadata(body: &str) -> Value {
    let chunks = chunks(body);
    let meta: Vec<&Value> = chunks
        .iter()
        .filter(|c| c["type"] == "message-metadata")
        .collect();
    assert_eq!(meta.len(), 1, "one message-metadata chunk: {chunks:?}");
    meta[0]["messageMetadata"].clone()
}

#[tokio::test]
async fn a_key_is_counted_in_its_tier_with_every_policy_in_the_headers() {
    let s = start(&config(1_000, 40, 2), offline()).await;
    let bearer = format!("Bearer {FREE_KEY}");
    let res = post(&s.url, &[("authorization", &bearer)]).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        h(&res, "ratelimit-policy"),
        r#""requests";q=100;w=60, "tokens";q=1000;w=60;qu="tokens", "streams";q=2;qu="concurrent-requests""#
    );
    // 45 tokens reserved of a bucket refilling 1,000 per minute: full
    // again in 2.7 s.
    assert_eq!(
        h(&res, "ratelimit"),
        r#""requests";r=99;t=60, "tokens";r=955;t=3, "streams";r=1"#
    );
    assert_eq!(h(&res, "x-ratelimit-limit-requests"), "100");
    assert_eq!(h(&res, "x-ratelimit-remaining-requests"), "99");
    assert_eq!(h(&res, "x-ratelimit-reset-requests"), "1m0s");
    assert_eq!(h(&res, "x-ratelimit-limit-tokens"), "1000");
    assert_eq!(h(&res, "x-ratelimit-remaining-tokens"), "955");
    assert_eq!(h(&res, "x-ratelimit-reset-tokens"), "2.7s");
    assert!(res.headers().get("retry-after").is_none());
    let meta = metadata(&res.text().await.unwrap());
    assert_eq!(meta["usage"]["inputTokens"], PROMPT_TOKENS);
    assert_eq!(meta["usage"]["outputTokens"], 40);
    assert_eq!(meta["usage"]["totalTokens"], PROMPT_TOKENS + 40);
    assert_eq!(meta["remainingTokens"], 1_000 - PROMPT_TOKENS - 40);

    // The pro key counts apart, in its own tier.
    let bearer = format!("bearer {PRO_KEY}");
    let res = post(&s.url, &[("authorization", &bearer)]).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert!(h(&res, "ratelimit").starts_with(r#""requests";r=999;t=60, "tokens";r=99965;"#));
    res.text().await.unwrap();
    let free = s.limiters.tier(1).peek_set_sync(&key_of(FREE_KEY));
    assert_eq!(free.decisions[0].remaining, 99);
    assert_eq!(free.decisions[2].remaining, 2, "the lease was released");
}

#[tokio::test]
async fn unknown_and_malformed_keys_are_401_in_json_and_count_nothing() {
    let s = start(&config(1_000, 40, 2), offline()).await;
    for auth in [
        vec!["Bearer sk-unknown"],
        vec!["Basic dXNlcjpwYXNz"],
        vec!["Bearer"],
        vec!["Bearer two words"],
        vec![FREE_KEY],
        vec!["Bearer sk-test-free", "Bearer sk-test-pro"],
    ] {
        let mut req = reqwest::Client::new()
            .post(&s.url)
            .header("content-type", "application/json")
            .body(common::PLAIN_BODY);
        for value in &auth {
            req = req.header("authorization", *value);
        }
        let res = req.send().await.unwrap();
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "{auth:?}");
        assert_eq!(h(&res, "content-type"), "application/json");
        assert_eq!(h(&res, "www-authenticate"), "Bearer");
        assert!(res.headers().get("ratelimit").is_none());
        let body: Value = res.json().await.unwrap();
        let kind = body["error"]["type"].as_str().unwrap();
        let expected = if auth == ["Bearer sk-unknown"] {
            "invalid_api_key"
        } else {
            "invalid_authorization"
        };
        assert_eq!(kind, expected, "{auth:?}");
        let text = body.to_string();
        assert!(!text.contains("sk-"), "the key is not echoed: {text}");
    }
    for tier in 0..3 {
        assert_eq!(s.limiters.tier(tier).len(), 0, "nothing counted");
    }
}

#[tokio::test]
async fn anonymous_callers_get_the_seed_rule_and_a_429_plain_or_json() {
    let s = start(&config(1_000, 40, 2), offline()).await;
    for i in 1..=5u64 {
        let res = post(&s.url, &[]).await;
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(
            h(&res, "ratelimit"),
            format!(
                r#""requests";r={};t=30, "tokens";r={};t=60, "streams";r=0"#,
                5 - i,
                // Each answer used its whole estimate: 5 + 10 tokens.
                1_000 - 15 * i
            )
        );
        res.text().await.unwrap();
    }
    let res = post(&s.url, &[]).await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(h(&res, "retry-after"), "30");
    assert_eq!(
        h(&res, "ratelimit-policy"),
        r#""requests";q=5;w=30, "tokens";q=1000;w=60;qu="tokens", "streams";q=1;qu="concurrent-requests""#
    );
    assert_eq!(
        h(&res, "ratelimit"),
        r#""requests";r=0;t=30, "tokens";r=910;t=60, "streams";r=0"#
    );
    assert_eq!(h(&res, "content-type"), "text/plain; charset=utf-8");
    assert_eq!(res.text().await.unwrap(), "Ratelimited!");

    let res = post(&s.url, &[("accept", "application/json")]).await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(h(&res, "retry-after"), "30");
    assert_eq!(h(&res, "content-type"), "application/json");
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["type"], "rate_limited");
    assert_eq!(body["error"]["policy"], "requests");
    assert_eq!(body["error"]["retry_after"], 30);
}

#[tokio::test]
async fn a_prompt_over_the_whole_token_budget_is_413_not_a_wait() {
    let s = start(&config(44, 40, 2), offline()).await;
    let bearer = format!("Bearer {FREE_KEY}");
    let res = post(&s.url, &[("authorization", &bearer)]).await;
    assert_eq!(res.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["type"], "request_too_large");
    assert_eq!(body["error"]["policy"], "tokens");
    assert_eq!(body["error"]["tokens"], 45);
}

/// Reads `res` until `n` text deltas have arrived, then returns how many
/// arrived (the stream is dropped by the caller).
async fn read_deltas(res: reqwest::Response, n: usize) -> usize {
    let mut body = res.bytes_stream();
    let mut text = String::new();
    loop {
        let chunk = body.next().await.expect("the stream ended early").unwrap();
        text.push_str(std::str::from_utf8(&chunk).unwrap());
        let seen = text.matches(r#""type":"text-delta""#).count();
        if seen >= n {
            return seen;
        }
    }
}

/// Polls until `limiter` holds no lease for `key`: the release is an
/// event the test waits for, with a deadline far below the lease TTL
/// (60 s), so only a release, not an expiry, can end the wait.
async fn until_released(limiter: &ReferenceSetLimiter, key: &[u8]) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while limiter.leases_held(key) > 0 {
        assert!(Instant::now() < deadline, "the lease was not released");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_client_abort_releases_the_lease_and_charges_what_was_generated() {
    // One stream at a time, words every 20 ms, 40 tokens at most.
    let config = config(1_000, 40, 1);
    let s = start(
        &config,
        Arc::new(OfflineModel::new(Duration::from_millis(20))),
    )
    .await;
    let bearer = format!("Bearer {FREE_KEY}");
    let key = key_of(FREE_KEY);
    let res = post(&s.url, &[("authorization", &bearer)]).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(h(&res, "x-ratelimit-remaining-tokens"), "955");
    let seen = read_deltas(res, 3).await;
    // The response is dropped: the connection closes mid-stream.
    let limiter = s.limiters.tier(1);
    assert_eq!(limiter.leases_held(&key), 1);
    until_released(&limiter, &key).await;

    // The next request is not denied for streams, and its headers show
    // what the aborted one was charged: the prompt and the words
    // generated before the abort (at least those read; at most those and
    // the ones in flight: 8 buffered and one being sent), not the
    // estimate, not zero.
    let res = post(&s.url, &[("authorization", &bearer)]).await;
    assert_eq!(res.status(), StatusCode::OK);
    let remaining: u64 = h(&res, "x-ratelimit-remaining-tokens").parse().unwrap();
    let charged = 1_000 - remaining - (PROMPT_TOKENS + 40);
    let output = charged - PROMPT_TOKENS;
    assert!(
        (seen as u64..=seen as u64 + 9).contains(&output),
        "charged {output} output tokens after {seen} were read"
    );
    assert!(output < 40, "not the estimate: {output}");
    // This one streams to the end and settles with its whole usage.
    let meta = metadata(&res.text().await.unwrap());
    assert_eq!(meta["remainingTokens"], remaining);
    assert_eq!(limiter.leases_held(&key), 0);
}

/// Streams `deltas` one-token words, then fails.
#[derive(Debug)]
struct FailsAfter {
    deltas: usize,
}

#[async_trait]
impl Model for FailsAfter {
    async fn stream(&self, _messages: Vec<ChatMessage>) -> Result<Deltas, ModelError> {
        unreachable!("the gateway calls generate")
    }

    async fn generate(&self, _request: ModelRequest) -> Result<Events, ModelError> {
        let words = (0..self.deltas).map(|i| {
            Ok(ModelEvent::Delta {
                text: format!("w{i} "),
                tokens: 1,
            })
        });
        let failure = Err(ModelError::Protocol("upstream detail 7f3a".into()));
        Ok(futures_util::stream::iter(words.chain([failure])).boxed())
    }
}

#[tokio::test]
async fn a_model_error_charges_the_prompt_and_what_was_generated() {
    let s = start(&config(1_000, 40, 1), Arc::new(FailsAfter { deltas: 3 })).await;
    let bearer = format!("Bearer {FREE_KEY}");
    let res = post(&s.url, &[("authorization", &bearer)]).await;
    assert_eq!(res.status(), StatusCode::OK);
    let body = res.text().await.unwrap();
    assert!(!body.contains("7f3a"), "no upstream detail: {body}");
    let chunks = chunks(&body);
    assert_eq!(chunks.last().unwrap()["type"], "error");
    let meta = metadata(&body);
    assert_eq!(meta["usage"]["inputTokens"], PROMPT_TOKENS);
    assert_eq!(meta["usage"]["outputTokens"], 3);
    assert_eq!(meta["remainingTokens"], 1_000 - PROMPT_TOKENS - 3);
    let after = s.limiters.tier(1).peek_set_sync(&key_of(FREE_KEY));
    assert_eq!(after.decisions[1].remaining, 1_000 - PROMPT_TOKENS - 3);
    assert_eq!(after.decisions[2].remaining, 1, "the lease was released");
}

#[derive(Debug)]
struct Panics;

#[async_trait]
impl Model for Panics {
    async fn stream(&self, _messages: Vec<ChatMessage>) -> Result<Deltas, ModelError> {
        unreachable!("the gateway calls generate")
    }

    async fn generate(&self, _request: ModelRequest) -> Result<Events, ModelError> {
        panic!("model bug")
    }
}

#[tokio::test]
async fn a_panicking_model_ends_the_stream_releases_the_lease_and_keeps_the_estimate() {
    let s = start(&config(1_000, 40, 1), Arc::new(Panics)).await;
    let bearer = format!("Bearer {FREE_KEY}");
    let res = post(&s.url, &[("authorization", &bearer)]).await;
    assert_eq!(res.status(), StatusCode::OK);
    let body = res.text().await.unwrap();
    assert!(body.ends_with("data: [DONE]\n\n"), "{body}");
    assert_eq!(chunks(&body).last().unwrap()["type"], "error", "{body}");
    let after = s.limiters.tier(1).peek_set_sync(&key_of(FREE_KEY));
    assert_eq!(after.decisions[2].remaining, 1, "the lease was released");
    assert_eq!(
        after.decisions[1].remaining,
        1_000 - PROMPT_TOKENS - 40,
        "the estimate (prompt and max output) stays charged"
    );
}

#[tokio::test]
async fn concurrent_answers_never_use_more_than_the_token_budget() {
    // 45 tokens per answer (estimate and actual alike: the offline
    // model's estimates are upper bounds, so the documented overshoot
    // bound is zero); the budget fits three answers and a bit.
    let budget = 3 * 45 + 20;
    let s = start(&config(budget, 40, 64), offline()).await;
    let bearer = format!("Bearer {FREE_KEY}");
    let answers = futures_util::future::join_all((0..12).map(|_| {
        let url = s.url.clone();
        let bearer = bearer.clone();
        async move {
            let res = post(&url, &[("authorization", &bearer)]).await;
            match res.status() {
                StatusCode::OK => Some(metadata(&res.text().await.unwrap())),
                StatusCode::TOO_MANY_REQUESTS => {
                    assert!(h(&res, "ratelimit").contains(r#""tokens";r="#));
                    None
                }
                other => panic!("unexpected {other}"),
            }
        }
    }))
    .await;
    let used: Vec<u64> = answers
        .iter()
        .flatten()
        .map(|m| m["usage"]["totalTokens"].as_u64().unwrap())
        .collect();
    assert_eq!(used.len(), 3, "exactly the answers that fit: {used:?}");
    assert!(used.iter().sum::<u64>() <= budget);
}

/// A set limiter whose store is always away.
#[derive(Debug)]
struct Down(PolicySet);

#[async_trait]
impl SetLimiter for Down {
    fn policy_set(&self) -> &PolicySet {
        &self.0
    }
    async fn check_set(&self, _key: &[u8], _costs: &[u64]) -> Result<SetCheck, Error> {
        Err(Error::new(ratelimit_core::ErrorKind::Backend))
    }
    async fn settle(&self, _receipt: Receipt, _actual: &[u64]) -> Result<SetDecision, Error> {
        Err(Error::new(ratelimit_core::ErrorKind::Backend))
    }
    async fn renew(&self, _receipt: &mut Receipt) -> Result<bool, Error> {
        Err(Error::new(ratelimit_core::ErrorKind::Backend))
    }
    async fn peek_set(&self, _key: &[u8]) -> Result<SetDecision, Error> {
        Err(Error::new(ratelimit_core::ErrorKind::Backend))
    }
    async fn reset_set(&self, _key: &[u8]) -> Result<(), Error> {
        Err(Error::new(ratelimit_core::ErrorKind::Backend))
    }
    fn release(&self, _receipt: Receipt) {}
}

#[tokio::test]
async fn a_store_failure_is_503_with_retry_after_never_a_429() {
    let factory: SetLimiterFactory = factory_of(|set| Arc::new(Down(set)) as Arc<dyn SetLimiter>);
    let url = start_with(&config(1_000, 40, 2), offline(), factory).await;
    for accept in ["text/plain", "application/json"] {
        let res = post(&url, &[("accept", accept)]).await;
        assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(h(&res, "retry-after"), "1");
        assert!(res.headers().get("ratelimit").is_none());
        res.text().await.unwrap();
    }
}
