//! `GET /openapi.json`, generated from the route annotations. A golden copy lives in
//! `docs/openapi.json` and a test compares them.

use axum::Router;
use axum::routing::get;
use utoipa::OpenApi;

use crate::state::AppState;

pub const PATH: &str = "/openapi.json";

#[derive(OpenApi)]
#[openapi(
    info(title = "moltbot dialog service", description = "OpenAI-compatible chat API of moltbot."),
    paths(
        super::chat::create,
        super::embeddings::create,
        super::responses::create,
        super::responses::retrieve,
        super::responses::delete,
        super::responses::input_items,
        super::models::list,
        super::conversations::list,
        super::conversations::create,
        super::conversations::retrieve,
        super::conversations::update,
        super::conversations::delete,
        super::conversations::list_items,
        super::conversations::create_items,
        super::conversations::retrieve_item,
        super::conversations::delete_item,
        super::compaction::compact,
        super::health::health,
        super::health::ready,
        super::token::create,
        super::ws::create_ticket,
        super::ws::upgrade,
    ),
    tags(
        (name = "chat", description = "Chat completions"),
        (name = "embeddings", description = "Embeddings from remote and local models"),
        (name = "responses", description = "OpenAI's Responses API, bridged onto every backend"),
        (name = "conversations", description = "Server-side conversations (OpenAI's Conversations API)"),
        (name = "models", description = "Configured models"),
        (name = "health", description = "Liveness and readiness"),
        (name = "auth", description = "Access tokens for API keys"),
    )
)]
pub struct ApiDoc;

/// The document, pretty-printed (the golden file's format).
pub fn document() -> String {
    let mut doc = ApiDoc::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
    doc.to_pretty_json().unwrap_or_default()
}

pub fn router() -> Router<AppState> {
    Router::new().route(
        PATH,
        get(|| async { ([("content-type", "application/json")], document()) }),
    )
}
