//! Every kind of bad input gets the OpenAI envelope, the right status and the offending field named,
//! and nothing is stored half-way.

mod common;

use common::*;
use serde_json::{Value, json};

async fn raw(srv: &TestServer, body: Vec<u8>) -> (u16, Value) {
    let r = srv
        .http
        .post(srv.url("/v1/chat/completions"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.expect("an envelope"))
}

fn assert_envelope(body: &Value, kind: &str, param: Option<&str>, code: Option<&str>) {
    let e = &body["error"];
    assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()), "{body}");
    assert_eq!(e["type"], kind, "{body}");
    assert_eq!(e["param"].as_str(), param, "{body}");
    assert_eq!(e["code"].as_str(), code, "{body}");
}

#[tokio::test]
async fn malformed_bodies() {
    let fake = fake().await;
    let srv = start(&fake).await;
    type Case = (&'static str, Vec<u8>, Option<&'static str>, Option<&'static str>);
    let cases: Vec<Case> = vec![
        (
            "malformed json",
            b"{\"model\": ".to_vec(),
            None,
            Some("invalid_json"),
        ),
        ("not an object", b"[1,2]".to_vec(), None, None),
        ("empty body", b"".to_vec(), None, Some("invalid_json")),
        (
            "invalid utf-8",
            b"{\"model\":\"gpt-test\",\"messages\":[{\"role\":\"user\",\"content\":\"\xff\"}]}".to_vec(),
            None,
            Some("invalid_encoding"),
        ),
        (
            "missing messages",
            br#"{"model":"gpt-test"}"#.to_vec(),
            Some("messages"),
            None,
        ),
        (
            "messages wrong type",
            br#"{"model":"gpt-test","messages":"hi"}"#.to_vec(),
            Some("messages"),
            None,
        ),
        (
            "model wrong type",
            br#"{"model":1,"messages":[]}"#.to_vec(),
            Some("model"),
            None,
        ),
        (
            "max_tokens wrong type",
            br#"{"model":"gpt-test","messages":[{"role":"user","content":"x"}],"max_tokens":"many"}"#
                .to_vec(),
            Some("max_tokens"),
            None,
        ),
        (
            "role wrong type",
            br#"{"model":"gpt-test","messages":[{"role":7,"content":"x"}]}"#.to_vec(),
            Some("messages[0].role"),
            None,
        ),
        (
            "empty messages",
            br#"{"model":"gpt-test","messages":[]}"#.to_vec(),
            Some("messages"),
            None,
        ),
        (
            "unknown role",
            br#"{"model":"gpt-test","messages":[{"role":"wizard","content":"x"}]}"#.to_vec(),
            Some("messages[0].role"),
            None,
        ),
        (
            "content wrong type",
            br#"{"model":"gpt-test","messages":[{"role":"user","content":5}]}"#.to_vec(),
            Some("messages[0].content"),
            None,
        ),
        (
            "n > 1",
            br#"{"model":"gpt-test","messages":[{"role":"user","content":"x"}],"n":2}"#.to_vec(),
            Some("n"),
            None,
        ),
        (
            "temperature out of range",
            br#"{"model":"gpt-test","messages":[{"role":"user","content":"x"}],"temperature":5}"#.to_vec(),
            Some("temperature"),
            None,
        ),
    ];
    for (name, body, param, code) in cases {
        let (status, env) = raw(&srv, body).await;
        assert_eq!(status, 400, "{name}: {env}");
        assert_envelope(&env, "invalid_request_error", param, code);
    }
    assert!(
        fake.chat_requests().is_empty(),
        "no bad request reached the upstream"
    );
    assert!(
        srv.state
            .store
            .list_usage(&srv.key_id, 10)
            .await
            .unwrap()
            .is_empty(),
        "nothing stored"
    );
    srv.stop().await;
}

#[tokio::test]
async fn oversized_body_is_413() {
    let fake = fake().await;
    let srv = start(&fake).await;
    let big = "x".repeat(70_000);
    let (status, env) = raw(
        &srv,
        serde_json::to_vec(&json!({"model": "gpt-test", "messages": [user(&big)]})).unwrap(),
    )
    .await;
    assert_eq!(status, 413);
    assert_envelope(&env, "invalid_request_error", None, Some("request_too_large"));
    srv.stop().await;
}

#[tokio::test]
async fn unknown_model_and_conversation_are_404() {
    let fake = fake().await;
    let srv = start(&fake).await;
    let (status, env) = srv.chat(json!({"model": "nope", "messages": [user("x")]})).await;
    assert_eq!(status, 404);
    assert_envelope(
        &env,
        "invalid_request_error",
        Some("model"),
        Some("model_not_found"),
    );

    let (status, env) = srv
        .chat(json!({"model": "gpt-test", "conversation": "conv_missing", "messages": [user("x")]}))
        .await;
    assert_eq!(status, 404);
    assert_envelope(
        &env,
        "invalid_request_error",
        Some("conversation"),
        Some("conversation_not_found"),
    );

    // A deleted conversation is gone too.
    let conv: Value = srv
        .post("/v1/conversations", json!({}))
        .await
        .json()
        .await
        .unwrap();
    let id = conv["id"].as_str().unwrap();
    let r = srv
        .http
        .delete(srv.url(&format!("/v1/conversations/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = srv
        .http
        .post(srv.url("/v1/chat/completions"))
        .header("x-moltbot-conversation", id)
        .json(&json!({"model": "gpt-test", "messages": [user("x")]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = srv.get(&format!("/v1/conversations/{id}/items")).await;
    assert_eq!(r.status(), 404);
    assert!(fake.chat_requests().is_empty());
    // Unknown route and wrong method: envelopes too.
    let r = srv.get("/v1/nothing-here").await;
    assert_eq!(r.status(), 404);
    assert_envelope(
        &r.json().await.unwrap(),
        "invalid_request_error",
        None,
        Some("unknown_url"),
    );
    let r = srv.get("/v1/chat/completions").await;
    assert_eq!(r.status(), 405);
    assert_envelope(
        &r.json().await.unwrap(),
        "invalid_request_error",
        None,
        Some("method_not_allowed"),
    );
    srv.stop().await;
}

#[tokio::test]
async fn context_length_errors() {
    let fake = fake().await;
    let srv = start(&fake).await;
    let (status, env) = srv
        .chat(json!({"model": "gpt-test", "messages": [user("x")], "max_tokens": 5000}))
        .await;
    assert_eq!(status, 400);
    assert_envelope(
        &env,
        "invalid_request_error",
        Some("max_tokens"),
        Some("context_length_exceeded"),
    );

    let long = "word ".repeat(4000);
    let (status, env) = srv
        .chat(json!({"model": "gpt-test", "messages": [user(&long)], "max_tokens": 1000}))
        .await;
    assert_eq!(status, 400);
    assert_envelope(
        &env,
        "invalid_request_error",
        Some("messages"),
        Some("context_length_exceeded"),
    );

    let huge = "word ".repeat(5000);
    let (status, env) = srv
        .chat(json!({"model": "gpt-test", "messages": [user(&huge)]}))
        .await;
    assert_eq!(
        status, 400,
        "a prompt larger than the whole context cannot be clamped"
    );
    assert_envelope(
        &env,
        "invalid_request_error",
        Some("messages"),
        Some("context_length_exceeded"),
    );
    assert!(fake.chat_requests().is_empty());
    srv.stop().await;
}

#[tokio::test]
async fn idempotency_key_reuse_with_another_body_is_409() {
    let fake = fake().await;
    let srv = start(&fake).await;
    let send = |body: Value| {
        srv.http
            .post(srv.url("/v1/chat/completions"))
            .header("idempotency-key", "k-1")
            .json(&body)
            .send()
    };
    let first = send(json!({"model": "gpt-test", "messages": [user("one")]}))
        .await
        .unwrap();
    assert_eq!(first.status(), 200);
    let first: Value = first.json().await.unwrap();
    let again = send(json!({"model": "gpt-test", "messages": [user("one")]}))
        .await
        .unwrap();
    assert_eq!(again.status(), 200);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    let again: Value = again.json().await.unwrap();
    assert_eq!(again, first, "a retry replays the first result");
    let other = send(json!({"model": "gpt-test", "messages": [user("two")]}))
        .await
        .unwrap();
    assert_eq!(other.status(), 409);
    assert_envelope(
        &other.json().await.unwrap(),
        "invalid_request_error",
        None,
        Some("idempotency_key_reused"),
    );
    assert_eq!(fake.chat_requests().len(), 1, "one turn, not three");
    assert_eq!(
        srv.state.store.list_usage(&srv.key_id, 10).await.unwrap().len(),
        1
    );
    srv.stop().await;
}
