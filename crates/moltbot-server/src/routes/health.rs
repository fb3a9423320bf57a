//! `/health` (the process is alive) and `/ready` (this process can serve: listeners up, database
//! reachable, not draining). Backend circuit states are reported but never make a replica unready:
//! an upstream outage must not pull every replica out of the load balancer.

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use serde_json::json;

use crate::state::AppState;

pub const HEALTH: &str = "/health";
pub const READY: &str = "/ready";

pub fn router() -> Router<AppState> {
    Router::new().route(HEALTH, get(health)).route(READY, get(ready))
}

/// Liveness.
#[utoipa::path(get, path = "/health", tag = "health", responses((status = 200, description = "Alive")))]
pub async fn health() -> impl IntoResponse {
    axum::Json(json!({"status": "ok"}))
}

/// Readiness, with details.
#[utoipa::path(get, path = "/ready", tag = "health", responses(
    (status = 200, description = "Ready to serve"),
    (status = 503, description = "Draining, not yet listening, or the database is unreachable"),
))]
pub async fn ready(State(state): State<AppState>) -> impl IntoResponse {
    let db = tokio::time::timeout(std::time::Duration::from_secs(2), state.store.ping()).await;
    let db_ok = matches!(db, Ok(Ok(())));
    let draining = state.readiness.is_draining();
    let listening = state.readiness.is_listening();
    let backends: serde_json::Map<String, serde_json::Value> = state
        .chat
        .models()
        .iter()
        .map(|r| {
            (
                r.name.clone(),
                json!({"kind": r.backend.kind(), "circuit": r.backend.circuit_state().as_str()}),
            )
        })
        .collect();
    // Cluster mode: Redis down is reported ("degraded" under the `open` policy, "unavailable" under
    // `closed`) but does not fail readiness: Redis is shared, so every replica would drop out at once.
    let redis = state.auth.cluster().map(|c| (c.is_up(), c.policy()));
    let ok = db_ok && listening && !draining;
    let body = json!({
        "redis": match redis {
            None => "off",
            Some((true, _)) => "ok",
            Some((false, moltbot_config::RedisFailure::Open)) => "degraded",
            Some((false, moltbot_config::RedisFailure::Closed)) => "unavailable",
        },
        "status": if ok { "ready" } else { "unavailable" },
        "database": if db_ok { "ok" } else { "unreachable" },
        "draining": draining,
        "listening": listening,
        "backends": backends,
    });
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(body))
}
