//! The debug listener (development only; refused in the production profile): the effective
//! configuration with secrets redacted.

use axum::Router;
use axum::extract::State;
use axum::routing::get;

use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new().route("/debug/config", get(config))
}

async fn config(State(state): State<AppState>) -> ([(&'static str, &'static str); 1], String) {
    (
        [("content-type", "text/plain; charset=utf-8")],
        state.config.redacted_toml(),
    )
}
