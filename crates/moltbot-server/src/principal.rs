//! Who is calling. Until API keys and JWTs are configured every caller is the anonymous principal,
//! whose records are owned by `""`; the access-control layer replaces this extractor's source.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;

use crate::error::ApiError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    owner: String,
}

impl Principal {
    pub fn anonymous() -> Self {
        Self { owner: String::new() }
    }

    /// The owner id records are scoped to.
    pub fn owner(&self) -> &str {
        &self.owner
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(parts
            .extensions
            .get::<Principal>()
            .cloned()
            .unwrap_or_else(Principal::anonymous))
    }
}
