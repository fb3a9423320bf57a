//! Column lists and row decoding, shared by both backends (rows arrive as `AnyRow`).
//!
//! Every query names its columns: a newer release may have added columns this binary does not know.

use moltbot_api::Usage;
use moltbot_core::{
    Compaction, Conversation, IdempotencyRecord, MessageStatus, Role, StoreError, StoredMessage,
    StoredResponse, TurnMeta, UsageRecord,
};
use serde_json::{Map, Value};
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::error::{corrupt, db_err};

pub(crate) const CONVERSATION_COLUMNS: &str = "id, owner, created_at, metadata";

pub(crate) const MESSAGE_COLUMNS: &str = "id, conversation_id, seq, created_at, role, content, raw, status, \
     model, backend, finish_reason, prompt_tokens, completion_tokens, latency_ms, request_id, compaction, \
     compacted_by";

pub(crate) const USAGE_COLUMNS: &str = "id, owner, conversation_id, request_id, model, backend, \
     prompt_tokens, completion_tokens, latency_ms, outcome, created_at";

pub(crate) const IDEMPOTENCY_COLUMNS: &str =
    "owner, key, request_hash, status, content_type, body, headers, created_at";

fn get<'r, T>(row: &'r AnyRow, column: &str) -> Result<T, StoreError>
where
    T: sqlx::Decode<'r, sqlx::Any> + sqlx::Type<sqlx::Any>,
{
    row.try_get(column).map_err(db_err)
}

fn to_u32(v: i64, what: &str) -> Result<u32, StoreError> {
    u32::try_from(v).map_err(|e| corrupt(what, e))
}

pub(crate) fn metadata_json(metadata: &Map<String, Value>) -> Result<String, StoreError> {
    serde_json::to_string(metadata).map_err(|e| StoreError::Database(format!("cannot encode metadata: {e}")))
}

pub(crate) fn raw_json(raw: Option<&Value>) -> Result<Option<String>, StoreError> {
    raw.map(serde_json::to_string)
        .transpose()
        .map_err(|e| StoreError::Database(format!("cannot encode message: {e}")))
}

pub(crate) fn compaction_json(compaction: Option<&Compaction>) -> Result<Option<String>, StoreError> {
    compaction
        .map(serde_json::to_string)
        .transpose()
        .map_err(|e| StoreError::Database(format!("cannot encode compaction: {e}")))
}

pub(crate) fn headers_json(headers: &[(String, String)]) -> Result<String, StoreError> {
    serde_json::to_string(headers).map_err(|e| StoreError::Database(format!("cannot encode headers: {e}")))
}

pub(crate) fn conversation(row: &AnyRow) -> Result<Conversation, StoreError> {
    let metadata: String = get(row, "metadata")?;
    Ok(Conversation {
        id: get(row, "id")?,
        owner: get(row, "owner")?,
        created_at: get(row, "created_at")?,
        metadata: serde_json::from_str(&metadata).map_err(|e| corrupt("conversation metadata", e))?,
    })
}

pub(crate) fn message(row: &AnyRow) -> Result<StoredMessage, StoreError> {
    let role: String = get(row, "role")?;
    let status: String = get(row, "status")?;
    let raw: Option<String> = get(row, "raw")?;
    let compaction: Option<String> = get(row, "compaction")?;
    let prompt: Option<i64> = get(row, "prompt_tokens")?;
    let completion: Option<i64> = get(row, "completion_tokens")?;
    let usage = match (prompt, completion) {
        (None, None) => None,
        (p, c) => Some(Usage::new(
            to_u32(p.unwrap_or(0), "prompt_tokens")?,
            to_u32(c.unwrap_or(0), "completion_tokens")?,
        )),
    };
    Ok(StoredMessage {
        id: get(row, "id")?,
        conversation_id: get(row, "conversation_id")?,
        seq: get(row, "seq")?,
        created_at: get(row, "created_at")?,
        role: Role::parse(&role).ok_or_else(|| corrupt("message role", &role))?,
        content: get(row, "content")?,
        raw: raw
            .map(|r| serde_json::from_str(&r))
            .transpose()
            .map_err(|e| corrupt("message raw", e))?,
        status: MessageStatus::parse(&status).ok_or_else(|| corrupt("message status", &status))?,
        meta: TurnMeta {
            model: get(row, "model")?,
            backend: get(row, "backend")?,
            finish_reason: get(row, "finish_reason")?,
            usage,
            latency_ms: get(row, "latency_ms")?,
            request_id: get(row, "request_id")?,
        },
        compaction: compaction
            .map(|c| serde_json::from_str(&c))
            .transpose()
            .map_err(|e| corrupt("message compaction", e))?,
        compacted_by: get(row, "compacted_by")?,
    })
}

pub(crate) fn usage(row: &AnyRow) -> Result<UsageRecord, StoreError> {
    Ok(UsageRecord {
        id: get(row, "id")?,
        owner: get(row, "owner")?,
        conversation_id: get(row, "conversation_id")?,
        request_id: get(row, "request_id")?,
        model: get(row, "model")?,
        backend: get(row, "backend")?,
        prompt_tokens: to_u32(get(row, "prompt_tokens")?, "prompt_tokens")?,
        completion_tokens: to_u32(get(row, "completion_tokens")?, "completion_tokens")?,
        latency_ms: get(row, "latency_ms")?,
        outcome: get(row, "outcome")?,
        created_at: get(row, "created_at")?,
    })
}

pub(crate) fn idempotency(row: &AnyRow) -> Result<IdempotencyRecord, StoreError> {
    let status: Option<i64> = get(row, "status")?;
    let response = match status {
        None => None,
        Some(status) => {
            let headers: Option<String> = get(row, "headers")?;
            Some(StoredResponse {
                status: u16::try_from(status).map_err(|e| corrupt("idempotency status", e))?,
                content_type: get::<Option<String>>(row, "content_type")?.unwrap_or_default(),
                body: get::<Option<Vec<u8>>>(row, "body")?.unwrap_or_default(),
                headers: match headers {
                    None => Vec::new(),
                    Some(h) => serde_json::from_str(&h).map_err(|e| corrupt("idempotency headers", e))?,
                },
            })
        }
    };
    Ok(IdempotencyRecord {
        owner: get(row, "owner")?,
        key: get(row, "key")?,
        request_hash: get(row, "request_hash")?,
        response,
        created_at: get(row, "created_at")?,
    })
}
