//! [`RemoteBackend`]: an OpenAI-compatible upstream behind retries, key rotation, a circuit breaker and
//! outbound limits.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use moltbot_core::{
    BackendError, BackendRequest, ChatBackend, CircuitState, EmbedOutput, EmbedRequest, EventStream,
    RoughCounter, TokenCounter,
};
use reqwest::header::{ACCEPT, CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use tokio::time::{Instant, sleep, timeout_at};
use url::Url;

use crate::body::RequestBody;
use crate::circuit::CircuitBreaker;
use crate::errors::{Redactor, client_error, describe, is_upstream_failure, parse_error_body};
use crate::events::completion_events;
use crate::keys::{KeyPick, KeyRing};
use crate::limiter::RateLimiter;
use crate::metrics;
use crate::retry::{backoff_delay, parse_retry_after};
use crate::settings::RemoteSettings;
use crate::stream::SseStream;

/// Longest a call waits for our own rate limiter, or for a cooling key at its start, before failing
/// with `Overloaded` / `Status{429}`.
pub const MAX_QUEUE_WAIT: Duration = Duration::from_secs(1);

/// Most bytes of an error response body read.
const MAX_ERROR_BODY: usize = 64 * 1024;

/// Most bytes of an embeddings response body read (2048 inputs of 3072 floats as JSON fit).
const MAX_EMBEDDINGS_BODY: usize = 256 * 1024 * 1024;

/// Most bytes of a whole (non-streamed) chat reply read.
const MAX_REPLY_BODY: usize = 64 * 1024 * 1024;

/// Which upstream endpoint a call goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Call {
    /// `POST {base}/chat/completions`, streamed.
    Chat,
    /// `POST {base}/chat/completions` with `"stream": false`: one JSON reply (a caller that wants only
    /// the whole reply). Not under the first-byte timeout: the first byte comes when the reply is done.
    Reply,
    /// `POST {base}/embeddings`, one JSON body.
    Embeddings,
}

/// A successful attempt: the chat event stream, or the whole JSON body of an embeddings call.
pub(crate) enum Answer {
    Events(EventStream),
    Body(Bytes),
}

/// How a failed attempt may continue.
#[derive(Debug, PartialEq)]
enum Next {
    /// Retry after backoff (or `Retry-After`).
    Retry,
    /// 401/403: retry only with another key.
    OtherKey,
    Stop,
}

#[derive(Debug)]
struct Failure {
    error: BackendError,
    next: Next,
    retry_after: Option<Duration>,
    /// The status that should cool the key used (401/403/429).
    key_status: Option<u16>,
    /// The upstream's HTTP status, when it answered with an error status.
    http_status: Option<u16>,
}

impl Failure {
    fn retry(error: BackendError) -> Self {
        let next = if error == BackendError::Timeout("total") {
            Next::Stop
        } else {
            Next::Retry
        };
        Self {
            error,
            next,
            retry_after: None,
            key_status: None,
            http_status: None,
        }
    }

    fn stop(error: BackendError) -> Self {
        Self {
            error,
            next: Next::Stop,
            retry_after: None,
            key_status: None,
            http_status: None,
        }
    }

    /// The `status` label of `moltbot_upstream_requests_total`.
    fn status_label(&self) -> String {
        self.http_status
            .map_or_else(|| metrics::status_label(Err(&self.error)), |s| s.to_string())
    }
}

/// A remote OpenAI-compatible chat backend (`POST {base_url}/chat/completions`: streamed for callers
/// that read the events as they come, one JSON reply for the others unless `always_stream`).
pub struct RemoteBackend {
    settings: RemoteSettings,
    client: reqwest::Client,
    url: Url,
    embeddings_url: Url,
    keys: KeyRing,
    circuit: CircuitBreaker,
    limiter: RateLimiter,
    counter: Arc<dyn TokenCounter>,
    redactor: Arc<Redactor>,
    /// `moltbot_upstream_requests_total{status="200"}` of this backend, registered at the first
    /// successful attempt (after the server installed its recorder) and reused.
    ok_attempts: OnceLock<::metrics::Counter>,
}

impl std::fmt::Debug for RemoteBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteBackend")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl RemoteBackend {
    /// `client`: the shared one from [`crate::http_client`]. Prompt tokens for the token limit are
    /// estimated with [`RoughCounter`] unless [`with_token_counter`](Self::with_token_counter) is used.
    pub fn new(settings: RemoteSettings, client: reqwest::Client) -> Self {
        let endpoint = |name: &str| {
            let mut url = settings.base_url.clone();
            let path = format!("{}/{name}", url.path().trim_end_matches('/'));
            url.set_path(&path);
            url
        };
        let (url, embeddings_url) = (endpoint("chat/completions"), endpoint("embeddings"));
        metrics::circuit_state(&settings.name, CircuitState::Closed);
        Self {
            url,
            embeddings_url,
            keys: KeyRing::new(settings.api_keys.clone()),
            circuit: CircuitBreaker::new(settings.circuit),
            limiter: RateLimiter::new(settings.limits),
            counter: Arc::new(RoughCounter),
            redactor: Arc::new(Redactor::new(&settings.api_keys)),
            ok_attempts: OnceLock::new(),
            settings,
            client,
        }
    }

    pub fn with_token_counter(mut self, counter: Arc<dyn TokenCounter>) -> Self {
        self.counter = counter;
        self
    }

    pub fn settings(&self) -> &RemoteSettings {
        &self.settings
    }

    /// The counter that estimates prompt tokens (for the token limit and missing usage).
    pub(crate) fn counter(&self) -> &dyn TokenCounter {
        self.counter.as_ref()
    }

    pub(crate) fn limits_tokens(&self) -> bool {
        self.limiter.limits_tokens()
    }

    /// One call through the circuit breaker and the outbound limits, with retries, under the total
    /// timeout. `cost`: the tokens it debits from the token limit.
    pub(crate) async fn call(
        &self,
        call: Call,
        request_id: &str,
        body: Bytes,
        cost: u64,
    ) -> Result<Answer, BackendError> {
        let deadline = Instant::now() + self.settings.timeouts.total;
        let permit = self.circuit.try_acquire().map_err(|retry_after| {
            metrics::circuit_state(self.name(), self.circuit.state());
            BackendError::CircuitOpen { retry_after }
        })?;
        self.limiter
            .acquire(cost, MAX_QUEUE_WAIT)
            .await
            .map_err(|retry_after| BackendError::Overloaded { retry_after })?;
        let result = match timeout_at(deadline, self.attempts(call, request_id, body, deadline)).await {
            Ok(r) => r,
            Err(_) => Err(BackendError::Timeout("total")),
        };
        let before = self.circuit.state();
        permit.record(result.as_ref().err().is_some_and(is_upstream_failure));
        let after = self.circuit.state();
        // The gauge follows changes here and is refreshed at every scrape (`Telemetry::render`).
        if before != after {
            metrics::circuit_state(self.name(), after);
            tracing::info!(
                backend = self.settings.name.as_str(),
                from = before.as_str(),
                to = after.as_str(),
                "circuit state changed"
            );
        }
        result
    }

    async fn attempts(
        &self,
        call: Call,
        request_id: &str,
        body: Bytes,
        deadline: Instant,
    ) -> Result<Answer, BackendError> {
        let policy = self.settings.retry;
        let max_attempts = policy.max_attempts.max(1);
        let name = self.settings.name.as_str();
        let mut attempt = 0u32;
        loop {
            let key = match self.keys.pick(Instant::now()) {
                KeyPick::NoKeys => None,
                KeyPick::Ready(i) => Some(i),
                // After a backoff, the key that recovers first is used even if still cooling.
                KeyPick::Cooling { index, .. } if attempt > 0 => Some(index),
                KeyPick::Cooling { index, wait, .. } if wait <= MAX_QUEUE_WAIT => {
                    sleep(wait).await;
                    Some(index)
                }
                KeyPick::Cooling { wait, status, .. } => {
                    let message = Some("all API keys of this backend are cooling down".to_owned());
                    return Err(BackendError::Status {
                        status,
                        retry_after: Some(wait),
                        message,
                    });
                }
            };
            attempt += 1;
            tracing::debug!(backend = name, attempt, key = ?key, "upstream attempt");
            if attempt > 1 {
                metrics::retry(name);
            }
            let failure = match self.attempt(call, key, request_id, &body, deadline).await {
                Ok(stream) => {
                    self.ok_attempts
                        .get_or_init(|| metrics::attempts(name, metrics::status_label(Ok(()))))
                        .increment(1);
                    return Ok(stream);
                }
                Err(f) => f,
            };
            metrics::attempt(name, failure.status_label());
            let now = Instant::now();
            if let (Some(k), Some(status)) = (key, failure.key_status) {
                let cool = if status == 429 { failure.retry_after } else { None };
                self.keys
                    .cool_down(k, now + cool.unwrap_or(self.settings.key_cooldown), status);
            }
            let other_key = failure.key_status.is_some() && self.keys.has_ready(now);
            let retry = match failure.next {
                Next::Retry => true,
                Next::OtherKey => other_key,
                Next::Stop => false,
            };
            if !retry || attempt >= max_attempts {
                tracing::debug!(backend = name, attempt, error = %failure.error, "upstream call failed");
                return Err(failure.error);
            }
            let delay = if other_key {
                Duration::ZERO
            } else if let Some(ra) = failure.retry_after {
                ra.min(policy.retry_after_cap)
            } else {
                backoff_delay(&policy, attempt - 1, &mut rand::rng())
            };
            if now + delay >= deadline {
                return Err(failure.error);
            }
            tracing::debug!(
                backend = name, attempt, error = %failure.error, delay_ms = delay.as_millis() as u64,
                "upstream attempt failed; retrying"
            );
            sleep(delay).await;
        }
    }

    /// One request, up to its first event (chat) or its whole body (embeddings), under the first-byte
    /// (and total) timeout; a whole chat reply under the total timeout only.
    async fn attempt(
        &self,
        call: Call,
        key: Option<usize>,
        request_id: &str,
        body: &Bytes,
        deadline: Instant,
    ) -> Result<Answer, Failure> {
        let first_byte = Instant::now() + self.settings.timeouts.first_byte;
        let (limit, label) = if first_byte < deadline && call != Call::Reply {
            (first_byte, "first_byte")
        } else {
            (deadline, "total")
        };
        match timeout_at(limit, self.attempt_inner(call, key, request_id, body, deadline)).await {
            Ok(r) => r,
            Err(_) => Err(Failure::retry(BackendError::Timeout(label))),
        }
    }

    async fn attempt_inner(
        &self,
        call: Call,
        key: Option<usize>,
        request_id: &str,
        body: &Bytes,
        deadline: Instant,
    ) -> Result<Answer, Failure> {
        let (url, accept) = match call {
            Call::Chat => (&self.url, "text/event-stream"),
            Call::Reply => (&self.url, "application/json"),
            Call::Embeddings => (&self.embeddings_url, "application/json"),
        };
        let mut req = self
            .client
            .post(url.clone())
            .header(CONTENT_TYPE, "application/json")
            .header(ACCEPT, accept)
            .body(body.clone());
        if let Ok(id) = HeaderValue::from_str(request_id)
            && !request_id.is_empty()
        {
            req = req.header("x-request-id", id);
        }
        if let Some(k) = key {
            req = req.bearer_auth(self.keys.secret(k));
        }
        if url.scheme() == "https" {
            crate::tls::ready().await;
        }
        let resp = req.send().await.map_err(|e| self.send_error(e))?;
        if !resp.status().is_success() {
            return Err(self.status_failure(resp).await);
        }
        if call == Call::Embeddings {
            return self.read_body(resp, MAX_EMBEDDINGS_BODY).await.map(Answer::Body);
        }
        let content_type = resp
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        let is = |media: &str| {
            let v = content_type.trim_start();
            v.get(..media.len())
                .is_some_and(|p| p.eq_ignore_ascii_case(media))
        };
        // A JSON reply where one was asked for, unless the upstream streams anyway (whatever type it
        // labels the JSON with); and where a stream was asked for, if it says JSON: some upstreams
        // ignore `stream: true`.
        let json = if call == Call::Reply {
            !is("text/event-stream")
        } else {
            is("application/json")
        };
        if json {
            let bytes = self.read_body(resp, MAX_REPLY_BODY).await?;
            let events = completion_events(&bytes, &self.redactor).map_err(Failure::retry)?;
            return Ok(Answer::Events(Box::pin(futures::stream::iter(
                events.into_iter().map(Ok),
            ))));
        }
        let mut stream = SseStream::new(resp, self.settings.timeouts.idle, deadline, self.redactor.clone());
        match stream.next_event().await {
            Some(Ok(ev)) => {
                stream.unread(Ok(ev));
                Ok(Answer::Events(stream.into_event_stream()))
            }
            Some(Err(e)) => Err(Failure::retry(e)),
            None => Err(Failure::retry(BackendError::Protocol(
                "upstream sent an empty stream".into(),
            ))),
        }
    }

    /// A whole (non-streamed) response body, up to `limit` bytes.
    async fn read_body(&self, mut resp: reqwest::Response, limit: usize) -> Result<Bytes, Failure> {
        // Most bodies arrive in one chunk: kept as it is, without a copy.
        let mut first: Option<Bytes> = None;
        let mut body = Vec::new();
        let mut len = 0usize;
        loop {
            match resp.chunk().await {
                Ok(Some(chunk)) => {
                    len += chunk.len();
                    if len > limit {
                        return Err(Failure::stop(BackendError::Protocol(
                            "the upstream response is too large".into(),
                        )));
                    }
                    if first.is_none() && body.is_empty() {
                        first = Some(chunk);
                        continue;
                    }
                    if let Some(f) = first.take() {
                        body.extend_from_slice(&f);
                    }
                    body.extend_from_slice(&chunk);
                }
                Ok(None) => return Ok(first.unwrap_or_else(|| Bytes::from(body))),
                Err(e) => {
                    return Err(Failure::retry(BackendError::Protocol(format!(
                        "reading upstream body: {}",
                        describe(e, &self.redactor)
                    ))));
                }
            }
        }
    }

    fn send_error(&self, err: reqwest::Error) -> Failure {
        if err.is_connect() && err.is_timeout() {
            return Failure::retry(BackendError::Timeout("connect"));
        }
        Failure::retry(BackendError::Connect(describe(err, &self.redactor)))
    }

    async fn status_failure(&self, mut resp: reqwest::Response) -> Failure {
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, SystemTime::now()));
        let mut body = Vec::new();
        while let Ok(Some(chunk)) = resp.chunk().await {
            body.extend_from_slice(&chunk);
            if body.len() >= MAX_ERROR_BODY {
                break;
            }
        }
        tracing::debug!(
            backend = self.settings.name.as_str(),
            status,
            "upstream error status"
        );
        let message = parse_error_body(&body).message.map(|m| self.redactor.message(&m));
        let error = BackendError::Status {
            status,
            retry_after,
            message,
        };
        let mut failure = match status {
            401 | 403 => Failure {
                error,
                next: Next::OtherKey,
                retry_after: None,
                key_status: Some(status),
                http_status: None,
            },
            429 => Failure {
                error,
                next: Next::Retry,
                retry_after,
                key_status: Some(status),
                http_status: None,
            },
            408 | 500..=599 => Failure {
                error,
                next: Next::Retry,
                retry_after,
                key_status: None,
                http_status: None,
            },
            // A wrong endpoint path or an upstream model id the platform does not know: our
            // configuration, not the client's request. Reported as a gateway error; may fall back.
            404 | 405 => Failure::stop(error),
            400..=499 => Failure::stop(client_error(status, &body, &self.redactor)),
            _ => Failure::stop(error),
        };
        failure.http_status = Some(status);
        failure
    }
}

#[async_trait]
impl ChatBackend for RemoteBackend {
    fn name(&self) -> &str {
        &self.settings.name
    }

    fn kind(&self) -> &'static str {
        "remote"
    }

    async fn chat(&self, request: BackendRequest) -> Result<EventStream, BackendError> {
        let cost = if self.limiter.limits_tokens() {
            u64::from(request.max_tokens) + self.counter.count_messages(&request.messages) as u64
        } else {
            0
        };
        let stream = request.stream || self.settings.always_stream;
        let body = match serde_json::to_vec(&RequestBody(&request, stream)) {
            Ok(b) => Bytes::from(b),
            Err(e) => {
                return Err(BackendError::Protocol(format!(
                    "could not encode the request: {e}"
                )));
            }
        };
        let call = if stream { Call::Chat } else { Call::Reply };
        match self.call(call, &request.request_id, body, cost).await? {
            Answer::Events(events) => Ok(events),
            Answer::Body(_) => Err(BackendError::Protocol("expected a chat stream".into())),
        }
    }

    async fn embed(&self, request: EmbedRequest) -> Result<EmbedOutput, BackendError> {
        crate::embeddings::embed(self, request).await
    }

    fn circuit_state(&self) -> CircuitState {
        self.circuit.state()
    }
}
