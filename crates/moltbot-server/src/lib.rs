//! moltbot's HTTP side: the dialog service, admin and debug listeners, their routers and middleware,
//! and the process lifecycle (readiness, draining, graceful shutdown).
//!
//! Tests start the real server with [`serve`] on `127.0.0.1:0` listeners and their own shutdown future.

pub mod app;
pub mod auth;
pub mod channels;
pub mod cluster;
pub mod error;
pub mod extract;
pub mod housekeeping;
pub mod idempotency;
pub mod listeners;
pub mod local;
pub mod logging;
pub mod middleware;
pub mod principal;
pub mod routes;
pub mod security;
pub mod state;
pub mod telemetry;
pub mod tls;
pub mod webhooks;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::middleware::from_fn_with_state;
use moltbot_core::Scope;
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;

pub use app::{BuildOptions, build_state};
pub use listeners::{BindError, BoundAddrs, Listeners, serve};
pub use state::{AppState, Readiness, Shared};

/// The dialog service (public listener).
pub fn chat_router(state: AppState) -> Router {
    let timeout = state.config.server.request_timeout;
    let trusted = Arc::new(state.config.server.trusted_proxies.clone());
    Router::new()
        .merge(routes::chat::router().route_layer(from_fn_with_state(Scope::Chat, auth::require_scope)))
        .merge(routes::embeddings::router().route_layer(from_fn_with_state(Scope::Chat, auth::require_scope)))
        .merge(routes::responses::router().route_layer(from_fn_with_state(Scope::Chat, auth::require_scope)))
        .merge(routes::ws::router(&state))
        .merge(routes::models::router())
        .merge(routes::token::router())
        .merge(
            routes::conversations::router()
                .route_layer(from_fn_with_state(Scope::Conversations, auth::require_scope)),
        )
        .merge(routes::health::router())
        .merge(channels::router())
        .merge(routes::openapi::router())
        .merge(routes::assets::chat_router())
        .fallback(routes::not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(
            // Outside in: panic guard; security headers, request id + access log, HTTP metrics; CORS;
            // timeout, authentication + rate limit, Idempotency-Key; body limit (see `middleware`).
            ServiceBuilder::new()
                .layer(CatchPanicLayer::custom(panic_response))
                .layer(from_fn_with_state(
                    middleware::ChatOuter {
                        trusted,
                        meter: telemetry::HttpMeter {
                            listener: "chat",
                            // Summaries only where `/debug/requests` can show them.
                            recent: (state.config.debug_addr.is_some()
                                && state.config.server.debug_requests > 0)
                                .then(|| state.telemetry.recent.clone()),
                            live: Some(state.telemetry.live.clone()),
                        },
                    },
                    middleware::chat_outer,
                ))
                .option_layer(security::cors(&state.config.server.cors_origins))
                .layer(from_fn_with_state(
                    (state.clone(), timeout),
                    middleware::chat_inner,
                ))
                .layer(DefaultBodyLimit::max(state.body_limit)),
        )
        .with_state(state)
}

/// The admin listener: health, readiness and `/metrics` (unless `metrics_addr` gives it its own
/// listener); the console and admin API mount here.
pub fn admin_router(state: AppState) -> Router {
    let mut router = Router::new()
        .merge(routes::health::router())
        .merge(routes::admin_keys::router())
        .merge(routes::admin_conversations::router())
        .merge(routes::admin_usage::router())
        .merge(routes::admin_session::router())
        .merge(routes::admin_overview::router())
        .merge(routes::admin_backends::router())
        .merge(routes::admin_settings::router())
        .merge(webhooks::admin_router())
        .merge(routes::assets::admin_router());
    if state.config.metrics_addr.is_none() {
        // `metrics` scope, or a scraper inside a non-empty admin CIDR allowlist.
        router = router.merge(
            routes::metrics::router().route_layer(from_fn_with_state(state.clone(), auth::require_metrics)),
        );
    }
    operator_layers(router, state, "admin")
}

/// The `metrics_addr` listener: `/metrics` only, behind the admin CIDR allowlist.
pub fn metrics_router(state: AppState) -> Router {
    let router = Router::new().merge(
        routes::metrics::router().route_layer(from_fn_with_state(state.clone(), auth::require_metrics)),
    );
    operator_layers(router, state, "metrics")
}

/// The middleware of the operator listeners (admin, metrics), in one place: security headers on every
/// response (auth rejections included), request id and access log, metrics, the admin CIDR allowlist,
/// then authentication with the admin policy.
fn operator_layers(router: Router<AppState>, state: AppState, listener: &'static str) -> Router {
    let allow = Arc::new(state.config.server.admin_allow_cidrs.clone());
    let trusted = Arc::new(state.config.server.trusted_proxies.clone());
    router
        .fallback(routes::not_found)
        .layer(
            ServiceBuilder::new()
                .layer(CatchPanicLayer::custom(panic_response))
                .layer(from_fn_with_state(trusted, security::headers))
                .layer(axum::middleware::from_fn(middleware::request_context))
                .layer(axum::middleware::from_fn_with_state(
                    telemetry::HttpMeter {
                        listener,
                        recent: None,
                        live: None,
                    },
                    telemetry::track,
                ))
                .layer(axum::middleware::from_fn_with_state(
                    allow,
                    middleware::cidr_allowlist,
                ))
                .layer(from_fn_with_state(
                    (state.clone(), auth::Policy::ADMIN),
                    auth::layer,
                )),
        )
        .with_state(state)
}

/// The debug listener (development only).
pub fn debug_router(state: AppState) -> Router {
    let allow = Arc::new(state.config.server.debug_allow_cidrs.clone());
    Router::new()
        .merge(routes::health::router())
        .merge(routes::debug::router())
        .fallback(routes::not_found)
        .layer(
            ServiceBuilder::new()
                .layer(axum::middleware::from_fn(middleware::request_context))
                .layer(axum::middleware::from_fn_with_state(
                    allow,
                    middleware::cidr_allowlist,
                )),
        )
        .with_state(state)
}

async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> axum::response::Response {
    use axum::response::IntoResponse;
    let body = moltbot_api::ErrorEnvelope::new(
        "invalid_request_error",
        format!("Method {method} is not allowed for {}.", uri.path()),
        None,
        Some("method_not_allowed"),
    );
    (axum::http::StatusCode::METHOD_NOT_ALLOWED, axum::Json(body)).into_response()
}

fn panic_response(_: Box<dyn std::any::Any + Send + 'static>) -> axum::response::Response {
    use axum::response::IntoResponse;
    error::ApiError::internal("a handler panicked").into_response()
}

/// Where a listener is bound, for `--ready-file` and logs.
pub fn describe(addr: &SocketAddr) -> String {
    addr.to_string()
}
