//! The admin API of outbound webhooks (admin listener, `admin` scope):
//!
//! * `GET|POST /admin/api/webhooks/subscriptions` — list; create (the signing secret is in the
//!   response, once).
//! * `GET|PATCH|DELETE /admin/api/webhooks/subscriptions/{id}` — PATCH changes the URL, events,
//!   description, enabled flag, or rotates the secret (`"rotate_secret": true`, shown once).
//! * `POST /admin/api/webhooks/subscriptions/{id}/test` — queue a `webhook.test` event to it.
//! * `GET /admin/api/webhooks/deliveries?subscription=&status=&event=&limit=` — the delivery log.
//! * `GET /admin/api/webhooks/deliveries/{id}` — one delivery with its attempts.
//! * `POST /admin/api/webhooks/deliveries/{id}/redeliver` — send again, same event id.

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use moltbot_channels::standard_webhooks;
use moltbot_core::ids;
use moltbot_core::webhooks::{
    DeliveryQuery, DeliveryStatus, EVENT_TYPES, OutboxEvent, WEBHOOK_TEST, WebhookAttempt, WebhookDelivery,
    WebhookSubscription, WebhookSubscriptionUpdate,
};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{target, wake};
use crate::auth::AdminPrincipal;
use crate::error::ApiError;
use crate::extract::{Json, Query};
use crate::state::AppState;

pub const SUBSCRIPTIONS: &str = "/admin/api/webhooks/subscriptions";
pub const SUBSCRIPTION: &str = "/admin/api/webhooks/subscriptions/{subscription_id}";
pub const SUBSCRIPTION_TEST: &str = "/admin/api/webhooks/subscriptions/{subscription_id}/test";
pub const DELIVERIES: &str = "/admin/api/webhooks/deliveries";
pub const DELIVERY: &str = "/admin/api/webhooks/deliveries/{delivery_id}";
pub const REDELIVER: &str = "/admin/api/webhooks/deliveries/{delivery_id}/redeliver";

/// Longest description.
const MAX_DESCRIPTION: usize = 500;
/// Longest URL.
const MAX_URL: usize = 2048;

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route(SUBSCRIPTIONS, get(list).post(create))
        .route(SUBSCRIPTION, get(retrieve).patch(update).delete(remove))
        .route(SUBSCRIPTION_TEST, post(test))
        .route(DELIVERIES, get(deliveries))
        .route(DELIVERY, get(delivery))
        .route(REDELIVER, post(redeliver))
}

fn secs(ms: i64) -> i64 {
    ms.div_euclid(1000)
}

#[derive(Debug, Serialize)]
struct SubscriptionObject {
    id: String,
    object: &'static str,
    url: String,
    events: Vec<String>,
    description: String,
    enabled: bool,
    created_at: i64,
    updated_at: i64,
    /// Only when created or rotated: shown once.
    #[serde(skip_serializing_if = "Option::is_none")]
    secret: Option<String>,
}

impl SubscriptionObject {
    fn of(s: &WebhookSubscription) -> Self {
        SubscriptionObject {
            id: s.id.clone(),
            object: "webhook_subscription",
            url: s.url.clone(),
            events: s.events.clone(),
            description: s.description.clone(),
            enabled: s.enabled,
            created_at: secs(s.created_ms),
            updated_at: secs(s.updated_ms),
            secret: None,
        }
    }
}

#[derive(Debug, Serialize)]
struct AttemptObject {
    id: String,
    attempted_at: i64,
    attempted_at_ms: i64,
    status_code: Option<u16>,
    error: Option<String>,
    duration_ms: i64,
}

impl AttemptObject {
    fn of(a: &WebhookAttempt) -> Self {
        AttemptObject {
            id: a.id.clone(),
            attempted_at: secs(a.attempted_ms),
            attempted_at_ms: a.attempted_ms,
            status_code: a.status_code,
            error: a.error.clone(),
            duration_ms: a.duration_ms,
        }
    }
}

#[derive(Debug, Serialize)]
struct DeliveryObject {
    id: String,
    object: &'static str,
    subscription_id: String,
    /// The `webhook-id` header: the same for every attempt and redelivery.
    event_id: String,
    event_type: String,
    status: &'static str,
    attempts: u32,
    /// When the next attempt is due (pending deliveries).
    next_attempt_at: Option<i64>,
    /// Retries stop after this time.
    expires_at: i64,
    last_status: Option<u16>,
    last_error: Option<String>,
    created_at: i64,
    updated_at: i64,
    delivered_at: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    attempt_log: Option<Vec<AttemptObject>>,
}

impl DeliveryObject {
    fn of(d: &WebhookDelivery) -> Self {
        DeliveryObject {
            id: d.id.clone(),
            object: "webhook_delivery",
            subscription_id: d.subscription_id.clone(),
            event_id: d.event_id.clone(),
            event_type: d.event_type.clone(),
            status: d.status.as_str(),
            attempts: d.attempts,
            next_attempt_at: (d.status == DeliveryStatus::Pending).then(|| secs(d.next_attempt_ms)),
            expires_at: secs(d.expires_ms),
            last_status: d.last_status,
            last_error: d.last_error.clone(),
            created_at: secs(d.created_ms),
            updated_at: secs(d.updated_ms),
            delivered_at: d.delivered_ms.map(secs),
            attempt_log: None,
        }
    }
}

#[derive(Debug, Serialize)]
struct List<T> {
    object: &'static str,
    data: Vec<T>,
}

fn subscription_not_found(id: &str) -> ApiError {
    ApiError::NotFound {
        param: Some("subscription_id"),
        message: format!("Webhook subscription '{id}' not found."),
        code: "not_found",
    }
}

fn delivery_not_found(id: &str) -> ApiError {
    ApiError::NotFound {
        param: Some("delivery_id"),
        message: format!("Webhook delivery '{id}' not found."),
        code: "not_found",
    }
}

async fn valid_url(state: &AppState, url: &str) -> Result<String, ApiError> {
    let url = url.trim();
    if url.len() > MAX_URL {
        return Err(ApiError::invalid("url", format!("at most {MAX_URL} characters")));
    }
    let parsed = target::parse(url).map_err(|e| ApiError::invalid("url", e))?;
    target::check(&parsed, state.config.webhooks.allow_private_targets)
        .await
        .map_err(|e| ApiError::invalid("url", e))?;
    Ok(parsed.to_string())
}

fn valid_events(events: &[String]) -> Result<Vec<String>, ApiError> {
    let mut out: Vec<String> = Vec::new();
    for e in events {
        let e = e.trim();
        if !EVENT_TYPES.contains(&e) {
            return Err(ApiError::invalid(
                "events",
                format!("unknown event type {e:?}; one of: {}", EVENT_TYPES.join(", ")),
            ));
        }
        if !out.iter().any(|o| o == e) {
            out.push(e.to_owned());
        }
    }
    if out.is_empty() {
        return Err(ApiError::invalid(
            "events",
            "subscribe to at least one event type",
        ));
    }
    Ok(out)
}

fn valid_description(d: &str) -> Result<String, ApiError> {
    let d = d.trim();
    if d.chars().count() > MAX_DESCRIPTION {
        return Err(ApiError::invalid(
            "description",
            format!("at most {MAX_DESCRIPTION} characters"),
        ));
    }
    Ok(d.to_owned())
}

fn valid_secret(s: &str) -> Result<String, ApiError> {
    standard_webhooks::decode_secret(s).map_err(|e| ApiError::invalid("secret", e))?;
    Ok(s.to_owned())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateSubscription {
    url: String,
    events: Vec<String>,
    #[serde(default)]
    description: Option<String>,
    /// A `whsec_…` key of your own; generated when absent.
    #[serde(default)]
    secret: Option<String>,
    #[serde(default)]
    enabled: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PatchSubscription {
    url: Option<String>,
    events: Option<Vec<String>>,
    description: Option<String>,
    enabled: Option<bool>,
    secret: Option<String>,
    /// Generate a new secret (returned once).
    #[serde(default)]
    rotate_secret: bool,
}

async fn list(
    _: AdminPrincipal,
    State(state): State<AppState>,
) -> Result<axum::Json<List<SubscriptionObject>>, ApiError> {
    let subs = state.store.list_webhook_subscriptions().await?;
    Ok(axum::Json(List {
        object: "list",
        data: subs.iter().map(SubscriptionObject::of).collect(),
    }))
}

async fn create(
    admin: AdminPrincipal,
    State(state): State<AppState>,
    Json(req): Json<CreateSubscription>,
) -> Result<(StatusCode, axum::Json<SubscriptionObject>), ApiError> {
    let url = valid_url(&state, &req.url).await?;
    let events = valid_events(&req.events)?;
    let description = valid_description(req.description.as_deref().unwrap_or(""))?;
    let secret = match req.secret.as_deref() {
        Some(s) => valid_secret(s)?,
        None => standard_webhooks::generate_secret(),
    };
    let now = state.clock.now_millis();
    let sub = WebhookSubscription {
        id: ids::new_id("whsub"),
        url,
        events,
        secret,
        description,
        enabled: req.enabled.unwrap_or(true),
        created_ms: now,
        updated_ms: now,
    };
    state.store.create_webhook_subscription(&sub).await?;
    tracing::info!(moltbot.admin.key_id = %admin.principal().key_id, subscription = %sub.id, url = %sub.url,
        "webhook subscription created");
    let mut obj = SubscriptionObject::of(&sub);
    obj.secret = Some(sub.secret);
    Ok((StatusCode::CREATED, axum::Json(obj)))
}

async fn retrieve(
    _: AdminPrincipal,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<axum::Json<SubscriptionObject>, ApiError> {
    let sub = state
        .store
        .get_webhook_subscription(&id)
        .await?
        .ok_or_else(|| subscription_not_found(&id))?;
    Ok(axum::Json(SubscriptionObject::of(&sub)))
}

async fn update(
    admin: AdminPrincipal,
    State(state): State<AppState>,
    Path(id): Path<String>,
    Json(req): Json<PatchSubscription>,
) -> Result<axum::Json<SubscriptionObject>, ApiError> {
    if req.rotate_secret && req.secret.is_some() {
        return Err(ApiError::invalid(
            "secret",
            "give a secret or rotate_secret, not both",
        ));
    }
    let url = match req.url.as_deref() {
        Some(u) => Some(valid_url(&state, u).await?),
        None => None,
    };
    let secret = match (req.secret.as_deref(), req.rotate_secret) {
        (Some(s), _) => Some(valid_secret(s)?),
        (None, true) => Some(standard_webhooks::generate_secret()),
        (None, false) => None,
    };
    let change = WebhookSubscriptionUpdate {
        url,
        events: req.events.as_deref().map(valid_events).transpose()?,
        secret: secret.clone(),
        description: req.description.as_deref().map(valid_description).transpose()?,
        enabled: req.enabled,
    };
    let sub = state
        .store
        .update_webhook_subscription(&id, &change, state.clock.now_millis())
        .await?
        .ok_or_else(|| subscription_not_found(&id))?;
    tracing::info!(moltbot.admin.key_id = %admin.principal().key_id, subscription = %sub.id,
        enabled = sub.enabled, secret_changed = secret.is_some(), "webhook subscription updated");
    let mut obj = SubscriptionObject::of(&sub);
    // A generated secret is shown once; one the admin chose is not echoed.
    obj.secret = secret.filter(|_| req.rotate_secret);
    Ok(axum::Json(obj))
}

async fn remove(
    admin: AdminPrincipal,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<axum::Json<serde_json::Value>, ApiError> {
    if !state.store.delete_webhook_subscription(&id).await? {
        return Err(subscription_not_found(&id));
    }
    tracing::info!(moltbot.admin.key_id = %admin.principal().key_id, subscription = %id,
        "webhook subscription deleted");
    Ok(axum::Json(
        json!({"id": id, "object": "webhook_subscription.deleted", "deleted": true}),
    ))
}

async fn test(
    _: AdminPrincipal,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<(StatusCode, axum::Json<DeliveryObject>), ApiError> {
    let now = state.clock.now_millis();
    let event = OutboxEvent::new(
        WEBHOOK_TEST,
        json!({"subscription_id": id, "message": "This is a test event from moltbot."}),
        now,
    );
    let retry_for = i64::try_from(state.config.webhooks.retry_for.as_millis()).unwrap_or(i64::MAX);
    let delivery = state
        .store
        .enqueue_webhook_test(&id, &event, retry_for)
        .await?
        .ok_or_else(|| subscription_not_found(&id))?;
    wake();
    Ok((StatusCode::ACCEPTED, axum::Json(DeliveryObject::of(&delivery))))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DeliveryParams {
    subscription: Option<String>,
    status: Option<String>,
    event: Option<String>,
    limit: Option<u32>,
}

async fn deliveries(
    _: AdminPrincipal,
    State(state): State<AppState>,
    Query(p): Query<DeliveryParams>,
) -> Result<axum::Json<List<DeliveryObject>>, ApiError> {
    let status = match p.status.as_deref().filter(|s| !s.is_empty()) {
        None => None,
        Some(s) => Some(
            DeliveryStatus::parse(s)
                .ok_or_else(|| ApiError::invalid("status", "one of pending, delivered, dead"))?,
        ),
    };
    let limit = match p.limit {
        None => 50,
        Some(n @ 1..=500) => n,
        Some(_) => return Err(ApiError::invalid("limit", "between 1 and 500")),
    };
    let list = state
        .store
        .list_webhook_deliveries(&DeliveryQuery {
            subscription_id: p.subscription.filter(|s| !s.is_empty()),
            event_id: p.event.filter(|s| !s.is_empty()),
            status,
            limit,
        })
        .await?;
    Ok(axum::Json(List {
        object: "list",
        data: list.iter().map(DeliveryObject::of).collect(),
    }))
}

async fn delivery(
    _: AdminPrincipal,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<axum::Json<DeliveryObject>, ApiError> {
    let d = state
        .store
        .get_webhook_delivery(&id)
        .await?
        .ok_or_else(|| delivery_not_found(&id))?;
    let attempts = state.store.list_webhook_attempts(&id).await?;
    let mut obj = DeliveryObject::of(&d);
    obj.attempt_log = Some(attempts.iter().map(AttemptObject::of).collect());
    Ok(axum::Json(obj))
}

async fn redeliver(
    admin: AdminPrincipal,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<(StatusCode, axum::Json<DeliveryObject>), ApiError> {
    let retry_for = i64::try_from(state.config.webhooks.retry_for.as_millis()).unwrap_or(i64::MAX);
    let d = state
        .store
        .redeliver_webhook(&id, state.clock.now_millis(), retry_for)
        .await?
        .ok_or_else(|| delivery_not_found(&id))?;
    tracing::info!(moltbot.admin.key_id = %admin.principal().key_id, delivery = %d.id, event = %d.event_id,
        "webhook redelivery requested");
    wake();
    Ok((StatusCode::ACCEPTED, axum::Json(DeliveryObject::of(&d))))
}
