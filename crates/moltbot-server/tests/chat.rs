//! Chat completions through the real server and a fake upstream over real HTTP.

mod common;

use std::time::Duration;

use common::*;
use futures::StreamExt;
use moltbot_core::{MessageStatus, Role};
use moltbot_testkit::{Failure, Script, StatusReply};
use serde_json::{Value, json};

#[tokio::test]
async fn non_streaming_completion_is_answered_and_recorded() {
    let fake = fake_with(Script::text("Hello there, friend.")).await;
    let srv = start(&fake).await;
    let r = srv
        .post(
            "/v1/chat/completions",
            json!({"model": "gpt-test", "messages": [user("hi")]}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let conv = r
        .headers()
        .get("x-moltbot-conversation")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    assert!(r.headers().get("x-request-id").is_some());
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["model"], "gpt-test");
    assert_eq!(body["choices"][0]["message"]["role"], "assistant");
    assert_eq!(body["choices"][0]["message"]["content"], "Hello there, friend.");
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    assert!(body["usage"]["total_tokens"].as_u64().unwrap() > 0);
    // The upstream got our upstream model id and the key, and was asked for one JSON reply.
    let req = &fake.chat_requests()[0];
    assert_eq!(req.body["model"], "fake-model");
    assert_eq!(req.bearer(), Some(KEY));
    assert_eq!(req.body["stream"], false);
    // Stored: user + assistant, both completed, with usage recorded.
    let items = srv.stored_messages(&conv).await;
    assert_eq!(items.len(), 2);
    assert_eq!(items[0].role, Role::User);
    assert_eq!(items[0].status, MessageStatus::Completed);
    assert_eq!(items[1].content, "Hello there, friend.");
    assert_eq!(items[1].meta.backend.as_deref(), Some("gpt-test"));
    assert!(items[1].meta.usage.is_some());
    let usage = srv.state.store.list_usage(&srv.key_id, 10).await.unwrap();
    assert_eq!(usage.len(), 1);
    assert_eq!(usage[0].outcome, "ok");
    srv.stop().await;
}

#[tokio::test]
async fn a_non_streaming_turn_survives_a_reply_cut_midway_and_is_recorded_once() {
    // The first JSON reply breaks off halfway: its client has seen nothing, so the turn is retried.
    let fake = fake_with(Script::text("whole on the second try")).await;
    fake.push(Script::text("lost").chunks(4).fail_after(2, Failure::Abort));
    let srv = start(&fake).await;
    let r = srv
        .post(
            "/v1/chat/completions",
            json!({"model": "gpt-test", "messages": [user("hi")]}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let conv = r.headers()["x-moltbot-conversation"].to_str().unwrap().to_owned();
    let body: Value = r.json().await.unwrap();
    assert_eq!(
        body["choices"][0]["message"]["content"],
        "whole on the second try"
    );
    assert_eq!(fake.chat_requests().len(), 2);
    let items = srv.stored_messages(&conv).await;
    let stored: Vec<(&str, MessageStatus)> = items.iter().map(|m| (m.content.as_str(), m.status)).collect();
    assert_eq!(
        stored,
        [
            ("hi", MessageStatus::Completed),
            ("whole on the second try", MessageStatus::Completed)
        ]
    );
    assert_eq!(
        srv.state.store.list_usage(&srv.key_id, 10).await.unwrap().len(),
        1
    );
    srv.stop().await;
}

#[tokio::test]
async fn always_stream_asks_the_upstream_for_a_stream_for_a_non_streaming_client() {
    let fake = fake_with(Script::text("one two three").chunks(3)).await;
    let srv = start_with(&fake, "", |c| c.models[0].always_stream = true).await;
    let r = srv
        .post(
            "/v1/chat/completions",
            json!({"model": "gpt-test", "messages": [user("hi")]}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["choices"][0]["message"]["content"], "one two three");
    let req = &fake.chat_requests()[0];
    assert_eq!(req.body["stream"], true);
    assert_eq!(req.body["stream_options"]["include_usage"], true);
    srv.stop().await;
}

#[tokio::test]
async fn stream_follows_openai_chunk_conventions() {
    let fake = fake_with(Script::text("one two three four").chunks(4)).await;
    let srv = start(&fake).await;
    let r = srv
        .post(
            "/v1/chat/completions",
            json!({"model": "gpt-test", "messages": [user("count")], "stream": true,
                   "stream_options": {"include_usage": true}}),
        )
        .await;
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let body = r.text().await.unwrap();
    let data = sse_data(&body);
    assert_eq!(data.last().unwrap(), "[DONE]");
    let chunks: Vec<Value> = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    let id = &chunks[0]["id"];
    let created = &chunks[0]["created"];
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let mut text = String::new();
    for (i, c) in chunks.iter().enumerate() {
        assert_eq!(&c["id"], id);
        assert_eq!(&c["created"], created);
        assert_eq!(c["object"], "chat.completion.chunk");
        let last = i == chunks.len() - 1;
        let last_content = i == chunks.len() - 2;
        if last {
            assert_eq!(c["choices"], json!([]));
            assert!(c["usage"]["completion_tokens"].as_u64().is_some());
        } else {
            assert_eq!(c["usage"], Value::Null);
            assert!(c.as_object().unwrap().contains_key("usage"));
            if i > 0 {
                assert!(c["choices"][0]["delta"].get("role").is_none());
            }
            let fr = &c["choices"][0]["finish_reason"];
            if last_content {
                assert_eq!(fr, "stop")
            } else {
                assert_eq!(fr, &Value::Null)
            }
            if let Some(t) = c["choices"][0]["delta"]["content"].as_str() {
                text.push_str(t);
            }
        }
    }
    assert_eq!(text, "one two three four");
    srv.stop().await;
}

#[tokio::test]
async fn unknown_fields_and_tools_pass_through_to_the_upstream() {
    let fake = fake().await;
    let srv = start(&fake).await;
    let tools = json!([{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]);
    let (status, _) = srv
        .chat(
            json!({"model": "gpt-test", "messages": [user("x")], "tools": tools, "tool_choice": "auto",
                     "logit_bias": {"42": 1}, "vendor_flag": {"a": [1, 2]}, "seed": 7, "stop": ["END"],
                     "max_completion_tokens": 20, "user": "u-1"}),
        )
        .await;
    assert_eq!(status, 200);
    let body = &fake.chat_requests()[0].body;
    assert_eq!(body["tools"], tools);
    assert_eq!(body["tool_choice"], "auto");
    assert_eq!(body["logit_bias"], json!({"42": 1}));
    assert_eq!(body["vendor_flag"], json!({"a": [1, 2]}));
    assert_eq!(body["seed"], 7);
    assert_eq!(body["stop"], json!(["END"]));
    assert_eq!(body["max_completion_tokens"], 20);
    assert_eq!(body["user"], "u-1");
    srv.stop().await;
}

#[tokio::test]
async fn omitted_max_tokens_is_clamped_to_the_context() {
    let fake = fake().await;
    let srv = start(&fake).await;
    let (status, _) = srv
        .chat(json!({"model": "gpt-test", "messages": [user("hello")]}))
        .await;
    assert_eq!(status, 200);
    let sent = fake.chat_requests()[0].body["max_tokens"].as_u64().unwrap();
    assert_eq!(sent, 1024, "the model's default max_tokens fits, so it is used");
    // A long prompt leaves less room: the request is clamped, not refused.
    let long = "word ".repeat(3500);
    let (status, _) = srv
        .chat(json!({"model": "gpt-test", "messages": [user(&long)]}))
        .await;
    assert_eq!(status, 200);
    let sent = fake.chat_requests()[1].body["max_tokens"].as_u64().unwrap();
    assert!(sent < 1024 && sent > 0, "clamped to what fits: {sent}");
    srv.stop().await;
}

#[tokio::test]
async fn retries_then_falls_back_to_the_next_model() {
    let primary = fake_with(Script::status(503)).await;
    let backup = fake_with(Script::text("from backup")).await;
    let extra = format!(
        r#"
[[models]]
name = "backup"
endpoint = "{}"
upstream_model = "fake-model"
"#,
        backup.base_url()
    );
    let srv = start_with(&primary, &extra, |c| {
        c.models[0].fallbacks = vec!["backup".into()]
    })
    .await;
    let (status, body) = srv
        .chat(json!({"model": "gpt-test", "messages": [user("hi")]}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["choices"][0]["message"]["content"], "from backup");
    assert_eq!(body["model"], "gpt-test");
    assert_eq!(
        primary.chat_requests().len(),
        2,
        "max_attempts = 2 on the primary"
    );
    assert_eq!(backup.chat_requests().len(), 1);
    srv.stop().await;
}

#[tokio::test]
async fn upstream_failures_become_envelopes_and_mark_the_turn_failed() {
    let fake = fake_with(Script::status(500)).await;
    let srv = start(&fake).await;
    let r = srv
        .post(
            "/v1/chat/completions",
            json!({"model": "gpt-test", "messages": [user("doomed")]}),
        )
        .await;
    assert_eq!(r.status(), 502);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["type"], "server_error");
    assert_eq!(body["error"]["code"], "upstream_error");
    assert!(!body.to_string().contains(KEY));

    // 429 from the platform (after retries) → 503 with Retry-After.
    fake.set_default(Script::status_reply(StatusReply::new(429).retry_after("1")));
    let r = srv
        .post(
            "/v1/chat/completions",
            json!({"model": "gpt-test", "messages": [user("again")]}),
        )
        .await;
    assert_eq!(r.status(), 503);
    assert!(r.headers().get("retry-after").is_some());

    // The failed user messages are kept, marked failed, and never sent as context again.
    fake.set_default(Script::echo());
    let conv = srv
        .post("/v1/conversations", json!({}))
        .await
        .json::<Value>()
        .await
        .unwrap();
    let id = conv["id"].as_str().unwrap();
    fake.set_default(Script::status(500));
    let (status, _) = srv
        .chat(json!({"model": "gpt-test", "conversation": id, "messages": [user("lost")]}))
        .await;
    assert_eq!(status, 502);
    fake.set_default(Script::echo());
    let before = fake.chat_requests().len();
    let (status, _) = srv
        .chat(json!({"model": "gpt-test", "conversation": id, "messages": [user("kept")]}))
        .await;
    assert_eq!(status, 200);
    let sent = &fake.chat_requests()[before].body["messages"];
    assert_eq!(
        sent.as_array().unwrap().len(),
        1,
        "the failed turn is not context: {sent}"
    );
    let items = srv
        .get(&format!("/v1/conversations/{id}/items?order=asc"))
        .await
        .json::<Value>()
        .await
        .unwrap();
    let statuses: Vec<&str> = items["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["incomplete", "completed", "completed"]);
    srv.stop().await;
}

#[tokio::test]
async fn mid_stream_failure_is_one_error_event_then_the_end() {
    let fake = fake_with(
        Script::text("a b c d e f")
            .chunks(6)
            .fail_after(2, Failure::Abort),
    )
    .await;
    let srv = start(&fake).await;
    let r = srv
        .post(
            "/v1/chat/completions",
            json!({"model": "gpt-test", "messages": [user("x")], "stream": true}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let conv = r.headers()["x-moltbot-conversation"].to_str().unwrap().to_owned();
    let data = sse_data(&r.text().await.unwrap());
    let last: Value = serde_json::from_str(data.last().unwrap()).unwrap();
    assert!(last["error"]["message"].is_string(), "{data:?}");
    assert!(!data.iter().any(|d| d == "[DONE]"));
    assert_eq!(data.iter().filter(|d| d.contains("\"error\"")).count(), 1);
    assert_eq!(fake.chat_requests().len(), 1, "no retry after the first byte");
    let received: String = data[..data.len() - 1]
        .iter()
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str().map(str::to_owned))
        .collect();
    // The turn is recorded as failed: the user message and the partial reply the client saw.
    let items = srv.stored_messages(&conv).await;
    assert_eq!(items.len(), 2);
    assert_eq!(items[0].status, MessageStatus::Failed);
    assert_eq!(items[1].status, MessageStatus::Failed);
    assert_eq!(items[1].content, received);
    assert!(!received.is_empty());
    srv.stop().await;
}

#[tokio::test]
async fn client_disconnect_cancels_upstream_and_stores_the_received_prefix() {
    let fake = fake_with(
        Script::text("alpha beta gamma delta epsilon zeta")
            .chunks(6)
            .chunk_interval(Duration::from_millis(300)),
    )
    .await;
    let srv = start(&fake).await;
    let conv = srv
        .post("/v1/conversations", json!({}))
        .await
        .json::<Value>()
        .await
        .unwrap();
    let id = conv["id"].as_str().unwrap().to_owned();
    let r = srv
        .post(
            "/v1/chat/completions",
            json!({"model": "gpt-test", "conversation": id, "messages": [user("go")], "stream": true}),
        )
        .await;
    let mut body = r.bytes_stream();
    let mut received = String::new();
    let mut buf = String::new();
    let mut events = 0;
    while events < 2 {
        let bytes = body.next().await.unwrap().unwrap();
        buf.push_str(std::str::from_utf8(&bytes).unwrap());
        while let Some(pos) = buf.find("\n\n") {
            let ev: String = buf.drain(..pos + 2).collect();
            let v: Value = serde_json::from_str(ev.trim().strip_prefix("data: ").unwrap()).unwrap();
            received.push_str(v["choices"][0]["delta"]["content"].as_str().unwrap_or(""));
            events += 1;
        }
    }
    drop(body);
    let started = std::time::Instant::now();
    assert!(
        fake.wait_for_close(Duration::from_secs(1)).await,
        "upstream connection not closed within 1 s"
    );
    assert!(started.elapsed() < Duration::from_secs(1));
    // The truncated reply is stored: exactly what the client received.
    let mut stored = None;
    for _ in 0..50 {
        let items = srv.stored_messages(&id).await;
        if items.len() == 2 {
            stored = Some(items[1].clone());
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let stored = stored.expect("truncated reply stored");
    assert_eq!(stored.status, MessageStatus::Truncated);
    assert_eq!(stored.content, received);
    assert!(!received.is_empty());
    srv.stop().await;
}

#[tokio::test]
async fn hostile_upstream_framing_is_reassembled_exactly() {
    let text = "你好，世界！Grüße 🎉 — done";
    let fake = fake_with(Script::text(text).chunks(5).hostile()).await;
    let srv = start(&fake).await;
    let (status, body) = srv
        .chat(json!({"model": "gpt-test", "messages": [user("x")]}))
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["choices"][0]["message"]["content"], text);
    srv.stop().await;
}
