//! HTTP metrics middleware: `http_requests_total`, `http_request_duration_seconds` and
//! `http_requests_in_flight`, recorded when the response body ends (or is dropped because the client
//! went away), so a streamed generation is accounted once, at its end, under `stream="true"`.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Instant, SystemTime};

use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{Method, header};
use axum::middleware::Next;
use axum::response::Response;
use bytes::Bytes;
use http_body::{Frame, SizeHint};

use super::recent::{RecentRequests, RequestSummary};

/// What the chat route tells the access accounting about a turn (a response extension).
#[derive(Debug, Clone)]
pub struct ChatSummary {
    pub model: String,
    pub backend: String,
}

/// Per-listener settings of [`track`].
#[derive(Clone)]
pub struct HttpMeter {
    pub listener: &'static str,
    /// Keep request summaries here (the dialog listener only).
    pub recent: Option<Arc<RecentRequests>>,
    /// Feed the admin console's overview series (the dialog listener only; `/v1/…` paths).
    pub live: Option<Arc<super::LiveStats>>,
}

/// The middleware; add it right after the request-context layer.
pub async fn track(State(meter): State<HttpMeter>, req: Request, next: Next) -> Response {
    with_meter(meter, req, |req| next.run(req)).await
}

/// [`track`] around any inner service.
pub async fn with_meter<F, Fut>(meter: HttpMeter, req: Request, next: F) -> Response
where
    F: FnOnce(Request) -> Fut,
    Fut: Future<Output = Response>,
{
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "<unmatched>".to_owned(), |m| m.as_str().to_owned());
    let summary = meter.recent.as_ref().map(|_| RequestSummary {
        request_id: req
            .headers()
            .get(&crate::middleware::X_REQUEST_ID)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned(),
        started_at: humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
        method: req.method().as_str().to_owned(),
        path: req.uri().path().to_owned(),
        route: route.clone(),
        ..RequestSummary::default()
    });
    let live = meter.live.filter(|_| req.uri().path().starts_with("/v1/"));
    let in_flight = super::handles::in_flight(meter.listener);
    in_flight.increment(1.0);
    let mut guard = Guard {
        live,
        started: Instant::now(),
        in_flight,
        listener: meter.listener,
        method: method_label(req.method()),
        route,
        status: 500,
        stream: false,
        summary,
        recent: meter.recent,
    };
    let resp = next(req).await;
    guard.status = resp.status().as_u16();
    guard.stream = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
    if let (Some(s), Some(chat)) = (guard.summary.as_mut(), resp.extensions().get::<ChatSummary>()) {
        s.model = Some(chat.model.clone());
        s.backend = Some(chat.backend.clone());
    }
    let (parts, body) = resp.into_parts();
    Response::from_parts(
        parts,
        Body::new(GuardedBody {
            inner: body,
            guard: Some(guard),
        }),
    )
}

/// A bounded method label (unknown methods would otherwise mint new series).
fn method_label(m: &Method) -> &'static str {
    match *m {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// Records one request when dropped.
struct Guard {
    started: Instant,
    /// `http_requests_in_flight{listener}`: incremented when the request arrived.
    in_flight: metrics::Gauge,
    listener: &'static str,
    method: &'static str,
    route: String,
    status: u16,
    stream: bool,
    summary: Option<RequestSummary>,
    recent: Option<Arc<RecentRequests>>,
    live: Option<Arc<super::LiveStats>>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        let elapsed = self.started.elapsed();
        let (requests, duration) = super::handles::http(&super::handles::HttpKeyRef {
            listener: self.listener,
            method: self.method,
            route: &self.route,
            status: self.status,
            stream: self.stream,
        });
        requests.increment(1);
        duration.record(elapsed.as_secs_f64());
        self.in_flight.decrement(1.0);
        // WebSocket upgrades (101) are not requests of their own in the overview.
        if let Some(live) = self.live.as_ref().filter(|_| self.status != 101) {
            live.series.record_request(self.status, elapsed);
        }
        if let (Some(mut s), Some(recent)) = (self.summary.take(), self.recent.as_ref()) {
            s.status = self.status;
            s.stream = self.stream;
            s.duration_ms = elapsed.as_secs_f64() * 1000.0;
            recent.push(s);
        }
    }
}

/// The response body with the guard attached: the guard goes when the body ends or is dropped.
struct GuardedBody {
    inner: Body,
    guard: Option<Guard>,
}

impl http_body::Body for GuardedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(None) = polled {
            self.guard.take();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
