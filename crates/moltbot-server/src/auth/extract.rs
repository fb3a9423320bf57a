//! Scope checks: a route-layer middleware for route groups, and capability extractors.

use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use moltbot_core::{Principal, Scope};

use super::lockout::client_ip;
use crate::error::ApiError;
use crate::state::AppState;

fn missing_scope(scope: Scope) -> ApiError {
    ApiError::Forbidden {
        message: format!("You have insufficient permissions for this operation. Missing scope: {scope}."),
        code: "insufficient_scope",
    }
}

fn unauthenticated() -> ApiError {
    super::AuthError::Missing.into()
}

/// Route layer: the request's principal must hold `scope` (403 otherwise; 401 without a principal).
///
/// ```ignore
/// routes::chat::router().route_layer(from_fn_with_state(Scope::Chat, auth::require_scope))
/// ```
pub async fn require_scope(State(scope): State<Scope>, req: Request, next: Next) -> Response {
    match req.extensions().get::<Principal>() {
        Some(p) if p.has_scope(scope) => next.run(req).await,
        Some(_) => missing_scope(scope).into_response(),
        None => unauthenticated().into_response(),
    }
}

/// The capability every admin operation takes: a principal holding the `admin` scope. Only the
/// authentication layer (through this extractor) can construct one.
#[derive(Debug, Clone)]
pub struct AdminPrincipal {
    principal: Principal,
}

impl AdminPrincipal {
    pub fn principal(&self) -> &Principal {
        &self.principal
    }
}

impl<S: Send + Sync> FromRequestParts<S> for AdminPrincipal {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        match parts.extensions.get::<Principal>() {
            Some(p) if p.has_scope(Scope::Admin) => Ok(AdminPrincipal { principal: p.clone() }),
            Some(_) => Err(missing_scope(Scope::Admin)),
            None => Err(unauthenticated()),
        }
    }
}

/// Access to `/metrics`: a credential with the `metrics` scope, or a scraper whose address is in a
/// non-empty `server.admin_allow_cidrs`. Mount the route on the admin listener at
/// [`super::METRICS_PATH`] (credentials are optional there) and take this as an argument:
///
/// ```ignore
/// async fn metrics(_: MetricsAccess, State(state): State<AppState>) -> String { … }
/// ```
#[derive(Debug, Clone, Copy)]
pub struct MetricsAccess(());

impl FromRequestParts<AppState> for MetricsAccess {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        if let Some(p) = parts.extensions.get::<Principal>() {
            return if p.has_scope(Scope::Metrics) {
                Ok(MetricsAccess(()))
            } else {
                Err(missing_scope(Scope::Metrics))
            };
        }
        let allow = &state.config.server.admin_allow_cidrs;
        let ip = client_ip(
            super::peer_ip(&parts.extensions),
            &parts.headers,
            &state.config.server.trusted_proxies,
        );
        if !allow.is_empty() && allow.iter().any(|net| net.contains(&ip)) {
            return Ok(MetricsAccess(()));
        }
        Err(unauthenticated())
    }
}

/// Route layer for `/metrics`: [`MetricsAccess`] as a middleware.
pub async fn require_metrics(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let (mut parts, body) = req.into_parts();
    match MetricsAccess::from_request_parts(&mut parts, &state).await {
        Ok(_) => next.run(Request::from_parts(parts, body)).await,
        Err(e) => e.into_response(),
    }
}
