//! OpenAI-compatible wire types: requests, responses, stream chunks, conversations and the error envelope.
//!
//! This crate is serde only; it knows nothing about storage, backends or HTTP servers.

pub mod chat;
pub mod conversations;
pub mod embeddings;
pub mod error;
pub mod models;
pub mod responses;

pub use chat::*;
pub use conversations::*;
pub use embeddings::*;
pub use error::*;
pub use models::*;
pub use responses::*;
