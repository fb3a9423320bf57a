//! Outbound event webhooks end to end: the real server, a real receiver (axum on 127.0.0.1:0) that
//! verifies every Standard Webhooks signature, subscriptions made through the admin API.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use common::*;
use moltbot_channels::standard_webhooks;
use moltbot_testkit::Script;
use serde_json::{Value, json};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// Fast retries for tests.
const FAST: &str = r#"
[webhooks]
first_retry = "100ms"
retry_for = "2m"
timeout = "2s"
workers = 2
allow_private_targets = true
"#;

/// One request the receiver got.
#[derive(Debug, Clone)]
struct Hit {
    id: String,
    timestamp: i64,
    body: Value,
    /// What the receiver answered.
    answered: u16,
    user_agent: String,
    content_type: String,
}

#[derive(Clone)]
struct Receiver {
    /// The status code to answer with (503 = "down").
    answer: Arc<AtomicU16>,
    hits: Arc<Mutex<Vec<Hit>>>,
    url: String,
}

async fn hook(State(r): State<Receiver>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    // Every request must carry a valid signature over the exact body.
    standard_webhooks::verify_request(SECRET, &headers, &body, now, 300)
        .expect("valid Standard Webhooks signature");
    let h = |n: &str| headers.get(n).unwrap().to_str().unwrap().to_owned();
    let answered = r.answer.load(Ordering::SeqCst);
    r.hits.lock().unwrap().push(Hit {
        id: h("webhook-id"),
        timestamp: h("webhook-timestamp").parse().unwrap(),
        body: serde_json::from_slice(&body).unwrap(),
        answered,
        user_agent: h("user-agent"),
        content_type: h("content-type"),
    });
    StatusCode::from_u16(answered).unwrap()
}

async fn receiver() -> Receiver {
    receiver_on("127.0.0.1:0").await
}

async fn receiver_on(addr: &str) -> Receiver {
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let r = Receiver {
        answer: Arc::new(AtomicU16::new(200)),
        hits: Arc::default(),
        url: format!("http://{}/hook", listener.local_addr().unwrap()),
    };
    let app = axum::Router::new()
        .route("/hook", axum::routing::post(hook))
        .with_state(r.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    r
}

impl Receiver {
    fn hits(&self) -> Vec<Hit> {
        self.hits.lock().unwrap().clone()
    }

    fn delivered(&self) -> Vec<Hit> {
        self.hits()
            .into_iter()
            .filter(|h| (200..300).contains(&h.answered))
            .collect()
    }

    /// Wait until `pred` holds on the hits (or fail after `secs`).
    async fn wait_for(&self, secs: u64, what: &str, pred: impl Fn(&[Hit]) -> bool) -> Vec<Hit> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        loop {
            let hits = self.hits();
            if pred(&hits) {
                return hits;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {what}; got {hits:#?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

async fn admin(srv: &TestServer, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
    let mut req = srv.http.request(method, srv.admin_url(path));
    if let Some(b) = body {
        req = req.json(&b);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn subscribe(srv: &TestServer, url: &str, events: &[&str]) -> Value {
    let (status, body) = admin(
        srv,
        reqwest::Method::POST,
        "/admin/api/webhooks/subscriptions",
        Some(json!({"url": url, "events": events, "secret": SECRET, "description": "test receiver"})),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    body
}

fn of_type<'a>(hits: &'a [Hit], t: &str) -> Vec<&'a Hit> {
    hits.iter().filter(|h| h.body["type"] == t).collect()
}

async fn deliveries(srv: &TestServer, query: &str) -> Vec<Value> {
    let (status, body) = admin(
        srv,
        reqwest::Method::GET,
        &format!("/admin/api/webhooks/deliveries{query}"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body["data"].as_array().unwrap().clone()
}

/// [`deliveries`] polled until `done` holds (10 s at most), then returned as it is.
async fn deliveries_until(srv: &TestServer, query: &str, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let list = deliveries(srv, query).await;
        if done(&list) || tokio::time::Instant::now() > deadline {
            return list;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_chat_turn_delivers_conversation_and_message_events() {
    let fake = fake_with(Script::text("Hello from the model.")).await;
    let srv = start_with(&fake, FAST, |_| {}).await;
    let rx = receiver().await;
    let sub = subscribe(&srv, &rx.url, &["conversation.created", "message.created"]).await;
    assert_eq!(sub["object"], "webhook_subscription");
    assert_eq!(sub["secret"], SECRET, "shown on create");
    assert_eq!(sub["enabled"], true);

    let r = srv
        .post(
            "/v1/chat/completions",
            json!({"model": "gpt-test", "messages": [user("hi")]}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let conv = r.headers()["x-moltbot-conversation"].to_str().unwrap().to_owned();

    let hits = rx
        .wait_for(10, "two events", |h| {
            !of_type(h, "conversation.created").is_empty() && !of_type(h, "message.created").is_empty()
        })
        .await;
    let created = of_type(&hits, "conversation.created")[0];
    assert_eq!(created.body["data"]["id"], conv);
    assert_eq!(created.body["data"]["owner"], srv.key_id);
    assert!(created.id.starts_with("evt_"));
    assert!(created.body["timestamp"].as_str().unwrap().ends_with('Z'));
    assert!(created.user_agent.starts_with("moltbot-webhooks/"));
    assert_eq!(created.content_type, "application/json");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!((now - created.timestamp).abs() < 30);

    let message = of_type(&hits, "message.created")[0];
    let data = &message.body["data"];
    assert_eq!(data["conversation_id"], conv);
    assert_eq!(data["role"], "assistant");
    assert_eq!(data["model"], "gpt-test");
    assert_eq!(data["text"], "Hello from the model.");
    assert_eq!(data["status"], "completed");
    assert!(data["usage"]["total_tokens"].as_u64().unwrap() > 0, "{data}");
    let stored = srv
        .state
        .store
        .get_message(&conv, data["id"].as_str().unwrap())
        .await
        .unwrap()
        .expect("the event names the stored message");
    assert_eq!(stored.content, "Hello from the model.");

    // The delivery log shows both delivered, one attempt each. The receiver can see a request before
    // moltbot has recorded its outcome, so wait for the log to catch up.
    let sub_id = sub["id"].as_str().unwrap();
    let log = deliveries_until(&srv, &format!("?subscription={sub_id}&status=delivered"), |l| {
        l.len() >= 2
    })
    .await;
    assert_eq!(log.len(), 2, "{log:#?}");
    for d in &log {
        assert_eq!(d["attempts"], 1);
        assert_eq!(d["last_status"], 200);
        assert!(hits.iter().any(|h| h.id == d["event_id"]));
    }
    // Events of types it did not ask for do not reach it.
    let (status, _) = admin(
        &srv,
        reqwest::Method::DELETE,
        &format!(
            "/admin/api/keys/{}",
            common::create_key(&srv.state, &[moltbot_core::Scope::Chat], Default::default())
                .await
                .0
                .id
        ),
        None,
    )
    .await;
    assert_eq!(status, 200);
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(of_type(&rx.hits(), "key.revoked").is_empty());
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_receiver_down_for_a_while_gets_every_event_once_back() {
    let fake = fake_with(Script::text("ok")).await;
    let srv = start_with(&fake, FAST, |_| {}).await;
    let rx = receiver().await;
    subscribe(&srv, &rx.url, &["conversation.created", "message.created"]).await;
    rx.answer.store(503, Ordering::SeqCst);

    // Five turns while the receiver is down: ten events.
    for i in 0..5 {
        let (status, _) = srv
            .chat(json!({"model": "gpt-test", "messages": [user(&format!("turn {i}"))]}))
            .await;
        assert_eq!(status, 200);
    }
    // Retries keep failing for a while (several attempts per event at 100 ms, 200 ms, 400 ms…).
    rx.wait_for(10, "repeated failed attempts", |h| {
        let mut per_id: HashMap<&str, usize> = HashMap::new();
        for hit in h {
            *per_id.entry(hit.id.as_str()).or_default() += 1;
        }
        per_id.len() == 10 && per_id.values().all(|n| *n >= 2)
    })
    .await;
    assert!(rx.delivered().is_empty());
    // The log catches up with what the receiver saw (outcomes are recorded after the answer).
    let pending = deliveries_until(&srv, "?status=pending", |p| {
        p.len() == 10
            && p.iter()
                .all(|d| d["last_status"] == 503 && d["attempts"].as_u64().unwrap_or(0) >= 2)
    })
    .await;
    assert_eq!(pending.len(), 10, "{pending:#?}");

    // Back up: every event arrives, exactly one success per event id.
    rx.answer.store(200, Ordering::SeqCst);
    rx.wait_for(15, "all ten events delivered", |h| {
        h.iter()
            .filter(|x| x.answered == 200)
            .map(|x| x.id.as_str())
            .collect::<HashSet<_>>()
            .len()
            == 10
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let delivered = rx.delivered();
    let ids: HashSet<&str> = delivered.iter().map(|h| h.id.as_str()).collect();
    assert_eq!(delivered.len(), 10, "one success per event");
    assert_eq!(ids.len(), 10);
    // Every attempt of an event carried the same id and the same body.
    for h in rx.hits() {
        let ok = delivered.iter().find(|d| d.id == h.id).unwrap();
        assert_eq!(ok.body, h.body);
    }
    assert_eq!(of_type(&delivered, "conversation.created").len(), 5);
    assert_eq!(of_type(&delivered, "message.created").len(), 5);
    let log = deliveries_until(&srv, "?status=delivered", |l| l.len() == 10).await;
    assert_eq!(log.len(), 10);
    assert!(deliveries(&srv, "?status=pending").await.is_empty());

    // The attempt log of one delivery: failures, then the success.
    let (status, one) = admin(
        &srv,
        reqwest::Method::GET,
        &format!(
            "/admin/api/webhooks/deliveries/{}",
            log[0]["id"].as_str().unwrap()
        ),
        None,
    )
    .await;
    assert_eq!(status, 200);
    let attempts = one["attempt_log"].as_array().unwrap();
    assert_eq!(attempts.len() as u64, one["attempts"].as_u64().unwrap());
    assert_eq!(attempts.last().unwrap()["status_code"], 200);
    assert_eq!(attempts[0]["status_code"], 503);
    assert!(attempts[0]["error"].as_str().unwrap().contains("503"));

    let metrics = srv
        .http
        .get(srv.admin_url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("moltbot_webhook_deliveries_total{outcome=\"retry\"}"),
        "{metrics}"
    );
    assert!(metrics.contains("moltbot_webhook_deliveries_total{outcome=\"delivered\"}"));
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_receiver_not_listening_then_started_gets_every_event() {
    let fake = fake_with(Script::text("ok")).await;
    let srv = start_with(&fake, FAST, |_| {}).await;
    // A port nobody listens on (yet): connections are refused.
    let addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    subscribe(
        &srv,
        &format!("http://{addr}/hook"),
        &["conversation.created", "message.created"],
    )
    .await;
    for i in 0..3 {
        let (status, _) = srv
            .chat(json!({"model": "gpt-test", "messages": [user(&format!("turn {i}"))]}))
            .await;
        assert_eq!(status, 200);
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let pending = deliveries(&srv, "?status=pending").await;
        let failing = pending
            .iter()
            .filter(|d| d["attempts"].as_u64() >= Some(2) && d["last_status"].is_null())
            .count();
        if pending.len() == 6 && failing == 6 {
            assert!(
                pending[0]["last_error"].as_str().unwrap().contains("connect"),
                "{:#}",
                pending[0]
            );
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{pending:#?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The receiver comes up on that port: every event arrives, once.
    let rx = receiver_on(&addr.to_string()).await;
    rx.wait_for(15, "six events", |h| {
        h.iter().map(|x| x.id.as_str()).collect::<HashSet<_>>().len() == 6
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let hits = rx.hits();
    assert_eq!(hits.len(), 6, "one request per event: {hits:#?}");
    assert_eq!(of_type(&hits, "conversation.created").len(), 3);
    assert_eq!(of_type(&hits, "message.created").len(), 3);
    assert_eq!(
        deliveries_until(&srv, "?status=delivered", |l| l.len() == 6)
            .await
            .len(),
        6
    );
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_dead_letter_then_redeliver_keeps_the_id() {
    let fake = fake().await;
    let extra = r#"
[webhooks]
first_retry = "100ms"
retry_for = "1s"
allow_private_targets = true
"#;
    let srv = start_with(&fake, extra, |_| {}).await;
    let rx = receiver().await;
    rx.answer.store(500, Ordering::SeqCst);
    let sub = subscribe(&srv, &rx.url, &["conversation.created"]).await;
    let r = srv.post("/v1/conversations", json!({})).await;
    assert!(r.status().is_success());
    let conv: Value = r.json().await.unwrap();

    // Retried for a second after the event, then dead.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let dead = loop {
        let d = deliveries(&srv, "?status=dead").await;
        if let Some(d) = d.into_iter().next() {
            break d;
        }
        assert!(tokio::time::Instant::now() < deadline, "not dead-lettered");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(dead["subscription_id"], sub["id"]);
    assert_eq!(dead["last_status"], 500);
    let attempts = dead["attempts"].as_u64().unwrap();
    assert!(
        (2..=8).contains(&attempts),
        "backoff 100 ms doubling over 1 s: {attempts}"
    );
    let hits = rx.hits();
    assert_eq!(hits.len() as u64, attempts);
    let first = hits[0].id.clone();
    assert!(
        hits.iter()
            .all(|h| h.id == first && h.body["data"]["id"] == conv["id"])
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        rx.hits().len() as u64,
        attempts,
        "no attempts after the dead letter"
    );

    // Redeliver once the receiver is fixed: same webhook-id.
    rx.answer.store(204, Ordering::SeqCst);
    let (status, again) = admin(
        &srv,
        reqwest::Method::POST,
        &format!(
            "/admin/api/webhooks/deliveries/{}/redeliver",
            dead["id"].as_str().unwrap()
        ),
        None,
    )
    .await;
    assert_eq!(status, 202, "{again}");
    assert_eq!(again["status"], "pending");
    assert_eq!(again["event_id"], first.as_str());
    let hits = rx
        .wait_for(5, "the redelivery", |h| h.iter().any(|x| x.answered == 204))
        .await;
    let ok = hits.iter().find(|x| x.answered == 204).unwrap();
    assert_eq!(ok.id, first, "stable id across redelivery");
    // The outcome is recorded just after the receiver answered: wait for it.
    let path = format!("/admin/api/webhooks/deliveries/{}", dead["id"].as_str().unwrap());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let d = loop {
        let (_, d) = admin(&srv, reqwest::Method::GET, &path, None).await;
        if d["status"] != "pending" || tokio::time::Instant::now() > deadline {
            break d;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(d["status"], "delivered");
    assert_eq!(d["last_status"], 204);
    assert_eq!(d["attempts"].as_u64().unwrap(), attempts + 1);
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_gone_410_is_dead_at_once() {
    let fake = fake().await;
    let srv = start_with(&fake, FAST, |_| {}).await;
    let rx = receiver().await;
    rx.answer.store(410, Ordering::SeqCst);
    subscribe(&srv, &rx.url, &["conversation.created"]).await;
    srv.post("/v1/conversations", json!({})).await;
    rx.wait_for(5, "one attempt", |h| h.len() == 1).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(rx.hits().len(), 1, "410 is not retried");
    let dead = deliveries_until(&srv, "?status=dead", |d| d.len() == 1).await;
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0]["last_status"], 410);
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_key_revoked_and_message_failed_events() {
    let fake = fake_with(Script::status(400)).await;
    let srv = start_with(&fake, FAST, |_| {}).await;
    let rx = receiver().await;
    subscribe(&srv, &rx.url, &["key.revoked", "message.failed"]).await;

    let (key, _) = common::create_key(&srv.state, &[moltbot_core::Scope::Chat], Default::default()).await;
    let path = format!("/admin/api/keys/{}", key.id);
    let (status, body) = admin(&srv, reqwest::Method::DELETE, &path, None).await;
    assert_eq!(status, 200, "{body}");
    // Revoking again changes nothing and sends nothing.
    let (status, _) = admin(&srv, reqwest::Method::DELETE, &path, None).await;
    assert_eq!(status, 200);

    let (status, _) = srv
        .chat(json!({"model": "gpt-test", "messages": [user("this fails")]}))
        .await;
    assert!(status >= 400);

    let hits = rx
        .wait_for(10, "key.revoked and message.failed", |h| {
            !of_type(h, "key.revoked").is_empty() && !of_type(h, "message.failed").is_empty()
        })
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let revoked = of_type(&hits, "key.revoked");
    assert_eq!(revoked.len(), 1, "once");
    let data = &revoked[0].body["data"];
    assert_eq!(data["id"], key.id);
    assert_eq!(data["name"], key.name);
    assert_eq!(data["prefix"], key.prefix);
    assert!(data["revoked_at"].as_i64().unwrap() > 0);
    assert_eq!(of_type(&rx.hits(), "key.revoked").len(), 1);
    let failed = of_type(&hits, "message.failed")[0];
    assert_eq!(failed.body["data"]["model"], "gpt-test");
    assert_eq!(failed.body["data"]["owner"], srv.key_id);
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_test_event_and_subscription_management() {
    let fake = fake().await;
    let srv = start_with(&fake, FAST, |_| {}).await;
    let rx = receiver().await;
    // A generated secret, shown once.
    let (status, sub) = admin(
        &srv,
        reqwest::Method::POST,
        "/admin/api/webhooks/subscriptions",
        Some(json!({"url": rx.url, "events": ["key.revoked"]})),
    )
    .await;
    assert_eq!(status, 201, "{sub}");
    let generated = sub["secret"].as_str().unwrap().to_owned();
    assert!(generated.starts_with("whsec_"));
    let id = sub["id"].as_str().unwrap().to_owned();
    let one = format!("/admin/api/webhooks/subscriptions/{id}");
    let (_, got) = admin(&srv, reqwest::Method::GET, &one, None).await;
    assert!(got.get("secret").is_none(), "never shown again: {got}");
    assert_eq!(got["description"], "");
    let (_, list) = admin(
        &srv,
        reqwest::Method::GET,
        "/admin/api/webhooks/subscriptions",
        None,
    )
    .await;
    assert_eq!(list["object"], "list");
    assert_eq!(list["data"].as_array().unwrap().len(), 1);
    assert!(list["data"][0].get("secret").is_none());

    // Use the receiver's key instead; rotate shows a new one once.
    let (status, patched) = admin(
        &srv,
        reqwest::Method::PATCH,
        &one,
        Some(json!({"secret": SECRET, "description": "ops", "events": ["key.revoked", "message.created"]})),
    )
    .await;
    assert_eq!(status, 200, "{patched}");
    assert!(patched.get("secret").is_none());
    assert_eq!(patched["description"], "ops");
    assert_eq!(patched["events"], json!(["key.revoked", "message.created"]));

    let (status, queued) = admin(&srv, reqwest::Method::POST, &format!("{one}/test"), None).await;
    assert_eq!(status, 202, "{queued}");
    assert_eq!(queued["event_type"], "webhook.test");
    let hits = rx.wait_for(5, "the test event", |h| !h.is_empty()).await;
    assert_eq!(hits[0].body["type"], "webhook.test");
    assert_eq!(hits[0].id, queued["event_id"].as_str().unwrap());
    assert_eq!(hits[0].body["data"]["subscription_id"], id.as_str());

    // Disabled: events are not sent to it.
    let (_, off) = admin(
        &srv,
        reqwest::Method::PATCH,
        &one,
        Some(json!({"enabled": false})),
    )
    .await;
    assert_eq!(off["enabled"], false);
    let (key, _) = common::create_key(&srv.state, &[moltbot_core::Scope::Chat], Default::default()).await;
    admin(
        &srv,
        reqwest::Method::DELETE,
        &format!("/admin/api/keys/{}", key.id),
        None,
    )
    .await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(rx.hits().len(), 1);

    let (status, rotated) = admin(
        &srv,
        reqwest::Method::PATCH,
        &one,
        Some(json!({"rotate_secret": true})),
    )
    .await;
    assert_eq!(status, 200);
    let new_secret = rotated["secret"].as_str().unwrap();
    assert!(new_secret.starts_with("whsec_") && new_secret != SECRET && new_secret != generated);

    // Delete: gone, with its deliveries.
    let (status, deleted) = admin(&srv, reqwest::Method::DELETE, &one, None).await;
    assert_eq!(status, 200);
    assert_eq!(deleted["deleted"], true);
    let (status, err) = admin(&srv, reqwest::Method::GET, &one, None).await;
    assert_eq!(status, 404);
    assert_eq!(err["error"]["param"], "subscription_id");
    assert!(deliveries(&srv, "").await.is_empty());
    let (status, _) = admin(&srv, reqwest::Method::POST, &format!("{one}/test"), None).await;
    assert_eq!(status, 404);
    let (status, _) = admin(
        &srv,
        reqwest::Method::POST,
        "/admin/api/webhooks/deliveries/whdel_nope/redeliver",
        None,
    )
    .await;
    assert_eq!(status, 404);

    // The channel list next door is untouched.
    let (status, channels) = admin(&srv, reqwest::Method::GET, "/admin/api/webhooks", None).await;
    assert_eq!(status, 200);
    assert_eq!(channels["object"], "list");
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_bad_input_names_the_field() {
    let fake = fake().await;
    let srv = start_with(&fake, FAST, |_| {}).await;
    let cases = [
        (
            json!({"url": "ftp://example.com/x", "events": ["key.revoked"]}),
            "url",
        ),
        (json!({"url": "not a url", "events": ["key.revoked"]}), "url"),
        (json!({"url": "https://example.com/x", "events": []}), "events"),
        (
            json!({"url": "https://example.com/x", "events": ["key.created"]}),
            "events",
        ),
        (
            json!({"url": "https://example.com/x", "events": ["webhook.test"]}),
            "events",
        ),
        (
            json!({"url": "https://example.com/x", "events": ["key.revoked"], "secret": "whsec_!!!"}),
            "secret",
        ),
        (
            json!({"url": "https://example.com/x", "events": ["key.revoked"], "description": "x".repeat(501)}),
            "description",
        ),
    ];
    for (body, field) in cases {
        let (status, err) = admin(
            &srv,
            reqwest::Method::POST,
            "/admin/api/webhooks/subscriptions",
            Some(body.clone()),
        )
        .await;
        assert_eq!(status, 400, "{body}: {err}");
        assert_eq!(err["error"]["type"], "invalid_request_error", "{err}");
        assert_eq!(err["error"]["param"], field, "{body}: {err}");
    }
    let (status, err) = admin(
        &srv,
        reqwest::Method::GET,
        "/admin/api/webhooks/deliveries?status=lost",
        None,
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(err["error"]["param"], "status");
    let (status, _) = srv
        .anon
        .get(srv.admin_url("/admin/api/webhooks/subscriptions"))
        .send()
        .await
        .map(|r| (r.status().as_u16(), ()))
        .unwrap();
    assert_eq!(status, 401, "admin only");
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_private_targets_are_refused_unless_allowed() {
    let fake = fake().await;
    let srv = start_with(&fake, FAST, |c| c.webhooks.allow_private_targets = false).await;
    let rx = receiver().await;
    for url in [
        rx.url.as_str(),
        "http://localhost:9/x",
        "http://10.0.0.8/x",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]:9/",
        "http://[::ffff:127.0.0.1]/",
    ] {
        let (status, err) = admin(
            &srv,
            reqwest::Method::POST,
            "/admin/api/webhooks/subscriptions",
            Some(json!({"url": url, "events": ["key.revoked"]})),
        )
        .await;
        assert_eq!(status, 400, "{url}: {err}");
        assert_eq!(err["error"]["param"], "url");
        assert!(
            err["error"]["message"]
                .as_str()
                .unwrap()
                .contains("allow_private_targets"),
            "{err}"
        );
    }

    // A subscription stored while private targets were allowed is refused again at delivery time:
    // nothing is sent, the attempt says why.
    let sub = moltbot_core::webhooks::WebhookSubscription {
        id: "whsub_private".into(),
        url: rx.url.clone(),
        events: vec!["conversation.created".into()],
        secret: SECRET.into(),
        description: String::new(),
        enabled: true,
        created_ms: 0,
        updated_ms: 0,
    };
    srv.state.store.create_webhook_subscription(&sub).await.unwrap();
    srv.post("/v1/conversations", json!({})).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let d = loop {
        let list = deliveries(&srv, "").await;
        if let Some(d) = list
            .into_iter()
            .find(|d| d["attempts"].as_u64() >= Some(1) && d["last_error"].is_string())
        {
            break d;
        }
        assert!(tokio::time::Instant::now() < deadline, "no refused attempt");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(d["last_error"].as_str().unwrap().contains("refused"), "{d}");
    assert_eq!(d["last_status"], Value::Null);
    assert!(rx.hits().is_empty(), "never connected");
    srv.stop().await;
}
