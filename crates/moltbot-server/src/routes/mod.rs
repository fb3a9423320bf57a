//! One router per feature, merged in `crate::router`.

pub mod admin_keys;
pub mod chat;
pub mod conversations;
pub mod debug;
pub mod health;
pub mod metrics;
pub mod models;
pub mod openapi;
pub mod token;

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
