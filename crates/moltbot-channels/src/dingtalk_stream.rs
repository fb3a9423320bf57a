//! DingTalk Stream mode: the bot opens a WebSocket to DingTalk's gateway and receives robot
//! messages over it, so no public URL is needed.
//!
//! Protocol (open.dingtalk.com "Stream 模式协议接入说明"):
//! 1. `POST {api_base}/v1.0/gateway/connections/open` with `{clientId, clientSecret,
//!    subscriptions: [{type: "CALLBACK", topic: "/v1.0/im/bot/messages/get"}], ua, localIp}`
//!    answers `{endpoint, ticket}`.
//! 2. Connect a WebSocket to `{endpoint}?ticket={ticket}` (the ticket is single use).
//! 3. Frames are JSON `{specVersion, type: SYSTEM|EVENT|CALLBACK, headers: {appId, connectionId,
//!    contentType, messageId, time, topic}, data: "<JSON string>"}`; each is answered with
//!    `{code, headers: {contentType, messageId}, message, data}`:
//!    - SYSTEM `ping`: answered with the same `data`;
//!    - SYSTEM `disconnect`: the gateway is about to close this connection: open a new one;
//!    - CALLBACK `/v1.0/im/bot/messages/get`: `data` is the robot message of HTTP mode. It is
//!      acknowledged (`data: {"response":null}`) only once the [`Sink`] has queued it; without an
//!      acknowledgement DingTalk delivers it again.
//!
//! [`run`] keeps one connection up until its shutdown future completes: it reconnects with
//! exponential backoff and jitter (1 s to 60 s), sends WebSocket pings and gives up on a connection
//! that has been silent for two ping intervals.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use futures::{SinkExt as _, StreamExt as _};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::Sink;
use crate::dingtalk::{DingtalkSettings, Parsed, parse_robot_message};

/// The robot message callback topic.
pub const BOT_MESSAGE_TOPIC: &str = "/v1.0/im/bot/messages/get";

/// Where a connection is opened, under the API base.
pub const OPEN_CONNECTION_PATH: &str = "/v1.0/gateway/connections/open";

/// Timings of the connection loop; [`Default`] is what production uses, tests shorten them.
#[derive(Debug, Clone)]
pub struct StreamTuning {
    /// Send a WebSocket ping this often.
    pub ping_interval: Duration,
    /// Drop a connection that delivered no frame (message, ping, pong) for this long.
    pub idle_timeout: Duration,
    /// First reconnect delay; doubles after each failure.
    pub backoff_min: Duration,
    /// Longest reconnect delay.
    pub backoff_max: Duration,
    /// A connection that stayed up this long resets the backoff when it ends.
    pub stable_after: Duration,
    /// Limit for the open call and the WebSocket handshake.
    pub connect_timeout: Duration,
    /// Callbacks handed to the sink at once; reading pauses beyond this.
    pub max_in_flight: usize,
}

impl Default for StreamTuning {
    fn default() -> Self {
        let ping_interval = Duration::from_secs(20);
        StreamTuning {
            ping_interval,
            idle_timeout: 2 * ping_interval,
            backoff_min: Duration::from_secs(1),
            backoff_max: Duration::from_secs(60),
            stable_after: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(30),
            max_in_flight: 64,
        }
    }
}

/// Run Stream mode for one account until `shutdown` completes (then the connection is closed
/// and this returns). Messages go to `sink`; errors are logged and retried, never returned.
///
/// With a `tokio::sync::watch::Receiver<bool>` pass `async move { let _ = rx.wait_for(|s| *s).await; }`;
/// with a `CancellationToken`, `token.cancelled_owned()`.
pub async fn run<F>(
    settings: DingtalkSettings,
    http: reqwest::Client,
    account: String,
    sink: Arc<dyn Sink>,
    shutdown: F,
) where
    F: Future<Output = ()> + Send,
{
    run_with(settings, http, account, sink, shutdown, StreamTuning::default()).await;
}

/// [`run`] with explicit timings.
pub async fn run_with<F>(
    settings: DingtalkSettings,
    http: reqwest::Client,
    account: String,
    sink: Arc<dyn Sink>,
    shutdown: F,
    tuning: StreamTuning,
) where
    F: Future<Output = ()> + Send,
{
    let ctx = Ctx {
        settings,
        http,
        account,
        sink,
        tuning,
    };
    let mut shutdown = std::pin::pin!(shutdown);
    let mut backoff = ctx.tuning.backoff_min;
    loop {
        let connected = tokio::select! {
            _ = shutdown.as_mut() => return,
            c = ctx.connect() => c,
        };
        let mut ws = match connected {
            Ok(ws) => ws,
            Err(e) => {
                tracing::warn!(account = %ctx.account, error = %e, "dingtalk stream: cannot connect");
                if sleep_or_shutdown(jitter(backoff), shutdown.as_mut()).await {
                    return;
                }
                backoff = (backoff * 2).min(ctx.tuning.backoff_max);
                continue;
            }
        };
        tracing::info!(account = %ctx.account, "dingtalk stream: connected");
        let since = Instant::now();
        let end = ctx.serve(&mut ws, shutdown.as_mut()).await;
        let lasted = since.elapsed();
        match end {
            End::Shutdown => return,
            End::Disconnect if lasted >= ctx.tuning.backoff_min => {
                // The gateway asked us to move: a new connection right away.
                tracing::info!(account = %ctx.account, "dingtalk stream: gateway asked to reconnect");
                backoff = ctx.tuning.backoff_min;
                continue;
            }
            End::Disconnect => {
                tracing::warn!(account = %ctx.account, "dingtalk stream: disconnect right after connecting");
            }
            End::Lost(reason) => {
                tracing::warn!(account = %ctx.account, %reason, "dingtalk stream: connection lost");
            }
        }
        if lasted >= ctx.tuning.stable_after {
            backoff = ctx.tuning.backoff_min;
        }
        if sleep_or_shutdown(jitter(backoff), shutdown.as_mut()).await {
            return;
        }
        backoff = (backoff * 2).min(ctx.tuning.backoff_max);
    }
}

/// Half the delay plus a random part of the other half, so that many bots do not reconnect in step.
fn jitter(delay: Duration) -> Duration {
    let half = delay / 2;
    half + half.mul_f64(rand::random_range(0.0..=1.0))
}

/// Sleep; `true` when shutdown came first.
async fn sleep_or_shutdown<F: Future<Output = ()>>(delay: Duration, shutdown: Pin<&mut F>) -> bool {
    tokio::select! {
        _ = shutdown => true,
        _ = tokio::time::sleep(delay) => false,
    }
}

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// How a connection ended.
enum End {
    Shutdown,
    /// SYSTEM `disconnect`.
    Disconnect,
    Lost(String),
}

struct Ctx {
    settings: DingtalkSettings,
    http: reqwest::Client,
    account: String,
    sink: Arc<dyn Sink>,
    tuning: StreamTuning,
}

#[derive(Deserialize)]
struct Endpoint {
    endpoint: String,
    ticket: String,
}

/// One frame from the gateway.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Frame {
    #[serde(rename = "type")]
    kind: String,
    headers: Map<String, Value>,
    data: Value,
}

impl Frame {
    fn header(&self, name: &str) -> &str {
        self.headers.get(name).and_then(Value::as_str).unwrap_or_default()
    }

    fn data_text(&self) -> String {
        match &self.data {
            Value::String(s) => s.clone(),
            Value::Null => String::new(),
            other => other.to_string(),
        }
    }
}

/// An answer frame.
fn answer(code: u16, message_id: &str, message: &str, data: &str) -> Message {
    Message::text(
        json!({
            "code": code,
            "headers": { "contentType": "application/json", "messageId": message_id },
            "message": message,
            "data": data,
        })
        .to_string(),
    )
}

/// The acknowledgement of a robot message callback.
fn callback_ack(message_id: &str) -> Message {
    answer(200, message_id, "OK", r#"{"response":null}"#)
}

type Delivery = BoxFuture<'static, (String, Result<(), String>)>;

impl Ctx {
    /// Open a connection: ask the gateway for an endpoint and ticket, then connect the WebSocket.
    async fn connect(&self) -> Result<Ws, String> {
        let timeout = self.tuning.connect_timeout;
        let url = format!("{}{OPEN_CONNECTION_PATH}", self.settings.base());
        let resp = self
            .http
            .post(url)
            .timeout(timeout)
            .json(&json!({
                "clientId": self.settings.app_key,
                "clientSecret": self.settings.app_secret,
                "subscriptions": [{ "type": "CALLBACK", "topic": BOT_MESSAGE_TOPIC }],
                "ua": concat!("moltbot/", env!("CARGO_PKG_VERSION")),
                "localIp": "",
            }))
            .send()
            .await
            .map_err(|e| format!("open connection: {}", e.without_url()))?;
        let status = resp.status();
        let body = resp
            .bytes()
            .await
            .map_err(|e| format!("open connection: {}", e.without_url()))?;
        if !status.is_success() {
            let text = String::from_utf8_lossy(&body);
            return Err(format!(
                "open connection: HTTP {status}: {}",
                text.chars().take(300).collect::<String>()
            ));
        }
        let endpoint: Endpoint =
            serde_json::from_slice(&body).map_err(|e| format!("open connection: unexpected answer: {e}"))?;
        let mut url =
            url::Url::parse(&endpoint.endpoint).map_err(|e| format!("open connection: bad endpoint: {e}"))?;
        url.query_pairs_mut().append_pair("ticket", &endpoint.ticket);
        let (ws, _) = tokio::time::timeout(timeout, tokio_tungstenite::connect_async(url.as_str()))
            .await
            .map_err(|_| "WebSocket handshake timed out".to_owned())?
            // The error may quote the URL, which carries the ticket: keep only its kind.
            .map_err(|e| format!("WebSocket connect: {}", ws_error_kind(&e)))?;
        Ok(ws)
    }

    /// Serve one connection until it ends.
    async fn serve<F: Future<Output = ()>>(&self, ws: &mut Ws, mut shutdown: Pin<&mut F>) -> End {
        let mut pending: FuturesUnordered<Delivery> = FuturesUnordered::new();
        let mut last_frame = Instant::now();
        let period = self.tuning.ping_interval;
        let mut ticker = tokio::time::interval_at(Instant::now() + period, period);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.as_mut() => {
                    let _ = ws.close(None).await;
                    return End::Shutdown;
                }
                Some((message_id, result)) = pending.next(), if !pending.is_empty() => {
                    if let Err(reason) = self.finish(ws, &message_id, result).await {
                        return End::Lost(reason);
                    }
                }
                _ = ticker.tick() => {
                    if pending.len() >= self.tuning.max_in_flight {
                        // Not reading while the sink catches up: silence says nothing then.
                        last_frame = Instant::now();
                    } else if last_frame.elapsed() >= self.tuning.idle_timeout {
                        return End::Lost(format!("no frame for {:?}", last_frame.elapsed()));
                    }
                    if let Err(e) = ws.send(Message::Ping(Default::default())).await {
                        return End::Lost(format!("ping: {e}"));
                    }
                }
                incoming = ws.next(), if pending.len() < self.tuning.max_in_flight => {
                    let message = match incoming {
                        None => return End::Lost("closed".into()),
                        Some(Err(e)) => return End::Lost(e.to_string()),
                        Some(Ok(m)) => m,
                    };
                    last_frame = Instant::now();
                    match message {
                        Message::Text(text) => match self.on_frame(text.as_str(), &mut pending) {
                            Step::Reply(answer) => {
                                if let Err(e) = ws.send(answer).await {
                                    return End::Lost(format!("send: {e}"));
                                }
                            }
                            Step::Disconnect => {
                                self.drain(ws, &mut pending).await;
                                let _ = ws.close(None).await;
                                return End::Disconnect;
                            }
                            Step::Nothing => {}
                        },
                        Message::Close(frame) => {
                            return End::Lost(format!("closed by the gateway: {frame:?}"));
                        }
                        // Pongs to our pings (liveness, noted above); pings are answered by
                        // tungstenite itself.
                        _ => {}
                    }
                }
            }
        }
    }

    /// Acknowledge a delivered callback, or leave it unacknowledged so that DingTalk redelivers it.
    async fn finish(&self, ws: &mut Ws, message_id: &str, result: Result<(), String>) -> Result<(), String> {
        match result {
            Ok(()) => ws
                .send(callback_ack(message_id))
                .await
                .map_err(|e| format!("ack: {e}")),
            Err(error) => {
                tracing::warn!(
                    account = %self.account, message_id, %error,
                    "dingtalk stream: message not queued, left unacknowledged for redelivery"
                );
                Ok(())
            }
        }
    }

    /// Before leaving a connection the gateway is closing: acknowledge what is being queued, for a
    /// few seconds at most (the gateway closes about 10 s after `disconnect`).
    async fn drain(&self, ws: &mut Ws, pending: &mut FuturesUnordered<Delivery>) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !pending.is_empty() {
            match tokio::time::timeout_at(deadline, pending.next()).await {
                Ok(Some((message_id, result))) => {
                    if self.finish(ws, &message_id, result).await.is_err() {
                        return;
                    }
                }
                Ok(None) | Err(_) => return,
            }
        }
    }

    fn on_frame(&self, text: &str, pending: &mut FuturesUnordered<Delivery>) -> Step {
        let frame: Frame = match serde_json::from_str(text) {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!(account = %self.account, error = %e, "dingtalk stream: frame is not JSON");
                return Step::Nothing;
            }
        };
        let topic = frame.header("topic");
        let message_id = frame.header("messageId").to_owned();
        match (frame.kind.as_str(), topic) {
            ("SYSTEM", "ping") => Step::Reply(answer(200, &message_id, "OK", &frame.data_text())),
            ("SYSTEM", "disconnect") => Step::Disconnect,
            ("SYSTEM", _) => Step::Nothing,
            ("CALLBACK", BOT_MESSAGE_TOPIC) => {
                match parse_robot_message(&self.account, frame.data_text().as_bytes()) {
                    Ok(Parsed::Message(message)) => {
                        let sink = self.sink.clone();
                        pending.push(Box::pin(
                            async move { (message_id, sink.deliver(*message).await) },
                        ));
                        Step::Nothing
                    }
                    Ok(Parsed::Ignore(reason)) => {
                        tracing::debug!(account = %self.account, %reason, "dingtalk stream: message ignored");
                        Step::Reply(callback_ack(&message_id))
                    }
                    Err(e) => {
                        // It will never decode: acknowledge it rather than have it redelivered.
                        tracing::warn!(account = %self.account, error = %e, "dingtalk stream: bad robot message");
                        Step::Reply(callback_ack(&message_id))
                    }
                }
            }
            ("CALLBACK", _) => Step::Reply(answer(404, &message_id, "no handler for this topic", "")),
            ("EVENT", _) => Step::Reply(answer(
                200,
                &message_id,
                "OK",
                r#"{"status":"SUCCESS","message":"ignored"}"#,
            )),
            _ => Step::Nothing,
        }
    }
}

/// What to do after a frame.
enum Step {
    Reply(Message),
    Disconnect,
    Nothing,
}

fn ws_error_kind(e: &tokio_tungstenite::tungstenite::Error) -> String {
    use tokio_tungstenite::tungstenite::Error;
    match e {
        Error::Http(resp) => format!("HTTP {}", resp.status()),
        Error::Io(io) => format!("I/O: {}", io.kind()),
        Error::Tls(_) => "TLS error".into(),
        Error::Url(_) => "bad endpoint URL".into(),
        other => other.to_string(),
    }
}
