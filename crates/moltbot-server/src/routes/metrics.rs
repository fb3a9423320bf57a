//! `GET /metrics`: the Prometheus text exposition. Mounted on the admin listener (or on its own
//! `metrics_addr` listener), never on the dialog listener.

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;

use crate::state::AppState;

pub const PATH: &str = "/metrics";

/// The route alone; the caller adds the access guard (a `metrics` scope or the admin CIDR allowlist).
pub fn router() -> Router<AppState> {
    Router::new().route(PATH, get(render))
}

async fn render(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        state.telemetry.render(&state),
    )
}
