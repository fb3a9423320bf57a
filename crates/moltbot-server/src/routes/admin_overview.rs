//! `GET /admin/api/overview` (admin listener, `admin` scope): the dialog listener's last hour in
//! 10-second buckets, totals over the last minute, and each backend's health, from moltbot's own
//! counters (see [`crate::telemetry::series`] for what counts as a request and an error).

use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use serde::Serialize;

use crate::auth::AdminPrincipal;
use crate::routes::admin_backends::{BackendHealth, backend_routes, health};
use crate::state::AppState;
use crate::telemetry::series::{INTERVAL_SECS, Point, Totals};

pub const PATH: &str = "/admin/api/overview";
/// The window of `totals`.
pub const TOTALS_WINDOW: Duration = Duration::from_secs(60);

pub fn router() -> Router<AppState> {
    Router::new().route(PATH, get(overview))
}

#[derive(Debug, Serialize)]
struct Overview {
    interval_seconds: i64,
    /// Oldest first.
    series: Vec<Point>,
    totals: Totals,
    backends: Vec<BackendHealth>,
}

async fn overview(_: AdminPrincipal, State(state): State<AppState>) -> axum::Json<Overview> {
    let series = &state.telemetry.live.series;
    axum::Json(Overview {
        interval_seconds: INTERVAL_SECS,
        series: series.points(),
        totals: series.totals(TOTALS_WINDOW),
        backends: backend_routes(&state).into_iter().map(health).collect(),
    })
}
