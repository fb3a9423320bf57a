//! The admin console's read-only settings (admin listener, `admin` scope): `GET /admin/api/settings`
//! is the effective configuration with every secret shown as `***` (and passwords inside database and
//! Redis URLs); `GET /admin/api/webhooks` lists channel webhooks (none yet).

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use serde::Serialize;
use serde_json::Value;

use crate::auth::AdminPrincipal;
use crate::state::AppState;

pub const SETTINGS: &str = "/admin/api/settings";
pub const WEBHOOKS: &str = "/admin/api/webhooks";

pub fn router() -> Router<AppState> {
    Router::new()
        .route(SETTINGS, get(settings))
        .route(WEBHOOKS, get(webhooks))
}

#[derive(Debug, Serialize)]
struct Settings {
    profile: String,
    config: Value,
}

async fn settings(_: AdminPrincipal, State(state): State<AppState>) -> axum::Json<Settings> {
    let config = state.config.redacted_json();
    let profile = config
        .get("profile")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    axum::Json(Settings { profile, config })
}

/// One channel webhook (filled in by the channels work): `{"name","kind","path","status","last_event_at"}`.
#[derive(Debug, Serialize)]
struct WebhookList {
    object: &'static str,
    data: Vec<Value>,
}

async fn webhooks(_: AdminPrincipal) -> axum::Json<WebhookList> {
    axum::Json(WebhookList {
        object: "list",
        data: Vec::new(),
    })
}
