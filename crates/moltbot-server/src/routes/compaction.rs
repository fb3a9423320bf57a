//! Conversation memory in the API (docs/memory.md): `POST /v1/conversations/{id}/compact`, and how
//! compaction items and the items they replaced look in `/v1/conversations/{id}/items` and the admin
//! transcript. Merged into the conversations router (same `conversations` scope); compacting also
//! needs the `chat` scope, since it asks a model.

use axum::extract::{Path, State};
use bytes::Bytes;
use moltbot_api::{CompactConversationRequest, CompactionDetails, ConversationItem, ErrorEnvelope};
use moltbot_core::{ChatError, CompactRequest, Compaction, Scope, StoreError, StoredMessage};

use super::conversations::item_object;
use crate::error::{ApiError, current_request_id};
use crate::extract::parse_json;
use crate::principal::Principal;
use crate::state::AppState;

pub const COMPACT: &str = "/v1/conversations/{conversation_id}/compact";

/// Item `type` of a summary.
pub const COMPACTION_TYPE: &str = "compaction";
/// Content part `type` of a summary's text.
pub const SUMMARY_TEXT: &str = "summary_text";

pub fn compaction_details(c: &Compaction) -> CompactionDetails {
    CompactionDetails {
        replaced_item_ids: c.replaced_ids.clone(),
        message_count: c.message_count,
        model: c.model.clone(),
        trigger: c.trigger.as_str().to_owned(),
        tokens_before: c.tokens_before,
    }
}

/// Add what conversation memory knows about `m` to its item: a summary becomes a `compaction` item
/// with a `summary_text` part; a replaced message names its summary in `compacted_by`.
pub fn with_memory(m: &StoredMessage, mut item: ConversationItem) -> ConversationItem {
    if let Some(c) = &m.compaction {
        COMPACTION_TYPE.clone_into(&mut item.kind);
        for part in &mut item.content {
            SUMMARY_TEXT.clone_into(&mut part.kind);
        }
        item.compaction = Some(compaction_details(c));
    }
    item.compacted_by.clone_from(&m.compacted_by);
    item
}

/// Compact a conversation now: its older turns become one summary item (returned), the latest
/// `keep_recent` turns and every system/developer message stay as they are.
#[utoipa::path(post, path = "/v1/conversations/{conversation_id}/compact", tag = "conversations",
    params(("conversation_id" = String, Path)),
    request_body(content = Option<CompactConversationRequest>, description = "Optional; `{}` or no body uses the configured defaults."),
    responses((status = 200, body = ConversationItem), (status = 400, body = ErrorEnvelope),
        (status = 404, body = ErrorEnvelope), (status = 409, body = ErrorEnvelope)))]
pub async fn compact(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<axum::Json<ConversationItem>, ApiError> {
    if !principal.has_scope(Scope::Chat) {
        return Err(ApiError::Forbidden {
            message: "You have insufficient permissions for this operation. Missing scope: chat.".into(),
            code: "insufficient_scope",
        });
    }
    let req: CompactConversationRequest = if body.iter().all(u8::is_ascii_whitespace) {
        CompactConversationRequest::default()
    } else {
        parse_json(&body)?
    };
    let request = CompactRequest {
        keep_recent: req.keep_recent,
        model: req.model,
        request_id: current_request_id().unwrap_or_default(),
    };
    let item = state
        .chat
        .compact_conversation(principal.owner(), &id, request)
        .await
        .map_err(|e| match e {
            ChatError::Store(StoreError::Conflict(_)) => ApiError::Conflict {
                message:
                    "The conversation was compacted by another request at the same time; list its items \
                          to see the summary."
                        .into(),
                code: "compaction_conflict",
            },
            e => e.into(),
        })?;
    Ok(axum::Json(item_object(&item)))
}
