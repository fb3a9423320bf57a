//! moltbot's domain: ids, conversations and messages, the [`Store`] and [`ChatBackend`] traits,
//! token counting, and the [`ChatService`] that assembles context, routes to backends with fallback
//! and records every turn.

pub mod assemble;
pub mod backend;
pub mod clock;
pub mod domain;
pub mod history;
pub mod ids;
pub mod service;
pub mod store;
pub mod tokens;

pub use backend::*;
pub use clock::*;
pub use domain::*;
pub use service::*;
pub use store::*;
pub use tokens::*;
