//! DingTalk Stream mode against a fake gateway on 127.0.0.1: the connections/open call, the
//! WebSocket, callbacks acknowledged only after the sink took them, pings, reconnects, shutdown.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, post};
use axum::{Json, Router};
use moltbot_channels::dingtalk::DingtalkSettings;
use moltbot_channels::dingtalk_stream::{BOT_MESSAGE_TOPIC, StreamTuning, run_with};
use moltbot_channels::{ChatType, InboundMessage, Sink};
use serde_json::{Value, json};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::timeout;

const WAIT: Duration = Duration::from_secs(5);

fn fixture(name: &str) -> Value {
    let path = format!("{}/tests/fixtures/dingtalk/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap()
}

// ---------------------------------------------------------------------------------------------
// Fake gateway
// ---------------------------------------------------------------------------------------------

struct Gateway {
    addr: std::net::SocketAddr,
    opens: AtomicU32,
    open_bodies: Mutex<Vec<Value>>,
    /// Answer this many open calls with 500 first.
    failing_opens: AtomicU32,
    conns: mpsc::UnboundedSender<(String, WebSocket)>,
}

async fn open(State(g): State<Arc<Gateway>>, Json(body): Json<Value>) -> Response {
    g.open_bodies.lock().unwrap().push(body);
    let n = g.opens.fetch_add(1, Ordering::SeqCst) + 1;
    if g.failing_opens
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| left.checked_sub(1))
        .is_ok()
    {
        return (StatusCode::INTERNAL_SERVER_ERROR, "gateway down").into_response();
    }
    Json(json!({
        "endpoint": format!("ws://{}/connect", g.addr),
        "ticket": format!("ticket {n}/+="),
    }))
    .into_response()
}

#[derive(serde::Deserialize)]
struct Ticket {
    ticket: String,
}

async fn connect(State(g): State<Arc<Gateway>>, Query(t): Query<Ticket>, ws: WebSocketUpgrade) -> Response {
    ws.on_upgrade(move |socket| async move {
        let _ = g.conns.send((t.ticket, socket));
    })
}

struct Fake {
    gateway: Arc<Gateway>,
    conns: mpsc::UnboundedReceiver<(String, WebSocket)>,
    base: String,
}

async fn start_gateway(failing_opens: u32) -> Fake {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    let gateway = Arc::new(Gateway {
        addr,
        opens: AtomicU32::new(0),
        open_bodies: Mutex::new(Vec::new()),
        failing_opens: AtomicU32::new(failing_opens),
        conns: tx,
    });
    let app = Router::new()
        .route("/v1.0/gateway/connections/open", post(open))
        .route("/connect", any(connect))
        .with_state(gateway.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Fake {
        gateway,
        conns: rx,
        base: format!("http://{addr}"),
    }
}

impl Fake {
    async fn next_conn(&mut self) -> (String, WebSocket) {
        timeout(WAIT, self.conns.recv())
            .await
            .expect("the client connects")
            .unwrap()
    }
}

/// The next text frame from the client, as JSON (pings and pongs skipped).
async fn next_text(ws: &mut WebSocket) -> Value {
    loop {
        match timeout(WAIT, ws.recv()).await.expect("a frame from the client") {
            Some(Ok(Message::Text(t))) => return serde_json::from_str(t.as_str()).unwrap(),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            other => panic!("expected a text frame, got {other:?}"),
        }
    }
}

/// No text frame from the client within `d`.
async fn no_text_within(ws: &mut WebSocket, d: Duration) {
    let deadline = tokio::time::Instant::now() + d;
    loop {
        match tokio::time::timeout_at(deadline, ws.recv()).await {
            Err(_) => return,
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
            Ok(other) => panic!("expected nothing, got {other:?}"),
        }
    }
}

async fn send(ws: &mut WebSocket, frame: Value) {
    ws.send(Message::Text(frame.to_string().into())).await.unwrap();
}

fn callback(message_id: &str, data: &Value) -> Value {
    json!({
        "specVersion": "1.0",
        "type": "CALLBACK",
        "headers": {
            "appId": "8a7f1d2e-0c1b-4d3a-9e8f-7a6b5c4d3e2f",
            "connectionId": "c0d1e2f3-a4b5-4c6d-8e9f-0a1b2c3d4e5f",
            "contentType": "application/json",
            "messageId": message_id,
            "time": "1690362102194",
            "topic": BOT_MESSAGE_TOPIC,
        },
        "data": data.to_string(),
    })
}

fn system(topic: &str, message_id: &str, data: &str) -> Value {
    json!({
        "specVersion": "1.0",
        "type": "SYSTEM",
        "headers": {
            "contentType": "application/json",
            "messageId": message_id,
            "time": "1690362102194",
            "topic": topic,
        },
        "data": data,
    })
}

fn ack_of(message_id: &str) -> Value {
    json!({
        "code": 200,
        "headers": { "contentType": "application/json", "messageId": message_id },
        "message": "OK",
        "data": "{\"response\":null}",
    })
}

// ---------------------------------------------------------------------------------------------
// Client side
// ---------------------------------------------------------------------------------------------

struct Recorder {
    seen: mpsc::UnboundedSender<InboundMessage>,
    fail: AtomicBool,
    /// When set, each delivery waits for a permit.
    gate: Option<Arc<Semaphore>>,
}

#[async_trait]
impl Sink for Recorder {
    async fn deliver(&self, message: InboundMessage) -> Result<(), String> {
        if let Some(gate) = &self.gate {
            gate.acquire().await.unwrap().forget();
        }
        let _ = self.seen.send(message);
        if self.fail.load(Ordering::SeqCst) {
            Err("queue unavailable".into())
        } else {
            Ok(())
        }
    }
}

struct Client {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
    seen: mpsc::UnboundedReceiver<InboundMessage>,
}

impl Client {
    async fn next_message(&mut self) -> InboundMessage {
        timeout(WAIT, self.seen.recv())
            .await
            .expect("a delivery")
            .unwrap()
    }

    async fn stop(self) {
        self.stop.send(true).unwrap();
        timeout(Duration::from_secs(1), self.task)
            .await
            .expect("run returns promptly after shutdown")
            .unwrap();
    }
}

fn quick() -> StreamTuning {
    StreamTuning {
        ping_interval: Duration::from_secs(5),
        idle_timeout: Duration::from_secs(10),
        backoff_min: Duration::from_millis(20),
        backoff_max: Duration::from_millis(200),
        stable_after: Duration::from_secs(30),
        connect_timeout: Duration::from_secs(5),
        max_in_flight: 8,
    }
}

fn start_client(base: &str, tuning: StreamTuning, fail: bool, gate: Option<Arc<Semaphore>>) -> Client {
    let (tx, seen) = mpsc::unbounded_channel();
    let sink = Arc::new(Recorder {
        seen: tx,
        fail: AtomicBool::new(fail),
        gate,
    });
    let (stop, mut stop_rx) = watch::channel(false);
    let settings = DingtalkSettings {
        app_key: "dingappkey123".into(),
        app_secret: "client-secret-xyz".into(),
        robot_code: None,
        api_base: base.into(),
    };
    let task = tokio::spawn(run_with(
        settings,
        reqwest::Client::new(),
        "main".into(),
        sink,
        async move {
            let _ = stop_rx.wait_for(|s| *s).await;
        },
        tuning,
    ));
    Client { stop, task, seen }
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn callback_is_delivered_then_acknowledged() {
    let mut fake = start_gateway(0).await;
    let mut client = start_client(&fake.base, quick(), false, None);
    let (ticket, mut ws) = fake.next_conn().await;
    assert_eq!(ticket, "ticket 1/+=", "the ticket survives URL encoding");
    assert_eq!(
        fake.gateway.open_bodies.lock().unwrap()[0],
        json!({
            "clientId": "dingappkey123",
            "clientSecret": "client-secret-xyz",
            "subscriptions": [{ "type": "CALLBACK", "topic": "/v1.0/im/bot/messages/get" }],
            "ua": concat!("moltbot/", env!("CARGO_PKG_VERSION")),
            "localIp": "",
        })
    );

    send(
        &mut ws,
        callback(
            "5ab2a6ab-a1f3-4c5e-8c2b-1d1f0e9d8c7b",
            &fixture("group_text_at_bot.json"),
        ),
    )
    .await;
    let m = client.next_message().await;
    assert_eq!(m.event_id, "msg0aB1cD2eF3gH4iJ5kL6mN7==");
    assert_eq!(m.chat_type, ChatType::Group);
    assert_eq!(m.text, "今天北京天气怎么样？");
    assert!(m.mentions_bot);
    assert_eq!(
        m.reply["sessionWebhook"],
        "https://oapi.dingtalk.com/robot/sendBySession?session=yyyyy"
    );
    assert_eq!(
        next_text(&mut ws).await,
        ack_of("5ab2a6ab-a1f3-4c5e-8c2b-1d1f0e9d8c7b")
    );
    client.stop().await;
}

#[tokio::test]
async fn ack_waits_for_the_sink() {
    let mut fake = start_gateway(0).await;
    let gate = Arc::new(Semaphore::new(0));
    let mut client = start_client(&fake.base, quick(), false, Some(gate.clone()));
    let (_, mut ws) = fake.next_conn().await;
    send(&mut ws, callback("m-slow", &fixture("single_text.json"))).await;
    // While the sink is busy, pings are still answered, and nothing is acknowledged.
    send(&mut ws, system("ping", "p-1", "{\"opaque\":\"1\"}")).await;
    assert_eq!(next_text(&mut ws).await["headers"]["messageId"], "p-1");
    no_text_within(&mut ws, Duration::from_millis(300)).await;
    gate.add_permits(1);
    assert_eq!(
        client.next_message().await.event_id,
        "msgE4hWc5Hq2u7yX0lWk1AqzQ=="
    );
    assert_eq!(next_text(&mut ws).await, ack_of("m-slow"));
    client.stop().await;
}

#[tokio::test]
async fn failed_delivery_is_not_acknowledged() {
    let mut fake = start_gateway(0).await;
    let mut client = start_client(&fake.base, quick(), true, None);
    let (_, mut ws) = fake.next_conn().await;
    send(&mut ws, callback("m-fail", &fixture("single_text.json"))).await;
    client.next_message().await; // the sink saw it and said no
    no_text_within(&mut ws, Duration::from_millis(300)).await;
    // The connection is still served.
    send(&mut ws, system("ping", "p-2", "{\"opaque\":\"2\"}")).await;
    assert_eq!(next_text(&mut ws).await["headers"]["messageId"], "p-2");
    client.stop().await;
}

#[tokio::test]
async fn ping_is_answered_with_the_same_data() {
    let mut fake = start_gateway(0).await;
    let client = start_client(&fake.base, quick(), false, None);
    let (_, mut ws) = fake.next_conn().await;
    let data = "{\"opaque\":\"a1b2c3d4-9f8e-7d6c\"}";
    send(&mut ws, system("ping", "ping-77", data)).await;
    assert_eq!(
        next_text(&mut ws).await,
        json!({
            "code": 200,
            "headers": { "contentType": "application/json", "messageId": "ping-77" },
            "message": "OK",
            "data": data,
        })
    );
    client.stop().await;
}

#[tokio::test]
async fn ignored_message_is_acknowledged_without_delivery() {
    let mut fake = start_gateway(0).await;
    let mut client = start_client(&fake.base, quick(), false, None);
    let (_, mut ws) = fake.next_conn().await;
    send(&mut ws, callback("m-pic", &fixture("picture.json"))).await;
    assert_eq!(next_text(&mut ws).await, ack_of("m-pic"));
    assert!(client.seen.try_recv().is_err(), "a picture is not delivered");
    client.stop().await;
}

#[tokio::test]
async fn disconnect_leads_to_a_new_connection() {
    let mut fake = start_gateway(0).await;
    let mut client = start_client(&fake.base, quick(), false, None);
    let (_, mut first) = fake.next_conn().await;
    send(
        &mut first,
        system("disconnect", "d-1", "{\"reason\":\"server upgrade\"}"),
    )
    .await;
    let (ticket, mut second) = fake.next_conn().await;
    assert_eq!(ticket, "ticket 2/+=", "a fresh ticket from a second open call");
    assert_eq!(fake.gateway.opens.load(Ordering::SeqCst), 2);
    // The old connection was closed by the client.
    match timeout(WAIT, first.recv()).await.unwrap() {
        None | Some(Ok(Message::Close(_))) | Some(Err(_)) => {}
        other => panic!("expected the old connection to close, got {other:?}"),
    }
    send(&mut second, callback("m-after", &fixture("single_text.json"))).await;
    assert_eq!(client.next_message().await.chat_type, ChatType::Direct);
    assert_eq!(next_text(&mut second).await, ack_of("m-after"));
    client.stop().await;
}

#[tokio::test]
async fn closed_socket_leads_to_a_new_connection() {
    let mut fake = start_gateway(0).await;
    let mut client = start_client(&fake.base, quick(), false, None);
    let (_, first) = fake.next_conn().await;
    drop(first);
    let (_, mut second) = fake.next_conn().await;
    send(&mut second, callback("m-2", &fixture("group_text_at_bot.json"))).await;
    client.next_message().await;
    assert_eq!(next_text(&mut second).await, ack_of("m-2"));

    // And a clean close from the gateway too.
    second.send(Message::Close(None)).await.unwrap();
    let (ticket, _third) = fake.next_conn().await;
    assert_eq!(ticket, "ticket 3/+=");
    client.stop().await;
}

#[tokio::test]
async fn failed_open_is_retried_with_backoff() {
    let mut fake = start_gateway(3).await;
    let started = tokio::time::Instant::now();
    let client = start_client(&fake.base, quick(), false, None);
    let (ticket, _ws) = fake.next_conn().await;
    assert_eq!(ticket, "ticket 4/+=");
    // Three waits: at least half of 20 + 40 + 80 ms (jitter keeps half of each).
    assert!(
        started.elapsed() >= Duration::from_millis(70),
        "{:?}",
        started.elapsed()
    );
    client.stop().await;
}

#[tokio::test]
async fn silent_connection_is_replaced_but_a_live_one_is_kept() {
    let mut fake = start_gateway(0).await;
    let tuning = StreamTuning {
        ping_interval: Duration::from_millis(100),
        idle_timeout: Duration::from_millis(300),
        ..quick()
    };
    let client = start_client(&fake.base, tuning, false, None);
    // Hold the first connection without reading: no pongs go back.
    let (_, _silent) = fake.next_conn().await;
    let (_, mut live) = fake.next_conn().await;
    // Read the second one (the server answers pings with pongs while it reads).
    let reader = tokio::spawn(async move {
        let mut pings = 0;
        while let Some(Ok(m)) = live.recv().await {
            if matches!(m, Message::Ping(_)) {
                pings += 1;
            }
        }
        pings
    });
    assert!(
        timeout(Duration::from_millis(1200), fake.conns.recv())
            .await
            .is_err(),
        "a connection that answers pings is kept"
    );
    client.stop().await;
    let pings = timeout(WAIT, reader).await.unwrap().unwrap();
    assert!(pings >= 5, "the client pings every 100 ms, saw {pings}");
}

#[tokio::test]
async fn shutdown_during_backoff_returns_promptly() {
    let fake = start_gateway(u32::MAX).await;
    let tuning = StreamTuning {
        backoff_min: Duration::from_secs(30),
        backoff_max: Duration::from_secs(60),
        ..quick()
    };
    let client = start_client(&fake.base, tuning, false, None);
    timeout(WAIT, async {
        while fake.gateway.opens.load(Ordering::SeqCst) == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap();
    client.stop().await;
    assert_eq!(fake.gateway.opens.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn shutdown_closes_the_connection() {
    let mut fake = start_gateway(0).await;
    let client = start_client(&fake.base, quick(), false, None);
    let (_, mut ws) = fake.next_conn().await;
    client.stop().await;
    match timeout(WAIT, ws.recv()).await.unwrap() {
        None | Some(Ok(Message::Close(_))) | Some(Err(_)) => {}
        other => panic!("expected a close, got {other:?}"),
    }
    assert!(
        timeout(Duration::from_millis(200), fake.conns.recv())
            .await
            .is_err(),
        "no reconnect after shutdown"
    );
}
