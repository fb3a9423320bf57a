//! The admin console's read-only settings (admin listener, `admin` scope): `GET /admin/api/settings`
//! is the effective configuration with every secret shown as `***` (and passwords inside database and
//! Redis URLs); `GET /admin/api/webhooks` lists the channel accounts and generic hooks with their queue counts.

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use serde::Serialize;
use serde_json::{Value, json};

use crate::error::ApiError;

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

/// Channel accounts and generic hooks: `{"name","kind","path","mode","status","last_event_at",
/// "queued","done","failed","leader"}` (`last_event_at` unix seconds of the newest queued event;
/// `leader` the replica holding a long-lived connection's lease).
#[derive(Debug, Serialize)]
struct WebhookList {
    object: &'static str,
    data: Vec<Value>,
}

async fn webhooks(
    _: AdminPrincipal,
    State(state): State<AppState>,
) -> Result<axum::Json<WebhookList>, ApiError> {
    let stats = state.store.channel_stats().await?;
    let now = state.clock.now_millis();
    let mut data = Vec::new();
    for account in state.channels.sorted() {
        let s = stats
            .iter()
            .find(|s| s.platform == account.platform.as_str() && s.account == account.name);
        let (mode, leader) = match &account.long_lived {
            Some(l) => {
                let lease = format!("channel:{}:{}", account.platform, account.name);
                let holder = state.store.lease_holder(&lease, now).await?;
                let mode = match l {
                    crate::channels::LongLived::Poll(_) => "polling",
                    crate::channels::LongLived::Connect(_) => "stream",
                };
                (mode, holder)
            }
            None if account.hook.as_ref().is_some_and(|h| !h.sync) => ("async", None),
            None if account.hook.is_some() => ("sync", None),
            None => ("webhook", None),
        };
        let status = match (&account.long_lived, &leader) {
            (Some(_), None) => "connecting",
            _ => "active",
        };
        data.push(json!({
            "name": format!("{}/{}", account.platform, account.name),
            "kind": account.platform.as_str(),
            "path": account.path(),
            "mode": mode,
            "status": status,
            "leader": leader,
            "last_event_at": s.and_then(|s| s.last_event_ms).map(|ms| ms / 1000),
            "queued": s.map_or(0, |s| s.queued),
            "done": s.map_or(0, |s| s.done),
            "failed": s.map_or(0, |s| s.failed),
        }));
    }
    Ok(axum::Json(WebhookList { object: "list", data }))
}
