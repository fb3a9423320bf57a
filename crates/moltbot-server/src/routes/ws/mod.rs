//! WebSocket chat: `POST /v1/ws/ticket` and `GET /v1/ws` (subprotocol `moltbot.v1`).
//!
//! Browsers cannot send `Authorization` on a WebSocket, so the auth middleware lets `/v1/ws` through
//! without credentials ([`crate::auth::Policy::CHAT`]'s `optional`) and [`upgrade`] authenticates
//! before upgrading, in this order: an `Authorization` header already checked by the middleware
//! (non-browser clients), a one-time `?ticket=` ([`ticket`]), or `Sec-WebSocket-Protocol:
//! moltbot.v1, bearer.<API key or access token>`. Failures are the usual 401 envelope and count
//! toward the lockout. The `Origin` of a browser must be the request's own origin or be listed in
//! `server.cors_origins` (403 `origin_not_allowed` otherwise).
//!
//! The protocol itself (frames, chats, liveness, backpressure) is in [`session`].

mod frames;
mod session;
pub mod ticket;

use std::net::IpAddr;
use std::sync::Arc;

use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{Extension, FromRequestParts, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::middleware::from_fn_with_state;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use moltbot_api::ErrorEnvelope;
use moltbot_core::{Credential, Principal, Scope};
use serde::Serialize;

use crate::auth::{self, AuthError};
use crate::error::ApiError;
use crate::state::AppState;
use ticket::{Grant, IssueError, TicketStore};

pub const PATH: &str = "/v1/ws";
pub const TICKET_PATH: &str = "/v1/ws/ticket";
/// The subprotocol the server selects when the client offers it.
pub const PROTOCOL: &str = "moltbot.v1";
/// `Sec-WebSocket-Protocol` entry carrying a credential: `bearer.<API key or access token>`.
pub const BEARER_PROTOCOL_PREFIX: &str = "bearer.";

pub fn router(state: &AppState) -> Router<AppState> {
    let tickets = Arc::new(TicketStore::new(
        state.auth.clock().clone(),
        state.auth.cluster().cloned(),
    ));
    Router::new()
        .route(
            TICKET_PATH,
            post(create_ticket).route_layer(from_fn_with_state(Scope::Chat, auth::require_scope)),
        )
        .route(PATH, get(upgrade))
        .layer(Extension(tickets))
}

/// `POST /v1/ws/ticket`'s answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct WsTicket {
    /// Always `ws_ticket`.
    pub object: String,
    /// Pass as `GET /v1/ws?ticket=…`, once, within `expires_in` seconds.
    pub ticket: String,
    pub expires_in: i64,
}

/// Create a one-time WebSocket ticket.
///
/// The ticket carries the caller's key id, scopes and limits; it is valid for 30 seconds, once, and
/// only on the replica that issued it (use the `bearer.<credential>` subprotocol across replicas).
#[utoipa::path(
    post,
    path = "/v1/ws/ticket",
    tag = "chat",
    responses(
        (status = 200, description = "A one-time ticket for `GET /v1/ws?ticket=…`", body = WsTicket),
        (status = 401, description = "Missing or invalid credentials", body = ErrorEnvelope),
        (status = 403, description = "The credential lacks the `chat` scope", body = ErrorEnvelope),
        (status = 429, description = "Too many outstanding tickets", body = ErrorEnvelope),
    )
)]
pub async fn create_ticket(
    State(state): State<AppState>,
    Extension(tickets): Extension<Arc<TicketStore>>,
    principal: crate::principal::Principal,
    headers: HeaderMap,
) -> Result<Json<WsTicket>, ApiError> {
    let valid_until = expiry(&state, &principal, header_credential(&headers));
    let grant = Grant {
        principal: principal.0,
        valid_until,
    };
    let ticket = tickets.issue(grant).await.map_err(|e| match e {
        IssueError::PerKey => ApiError::TooManyRequests {
            kind: "requests",
            message: "Too many unused WebSocket tickets for this API key; use or let them expire first."
                .into(),
            code: "rate_limit_exceeded",
            retry_after: Some(std::time::Duration::from_secs(ticket::TTL_SECS as u64)),
            retry: true,
        },
        IssueError::Full => ApiError::Unavailable {
            message: "Too many unused WebSocket tickets on this server; try again shortly.".into(),
            code: "service_unavailable",
            retry_after: Some(std::time::Duration::from_secs(5)),
        },
    })?;
    Ok(Json(WsTicket {
        object: "ws_ticket".into(),
        ticket,
        expires_in: ticket::TTL_SECS,
    }))
}

/// The credential of an `Authorization: Bearer …` header.
fn header_credential(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .split_once(' ')
        .map(|(_, c)| c.trim())
}

/// When the principal's credential stops being valid: an access token's `exp` (`None` for API keys,
/// whose revocation and expiry are checked per chat).
fn expiry(state: &AppState, p: &Principal, credential: Option<&str>) -> Option<i64> {
    if p.credential != Credential::AccessToken {
        return None;
    }
    token_expiry(state, credential?)
}

/// When an access token expires (`None` for anything that is not a valid token).
fn token_expiry(state: &AppState, credential: &str) -> Option<i64> {
    let now = state.auth.clock().now_secs();
    state
        .auth
        .jwt
        .verify(credential, now, state.config.auth.clock_leeway)
        .ok()
        .map(|c| c.exp)
}

/// The `bearer.<credential>` entry of `Sec-WebSocket-Protocol`, if any.
fn bearer_protocol(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .find_map(|p| p.strip_prefix(BEARER_PROTOCOL_PREFIX))
        .map(str::to_owned)
}

/// The `ticket` query parameter, if any.
fn query_ticket(uri: &Uri) -> Option<String> {
    let query = uri.query()?;
    url_param(query, "ticket")
}

fn url_param(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        // Tickets are hex: no decoding needed, and anything else simply does not match.
        (k == name).then(|| v.to_owned())
    })
}

fn unauthorized(message: &str, code: &'static str) -> ApiError {
    ApiError::Unauthorized {
        message: message.into(),
        code,
    }
}

/// Whether a browser's `Origin` may open a socket: no `Origin` (not a browser), the request's own
/// origin (scheme and host; `X-Forwarded-Proto`/`X-Forwarded-Host` count only from trusted proxies),
/// or an origin listed in `server.cors_origins` (`*` allows any).
pub fn origin_allowed(
    headers: &HeaderMap,
    peer: IpAddr,
    trusted: &[ipnet::IpNet],
    allowed: &[String],
) -> bool {
    origin_allowed_over(headers, peer, false, trusted, allowed)
}

/// [`origin_allowed`] for a request that arrived on one of our own TLS listeners (`tls`): its own
/// origin is then `https://…`.
pub fn origin_allowed_over(
    headers: &HeaderMap,
    peer: IpAddr,
    tls: bool,
    trusted: &[ipnet::IpNet],
    allowed: &[String],
) -> bool {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return true;
    };
    let Ok(origin) = origin.to_str() else {
        return false;
    };
    let origin = origin.trim();
    if allowed
        .iter()
        .any(|a| a == "*" || a.trim_end_matches('/').eq_ignore_ascii_case(origin))
    {
        return true;
    }
    let via_proxy = trusted.iter().any(|net| net.contains(&peer));
    // The nearest proxy appends last: take the right-most value.
    let forwarded = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.rsplit(',').next())
            .map(str::trim)
            .filter(|v| !v.is_empty())
    };
    let own_scheme = if tls { "https" } else { "http" };
    let scheme = if via_proxy {
        forwarded("x-forwarded-proto").unwrap_or(own_scheme)
    } else {
        own_scheme
    };
    let host = if via_proxy {
        forwarded("x-forwarded-host")
    } else {
        None
    };
    let Some(host) = host.or_else(|| headers.get(header::HOST).and_then(|v| v.to_str().ok())) else {
        return false;
    };
    same_origin(origin, scheme, host)
}

fn default_port(scheme: &str) -> Option<u16> {
    match scheme.to_ascii_lowercase().as_str() {
        "http" | "ws" => Some(80),
        "https" | "wss" => Some(443),
        _ => None,
    }
}

/// `origin` (`scheme://host[:port]`) names the same scheme, host and port as `scheme` + `host`.
fn same_origin(origin: &str, scheme: &str, host: &str) -> bool {
    let Ok(uri) = origin.parse::<Uri>() else {
        return false;
    };
    let Ok(authority) = host.parse::<axum::http::uri::Authority>() else {
        return false;
    };
    let (Some(o_scheme), Some(o_host)) = (uri.scheme_str(), uri.host()) else {
        return false;
    };
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        return false;
    }
    let o_port = uri.port_u16().or_else(|| default_port(o_scheme));
    let port = authority.port_u16().or_else(|| default_port(scheme));
    o_scheme.eq_ignore_ascii_case(scheme)
        && o_host.eq_ignore_ascii_case(authority.host())
        && o_port.is_some()
        && o_port == port
}

/// Open a WebSocket chat.
///
/// Authenticate with `?ticket=` (from `POST /v1/ws/ticket`) or
/// `Sec-WebSocket-Protocol: moltbot.v1, bearer.<API key or access token>`; the server selects
/// `moltbot.v1`. See the README's "WebSocket chat" section for the messages.
#[utoipa::path(
    get,
    path = "/v1/ws",
    tag = "chat",
    params(("ticket" = Option<String>, Query, description = "A one-time ticket from POST /v1/ws/ticket")),
    responses(
        (status = 101, description = "Switching to the WebSocket protocol `moltbot.v1`"),
        (status = 400, description = "Not a WebSocket upgrade request", body = ErrorEnvelope),
        (status = 401, description = "Missing or invalid credentials or ticket", body = ErrorEnvelope),
        (status = 403, description = "Origin not allowed, or the credential lacks the `chat` scope", body = ErrorEnvelope),
        (status = 429, description = "Rate limited or locked out", body = ErrorEnvelope),
        (status = 503, description = "The server is shutting down", body = ErrorEnvelope),
    )
)]
pub async fn upgrade(
    State(state): State<AppState>,
    Extension(tickets): Extension<Arc<TicketStore>>,
    req: Request,
) -> Response {
    let (mut parts, _body) = req.into_parts();
    let peer = auth::peer_ip(&parts.extensions);
    let cfg = &state.config.server;
    if state.readiness.is_draining() {
        return ApiError::Unavailable {
            message: "The server is shutting down; reconnect to another instance.".into(),
            code: "service_unavailable",
            retry_after: Some(std::time::Duration::from_secs(1)),
        }
        .into_response();
    }
    let tls = crate::tls::arrived_over_tls(&parts.extensions);
    if !origin_allowed_over(&parts.headers, peer, tls, &cfg.trusted_proxies, &cfg.cors_origins) {
        tracing::warn!(client.ip = %peer, "WebSocket refused: Origin not allowed");
        return ApiError::Forbidden {
            message: "This Origin may not open a WebSocket here: it must be the server's own origin or be \
                      listed in server.cors_origins."
                .into(),
            code: "origin_not_allowed",
        }
        .into_response();
    }
    let ip = auth::lockout::client_ip(peer, &parts.headers, &cfg.trusted_proxies);
    let (principal, valid_until) = match authenticate(&state, &tickets, &parts, ip).await {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    if !principal.has_scope(Scope::Chat) {
        return ApiError::Forbidden {
            message: "You have insufficient permissions for this operation. Missing scope: chat.".into(),
            code: "insufficient_scope",
        }
        .into_response();
    }
    // The upgrade is an authenticated request on the dialog listener: it counts toward the rate.
    if parts.extensions.get::<Principal>().is_none()
        && let Err(refused) = auth::limits::check_requests(&state.auth, &principal).await
    {
        return refused;
    }
    let ws = match WebSocketUpgrade::from_request_parts(&mut parts, &state).await {
        Ok(ws) => ws,
        Err(rejection) => {
            let body = ErrorEnvelope::new(
                "invalid_request_error",
                format!(
                    "{PATH} needs a WebSocket upgrade request: {}",
                    rejection.body_text()
                ),
                None,
                Some("websocket_upgrade_required"),
            );
            let status = match rejection.status() {
                s if s.is_client_error() => s,
                _ => StatusCode::BAD_REQUEST,
            };
            return (status, Json(body)).into_response();
        }
    };
    let session = session::Session {
        state: state.clone(),
        principal,
        valid_until,
    };
    ws.protocols([PROTOCOL])
        .max_message_size(state.body_limit)
        .max_frame_size(state.body_limit)
        .on_failed_upgrade(|e| tracing::warn!(error = %e, "WebSocket upgrade failed"))
        .on_upgrade(move |socket| session::run(socket, session))
}

/// Who opens the socket, and until when their credential is valid.
async fn authenticate(
    state: &AppState,
    tickets: &TicketStore,
    parts: &axum::http::request::Parts,
    ip: IpAddr,
) -> Result<(Principal, Option<i64>), ApiError> {
    if let Some(p) = parts.extensions.get::<Principal>() {
        // `Authorization` was sent and checked by the middleware (a non-browser client).
        let exp = expiry(state, p, header_credential(&parts.headers));
        return Ok((p.clone(), exp));
    }
    if let Some(t) = query_ticket(&parts.uri) {
        return match tickets.redeem(&t).await {
            Some(grant) => Ok((grant.principal, grant.valid_until)),
            None => {
                auth::failed(state, ip, &AuthError::InvalidToken("invalid_ws_ticket")).await;
                Err(unauthorized(
                    "The WebSocket ticket is invalid, expired or already used; get a new one from \
                     POST /v1/ws/ticket.",
                    "invalid_ticket",
                ))
            }
        };
    }
    if let Some(credential) = bearer_protocol(&parts.headers) {
        let value = HeaderValue::from_str(&format!("Bearer {credential}"))
            .map_err(|_| AuthError::InvalidKey("malformed_key"));
        let result = match value {
            Ok(v) => state.auth.authenticate(Some(&v)).await,
            Err(e) => Err(e),
        };
        return match result {
            Ok(p) => {
                let exp = expiry(state, &p, Some(&credential));
                Ok((p, exp))
            }
            Err(e) => {
                auth::failed(state, ip, &e).await;
                Err(e.into())
            }
        };
    }
    auth::failed(state, ip, &AuthError::Missing).await;
    Err(unauthorized(
        "You didn't provide credentials. Open the WebSocket with ?ticket=<ticket from POST /v1/ws/ticket> \
         or Sec-WebSocket-Protocol: moltbot.v1, bearer.<YOUR_KEY>.",
        "missing_api_key",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, v.parse().unwrap());
        }
        h
    }

    const LOCAL: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    #[test]
    fn origin_must_match_the_host() {
        let ok = |h: &HeaderMap| origin_allowed(h, LOCAL, &[], &[]);
        assert!(ok(&headers(&[("host", "127.0.0.1:8000")])), "no Origin");
        assert!(ok(&headers(&[
            ("host", "127.0.0.1:8000"),
            ("origin", "http://127.0.0.1:8000")
        ])));
        assert!(ok(&headers(&[
            ("host", "Chat.Example.com"),
            ("origin", "http://chat.example.com:80")
        ])));
        assert!(!ok(&headers(&[
            ("host", "127.0.0.1:8000"),
            ("origin", "http://127.0.0.1:8001")
        ])));
        assert!(!ok(&headers(&[
            ("host", "127.0.0.1:8000"),
            ("origin", "https://127.0.0.1:8000")
        ])));
        assert!(!ok(&headers(&[
            ("host", "a.example"),
            ("origin", "http://a.example.evil")
        ])));
        assert!(!ok(&headers(&[("host", "a.example"), ("origin", "null")])));
    }

    #[test]
    fn forwarded_headers_count_only_from_trusted_proxies() {
        let h = headers(&[
            ("host", "10.0.0.5:7443"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "chat.example.com"),
            ("origin", "https://chat.example.com"),
        ]);
        assert!(!origin_allowed(&h, LOCAL, &[], &[]));
        let trusted = ["127.0.0.1/32".parse().unwrap()];
        assert!(origin_allowed(&h, LOCAL, &trusted, &[]));
    }

    #[test]
    fn listed_origins_are_allowed() {
        let h = headers(&[("host", "api.example.com"), ("origin", "https://app.example.com")]);
        assert!(!origin_allowed(
            &h,
            LOCAL,
            &[],
            &["https://other.example.com".into()]
        ));
        assert!(origin_allowed(
            &h,
            LOCAL,
            &[],
            &["https://app.example.com".into()]
        ));
        assert!(origin_allowed(&h, LOCAL, &[], &["*".into()]));
    }

    #[test]
    fn credentials_from_subprotocol_and_query() {
        let h = headers(&[("sec-websocket-protocol", "moltbot.v1, bearer.mb_abc_def")]);
        assert_eq!(bearer_protocol(&h).as_deref(), Some("mb_abc_def"));
        assert_eq!(
            bearer_protocol(&headers(&[("sec-websocket-protocol", "moltbot.v1")])),
            None
        );
        let uri: Uri = "/v1/ws?x=1&ticket=abc123".parse().unwrap();
        assert_eq!(query_ticket(&uri).as_deref(), Some("abc123"));
        assert_eq!(query_ticket(&"/v1/ws".parse().unwrap()), None);
    }
}
