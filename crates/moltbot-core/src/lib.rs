//! moltbot's domain: ids, conversations and messages, the [`Store`] and [`ChatBackend`] traits,
//! token counting, and the [`ChatService`] that assembles context, routes to backends with fallback
//! and records every turn.

pub mod assemble;
pub mod auth;
pub mod backend;
pub mod channels;
pub mod clock;
pub mod domain;
pub mod history;
pub mod ids;
pub mod local_models;
pub mod memory;
pub mod ratelimit;
pub mod responses;
pub mod service;
pub mod store;
pub mod tokens;
pub mod webhooks;

pub use auth::{ApiKey, ApiKeyUpdate, Credential, KeyLimits, Principal, Scope};
pub use backend::*;
pub use clock::*;
pub use domain::*;
pub use local_models::RegisteredModel;
pub use memory::{Compaction, CompactionTrigger, MemorySettings};
pub use service::*;
pub use store::*;
pub use tokens::*;
