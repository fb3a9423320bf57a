//! Generic inbound hooks (`POST /hooks/{name}`): any system posts a message into a conversation.
//!
//! Authentication is a Standard Webhooks signature (`webhook-id`, `webhook-timestamp`,
//! `webhook-signature: v1,…` with the hook's `whsec_` secret) or a bearer hook token in the
//! `Authorization` header — never a token in the query string (URLs end up in logs). Body:
//! `{"text": "…", "conversation": "optional key", "user": "optional sender"}`; messages with the same
//! `conversation` key continue one stored conversation. `mode = "sync"` answers in the response;
//! `mode = "async"` answers `202` and delivers the reply to `callback_url`, signed the same way, with
//! the pipeline's retries (at least once; `webhook-id` is stable per reply).

use std::time::Duration;

use async_trait::async_trait;
use axum::response::{IntoResponse, Response};
use moltbot_channels::{
    Adapter, ChannelError, ChatType, ChunkLimit, Decoded, HttpReply, HttpRequest, InboundMessage, LengthUnit,
    Platform, SendError, secure_eq, standard_webhooks,
};
use serde::Deserialize;
use serde_json::{Value, json};

use super::Account;
use crate::error::ApiError;
use crate::state::AppState;

/// Standard Webhooks' recommended tolerance for `webhook-timestamp`.
const TOLERANCE_SECS: i64 = 300;

/// How a hook authenticates callers.
#[derive(Clone)]
pub enum HookAuth {
    /// A Standard Webhooks `whsec_…` secret.
    Signature(String),
    /// A bearer token.
    Token(String),
}

pub struct HookAdapter {
    name: String,
    auth: HookAuth,
    callback_url: Option<String>,
    callback_secret: Option<String>,
    http: reqwest::Client,
}

impl HookAdapter {
    pub fn new(
        name: &str,
        auth: HookAuth,
        callback_url: Option<String>,
        callback_secret: Option<String>,
        http: reqwest::Client,
    ) -> Self {
        HookAdapter {
            name: name.to_owned(),
            auth,
            callback_url,
            callback_secret,
            http,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HookBody {
    text: String,
    #[serde(default)]
    conversation: Option<String>,
    #[serde(default)]
    user: Option<String>,
}

fn valid_key(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.:@".contains(c))
}

#[async_trait]
impl Adapter for HookAdapter {
    fn platform(&self) -> Platform {
        Platform::Hook
    }

    fn account(&self) -> &str {
        &self.name
    }

    fn handle(&self, req: &HttpRequest, now: i64) -> Result<Decoded, ChannelError> {
        if req
            .query
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("token") || k.eq_ignore_ascii_case("secret"))
        {
            return Err(ChannelError::BadRequest(
                "hook credentials go in the Authorization or webhook-signature header, never in the URL"
                    .into(),
            ));
        }
        let event_id = match &self.auth {
            HookAuth::Signature(secret) => {
                standard_webhooks::verify_request(secret, &req.headers, &req.body, now, TOLERANCE_SECS)?;
                req.header("webhook-id").unwrap_or_default().to_owned()
            }
            HookAuth::Token(token) => {
                let given = req
                    .header("authorization")
                    .and_then(|h| h.strip_prefix("Bearer "))
                    .ok_or_else(|| ChannelError::Unauthorized("missing bearer hook token".into()))?;
                if !secure_eq(given.trim().as_bytes(), token.as_bytes()) {
                    return Err(ChannelError::Unauthorized("hook token not accepted".into()));
                }
                req.header("idempotency-key").unwrap_or_default().to_owned()
            }
        };
        let body: HookBody = serde_json::from_slice(&req.body)
            .map_err(|e| ChannelError::BadRequest(format!("body must be {{\"text\": …}}: {e}")))?;
        if body.text.trim().is_empty() {
            return Err(ChannelError::BadRequest("`text` must not be empty".into()));
        }
        for (field, v) in [("conversation", &body.conversation), ("user", &body.user)] {
            if let Some(v) = v
                && !valid_key(v)
            {
                return Err(ChannelError::BadRequest(format!(
                    "`{field}` must be 1–128 characters of letters, digits and -_.:@"
                )));
            }
        }
        let event_id = if event_id.is_empty() {
            uuid::Uuid::new_v4().simple().to_string()
        } else {
            event_id
        };
        let chat = body
            .conversation
            .clone()
            .or_else(|| body.user.clone())
            .unwrap_or_else(|| "default".into());
        let message = InboundMessage {
            platform: Platform::Hook,
            account: self.name.clone(),
            event_id: event_id.clone(),
            message_id: event_id.clone(),
            chat_id: chat,
            chat_type: ChatType::Direct,
            sender_id: body.user.clone().unwrap_or_else(|| "hook".into()),
            sender_name: body.user,
            text: body.text.trim().to_owned(),
            mentions_bot: true,
            thread_id: None,
            sent_at: now,
            reply: serde_json::Value::Null,
        };
        let mut ack = HttpReply::json(&json!({"id": event_id, "object": "hook.event", "status": "queued"}));
        ack.status = 202;
        Ok(Decoded::Messages {
            messages: vec![message],
            ack,
        })
    }

    fn chunk_limit(&self) -> ChunkLimit {
        // One callback per reply.
        ChunkLimit {
            max: 1 << 20,
            unit: LengthUnit::Bytes,
        }
    }

    async fn send(&self, to: &InboundMessage, text: &str, idempotency_key: &str) -> Result<(), SendError> {
        let Some(url) = &self.callback_url else {
            return Err(SendError::Permanent("the hook has no callback_url".into()));
        };
        let now = chrono_now();
        let body = serde_json::to_vec(&json!({
            "type": "hook.reply",
            "timestamp": now.1,
            "data": {"hook": self.name, "event_id": to.event_id, "conversation": to.chat_id, "text": text},
        }))
        .unwrap_or_default();
        let mut req = self
            .http
            .post(url)
            .header("content-type", "application/json")
            .header("webhook-id", idempotency_key)
            .header("webhook-timestamp", now.0.to_string());
        let secret = self.callback_secret.as_ref().or(match &self.auth {
            HookAuth::Signature(s) => Some(s),
            HookAuth::Token(_) => None,
        });
        if let Some(secret) = secret {
            let sig = standard_webhooks::sign(secret, idempotency_key, now.0, &body)
                .map_err(|e| SendError::Permanent(format!("callback_secret: {e}")))?;
            req = req.header("webhook-signature", sig);
        }
        let resp = req
            .body(body)
            .timeout(Duration::from_secs(30))
            .send()
            .await
            .map_err(|e| SendError::retryable(format!("callback: {e}")))?;
        let status = resp.status();
        if status.is_success() {
            return Ok(());
        }
        let retry_after = resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .map(Duration::from_secs);
        if status.as_u16() == 429 || status.is_server_error() || status.as_u16() == 408 {
            Err(SendError::Retryable {
                message: format!("callback answered {status}"),
                retry_after,
            })
        } else {
            Err(SendError::Permanent(format!("callback answered {status}")))
        }
    }
}

/// Unix seconds and RFC 3339 of now.
fn chrono_now() -> (i64, String) {
    let now = std::time::SystemTime::now();
    let secs = now
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default();
    (secs, humantime::format_rfc3339_seconds(now).to_string())
}

/// A synchronous hook: verify, answer with the model, respond with the reply.
pub(super) async fn answer(state: &AppState, account: &Account, req: &HttpRequest) -> Response {
    let decoded = match account.adapter.handle(req, state.clock.now_secs()) {
        Ok(d) => d,
        Err(e) => return super::ingest::refused_response(account, &e),
    };
    let Decoded::Messages { messages, .. } = decoded else {
        return ApiError::internal("hook decoded to no message").into_response();
    };
    let Some(message) = messages.into_iter().next() else {
        return ApiError::internal("hook decoded to no message").into_response();
    };
    let chat_key = account.rules.chat_key(&message);
    match super::worker::generate(state, account, &message, &chat_key, &message.event_id).await {
        Ok((text, conversation)) => {
            axum::Json(hook_reply(&message.event_id, conversation.as_deref(), &text)).into_response()
        }
        Err(e) => ApiError::from(e).into_response(),
    }
}

/// What a hook reply looks like when sent synchronously.
fn hook_reply(event_id: &str, conversation: Option<&str>, text: &str) -> Value {
    json!({"id": event_id, "object": "hook.reply", "conversation_id": conversation, "text": text})
}
