//! The fake upstream's HTTP server, request recording and connection-close signalling.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures::stream;
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::script::Script;
use crate::sse::{Answer, Step};

/// How the fake starts.
#[derive(Debug, Clone)]
pub struct FakeConfig {
    /// Used when the script queue is empty.
    pub default_script: Script,
    /// Ids listed by `GET /v1/models`.
    pub models: Vec<String>,
    /// Keep every request for [`FakeUpstream::requests`] (turn off for long benchmarks; the count is
    /// kept either way).
    pub record: bool,
}

impl Default for FakeConfig {
    fn default() -> Self {
        Self {
            default_script: Script::default(),
            models: vec!["fake-model".to_owned()],
            record: true,
        }
    }
}

/// A request the fake received.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    pub method: String,
    pub path: String,
    /// Header names lower-cased, in arrival order.
    pub headers: Vec<(String, String)>,
    /// The JSON body (`Null` when absent or not JSON).
    pub body: Value,
    /// When it arrived (`tokio::time`, so it follows paused time too).
    pub at: Instant,
}

impl RecordedRequest {
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The key of `Authorization: Bearer <key>`.
    pub fn bearer(&self) -> Option<&str> {
        self.header("authorization")
            .and_then(|v| v.strip_prefix("Bearer "))
    }
}

/// Picks the script of a chat request that finds the queue empty, from its number (from 1) and
/// whether it asks for a stream.
type Chooser = Box<dyn FnMut(u64, bool) -> Script + Send>;

struct Shared {
    default_script: Mutex<Script>,
    chooser: Mutex<Option<Chooser>>,
    queue: Mutex<VecDeque<Script>>,
    requests: Mutex<Vec<RecordedRequest>>,
    models: Vec<String>,
    record: bool,
    received: AtomicU64,
    /// Number of responses whose body (or pending handler) was dropped before completion.
    closed: watch::Sender<u64>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A fake OpenAI-compatible upstream on `127.0.0.1:<random port>`. Stops when dropped.
pub struct FakeUpstream {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl FakeUpstream {
    /// Binds and starts serving. Panics if it cannot bind (it is test support).
    pub async fn start(config: FakeConfig) -> FakeUpstream {
        let (closed, _) = watch::channel(0);
        let shared = Arc::new(Shared {
            default_script: Mutex::new(config.default_script),
            chooser: Mutex::new(None),
            queue: Mutex::new(VecDeque::new()),
            requests: Mutex::new(Vec::new()),
            models: config.models,
            record: config.record,
            received: AtomicU64::new(0),
            closed,
        });
        let app = Router::new()
            .route("/v1/chat/completions", post(chat))
            .route("/v1/embeddings", post(embeddings))
            .route("/v1/models", get(models))
            .with_state(shared.clone());
        // A deep accept queue, as a real platform's front has: the benchmark opens 10,000 streams at once
        // (tokio's default backlog of 128 drops SYNs, which the client retries only after a second).
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket
            .bind(std::net::SocketAddr::from(([127, 0, 0, 1], 0)))
            .expect("bind fake upstream");
        let listener = socket.listen(4096).expect("listen");
        let addr = listener.local_addr().expect("local addr");
        let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
            let _ = tcp.set_nodelay(true);
        });
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeUpstream { addr, shared, task }
    }

    /// `http://127.0.0.1:PORT/v1`
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Queue a script for the next request (scripts are used in order, then the default).
    pub fn push(&self, script: Script) {
        lock(&self.shared.queue).push_back(script);
    }

    /// Chat requests that find the queue empty get `chooser(request number, whether it asks for a
    /// stream)` instead of the default script (for fault mixes chosen per request).
    pub fn set_chooser(&self, chooser: impl FnMut(u64, bool) -> Script + Send + 'static) {
        *lock(&self.shared.chooser) = Some(Box::new(chooser));
    }

    pub fn set_default(&self, script: Script) {
        *lock(&self.shared.default_script) = script;
    }

    /// Every request received so far, in order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.shared.requests).clone()
    }

    /// Chat completion requests only.
    pub fn chat_requests(&self) -> Vec<RecordedRequest> {
        self.requests()
            .into_iter()
            .filter(|r| r.path.ends_with("/chat/completions"))
            .collect()
    }

    /// Requests received so far (recorded or not).
    pub fn request_count(&self) -> u64 {
        self.shared.received.load(Ordering::SeqCst)
    }

    /// Counts responses abandoned by the client before completion (streaming body dropped, or a
    /// hanging/delayed request cancelled). Changes are observable with `changed()`/`wait_for`.
    pub fn connection_closed(&self) -> watch::Receiver<u64> {
        self.shared.closed.subscribe()
    }

    pub fn closed_count(&self) -> u64 {
        *self.shared.closed.borrow()
    }

    /// Waits until at least `n` responses have been abandoned by the client; false on timeout.
    pub async fn wait_for_closes(&self, n: u64, within: Duration) -> bool {
        let mut rx = self.connection_closed();
        tokio::time::timeout(within, rx.wait_for(|c| *c >= n))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// `wait_for_closes(1, within)`.
    pub async fn wait_for_close(&self, within: Duration) -> bool {
        self.wait_for_closes(1, within).await
    }
}

impl Drop for FakeUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Counts a close when dropped before `done` is set.
struct CloseGuard {
    shared: Arc<Shared>,
    done: bool,
}

impl CloseGuard {
    fn disarm(&mut self) {
        self.done = true;
    }
}

impl Drop for CloseGuard {
    fn drop(&mut self) {
        if !self.done {
            self.shared.closed.send_modify(|c| *c += 1);
        }
    }
}

/// Counts the request, records it if configured, and returns its number (from 1).
fn record(shared: &Shared, method: &str, path: &str, headers: &HeaderMap, body: &Value) -> u64 {
    let n = shared.received.fetch_add(1, Ordering::SeqCst) + 1;
    if !shared.record {
        return n;
    }
    let headers = headers
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let req = RecordedRequest {
        method: method.into(),
        path: path.into(),
        headers,
        body: body.clone(),
        at: Instant::now(),
    };
    lock(&shared.requests).push(req);
    n
}

async fn models(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    let _ = record(&shared, "GET", "/v1/models", &headers, &Value::Null);
    // The default script's error statuses apply here too (a wrong key or a quota is per account).
    let key = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if let Some(err) = lock(&shared.default_script).error_for(key) {
        return error_response(err);
    }
    let data: Vec<Value> = shared
        .models
        .iter()
        .map(|id| json!({"id": id, "object": "model", "created": 1_700_000_000, "owned_by": "fake"}))
        .collect();
    axum::Json(json!({"object": "list", "data": data})).into_response()
}

fn last_user_text(body: &Value) -> String {
    let messages = body.get("messages").and_then(Value::as_array);
    let last = messages.and_then(|m| m.iter().rev().find(|m| m["role"] == "user"));
    match last.map(|m| &m["content"]) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => parts.iter().filter_map(|p| p["text"].as_str()).collect(),
        _ => String::new(),
    }
}

/// What the echo script does about tools, acting like a model that follows orders: with `tools` in the
/// request and a last user message `call NAME {json}`, it calls NAME with those arguments (NAME must
/// be one of the tools); when the last message is a tool result, it echoes the result.
enum EchoTool {
    Call { name: String, arguments: String },
    Result(String),
    None,
}

fn echo_tool(body: &Value) -> EchoTool {
    let messages = body.get("messages").and_then(Value::as_array);
    let last = messages.and_then(|m| m.last());
    if let Some(m) = last.filter(|m| m["role"] == "tool") {
        return EchoTool::Result(m["content"].as_str().unwrap_or("").to_owned());
    }
    let tools: Vec<&str> = body
        .get("tools")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|t| t["function"]["name"].as_str())
        .collect();
    let text = last_user_text(body);
    if let Some(rest) = text.strip_prefix("call ")
        && let Some((name, args)) = rest.split_once(' ')
        && tools.contains(&name)
        && serde_json::from_str::<Value>(args).is_ok()
        && body["tool_choice"] != "none"
    {
        return EchoTool::Call {
            name: name.to_owned(),
            arguments: args.to_owned(),
        };
    }
    EchoTool::None
}

fn error_response(reply: &crate::StatusReply) -> Response {
    let status = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = reply.body.clone().unwrap_or_else(|| {
        json!({"error": {"message": format!("fake upstream error {}", reply.status),
            "type": "fake_error", "param": null, "code": null}})
    });
    let mut resp = (status, axum::Json(body)).into_response();
    if let Some(ra) = reply.retry_after.as_deref().and_then(|v| v.parse().ok()) {
        resp.headers_mut().insert(header::RETRY_AFTER, ra);
    }
    resp
}

/// Deterministic vectors ([`crate::fake_embedding`]); the queued script's delay, hang and error
/// statuses apply as for chat.
async fn embeddings(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let json: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let _ = record(&shared, "POST", "/v1/embeddings", &headers, &json);
    let script = lock(&shared.queue)
        .pop_front()
        .unwrap_or_else(|| lock(&shared.default_script).clone());
    let mut guard = CloseGuard {
        shared: shared.clone(),
        done: false,
    };
    if !script.headers_delay.is_zero() {
        tokio::time::sleep(script.headers_delay).await;
    }
    if script.hang {
        std::future::pending::<()>().await;
    }
    guard.disarm();
    let key = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if let Some(err) = script.error_for(key) {
        return error_response(err);
    }
    match crate::embeddings::answer(&json) {
        Ok(answer) => axum::Json(answer).into_response(),
        Err(message) => error_response(&crate::StatusReply::new(400).body(json!({"error": {
            "message": message, "type": "invalid_request_error", "param": "input", "code": null}}))),
    }
}

async fn chat(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let json: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let n = record(&shared, "POST", "/v1/chat/completions", &headers, &json);
    let queued = lock(&shared.queue).pop_front();
    let script = queued
        .or_else(|| {
            lock(&shared.chooser)
                .as_mut()
                .map(|choose| choose(n, json["stream"] == true))
        })
        .unwrap_or_else(|| lock(&shared.default_script).clone());

    // Until headers are sent, a dropped handler means the client went away.
    let mut guard = CloseGuard {
        shared: shared.clone(),
        done: false,
    };
    if !script.headers_delay.is_zero() {
        tokio::time::sleep(script.headers_delay).await;
    }
    if script.hang {
        std::future::pending::<()>().await;
    }
    guard.disarm();
    if script.reset {
        // A body that fails before its first byte: hyper drops the connection without having
        // flushed the status line.
        let fail = stream::once(async { Err::<Bytes, _>(std::io::Error::other("fake upstream reset")) });
        return Response::new(Body::from_stream(fail));
    }

    let key = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if let Some(err) = script.error_for(key) {
        return error_response(err);
    }

    let mut script = script;
    let text = match &script.reply {
        crate::Reply::Text(t) => t.clone(),
        crate::Reply::Echo => match echo_tool(&json) {
            EchoTool::Call { name, arguments } => {
                script = script.tool_call(&format!("call_fake_{n}"), &name, &arguments);
                String::new()
            }
            EchoTool::Result(text) => format!("echo: tool result: {text}"),
            EchoTool::None => format!("echo: {}", last_user_text(&json)),
        },
    };
    let reply = Answer {
        id: format!("chatcmpl-fake-{n}"),
        model: json["model"].as_str().unwrap_or("fake-model").to_owned(),
        text,
        include_usage: json["stream_options"]["include_usage"] == true,
        prompt_tokens: json["messages"].as_array().map_or(0, |m| m.len() as u32),
        script: &script,
    };
    if (json["stream"] != true && !script.sse_response) || script.json_response {
        return json_reply(&shared, reply.json_steps()).await;
    }

    let body = body_of(reply.steps().into(), &shared);
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(body)
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// A non-streamed reply: after the generation time, the whole body with its length (headers come
/// when the reply is ready, as from a real upstream); a failing one as a chunked body that breaks off.
async fn json_reply(shared: &Arc<Shared>, steps: Vec<Step>) -> Response {
    let body = if let [Step::Data(delay, bytes)] = steps.as_slice() {
        if !delay.is_zero() {
            // Until the reply is sent, a dropped handler means the client went away.
            let mut guard = CloseGuard {
                shared: shared.clone(),
                done: false,
            };
            tokio::time::sleep(*delay).await;
            guard.disarm();
        }
        Body::from(bytes.clone())
    } else {
        body_of(steps.into(), shared)
    };
    Response::builder()
        .header(header::CONTENT_TYPE, "application/json")
        .body(body)
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// A body written step by step; dropped before its end, it counts as closed by the client.
fn body_of(steps: VecDeque<Step>, shared: &Arc<Shared>) -> Body {
    let guard = CloseGuard {
        shared: shared.clone(),
        done: false,
    };
    let body = stream::unfold((steps, guard), |(mut steps, mut guard)| async move {
        match steps.pop_front() {
            None => {
                guard.disarm();
                None
            }
            Some(Step::Data(delay, bytes)) => {
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                Some((Ok(bytes), (steps, guard)))
            }
            Some(Step::Abort) => {
                // Let what was sent so far reach the client before the connection breaks.
                tokio::time::sleep(Duration::from_millis(20)).await;
                guard.disarm();
                steps.clear();
                Some((Err(std::io::Error::other("fake upstream abort")), (steps, guard)))
            }
            Some(Step::Stall) => {
                std::future::pending::<()>().await;
                None
            }
        }
    });
    Body::from_stream(body)
}
