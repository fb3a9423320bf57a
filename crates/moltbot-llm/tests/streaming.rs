//! Streaming against the fake upstream: assembly, hostile framing, JSON fallback, forwarding,
//! cancellation and mid-stream failures.

mod common;

use std::time::Duration;

use common::*;
use futures::StreamExt;
use moltbot_api::Usage;
use moltbot_core::{BackendError, BackendEvent, ChatBackend};
use moltbot_testkit::{Failure, Script};
use serde_json::json;

#[tokio::test]
async fn streams_text_exactly_with_finish_and_usage() {
    let fake = fake(Script::text("Hello, world! This is moltbot.").chunks(5)).await;
    let b = backend(settings(&fake, &["sk-one"]));
    let c = collect(b.chat(request("hi")).await.unwrap()).await;
    assert!(c.error.is_none());
    assert_eq!(c.text, "Hello, world! This is moltbot.");
    let n = c.events.len();
    assert_eq!(
        c.events[n - 2],
        BackendEvent::Finish {
            reason: "stop".into()
        }
    );
    assert_eq!(c.events[n - 1], BackendEvent::Usage(Usage::new(1, 5)));
    assert_eq!(n, 5 + 2);

    let reqs = fake.chat_requests();
    assert_eq!(reqs.len(), 1);
    let r = &reqs[0];
    assert_eq!(r.bearer(), Some("sk-one"));
    assert_eq!(r.header("x-request-id"), Some("req-123"));
    assert_eq!(r.body["stream"], true);
    assert_eq!(r.body["stream_options"], json!({"include_usage": true}));
    assert_eq!(r.body["max_tokens"], 64);
    assert_eq!(r.body["model"], "fake-model");
}

#[tokio::test]
async fn hostile_framing_with_cjk_and_emoji() {
    let text = "你好，世界！🌍🚀 Ünïcödé ✓ 今天天气很好。👩‍👩‍👧 done";
    let fake = fake(Script::text(text).chunks(9).hostile()).await;
    let b = backend(settings(&fake, &[]));
    let c = collect(b.chat(request("hi")).await.unwrap()).await;
    assert!(c.error.is_none(), "{:?}", c.error);
    assert_eq!(c.text, text);
    assert!(c.events.contains(&BackendEvent::Finish {
        reason: "stop".into()
    }));
    assert!(matches!(c.events.last(), Some(BackendEvent::Usage(_))));
    assert_eq!(fake.chat_requests()[0].header("authorization"), None);
}

#[tokio::test]
async fn non_sse_json_reply_is_accepted() {
    let fake = fake(Script::text("plain json").json_response().finish_reason("length")).await;
    let b = backend(settings(&fake, &[]));
    let c = collect(b.chat(request("hi")).await.unwrap()).await;
    assert_eq!(
        c.events,
        vec![
            BackendEvent::Delta {
                content: Some("plain json".into()),
                tool_calls: None
            },
            BackendEvent::Finish {
                reason: "length".into()
            },
            BackendEvent::Usage(Usage::new(1, 3)),
        ]
    );
}

#[tokio::test]
async fn tool_call_deltas_pass_through() {
    let fake = fake(
        Script::text("")
            .tool_call("call_1", "lookup", r#"{"q": "x"}"#)
            .chunks(2),
    )
    .await;
    let b = backend(settings(&fake, &[]));
    let c = collect(b.chat(request("hi")).await.unwrap()).await;
    let mut args = String::new();
    for ev in &c.events {
        if let BackendEvent::Delta {
            tool_calls: Some(tc), ..
        } = ev
        {
            args.push_str(tc[0]["function"]["arguments"].as_str().unwrap_or(""));
        }
    }
    assert_eq!(args, r#"{"q": "x"}"#);
    assert!(c.events.contains(&BackendEvent::Finish {
        reason: "tool_calls".into()
    }));
}

#[tokio::test]
async fn parameters_and_unknown_extra_fields_are_forwarded_unchanged() {
    let fake = fake(Script::default()).await;
    let b = backend(settings(&fake, &[]));
    let mut req = request("hi");
    let vendor = json!({"nested": [1, {"a": null, "b": "ü"}], "n": 1.5});
    req.extra.insert("vendor_option".into(), vendor.clone());
    req.extra.insert("logit_bias".into(), json!({"50256": -100}));
    req.temperature = Some(0.25);
    req.top_p = Some(0.5);
    req.stop = vec!["END".into()];
    req.seed = Some(42);
    req.user = Some("u1".into());
    req.tools = Some(json!([{"type": "function", "function": {"name": "f", "parameters": {}}}]));
    req.tool_choice = Some(json!("auto"));
    req.response_format = Some(json!({"type": "json_object"}));
    req.use_max_completion_tokens = true;
    collect(b.chat(req).await.unwrap()).await;
    let body = &fake.chat_requests()[0].body;
    assert_eq!(body["vendor_option"], vendor);
    assert_eq!(body["logit_bias"], json!({"50256": -100}));
    assert_eq!(body["temperature"], json!(0.25));
    assert_eq!(body["top_p"], json!(0.5));
    assert_eq!(body["stop"], json!(["END"]));
    assert_eq!(body["seed"], 42);
    assert_eq!(body["user"], "u1");
    assert_eq!(body["tools"][0]["function"]["name"], "f");
    assert_eq!(body["tool_choice"], "auto");
    assert_eq!(body["response_format"]["type"], "json_object");
    assert_eq!(body["max_completion_tokens"], 64);
    assert!(body.get("max_tokens").is_none());
}

#[tokio::test]
async fn dropping_the_stream_closes_the_upstream_connection() {
    let fake = fake(
        Script::text("abcdefghijklmnop")
            .chunks(16)
            .chunk_interval(50 * MS),
    )
    .await;
    let b = backend(settings(&fake, &[]));
    let mut stream = b.chat(request("hi")).await.unwrap();
    for _ in 0..2 {
        assert!(matches!(
            stream.next().await,
            Some(Ok(BackendEvent::Delta { .. }))
        ));
    }
    assert_eq!(fake.closed_count(), 0);
    drop(stream);
    assert!(
        fake.wait_for_close(Duration::from_secs(1)).await,
        "the fake did not see the close"
    );
}

#[tokio::test]
async fn mid_stream_abort_is_an_error_after_the_delivered_deltas_without_retry() {
    let fake = fake(Script::text("abcd").chunks(4).fail_after(2, Failure::Abort)).await;
    let b = backend(settings(&fake, &[]));
    let c = collect(b.chat(request("hi")).await.unwrap()).await;
    assert_eq!(c.text, "ab");
    assert!(
        matches!(c.error, Some(BackendError::Protocol(_))),
        "{:?}",
        c.error
    );
    assert_eq!(fake.chat_requests().len(), 1);
}

#[tokio::test]
async fn mid_stream_garbage_is_a_protocol_error() {
    let fake = fake(Script::text("abcd").chunks(4).fail_after(3, Failure::Garbage)).await;
    let b = backend(settings(&fake, &[]));
    let c = collect(b.chat(request("hi")).await.unwrap()).await;
    assert_eq!(c.text, "abc");
    assert!(matches!(c.error, Some(BackendError::Protocol(m)) if m.contains("not JSON")));
    assert_eq!(fake.chat_requests().len(), 1);
}

#[tokio::test]
async fn idle_timeout_mid_stream() {
    let fake = fake(Script::text("abcd").chunks(4).fail_after(2, Failure::Stall)).await;
    let mut s = settings(&fake, &[]);
    s.timeouts.idle = 150 * MS;
    let b = backend(s);
    let started = tokio::time::Instant::now();
    let c = collect(b.chat(request("hi")).await.unwrap()).await;
    assert_eq!(c.text, "ab");
    assert_eq!(c.error, Some(BackendError::Timeout("idle")));
    assert!(started.elapsed() < Duration::from_secs(1));
    assert_eq!(fake.chat_requests().len(), 1);
    assert!(fake.wait_for_close(Duration::from_secs(1)).await);
}

#[tokio::test]
async fn total_timeout_mid_stream() {
    let fake = fake(Script::text("abcdefghij").chunks(10).chunk_interval(100 * MS)).await;
    let mut s = settings(&fake, &[]);
    s.timeouts.total = 350 * MS;
    let b = backend(s);
    let c = collect(b.chat(request("hi")).await.unwrap()).await;
    assert!(!c.text.is_empty() && c.text.len() < 10);
    assert_eq!(c.error, Some(BackendError::Timeout("total")));
}
