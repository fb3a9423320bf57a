//! The middleware, in one place: request id → span + access log → body limit → timeout, and the dialog
//! listener's whole stack composed into two layers ([`chat_outer`], [`chat_inner`]).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use ipnet::IpNet;
use tracing::Instrument;

use crate::error::ApiError;

pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

tokio::task_local! {
    /// The request id of the request being handled, for error bodies.
    pub static REQUEST_ID: String;
}

/// Take the client's `x-request-id` (if sane) or make one; put it on the span, in the task-local, on the
/// response; log one access line with Elastic Common Schema names when the response head is ready.
pub async fn request_context(req: Request, next: Next) -> Response {
    with_context(req, |req| next.run(req)).await
}

/// [`request_context`] around any inner service.
pub async fn with_context<F, Fut>(mut req: Request, next: F) -> Response
where
    F: FnOnce(Request) -> Fut,
    Fut: Future<Output = Response>,
{
    let started = Instant::now();
    let id = req
        .headers()
        .get(&X_REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_owned)
        .unwrap_or_else(moltbot_core::ids::request_id);
    if let Ok(v) = HeaderValue::from_str(&id) {
        req.headers_mut().insert(X_REQUEST_ID.clone(), v);
    }
    let method = req.method().as_str().to_owned();
    let path = req.uri().path().to_owned();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "<unmatched>".to_owned(), |m| m.as_str().to_owned());
    let span = tracing::info_span!(
        "request",
        http.request.id = %id,
        http.request.method = %method,
        url.path = %path,
        http.route = %route,
    );
    let mut resp = REQUEST_ID
        .scope(id.clone(), next(req).instrument(span.clone()))
        .await;
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert(X_REQUEST_ID.clone(), v);
    }
    let status = resp.status().as_u16();
    let streaming = resp
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
    span.in_scope(|| {
        tracing::info!(
            http.response.status_code = status,
            event.duration = started.elapsed().as_nanos() as u64,
            moltbot.stream = streaming,
            "{method} {path} {status}"
        );
    });
    resp
}

/// Refuse clients outside the allowlist (an empty list allows everyone).
pub async fn cidr_allowlist(
    State(allowed): State<std::sync::Arc<Vec<IpNet>>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request,
    next: Next,
) -> Response {
    if allowed.is_empty() || allowed.iter().any(|net| net.contains(&peer.ip())) {
        next.run(req).await
    } else {
        tracing::warn!(client.ip = %peer.ip(), "request refused by the listener's CIDR allowlist");
        ApiError::NotFound {
            param: None,
            message: "Not found.".into(),
            code: "not_found",
        }
        .into_response()
    }
}

/// A timeout for non-streaming work: the handler future is dropped (cancelling its backend call).
pub async fn timeout(duration: Duration, fut: impl std::future::Future<Output = Response>) -> Response {
    match tokio::time::timeout(duration, fut).await {
        Ok(r) => r,
        Err(_) => ApiError::Unavailable {
            message: format!("The request did not complete within {} s.", duration.as_secs()),
            code: "service_unavailable",
            retry_after: None,
        }
        .into_response(),
    }
}

/// The outer half of the dialog listener's stack, as one layer: security headers, then the request id,
/// span and access log, then HTTP metrics. Composed in one function rather than a `from_fn` layer each:
/// every such layer boxes the rest of the stack and its future per request (docs/performance.md).
#[derive(Clone)]
pub struct ChatOuter {
    pub trusted: std::sync::Arc<Vec<IpNet>>,
    pub meter: crate::telemetry::HttpMeter,
}

pub async fn chat_outer(State(s): State<ChatOuter>, req: Request, next: Next) -> Response {
    let ChatOuter { trusted, meter } = s;
    crate::security::with_headers(&trusted, req, |req| {
        with_context(req, |req| {
            crate::telemetry::with_meter(meter, req, |req| next.run(req))
        })
    })
    .await
}

/// The inner half (below CORS, when configured): the timeout, authentication and the per-key request
/// rate, then `Idempotency-Key`.
pub async fn chat_inner(
    State((state, limit)): State<(crate::state::AppState, Duration)>,
    req: Request,
    next: Next,
) -> Response {
    timeout(
        limit,
        crate::auth::authenticate(&state, crate::auth::Policy::CHAT, req, |req| {
            crate::idempotency::with_idempotency(state.clone(), req, |req| next.run(req))
        }),
    )
    .await
}
