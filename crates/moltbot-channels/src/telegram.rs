//! Telegram bot, built to the Bot API (<https://core.telegram.org/bots/api>).
//!
//! Updates arrive one of two ways:
//! - **webhook**: Telegram POSTs each `Update` to `https://<host>/channels/telegram/<account>`
//!   (registered with `setWebhook`). Telegram does not sign updates; instead `setWebhook`'s
//!   `secret_token` comes back in the `X-Telegram-Bot-Api-Secret-Token` header of every request.
//!   moltbot requires it: a request without the configured token is refused.
//! - **long polling**: [`TelegramAdapter::get_updates`] calls `getUpdates` in a loop (the server
//!   keeps the offset). Telegram refuses `getUpdates` with `409 Conflict` while a webhook is set;
//!   [`TelegramAdapter::delete_webhook`] removes it.
//!
//! Only `message` updates with text are answered. Entity offsets are in UTF-16 code units, so the
//! bot's `@mention` is removed on the UTF-16 form of the text.
//!
//! Replies go through `sendMessage` as plain text (no `parse_mode`), in the same forum topic, and
//! in groups as a reply to the user's message. The Bot API has no idempotency key: a send that
//! times out after Telegram accepted it is sent again on retry.

use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::{
    Adapter, ChannelError, ChatType, ChunkLimit, Decoded, HttpReply, HttpRequest, InboundMessage, LengthUnit,
    Platform, SendError, secure_eq,
};

/// The public Bot API server.
pub const DEFAULT_API_BASE: &str = "https://api.telegram.org";

/// The header that carries `setWebhook`'s `secret_token`.
pub const SECRET_TOKEN_HEADER: &str = "x-telegram-bot-api-secret-token";

/// Longest message text: 4096 characters after entity parsing, counted in UTF-16 code units.
pub const CHUNK_UTF16: usize = 4096;

/// Upper bound for one `sendMessage` / `deleteWebhook` call.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Extra time a `getUpdates` call may take beyond its long-poll `timeout`.
const POLL_GRACE: Duration = Duration::from_secs(15);

/// One configured Telegram bot.
#[derive(Clone)]
pub struct TelegramSettings {
    /// The token from @BotFather, `<bot id>:<secret>`.
    pub bot_token: String,
    /// Webhook mode: the `secret_token` given to `setWebhook` (1–256 of `A-Za-z0-9_-`). Required
    /// for webhook requests; unused in polling mode.
    pub secret_token: Option<String>,
    /// The bot's username without `@` (mention detection). Usernames are case-insensitive.
    pub bot_id: Option<String>,
    /// Bot API base, [`DEFAULT_API_BASE`] unless testing or using a local Bot API server.
    pub api_base: String,
}

impl std::fmt::Debug for TelegramSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TelegramSettings")
            .field("bot_token", &"***")
            .field("secret_token", &self.secret_token.as_ref().map(|_| "***"))
            .field("bot_id", &self.bot_id)
            .field("api_base", &self.api_base)
            .finish()
    }
}

impl TelegramSettings {
    fn base(&self) -> &str {
        let base = self.api_base.trim_end_matches('/');
        if base.is_empty() { DEFAULT_API_BASE } else { base }
    }

    /// The bot's username, without a leading `@`, when configured.
    fn username(&self) -> Option<&str> {
        self.bot_id
            .as_deref()
            .map(|b| b.trim().trim_start_matches('@'))
            .filter(|b| !b.is_empty())
    }

    /// The bot's numeric user id: the part of the token before `:`.
    fn numeric_id(&self) -> Option<i64> {
        self.bot_token.split_once(':')?.0.trim().parse().ok()
    }
}

// ---------------------------------------------------------------------------------------------
// Webhook secret token
// ---------------------------------------------------------------------------------------------

/// Check the `X-Telegram-Bot-Api-Secret-Token` header against the configured token, in constant
/// time. Without a configured token every request is refused: webhook mode needs one.
pub fn check_secret_token(header: Option<&str>, expected: Option<&str>) -> Result<(), ChannelError> {
    let Some(expected) = expected.filter(|e| !e.is_empty()) else {
        return Err(ChannelError::Unauthorized(
            "no secret_token configured: webhook mode requires one".into(),
        ));
    };
    let Some(given) = header else {
        return Err(ChannelError::Unauthorized(
            "missing X-Telegram-Bot-Api-Secret-Token header".into(),
        ));
    };
    if !secure_eq(given.as_bytes(), expected.as_bytes()) {
        return Err(ChannelError::Unauthorized("secret token mismatch".into()));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Update
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Deserialize)]
struct User {
    id: i64,
    #[serde(default)]
    is_bot: bool,
    #[serde(default)]
    first_name: String,
    #[serde(default)]
    last_name: Option<String>,
    #[serde(default)]
    username: Option<String>,
}

impl User {
    fn display_name(&self) -> Option<String> {
        if let Some(u) = self.username.as_deref().filter(|u| !u.is_empty()) {
            return Some(u.to_owned());
        }
        let full = match self.last_name.as_deref().filter(|l| !l.is_empty()) {
            Some(last) => format!("{} {last}", self.first_name),
            None => self.first_name.clone(),
        };
        let full = full.trim();
        (!full.is_empty()).then(|| full.to_owned())
    }
}

#[derive(Debug, Deserialize)]
struct Chat {
    id: i64,
    #[serde(rename = "type", default)]
    kind: String,
    #[serde(default)]
    title: Option<String>,
    #[serde(default)]
    username: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Entity {
    #[serde(rename = "type")]
    kind: String,
    offset: usize,
    length: usize,
    #[serde(default)]
    user: Option<User>,
}

/// The message a message replies to; only what mention detection needs.
#[derive(Debug, Deserialize)]
struct RepliedTo {
    #[serde(default)]
    from: Option<User>,
    /// In forum topics, a message that is not an explicit reply carries the topic's creation
    /// service message as `reply_to_message`; that is not a reply to its creator.
    #[serde(default)]
    forum_topic_created: Option<Value>,
}

#[derive(Debug, Deserialize)]
struct Message {
    message_id: i64,
    #[serde(default)]
    message_thread_id: Option<i64>,
    #[serde(default)]
    from: Option<User>,
    #[serde(default)]
    sender_chat: Option<Chat>,
    #[serde(default)]
    date: i64,
    chat: Chat,
    #[serde(default)]
    is_topic_message: bool,
    #[serde(default)]
    is_automatic_forward: bool,
    #[serde(default)]
    reply_to_message: Option<RepliedTo>,
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    entities: Vec<Entity>,
    /// Everything else: names what a non-text message holds (`photo`, `sticker`, …).
    #[serde(flatten)]
    rest: Map<String, Value>,
}

/// Message fields that say what a message without text is, in the order they are reported.
const CONTENT_KINDS: &[&str] = &[
    "photo",
    "video",
    "animation",
    "document",
    "audio",
    "voice",
    "video_note",
    "sticker",
    "story",
    "contact",
    "location",
    "venue",
    "poll",
    "dice",
    "game",
    "invoice",
    "new_chat_members",
    "left_chat_member",
    "new_chat_title",
    "new_chat_photo",
    "pinned_message",
    "forum_topic_created",
];

pub use crate::Parsed;

fn eq_username(a: &str, b: &str) -> bool {
    a.eq_ignore_ascii_case(b)
}

/// Remove the bot's mentions from `text` and say whether there was one. `entities` offsets and
/// lengths are UTF-16 code units. Handled: `mention` (`@botname`), `bot_command` with an
/// `@botname` suffix (`/help@botname` → `/help`) and `text_mention` of the bot. A removed mention
/// also takes the whitespace after it when it starts the text or follows whitespace.
fn strip_bot_mentions(text: &str, entities: &[Entity], bot: Option<&str>) -> (String, bool) {
    let units: Vec<u16> = text.encode_utf16().collect();
    let Some(bot) = bot else {
        return (text.to_owned(), false);
    };
    let mut cuts: Vec<(usize, usize)> = Vec::new();
    let mut mentioned = false;
    let is_space = |u: u16| char::from_u32(u32::from(u)).is_some_and(char::is_whitespace);
    for e in entities {
        let Some(end) = e.offset.checked_add(e.length).filter(|&end| end <= units.len()) else {
            continue;
        };
        let part = String::from_utf16_lossy(&units[e.offset..end]);
        let (start, whole) = match e.kind.as_str() {
            "mention" => match part.strip_prefix('@') {
                Some(name) if eq_username(name, bot) => (e.offset, true),
                _ => continue,
            },
            "bot_command" => match part.split_once('@') {
                Some((command, name)) if eq_username(name, bot) => {
                    (e.offset + command.encode_utf16().count(), false)
                }
                _ => continue,
            },
            "text_mention" => match &e.user {
                Some(u) if u.is_bot && u.username.as_deref().is_some_and(|n| eq_username(n, bot)) => {
                    (e.offset, true)
                }
                _ => continue,
            },
            _ => continue,
        };
        mentioned = true;
        let mut end = end;
        if whole && (start == 0 || is_space(units[start - 1])) {
            while end < units.len() && is_space(units[end]) {
                end += 1;
            }
        }
        cuts.push((start, end));
    }
    if cuts.is_empty() {
        return (text.to_owned(), mentioned);
    }
    cuts.sort_unstable();
    let mut kept: Vec<u16> = Vec::with_capacity(units.len());
    let mut pos = 0;
    for (start, end) in cuts {
        if start > pos {
            kept.extend_from_slice(&units[pos..start]);
        }
        pos = pos.max(end);
    }
    if pos < units.len() {
        kept.extend_from_slice(&units[pos..]);
    }
    (String::from_utf16_lossy(&kept), mentioned)
}

/// Decode one `Update` object.
fn parse_update_value(
    account: &str,
    settings: &TelegramSettings,
    update: Value,
) -> Result<Parsed, ChannelError> {
    let Value::Object(mut fields) = update else {
        return Err(ChannelError::BadRequest("update is not a JSON object".into()));
    };
    let Some(update_id) = fields.get("update_id").and_then(Value::as_i64) else {
        return Err(ChannelError::BadRequest("update without update_id".into()));
    };
    let Some(message) = fields.remove("message") else {
        let kind = fields
            .keys()
            .find(|k| k.as_str() != "update_id")
            .map(String::as_str)
            .unwrap_or("empty");
        return Ok(Parsed::Ignore(format!("{kind} update")));
    };
    let msg: Message = serde_json::from_value(message)
        .map_err(|e| ChannelError::BadRequest(format!("update {update_id}: malformed message: {e}")))?;
    Ok(parse_message(account, settings, update_id, &msg))
}

fn parse_message(account: &str, settings: &TelegramSettings, update_id: i64, msg: &Message) -> Parsed {
    let chat_type = match msg.chat.kind.as_str() {
        "private" => ChatType::Direct,
        "group" | "supergroup" => ChatType::Group,
        other => return Parsed::Ignore(format!("message in a {other:?} chat")),
    };
    if msg.is_automatic_forward {
        return Parsed::Ignore("automatic forward from a linked channel".into());
    }
    // Sent on behalf of a chat (an anonymous group admin, or a user writing as their channel):
    // the chat is the sender. Otherwise the user, unless it is a bot.
    let (sender_id, sender_name) = match (&msg.sender_chat, &msg.from) {
        (Some(sc), _) => (
            sc.id.to_string(),
            sc.title.clone().or_else(|| sc.username.clone()),
        ),
        (None, Some(from)) if from.is_bot => {
            return Parsed::Ignore("message from a bot".into());
        }
        (None, Some(from)) => (from.id.to_string(), from.display_name()),
        (None, None) => return Parsed::Ignore("message without a sender".into()),
    };
    let Some(text) = msg.text.as_deref() else {
        let kind = CONTENT_KINDS
            .iter()
            .find(|k| msg.rest.contains_key(**k))
            .copied()
            .unwrap_or("non-text");
        return Parsed::Ignore(format!("{kind} message"));
    };
    let bot = settings.username();
    let (stripped, mentioned) = strip_bot_mentions(text, &msg.entities, bot);
    let reply_to_bot = msg.reply_to_message.as_ref().is_some_and(|r| {
        r.forum_topic_created.is_none()
            && r.from.as_ref().is_some_and(|u| {
                u.is_bot
                    && (bot.is_some_and(|b| u.username.as_deref().is_some_and(|n| eq_username(n, b)))
                        || settings.numeric_id() == Some(u.id))
            })
    });
    let mentions_bot = chat_type == ChatType::Direct || mentioned || reply_to_bot;
    let text = stripped.trim();
    if text.is_empty() {
        return Parsed::Ignore("empty text".into());
    }
    let thread_id = if msg.is_topic_message {
        msg.message_thread_id.map(|t| t.to_string())
    } else {
        None
    };
    Parsed::Message(Box::new(InboundMessage {
        platform: Platform::Telegram,
        account: account.to_owned(),
        event_id: update_id.to_string(),
        message_id: msg.message_id.to_string(),
        chat_id: msg.chat.id.to_string(),
        chat_type,
        sender_id,
        sender_name,
        text: text.to_owned(),
        mentions_bot,
        thread_id,
        sent_at: msg.date,
        reply: Value::Null,
    }))
}

/// Decode a webhook body (one `Update`) and normalize its message.
pub fn parse_update(account: &str, settings: &TelegramSettings, body: &[u8]) -> Result<Parsed, ChannelError> {
    let update: Value = serde_json::from_slice(body)
        .map_err(|e| ChannelError::BadRequest(format!("update is not JSON: {e}")))?;
    parse_update_value(account, settings, update)
}

// ---------------------------------------------------------------------------------------------
// Bot API calls
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct ApiAnswer {
    ok: bool,
    result: Value,
    error_code: Option<i64>,
    description: Option<String>,
    parameters: Option<ResponseParameters>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct ResponseParameters {
    retry_after: Option<u64>,
    migrate_to_chat_id: Option<i64>,
}

/// One configured Telegram bot.
pub struct TelegramAdapter {
    account: String,
    settings: TelegramSettings,
    http: reqwest::Client,
}

impl std::fmt::Debug for TelegramAdapter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TelegramAdapter")
            .field("account", &self.account)
            .field("bot_id", &self.settings.bot_id)
            .field("api_base", &self.settings.api_base)
            .finish_non_exhaustive()
    }
}

impl TelegramAdapter {
    pub fn new(account: &str, settings: TelegramSettings, http: reqwest::Client) -> Self {
        TelegramAdapter {
            account: account.to_owned(),
            settings,
            http,
        }
    }

    pub fn settings(&self) -> &TelegramSettings {
        &self.settings
    }

    /// Call a Bot API method; `Ok` is the answer's `result`. Error messages never contain the
    /// URL: it holds the bot token.
    async fn call(&self, method: &str, body: &Value, timeout: Duration) -> Result<Value, SendError> {
        let url = format!("{}/bot{}/{method}", self.settings.base(), self.settings.bot_token);
        let resp = self
            .http
            .post(url)
            .timeout(timeout)
            .json(body)
            .send()
            .await
            .map_err(|e| SendError::retryable(format!("{method}: {}", e.without_url())))?;
        let status = resp.status();
        let header_wait = crate::retry_after(resp.headers());
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| SendError::retryable(format!("{method}: {}", e.without_url())))?;
        let answer: Option<ApiAnswer> = serde_json::from_slice(&bytes).ok();
        if status.is_success()
            && let Some(a) = &answer
            && a.ok
        {
            return Ok(answer.map(|a| a.result).unwrap_or_default());
        }
        let answer = answer.unwrap_or_default();
        let code = answer
            .error_code
            .and_then(|c| u16::try_from(c).ok())
            .filter(|_| status.is_success())
            .unwrap_or(status.as_u16());
        let description = answer
            .description
            .clone()
            .unwrap_or_else(|| crate::snippet(&bytes));
        let params = answer.parameters.unwrap_or_default();
        let what = format!("{method}: HTTP {code}: {description}");
        match code {
            429 => Err(SendError::Retryable {
                message: what,
                retry_after: params.retry_after.map(Duration::from_secs).or(header_wait),
            }),
            500..=599 => Err(SendError::Retryable {
                message: what,
                retry_after: params.retry_after.map(Duration::from_secs).or(header_wait),
            }),
            401 | 404 => Err(SendError::Permanent(format!(
                "{what} (the bot token was refused: check bot_token)"
            ))),
            409 if method == "getUpdates" => Err(SendError::Permanent(format!(
                "{what} (long polling cannot run while a webhook is set, or while another \
                 getUpdates client polls this bot: delete the webhook or stop the other client)"
            ))),
            _ => match params.migrate_to_chat_id {
                Some(new_id) => Err(SendError::Permanent(format!(
                    "{what} (the group became the supergroup {new_id})"
                ))),
                None => Err(SendError::Permanent(what)),
            },
        }
    }

    /// Long polling: the messages after `offset` and the offset to ask for next (the last
    /// update's `update_id` + 1; `None` when there was no update). Updates that are not
    /// messages, and malformed ones, are skipped but still advance the offset. Waits up to
    /// `timeout_secs` for an update to arrive.
    pub async fn get_updates(
        &self,
        offset: Option<i64>,
        timeout_secs: u32,
    ) -> Result<(Vec<InboundMessage>, Option<i64>), SendError> {
        let mut body = json!({ "timeout": timeout_secs, "allowed_updates": ["message"] });
        if let Some(offset) = offset {
            body["offset"] = json!(offset);
        }
        let wait = Duration::from_secs(u64::from(timeout_secs)) + POLL_GRACE;
        let result = self.call("getUpdates", &body, wait).await?;
        let Value::Array(updates) = result else {
            return Err(SendError::Permanent(
                "getUpdates: result is not a list of updates".into(),
            ));
        };
        let mut messages = Vec::new();
        let mut last: Option<i64> = None;
        for update in updates {
            if let Some(id) = update.get("update_id").and_then(Value::as_i64) {
                last = Some(last.map_or(id, |l| l.max(id)));
            }
            match parse_update_value(&self.account, &self.settings, update) {
                Ok(Parsed::Message(m)) => messages.push(*m),
                Ok(Parsed::Ignore(reason)) => {
                    tracing::debug!(account = %self.account, %reason, "telegram update ignored");
                }
                Err(e) => {
                    tracing::warn!(account = %self.account, error = %e, "telegram update skipped");
                }
            }
        }
        Ok((messages, last.map(|l| l + 1)))
    }

    /// Remove the webhook so that `getUpdates` works (pending updates are kept).
    pub async fn delete_webhook(&self) -> Result<(), SendError> {
        self.call(
            "deleteWebhook",
            &json!({ "drop_pending_updates": false }),
            REQUEST_TIMEOUT,
        )
        .await
        .map(|_| ())
    }
}

/// A chat or message id as the Bot API wants it: a number when it is one.
fn id_value(id: &str) -> Value {
    id.parse::<i64>().map_or_else(|_| json!(id), |n| json!(n))
}

#[async_trait]
impl Adapter for TelegramAdapter {
    fn platform(&self) -> Platform {
        Platform::Telegram
    }

    fn account(&self) -> &str {
        &self.account
    }

    fn handle(&self, req: &HttpRequest, _now: i64) -> Result<Decoded, ChannelError> {
        if req.method != http::Method::POST {
            return Err(ChannelError::BadRequest("Telegram webhooks are POST".into()));
        }
        check_secret_token(
            req.header(SECRET_TOKEN_HEADER),
            self.settings.secret_token.as_deref(),
        )?;
        Ok(parse_update(&self.account, &self.settings, &req.body)?.into_decoded(HttpReply::empty()))
    }

    fn chunk_limit(&self) -> ChunkLimit {
        ChunkLimit {
            max: CHUNK_UTF16,
            unit: LengthUnit::Utf16,
        }
    }

    async fn check_credentials(&self) -> Result<String, SendError> {
        let me = self.call("getMe", &json!({}), REQUEST_TIMEOUT).await?;
        Ok(format!(
            "bot @{}",
            me.get("username").and_then(Value::as_str).unwrap_or("?")
        ))
    }

    /// `sendMessage` as plain text into the message's chat and forum topic; in groups as a reply
    /// to the user's message. The Bot API has no idempotency key, so `_idempotency_key` is unused.
    async fn send(&self, to: &InboundMessage, text: &str, _idempotency_key: &str) -> Result<(), SendError> {
        let mut body = json!({ "chat_id": id_value(&to.chat_id), "text": text });
        if let Some(thread) = &to.thread_id {
            body["message_thread_id"] = id_value(thread);
        }
        if to.chat_type == ChatType::Group && !to.message_id.is_empty() {
            body["reply_parameters"] = json!({
                "message_id": id_value(&to.message_id),
                "allow_sending_without_reply": true,
            });
        }
        self.call("sendMessage", &body, REQUEST_TIMEOUT).await.map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entity(kind: &str, offset: usize, length: usize) -> Entity {
        Entity {
            kind: kind.into(),
            offset,
            length,
            user: None,
        }
    }

    #[test]
    fn mention_is_cut_on_utf16_offsets() {
        // "😀" is two UTF-16 units, so "@my_bot" starts at unit 3, not char 2.
        let text = "😀 @my_bot hi";
        let (t, m) = strip_bot_mentions(text, &[entity("mention", 3, 7)], Some("my_bot"));
        assert!(m);
        assert_eq!(t, "😀 hi");
        // The same entity read as char offsets would cut the wrong place.
        let (t, m) = strip_bot_mentions(text, &[entity("mention", 2, 7)], Some("my_bot"));
        assert!(!m);
        assert_eq!(t, text);
    }

    #[test]
    fn other_mentions_and_bad_offsets_are_kept() {
        let text = "@alice @MY_BOT look";
        let ents = [
            entity("mention", 0, 6),
            entity("mention", 7, 7),
            entity("mention", 50, 3),
        ];
        let (t, m) = strip_bot_mentions(text, &ents, Some("my_bot"));
        assert!(m, "usernames compare case-insensitively");
        assert_eq!(t, "@alice look");
    }

    #[test]
    fn command_loses_only_its_suffix() {
        let (t, m) = strip_bot_mentions(
            "/help@my_bot now",
            &[entity("bot_command", 0, 12)],
            Some("my_bot"),
        );
        assert!(m);
        assert_eq!(t, "/help now");
        let (t, m) = strip_bot_mentions("/help@other_bot", &[entity("bot_command", 0, 15)], Some("my_bot"));
        assert!(!m);
        assert_eq!(t, "/help@other_bot");
    }

    #[test]
    fn numeric_id_comes_from_the_token() {
        let s = TelegramSettings {
            bot_token: "123456:ABC-DEF".into(),
            secret_token: None,
            bot_id: Some("@My_Bot".into()),
            api_base: String::new(),
        };
        assert_eq!(s.numeric_id(), Some(123456));
        assert_eq!(s.username(), Some("My_Bot"));
        assert_eq!(s.base(), DEFAULT_API_BASE);
        assert!(!format!("{s:?}").contains("ABC-DEF"));
    }
}
