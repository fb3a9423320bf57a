//! Test support for moltbot: [`FakeUpstream`], a scriptable OpenAI-compatible upstream served over real
//! HTTP with real SSE framing (including a hostile framing mode), which records every request and
//! signals when a client abandons a response.
//!
//! ```no_run
//! # async fn demo() {
//! use moltbot_testkit::{FakeConfig, FakeUpstream, Script};
//! let fake = FakeUpstream::start(FakeConfig::default()).await;
//! fake.push(Script::status(503));           // first request: 503
//! fake.push(Script::text("hi").chunks(2));  // second: "h", "i"
//! let _url = fake.base_url();               // http://127.0.0.1:PORT/v1
//! # }
//! ```

mod embeddings;
mod script;
mod server;
mod sse;

pub use embeddings::{FAKE_EMBEDDING_DIMS, fake_embedding};
pub use script::{Failure, Reply, Script, StatusReply, ToolCall, UsageMode};
pub use server::{FakeConfig, FakeUpstream, RecordedRequest};
