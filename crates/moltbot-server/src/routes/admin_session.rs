//! Admin console sessions (admin listener): `POST /admin/api/session` signs in with an admin API key
//! and sets the `moltbot_admin` cookie, `GET` returns the session (and its CSRF token, for a reloaded
//! page), `DELETE` signs out. See [`crate::auth::session`] for the token, CSRF and sign-out design.

use axum::Router;
use axum::extract::State;
use axum::http::{Extensions, HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::{Deserialize, Serialize};

use crate::auth::session::{self, AdminSession};
use crate::auth::{AdminPrincipal, AuthError};
use crate::error::ApiError;
use crate::extract::Json;
use crate::state::AppState;

pub const PATH: &str = "/admin/api/session";

pub fn router() -> Router<AppState> {
    Router::new().route(PATH, get(current).post(sign_in).delete(sign_out))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignIn {
    pub api_key: String,
}

#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct SessionKey {
    pub id: String,
    pub name: String,
}

#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct SessionObject {
    pub object: String,
    pub csrf_token: String,
    /// Unix seconds.
    pub expires_at: i64,
    pub key: SessionKey,
}

impl SessionObject {
    fn new(session: &AdminSession, key_name: &str) -> Self {
        Self {
            object: "admin_session".into(),
            csrf_token: session.csrf_token.clone(),
            expires_at: session.expires_at,
            key: SessionKey {
                id: session.key_id.clone(),
                name: key_name.to_owned(),
            },
        }
    }
}

/// `Secure` when the request reached us over TLS: our own TLS listener, or a trusted proxy's
/// `X-Forwarded-Proto: https`.
fn secure(state: &AppState, extensions: &Extensions, headers: &HeaderMap) -> bool {
    crate::security::request_is_tls(&state.config.server.trusted_proxies, extensions, headers)
}

fn with_cookie(body: impl IntoResponse, cookie: HeaderValue) -> Response {
    let mut resp = body.into_response();
    resp.headers_mut().insert(header::SET_COOKIE, cookie);
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

async fn sign_in(
    State(state): State<AppState>,
    extensions: Extensions,
    headers: HeaderMap,
    Json(body): Json<SignIn>,
) -> Result<Response, ApiError> {
    if body.api_key.trim().is_empty() {
        return Err(ApiError::invalid("api_key", "must not be empty"));
    }
    let (token, session, key) = session::sign_in(&state, &extensions, &headers, &body.api_key).await?;
    let cookie = session::set_cookie(&token, session.max_age(), secure(&state, &extensions, &headers));
    Ok(with_cookie(
        axum::Json(SessionObject::new(&session, &key.name)),
        cookie,
    ))
}

/// The session of this request's cookie (401 without one, also with a Bearer credential).
fn require_session(extensions: &Extensions) -> Result<&AdminSession, ApiError> {
    extensions
        .get::<AdminSession>()
        .ok_or_else(|| AuthError::InvalidSession("no_session").into())
}

async fn current(admin: AdminPrincipal, extensions: Extensions) -> Result<Response, ApiError> {
    let session = require_session(&extensions)?;
    let mut resp = axum::Json(SessionObject::new(session, &admin.principal().key_name)).into_response();
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(resp)
}

#[derive(Debug, Serialize)]
struct Deleted {
    object: &'static str,
}

/// Sign out: the session id goes on the denylist until it expires, the cookie is cleared. A request
/// authenticated with a Bearer key just clears the cookie.
async fn sign_out(
    State(state): State<AppState>,
    _admin: AdminPrincipal,
    extensions: Extensions,
    headers: HeaderMap,
) -> Response {
    if let Some(session) = extensions.get::<AdminSession>() {
        state.auth.end_session(session).await;
    }
    with_cookie(
        axum::Json(Deleted {
            object: "admin_session.deleted",
        }),
        session::set_cookie("", 0, secure(&state, &extensions, &headers)),
    )
}
