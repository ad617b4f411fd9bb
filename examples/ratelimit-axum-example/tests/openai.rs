//! The OpenAI-compatible provider against a fake upstream on loopback.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use common::*;
use futures_util::StreamExt;
use http_body_util::BodyExt;
use ratelimit_axum_example::{
    app, AppOptions, ChatMessage, Config, Model, ModelError, OpenAiCompatible, Role, Secret,
};
use ratelimit_core::ReferenceLimiter;
use serde_json::{json, Value};
use tower::ServiceExt;

fn event(delta: &str) -> String {
    format!(
        "data: {}\n\n",
        json!({"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":delta},"finish_reason":null}]})
    )
}

/// The fake provider: the model name picks the behaviour.
async fn completions(headers: HeaderMap, Json(body): Json<Value>) -> Response {
    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some("Bearer test-key") {
        return (
            StatusCode::UNAUTHORIZED,
            r#"{"error":{"message":"Incorrect API key provided: sk-secret"}}"#,
        )
            .into_response();
    }
    assert_eq!(body["stream"], true);
    assert_eq!(body["messages"][0]["role"], "user");
    let sse = |text: String| ([("content-type", "text/event-stream")], text).into_response();
    match body["model"].as_str().unwrap() {
        "good" => {
            let role = "data: {\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\"}}]}\n\n";
            let finish =
                "data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n";
            sse(format!(
                "{role}: keep-alive\n\n{}{}{}{finish}data: [DONE]\n\n",
                event("Hello"),
                event(", "),
                event("wörld")
            ))
        }
        "breaks" => sse(format!(
            "{}data: {}\n\n",
            event("partial "),
            json!({"error":{"message":"internal upstream detail db-7","type":"server_error"}})
        )),
        "truncated" => sse(event("cut ")),
        other => panic!("unexpected model {other}"),
    }
}

async fn upstream() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    let router = Router::new().route("/v1/chat/completions", post(completions));
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    format!("http://{addr}/v1")
}

fn provider(base: &str, key: &str, model: &str) -> OpenAiCompatible {
    OpenAiCompatible::new(
        base,
        Secret::new(key.to_owned()),
        model,
        Duration::from_secs(5),
    )
    .unwrap()
}

fn question() -> Vec<ChatMessage> {
    vec![ChatMessage {
        role: Role::User,
        content: "Hi".into(),
    }]
}

#[tokio::test]
async fn streams_deltas_until_done() {
    let base = upstream().await;
    let deltas: Vec<_> = provider(&base, "test-key", "good")
        .stream(question())
        .await
        .unwrap()
        .collect()
        .await;
    let deltas: Vec<String> = deltas.into_iter().map(Result::unwrap).collect();
    assert_eq!(deltas, ["Hello", ", ", "wörld"]);
}

#[tokio::test]
async fn upstream_401_is_an_error_before_the_stream() {
    let base = upstream().await;
    let err = provider(&base, "wrong", "good")
        .stream(question())
        .await
        .err()
        .expect("an error");
    assert!(
        matches!(
            err,
            ModelError::Upstream {
                status: Some(401),
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(err.public_text(), "The model provider refused the request.");
}

#[tokio::test]
async fn mid_stream_error_event_and_truncation_are_errors() {
    let base = upstream().await;
    let items: Vec<_> = provider(&base, "test-key", "breaks")
        .stream(question())
        .await
        .unwrap()
        .collect()
        .await;
    assert_eq!(items[0].as_ref().unwrap(), "partial ");
    assert!(matches!(
        items[1],
        Err(ModelError::Upstream { status: None, .. })
    ));
    assert_eq!(items.len(), 2);

    let items: Vec<_> = provider(&base, "test-key", "truncated")
        .stream(question())
        .await
        .unwrap()
        .collect()
        .await;
    assert!(matches!(
        items.last().unwrap(),
        Err(ModelError::Protocol(_))
    ));
}

#[tokio::test]
async fn unreachable_provider_is_a_transport_error() {
    // Bind and drop a listener: nothing listens on that port any more.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let err = provider(&format!("http://127.0.0.1:{port}/v1"), "k", "good")
        .stream(question())
        .await
        .err()
        .expect("an error");
    assert!(matches!(err, ModelError::Transport(_)), "{err}");
}

async fn through_the_service(model: Arc<dyn Model>) -> Vec<Value> {
    let config = Config::default();
    let router = app(
        &AppOptions::from_config(&config).unwrap(),
        Arc::new(ReferenceLimiter::new(config.limit)),
        model,
    );
    let res = router
        .oneshot(generate_request("192.0.2.1:1", PLAIN_BODY, &[]))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let body = res.into_body().collect().await.unwrap().to_bytes();
    let body = String::from_utf8(body.to_vec()).unwrap();
    assert!(
        !body.contains("sk-secret") && !body.contains("db-7"),
        "no upstream detail leaks: {body}"
    );
    chunks(&body)
}

#[tokio::test]
async fn the_service_streams_the_provider_and_maps_its_errors_to_error_chunks() {
    let base = upstream().await;
    let chunks = through_the_service(Arc::new(provider(&base, "test-key", "good"))).await;
    assert_eq!(streamed_text(&chunks), "Hello, wörld");
    assert_eq!(shape(&chunks).last().unwrap(), "finish");

    let chunks = through_the_service(Arc::new(provider(&base, "bad-key", "good"))).await;
    assert_eq!(shape(&chunks), ["start", "start-step", "error"]);
    assert_eq!(
        chunks[2]["errorText"],
        "The model provider refused the request."
    );

    let chunks = through_the_service(Arc::new(provider(&base, "test-key", "breaks"))).await;
    assert_eq!(
        shape(&chunks),
        ["start", "start-step", "text-start", "text-delta", "error"]
    );
    assert_eq!(
        chunks.last().unwrap()["errorText"],
        "The model failed to answer."
    );
}

#[tokio::test]
async fn build_model_picks_openai_from_the_api_key() {
    let base = upstream().await;
    let mut config = Config::default();
    config
        .apply_env(|name| match name {
            "OPENAI_API_KEY" => Some("test-key".into()),
            "OPENAI_BASE_URL" => Some(base.clone()),
            "OPENAI_MODEL" => Some("good".into()),
            _ => None,
        })
        .unwrap();
    let model = ratelimit_axum_example::build_model(&config).unwrap();
    assert_eq!(
        streamed_text(&through_the_service(model).await),
        "Hello, wörld"
    );
}
