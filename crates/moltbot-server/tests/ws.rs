//! WebSocket chat (`/v1/ws`) over a real socket: authentication (ticket, subprotocol), Origin,
//! streamed turns stored in conversations, cancel, malformed frames, liveness, limits and
//! backpressure against a slow reader.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use futures::{SinkExt, StreamExt};
use moltbot_core::{Clock, KeyLimits, ManualClock, Scope, SystemClock};
use moltbot_testkit::{Script, UsageMode};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;
type Handshake = tungstenite::handshake::client::Response;

const WAIT: Duration = Duration::from_secs(10);
/// For waits that depend on pushing megabytes through loopback sockets (slow on a loaded machine).
const SLOW_WAIT: Duration = Duration::from_secs(40);

fn ws_url(srv: &TestServer, query: &str) -> String {
    format!("ws://{}/v1/ws{query}", srv.addrs.chat_addr)
}

/// Open a socket with extra headers; `Err((status, body))` when the upgrade is refused.
async fn open(
    srv: &TestServer,
    query: &str,
    headers: &[(&str, String)],
) -> Result<(Ws, Handshake), (u16, Value)> {
    let mut req = ws_url(srv, query).into_client_request().unwrap();
    for (k, v) in headers {
        req.headers_mut().insert(
            tungstenite::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    match tokio_tungstenite::connect_async(req).await {
        Ok(pair) => Ok(pair),
        Err(tungstenite::Error::Http(resp)) => {
            let status = resp.status().as_u16();
            let body = resp
                .body()
                .as_deref()
                .and_then(|b| serde_json::from_slice(b).ok())
                .unwrap_or(Value::Null);
            Err((status, body))
        }
        Err(e) => panic!("connect failed: {e}"),
    }
}

fn bearer(secret: &str) -> (&'static str, String) {
    ("sec-websocket-protocol", format!("moltbot.v1, bearer.{secret}"))
}

/// Like [`connect`], over a socket whose receive buffer is fixed at 64 KiB. The stalled-reader tests
/// need the 16 MB reply not to fit into the socket buffers: Linux grows a receive buffer up to
/// `net.ipv4.tcp_rmem`'s maximum, 32 MiB on some machines, unless the size is set explicitly.
async fn connect_small_buffer(srv: &TestServer) -> Ws {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(64 * 1024).unwrap();
    let stream = socket.connect(srv.addrs.chat_addr).await.unwrap();
    let mut req = ws_url(srv, "").into_client_request().unwrap();
    let (k, v) = bearer(&srv.secret);
    req.headers_mut().insert(k, HeaderValue::from_str(&v).unwrap());
    let (mut ws, _) = tokio_tungstenite::client_async(req, MaybeTlsStream::Plain(stream))
        .await
        .expect("upgrade");
    let ready = next_json(&mut ws).await;
    assert_eq!(ready["type"], "ready", "{ready}");
    ws
}

/// A socket authenticated with the test key's subprotocol, past its `ready` frame.
async fn connect(srv: &TestServer) -> Ws {
    let (mut ws, _) = open(srv, "", &[bearer(&srv.secret)]).await.expect("upgrade");
    let ready = next_json(&mut ws).await;
    assert_eq!(ready["type"], "ready", "{ready}");
    ws
}

/// The next JSON frame (WebSocket pings and pongs skipped).
async fn next_json(ws: &mut Ws) -> Value {
    loop {
        let msg = timeout(WAIT, ws.next())
            .await
            .expect("a frame in time")
            .expect("socket open")
            .expect("frame");
        match msg {
            Message::Text(t) => return serde_json::from_str(t.as_str()).expect("JSON frame"),
            Message::Ping(_) | Message::Pong(_) => {}
            other => panic!("unexpected frame {other:?}"),
        }
    }
}

async fn send(ws: &mut Ws, v: Value) {
    ws.send(Message::Text(v.to_string().into())).await.unwrap();
}

/// Frames of chat `id` until its `done` or `error`: (start, concatenated deltas, number of deltas, end).
async fn finish(ws: &mut Ws, id: &str) -> (Option<Value>, String, usize, Value) {
    let (mut start, mut text, mut n) = (None, String::new(), 0);
    loop {
        let f = next_json(ws).await;
        assert_eq!(f["id"], id, "frame of another chat: {f}");
        match f["type"].as_str().unwrap() {
            "start" => start = Some(f),
            "delta" => {
                text.push_str(f["content"].as_str().unwrap());
                n += 1;
            }
            "done" | "error" => return (start, text, n, f),
            other => panic!("unexpected {other}: {f}"),
        }
    }
}

/// The close frame's code, reading past anything else.
async fn close_code(ws: &mut Ws) -> Option<u16> {
    loop {
        match timeout(WAIT, ws.next()).await.expect("close in time") {
            Some(Ok(Message::Close(frame))) => return frame.map(|f| u16::from(f.code)),
            Some(Ok(_)) => {}
            Some(Err(_)) | None => return None,
        }
    }
}

async fn items(srv: &TestServer, conversation: &str) -> Vec<Value> {
    let r = srv
        .get(&format!("/v1/conversations/{conversation}/items?order=asc"))
        .await;
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    body["data"].as_array().unwrap().clone()
}

fn item_text(item: &Value) -> &str {
    item["content"][0]["text"].as_str().unwrap()
}

async fn ticket(srv: &TestServer, client: &reqwest::Client) -> (u16, Value) {
    let r = client.post(srv.url("/v1/ws/ticket")).send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

async fn manual_clock_server(fake: &moltbot_testkit::FakeUpstream) -> (TestServer, Arc<ManualClock>) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &fake.base_url(), "");
    let clock = Arc::new(ManualClock::new(SystemClock.now_millis()));
    let srv = start_config_clock(cfg, dir, Some(clock.clone())).await;
    (srv, clock)
}

#[tokio::test]
async fn ticket_is_single_use_and_expires() {
    let fake = fake().await;
    let (srv, clock) = manual_clock_server(&fake).await;
    let (status, t) = ticket(&srv, &srv.http).await;
    assert_eq!(status, 200, "{t}");
    assert_eq!(t["object"], "ws_ticket");
    assert_eq!(t["expires_in"], 30);
    let t = t["ticket"].as_str().unwrap().to_owned();

    let (mut ws, _) = open(&srv, &format!("?ticket={t}"), &[])
        .await
        .expect("ticket accepted");
    let ready = next_json(&mut ws).await;
    assert_eq!(ready, json!({"type": "ready", "models": ["gpt-test"]}));
    drop(ws);

    let (status, body) = open(&srv, &format!("?ticket={t}"), &[]).await.unwrap_err();
    assert_eq!(status, 401, "reuse: {body}");
    assert_eq!(body["error"]["code"], "invalid_ticket");

    let (_, t2) = ticket(&srv, &srv.http).await;
    clock.advance(Duration::from_secs(31));
    let (status, body) = open(&srv, &format!("?ticket={}", t2["ticket"].as_str().unwrap()), &[])
        .await
        .unwrap_err();
    assert_eq!(status, 401, "expired: {body}");
    assert_eq!(body["error"]["code"], "invalid_ticket");

    // Tickets need the chat scope, and credentials.
    let (_, narrow) = create_key(&srv.state, &[Scope::Conversations], KeyLimits::default()).await;
    assert_eq!(ticket(&srv, &client(&narrow)).await.0, 403);
    assert_eq!(ticket(&srv, &srv.anon).await.0, 401);
    srv.stop().await;
}

#[tokio::test]
async fn a_ticket_acts_for_the_key_that_created_it() {
    let fake = fake_with(Script::echo()).await;
    let srv = start(&fake).await;
    let (other, other_secret) = create_key(
        &srv.state,
        &[Scope::Chat, Scope::Conversations],
        KeyLimits::default(),
    )
    .await;
    let (_, t) = ticket(&srv, &client(&other_secret)).await;
    let (mut ws, _) = open(&srv, &format!("?ticket={}", t["ticket"].as_str().unwrap()), &[])
        .await
        .unwrap();
    next_json(&mut ws).await;
    send(
        &mut ws,
        json!({"type":"chat","id":"a","model":"gpt-test","content":"mine"}),
    )
    .await;
    let (start, _, _, done) = finish(&mut ws, "a").await;
    assert_eq!(done["type"], "done", "{done}");
    let conv = start.unwrap()["conversation"].as_str().unwrap().to_owned();
    // Owned by the ticket's key, invisible to the test key.
    let r = client(&other_secret)
        .get(srv.url(&format!("/v1/conversations/{conv}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(srv.get(&format!("/v1/conversations/{conv}")).await.status(), 404);
    assert_ne!(other.id, srv.key_id);
    srv.stop().await;
}

#[tokio::test]
async fn subprotocol_auth_selects_moltbot_v1() {
    let fake = fake().await;
    let srv = start(&fake).await;
    let (mut ws, resp) = open(&srv, "", &[bearer(&srv.secret)]).await.expect("upgrade");
    assert_eq!(resp.status(), 101);
    assert_eq!(resp.headers()["sec-websocket-protocol"], "moltbot.v1");
    assert_eq!(next_json(&mut ws).await["type"], "ready");

    // An access token works the same way.
    let r = srv.post("/v1/auth/token", json!({})).await;
    assert_eq!(r.status(), 200);
    let jwt = r.json::<Value>().await.unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let (mut ws, _) = open(&srv, "", &[bearer(&jwt)]).await.expect("token accepted");
    assert_eq!(next_json(&mut ws).await["type"], "ready");

    // Non-browser clients may send Authorization instead.
    let (mut ws, _) = open(&srv, "", &[("authorization", format!("Bearer {}", srv.secret))])
        .await
        .expect("header accepted");
    assert_eq!(next_json(&mut ws).await["type"], "ready");

    let wrong = format!("mb_{}", "w".repeat(40));
    let (status, body) = open(&srv, "", &[bearer(&wrong)]).await.unwrap_err();
    assert_eq!(status, 401);
    assert_eq!(body["error"]["code"], "invalid_api_key");

    let (_, narrow) = create_key(&srv.state, &[Scope::Conversations], KeyLimits::default()).await;
    let (status, body) = open(&srv, "", &[bearer(&narrow)]).await.unwrap_err();
    assert_eq!(status, 403);
    assert_eq!(body["error"]["code"], "insufficient_scope");
    srv.stop().await;
}

#[tokio::test]
async fn no_credentials_is_401_and_failures_count_toward_lockout() {
    let fake = fake().await;
    let srv = start_with(&fake, "", |c| c.auth.lockout_threshold = 2).await;
    let (status, body) = open(&srv, "", &[]).await.unwrap_err();
    assert_eq!(status, 401);
    assert_eq!(body["error"]["code"], "missing_api_key");
    assert_eq!(body["error"]["type"], "invalid_request_error");
    for _ in 0..2 {
        let (status, _) = open(&srv, "?ticket=0123abcd", &[]).await.unwrap_err();
        assert_eq!(status, 401);
    }
    // Locked out now, even with a good credential.
    let (status, body) = open(&srv, "", &[bearer(&srv.secret)]).await.unwrap_err();
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"]["code"], "too_many_auth_failures");
    srv.stop().await;
}

#[tokio::test]
async fn origin_must_be_our_own_or_listed() {
    let fake = fake().await;
    let srv = start_with(&fake, "", |c| {
        c.server.cors_origins = vec!["https://app.example.com".into()];
    })
    .await;
    let key = bearer(&srv.secret);
    let (status, body) = open(&srv, "", &[key.clone(), ("origin", "http://evil.example".into())])
        .await
        .unwrap_err();
    assert_eq!(status, 403);
    assert_eq!(body["error"]["code"], "origin_not_allowed");
    // Checked before credentials: a refused Origin does not spend a ticket.
    let (_, t) = ticket(&srv, &srv.http).await;
    let query = format!("?ticket={}", t["ticket"].as_str().unwrap());
    let (status, _) = open(&srv, &query, &[("origin", "http://evil.example".into())])
        .await
        .unwrap_err();
    assert_eq!(status, 403);
    let (mut ws, _) = open(&srv, &query, &[]).await.expect("ticket still valid");
    assert_eq!(next_json(&mut ws).await["type"], "ready");

    let own = format!("http://{}", srv.addrs.chat_addr);
    let (mut ws, _) = open(&srv, "", &[key.clone(), ("origin", own)])
        .await
        .expect("same origin");
    assert_eq!(next_json(&mut ws).await["type"], "ready");
    let (mut ws, _) = open(
        &srv,
        "",
        &[key.clone(), ("origin", "https://app.example.com".into())],
    )
    .await
    .expect("listed origin");
    assert_eq!(next_json(&mut ws).await["type"], "ready");

    // X-Forwarded-* from an untrusted peer do not make a foreign Origin ours.
    let forwarded = [
        key.clone(),
        ("origin", "https://chat.example.com".into()),
        ("x-forwarded-proto", "https".into()),
        ("x-forwarded-host", "chat.example.com".into()),
    ];
    assert_eq!(open(&srv, "", &forwarded).await.unwrap_err().0, 403);
    srv.stop().await;

    let srv = start_with(&fake, "", |c| {
        c.server.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()]
    })
    .await;
    let forwarded = [
        bearer(&srv.secret),
        ("origin", "https://chat.example.com".into()),
        ("x-forwarded-proto", "https".into()),
        ("x-forwarded-host", "chat.example.com".into()),
    ];
    let (mut ws, _) = open(&srv, "", &forwarded)
        .await
        .expect("origin behind a trusted proxy");
    assert_eq!(next_json(&mut ws).await["type"], "ready");
    srv.stop().await;
}

#[tokio::test]
async fn a_streamed_reply_is_stored_and_a_follow_up_sends_history() {
    let fake = fake_with(Script::text("Hello there, my friend!").chunks(5)).await;
    let srv = start(&fake).await;
    let mut ws = connect(&srv).await;
    send(
        &mut ws,
        json!({"type":"chat","id":"c1","model":"gpt-test","content":"Hi bot","conversation":null}),
    )
    .await;
    let (start, text, n, done) = finish(&mut ws, "c1").await;
    let start = start.expect("start frame");
    assert_eq!(start["model"], "gpt-test");
    let conv = start["conversation"].as_str().unwrap().to_owned();
    assert!(conv.starts_with("conv_"), "{start}");
    assert_eq!(text, "Hello there, my friend!");
    assert!(n >= 2, "streamed as several deltas, got {n}");
    assert_eq!(done["finish_reason"], "stop");
    let usage = &done["usage"];
    assert!(usage["completion_tokens"].as_u64().unwrap() > 0, "{done}");
    assert_eq!(
        usage["total_tokens"].as_u64().unwrap(),
        usage["prompt_tokens"].as_u64().unwrap() + usage["completion_tokens"].as_u64().unwrap()
    );

    let stored = items(&srv, &conv).await;
    assert_eq!(stored.len(), 2, "{stored:?}");
    assert_eq!(
        (stored[0]["role"].as_str(), item_text(&stored[0])),
        (Some("user"), "Hi bot")
    );
    assert_eq!(stored[1]["role"], "assistant");
    assert_eq!(item_text(&stored[1]), "Hello there, my friend!");
    assert_eq!(stored[1]["status"], "completed");

    // Only the new message is sent; the history comes from the stored conversation.
    send(
        &mut ws,
        json!({"type":"chat","id":"c2","model":"gpt-test","content":"And again?","conversation":conv}),
    )
    .await;
    let (start, _, _, done) = finish(&mut ws, "c2").await;
    assert_eq!(done["type"], "done", "{done}");
    assert_eq!(start.unwrap()["conversation"], conv.as_str());
    let sent = fake.chat_requests().last().unwrap().body.clone();
    let messages: Vec<(String, String)> = sent["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["role"].as_str().unwrap().to_owned(),
                m["content"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        messages,
        [
            ("user".into(), "Hi bot".into()),
            ("assistant".into(), "Hello there, my friend!".into()),
            ("user".into(), "And again?".into()),
        ]
    );
    assert_eq!(sent["stream"], true);
    assert_eq!(items(&srv, &conv).await.len(), 4);
    srv.stop().await;
}

#[tokio::test]
async fn cancel_stops_at_once_and_stores_what_was_delivered() {
    let fake = fake_with(
        Script::text("0123456789".repeat(20))
            .chunks(100)
            .chunk_interval(Duration::from_millis(30)),
    )
    .await;
    let srv = start(&fake).await;
    let mut ws = connect(&srv).await;
    send(
        &mut ws,
        json!({"type":"chat","id":"long","model":"gpt-test","content":"count"}),
    )
    .await;
    let start = next_json(&mut ws).await;
    assert_eq!(start["type"], "start");
    let conv = start["conversation"].as_str().unwrap().to_owned();
    let mut delivered = String::new();
    for _ in 0..3 {
        let d = next_json(&mut ws).await;
        assert_eq!(d["type"], "delta");
        delivered.push_str(d["content"].as_str().unwrap());
    }
    send(&mut ws, json!({"type":"cancel","id":"long"})).await;
    let (_, rest, _, done) = finish(&mut ws, "long").await;
    delivered.push_str(&rest);
    assert_eq!(done["type"], "done");
    assert_eq!(done["finish_reason"], "cancelled");
    assert!(delivered.len() < 200, "stopped early: {} chars", delivered.len());
    assert!(fake.wait_for_close(WAIT).await, "the upstream request was closed");

    // Committed before `done`: exactly the delivered prefix, marked incomplete.
    let stored = items(&srv, &conv).await;
    assert_eq!(stored.len(), 2, "{stored:?}");
    assert_eq!(item_text(&stored[1]), delivered);
    assert_eq!(stored[1]["status"], "incomplete");

    // The socket goes on.
    send(&mut ws, json!({"type":"ping"})).await;
    assert_eq!(next_json(&mut ws).await, json!({"type":"pong"}));
    srv.stop().await;
}

#[tokio::test]
async fn malformed_frames_get_errors_and_the_connection_stays_usable() {
    let fake = fake_with(Script::echo()).await;
    let srv = start(&fake).await;
    let mut ws = connect(&srv).await;

    ws.send(Message::Text("{not json".into())).await.unwrap();
    let e = next_json(&mut ws).await;
    assert_eq!(e["type"], "error");
    assert_eq!(e["status"], 400);
    assert_eq!(e["id"], Value::Null);
    assert_eq!(e["error"]["code"], "invalid_json");
    assert_eq!(e["error"]["type"], "invalid_request_error");

    send(&mut ws, json!({"type":"chat","id":"m1","model":"gpt-test"})).await;
    let e = next_json(&mut ws).await;
    assert_eq!(
        (e["id"].as_str(), e["error"]["param"].as_str()),
        (Some("m1"), Some("content"))
    );

    send(
        &mut ws,
        json!({"type":"chat","id":"m2","model":"gpt-test","content":"x","max_tokens":"many"}),
    )
    .await;
    assert_eq!(next_json(&mut ws).await["error"]["param"], "max_tokens");

    send(&mut ws, json!({"type":"dance"})).await;
    let e = next_json(&mut ws).await;
    assert_eq!(
        (e["error"]["param"].as_str(), e["error"]["code"].as_str()),
        (Some("type"), Some("unknown_message_type"))
    );

    ws.send(Message::Binary(vec![1u8, 2, 3].into())).await.unwrap();
    let e = next_json(&mut ws).await;
    assert_eq!(
        (e["status"].as_u64(), e["error"]["code"].as_str()),
        (Some(400), Some("unsupported_frame"))
    );

    send(
        &mut ws,
        json!({"type":"chat","id":"m3","model":"no-such-model","content":"x"}),
    )
    .await;
    let e = next_json(&mut ws).await;
    assert_eq!(e["status"], 404);
    assert_eq!(e["id"], "m3");
    assert_eq!(
        (e["error"]["param"].as_str(), e["error"]["code"].as_str()),
        (Some("model"), Some("model_not_found"))
    );

    send(
        &mut ws,
        json!({"type":"chat","id":"m4","model":"gpt-test","content":"x","conversation":"conv_missing"}),
    )
    .await;
    let e = next_json(&mut ws).await;
    assert_eq!(
        (e["status"].as_u64(), e["error"]["param"].as_str()),
        (Some(404), Some("conversation"))
    );

    send(&mut ws, json!({"type":"ping"})).await;
    assert_eq!(next_json(&mut ws).await, json!({"type":"pong"}));
    send(
        &mut ws,
        json!({"type":"chat","id":"ok","model":"gpt-test","content":"still here"}),
    )
    .await;
    let (_, text, _, done) = finish(&mut ws, "ok").await;
    assert_eq!(done["type"], "done");
    assert_eq!(text, "echo: still here");
    srv.stop().await;
}

#[tokio::test]
async fn server_pings_and_pongs_keep_a_reading_client_alive() {
    let fake = fake().await;
    let srv = start_with(&fake, "", |c| {
        c.server.ws_ping_interval = Duration::from_millis(100);
        c.server.ws_idle_timeout = Duration::from_millis(500);
    })
    .await;
    let mut ws = connect(&srv).await;
    // Reading answers the server's pings (tungstenite pongs automatically), which count as frames.
    let mut pings = 0;
    let until = Instant::now() + Duration::from_millis(1500);
    while let Ok(msg) = tokio::time::timeout_at(until, ws.next()).await {
        match msg.expect("open").expect("frame") {
            Message::Ping(_) => pings += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(pings >= 5, "server pings every 100 ms, saw {pings}");
    send(&mut ws, json!({"type":"ping"})).await;
    assert_eq!(next_json(&mut ws).await, json!({"type":"pong"}));
    srv.stop().await;
}

#[tokio::test]
async fn idle_sockets_are_closed() {
    let fake = fake().await;
    let srv = start_with(&fake, "", |c| {
        c.server.ws_ping_interval = Duration::from_secs(3600);
        c.server.ws_idle_timeout = Duration::from_millis(300);
    })
    .await;
    let mut ws = connect(&srv).await;
    let started = Instant::now();
    assert_eq!(close_code(&mut ws).await, Some(1000));
    assert!(started.elapsed() >= Duration::from_millis(250));
    srv.stop().await;
}

#[tokio::test]
async fn shutdown_closes_sockets_with_1001() {
    let fake = fake().await;
    let mut srv = start(&fake).await;
    let mut ws = connect(&srv).await;
    srv.shutdown();
    assert_eq!(close_code(&mut ws).await, Some(u16::from(CloseCode::Away)));
    srv.stop().await;
}

#[tokio::test]
async fn chats_run_concurrently_up_to_the_socket_limit() {
    let fake = fake_with(
        Script::echo()
            .chunks(4)
            .chunk_interval(Duration::from_millis(150)),
    )
    .await;
    let srv = start(&fake).await;
    let mut ws = connect(&srv).await;
    for i in 0..4 {
        send(
            &mut ws,
            json!({"type":"chat","id":format!("c{i}"),"model":"gpt-test","content":format!("n{i}")}),
        )
        .await;
    }
    send(
        &mut ws,
        json!({"type":"chat","id":"c9","model":"gpt-test","content":"one too many"}),
    )
    .await;
    let mut texts = std::collections::BTreeMap::new();
    let mut done = Vec::new();
    let mut refused = None;
    // Whether a chat streamed while another one was still running.
    let mut overlapped = false;
    while done.len() < 4 || refused.is_none() {
        let f = next_json(&mut ws).await;
        let id = f["id"].as_str().unwrap().to_owned();
        match f["type"].as_str().unwrap() {
            "delta" => {
                overlapped |= texts
                    .keys()
                    .any(|other: &String| other != &id && !done.contains(other));
                texts
                    .entry(id)
                    .or_insert_with(String::new)
                    .push_str(f["content"].as_str().unwrap());
            }
            "done" => {
                assert_eq!(f["finish_reason"], "stop");
                done.push(id);
            }
            "error" => refused = Some(f),
            _ => {}
        }
    }
    for i in 0..4 {
        assert_eq!(texts[&format!("c{i}")], format!("echo: n{i}"));
    }
    assert!(overlapped, "the chats ran concurrently");
    let refused = refused.unwrap();
    assert_eq!(refused["id"], "c9");
    assert_eq!(refused["status"], 429);
    assert_eq!(refused["error"]["code"], "too_many_chats");
    srv.stop().await;
}

#[tokio::test]
async fn per_key_limits_apply_to_each_chat() {
    let fake = fake_with(
        Script::text("slow reply")
            .chunks(5)
            .chunk_interval(Duration::from_millis(100)),
    )
    .await;
    let srv = start(&fake).await;
    let limits = KeyLimits {
        concurrent_streams: Some(1),
        ..KeyLimits::default()
    };
    let (_, secret) = create_key(&srv.state, &[Scope::Chat], limits).await;
    let (mut ws, _) = open(&srv, "", &[bearer(&secret)]).await.unwrap();
    next_json(&mut ws).await;
    send(
        &mut ws,
        json!({"type":"chat","id":"a","model":"gpt-test","content":"one"}),
    )
    .await;
    assert_eq!(next_json(&mut ws).await["type"], "start");
    send(
        &mut ws,
        json!({"type":"chat","id":"b","model":"gpt-test","content":"two"}),
    )
    .await;
    let mut ended = std::collections::HashMap::new();
    while ended.len() < 2 {
        let f = next_json(&mut ws).await;
        if matches!(f["type"].as_str(), Some("done" | "error")) {
            ended.insert(f["id"].as_str().unwrap().to_owned(), f);
        }
    }
    assert_eq!(ended["a"]["type"], "done");
    assert_eq!(ended["b"]["status"], 429, "{}", ended["b"]);
    assert_eq!(ended["b"]["error"]["code"], "rate_limit_exceeded");

    // Requests per minute: the upgrade and every chat count.
    let limits = KeyLimits {
        requests_per_minute: Some(2),
        ..KeyLimits::default()
    };
    let (_, secret) = create_key(&srv.state, &[Scope::Chat], limits).await;
    let (mut ws, _) = open(&srv, "", &[bearer(&secret)]).await.unwrap();
    next_json(&mut ws).await;
    send(
        &mut ws,
        json!({"type":"chat","id":"a","model":"gpt-test","content":"one"}),
    )
    .await;
    assert_eq!(finish(&mut ws, "a").await.3["type"], "done");
    send(
        &mut ws,
        json!({"type":"chat","id":"b","model":"gpt-test","content":"two"}),
    )
    .await;
    let (_, _, _, end) = finish(&mut ws, "b").await;
    assert_eq!(
        (end["status"].as_u64(), end["error"]["code"].as_str()),
        (Some(429), Some("rate_limit_exceeded"))
    );
    srv.stop().await;
}

#[tokio::test]
async fn a_revoked_key_cannot_chat_on_an_open_socket() {
    let fake = fake().await;
    let srv = start_with(&fake, "", |c| c.auth.key_cache_ttl = Duration::from_millis(1)).await;
    let (key, secret) = create_key(&srv.state, &[Scope::Chat], KeyLimits::default()).await;
    let (mut ws, _) = open(&srv, "", &[bearer(&secret)]).await.unwrap();
    next_json(&mut ws).await;
    srv.state
        .store
        .revoke_api_key(&key.id, srv.state.clock.now_secs())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    send(
        &mut ws,
        json!({"type":"chat","id":"a","model":"gpt-test","content":"hi"}),
    )
    .await;
    let e = next_json(&mut ws).await;
    assert_eq!(
        (e["status"].as_u64(), e["error"]["code"].as_str()),
        (Some(401), Some("invalid_api_key"))
    );
    assert_eq!(close_code(&mut ws).await, Some(1008));
    srv.stop().await;
}

/// The fake takes a while to prepare a big reply in a debug build.
fn big_reply_timeouts(c: &mut moltbot_config::Config) {
    c.models[0].timeouts.first_byte = Duration::from_secs(120);
    c.models[0].timeouts.total = Duration::from_secs(300);
}

/// A big reply, streamed as fast as the fake can, to a client that stops reading: the server must
/// stop reading the upstream (bounded buffers all the way), then deliver everything once the client
/// reads again.
const BIG: usize = 16 * 1024 * 1024;

fn big_text() -> String {
    "abcdefghijklmnopqrstuvwxyz012345".repeat(BIG / 32)
}

#[tokio::test]
async fn a_slow_reader_pushes_back_to_the_upstream() {
    let fake = fake_with(
        Script::text(big_text())
            .chunks(BIG / 8192)
            .usage(UsageMode::Always)
            .usage_tokens(5, 7),
    )
    .await;
    let srv = start_with(&fake, "", big_reply_timeouts).await;
    let mut ws = connect_small_buffer(&srv).await;
    send(
        &mut ws,
        json!({"type":"chat","id":"big","model":"gpt-test","content":"everything"}),
    )
    .await;
    // Read only the start, then stall long enough for the whole reply to have been sent many times over.
    let start = next_json(&mut ws).await;
    assert_eq!(start["type"], "start", "{start}");
    let conv = start["conversation"].as_str().unwrap().to_owned();
    tokio::time::sleep(Duration::from_secs(3)).await;

    // Had the server buffered the stream, the upstream would have finished and the reply would be
    // stored by now; with backpressure it is still waiting on us.
    let stored = items(&srv, &conv).await;
    assert_eq!(
        stored.len(),
        1,
        "the reply must not be complete while the client stalls: {}",
        stored.len()
    );
    assert_eq!(stored[0]["status"], "in_progress");
    assert_eq!(fake.closed_count(), 0);

    let (_, text, _, done) = finish(&mut ws, "big").await;
    assert_eq!(done["type"], "done", "{done}");
    assert_eq!(text.len(), BIG);
    assert!(text == big_text(), "every byte arrives, in order");
    assert_eq!(
        done["usage"],
        json!({"prompt_tokens":5,"completion_tokens":7,"total_tokens":12})
    );
    let stored = items(&srv, &conv).await;
    assert_eq!(stored[1]["status"], "completed");
    srv.stop().await;
}

#[tokio::test]
async fn a_client_that_stops_reading_is_closed_after_the_send_timeout() {
    // Paced over ~10 s: unpaced, the whole reply could be written into moltbot's receive buffer for the
    // upstream connection (Linux grows it up to `tcp_rmem`'s maximum, 32 MiB on some machines) before
    // moltbot gives up, and a finished upstream response is not an abandoned one.
    let fake = fake_with(
        Script::text(big_text())
            .chunks(BIG / 8192)
            .chunk_interval(Duration::from_millis(5)),
    )
    .await;
    let srv = start_with(&fake, "", |c| {
        c.server.ws_send_timeout = Duration::from_millis(500);
        big_reply_timeouts(c);
    })
    .await;
    let mut ws = connect_small_buffer(&srv).await;
    send(
        &mut ws,
        json!({"type":"chat","id":"big","model":"gpt-test","content":"everything"}),
    )
    .await;
    let start = next_json(&mut ws).await;
    let conv = start["conversation"].as_str().unwrap().to_owned();
    // Never read: the server gives up on us, cancels the turn and closes the upstream request. (Filling
    // the socket buffers, a few MB, takes ~1 s here, several under a loaded CI machine.)
    assert!(
        fake.wait_for_close(SLOW_WAIT).await,
        "the upstream request was abandoned"
    );
    // The reply is stored as delivered, marked incomplete.
    let deadline = Instant::now() + SLOW_WAIT;
    loop {
        let stored = items(&srv, &conv).await;
        if stored.len() == 2 {
            assert_eq!(stored[1]["status"], "incomplete");
            assert!(item_text(&stored[1]).len() < BIG);
            break;
        }
        assert!(Instant::now() < deadline, "truncated reply stored");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // What was buffered arrives, then the socket ends without a `done`.
    let mut got_done = false;
    while let Ok(Some(Ok(msg))) = timeout(WAIT, ws.next()).await {
        if let Message::Text(t) = msg {
            got_done |= t.as_str().contains("\"done\"");
        }
    }
    assert!(!got_done);
    srv.stop().await;
}
