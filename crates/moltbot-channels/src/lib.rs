//! Chat-platform channels: each adapter verifies a platform's webhook on the raw request bytes (the
//! clock is a parameter), decodes it into a challenge, messages or nothing, normalizes messages into
//! [`InboundMessage`], and sends replies through the platform's API.
//!
//! Crypto and parsing are pure functions; I/O happens only in [`Adapter::send`] and the long-lived
//! connections (Telegram long polling, DingTalk Stream). The server owns the pipeline around them:
//! durable enqueue with dedupe, workers, per-chat rate limits, retries and conversation records.

use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

pub mod chunk;
pub mod dingtalk;
pub mod dingtalk_stream;
pub mod feishu;
pub mod slack;
pub mod standard_webhooks;
pub mod telegram;
pub mod token;
pub mod wecom;

/// A chat platform (or the generic inbound hook).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Platform {
    Feishu,
    Lark,
    Dingtalk,
    Wecom,
    Telegram,
    Slack,
    /// `POST /hooks/{name}` (Standard Webhooks or a bearer hook token).
    Hook,
}

impl Platform {
    pub const ALL: &'static [Platform] = &[
        Platform::Feishu,
        Platform::Lark,
        Platform::Dingtalk,
        Platform::Wecom,
        Platform::Telegram,
        Platform::Slack,
        Platform::Hook,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Platform::Feishu => "feishu",
            Platform::Lark => "lark",
            Platform::Dingtalk => "dingtalk",
            Platform::Wecom => "wecom",
            Platform::Telegram => "telegram",
            Platform::Slack => "slack",
            Platform::Hook => "hook",
        }
    }

    pub fn parse(s: &str) -> Option<Platform> {
        Platform::ALL.iter().copied().find(|p| p.as_str() == s)
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The parts of an HTTP request an adapter looks at. `body` is the raw bytes: signatures are over them.
#[derive(Debug, Clone, Default)]
pub struct HttpRequest {
    pub method: http::Method,
    /// Decoded query parameters in order.
    pub query: Vec<(String, String)>,
    pub headers: http::HeaderMap,
    pub body: bytes::Bytes,
}

impl HttpRequest {
    /// A POST with this body and no headers (tests and fixtures).
    pub fn post(body: impl Into<bytes::Bytes>) -> Self {
        HttpRequest {
            method: http::Method::POST,
            body: body.into(),
            ..HttpRequest::default()
        }
    }

    pub fn with_header(mut self, name: &'static str, value: &str) -> Self {
        self.headers.insert(
            http::header::HeaderName::from_static(name),
            http::HeaderValue::from_str(value).expect("header value"),
        );
        self
    }

    pub fn with_query(mut self, name: &str, value: &str) -> Self {
        self.query.push((name.to_owned(), value.to_owned()));
        self
    }

    /// The first query parameter with this name.
    pub fn query_param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// A header as text (`None` when absent or not visible ASCII).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// The HTTP response the platform gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpReply {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
}

impl HttpReply {
    pub fn json(value: &serde_json::Value) -> Self {
        HttpReply {
            status: 200,
            content_type: "application/json",
            body: serde_json::to_vec(value).unwrap_or_default(),
        }
    }

    pub fn text(text: impl Into<String>) -> Self {
        HttpReply {
            status: 200,
            content_type: "text/plain; charset=utf-8",
            body: text.into().into_bytes(),
        }
    }

    /// `200` with an empty body.
    pub fn empty() -> Self {
        HttpReply {
            status: 200,
            content_type: "text/plain; charset=utf-8",
            body: Vec::new(),
        }
    }
}

/// What a verified webhook request is.
#[derive(Debug, Clone, PartialEq)]
pub enum Decoded {
    /// Answer this now (URL verification, `echostr`); nothing is queued.
    Challenge(HttpReply),
    /// Queue these durably, then answer `ack` (the platform's success response).
    Messages {
        messages: Vec<InboundMessage>,
        ack: HttpReply,
    },
    /// A valid request we do not act on (other event types, the bot's own messages, edits, joins…).
    Ignore { reason: String, ack: HttpReply },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChatType {
    /// One-to-one with the bot.
    Direct,
    /// A group, channel or room.
    Group,
}

/// A chat message from a platform, normalized. Stored as JSON in the durable queue: keep it stable.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InboundMessage {
    pub platform: Platform,
    /// The configured account (`[[channels]] account`) this arrived on.
    pub account: String,
    /// The platform's event id: the dedupe key (unique per platform and account). Where a platform has
    /// no event id, the message id.
    pub event_id: String,
    pub message_id: String,
    pub chat_id: String,
    pub chat_type: ChatType,
    pub sender_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sender_name: Option<String>,
    /// The text with the bot's mention removed, trimmed.
    pub text: String,
    pub mentions_bot: bool,
    /// Thread or topic within the chat (Slack `thread_ts`, Telegram `message_thread_id`, Feishu
    /// `thread_id`/`root_id`), when the message is in one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thread_id: Option<String>,
    /// Unix seconds the platform says the message was sent (0 when unknown).
    #[serde(default)]
    pub sent_at: i64,
    /// What the reply needs beyond the fields above (DingTalk `sessionWebhook` and its expiry, …);
    /// opaque to the pipeline.
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub reply: serde_json::Value,
}

/// What a platform's parser makes of one verified body: a message to queue, or why it is not one.
#[derive(Debug, Clone, PartialEq)]
pub enum Parsed {
    Message(Box<InboundMessage>),
    Ignore(String),
}

impl Parsed {
    /// The answer to the platform: queue the message, or acknowledge and drop it; `ack` either way.
    pub fn into_decoded(self, ack: HttpReply) -> Decoded {
        match self {
            Parsed::Message(m) => Decoded::Messages {
                messages: vec![*m],
                ack,
            },
            Parsed::Ignore(reason) => Decoded::Ignore { reason, ack },
        }
    }
}

/// A webhook request that must be refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChannelError {
    /// Signature, token or timestamp check failed: `401`.
    #[error("unauthorized: {0}")]
    Unauthorized(String),
    /// Not a request this platform sends (malformed body, missing field, cannot decrypt): `400`.
    #[error("bad request: {0}")]
    BadRequest(String),
}

/// A reply that could not be sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// Worth retrying: network error, 5xx, 429, an expired access token. `retry_after` when the
    /// platform said how long to wait.
    #[error("temporary failure: {message}")]
    Retryable {
        message: String,
        retry_after: Option<Duration>,
    },
    /// Retrying cannot help: bad credentials, the chat is gone, an expired DingTalk sessionWebhook.
    #[error("permanent failure: {0}")]
    Permanent(String),
}

impl SendError {
    pub fn retryable(message: impl Into<String>) -> Self {
        SendError::Retryable {
            message: message.into(),
            retry_after: None,
        }
    }
}

/// How a platform measures a message's length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LengthUnit {
    /// Unicode scalar values.
    Chars,
    /// UTF-16 code units (Telegram).
    Utf16,
    /// UTF-8 bytes (WeCom, DingTalk).
    Bytes,
}

/// The longest message a platform accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkLimit {
    pub max: usize,
    pub unit: LengthUnit,
}

/// One configured account on one platform.
#[async_trait]
pub trait Adapter: Send + Sync + 'static {
    fn platform(&self) -> Platform;

    /// The configured account name.
    fn account(&self) -> &str;

    /// Verify and decode one webhook request. `now` is unix seconds (timestamp skew and replay checks).
    /// No I/O.
    fn handle(&self, req: &HttpRequest, now: i64) -> Result<Decoded, ChannelError>;

    /// How long one outgoing message may be.
    fn chunk_limit(&self) -> ChunkLimit;

    /// Send one chunk of a reply into the chat (and thread) `to` came from. `idempotency_key` is the
    /// same for this chunk on every retry: pass it to the platform's own dedupe where there is one
    /// (Feishu `uuid`, WeCom `enable_duplicate_check`).
    async fn send(&self, to: &InboundMessage, text: &str, idempotency_key: &str) -> Result<(), SendError>;

    /// Check the account's credentials against the platform (`moltbot doctor`): what the platform
    /// said (the bot's name, "access token issued"), or why not. Sends no message.
    async fn check_credentials(&self) -> Result<String, SendError> {
        Ok("nothing to check".into())
    }
}

/// Where a long-lived connection (DingTalk Stream, Telegram long polling) hands messages. `Ok` once
/// the message is durably queued (or was already): only then is it acknowledged to the platform.
#[async_trait]
pub trait Sink: Send + Sync {
    async fn deliver(&self, message: InboundMessage) -> Result<(), String>;
}

/// A `Retry-After` header in seconds (the form chat platforms send).
pub fn retry_after(headers: &http::HeaderMap) -> Option<Duration> {
    headers
        .get(http::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}

/// The start of a response body for an error message (at most 300 characters).
pub(crate) fn snippet(body: &[u8]) -> String {
    let s = String::from_utf8_lossy(body);
    let mut s: String = s.chars().take(300).collect();
    if body.len() > 300 {
        s.push('…');
    }
    s
}

/// Constant-time equality of two secrets (tokens, signatures).
pub fn secure_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

/// `now - ts` within `window` seconds either way.
pub fn within_window(ts: i64, now: i64, window: i64) -> bool {
    (now - ts).abs() <= window
}
