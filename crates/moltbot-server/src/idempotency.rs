//! `Idempotency-Key` on POST requests: a client's retry gets the first result instead of a second turn.
//!
//! The key is claimed before the handler runs; the response (JSON or a whole SSE stream) is stored
//! before its last bytes reach the client, so a retry after a completed response always replays it. A
//! key reused with a different body is a 409; a retry while the first request still runs is a 409 too.
//! Server errors release the key so the client can try again.

use axum::body::{Body, to_bytes};
use axum::extract::Request;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use moltbot_core::StoredResponse;
use sha2::{Digest, Sha256};

use crate::error::ApiError;
use crate::state::AppState;

pub const HEADER: &str = "idempotency-key";
const REPLAYED: &str = "idempotent-replayed";
/// Response headers replayed with the body.
const KEPT_HEADERS: [&str; 1] = [crate::routes::chat::CONVERSATION_HEADER];

/// The middleware (see the module docs), around the rest of the dialog listener's stack.
pub async fn with_idempotency<F, Fut>(state: AppState, req: Request, next: F) -> Response
where
    F: FnOnce(Request) -> Fut,
    Fut: Future<Output = Response>,
{
    if req.method() != Method::POST {
        return next(req).await;
    }
    let Some(key) = req.headers().get(HEADER) else {
        return next(req).await;
    };
    let key = match key.to_str() {
        Ok(k) if !k.is_empty() && k.len() <= 255 => k.to_owned(),
        _ => {
            return ApiError::invalid("Idempotency-Key", "must be 1 to 255 visible ASCII characters")
                .into_response();
        }
    };
    let owner = req
        .extensions()
        .get::<moltbot_core::Principal>()
        .map(|p| p.owner().to_owned())
        .unwrap_or_default();
    let (parts, body) = req.into_parts();
    let bytes = match to_bytes(body, state.body_limit).await {
        Ok(b) => b,
        Err(_) => {
            return ApiError::PayloadTooLarge {
                limit: state.body_limit,
            }
            .into_response();
        }
    };
    let mut h = Sha256::new();
    h.update(parts.method.as_str());
    h.update([0]);
    h.update(parts.uri.path());
    h.update([0]);
    h.update(&bytes);
    let hash = hex::encode(h.finalize());

    match claim(&state, &owner, &key, &hash).await {
        Ok(Claim::Claimed) => {}
        Ok(Claim::Replay(stored)) => return replay(stored),
        Err(e) => return e.into_response(),
    }
    let resp = next(Request::from_parts(parts, Body::from(bytes))).await;
    if resp.status().is_server_error() || resp.status() == StatusCode::TOO_MANY_REQUESTS {
        release(&state, &owner, &key).await;
        return resp;
    }
    record(state, owner, key, resp)
}

enum Claim {
    Claimed,
    Replay(StoredResponse),
}

async fn claim(state: &AppState, owner: &str, key: &str, hash: &str) -> Result<Claim, ApiError> {
    let now = state.clock.now_secs();
    let ttl = state.config.store.idempotency_ttl.as_secs() as i64;
    for _ in 0..2 {
        if let Some(rec) = state.store.get_idempotency(owner, key).await? {
            if rec.created_at + ttl < now {
                // Expired (the periodic purge has not run yet): the key is free again.
                state.store.release_idempotency(owner, key).await?;
                continue;
            }
            if rec.request_hash != hash {
                return Err(ApiError::Conflict {
                    message: "This Idempotency-Key was already used with a different request.".into(),
                    code: "idempotency_key_reused",
                });
            }
            return match rec.response {
                Some(r) => Ok(Claim::Replay(r)),
                None => Err(ApiError::Conflict {
                    message: "A request with this Idempotency-Key is still being processed.".into(),
                    code: "idempotency_key_in_use",
                }),
            };
        }
        if state.store.claim_idempotency(owner, key, hash, now).await? {
            return Ok(Claim::Claimed);
        }
    }
    Err(ApiError::Conflict {
        message: "A request with this Idempotency-Key is still being processed.".into(),
        code: "idempotency_key_in_use",
    })
}

async fn release(state: &AppState, owner: &str, key: &str) {
    if let Err(e) = state.store.release_idempotency(owner, key).await {
        tracing::error!(error = %e, "could not release an idempotency key");
    }
}

fn replay(stored: StoredResponse) -> Response {
    let mut resp = Response::new(Body::from(stored.body));
    *resp.status_mut() = StatusCode::from_u16(stored.status).unwrap_or(StatusCode::OK);
    let headers = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&stored.content_type) {
        headers.insert(header::CONTENT_TYPE, v);
    }
    for (k, v) in stored.headers {
        if let (Ok(k), Ok(v)) = (header::HeaderName::try_from(k), HeaderValue::from_str(&v)) {
            headers.insert(k, v);
        }
    }
    headers.insert(REPLAYED, HeaderValue::from_static("true"));
    resp
}

/// Pass the body through, holding back the last frame until the whole response is stored.
fn record(state: AppState, owner: String, key: String, resp: Response) -> Response {
    let (parts, body) = resp.into_parts();
    let status = parts.status.as_u16();
    let content_type = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json")
        .to_owned();
    let kept: Vec<(String, String)> = KEPT_HEADERS
        .iter()
        .filter_map(|k| {
            parts
                .headers
                .get(*k)
                .and_then(|v| v.to_str().ok())
                .map(|v| ((*k).to_owned(), v.to_owned()))
        })
        .collect();
    let mut guard = ReleaseOnDrop {
        state: Some(state.clone()),
        owner: owner.clone(),
        key: key.clone(),
    };
    let stream = async_stream::stream! {
        let mut data = body.into_data_stream();
        let mut all: Vec<u8> = Vec::new();
        let mut held: Option<bytes::Bytes> = None;
        while let Some(frame) = data.next().await {
            match frame {
                Ok(b) => {
                    all.extend_from_slice(&b);
                    if let Some(prev) = held.replace(b) {
                        yield Ok::<_, axum::Error>(prev);
                    }
                }
                Err(e) => {
                    yield Err(e);
                    return;
                }
            }
        }
        let stored = StoredResponse { status, content_type, body: all, headers: kept };
        match state.store.complete_idempotency(&owner, &key, &stored).await {
            Ok(()) => guard.disarm(),
            Err(e) => tracing::error!(error = %e, "could not store an idempotent response"),
        }
        if let Some(last) = held {
            yield Ok(last);
        }
    };
    Response::from_parts(parts, Body::from_stream(stream))
}

/// Releases the key if the response never finished (client gone, stream error).
struct ReleaseOnDrop {
    state: Option<AppState>,
    owner: String,
    key: String,
}

impl ReleaseOnDrop {
    /// The response was stored: keep the key.
    fn disarm(&mut self) {
        self.state = None;
    }
}

impl Drop for ReleaseOnDrop {
    fn drop(&mut self) {
        let Some(state) = self.state.take() else { return };
        let (owner, key) = (std::mem::take(&mut self.owner), std::mem::take(&mut self.key));
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move { release(&state, &owner, &key).await });
        }
    }
}

/// Delete expired idempotency records now and then (records older than `store.idempotency_ttl`).
pub async fn purge_loop(state: AppState) {
    let ttl = state.config.store.idempotency_ttl;
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(600));
    loop {
        tick.tick().await;
        let before = state.clock.now_secs() - ttl.as_secs() as i64;
        match state.store.purge_idempotency(before).await {
            Ok(0) => {}
            Ok(n) => tracing::debug!(purged = n, "expired idempotency keys removed"),
            Err(e) => tracing::warn!(error = %e, "could not purge idempotency keys"),
        }
    }
}
