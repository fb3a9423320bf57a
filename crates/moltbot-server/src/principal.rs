//! Who is calling: the [`moltbot_core::Principal`] the authentication layer put into the request's
//! extensions. Records are owned by the principal's API key id.

use std::ops::Deref;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;

use crate::error::ApiError;

/// Extractor for the authenticated caller; 401 if the authentication layer did not run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal(pub moltbot_core::Principal);

impl Deref for Principal {
    type Target = moltbot_core::Principal;

    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<moltbot_core::Principal>()
            .cloned()
            .map(Principal)
            .ok_or_else(|| crate::auth::AuthError::Missing.into())
    }
}
