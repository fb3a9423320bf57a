//! The remote backend: any OpenAI-compatible `chat/completions` endpoint, always requested as a stream
//! and mapped to [`moltbot_core::BackendEvent`]s, with timeouts, retries (exponential backoff, full
//! jitter, `Retry-After`), API key rotation, a circuit breaker and outbound rate limits (the same
//! machinery serves its `/embeddings`). Also the tiktoken-based [`TiktokenCounter`].

mod backend;
mod body;
pub mod circuit;
mod embeddings;
mod errors;
mod events;
mod keys;
pub mod limiter;
pub mod metrics;
pub mod retry;
mod settings;
pub mod sse;
mod stream;
pub mod tls;
mod tokens;

pub use backend::{MAX_QUEUE_WAIT, RemoteBackend};
pub use errors::{MAX_MESSAGE_CHARS, is_upstream_failure};
pub use settings::{CircuitSettings, OutboundLimits, RemoteSettings, RetryPolicy, Timeouts, http_client};
pub use tokens::{TiktokenCounter, TokenizerError};
