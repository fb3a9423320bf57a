//! Conversations, messages, usage records and idempotency records, as the store keeps them.

use moltbot_api::Usage;
use serde_json::{Map, Value};

/// Who owns a record. The empty string is the anonymous principal (no authentication configured).
pub type Owner = str;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    System,
    Developer,
    User,
    Assistant,
    Tool,
}

impl Role {
    pub const ALL: [&'static str; 5] = ["system", "developer", "user", "assistant", "tool"];

    pub fn parse(s: &str) -> Option<Role> {
        Some(match s {
            "system" => Role::System,
            "developer" => Role::Developer,
            "user" => Role::User,
            "assistant" => Role::Assistant,
            "tool" => Role::Tool,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::Developer => "developer",
            Role::User => "user",
            Role::Assistant => "assistant",
            Role::Tool => "tool",
        }
    }

    /// System and developer messages are instructions, always kept when history is trimmed.
    pub fn is_instruction(self) -> bool {
        matches!(self, Role::System | Role::Developer)
    }
}

/// The state of a stored message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageStatus {
    /// Part of a finished exchange; used as context.
    Completed,
    /// A user message whose reply is being generated.
    InProgress,
    /// The turn failed: kept for the record, excluded from later context.
    Failed,
    /// The client went away mid-stream: exactly the prefix it received. Used as context.
    Truncated,
}

impl MessageStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            MessageStatus::Completed => "completed",
            MessageStatus::InProgress => "in_progress",
            MessageStatus::Failed => "failed",
            MessageStatus::Truncated => "truncated",
        }
    }

    pub fn parse(s: &str) -> Option<MessageStatus> {
        Some(match s {
            "completed" => MessageStatus::Completed,
            "in_progress" => MessageStatus::InProgress,
            "failed" => MessageStatus::Failed,
            "truncated" => MessageStatus::Truncated,
            _ => return None,
        })
    }

    /// Whether a message in this state is sent to the model as history.
    pub fn in_context(self) -> bool {
        matches!(self, MessageStatus::Completed | MessageStatus::Truncated)
    }

    /// The status OpenAI's Conversations API shows for an item.
    pub fn api_status(self) -> &'static str {
        match self {
            MessageStatus::Completed => "completed",
            MessageStatus::InProgress => "in_progress",
            MessageStatus::Failed | MessageStatus::Truncated => "incomplete",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Conversation {
    pub id: String,
    pub owner: String,
    pub created_at: i64,
    pub metadata: Map<String, Value>,
}

/// A message to append. `raw` keeps fields the text does not carry (tool calls, names, content parts).
#[derive(Debug, Clone, PartialEq)]
pub struct NewMessage {
    pub id: String,
    pub role: Role,
    pub content: String,
    pub raw: Option<Value>,
    pub status: MessageStatus,
    pub meta: TurnMeta,
    /// Set on a summary that replaces earlier messages (see [`crate::memory`]).
    pub compaction: Option<crate::memory::Compaction>,
}

impl NewMessage {
    pub fn new(role: Role, content: impl Into<String>, status: MessageStatus) -> Self {
        Self {
            id: crate::ids::message_id(),
            role,
            content: content.into(),
            raw: None,
            status,
            meta: TurnMeta::default(),
            compaction: None,
        }
    }
}

/// What is known about the exchange that produced an assistant message.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TurnMeta {
    pub model: Option<String>,
    pub backend: Option<String>,
    pub finish_reason: Option<String>,
    pub usage: Option<Usage>,
    pub latency_ms: Option<i64>,
    pub request_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct StoredMessage {
    pub id: String,
    pub conversation_id: String,
    pub seq: i64,
    pub created_at: i64,
    pub role: Role,
    pub content: String,
    pub raw: Option<Value>,
    pub status: MessageStatus,
    pub meta: TurnMeta,
    /// Set on a compaction item: a summary and what it replaced (see [`crate::memory`]).
    pub compaction: Option<crate::memory::Compaction>,
    /// The compaction item that replaced this message: kept for the record, no longer sent as context.
    pub compacted_by: Option<String>,
}

/// One exchange's accounting, recorded whether or not the messages are stored.
#[derive(Debug, Clone, PartialEq)]
pub struct UsageRecord {
    pub id: String,
    pub owner: String,
    pub conversation_id: Option<String>,
    pub request_id: Option<String>,
    pub model: String,
    pub backend: Option<String>,
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
    pub latency_ms: i64,
    /// `ok`, `error`, `cancelled`.
    pub outcome: String,
    pub created_at: i64,
}

/// A remembered response for `Idempotency-Key`.
#[derive(Debug, Clone, PartialEq)]
pub struct IdempotencyRecord {
    pub owner: String,
    pub key: String,
    pub request_hash: String,
    /// `None` while the first request is still running.
    pub response: Option<StoredResponse>,
    pub created_at: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct StoredResponse {
    pub status: u16,
    pub content_type: String,
    pub body: Vec<u8>,
    /// Response headers worth replaying (e.g. the conversation id).
    pub headers: Vec<(String, String)>,
}

/// Listing order and cursor for conversation items.
#[derive(Debug, Clone, PartialEq)]
pub struct ItemQuery {
    /// Return items after this item id in the given order.
    pub after: Option<String>,
    pub limit: u32,
    pub ascending: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaStatus {
    /// Highest migration applied in the database (0 for an empty database).
    pub applied: i64,
    /// Highest migration this binary knows.
    pub known: i64,
    /// Migrations this binary knows that the database lacks.
    pub pending: Vec<i64>,
}

impl SchemaStatus {
    pub fn is_current(&self) -> bool {
        self.pending.is_empty()
    }
}

/// Listing and searching conversations: one owner's (`/v1/conversations`) or everyone's (admin).
/// Ordered by last activity, newest first (`updated_at DESC, id DESC`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ConversationQuery {
    /// Only this owner's conversations; `None` = every owner.
    pub owner: Option<String>,
    /// Case-insensitive substring of any message's content (ASCII case folding on SQLite).
    pub text: Option<String>,
    /// Only conversations with a message produced by this model.
    pub model: Option<String>,
    /// Last activity at or after (unix seconds).
    pub since: Option<i64>,
    /// Last activity before (unix seconds, exclusive).
    pub until: Option<i64>,
    pub limit: u32,
    /// Return conversations after this conversation id in the listing order.
    pub after: Option<String>,
}

/// A conversation with what a listing shows about it.
#[derive(Debug, Clone, PartialEq)]
pub struct ConversationSummary {
    pub conversation: Conversation,
    /// The newest message's `created_at`, or the conversation's when it has none.
    pub updated_at: i64,
    pub message_count: u64,
    /// The first user message, whitespace collapsed, at most [`ConversationSummary::TITLE_CHARS`]
    /// characters; empty when there is none.
    pub title: String,
    /// Distinct models that answered in it, sorted.
    pub models: Vec<String>,
}

impl ConversationSummary {
    pub const TITLE_CHARS: usize = 80;

    /// A title from a message's text: whitespace runs become one space, at most
    /// [`Self::TITLE_CHARS`] characters.
    pub fn title_from(text: &str) -> String {
        let collapsed = text.split_whitespace().collect::<Vec<_>>().join(" ");
        collapsed.chars().take(Self::TITLE_CHARS).collect()
    }
}

/// How usage records are grouped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UsageGroupBy {
    /// UTC day of `created_at`; the group is `YYYY-MM-DD`.
    Day,
    /// The owner (API key id).
    Key,
    Model,
}

impl UsageGroupBy {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "day" => UsageGroupBy::Day,
            "key" => UsageGroupBy::Key,
            "model" => UsageGroupBy::Model,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            UsageGroupBy::Day => "day",
            UsageGroupBy::Key => "key",
            UsageGroupBy::Model => "model",
        }
    }
}

/// Usage aggregation over `since <= created_at < until`.
#[derive(Debug, Clone, PartialEq)]
pub struct UsageQuery {
    pub group_by: UsageGroupBy,
    pub since: i64,
    pub until: i64,
    /// Only this owner's records; `None` = every owner.
    pub owner: Option<String>,
}

/// One group of [`UsageQuery`]. Days come oldest first; keys and models by total tokens, then name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageRow {
    pub group: String,
    pub requests: u64,
    /// Records whose outcome is `error` (a client that went away, `cancelled`, is not an error).
    pub errors: u64,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
}
