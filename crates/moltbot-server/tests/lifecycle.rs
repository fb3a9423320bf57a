//! Health, readiness, draining on shutdown, bind errors, the admin allowlist, the debug listener.

mod common;

use std::time::Duration;

use common::*;
use moltbot_testkit::Script;
use serde_json::{Value, json};

#[tokio::test]
async fn health_and_ready_on_both_listeners() {
    let fake = fake().await;
    let srv = start(&fake).await;
    for url in [srv.url("/health"), srv.admin_url("/health")] {
        let r = srv.http.get(url).send().await.unwrap();
        assert_eq!(r.status(), 200);
    }
    for url in [srv.url("/ready"), srv.admin_url("/ready")] {
        let r = srv.http.get(url).send().await.unwrap();
        assert_eq!(r.status(), 200);
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["database"], "ok");
        assert_eq!(body["backends"]["gpt-test"]["circuit"], "closed");
    }
    // The chat API is not on the admin listener.
    let r = srv.http.get(srv.admin_url("/v1/models")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    let models: Value = srv.get("/v1/models").await.json().await.unwrap();
    assert_eq!(models["object"], "list");
    assert_eq!(models["data"][0]["id"], "gpt-test");
    assert_eq!(models["data"][0]["object"], "model");
    srv.stop().await;
}

#[tokio::test]
async fn an_open_circuit_is_reported_but_does_not_make_the_replica_unready() {
    let fake = fake_with(Script::status(500)).await;
    let srv = start_with(&fake, "", |c| {
        c.models[0].circuit.failure_threshold = 1;
        c.models[0].retry.max_attempts = 1;
    })
    .await;
    let (s, _) = srv
        .chat(json!({"model": "gpt-test", "messages": [user("x")]}))
        .await;
    assert_eq!(s, 502);
    let r = srv.get("/ready").await;
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["backends"]["gpt-test"]["circuit"], "open");
    let (s, body) = srv
        .chat(json!({"model": "gpt-test", "messages": [user("x")]}))
        .await;
    assert_eq!(s, 503);
    assert_eq!(body["error"]["code"], "backend_unavailable");
    assert_eq!(fake.chat_requests().len(), 1, "the open circuit fails fast");
    srv.stop().await;
}

#[tokio::test]
async fn shutdown_turns_ready_off_then_lets_streams_finish() {
    let fake = fake_with(
        Script::text("a b c d e")
            .chunks(5)
            .chunk_interval(Duration::from_millis(150)),
    )
    .await;
    let mut srv = start_with(&fake, "", |c| {
        c.server.shutdown_delay = Duration::from_millis(600);
        c.server.shutdown_grace = Duration::from_secs(5);
    })
    .await;
    // A stream is in flight when the signal arrives.
    let stream = srv
        .http
        .post(srv.url("/v1/chat/completions"))
        .json(&json!({"model": "gpt-test", "messages": [user("x")], "stream": true}))
        .send()
        .await
        .unwrap();
    srv.shutdown();
    tokio::time::sleep(Duration::from_millis(100)).await;
    // During the delay: still accepting, but not ready.
    let r = srv.get("/ready").await;
    assert_eq!(r.status(), 503);
    assert_eq!(r.json::<Value>().await.unwrap()["draining"], true);
    assert_eq!(srv.get("/health").await.status(), 200);
    // The in-flight stream completes.
    let body = stream.text().await.unwrap();
    assert!(body.ends_with("data: [DONE]\n\n"), "{body}");
    // Then the process stops, and new connections are refused.
    let done = tokio::time::timeout(Duration::from_secs(8), &mut srv.handle).await;
    assert!(matches!(done, Ok(Ok(Ok(())))), "serve returned Ok");
    assert!(srv.http.get(srv.url("/health")).send().await.is_err());
}

#[tokio::test]
async fn bind_failure_names_the_address_and_cause() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let free = "127.0.0.1:0".parse().unwrap();
    let err = moltbot_server::Listeners::bind(free, addr, None)
        .await
        .err()
        .expect("bind must fail");
    let msg = err.to_string();
    assert!(msg.contains(&addr.to_string()), "{msg}");
    assert!(msg.contains("admin"), "{msg}");
    assert!(msg.contains("address already in use"), "{msg}");
}

#[tokio::test]
async fn admin_allowlist_refuses_other_addresses() {
    let fake = fake().await;
    let srv = start_with(&fake, "", |c| {
        c.server.admin_allow_cidrs = vec!["10.9.8.0/24".parse().unwrap()]
    })
    .await;
    let r = srv.http.get(srv.admin_url("/ready")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    srv.stop().await;
    let srv = start_with(&fake, "", |c| {
        c.server.admin_allow_cidrs = vec!["127.0.0.0/8".parse().unwrap()]
    })
    .await;
    let r = srv.http.get(srv.admin_url("/ready")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    srv.stop().await;
}

#[tokio::test]
async fn debug_listener_shows_redacted_config() {
    let fake = fake().await;
    let srv = start_with(&fake, "", |c| c.debug_addr = Some("127.0.0.1:0".parse().unwrap())).await;
    let debug = srv.addrs.debug_addr.expect("debug listener bound");
    let text = srv
        .http
        .get(format!("http://{debug}/debug/config"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.contains("gpt-test"));
    assert!(text.contains("***"));
    assert!(!text.contains(KEY));
    // Not on the public listener.
    assert_eq!(srv.get("/debug/config").await.status(), 404);
    srv.stop().await;
}
