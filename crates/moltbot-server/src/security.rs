//! Security headers on every response, and CORS for the configured origins (none by default).

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::Response;
use ipnet::IpNet;
use tower_http::cors::{AllowOrigin, CorsLayer};

/// A strict policy for JSON and SSE: nothing may load, nothing may frame. Pages that need more (the
/// console, WebChat) set their own `Content-Security-Policy`, which this layer leaves alone.
pub const API_CSP: &str = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";
pub const HSTS: &str = "max-age=31536000; includeSubDomains";

/// Adds `X-Content-Type-Options`, `X-Frame-Options`, `Referrer-Policy`, a strict CSP (unless the route
/// set one), and HSTS when the request arrived over TLS (see [`request_is_tls`]).
pub async fn headers(State(trusted): State<Arc<Vec<IpNet>>>, req: Request, next: Next) -> Response {
    with_headers(&trusted, req, |req| next.run(req)).await
}

/// [`headers`] around any inner service (the dialog listener composes its stack in one layer).
pub async fn with_headers<F, Fut>(trusted: &[IpNet], req: Request, next: F) -> Response
where
    F: FnOnce(Request) -> Fut,
    Fut: Future<Output = Response>,
{
    let tls = request_is_tls(trusted, req.extensions(), req.headers());
    let mut resp = next(req).await;
    let h = resp.headers_mut();
    h.reserve(5); // the headers below, in one growth of the map
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    if !h.contains_key(header::CONTENT_SECURITY_POLICY) {
        h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(API_CSP));
    }
    if tls {
        h.insert(header::STRICT_TRANSPORT_SECURITY, HeaderValue::from_static(HSTS));
    }
    resp
}

/// Whether the request arrived over TLS: on one of our own TLS listeners (`[tls]`), or through a
/// trusted proxy that says `X-Forwarded-Proto: https`.
pub fn request_is_tls(
    trusted: &[IpNet],
    extensions: &axum::http::Extensions,
    headers: &axum::http::HeaderMap,
) -> bool {
    crate::tls::arrived_over_tls(extensions)
        || forwarded_tls(trusted, crate::auth::peer_ip(extensions), headers)
}

/// Whether a trusted proxy (`server.trusted_proxies`) says the client used TLS
/// (`X-Forwarded-Proto: https`).
pub fn forwarded_tls(trusted: &[IpNet], peer: std::net::IpAddr, headers: &axum::http::HeaderMap) -> bool {
    trusted.iter().any(|net| net.contains(&peer))
        && headers
            .get("x-forwarded-proto")
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"https"))
}

/// CORS for `server.cors_origins`; `None` (no CORS headers at all) when the list is empty.
pub fn cors(origins: &[String]) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()))
    };
    Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([Method::GET, Method::POST, Method::PATCH, Method::DELETE])
            .allow_headers([
                header::AUTHORIZATION,
                header::CONTENT_TYPE,
                HeaderName::from_static("idempotency-key"),
                HeaderName::from_static("x-moltbot-conversation"),
                HeaderName::from_static("x-request-id"),
                HeaderName::from_static("openai-organization"),
                HeaderName::from_static("openai-project"),
                HeaderName::from_static("x-stainless-arch"),
            ])
            .expose_headers([
                HeaderName::from_static("x-request-id"),
                HeaderName::from_static("x-moltbot-conversation"),
                HeaderName::from_static("x-ratelimit-limit-requests"),
                HeaderName::from_static("x-ratelimit-remaining-requests"),
                HeaderName::from_static("x-ratelimit-reset-requests"),
                HeaderName::from_static("x-ratelimit-limit-tokens"),
                HeaderName::from_static("x-ratelimit-remaining-tokens"),
                HeaderName::from_static("x-ratelimit-reset-tokens"),
            ])
            .max_age(std::time::Duration::from_secs(600)),
    )
}
