//! One router per feature, merged in `crate::router`.

pub mod admin_backends;
pub mod admin_conversations;
pub mod admin_keys;
pub mod admin_overview;
pub mod admin_session;
pub mod admin_settings;
pub mod admin_usage;
pub mod assets;
pub mod chat;
pub mod compaction;
pub mod conversations;
pub mod debug;
pub mod embeddings;
pub mod health;
pub mod metrics;
pub mod models;
pub mod openapi;
pub mod responses;
pub mod token;
pub mod ws;

use axum::http::{Method, Uri};

use crate::error::ApiError;

/// Unknown paths get the envelope, not an empty 404.
pub async fn not_found(method: Method, uri: Uri) -> ApiError {
    ApiError::NotFound {
        param: None,
        message: format!("Unknown request URL: {method} {}.", uri.path()),
        code: "unknown_url",
    }
}
