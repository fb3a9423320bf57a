//! Retries, key rotation, timeouts before the first event, the circuit breaker and outbound limits,
//! against the fake upstream.

mod common;

use std::time::Duration;

use common::*;
use moltbot_core::{BackendError, ChatBackend, CircuitState};
use moltbot_llm::{CircuitSettings, OutboundLimits};
use moltbot_testkit::{Script, StatusReply};
use serde_json::json;

fn auths(fake: &moltbot_testkit::FakeUpstream) -> Vec<String> {
    fake.chat_requests()
        .iter()
        .map(|r| r.bearer().unwrap_or("-").to_owned())
        .collect()
}

#[tokio::test]
async fn retries_a_503_then_succeeds() {
    let fake = fake(Script::text("ok")).await;
    fake.push(Script::status(503));
    let b = backend(settings(&fake, &[]));
    let c = collect(b.chat(request("hi")).await.unwrap()).await;
    assert_eq!(c.text, "ok");
    assert_eq!(fake.chat_requests().len(), 2);
}

#[tokio::test]
async fn retry_after_is_honoured() {
    let fake = fake(Script::text("ok")).await;
    fake.push(Script::status_reply(StatusReply::new(503).retry_after("1")));
    let b = backend(settings(&fake, &[]));
    let c = collect(b.chat(request("hi")).await.unwrap()).await;
    assert_eq!(c.text, "ok");
    let reqs = fake.chat_requests();
    assert_eq!(reqs.len(), 2);
    let gap = reqs[1].at - reqs[0].at;
    assert!(gap >= Duration::from_secs(1), "gap {gap:?}");
    assert!(gap < Duration::from_millis(1900), "gap {gap:?}");
}

#[tokio::test]
async fn retry_after_is_capped() {
    let fake = fake(Script::text("ok")).await;
    fake.push(Script::status_reply(StatusReply::new(429).retry_after("3600")));
    let mut s = settings(&fake, &[]);
    s.retry.retry_after_cap = 200 * MS;
    let b = backend(s);
    collect(b.chat(request("hi")).await.unwrap()).await;
    let reqs = fake.chat_requests();
    let gap = reqs[1].at - reqs[0].at;
    assert!(gap >= 200 * MS && gap < Duration::from_secs(1), "gap {gap:?}");
}

#[tokio::test]
async fn exhausted_attempts_return_the_status() {
    let fake = fake(Script::status(503)).await;
    let b = backend(settings(&fake, &[]));
    let err = b.chat(request("hi")).await.err().unwrap();
    assert!(matches!(&err, BackendError::Status { status: 503, message: Some(m), .. } if m.contains("503")));
    assert_eq!(fake.chat_requests().len(), 3);
}

#[tokio::test]
async fn client_error_is_not_retried() {
    let body = json!({"error": {"message": "temperature must be <= 2", "type": "invalid_request_error",
        "param": "temperature", "code": null}});
    let fake = fake(Script::status_reply(StatusReply::new(400).body(body))).await;
    let b = backend(settings(&fake, &[]));
    let err = b.chat(request("hi")).await.err().unwrap();
    assert_eq!(
        err,
        BackendError::InvalidRequest {
            param: Some("temperature".into()),
            message: "temperature must be <= 2".into()
        }
    );
    assert!(!err.should_fall_back());
    assert_eq!(fake.chat_requests().len(), 1);
}

#[tokio::test]
async fn rate_limited_key_is_rotated_and_cooled_down() {
    let fake = fake(Script::status_for_key("sk-a", 429)).await;
    let b = backend(settings(&fake, &["sk-a", "sk-b"]));
    collect(b.chat(request("1")).await.unwrap()).await;
    assert_eq!(auths(&fake), ["sk-a", "sk-b"]);
    // sk-a is cooling: the next call goes straight to sk-b.
    collect(b.chat(request("2")).await.unwrap()).await;
    assert_eq!(auths(&fake), ["sk-a", "sk-b", "sk-b"]);
}

#[tokio::test]
async fn unauthorized_key_is_rotated() {
    let fake = fake(Script::status_for_key("sk-a", 401)).await;
    let b = backend(settings(&fake, &["sk-a", "sk-b"]));
    collect(b.chat(request("1")).await.unwrap()).await;
    assert_eq!(auths(&fake), ["sk-a", "sk-b"]);
}

#[tokio::test]
async fn unauthorized_single_key_fails_without_retry() {
    let fake = fake(Script::status_for_key("sk-a", 403)).await;
    let b = backend(settings(&fake, &["sk-a"]));
    let err = b.chat(request("1")).await.err().unwrap();
    assert!(matches!(err, BackendError::Status { status: 403, .. }));
    assert_eq!(fake.chat_requests().len(), 1);
}

#[tokio::test]
async fn rate_limited_single_key_backs_off_then_fails_fast_while_cooling() {
    let fake = fake(Script::text("ok")).await;
    fake.push(Script::status_reply(StatusReply::new(429).retry_after("0")));
    let mut s = settings(&fake, &["sk-a"]);
    s.key_cooldown = Duration::from_secs(30);
    let b = backend(s);
    // Backs off and retries the same (only) key.
    collect(b.chat(request("1")).await.unwrap()).await;
    assert_eq!(auths(&fake), ["sk-a", "sk-a"]);

    // Without Retry-After the key cools for key_cooldown; a new call fails fast.
    fake.set_default(Script::status(429));
    let mut s = settings(&fake, &["sk-a"]);
    s.retry.max_attempts = 1;
    let b = backend(s);
    assert!(matches!(
        b.chat(request("2")).await.err().unwrap(),
        BackendError::Status { status: 429, .. }
    ));
    let err = b.chat(request("3")).await.err().unwrap();
    let BackendError::Status {
        status: 429,
        retry_after: Some(ra),
        ..
    } = err
    else {
        panic!("{err:?}")
    };
    assert!(ra > Duration::from_secs(50));
    assert_eq!(fake.chat_requests().len(), 3);
}

#[tokio::test]
async fn first_byte_timeout_is_retried_then_reported() {
    let fake = fake(Script::hang()).await;
    let mut s = settings(&fake, &[]);
    s.timeouts.first_byte = 150 * MS;
    s.retry.max_attempts = 2;
    let b = backend(s);
    let err = b.chat(request("hi")).await.err().unwrap();
    assert_eq!(err, BackendError::Timeout("first_byte"));
    assert_eq!(fake.chat_requests().len(), 2);
    assert!(fake.wait_for_closes(2, Duration::from_secs(1)).await);
}

#[tokio::test]
async fn slow_headers_within_first_byte_are_fine() {
    let fake = fake(Script::text("ok").headers_delay(100 * MS)).await;
    let mut s = settings(&fake, &[]);
    s.timeouts.first_byte = 1000 * MS;
    s.timeouts.idle = 50 * MS;
    let c = collect(backend(s).chat(request("hi")).await.unwrap()).await;
    assert_eq!(c.text, "ok");
}

#[tokio::test]
async fn connection_refused_is_a_connect_error() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let fake = fake(Script::default()).await;
    let mut s = settings(&fake, &[]);
    s.base_url = format!("http://{addr}/v1").parse().unwrap();
    let err = backend(s).chat(request("hi")).await.err().unwrap();
    assert!(matches!(err, BackendError::Connect(_)), "{err:?}");
}

#[tokio::test]
async fn circuit_opens_fails_fast_then_probes_and_closes() {
    let fake = fake(Script::status(503)).await;
    let mut s = settings(&fake, &[]);
    s.retry.max_attempts = 2;
    s.circuit = CircuitSettings {
        failure_threshold: 2,
        open_for: 300 * MS,
    };
    let b = backend(s);
    for _ in 0..2 {
        assert!(matches!(
            b.chat(request("x")).await.err().unwrap(),
            BackendError::Status { status: 503, .. }
        ));
    }
    assert_eq!(b.circuit_state(), CircuitState::Open);
    assert_eq!(fake.chat_requests().len(), 4);
    let err = b.chat(request("x")).await.err().unwrap();
    assert!(matches!(err, BackendError::CircuitOpen { retry_after } if retry_after <= 300 * MS));
    assert_eq!(
        fake.chat_requests().len(),
        4,
        "an open circuit must not call the upstream"
    );

    tokio::time::sleep(350 * MS).await;
    assert_eq!(b.circuit_state(), CircuitState::HalfOpen);
    fake.set_default(Script::text("back"));
    assert_eq!(collect(b.chat(request("x")).await.unwrap()).await.text, "back");
    assert_eq!(b.circuit_state(), CircuitState::Closed);
}

#[tokio::test]
async fn upstream_404_is_a_gateway_error_not_the_clients() {
    let fake = fake(Script::status(404)).await;
    let b = backend(settings(&fake, &[]));
    let err = b.chat(request("x")).await.err().unwrap();
    assert!(matches!(err, BackendError::Status { status: 404, .. }), "{err:?}");
    assert!(err.should_fall_back());
    assert_eq!(fake.chat_requests().len(), 1, "not retried");
}

#[tokio::test]
async fn client_errors_do_not_open_the_circuit() {
    let fake = fake(Script::status(422)).await;
    let mut s = settings(&fake, &[]);
    s.circuit = CircuitSettings {
        failure_threshold: 1,
        open_for: Duration::from_secs(60),
    };
    let b = backend(s);
    for _ in 0..3 {
        assert!(matches!(
            b.chat(request("x")).await,
            Err(BackendError::InvalidRequest { .. })
        ));
    }
    assert_eq!(b.circuit_state(), CircuitState::Closed);
}

#[tokio::test]
async fn outbound_request_limit_is_overloaded_when_exhausted() {
    let fake = fake(Script::default()).await;
    let mut s = settings(&fake, &[]);
    s.limits = OutboundLimits {
        requests_per_minute: Some(1),
        tokens_per_minute: None,
    };
    let b = backend(s);
    collect(b.chat(request("x")).await.unwrap()).await;
    let err = b.chat(request("x")).await.err().unwrap();
    assert!(matches!(err, BackendError::Overloaded { retry_after } if retry_after > Duration::from_secs(50)));
    assert_eq!(fake.chat_requests().len(), 1);
}

#[tokio::test]
async fn outbound_token_limit_counts_max_tokens_and_prompt() {
    let fake = fake(Script::default()).await;
    let mut s = settings(&fake, &[]);
    s.limits = OutboundLimits {
        requests_per_minute: None,
        tokens_per_minute: Some(100),
    };
    let b = backend(s);
    let mut req = request("one two three");
    req.max_tokens = 80;
    collect(b.chat(req.clone()).await.unwrap()).await; // 80 + ~10 prompt tokens
    assert!(matches!(b.chat(req).await, Err(BackendError::Overloaded { .. })));
}
