//! The inbound side: platform webhooks (`/channels/{platform}/{account}`), generic hooks
//! (`/hooks/{name}`) and messages from long-lived connections, all through [`enqueue`].

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use moltbot_channels::{ChannelError, Decoded, HttpReply, HttpRequest, InboundMessage, Platform};
use moltbot_core::StoreError;
use moltbot_core::channels::{ChannelEventStatus, NewChannelEvent};

use super::Account;
use crate::error::ApiError;
use crate::state::AppState;

/// What happened to one inbound message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Enqueued {
    Queued,
    Duplicate,
    Ignored,
}

impl Enqueued {
    fn as_str(self) -> &'static str {
        match self {
            Enqueued::Queued => "queued",
            Enqueued::Duplicate => "duplicate",
            Enqueued::Ignored => "ignored",
        }
    }
}

/// Apply the account's rules and queue the message durably (deduplicated by its event id). Messages
/// the rules refuse are counted, not stored: a group's chatter not meant for the bot stays out of the
/// database.
pub(crate) async fn enqueue(
    state: &AppState,
    account: &Account,
    message: &InboundMessage,
) -> Result<Enqueued, StoreError> {
    let outcome = if let Some(reason) = account.rules.refuse(message) {
        tracing::debug!(platform = %account.platform, account = %account.name, reason, "message not answered");
        Enqueued::Ignored
    } else {
        let event = NewChannelEvent {
            platform: account.platform.as_str().to_owned(),
            account: account.name.clone(),
            event_id: message.event_id.clone(),
            chat_key: account.rules.chat_key(message),
            message: serde_json::to_value(message).map_err(|e| StoreError::Database(e.to_string()))?,
            status: ChannelEventStatus::Queued,
            now_ms: state.clock.now_millis(),
        };
        if state.store.enqueue_channel_event(&event).await? {
            state.channels.notify.notify_one();
            Enqueued::Queued
        } else {
            Enqueued::Duplicate
        }
    };
    metrics::counter!(
        "moltbot_channel_messages_total",
        "platform" => account.platform.as_str(),
        "outcome" => outcome.as_str()
    )
    .increment(1);
    Ok(outcome)
}

fn request(method: Method, query: Option<String>, headers: HeaderMap, body: Bytes) -> HttpRequest {
    let query = query
        .map(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect()
        })
        .unwrap_or_default();
    HttpRequest {
        method,
        query,
        headers,
        body,
    }
}

fn reply(r: HttpReply) -> Response {
    let status = StatusCode::from_u16(r.status).unwrap_or(StatusCode::OK);
    (status, [(header::CONTENT_TYPE, r.content_type)], r.body).into_response()
}

pub(super) fn refused_response(account: &Account, e: &ChannelError) -> Response {
    let code = match e {
        ChannelError::Unauthorized(_) => "invalid_signature",
        ChannelError::BadRequest(_) => "invalid_request",
    };
    metrics::counter!(
        "moltbot_channel_requests_rejected_total",
        "platform" => account.platform.as_str(),
        "reason" => code
    )
    .increment(1);
    tracing::warn!(platform = %account.platform, account = %account.name, error = %e, "channel request refused");
    match e {
        ChannelError::Unauthorized(m) => ApiError::Unauthorized {
            message: format!("The request's signature or token was not accepted: {m}."),
            code,
        },
        ChannelError::BadRequest(m) => ApiError::Invalid {
            param: None,
            message: format!("Not a request this channel accepts: {m}."),
            code: Some(code),
        },
    }
    .into_response()
}

fn unknown(path: &str) -> Response {
    ApiError::NotFound {
        param: None,
        message: format!("No channel or hook is configured at {path}."),
        code: "channel_not_found",
    }
    .into_response()
}

/// Verify, decode, queue every message, then acknowledge. A database failure answers 503 so the
/// platform retries: nothing is acknowledged that is not stored.
async fn accept(state: &AppState, account: &Arc<Account>, req: HttpRequest) -> Response {
    let decoded = match account.adapter.handle(&req, state.clock.now_secs()) {
        Ok(d) => d,
        Err(e) => return refused_response(account, &e),
    };
    match decoded {
        Decoded::Challenge(r) => reply(r),
        Decoded::Ignore { reason, ack } => {
            tracing::debug!(platform = %account.platform, account = %account.name, %reason, "event ignored");
            reply(ack)
        }
        Decoded::Messages { messages, ack } => {
            for m in &messages {
                if let Err(e) = enqueue(state, account, m).await {
                    tracing::error!(platform = %account.platform, account = %account.name, error = %e, "could not queue a channel event; the platform will retry");
                    return ApiError::Unavailable {
                        message: "The event could not be stored; retry.".into(),
                        code: "service_unavailable",
                        retry_after: Some(std::time::Duration::from_secs(1)),
                    }
                    .into_response();
                }
            }
            reply(ack)
        }
    }
}

/// `GET|POST /channels/{platform}/{account}`.
pub(super) async fn channel(
    State(state): State<AppState>,
    Path((platform, name)): Path<(String, String)>,
    method: Method,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let account = match Platform::parse(&platform).filter(|p| *p != Platform::Hook) {
        Some(p) => state.channels.get(p, &name).cloned(),
        None => None,
    };
    let Some(account) = account else {
        return unknown(&format!("/channels/{platform}/{name}"));
    };
    accept(&state, &account, request(method, query, headers, body)).await
}

/// `POST /hooks/{name}`: asynchronous hooks are queued like platform events (`202`, the reply goes
/// to the callback); synchronous ones answer in the response.
pub(super) async fn hook(
    State(state): State<AppState>,
    Path(name): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(account) = state.channels.get(Platform::Hook, &name).cloned() else {
        return unknown(&format!("/hooks/{name}"));
    };
    let req = request(Method::POST, query, headers, body);
    if account.hook.as_ref().is_some_and(|h| h.sync) {
        return super::hooks::answer(&state, &account, &req).await;
    }
    accept(&state, &account, req).await
}
