//! OpenAI's Conversations API shapes (`/v1/conversations`, `/v1/conversations/{id}/items`).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;

/// A conversation as returned by create/retrieve/update.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ConversationObject {
    pub id: String,
    /// Always `"conversation"`.
    pub object: String,
    pub created_at: i64,
    #[schema(value_type = Object)]
    pub metadata: Map<String, Value>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ConversationDeleted {
    pub id: String,
    /// Always `"conversation.deleted"`.
    pub object: String,
    pub deleted: bool,
}

/// `POST /v1/conversations`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateConversationRequest {
    #[serde(default)]
    pub items: Option<Vec<InputItem>>,
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Map<String, Value>>,
}

/// `POST /v1/conversations/{id}`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateConversationRequest {
    #[schema(value_type = Object)]
    pub metadata: Map<String, Value>,
}

/// `POST /v1/conversations/{id}/items`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateItemsRequest {
    pub items: Vec<InputItem>,
}

/// An item sent by a client. Only message items are accepted (`type` may be omitted).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct InputItem {
    #[serde(rename = "type", default)]
    pub kind: Option<String>,
    pub role: String,
    /// A string, or an array of content parts (`input_text`, `output_text`, `text`).
    #[schema(value_type = Object)]
    pub content: Value,
}

/// A content part of a stored message item.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
pub struct ContentPart {
    /// `input_text` for user/system/developer messages, `output_text` for assistant messages.
    #[serde(rename = "type")]
    pub kind: String,
    pub text: String,
}

/// A stored conversation item: a message, or a `compaction` (a summary of earlier items).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ConversationItem {
    pub id: String,
    /// `"message"`, or `"compaction"` for a summary that replaced earlier items (role `system`, one
    /// `summary_text` part; see `compaction`).
    #[serde(rename = "type")]
    pub kind: String,
    pub role: String,
    pub content: Vec<ContentPart>,
    /// `completed`, `incomplete` (a truncated or failed turn) or `in_progress`.
    pub status: String,
    pub created_at: i64,
    /// On a `compaction` item: what it replaced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compaction: Option<CompactionDetails>,
    /// On an item replaced by a compaction: the id of that `compaction` item. The item stays stored and
    /// listed but is no longer sent to the model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compacted_by: Option<String>,
}

/// What a `compaction` item replaced (conversation memory).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
pub struct CompactionDetails {
    /// The items it replaced, oldest first: the earlier `compaction` item when there was one, then
    /// the messages summarised this time. Each of them names this item in `compacted_by`.
    pub replaced_item_ids: Vec<String>,
    /// Messages the summary stands for, including those of the earlier summaries it absorbed.
    pub message_count: u32,
    /// The model that wrote the summary.
    pub model: String,
    /// `auto` (the conversation passed `memory.compact_at` of its context budget) or `manual`.
    pub trigger: String,
    /// Prompt tokens of the conversation's context before the compaction.
    pub tokens_before: u32,
}

/// `POST /v1/conversations/{id}/compact` (the body is optional).
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CompactConversationRequest {
    /// Latest turns (a user message and what follows it) kept verbatim; default `memory.keep_recent`.
    /// `0` compacts every turn.
    #[serde(default)]
    pub keep_recent: Option<u32>,
    /// The model that writes the summary; default `memory.summary_model`, else the model of the
    /// conversation's latest reply.
    #[serde(default)]
    pub model: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ItemList {
    /// Always `"list"`.
    pub object: String,
    pub data: Vec<ConversationItem>,
    pub first_id: Option<String>,
    pub last_id: Option<String>,
    pub has_more: bool,
}

/// A conversation in a listing (`GET /v1/conversations`), newest activity first.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ConversationSummaryObject {
    pub id: String,
    /// Always `"conversation"`.
    pub object: String,
    pub created_at: i64,
    /// The newest message's time, or `created_at` when there is none.
    pub updated_at: i64,
    /// The first user message, whitespace collapsed, at most 80 characters; `""` when there is none.
    pub title: String,
    pub message_count: u64,
    /// Models that answered in it.
    pub models: Vec<String>,
    #[schema(value_type = Object)]
    pub metadata: Map<String, Value>,
}

/// `GET /v1/conversations`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ConversationList {
    /// Always `"list"`.
    pub object: String,
    pub data: Vec<ConversationSummaryObject>,
    pub has_more: bool,
    /// The cursor for the next page (`after`).
    pub last_id: Option<String>,
}
