//! `GET /v1/models`.

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use moltbot_api::{ModelList, ModelObject};

use crate::state::AppState;

pub const PATH: &str = "/v1/models";

pub fn router() -> Router<AppState> {
    Router::new().route(PATH, get(list))
}

/// List the configured models.
#[utoipa::path(get, path = "/v1/models", tag = "models", responses((status = 200, body = ModelList)))]
pub async fn list(State(state): State<AppState>) -> axum::Json<ModelList> {
    let data = state
        .chat
        .models()
        .iter()
        .map(|r| ModelObject {
            id: r.name.clone(),
            object: "model".into(),
            created: r.created,
            owned_by: r.owned_by.clone(),
        })
        .collect();
    axum::Json(ModelList {
        object: "list".into(),
        data,
    })
}
