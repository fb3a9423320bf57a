//! JSON logs: one object per line with ECS names, the request id on request lines, and no secrets or
//! prompts.

mod common;

use common::*;
use serde_json::{Value, json};

#[tokio::test]
async fn json_logs_use_ecs_names_and_leak_nothing() {
    let cap = Capture::default();
    let writer = cap.clone();
    let sub = moltbot_server::logging::subscriber(true, "debug", move || writer.clone());
    let _guard = tracing::subscriber::set_default(sub);

    let fake = fake_with(moltbot_testkit::Script::status(500)).await;
    let srv = start(&fake).await;
    let secret_prompt = "my-very-private-prompt-7731";
    let r = srv
        .http
        .post(srv.url("/v1/chat/completions"))
        .header("x-request-id", "req-abc-123")
        .json(&json!({"model": "gpt-test", "messages": [user(secret_prompt)]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 502);
    assert_eq!(r.headers()["x-request-id"], "req-abc-123");
    let body: Value = r.json().await.unwrap();
    assert!(body["error"]["message"].as_str().unwrap().contains("req-abc-123"));
    srv.stop().await;

    let text = String::from_utf8(cap.0.lock().unwrap().clone()).unwrap();
    assert!(!text.is_empty());
    let mut access = None;
    for line in text.lines() {
        let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(
            v["@timestamp"].is_string() && v["log.level"].is_string() && v["message"].is_string(),
            "{line}"
        );
        if v["http.response.status_code"] == 502 {
            access = Some(v);
        }
    }
    let access = access.expect("an access log line");
    assert_eq!(access["http.request.id"], "req-abc-123");
    assert_eq!(access["http.request.method"], "POST");
    assert_eq!(access["url.path"], "/v1/chat/completions");
    assert!(access["event.duration"].as_u64().unwrap() > 0);
    assert!(!text.contains(KEY), "the upstream key leaked into the logs");
    assert!(!text.contains(secret_prompt), "the prompt leaked into the logs");
}
