//! Configuration of a remote backend, and the shared HTTP client.

use std::fmt;
use std::time::Duration;

use url::Url;

/// Per-backend timeouts. `connect` is enforced by the shared client (see [`http_client`]); the others per
/// request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    pub connect: Duration,
    /// From sending the request to the response headers and the first SSE event.
    pub first_byte: Duration,
    /// Between two reads of the body once the first event arrived.
    pub idle: Duration,
    /// The whole call, retries and the stream included.
    pub total: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(10),
            first_byte: Duration::from_secs(60),
            idle: Duration::from_secs(60),
            total: Duration::from_secs(600),
        }
    }
}

/// Retries before the stream is returned: exponential backoff with full jitter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Total attempts, the first included (0 is treated as 1).
    pub max_attempts: u32,
    pub base_delay: Duration,
    pub max_delay: Duration,
    /// Upper bound on a `Retry-After` the backend sleeps for.
    pub retry_after_cap: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            base_delay: Duration::from_millis(250),
            max_delay: Duration::from_secs(8),
            retry_after_cap: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CircuitSettings {
    /// Consecutive failed calls that open the circuit (0 disables the breaker).
    pub failure_threshold: u32,
    pub open_for: Duration,
}

impl Default for CircuitSettings {
    fn default() -> Self {
        Self {
            failure_threshold: 5,
            open_for: Duration::from_secs(30),
        }
    }
}

/// Our own outbound rate limits for one backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OutboundLimits {
    pub requests_per_minute: Option<u32>,
    /// Cost of a request: its `max_tokens` plus its estimated prompt tokens.
    pub tokens_per_minute: Option<u32>,
}

/// Everything a [`crate::RemoteBackend`] needs besides the HTTP client. `Debug` never shows the keys.
#[derive(Clone, PartialEq)]
pub struct RemoteSettings {
    /// The backend's name, for logs, metrics and errors.
    pub name: String,
    /// e.g. `https://api.openai.com/v1`; requests go to `{base_url}/chat/completions` (query kept).
    pub base_url: Url,
    /// Zero or more API keys, used in turn. Zero: no `Authorization` header.
    pub api_keys: Vec<String>,
    pub timeouts: Timeouts,
    pub retry: RetryPolicy,
    pub circuit: CircuitSettings,
    pub limits: OutboundLimits,
    /// How long a key that got 401/403/429 (without `Retry-After`) is skipped.
    pub key_cooldown: Duration,
    /// Ask the upstream for a stream also for callers that want only the whole reply (by default they
    /// get one JSON reply): for platforms that serve some models only as streams, or to have a
    /// stalled generation caught by the first-byte and idle timeouts rather than the total one.
    pub always_stream: bool,
}

impl RemoteSettings {
    /// Settings with the defaults for everything but name, URL and keys.
    pub fn new(name: impl Into<String>, base_url: Url, api_keys: Vec<String>) -> Self {
        Self {
            name: name.into(),
            base_url,
            api_keys,
            timeouts: Timeouts::default(),
            retry: RetryPolicy::default(),
            circuit: CircuitSettings::default(),
            limits: OutboundLimits::default(),
            key_cooldown: Duration::from_secs(60),
            always_stream: false,
        }
    }
}

impl fmt::Debug for RemoteSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut url = self.base_url.clone();
        let _ = url.set_password(None);
        f.debug_struct("RemoteSettings")
            .field("name", &self.name)
            .field("base_url", &url.as_str())
            .field("api_keys", &format_args!("[{} redacted]", self.api_keys.len()))
            .field("timeouts", &self.timeouts)
            .field("retry", &self.retry)
            .field("circuit", &self.circuit)
            .field("limits", &self.limits)
            .field("key_cooldown", &self.key_cooldown)
            .field("always_stream", &self.always_stream)
            .finish()
    }
}

/// The one pooled HTTP client all remote backends share: rustls, HTTP/1.1, TCP keep-alive, no overall
/// request timeout (the backend enforces its own).
///
/// HTTP/1.1 also where the upstream offers HTTP/2, as the OpenAI SDKs do: over HTTP/2, hyper's client
/// multiplexes every request to a host over one connection and, at the server's
/// `SETTINGS_MAX_CONCURRENT_STREAMS` (100–250 at hosted platforms), queues further requests instead of
/// opening a second connection (hyperium/hyper#2197, #3623). Generations stream for up to minutes, so a
/// replica would cap its concurrent turns per upstream host and time out the rest (measured: 450
/// one-second requests through one h2 connection took 3.06 s, three waves of 200). One connection per
/// in-flight request is what the pool keeps (and reuses) instead.
///
/// TLS from [`crate::tls`]: the process's one trust store, read before the first `https://` call (the
/// backend awaits `tls::ready`), so building a client (at every start, before `/ready`) reads no
/// certificate files.
pub fn http_client(connect_timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .use_preconfigured_tls(crate::tls::client_config(crate::tls::Alpn::Http1))
        .http1_only()
        .connect_timeout(connect_timeout)
        .tcp_nodelay(true)
        .tcp_keepalive(Duration::from_secs(30))
        .pool_idle_timeout(Duration::from_secs(90))
        .user_agent(concat!("moltbot/", env!("CARGO_PKG_VERSION")))
        .build()
        .unwrap_or_else(|_| reqwest::Client::new())
}
