//! Generic inbound hooks (`POST /hooks/{name}`) through the real server and the channel pipeline:
//! bearer and Standard Webhooks authentication, sync answers in a continuing conversation, async
//! answers delivered to a callback with retries (signed, once per event), bad input, and the admin
//! channel list.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::HeaderMap;
use base64::Engine;
use common::*;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

const TOKEN: &str = "hook-token-0123456789abcdef";
// whsec_ + base64 of 32 bytes.
const WHSEC: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSwAAAAAAAAAAA=";
const CALLBACK_WHSEC: &str = "whsec_Y2FsbGJhY2sta2V5LWZvci10ZXN0cy0wMTIzNDU2Nzg5";

/// Standard Webhooks v1 signature, written here independently of the server's implementation.
fn sign(secret: &str, id: &str, ts: i64, body: &[u8]) -> String {
    let key = base64::engine::general_purpose::STANDARD
        .decode(secret.strip_prefix("whsec_").unwrap())
        .unwrap();
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{id}.{ts}.").as_bytes());
    mac.update(body);
    format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    )
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

#[derive(Default)]
struct Callbacks {
    /// (webhook-id, signature valid, body) of every call.
    calls: Vec<(String, bool, Value)>,
    /// How many calls to answer 503 before answering 200.
    fail_first: usize,
}

async fn callback_receiver(fail_first: usize) -> (String, Arc<Mutex<Callbacks>>) {
    let state = Arc::new(Mutex::new(Callbacks {
        fail_first,
        ..Callbacks::default()
    }));
    let st = state.clone();
    let app = axum::Router::new().route(
        "/cb",
        axum::routing::post(move |headers: HeaderMap, body: axum::body::Bytes| {
            let st = st.clone();
            async move {
                let h = |n: &str| {
                    headers
                        .get(n)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_owned()
                };
                let (id, ts, sig) = (h("webhook-id"), h("webhook-timestamp"), h("webhook-signature"));
                let valid = ts
                    .parse::<i64>()
                    .is_ok_and(|t| (now() - t).abs() < 300 && sign(CALLBACK_WHSEC, &id, t, &body) == sig);
                let mut s = st.lock().unwrap();
                s.calls
                    .push((id, valid, serde_json::from_slice(&body).unwrap_or(Value::Null)));
                if s.calls.len() <= s.fail_first {
                    axum::http::StatusCode::SERVICE_UNAVAILABLE
                } else {
                    axum::http::StatusCode::OK
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/cb", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, state)
}

fn hooks_toml(callback: &str) -> String {
    format!(
        r#"
[[hooks]]
name = "ops"
token = "{TOKEN}"
system_prompt = "Answer like an operator."

[[hooks]]
name = "crm"
secret = "{WHSEC}"
mode = "async"
callback_url = "{callback}"
callback_secret = "{CALLBACK_WHSEC}"

[pipeline]
retry_base = "50ms"
retry_max = "200ms"
poll_interval = "50ms"
"#
    )
}

#[tokio::test]
async fn sync_hook_with_a_token_answers_in_a_continuing_conversation() {
    let fake = fake_with(moltbot_testkit::Script::echo()).await;
    let (cb, _) = callback_receiver(0).await;
    let srv = start_with(&fake, &hooks_toml(&cb), |_| {}).await;
    let post = |body: Value| {
        srv.anon
            .post(srv.url("/hooks/ops"))
            .bearer_auth(TOKEN)
            .json(&body)
            .send()
    };
    let r = post(json!({"text": "disk full on db1", "conversation": "inc-42", "user": "alice"}))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let first: Value = r.json().await.unwrap();
    assert_eq!(first["object"], "hook.reply");
    assert_eq!(first["text"], "echo: disk full on db1");
    let conv = first["conversation_id"].as_str().unwrap().to_owned();

    let r = post(json!({"text": "still full", "conversation": "inc-42"}))
        .await
        .unwrap();
    let second: Value = r.json().await.unwrap();
    assert_eq!(
        second["conversation_id"],
        conv.as_str(),
        "same key, same conversation"
    );
    // The model saw the system prompt and the earlier exchange.
    let sent: Value = fake.chat_requests().last().unwrap().body.clone();
    let roles: Vec<(&str, &str)> = sent["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["role"].as_str().unwrap(), m["content"].as_str().unwrap()))
        .collect();
    assert_eq!(
        roles,
        [
            ("system", "Answer like an operator."),
            ("user", "disk full on db1"),
            ("assistant", "echo: disk full on db1"),
            ("user", "still full"),
        ]
    );
    let other: Value = post(json!({"text": "hello", "conversation": "inc-43"}))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_ne!(other["conversation_id"], conv.as_str());
    srv.stop().await;
}

#[tokio::test]
async fn hooks_refuse_bad_credentials_and_bad_bodies() {
    let fake = fake_with(moltbot_testkit::Script::echo()).await;
    let (cb, _) = callback_receiver(0).await;
    let srv = start_with(&fake, &hooks_toml(&cb), |_| {}).await;
    let send = |path: &str, token: Option<&str>, body: &str| {
        let mut r = srv
            .anon
            .post(srv.url(path))
            .header("content-type", "application/json")
            .body(body.to_owned());
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        r.send()
    };
    let ok = r#"{"text":"hi"}"#;
    let cases: Vec<(String, Option<&str>, &str, u16, &str)> = vec![
        ("/hooks/ops".into(), None, ok, 401, "missing token"),
        ("/hooks/ops".into(), Some("wrong-token"), ok, 401, "wrong token"),
        (
            format!("/hooks/ops?token={TOKEN}"),
            None,
            ok,
            400,
            "token in the URL",
        ),
        (
            "/hooks/ops".into(),
            Some(TOKEN),
            r#"{"txt":"hi"}"#,
            400,
            "no text",
        ),
        (
            "/hooks/ops".into(),
            Some(TOKEN),
            r#"{"text":"  "}"#,
            400,
            "empty text",
        ),
        (
            "/hooks/ops".into(),
            Some(TOKEN),
            r#"{"text":"hi","conversation":"a b"}"#,
            400,
            "bad key",
        ),
        ("/hooks/ops".into(), Some(TOKEN), "not json", 400, "not JSON"),
        (
            "/hooks/crm".into(),
            Some(TOKEN),
            ok,
            401,
            "signature hook with a token",
        ),
        ("/hooks/nope".into(), Some(TOKEN), ok, 404, "unknown hook"),
        ("/channels/telegram/nope".into(), None, ok, 404, "unknown channel"),
    ];
    for (path, token, body, status, what) in cases {
        let r = send(&path, token, body).await.unwrap();
        assert_eq!(r.status(), status, "{what}");
        let err: Value = r.json().await.unwrap();
        assert!(
            err["error"]["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{what}: {err}"
        );
    }
    // Other methods get the usual 405 envelope.
    let r = srv
        .anon
        .put(srv.url("/channels/telegram/nope"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    let err: Value = r.json().await.unwrap();
    assert!(
        err["error"]["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{err}"
    );
    // A stale or tampered Standard Webhooks signature.
    let body = br#"{"text":"hi"}"#;
    for (ts, sig_body) in [(now() - 3600, &body[..]), (now(), &br#"{"text":"other"}"#[..])] {
        let r = srv
            .anon
            .post(srv.url("/hooks/crm"))
            .header("webhook-id", "msg_bad")
            .header("webhook-timestamp", ts.to_string())
            .header("webhook-signature", sign(WHSEC, "msg_bad", ts, sig_body))
            .body(body.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);
    }
    assert_eq!(fake.chat_requests().len(), 0, "nothing refused reached the model");
    srv.stop().await;
}

#[tokio::test]
async fn async_hook_delivers_a_signed_callback_with_retries_once_per_event() {
    let fake = fake_with(moltbot_testkit::Script::echo()).await;
    let (cb, calls) = callback_receiver(2).await;
    let srv = start_with(&fake, &hooks_toml(&cb), |_| {}).await;
    let body = br#"{"text":"summarise ticket 7","conversation":"t-7"}"#;
    let deliver = |id: &'static str| {
        let ts = now();
        srv.anon
            .post(srv.url("/hooks/crm"))
            .header("content-type", "application/json")
            .header("webhook-id", id)
            .header("webhook-timestamp", ts.to_string())
            .header(
                "webhook-signature",
                format!("v1,bm9wZQ== {}", sign(WHSEC, id, ts, body)),
            )
            .body(body.to_vec())
            .send()
    };
    let r = deliver("msg_1").await.unwrap();
    assert_eq!(r.status(), 202);
    let ack: Value = r.json().await.unwrap();
    assert_eq!(ack["id"], "msg_1");
    // The sender retries (its own timeout): acknowledged again, not answered again.
    assert_eq!(deliver("msg_1").await.unwrap().status(), 202);

    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if calls.lock().unwrap().calls.len() >= 3 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "callback not delivered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let calls = std::mem::take(&mut *calls.lock().unwrap());
    assert_eq!(calls.calls.len(), 3, "two 503s, then one success, nothing after");
    let ids: Vec<&str> = calls.calls.iter().map(|c| c.0.as_str()).collect();
    assert!(
        ids.iter().all(|i| *i == ids[0]),
        "webhook-id is stable across retries: {ids:?}"
    );
    assert!(
        calls.calls.iter().all(|c| c.1),
        "every callback is signed with callback_secret"
    );
    let data = &calls.calls[2].2["data"];
    assert_eq!(calls.calls[2].2["type"], "hook.reply");
    assert_eq!(data["text"], "echo: summarise ticket 7");
    assert_eq!(
        (
            data["hook"].as_str(),
            data["event_id"].as_str(),
            data["conversation"].as_str()
        ),
        (Some("crm"), Some("msg_1"), Some("t-7"))
    );
    assert_eq!(fake.chat_requests().len(), 1, "the model was asked once");

    // The event is marked done just after the callback succeeded: wait for the console's counts.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let list: Value = loop {
        let list: Value = srv
            .http
            .get(srv.admin_url("/admin/api/webhooks"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let done = list["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|h| h["name"] == "hook/crm" && h["done"] == 1);
        if done || tokio::time::Instant::now() > deadline {
            break list;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let crm = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["name"] == "hook/crm")
        .unwrap()
        .clone();
    assert_eq!(
        (crm["path"].as_str(), crm["mode"].as_str(), crm["done"].as_u64()),
        (Some("/hooks/crm"), Some("async"), Some(1))
    );
    assert!(crm["last_event_at"].as_i64().unwrap() > 0);
    let ops = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["name"] == "hook/ops")
        .unwrap()
        .clone();
    assert_eq!(ops["mode"], "sync");
    srv.stop().await;
}

const SLACK_SECRET: &str = "slack-signing-secret-for-tests";

/// A fake Slack Web API: records `chat.postMessage` calls; the first call answers 429 with Retry-After.
async fn fake_slack() -> (String, Arc<Mutex<Vec<Value>>>) {
    let posts = Arc::new(Mutex::new(Vec::<Value>::new()));
    let calls = Arc::new(Mutex::new(0usize));
    let p = posts.clone();
    let app = axum::Router::new().route(
        "/api/chat.postMessage",
        axum::routing::post(move |headers: HeaderMap, axum::Json(body): axum::Json<Value>| {
            let (p, calls) = (p.clone(), calls.clone());
            async move {
                assert_eq!(headers.get("authorization").unwrap(), "Bearer xoxb-test-token");
                let n = {
                    let mut c = calls.lock().unwrap();
                    *c += 1;
                    *c
                };
                if n == 1 {
                    return (
                        axum::http::StatusCode::TOO_MANY_REQUESTS,
                        [("retry-after", "1")],
                        axum::Json(json!({"ok": false, "error": "ratelimited"})),
                    );
                }
                p.lock().unwrap().push(body);
                (
                    axum::http::StatusCode::OK,
                    [("retry-after", "0")],
                    axum::Json(json!({"ok": true, "ts": format!("1700000000.{n:06}")})),
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/api", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, posts)
}

fn slack_event(event_id: &str, event: &Value) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "type": "event_callback", "team_id": "T1", "api_app_id": "A1", "event_id": event_id, "event_time": now(),
        "authorizations": [{"team_id": "T1", "user_id": "UBOT", "is_bot": true}],
        "event": event,
    }))
    .unwrap()
}

async fn post_slack(srv: &TestServer, body: &[u8], retry: Option<&str>) -> reqwest::Response {
    let ts = now().to_string();
    let mut mac = Hmac::<Sha256>::new_from_slice(SLACK_SECRET.as_bytes()).unwrap();
    mac.update(format!("v0:{ts}:").as_bytes());
    mac.update(body);
    let sig = format!("v0={}", hex::encode(mac.finalize().into_bytes()));
    let mut r = srv
        .anon
        .post(srv.url("/channels/slack/team"))
        .header("content-type", "application/json")
        .header("x-slack-request-timestamp", ts)
        .header("x-slack-signature", sig);
    if let Some(n) = retry {
        r = r
            .header("x-slack-retry-num", n)
            .header("x-slack-retry-reason", "http_timeout");
    }
    r.body(body.to_vec()).send().await.unwrap()
}

#[tokio::test]
async fn slack_mention_is_answered_once_in_its_thread_in_chunks_after_a_429() {
    // A reply longer than Slack's 4000-character chunk: three messages.
    let long = (0..1800)
        .map(|i| format!("w{i:04}"))
        .collect::<Vec<_>>()
        .join(" ");
    let fake = fake_with(moltbot_testkit::Script::text(long.clone())).await;
    let (slack, posts) = fake_slack().await;
    let toml = format!(
        r#"
[[channels]]
platform = "slack"
account = "team"
api_base = "{slack}"
bot_token = "xoxb-test-token"
signing_secret = "{SLACK_SECRET}"

[pipeline]
retry_base = "50ms"
poll_interval = "50ms"
"#
    );
    let srv = start_with(&fake, &toml, |_| {}).await;

    // Not for the bot: a channel message without a mention is acknowledged and not queued.
    let chatter = slack_event(
        "Ev1",
        &json!({"type": "message", "channel_type": "channel", "channel": "C1",
        "user": "U1", "text": "lunch?", "ts": "1700000000.000100"}),
    );
    assert_eq!(post_slack(&srv, &chatter, None).await.status(), 200);
    let mention = slack_event(
        "Ev2",
        &json!({"type": "app_mention", "channel": "C1", "user": "U1",
        "text": "<@UBOT> write a long answer", "ts": "1700000000.000200"}),
    );
    let started = std::time::Instant::now();
    let r = post_slack(&srv, &mention, None).await;
    assert_eq!(r.status(), 200);
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "acknowledged before answering"
    );
    // Slack's retry of the same event (X-Slack-Retry-Num) is acknowledged, not answered again.
    assert_eq!(post_slack(&srv, &mention, Some("1")).await.status(), 200);
    // A bad signature is refused.
    let r = srv
        .anon
        .post(srv.url("/channels/slack/team"))
        .header("x-slack-request-timestamp", now().to_string())
        .header("x-slack-signature", "v0=00")
        .body(mention.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while posts.lock().unwrap().len() < 3 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "reply not sent: {:?}",
            posts.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let posts = posts.lock().unwrap().clone();
    assert_eq!(
        posts.len(),
        3,
        "one reply in three chunks, sent once (the 429 was retried)"
    );
    for p in &posts {
        assert_eq!(p["channel"], "C1");
        assert_eq!(p["thread_ts"], "1700000000.000200", "threaded under the mention");
        assert!(p["text"].as_str().unwrap().chars().count() <= 4000);
    }
    let joined = posts
        .iter()
        .map(|p| p["text"].as_str().unwrap())
        .collect::<Vec<_>>()
        .join(" ");
    assert_eq!(joined, long);
    // The model got the text without the mention; the exchange is a stored conversation.
    let sent = fake.chat_requests();
    assert_eq!(sent.len(), 1);
    assert_eq!(
        sent[0].body["messages"].as_array().unwrap().last().unwrap()["content"],
        "write a long answer"
    );
    // The event is marked done right after its last chunk went out.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let events = loop {
        let events = srv
            .state
            .store
            .list_channel_events(Some("slack"), Some("team"), 10)
            .await
            .unwrap();
        if events
            .iter()
            .all(|e| e.status == moltbot_core::channels::ChannelEventStatus::Done)
            || tokio::time::Instant::now() > deadline
        {
            break events;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(events.len(), 1);
    assert_eq!(
        (events[0].status, events[0].attempts, events[0].chunks_sent),
        (moltbot_core::channels::ChannelEventStatus::Done, 2, 3)
    );
    let conv = events[0].conversation_id.clone().unwrap();
    let summary = srv
        .state
        .store
        .conversation_summary(None, &conv)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(summary.conversation.owner, "channel:slack:team");
    srv.stop().await;
}

/// DingTalk Stream mode through the server: the replica takes the account's lease, opens the
/// connection, a CALLBACK is acknowledged (with its messageId) only once queued, and the answer goes
/// to the message's sessionWebhook.
#[tokio::test]
async fn dingtalk_stream_callback_is_acked_after_queueing_and_answered_via_session_webhook() {
    use axum::extract::ws::{Message, WebSocketUpgrade};
    use futures::StreamExt;

    let fake = fake_with(moltbot_testkit::Script::echo()).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let replies = Arc::new(Mutex::new(Vec::<Value>::new()));
    let (acks_tx, mut acks) = tokio::sync::mpsc::unbounded_channel::<Value>();
    let frame = json!({
        "specVersion": "1.0", "type": "CALLBACK",
        "headers": {"appId": "app", "connectionId": "c1", "contentType": "application/json",
                    "messageId": "frame-1", "time": "1700000000000", "topic": "/v1.0/im/bot/messages/get"},
        "data": serde_json::to_string(&json!({
            "conversationId": "cid-1", "chatbotUserId": "bot", "msgId": "msg-stream-1", "senderNick": "Li",
            "senderStaffId": "staff-1", "senderId": "s-1", "conversationType": "1",
            "sessionWebhook": format!("http://{addr}/session"),
            "sessionWebhookExpiredTime": (now() + 3600) * 1000, "createAt": now() * 1000,
            "text": {"content": "what is on today"}, "msgtype": "text"
        })).unwrap(),
    });
    let r = replies.clone();
    let app = axum::Router::new()
        .route(
            "/v1.0/gateway/connections/open",
            axum::routing::post(move || async move {
                axum::Json(json!({"endpoint": format!("ws://{addr}/connect"), "ticket": "t1"}))
            }),
        )
        .route(
            "/connect",
            axum::routing::any(move |ws: WebSocketUpgrade| {
                let (frame, acks_tx) = (frame.clone(), acks_tx.clone());
                async move {
                    ws.on_upgrade(move |mut socket| async move {
                        socket
                            .send(Message::Text(frame.to_string().into()))
                            .await
                            .unwrap();
                        while let Some(Ok(m)) = socket.next().await {
                            if let Message::Text(t) = m {
                                let _ = acks_tx.send(serde_json::from_str(&t).unwrap());
                            }
                        }
                    })
                }
            }),
        )
        .route(
            "/session",
            axum::routing::post(move |axum::Json(body): axum::Json<Value>| {
                let r = r.clone();
                async move {
                    r.lock().unwrap().push(body);
                    axum::Json(json!({"errcode": 0, "errmsg": "ok"}))
                }
            }),
        );
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let toml = format!(
        r#"
[[channels]]
platform = "dingtalk"
account = "corp"
mode = "stream"
api_base = "http://{addr}"
app_key = "ding-app-key"
app_secret = "ding-app-secret"

[pipeline]
lease_ttl = "3s"
poll_interval = "50ms"
"#
    );
    let srv = start_with(&fake, &toml, |_| {}).await;
    let ack = tokio::time::timeout(Duration::from_secs(10), acks.recv())
        .await
        .expect("no ack")
        .unwrap();
    assert_eq!(ack["code"], 200);
    assert_eq!(ack["headers"]["messageId"], "frame-1");
    // Acknowledged only after it was stored.
    let queued = srv
        .state
        .store
        .list_channel_events(Some("dingtalk"), Some("corp"), 5)
        .await
        .unwrap();
    assert_eq!(queued.len(), 1);
    assert_eq!(queued[0].event_id, "msg-stream-1");

    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while replies.lock().unwrap().is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no reply via sessionWebhook"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let reply = replies.lock().unwrap()[0].clone();
    assert_eq!(reply["msgtype"], "text");
    assert_eq!(reply["text"]["content"], "echo: what is on today");
    let list: Value = srv
        .http
        .get(srv.admin_url("/admin/api/webhooks"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let corp = &list["data"][0];
    assert_eq!(
        (corp["name"].as_str(), corp["mode"].as_str()),
        (Some("dingtalk/corp"), Some("stream"))
    );
    assert!(
        corp["leader"]
            .as_str()
            .is_some_and(|l| l == srv.state.channels.instance),
        "{corp}"
    );
    srv.stop().await;
}

/// Feishu through the server: the encrypted URL check when the Request URL is saved, then a signed,
/// encrypted direct message answered through the IM API with the cached tenant token and a `uuid`.
#[tokio::test]
async fn feishu_url_check_and_encrypted_message_are_answered() {
    use moltbot_channels::feishu::{encrypt, signature};
    const ENCRYPT_KEY: &str = "feishu-encrypt-key";
    const VTOKEN: &str = "feishu-verification-token";
    let fake = fake_with(moltbot_testkit::Script::echo()).await;
    let sent = Arc::new(Mutex::new(Vec::<Value>::new()));
    let s = sent.clone();
    let app = axum::Router::new()
        .route(
            "/open-apis/auth/v3/tenant_access_token/internal",
            axum::routing::post(|| async {
                axum::Json(json!({"code": 0, "msg": "ok", "tenant_access_token": "t-1", "expire": 7200}))
            }),
        )
        .route(
            "/open-apis/im/v1/messages",
            axum::routing::post(move |headers: HeaderMap, axum::Json(body): axum::Json<Value>| {
                let s = s.clone();
                async move {
                    assert_eq!(headers.get("authorization").unwrap(), "Bearer t-1");
                    s.lock().unwrap().push(body);
                    axum::Json(json!({"code": 0, "msg": "success", "data": {}}))
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let toml = format!(
        r#"
[[channels]]
platform = "feishu"
account = "main"
api_base = "{base}"
app_id = "cli_test"
app_secret = "feishu-app-secret"
verification_token = "{VTOKEN}"
encrypt_key = "{ENCRYPT_KEY}"

[pipeline]
poll_interval = "50ms"
"#
    );
    let srv = start_with(&fake, &toml, |_| {}).await;
    let url = srv.url("/channels/feishu/main");
    let check = json!({"challenge": "c-123", "token": VTOKEN, "type": "url_verification"});
    let body = json!({"encrypt": encrypt(ENCRYPT_KEY, check.to_string().as_bytes())});
    let r = srv.anon.post(&url).json(&body).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap(), json!({"challenge": "c-123"}));

    let event = json!({
        "schema": "2.0",
        "header": {"event_id": "ev-1", "event_type": "im.message.receive_v1", "token": VTOKEN, "create_time": "1", "app_id": "cli_test"},
        "event": {"sender": {"sender_id": {"open_id": "ou_alice"}, "sender_type": "user"},
                  "message": {"message_id": "om_1", "chat_id": "oc_1", "chat_type": "p2p", "message_type": "text",
                              "create_time": "1700000000000", "content": "{\"text\":\"ni hao\"}"}}
    });
    let raw =
        serde_json::to_vec(&json!({"encrypt": encrypt(ENCRYPT_KEY, event.to_string().as_bytes())})).unwrap();
    let ts = now().to_string();
    let post = |sig: String| {
        srv.anon
            .post(&url)
            .header("content-type", "application/json")
            .header("x-lark-request-timestamp", &ts)
            .header("x-lark-request-nonce", "n1")
            .header("x-lark-signature", sig)
            .body(raw.clone())
            .send()
    };
    assert_eq!(
        post("0".repeat(64)).await.unwrap().status(),
        401,
        "forged signature"
    );
    assert_eq!(
        post(signature(&ts, "n1", ENCRYPT_KEY, &raw))
            .await
            .unwrap()
            .status(),
        200
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while sent.lock().unwrap().is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "no reply");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let reply = sent.lock().unwrap()[0].clone();
    assert_eq!(reply["receive_id"], "oc_1");
    assert_eq!(
        serde_json::from_str::<Value>(reply["content"].as_str().unwrap()).unwrap(),
        json!({"text": "echo: ni hao"})
    );
    assert!(
        reply["uuid"]
            .as_str()
            .is_some_and(|u| u.starts_with("chev_") && u.len() <= 50)
    );
    srv.stop().await;
}

/// WeCom through the server: the GET URL check (encrypted echostr) when the callback URL is saved,
/// then an encrypted text message answered through message/send with the cached access token.
#[tokio::test]
async fn wecom_url_check_and_encrypted_message_are_answered() {
    use moltbot_channels::wecom::{encrypt, msg_signature};
    const AES_KEY: &str = "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C";
    const CB_TOKEN: &str = "QDG6eK";
    const CORP: &str = "wx5823bf96d3bd56c7";
    let fake = fake_with(moltbot_testkit::Script::echo()).await;
    let sent = Arc::new(Mutex::new(Vec::<Value>::new()));
    let s = sent.clone();
    let app = axum::Router::new()
        .route(
            "/cgi-bin/gettoken",
            axum::routing::get(|| async {
                axum::Json(json!({"errcode": 0, "errmsg": "ok", "access_token": "wt-1", "expires_in": 7200}))
            }),
        )
        .route(
            "/cgi-bin/message/send",
            axum::routing::post(
                move |q: axum::extract::Query<std::collections::HashMap<String, String>>,
                      axum::Json(body): axum::Json<Value>| {
                    let s = s.clone();
                    async move {
                        assert_eq!(q.get("access_token").map(String::as_str), Some("wt-1"));
                        s.lock().unwrap().push(body);
                        axum::Json(json!({"errcode": 0, "errmsg": "ok"}))
                    }
                },
            ),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let toml = format!(
        r#"
[[channels]]
platform = "wecom"
account = "corp"
api_base = "{base}"
corp_id = "{CORP}"
agent_id = "1000002"
app_secret = "wecom-agent-secret"
token = "{CB_TOKEN}"
encoding_aes_key = "{AES_KEY}"

[pipeline]
poll_interval = "50ms"
"#
    );
    let srv = start_with(&fake, &toml, |_| {}).await;
    let ts = now().to_string();
    let echostr = encrypt(AES_KEY, b"echo-4711", CORP).unwrap();
    let sig = msg_signature(CB_TOKEN, &ts, "n1", &echostr);
    let r = srv
        .anon
        .get(srv.url("/channels/wecom/corp"))
        .query(&[
            ("msg_signature", sig.as_str()),
            ("timestamp", &ts),
            ("nonce", "n1"),
            ("echostr", &echostr),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "echo-4711");

    let inner = format!(
        "<xml><ToUserName><![CDATA[{CORP}]]></ToUserName><FromUserName><![CDATA[zhangsan]]></FromUserName>\
         <CreateTime>{ts}</CreateTime><MsgType><![CDATA[text]]></MsgType><Content><![CDATA[你好]]></Content>\
         <MsgId>1234567890123456</MsgId><AgentID>1000002</AgentID></xml>"
    );
    let enc = encrypt(AES_KEY, inner.as_bytes(), CORP).unwrap();
    let body = format!(
        "<xml><ToUserName><![CDATA[{CORP}]]></ToUserName><AgentID><![CDATA[1000002]]></AgentID><Encrypt><![CDATA[{enc}]]></Encrypt></xml>"
    );
    let post = |sig: String| {
        srv.anon
            .post(srv.url("/channels/wecom/corp"))
            .query(&[
                ("msg_signature", sig.as_str()),
                ("timestamp", &ts),
                ("nonce", "n2"),
            ])
            .body(body.clone())
            .send()
    };
    assert_eq!(post("0".repeat(40)).await.unwrap().status(), 401);
    assert_eq!(
        post(msg_signature(CB_TOKEN, &ts, "n2", &enc))
            .await
            .unwrap()
            .status(),
        200
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while sent.lock().unwrap().is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "no reply");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let reply = sent.lock().unwrap()[0].clone();
    assert_eq!(reply["touser"], "zhangsan");
    assert_eq!(reply["agentid"], 1000002);
    assert_eq!(reply["text"]["content"], "echo: 你好");
    assert_eq!(reply["enable_duplicate_check"], 1);
    srv.stop().await;
}
