//! The fake upstream, exercised with a plain HTTP client.

use std::time::Duration;

use futures::StreamExt;
use moltbot_testkit::{Failure, FakeConfig, FakeUpstream, Script, StatusReply};
use serde_json::{Value, json};

fn client() -> reqwest::Client {
    reqwest::Client::new()
}

fn chat_body(stream: bool) -> Value {
    json!({"model": "m", "stream": stream, "stream_options": {"include_usage": true},
        "messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "ping"}]})
}

async fn post(fake: &FakeUpstream, key: &str, body: &Value) -> reqwest::Response {
    client()
        .post(format!("{}/chat/completions", fake.base_url()))
        .bearer_auth(key)
        .json(body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn lists_models() {
    let fake = FakeUpstream::start(FakeConfig::default()).await;
    let v: Value = client()
        .get(format!("{}/models", fake.base_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["data"][0]["id"], "fake-model");
}

#[tokio::test]
async fn non_streaming_echo_and_recording() {
    let fake = FakeUpstream::start(FakeConfig {
        default_script: Script::echo(),
        ..Default::default()
    })
    .await;
    let v: Value = post(&fake, "sk-x", &chat_body(false)).await.json().await.unwrap();
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["choices"][0]["message"]["content"], "echo: ping");
    assert_eq!(v["usage"]["prompt_tokens"], 2);
    let reqs = fake.requests();
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0].bearer(), Some("sk-x"));
    assert_eq!(reqs[0].body["model"], "m");
}

#[tokio::test]
async fn streams_sse_with_usage_and_done() {
    let fake = FakeUpstream::start(FakeConfig::default()).await;
    fake.push(Script::text("abcdef").chunks(3));
    let resp = post(&fake, "k", &chat_body(true)).await;
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let text = resp.text().await.unwrap();
    assert_eq!(text.matches("data: ").count(), 1 + 3 + 1 + 1 + 1);
    assert!(text.contains("\"completion_tokens\":3"));
    assert!(text.ends_with("data: [DONE]\n\n"));
    assert_eq!(fake.closed_count(), 0);
}

#[tokio::test]
async fn per_key_status_and_retry_after() {
    let fake = FakeUpstream::start(FakeConfig::default()).await;
    fake.set_default(Script::default().key_status("sk-a", StatusReply::new(429).retry_after("7")));
    let resp = post(&fake, "sk-a", &chat_body(true)).await;
    assert_eq!(resp.status(), 429);
    assert_eq!(resp.headers()["retry-after"], "7");
    let err: Value = resp.json().await.unwrap();
    assert!(err["error"]["message"].is_string());
    assert_eq!(post(&fake, "sk-b", &chat_body(true)).await.status(), 200);
}

#[tokio::test]
async fn observes_client_dropping_a_stream() {
    let fake = FakeUpstream::start(FakeConfig::default()).await;
    fake.push(
        Script::text("abcdefghij")
            .chunks(10)
            .chunk_interval(Duration::from_millis(50)),
    );
    let resp = post(&fake, "k", &chat_body(true)).await;
    let mut body = resp.bytes_stream();
    body.next().await.unwrap().unwrap();
    drop(body);
    assert!(fake.wait_for_close(Duration::from_secs(1)).await);
}

#[tokio::test]
async fn observes_client_dropping_a_stalled_stream_and_a_hang() {
    let fake = FakeUpstream::start(FakeConfig::default()).await;
    fake.push(Script::text("abcd").chunks(4).fail_after(1, Failure::Stall));
    let resp = post(&fake, "k", &chat_body(true)).await;
    let mut body = resp.bytes_stream();
    body.next().await.unwrap().unwrap();
    drop(body);
    assert!(fake.wait_for_closes(1, Duration::from_secs(1)).await);

    fake.push(Script::hang());
    let url = format!("{}/chat/completions", fake.base_url());
    let send = client().post(url).json(&chat_body(true)).send();
    assert!(
        tokio::time::timeout(Duration::from_millis(100), send)
            .await
            .is_err()
    );
    assert!(fake.wait_for_closes(2, Duration::from_secs(1)).await);
}

#[tokio::test]
async fn abort_breaks_the_body() {
    let fake = FakeUpstream::start(FakeConfig::default()).await;
    fake.push(Script::text("abcd").chunks(4).fail_after(2, Failure::Abort));
    let resp = post(&fake, "k", &chat_body(true)).await;
    let mut body = resp.bytes_stream();
    let mut got = Vec::new();
    let err = loop {
        match body.next().await {
            Some(Ok(b)) => got.extend_from_slice(&b),
            Some(Err(e)) => break e,
            None => panic!("body ended cleanly"),
        }
    };
    let got = String::from_utf8(got).unwrap();
    assert!(got.contains("\"content\":\"b\""), "{got}; {err}");
}

#[tokio::test]
async fn hostile_stream_reassembles_to_valid_events() {
    let fake = FakeUpstream::start(FakeConfig::default()).await;
    fake.push(Script::text("你好，世界🌍!").chunks(4).hostile());
    let resp = post(&fake, "k", &chat_body(true)).await;
    let mut pieces = 0;
    let mut all = Vec::new();
    let mut body = resp.bytes_stream();
    while let Some(b) = body.next().await {
        all.extend_from_slice(&b.unwrap());
        pieces += 1;
    }
    assert!(pieces > 20, "only {pieces} reads");
    let text = String::from_utf8(all).unwrap();
    assert!(text.contains(": keep-alive") && text.contains("\r\n") && text.contains("[DONE]"));
}

#[tokio::test]
async fn reset_closes_the_connection_without_a_status_line() {
    let fake = FakeUpstream::start(FakeConfig {
        default_script: Script::reset(),
        ..Default::default()
    })
    .await;
    let err = client()
        .post(format!("{}/chat/completions", fake.base_url()))
        .json(&chat_body(true))
        .send()
        .await
        .expect_err("no response at all");
    assert!(err.is_request() && !err.is_status(), "{err:?}");
}

#[tokio::test]
async fn a_chooser_scripts_requests_the_queue_does_not() {
    let fake = FakeUpstream::start(FakeConfig::default()).await;
    fake.push(Script::status(500));
    fake.set_chooser(|n, _| {
        if n % 2 == 0 {
            Script::status(503)
        } else {
            Script::echo()
        }
    });
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(post(&fake, "sk-x", &chat_body(false)).await.status().as_u16());
    }
    // Request 1 takes the queued script; then the chooser decides by request number.
    assert_eq!(statuses, [500, 503, 200, 503]);
}
