//! Per-model configuration (`[[models]]`).

use std::time::Duration;

use serde::{Deserialize, Serialize, Serializer};
use url::Url;

use crate::Secret;

/// Which backend serves a model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BackendKind {
    /// An OpenAI-compatible `/chat/completions` endpoint.
    #[default]
    Remote,
    /// A GGUF file run in-process by llama.cpp (`moltbot-engine`).
    Local,
}

/// How a local embedding model pools its token vectors into one vector per input (`pooling`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Pooling {
    /// No embeddings from this model.
    None,
    Mean,
    /// The first token's vector.
    Cls,
    /// The last token's vector.
    Last,
}

/// One `[[models]]` entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelConfig {
    /// Public model name clients ask for; unique.
    pub name: String,
    /// Backend kind.
    pub backend: BackendKind,
    /// Base URL of the OpenAI-compatible API, e.g. `https://api.openai.com/v1`
    /// (normalised: a trailing `/chat/completions` or `/chat` is removed). Always set after load for
    /// remote models.
    pub endpoint: Option<Url>,
    /// Main API key (optional for keyless local servers).
    pub api_key: Option<Secret>,
    /// Extra keys used in turn; see [`ModelConfig::keys`].
    pub api_keys: Vec<Secret>,
    /// Upstream model id; after load always `Some` (defaults to `name`).
    pub upstream_model: Option<String>,
    /// Default output tokens, and the cap for explicit `max_tokens` requests.
    pub max_tokens: u32,
    /// Context window in tokens.
    pub context_window: u32,
    /// Default sampling temperature (0–2); unset = upstream default.
    #[serde(serialize_with = "ser_opt_f32")]
    pub temperature: Option<f32>,
    /// Default nucleus sampling (0–1]; unset = upstream default.
    #[serde(serialize_with = "ser_opt_f32")]
    pub top_p: Option<f32>,
    /// Tokenizer encoding; after load always `Some` (defaults to the top-level `tokenizer`).
    pub tokenizer: Option<String>,
    /// Names of models tried in order when this one fails.
    pub fallbacks: Vec<String>,
    /// Upstream timeouts.
    pub timeouts: TimeoutConfig,
    /// Retry policy.
    pub retry: RetryConfig,
    /// Circuit breaker.
    pub circuit: CircuitConfig,
    /// Local rate limits.
    pub limits: LimitConfig,
    /// How long a key that got 429/401 rests before it is used again.
    #[serde(with = "humantime_serde")]
    pub key_cooldown: Duration,
    /// Remote models: ask the upstream for a stream also when the client wants one whole reply
    /// (default: `"stream": false` upstream for non-streaming clients).
    pub always_stream: bool,
    /// Local models: the GGUF file (or a directory holding exactly one).
    pub model_path: Option<String>,
    /// Local models: layers offloaded to the GPU (0 = CPU only).
    pub gpu_layers: u32,
    /// Local models: sequences decoded together (continuous batching slots); each gets `context_window`.
    pub parallel: u32,
    /// Local models: CPU threads; unset = half the logical CPUs (at least 1).
    pub threads: Option<u32>,
    /// Local models: tokens per decode step.
    pub batch_size: u32,
    /// Local models: requests waiting for a slot before new ones get 503 with `Retry-After`.
    pub queue_capacity: u32,
    /// Local models: Jinja chat template overriding the one in the GGUF metadata.
    pub chat_template: Option<String>,
    /// Local models: embeddings pooling, overriding the GGUF's `{arch}.pooling_type`; unset = the
    /// GGUF's (a model without one serves no embeddings).
    pub pooling: Option<Pooling>,
}

impl Default for ModelConfig {
    fn default() -> Self {
        Self {
            name: String::new(),
            backend: BackendKind::Remote,
            endpoint: None,
            api_key: None,
            api_keys: Vec::new(),
            upstream_model: None,
            max_tokens: 2048,
            context_window: 8192,
            temperature: None,
            top_p: None,
            tokenizer: None,
            fallbacks: Vec::new(),
            timeouts: TimeoutConfig::default(),
            retry: RetryConfig::default(),
            circuit: CircuitConfig::default(),
            limits: LimitConfig::default(),
            key_cooldown: Duration::from_secs(60),
            always_stream: false,
            model_path: None,
            gpu_layers: 0,
            parallel: 4,
            threads: None,
            batch_size: 512,
            queue_capacity: 64,
            chat_template: None,
            pooling: None,
        }
    }
}

impl ModelConfig {
    /// All keys to use in turn: `api_key` first, then `api_keys`. Empty for keyless servers.
    pub fn keys(&self) -> Vec<&Secret> {
        self.api_key.iter().chain(self.api_keys.iter()).collect()
    }

    /// The upstream model id (`upstream_model`, or the public name).
    pub fn upstream_model(&self) -> &str {
        self.upstream_model.as_deref().unwrap_or(&self.name)
    }

    /// `<endpoint>/chat/completions`, or `None` when no endpoint is set.
    pub fn chat_completions_url(&self) -> Option<Url> {
        let base = self.endpoint.as_ref()?;
        let mut url = base.clone();
        let path = format!("{}/chat/completions", base.path().trim_end_matches('/'));
        url.set_path(&path);
        Some(url)
    }
}

/// Upstream timeouts of one model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TimeoutConfig {
    /// TCP/TLS connect.
    #[serde(with = "humantime_serde")]
    pub connect: Duration,
    /// Until the first response byte.
    #[serde(with = "humantime_serde")]
    pub first_byte: Duration,
    /// Longest silence while streaming.
    #[serde(with = "humantime_serde")]
    pub idle: Duration,
    /// Whole upstream request.
    #[serde(with = "humantime_serde")]
    pub total: Duration,
}

impl Default for TimeoutConfig {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(5),
            first_byte: Duration::from_secs(60),
            idle: Duration::from_secs(60),
            total: Duration::from_secs(600),
        }
    }
}

/// Retry policy of one model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetryConfig {
    /// Attempts in total, including the first (>= 1).
    pub max_attempts: u32,
    /// First backoff delay (exponential, with jitter).
    #[serde(with = "humantime_serde")]
    pub base_delay: Duration,
    /// Largest backoff delay.
    #[serde(with = "humantime_serde")]
    pub max_delay: Duration,
    /// Longest `Retry-After` honoured.
    #[serde(with = "humantime_serde")]
    pub retry_after_cap: Duration,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            base_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(10),
            retry_after_cap: Duration::from_secs(30),
        }
    }
}

/// Circuit breaker of one model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CircuitConfig {
    /// Consecutive failures that open the circuit (>= 1).
    pub failure_threshold: u32,
    /// How long the circuit stays open before a trial request.
    #[serde(with = "humantime_serde")]
    pub open_for: Duration,
}

impl Default for CircuitConfig {
    fn default() -> Self {
        Self {
            failure_threshold: 5,
            open_for: Duration::from_secs(30),
        }
    }
}

/// Local rate limits of one model; unset = unlimited.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitConfig {
    /// Requests per minute.
    pub requests_per_minute: Option<u32>,
    /// Tokens (prompt + completion) per minute.
    pub tokens_per_minute: Option<u32>,
}

/// Serializes an `f32` via its shortest decimal form, so `0.7` stays `0.7` (not `0.699999988…`).
fn ser_opt_f32<S: Serializer>(value: &Option<f32>, serializer: S) -> Result<S::Ok, S::Error> {
    match value {
        Some(v) => {
            let wide: f64 = v.to_string().parse().unwrap_or(f64::from(*v));
            serializer.serialize_some(&wide)
        }
        None => serializer.serialize_none(),
    }
}

/// Normalises an endpoint to its base URL: a trailing `/chat/completions` or `/chat` (and trailing
/// slashes) are removed, so `https://api.example.com/v1/chat/completions` becomes
/// `https://api.example.com/v1`. Only `http` and `https` URLs are accepted.
pub fn normalize_endpoint(raw: &str) -> Result<Url, String> {
    let mut url = Url::parse(raw.trim()).map_err(|e| format!("expected an http:// or https:// URL ({e})"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err("expected an http:// or https:// URL".to_owned());
    }
    let mut path = url.path().trim_end_matches('/').to_owned();
    for suffix in ["/chat/completions", "/chat"] {
        if let Some(stripped) = path.strip_suffix(suffix) {
            path = stripped.trim_end_matches('/').to_owned();
            break;
        }
    }
    url.set_path(&path);
    Ok(url)
}
