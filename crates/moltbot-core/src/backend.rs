//! The [`ChatBackend`] trait every model backend implements (remote HTTP now, the local engine later),
//! and the events a backend streams back.

use std::pin::Pin;
use std::time::Duration;

use async_trait::async_trait;
use futures::Stream;
use moltbot_api::{ChatMessage, Usage};
use serde_json::{Map, Value};

/// What a backend is asked to generate. Sampling parameters are already resolved against the model's
/// defaults; `max_tokens` is always set (clamped to the context by the service).
#[derive(Debug, Clone, Default)]
pub struct BackendRequest {
    /// The upstream model id.
    pub model: String,
    pub messages: Vec<ChatMessage>,
    pub max_tokens: u32,
    /// Whether the client asked for `max_completion_tokens` (forwarded under the same name).
    pub use_max_completion_tokens: bool,
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub stop: Vec<String>,
    pub seed: Option<i64>,
    pub user: Option<String>,
    pub tools: Option<Value>,
    pub tool_choice: Option<Value>,
    pub response_format: Option<Value>,
    /// Request fields moltbot does not interpret, passed through unchanged.
    pub extra: Map<String, Value>,
    /// Request id, for upstream logs (`x-request-id`).
    pub request_id: String,
    /// The caller reads the events as they arrive (a streaming client). When false only the whole
    /// reply matters, and a remote backend asks its upstream for one JSON reply instead of a stream
    /// (unless the model is configured with `always_stream`).
    pub stream: bool,
}

/// One event of a generation, in order: deltas, then one `Finish`, then optionally `Usage`.
#[derive(Debug, Clone, PartialEq)]
pub enum BackendEvent {
    /// Text and/or tool-call fragments (tool calls in OpenAI's delta shape, passed through).
    Delta {
        content: Option<String>,
        tool_calls: Option<Value>,
    },
    Finish {
        reason: String,
    },
    Usage(Usage),
}

pub type EventStream = Pin<Box<dyn Stream<Item = Result<BackendEvent, BackendError>> + Send>>;

#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum BackendError {
    /// Connection could not be established (after retries).
    #[error("could not connect to the backend: {0}")]
    Connect(String),
    /// A timeout: `connect`, `first_byte`, `idle` or `total`.
    #[error("backend timed out ({0})")]
    Timeout(&'static str),
    /// The upstream answered with an error status (after retries).
    #[error("backend returned HTTP {status}")]
    Status {
        status: u16,
        retry_after: Option<Duration>,
        message: Option<String>,
    },
    /// The upstream rejected the request as invalid (4xx other than auth and rate limits): the client's fault.
    #[error("invalid request: {message}")]
    InvalidRequest { param: Option<String>, message: String },
    /// The upstream sent something we could not parse.
    #[error("backend protocol error: {0}")]
    Protocol(String),
    /// The circuit breaker is open; the backend is not being called.
    #[error("backend circuit is open")]
    CircuitOpen { retry_after: Duration },
    /// Our own outbound limit for this backend is exhausted, or the local engine queue is full.
    #[error("backend is at capacity")]
    Overloaded { retry_after: Duration },
    /// The prompt plus output does not fit the model's context.
    #[error("context length exceeded: {0}")]
    ContextLength(String),
    /// A parameter this backend cannot honour.
    #[error("unsupported parameter {param}: {message}")]
    Unsupported { param: String, message: String },
}

impl BackendError {
    /// Whether the next backend in a fallback chain should be tried. Client errors are not retried
    /// elsewhere: another backend would refuse the same request.
    pub fn should_fall_back(&self) -> bool {
        !matches!(
            self,
            BackendError::InvalidRequest { .. }
                | BackendError::ContextLength(_)
                | BackendError::Unsupported { .. }
        )
    }
}

/// A backend's health as seen by its circuit breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CircuitState {
    Closed,
    Open,
    HalfOpen,
}

impl CircuitState {
    pub fn as_str(self) -> &'static str {
        match self {
            CircuitState::Closed => "closed",
            CircuitState::Open => "open",
            CircuitState::HalfOpen => "half_open",
        }
    }

    /// The value of the `moltbot_backend_circuit_state` gauge: 0 closed, 1 half-open, 2 open.
    pub fn gauge(self) -> f64 {
        match self {
            CircuitState::Closed => 0.0,
            CircuitState::HalfOpen => 1.0,
            CircuitState::Open => 2.0,
        }
    }
}

/// One input of an embeddings request: text, or token ids of the model's own vocabulary.
#[derive(Debug, Clone, PartialEq)]
pub enum EmbedInput {
    Text(String),
    Tokens(Vec<u32>),
}

/// What a backend is asked to embed: one vector per input, in order.
#[derive(Debug, Clone, Default)]
pub struct EmbedRequest {
    /// The upstream model id.
    pub model: String,
    pub inputs: Vec<EmbedInput>,
    /// The vector size asked for (`dimensions`); a backend that cannot honour it refuses.
    pub dimensions: Option<u32>,
    pub user: Option<String>,
    /// Request fields moltbot does not interpret, passed through unchanged.
    pub extra: Map<String, Value>,
    /// Request id, for upstream logs (`x-request-id`).
    pub request_id: String,
}

/// The vectors (one per input, in input order) and the tokens read.
#[derive(Debug, Clone, PartialEq)]
pub struct EmbedOutput {
    pub vectors: Vec<Vec<f32>>,
    pub prompt_tokens: u32,
}

#[async_trait]
pub trait ChatBackend: Send + Sync + 'static {
    /// The backend's name (the model name it was configured for), for logs, metrics and records.
    fn name(&self) -> &str;

    /// `remote` or `local`.
    fn kind(&self) -> &'static str;

    /// Start a generation. Retries happen inside, before the stream is returned; once the stream has
    /// yielded its first event nothing is retried. Dropping the stream cancels the generation.
    async fn chat(&self, request: BackendRequest) -> Result<EventStream, BackendError>;

    /// Embed the inputs (`POST /v1/embeddings`). Backends without embeddings refuse with a 400 naming
    /// `model`.
    async fn embed(&self, request: EmbedRequest) -> Result<EmbedOutput, BackendError> {
        let _ = request;
        Err(BackendError::Unsupported {
            param: "model".to_owned(),
            message: format!("The model `{}` does not support embeddings.", self.name()),
        })
    }

    fn circuit_state(&self) -> CircuitState {
        CircuitState::Closed
    }
}
