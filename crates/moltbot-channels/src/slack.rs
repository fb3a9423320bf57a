//! Slack app, built to the Events API (<https://api.slack.com/apis/events-api>) and
//! `chat.postMessage`.
//!
//! Slack POSTs each event to `https://<host>/channels/slack/<account>` (the app's Event
//! Subscriptions Request URL), signed with the app's Signing Secret
//! (<https://api.slack.com/authentication/verifying-requests-from-slack>):
//! `X-Slack-Signature` = `v0=` + hex(HMAC-SHA256(signing secret, `v0:` + `X-Slack-Request-Timestamp`
//! + `:` + raw body)). A timestamp more than five minutes from now is refused (replay protection).
//!
//! Events used:
//! - `url_verification`: the challenge Slack sends when the Request URL is saved; echoed back.
//! - `message` with `channel_type` `im` (direct messages), and in channels (`channel`, `group`,
//!   `mpim`) when the app subscribes to them. Messages with a `subtype` (`bot_message`,
//!   `message_changed`, `message_deleted`, `file_share`, …), with a `bot_id`, or from the bot user
//!   itself are ignored.
//! - `app_mention`: a message in a channel that mentions the bot.
//!
//! **Duplicates.** Slack sends a channel message that mentions the bot twice, as `message` and as
//! `app_mention`, with different `event_id`s. The rule: in channels, a `message` event whose text
//! mentions the bot (`<@BOTID>`) is ignored; its `app_mention` event is the one answered. The
//! app must therefore subscribe to `app_mention`. Direct messages never get an `app_mention`.
//! The bot's user id comes from `bot_id` in the settings, else from the event envelope's
//! `authorizations` (the installation's bot user).
//!
//! **Threads.** In channels every reply is threaded: `thread_id` is the message's `thread_ts`, or
//! for a top-level message its own `ts` (the reply starts a thread under it, and the follow-ups in
//! that thread continue the same conversation). In direct messages a top-level message is answered
//! top-level (one ongoing conversation) and a message in a thread is answered in that thread.
//!
//! Replies go through `chat.postMessage` with the bot token. `&`, `<` and `>` in the reply are
//! escaped, so a reply cannot ping `<!channel>` or forge mentions and links. Slack has no
//! idempotency key for `chat.postMessage`: a send that times out after Slack accepted it is sent
//! again on retry.
//!
//! Slack retries an event that was not acknowledged within 3 seconds, with `X-Slack-Retry-Num`
//! and `X-Slack-Retry-Reason` headers and the same `event_id`; the pipeline's dedupe by event id
//! drops the repeats, so those headers need no handling here.

use std::time::Duration;

use async_trait::async_trait;
use hmac::{Hmac, Mac};
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::Sha256;

use crate::{
    Adapter, ChannelError, ChatType, ChunkLimit, Decoded, HttpReply, HttpRequest, InboundMessage, LengthUnit,
    Platform, SendError, within_window,
};

/// Slack's Web API.
pub const DEFAULT_API_BASE: &str = "https://slack.com/api";

/// How far `X-Slack-Request-Timestamp` may be from now: five minutes, as Slack recommends.
pub const SIGNATURE_WINDOW_SECS: i64 = 5 * 60;

/// The longest reply chunk, in characters. Slack truncates `text` after 40,000 characters and
/// recommends keeping messages to 4,000.
pub const CHUNK_CHARS: usize = 4000;

/// Upper bound for one `chat.postMessage` call.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// `chat.postMessage` errors worth retrying.
const RETRYABLE_ERRORS: &[&str] = &[
    "ratelimited",
    "internal_error",
    "fatal_error",
    "service_unavailable",
    "request_timeout",
];

/// One configured Slack app.
#[derive(Clone)]
pub struct SlackSettings {
    /// Bot User OAuth Token (`xoxb-…`).
    pub bot_token: String,
    /// Signing Secret (Basic Information → App Credentials).
    pub signing_secret: String,
    /// The bot's user id (`U…`), for mention detection; taken from each event's
    /// `authorizations` when unset.
    pub bot_id: Option<String>,
    /// Web API base, [`DEFAULT_API_BASE`] unless testing.
    pub api_base: String,
}

impl std::fmt::Debug for SlackSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SlackSettings")
            .field("bot_token", &"***")
            .field("signing_secret", &"***")
            .field("bot_id", &self.bot_id)
            .field("api_base", &self.api_base)
            .finish()
    }
}

impl SlackSettings {
    fn base(&self) -> &str {
        let base = self.api_base.trim_end_matches('/');
        if base.is_empty() { DEFAULT_API_BASE } else { base }
    }
}

// ---------------------------------------------------------------------------------------------
// Signature
// ---------------------------------------------------------------------------------------------

fn mac(signing_secret: &str, timestamp: &str, body: &[u8]) -> Hmac<Sha256> {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(signing_secret.as_bytes()).expect("HMAC accepts any key length");
    mac.update(b"v0:");
    mac.update(timestamp.as_bytes());
    mac.update(b":");
    mac.update(body);
    mac
}

/// Slack's `X-Slack-Signature` for a request: `v0=` + hex(HMAC-SHA256(signing_secret,
/// `v0:{timestamp}:{body}`)).
pub fn sign(signing_secret: &str, timestamp: &str, body: &[u8]) -> String {
    format!(
        "v0={}",
        hex::encode(mac(signing_secret, timestamp, body).finalize().into_bytes())
    )
}

/// Whether `signature` (the `X-Slack-Signature` value) signs `timestamp` and `body`.
/// Constant-time.
pub fn verify_signature(signing_secret: &str, timestamp: &str, body: &[u8], signature: &str) -> bool {
    let Some(hex_part) = signature.trim().strip_prefix("v0=") else {
        return false;
    };
    let Ok(given) = hex::decode(hex_part) else {
        return false;
    };
    mac(signing_secret, timestamp, body).verify_slice(&given).is_ok()
}

/// Check a request's `X-Slack-Request-Timestamp` and `X-Slack-Signature` at `now` (unix seconds).
pub fn check_signature(
    timestamp: Option<&str>,
    signature: Option<&str>,
    body: &[u8],
    signing_secret: &str,
    now: i64,
) -> Result<(), ChannelError> {
    if signing_secret.is_empty() {
        return Err(ChannelError::Unauthorized("no signing_secret configured".into()));
    }
    let (Some(timestamp), Some(signature)) = (timestamp, signature) else {
        return Err(ChannelError::Unauthorized(
            "missing X-Slack-Request-Timestamp or X-Slack-Signature header".into(),
        ));
    };
    let Ok(ts) = timestamp.trim().parse::<i64>() else {
        return Err(ChannelError::Unauthorized("timestamp is not a number".into()));
    };
    if !within_window(ts, now, SIGNATURE_WINDOW_SECS) {
        return Err(ChannelError::Unauthorized(
            "timestamp more than five minutes from now".into(),
        ));
    }
    if !verify_signature(signing_secret, timestamp, body, signature) {
        return Err(ChannelError::Unauthorized("signature mismatch".into()));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Events
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Envelope {
    #[serde(rename = "type")]
    kind: String,
    challenge: Option<String>,
    event_id: Option<String>,
    event: Option<Event>,
    authorizations: Vec<Authorization>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Authorization {
    user_id: Option<String>,
    is_bot: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Event {
    #[serde(rename = "type")]
    kind: String,
    subtype: Option<String>,
    user: Option<String>,
    bot_id: Option<String>,
    text: Option<String>,
    ts: Option<String>,
    thread_ts: Option<String>,
    channel: Option<String>,
    channel_type: Option<String>,
    user_profile: Option<UserProfile>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct UserProfile {
    display_name: Option<String>,
    real_name: Option<String>,
}

/// A decoded Events API request.
#[derive(Debug, Clone, PartialEq)]
pub enum Parsed {
    /// `url_verification`: answer with this challenge.
    Challenge(String),
    Message(Box<InboundMessage>),
    Ignore(String),
}

fn non_empty(s: &Option<String>) -> Option<&str> {
    s.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

/// Whether `text` contains Slack's mention of `bot` (`<@U…>` or the older `<@U…|name>`).
fn mentions(text: &str, bot: &str) -> bool {
    let plain = format!("<@{bot}>");
    let named = format!("<@{bot}|");
    text.contains(&plain) || text.contains(&named)
}

/// Remove every mention of `bot` from `text`.
fn strip_mentions(text: &str, bot: &str) -> String {
    let open = format!("<@{bot}");
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find(&open) {
        let after = &rest[i + open.len()..];
        let end = match after.chars().next() {
            Some('>') => Some(1),
            Some('|') => after.find('>').map(|j| j + 1),
            _ => None,
        };
        match end {
            Some(end) => {
                out.push_str(&rest[..i]);
                rest = &after[end..];
            }
            None => {
                out.push_str(&rest[..i + open.len()]);
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// Slack escapes `&`, `<` and `>` in message text; undo it for the model.
fn unescape(text: &str) -> String {
    text.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

/// Escape `&`, `<` and `>` for `chat.postMessage` text.
pub fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Unix seconds of a Slack `ts` (`"1515449522.000016"`).
fn ts_seconds(ts: &str) -> i64 {
    ts.split('.').next().and_then(|s| s.parse().ok()).unwrap_or(0)
}

/// Decode and normalize an Events API request body. `bot_id` is the bot's user id when
/// configured.
pub fn parse_event(account: &str, bot_id: Option<&str>, body: &[u8]) -> Result<Parsed, ChannelError> {
    let env: Envelope = serde_json::from_slice(body)
        .map_err(|e| ChannelError::BadRequest(format!("event is not JSON: {e}")))?;
    match env.kind.as_str() {
        "url_verification" => {
            return match env.challenge {
                Some(c) => Ok(Parsed::Challenge(c)),
                None => Err(ChannelError::BadRequest(
                    "url_verification without challenge".into(),
                )),
            };
        }
        "event_callback" => {}
        "" => return Err(ChannelError::BadRequest("request without type".into())),
        other => return Ok(Parsed::Ignore(format!("{other} request"))),
    }
    let Some(event_id) = non_empty(&env.event_id).map(str::to_owned) else {
        return Err(ChannelError::BadRequest("event_callback without event_id".into()));
    };
    let Some(event) = env.event else {
        return Err(ChannelError::BadRequest("event_callback without event".into()));
    };
    let bot = bot_id
        .map(str::trim)
        .filter(|b| !b.is_empty())
        .map(str::to_owned)
        .or_else(|| {
            env.authorizations
                .iter()
                .find(|a| a.is_bot)
                .and_then(|a| non_empty(&a.user_id).map(str::to_owned))
        });
    let is_mention_event = match event.kind.as_str() {
        "app_mention" => true,
        "message" => false,
        other => return Ok(Parsed::Ignore(format!("{other} event"))),
    };
    if let Some(subtype) = non_empty(&event.subtype) {
        return Ok(Parsed::Ignore(format!("message subtype {subtype}")));
    }
    if non_empty(&event.bot_id).is_some() {
        return Ok(Parsed::Ignore("message from a bot".into()));
    }
    let Some(user) = non_empty(&event.user).map(str::to_owned) else {
        return Ok(Parsed::Ignore("message without a user".into()));
    };
    if bot.as_deref() == Some(user.as_str()) {
        return Ok(Parsed::Ignore("the bot's own message".into()));
    }
    let Some(channel) = non_empty(&event.channel).map(str::to_owned) else {
        return Err(ChannelError::BadRequest(format!(
            "{} event without channel",
            event.kind
        )));
    };
    let Some(ts) = non_empty(&event.ts).map(str::to_owned) else {
        return Err(ChannelError::BadRequest(format!(
            "{} event without ts",
            event.kind
        )));
    };
    let chat_type = match non_empty(&event.channel_type) {
        Some("im") => ChatType::Direct,
        Some(_) => ChatType::Group,
        // app_mention carries no channel_type; direct-message channel ids start with D.
        None if channel.starts_with('D') => ChatType::Direct,
        None => ChatType::Group,
    };
    let raw = event.text.as_deref().unwrap_or_default();
    let mentioned = bot.as_deref().is_some_and(|b| mentions(raw, b));
    if !is_mention_event && chat_type == ChatType::Group && mentioned {
        return Ok(Parsed::Ignore(
            "channel message mentioning the bot: answered through its app_mention event".into(),
        ));
    }
    let stripped = match bot.as_deref() {
        Some(b) => strip_mentions(raw, b),
        None => raw.to_owned(),
    };
    let text = unescape(stripped.trim());
    let text = text.trim();
    if text.is_empty() {
        return Ok(Parsed::Ignore("empty text".into()));
    }
    let thread_ts = non_empty(&event.thread_ts).map(str::to_owned);
    let thread_id = match chat_type {
        ChatType::Group => Some(thread_ts.unwrap_or_else(|| ts.clone())),
        ChatType::Direct => thread_ts,
    };
    let sender_name = event
        .user_profile
        .as_ref()
        .and_then(|p| non_empty(&p.display_name).or(non_empty(&p.real_name)))
        .map(str::to_owned);
    Ok(Parsed::Message(Box::new(InboundMessage {
        platform: Platform::Slack,
        account: account.to_owned(),
        event_id,
        message_id: ts.clone(),
        chat_id: channel,
        chat_type,
        sender_id: user,
        sender_name,
        text: text.to_owned(),
        mentions_bot: is_mention_event || chat_type == ChatType::Direct || mentioned,
        thread_id,
        sent_at: ts_seconds(&ts),
        reply: Value::Null,
    })))
}

// ---------------------------------------------------------------------------------------------
// Adapter
// ---------------------------------------------------------------------------------------------

/// One configured Slack app (one workspace installation).
pub struct SlackAdapter {
    account: String,
    settings: SlackSettings,
    http: reqwest::Client,
}

impl std::fmt::Debug for SlackAdapter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SlackAdapter")
            .field("account", &self.account)
            .field("bot_id", &self.settings.bot_id)
            .field("api_base", &self.settings.api_base)
            .finish_non_exhaustive()
    }
}

impl SlackAdapter {
    pub fn new(account: &str, settings: SlackSettings, http: reqwest::Client) -> Self {
        SlackAdapter {
            account: account.to_owned(),
            settings,
            http,
        }
    }

    pub fn settings(&self) -> &SlackSettings {
        &self.settings
    }
}

#[async_trait]
impl Adapter for SlackAdapter {
    fn platform(&self) -> Platform {
        Platform::Slack
    }

    fn account(&self) -> &str {
        &self.account
    }

    fn handle(&self, req: &HttpRequest, now: i64) -> Result<Decoded, ChannelError> {
        if req.method != http::Method::POST {
            return Err(ChannelError::BadRequest("Slack events are POST".into()));
        }
        check_signature(
            req.header("x-slack-request-timestamp"),
            req.header("x-slack-signature"),
            &req.body,
            &self.settings.signing_secret,
            now,
        )?;
        Ok(
            match parse_event(&self.account, self.settings.bot_id.as_deref(), &req.body)? {
                Parsed::Challenge(c) => Decoded::Challenge(HttpReply::json(&json!({ "challenge": c }))),
                Parsed::Message(m) => Decoded::Messages {
                    messages: vec![*m],
                    ack: HttpReply::empty(),
                },
                Parsed::Ignore(reason) => Decoded::Ignore {
                    reason,
                    ack: HttpReply::empty(),
                },
            },
        )
    }

    fn chunk_limit(&self) -> ChunkLimit {
        ChunkLimit {
            max: CHUNK_CHARS,
            unit: LengthUnit::Chars,
        }
    }

    async fn check_credentials(&self) -> Result<String, SendError> {
        let resp = self
            .http
            .post(format!("{}/auth.test", self.settings.base()))
            .bearer_auth(&self.settings.bot_token)
            .timeout(REQUEST_TIMEOUT)
            .send()
            .await
            .map_err(|e| SendError::retryable(format!("auth.test: {}", e.without_url())))?;
        let status = resp.status();
        let v: Value = resp.json().await.unwrap_or_default();
        if v.get("ok").and_then(Value::as_bool) == Some(true) {
            let s = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or("?").to_owned();
            return Ok(format!(
                "bot {} ({}) in team {}",
                s("user"),
                s("user_id"),
                s("team")
            ));
        }
        let error = v.get("error").and_then(Value::as_str).unwrap_or("no answer");
        if status.is_server_error() || status.as_u16() == 429 {
            Err(SendError::retryable(format!("auth.test: HTTP {status}")))
        } else {
            Err(SendError::Permanent(format!("auth.test: {error}")))
        }
    }

    /// `chat.postMessage` into the message's channel, in its thread (see the module docs).
    /// Slack has no idempotency key for it, so `_idempotency_key` is unused.
    async fn send(&self, to: &InboundMessage, text: &str, _idempotency_key: &str) -> Result<(), SendError> {
        let mut body = json!({ "channel": to.chat_id, "text": escape(text) });
        if let Some(thread) = &to.thread_id {
            body["thread_ts"] = json!(thread);
        }
        let resp = self
            .http
            .post(format!("{}/chat.postMessage", self.settings.base()))
            .timeout(REQUEST_TIMEOUT)
            .bearer_auth(&self.settings.bot_token)
            .json(&body)
            .send()
            .await
            .map_err(|e| SendError::retryable(format!("chat.postMessage: {}", e.without_url())))?;
        let status = resp.status();
        let wait = crate::retry_after(resp.headers());
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| SendError::retryable(format!("chat.postMessage: {}", e.without_url())))?;
        if status.as_u16() == 429 || status.is_server_error() {
            return Err(SendError::Retryable {
                message: format!("chat.postMessage: HTTP {status}"),
                retry_after: wait,
            });
        }
        if !status.is_success() {
            return Err(SendError::Permanent(format!(
                "chat.postMessage: HTTP {status}: {}",
                crate::snippet(&bytes)
            )));
        }
        let answer: Value = serde_json::from_slice(&bytes).map_err(|_| {
            SendError::Permanent(format!("chat.postMessage: not JSON: {}", crate::snippet(&bytes)))
        })?;
        if answer.get("ok").and_then(Value::as_bool) == Some(true) {
            return Ok(());
        }
        let error = answer
            .get("error")
            .and_then(Value::as_str)
            .unwrap_or("unknown_error");
        let message = format!("chat.postMessage: {error}");
        if RETRYABLE_ERRORS.contains(&error) {
            return Err(SendError::Retryable {
                message,
                retry_after: wait,
            });
        }
        Err(SendError::Permanent(message))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mentions_are_removed_in_both_forms() {
        assert_eq!(strip_mentions("<@U1> hi <@U1|bot> there", "U1"), " hi  there");
        assert_eq!(strip_mentions("<@U12> keep", "U1"), "<@U12> keep");
        assert_eq!(strip_mentions("<@U1|never closed", "U1"), "<@U1|never closed");
        assert!(mentions("hey <@U1>", "U1"));
        assert!(mentions("hey <@U1|bot>", "U1"));
        assert!(!mentions("hey <@U12>", "U1"));
    }

    #[test]
    fn escaping_round_trips() {
        let s = "a < b && c > d <!channel>";
        assert_eq!(escape(s), "a &lt; b &amp;&amp; c &gt; d &lt;!channel&gt;");
        assert_eq!(unescape(&escape(s)), s);
        assert_eq!(unescape("&amp;lt;"), "&lt;", "unescaped once, & last");
    }

    #[test]
    fn ts_gives_unix_seconds() {
        assert_eq!(ts_seconds("1515449522.000016"), 1_515_449_522);
        assert_eq!(ts_seconds("junk"), 0);
    }
}
