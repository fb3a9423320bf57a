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

/// A stored conversation item (a message).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ConversationItem {
    pub id: String,
    /// Always `"message"`.
    #[serde(rename = "type")]
    pub kind: String,
    pub role: String,
    pub content: Vec<ContentPart>,
    /// `completed`, `incomplete` (a truncated or failed turn) or `in_progress`.
    pub status: String,
    pub created_at: i64,
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
