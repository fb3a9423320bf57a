//! Admin console sessions: a signed, stateless cookie instead of an `Authorization` header.
//!
//! `POST /admin/api/session` with an admin API key issues an HS256 token signed with the access-token
//! secret (`auth.jwt_secret`, rotation included) but with its own header type ([`jwt::SESSION_TYP`])
//! and audience, so it is never accepted as a Bearer access token, and an access token is never
//! accepted as a session. The token carries the key id, a random session id and the expiry
//! (`admin.session_ttl`, capped by the key's expiry); any replica with the same secret verifies it.
//!
//! Every request re-reads the key (through the key cache, like access tokens), so revoking or
//! expiring the key ends its sessions. The CSRF token is `HMAC(secret-derived key, session id)`,
//! compared in constant time; a cookie-authenticated request with an unsafe method must send it in
//! `X-CSRF-Token`. Sign-out puts the session id on a denylist until the session would have expired:
//! in memory, and in cluster mode also in Redis, so every replica refuses it (while Redis is
//! unavailable, only the replica that signed it out does) — the cookie is cleared in the browser
//! either way.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use axum::http::{Extensions, HeaderMap, HeaderValue, Method, header};
use moltbot_core::{ApiKey, Credential, Principal, Scope};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use super::{Auth, AuthError, jwt};
use crate::error::ApiError;
use crate::state::AppState;

/// The cookie's name.
pub const COOKIE: &str = "moltbot_admin";
/// The header a cookie-authenticated unsafe request carries the CSRF token in.
pub const CSRF_HEADER: &str = "x-csrf-token";
const AUDIENCE: &str = "moltbot-admin";
/// Denylist entries kept at most (expired ones are dropped first).
const MAX_REVOKED: usize = 100_000;

#[derive(Debug, Serialize, Deserialize)]
struct SessionClaims {
    iss: String,
    aud: String,
    /// The API key id.
    sub: String,
    /// The random session id.
    sid: String,
    iat: i64,
    exp: i64,
}

/// An authenticated admin session; the authentication layer puts it into the request extensions next
/// to the [`Principal`] when the request came with the cookie.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminSession {
    pub session_id: String,
    pub key_id: String,
    /// Unix seconds.
    pub issued_at: i64,
    /// Unix seconds.
    pub expires_at: i64,
    pub csrf_token: String,
}

impl AdminSession {
    /// The session's lifetime, for the cookie's `Max-Age` at sign-in: from its issue, not from a second
    /// reading of the clock (which may have moved on by a second).
    pub fn max_age(&self) -> i64 {
        (self.expires_at - self.issued_at).max(0)
    }
}

/// Session settings and the sign-out denylist (session id → expiry, unix seconds).
pub struct Sessions {
    pub ttl: Duration,
    revoked: Mutex<HashMap<String, i64>>,
    /// Cluster mode: the denylist is shared through Redis (`sess:<id>` until the session's expiry).
    shared: Option<std::sync::Arc<crate::cluster::Shared>>,
}

impl Sessions {
    pub fn new(ttl: Duration, shared: Option<std::sync::Arc<crate::cluster::Shared>>) -> Self {
        Self {
            ttl,
            revoked: Mutex::new(HashMap::new()),
            shared,
        }
    }

    async fn revoke(&self, sid: &str, expires_at: i64, now: i64) {
        self.revoke_local(sid, expires_at, now);
        if let Some(shared) = &self.shared {
            let key = shared.key(&format!("sess:{sid}"));
            let _ = shared
                .run("session_revoke", |mut c| async move {
                    redis::cmd("SET")
                        .arg(key)
                        .arg(1)
                        .arg("EXAT")
                        .arg(expires_at.max(now + 1))
                        .query_async::<()>(&mut c)
                        .await
                })
                .await;
        }
    }

    async fn is_revoked(&self, sid: &str) -> bool {
        if super::lock(&self.revoked).contains_key(sid) {
            return true;
        }
        let Some(shared) = &self.shared else {
            return false;
        };
        let key = shared.key(&format!("sess:{sid}"));
        shared
            .run("session_check", |mut c| async move {
                redis::cmd("EXISTS").arg(key).query_async::<bool>(&mut c).await
            })
            .await
            .unwrap_or(false)
    }

    fn revoke_local(&self, sid: &str, expires_at: i64, now: i64) {
        let mut revoked = super::lock(&self.revoked);
        revoked.retain(|_, exp| *exp > now);
        if revoked.len() < MAX_REVOKED {
            revoked.insert(sid.to_owned(), expires_at);
        } else {
            tracing::warn!(
                "admin session denylist is full; a signed-out session stays valid until it expires"
            );
        }
    }
}

impl Auth {
    /// Start a session for an (admin) key: the cookie value and the session.
    pub fn issue_session(&self, key: &ApiKey) -> Result<(String, AdminSession), ApiError> {
        let now = self.clock.now_secs();
        let ttl = i64::try_from(self.sessions.ttl.as_secs()).unwrap_or(i64::MAX);
        let exp = now.saturating_add(ttl).min(key.expires_at.unwrap_or(i64::MAX));
        let mut sid = [0u8; 32];
        rand::rng().fill_bytes(&mut sid);
        let claims = SessionClaims {
            iss: jwt::ISSUER.to_owned(),
            aud: AUDIENCE.to_owned(),
            sub: key.id.clone(),
            sid: hex::encode(sid),
            iat: now,
            exp,
        };
        let token = self
            .jwt
            .sign(jwt::SESSION_TYP, &claims)
            .map_err(|e| ApiError::internal(format!("cannot sign an admin session: {e}")))?;
        let csrf_token = self
            .jwt
            .hmac_hex(self.jwt.active_kid(), claims.sid.as_bytes())
            .ok_or_else(|| ApiError::internal("no CSRF key for the active signing secret"))?;
        Ok((
            token,
            AdminSession {
                session_id: claims.sid,
                key_id: claims.sub,
                issued_at: now,
                expires_at: exp,
                csrf_token,
            },
        ))
    }

    /// Authenticate a session cookie: signature, audience, expiry, denylist, and the key (still active).
    pub async fn authenticate_session(&self, token: &str) -> Result<(Principal, AdminSession), AuthError> {
        let invalid = AuthError::InvalidSession;
        let (kid, claims) = self
            .jwt
            .decode::<SessionClaims>(token, Some(jwt::SESSION_TYP))
            .map_err(|_| invalid("session_signature"))?;
        if claims.iss != jwt::ISSUER || claims.aud != AUDIENCE {
            return Err(invalid("session_signature"));
        }
        let now = self.clock.now_secs();
        if now >= claims.exp {
            return Err(invalid("session_expired"));
        }
        if self.sessions.is_revoked(&claims.sid).await {
            return Err(invalid("session_revoked"));
        }
        let key = self
            .key_by_id(&claims.sub)
            .await
            .map_err(AuthError::Store)?
            .filter(|k| k.is_active(now))
            .ok_or(invalid("session_key_inactive"))?;
        let csrf_token = self
            .jwt
            .hmac_hex(&kid, claims.sid.as_bytes())
            .ok_or(invalid("session_signature"))?;
        self.touch(&key.id);
        // Like an access token: derived from a key, cannot mint tokens. The [`AdminSession`] extension
        // tells handlers that the cookie authenticated the request.
        let principal = self.principal(&key, key.scopes.clone(), Credential::AccessToken);
        Ok((
            principal,
            AdminSession {
                session_id: claims.sid,
                key_id: claims.sub,
                issued_at: claims.iat,
                expires_at: claims.exp,
                csrf_token,
            },
        ))
    }

    /// Sign a session out: on this replica, and on every replica in cluster mode (see the module docs).
    pub async fn end_session(&self, session: &AdminSession) {
        self.sessions
            .revoke(&session.session_id, session.expires_at, self.clock.now_secs())
            .await;
    }
}

/// The session cookie's value, if the request has one.
pub fn cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.trim_matches('"'))
        .filter(|v| !v.is_empty())
}

/// `Set-Cookie` for a session token (`max_age` 0 clears it). `secure` when the request came over TLS.
pub fn set_cookie(token: &str, max_age: i64, secure: bool) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    let value = format!("{COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/; Max-Age={max_age}{secure}");
    // A token is base64url and dots: always a valid header value.
    HeaderValue::from_str(&value).unwrap_or_else(|_| HeaderValue::from_static("moltbot_admin=; Max-Age=0"))
}

/// Whether a method changes state (and so needs the CSRF token with a cookie).
fn is_unsafe(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// A cookie-authenticated request with an unsafe method must carry the session's CSRF token.
pub fn check_csrf(method: &Method, headers: &HeaderMap, session: &AdminSession) -> Result<(), ApiError> {
    if !is_unsafe(method) {
        return Ok(());
    }
    let sent = headers
        .get(CSRF_HEADER)
        .map(HeaderValue::as_bytes)
        .unwrap_or_default();
    if bool::from(sent.ct_eq(session.csrf_token.as_bytes())) {
        return Ok(());
    }
    metrics::counter!(crate::telemetry::AUTH_FAILURES, "reason" => "csrf_token_invalid").increment(1);
    Err(ApiError::Forbidden {
        message: "This request is authenticated by the admin session cookie and needs the session's \
                  CSRF token in the X-CSRF-Token header."
            .into(),
        code: "csrf_token_invalid",
    })
}

/// Sign-in with the API key from the request body: locked-out addresses get 429, a wrong key 401 (and
/// counts toward the lockout like any failed authentication), a key without `admin` 403.
pub async fn sign_in(
    state: &AppState,
    extensions: &Extensions,
    headers: &HeaderMap,
    secret: &str,
) -> Result<(String, AdminSession, ApiKey), ApiError> {
    let auth = &state.auth;
    let ip = super::lockout::client_ip(super::peer_ip(extensions), headers, &auth.trusted_proxies);
    if let Some(remaining) = auth.lockout.locked(ip).await {
        return Err(ApiError::TooManyRequests {
            kind: "requests",
            message: "Too many failed authentication attempts from this address; try again later.".into(),
            code: "too_many_auth_failures",
            retry_after: Some(remaining),
            retry: true,
        });
    }
    let key = match auth.key_for_secret(secret.trim()).await {
        Ok(key) => key,
        Err(e) => {
            super::failed(state, ip, &e).await;
            return Err(match e {
                AuthError::Store(_) => e.into(),
                _ => ApiError::Unauthorized {
                    message: "Incorrect API key provided.".into(),
                    code: "invalid_api_key",
                },
            });
        }
    };
    if !key.has_scope(Scope::Admin) {
        return Err(ApiError::Forbidden {
            message: "This API key does not have the `admin` scope needed for the admin console.".into(),
            code: "insufficient_scope",
        });
    }
    auth.touch(&key.id);
    let (token, session) = auth.issue_session(&key)?;
    Ok((token, session, key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_cookie_among_others() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; moltbot_admin=tok.en.x ; b=2"),
        );
        assert_eq!(cookie(&h), Some("tok.en.x"));
        h.insert(header::COOKIE, HeaderValue::from_static("moltbot_admin_other=1"));
        assert_eq!(cookie(&h), None);
    }

    #[test]
    fn csrf_only_for_unsafe_methods() {
        let s = AdminSession {
            session_id: "s".into(),
            key_id: "k".into(),
            issued_at: 0,
            expires_at: 0,
            csrf_token: "abc".into(),
        };
        let mut h = HeaderMap::new();
        assert!(check_csrf(&Method::GET, &h, &s).is_ok());
        assert!(check_csrf(&Method::POST, &h, &s).is_err());
        h.insert(CSRF_HEADER, HeaderValue::from_static("abd"));
        assert!(check_csrf(&Method::DELETE, &h, &s).is_err());
        h.insert(CSRF_HEADER, HeaderValue::from_static("abc"));
        assert!(check_csrf(&Method::PATCH, &h, &s).is_ok());
    }

    #[test]
    fn cookie_attributes() {
        let v = set_cookie("t", 60, true);
        assert_eq!(
            v.to_str().unwrap(),
            "moltbot_admin=t; HttpOnly; SameSite=Strict; Path=/; Max-Age=60; Secure"
        );
        assert!(!set_cookie("t", 0, false).to_str().unwrap().contains("Secure"));
    }
}
