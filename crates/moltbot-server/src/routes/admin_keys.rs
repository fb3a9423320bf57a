//! The admin API for API keys (admin listener, `admin` scope): `/admin/api/keys` (GET list, POST
//! create — the secret is in the response, once) and `/admin/api/keys/{id}` (GET, PATCH limits,
//! scopes, name or expiry, DELETE = revoke).

use axum::Router;
use axum::extract::{Path, State};
use axum::routing::get;
use moltbot_core::{ApiKey, ApiKeyUpdate, KeyLimits, Scope};
use serde::{Deserialize, Deserializer, Serialize};

use crate::auth::AdminPrincipal;
use crate::error::ApiError;
use crate::extract::Json;
use crate::state::AppState;

pub const COLLECTION: &str = "/admin/api/keys";
pub const ONE: &str = "/admin/api/keys/{key_id}";

pub fn router() -> Router<AppState> {
    Router::new()
        .route(COLLECTION, get(list).post(create))
        .route(ONE, get(retrieve).patch(update).delete(revoke))
}

#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct KeyObject {
    pub id: String,
    pub object: String,
    pub name: String,
    /// The visible start of the secret (`mb_AbCd1234`).
    pub prefix: String,
    pub scopes: Vec<String>,
    pub requests_per_minute: Option<u32>,
    pub tokens_per_minute: Option<u32>,
    pub daily_tokens: Option<u64>,
    pub concurrent_streams: Option<u32>,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
    pub expires_at: Option<i64>,
    pub revoked_at: Option<i64>,
    /// Only in the response to a create: shown once, never stored.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub secret: Option<String>,
}

impl KeyObject {
    pub fn from_key(k: &ApiKey) -> Self {
        Self {
            id: k.id.clone(),
            object: "api_key".into(),
            name: k.name.clone(),
            prefix: k.prefix.clone(),
            scopes: k.scopes.iter().map(|s| s.as_str().to_owned()).collect(),
            requests_per_minute: k.limits.requests_per_minute,
            tokens_per_minute: k.limits.tokens_per_minute,
            daily_tokens: k.limits.daily_tokens,
            concurrent_streams: k.limits.concurrent_streams,
            created_at: k.created_at,
            last_used_at: k.last_used_at,
            expires_at: k.expires_at,
            revoked_at: k.revoked_at,
            secret: None,
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
pub struct KeyList {
    pub object: String,
    pub data: Vec<KeyObject>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateKey {
    pub name: String,
    pub scopes: Vec<String>,
    pub requests_per_minute: Option<u32>,
    pub tokens_per_minute: Option<u32>,
    pub daily_tokens: Option<u64>,
    pub concurrent_streams: Option<u32>,
    /// Lifetime in seconds; unset = no expiry.
    pub expires_in: Option<u64>,
}

/// `null` clears a field; an absent field is left alone.
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatchKey {
    pub name: Option<String>,
    pub scopes: Option<Vec<String>>,
    #[serde(default, deserialize_with = "present")]
    pub requests_per_minute: Option<Option<u32>>,
    #[serde(default, deserialize_with = "present")]
    pub tokens_per_minute: Option<Option<u32>>,
    #[serde(default, deserialize_with = "present")]
    pub daily_tokens: Option<Option<u64>>,
    #[serde(default, deserialize_with = "present")]
    pub concurrent_streams: Option<Option<u32>>,
    /// Unix seconds, or `null` for no expiry.
    #[serde(default, deserialize_with = "present")]
    pub expires_at: Option<Option<i64>>,
}

fn scopes(list: &[String]) -> Result<Vec<Scope>, ApiError> {
    let joined = list.join(",");
    let scopes = Scope::parse_list(&joined).map_err(|e| ApiError::invalid("scopes", e))?;
    if scopes.is_empty() {
        return Err(ApiError::invalid("scopes", "a key needs at least one scope"));
    }
    Ok(scopes)
}

fn positive<T: PartialEq + Default>(name: &'static str, v: Option<T>) -> Result<Option<T>, ApiError> {
    match v {
        Some(x) if x == T::default() => Err(ApiError::invalid(name, "must be at least 1 (null = no limit)")),
        other => Ok(other),
    }
}

fn key_not_found(id: &str) -> ApiError {
    ApiError::NotFound {
        param: Some("key_id"),
        message: format!("API key '{id}' not found."),
        code: "not_found",
    }
}

async fn list(
    _admin: AdminPrincipal,
    State(state): State<AppState>,
) -> Result<axum::Json<KeyList>, ApiError> {
    let keys = state.store.list_api_keys().await?;
    Ok(axum::Json(KeyList {
        object: "list".into(),
        data: keys.iter().map(KeyObject::from_key).collect(),
    }))
}

async fn create(
    admin: AdminPrincipal,
    State(state): State<AppState>,
    Json(req): Json<CreateKey>,
) -> Result<axum::Json<KeyObject>, ApiError> {
    if req.name.trim().is_empty() {
        return Err(ApiError::invalid("name", "must not be empty"));
    }
    let limits = KeyLimits {
        requests_per_minute: positive("requests_per_minute", req.requests_per_minute)?,
        tokens_per_minute: positive("tokens_per_minute", req.tokens_per_minute)?,
        daily_tokens: positive("daily_tokens", req.daily_tokens)?,
        concurrent_streams: positive("concurrent_streams", req.concurrent_streams)?,
    };
    let now = state.clock.now_secs();
    let expires_at = match req.expires_in {
        Some(0) => return Err(ApiError::invalid("expires_in", "must be at least 1 second")),
        Some(s) => Some(now.saturating_add(i64::try_from(s).unwrap_or(i64::MAX))),
        None => None,
    };
    let (key, secret) = ApiKey::generate(req.name.trim(), scopes(&req.scopes)?, limits, now, expires_at);
    state.store.create_api_key(&key).await?;
    tracing::info!(moltbot.admin.key_id = %admin.principal().key_id, moltbot.api_key.id = %key.id,
        "API key created");
    let mut obj = KeyObject::from_key(&key);
    obj.secret = Some(secret);
    Ok(axum::Json(obj))
}

async fn retrieve(
    _admin: AdminPrincipal,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<axum::Json<KeyObject>, ApiError> {
    let key = state
        .store
        .get_api_key(&id)
        .await?
        .ok_or_else(|| key_not_found(&id))?;
    Ok(axum::Json(KeyObject::from_key(&key)))
}

async fn update(
    admin: AdminPrincipal,
    State(state): State<AppState>,
    Path(id): Path<String>,
    Json(req): Json<PatchKey>,
) -> Result<axum::Json<KeyObject>, ApiError> {
    let update = ApiKeyUpdate {
        name: req.name.map(|n| n.trim().to_owned()).filter(|n| !n.is_empty()),
        scopes: req.scopes.as_deref().map(scopes).transpose()?,
        requests_per_minute: req
            .requests_per_minute
            .map(|v| positive("requests_per_minute", v))
            .transpose()?,
        tokens_per_minute: req
            .tokens_per_minute
            .map(|v| positive("tokens_per_minute", v))
            .transpose()?,
        daily_tokens: req
            .daily_tokens
            .map(|v| positive("daily_tokens", v))
            .transpose()?,
        concurrent_streams: req
            .concurrent_streams
            .map(|v| positive("concurrent_streams", v))
            .transpose()?,
        expires_at: req.expires_at,
    };
    let key = state
        .store
        .update_api_key(&id, &update)
        .await?
        .ok_or_else(|| key_not_found(&id))?;
    state.auth.forget(&key).await;
    tracing::info!(moltbot.admin.key_id = %admin.principal().key_id, moltbot.api_key.id = %key.id,
        "API key updated");
    Ok(axum::Json(KeyObject::from_key(&key)))
}

async fn revoke(
    admin: AdminPrincipal,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<axum::Json<KeyObject>, ApiError> {
    let before = state
        .store
        .get_api_key(&id)
        .await?
        .ok_or_else(|| key_not_found(&id))?;
    moltbot_core::webhooks::revoke_api_key(state.store.as_ref(), &before, state.clock.now_millis()).await?;
    let key = state
        .store
        .get_api_key(&id)
        .await?
        .ok_or_else(|| key_not_found(&id))?;
    state.auth.forget(&key).await;
    tracing::info!(moltbot.admin.key_id = %admin.principal().key_id, moltbot.api_key.id = %key.id,
        "API key revoked");
    Ok(axum::Json(KeyObject::from_key(&key)))
}
