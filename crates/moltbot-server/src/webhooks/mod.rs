//! Outbound event webhooks: dispatcher and delivery workers, admin routes (being written).

use axum::Router;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::state::AppState;

/// Start the outbound webhook workers; they stop when `stop` is cancelled.
pub fn spawn(_state: &AppState, _stop: &CancellationToken) -> Vec<JoinHandle<()>> {
    Vec::new()
}

/// Admin API routes (admin listener, `admin` scope).
pub fn admin_router() -> Router<AppState> {
    Router::new()
}
