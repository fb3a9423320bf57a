//! `POST /v1/auth/token`: exchange an API key (in the Authorization header) for a short-lived JWT.

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::routing::post;
use moltbot_api::ErrorEnvelope;
use moltbot_core::Scope;
use serde::{Deserialize, Serialize};

use crate::error::ApiError;
use crate::extract::parse_json;
use crate::principal::Principal;
use crate::state::AppState;

pub const PATH: &str = "/v1/auth/token";

pub fn router() -> Router<AppState> {
    Router::new().route(PATH, post(create))
}

/// Optional narrowing of the token.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenRequest {
    /// Lifetime in seconds (default `auth.token_ttl`, at most `auth.max_token_ttl`).
    pub expires_in: Option<u64>,
    /// A subset of the key's scopes (default: all of them).
    pub scopes: Option<Vec<String>>,
}

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TokenResponse {
    pub access_token: String,
    /// Always `Bearer`.
    pub token_type: String,
    /// Seconds until the token expires.
    pub expires_in: i64,
}

/// Issue an access token for the API key in the Authorization header.
#[utoipa::path(post, path = "/v1/auth/token", tag = "auth", request_body(content = Option<TokenRequest>),
    responses(
        (status = 200, body = TokenResponse),
        (status = 401, description = "Missing or invalid API key", body = ErrorEnvelope),
        (status = 403, description = "A token was presented instead of an API key, or a scope the key lacks", body = ErrorEnvelope),
    ))]
pub async fn create(
    State(state): State<AppState>,
    principal: Principal,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<axum::Json<TokenResponse>, ApiError> {
    if principal.credential != moltbot_core::Credential::ApiKey {
        return Err(ApiError::Forbidden {
            message: "Access tokens are issued for API keys only; send an API key, not a token.".into(),
            code: "api_key_required",
        });
    }
    let req: TokenRequest = if body.iter().all(u8::is_ascii_whitespace) {
        TokenRequest::default()
    } else {
        parse_json(&body)?
    };
    let scopes = req
        .scopes
        .map(|list| {
            list.iter()
                .map(|s| {
                    Scope::parse(s).ok_or_else(|| ApiError::invalid("scopes", format!("unknown scope `{s}`")))
                })
                .collect::<Result<Vec<_>, _>>()
        })
        .transpose()?;
    // The key as stored now (the principal's copy may be a few seconds old; that is fine here).
    let secret = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .map(|(_, s)| s.trim())
        .unwrap_or_default();
    let key = state.auth.key_for_secret(secret).await.map_err(ApiError::from)?;
    let (token, claims) = state.auth.issue_token(
        &key,
        scopes.as_deref(),
        req.expires_in.map(std::time::Duration::from_secs),
    )?;
    Ok(axum::Json(TokenResponse {
        access_token: token,
        token_type: "Bearer".into(),
        expires_in: claims.exp - claims.iat,
    }))
}
