//! [`SqlTx`]: a write transaction. Dropped without `commit`, sqlx rolls it back.

use std::sync::Arc;

use async_trait::async_trait;
use moltbot_core::webhooks::{self, EventGate, OutboxEvent};
use moltbot_core::{
    Conversation, MessageStatus, NewMessage, Owner, StoreError, StoreResult, StoreTx, StoredMessage,
    UsageRecord, ids,
};
use serde_json::{Map, Value, json};
use sqlx::{Any, Transaction};

use crate::error::db_err;
use crate::metrics::QueryTimer;
use crate::rows;
use crate::usage_log::{AnyQuery, INSERT_USAGE, bind_usage};

/// Milliseconds for an event at `now` (unix seconds, the caller's clock): the system clock's
/// milliseconds when it agrees on the second, else the start of that second.
pub(crate) fn event_millis(now: i64) -> i64 {
    let system = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    if system.div_euclid(1000) == now {
        system
    } else {
        now.saturating_mul(1000)
    }
}

/// The columns of a message row, in the order [`bind_message`] binds them (16 values).
pub(crate) const INSERT_MESSAGE: &str = "INSERT INTO messages (id, conversation_id, seq, created_at, role, content, \
    raw, status, model, backend, finish_reason, prompt_tokens, completion_tokens, latency_ms, request_id, \
    compaction) VALUES ";

/// Bind one message's 16 values, in [`INSERT_MESSAGE`]'s column order.
pub(crate) fn bind_message<'q>(
    q: AnyQuery<'q>,
    m: &'q NewMessage,
    conversation_id: &'q str,
    seq: i64,
    now: i64,
) -> StoreResult<AnyQuery<'q>> {
    let usage = m.meta.usage.as_ref();
    Ok(q.bind(m.id.as_str())
        .bind(conversation_id)
        .bind(seq)
        .bind(now)
        .bind(m.role.as_str())
        .bind(m.content.as_str())
        .bind(rows::raw_json(m.raw.as_ref())?)
        .bind(m.status.as_str())
        .bind(m.meta.model.as_deref())
        .bind(m.meta.backend.as_deref())
        .bind(m.meta.finish_reason.as_deref())
        .bind(usage.map(|u| i64::from(u.prompt_tokens)))
        .bind(usage.map(|u| i64::from(u.completion_tokens)))
        .bind(m.meta.latency_ms)
        .bind(m.meta.request_id.as_deref())
        .bind(rows::compaction_json(m.compaction.as_ref())?))
}

pub(crate) struct SqlTx {
    tx: Transaction<'static, Any>,
    /// Events no subscription wants are not written.
    gate: Arc<EventGate>,
}

impl SqlTx {
    pub(crate) fn new(tx: Transaction<'static, Any>, gate: Arc<EventGate>) -> Self {
        Self { tx, gate }
    }
}

#[async_trait]
impl StoreTx for SqlTx {
    async fn create_conversation(
        &mut self,
        owner: &Owner,
        metadata: Map<String, Value>,
        now: i64,
    ) -> StoreResult<Conversation> {
        let _timer = QueryTimer::start("tx.create_conversation");
        let id = ids::conversation_id();
        sqlx::query(
            "INSERT INTO conversations (id, owner, created_at, metadata, next_seq) VALUES ($1, $2, $3, $4, 0)",
        )
        .bind(id.as_str())
        .bind(owner)
        .bind(now)
        .bind(rows::metadata_json(&metadata)?)
        .execute(&mut *self.tx)
        .await
        .map_err(db_err)?;
        // Every creation path (chat, the conversations API, channels) goes through here: the event
        // commits with the conversation or not at all.
        let event = OutboxEvent::new(
            webhooks::CONVERSATION_CREATED,
            json!({"id": id, "owner": owner.to_string(), "created_at": now, "metadata": metadata}),
            event_millis(now),
        );
        self.enqueue_event(&event).await?;
        Ok(Conversation {
            id,
            owner: owner.to_string(),
            created_at: now,
            metadata,
        })
    }

    async fn append_messages(
        &mut self,
        conversation_id: &str,
        messages: &[NewMessage],
        now: i64,
    ) -> StoreResult<Vec<StoredMessage>> {
        let _timer = QueryTimer::start("tx.append_messages");
        let count = i64::try_from(messages.len()).map_err(|e| StoreError::Database(e.to_string()))?;
        // Reserve seq range (end - count, end]: a row lock on PostgreSQL; SQLite has one writer at a time.
        // UNIQUE(conversation_id, seq) is the backstop; a violation surfaces as `Conflict`.
        let reserved: Option<(i64,)> = sqlx::query_as(
            "UPDATE conversations SET next_seq = next_seq + $1 WHERE id = $2 RETURNING next_seq",
        )
        .bind(count)
        .bind(conversation_id)
        .fetch_optional(&mut *self.tx)
        .await
        .map_err(db_err)?;
        let (end,) = reserved.ok_or(StoreError::NotFound)?;
        let start = end - count;

        let sql = format!(
            "{INSERT_MESSAGE}($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)"
        );
        let mut stored = Vec::with_capacity(messages.len());
        for (seq, m) in (start + 1..).zip(messages) {
            bind_message(sqlx::query(&sql), m, conversation_id, seq, now)?
                .execute(&mut *self.tx)
                .await
                .map_err(db_err)?;
            stored.push(StoredMessage {
                id: m.id.clone(),
                conversation_id: conversation_id.to_string(),
                seq,
                created_at: now,
                role: m.role,
                content: m.content.clone(),
                raw: m.raw.clone(),
                status: m.status,
                meta: m.meta.clone(),
                compaction: m.compaction.clone(),
                compacted_by: None,
            });
        }
        Ok(stored)
    }

    async fn insert_compaction(
        &mut self,
        conversation_id: &str,
        summary: &NewMessage,
        now: i64,
    ) -> StoreResult<StoredMessage> {
        // Claim the replaced items first: a concurrent compaction that claimed one of them already
        // makes this one a `Conflict` before anything is appended.
        crate::compaction::mark_replaced(&mut self.tx, conversation_id, summary).await?;
        let mut stored = self
            .append_messages(conversation_id, std::slice::from_ref(summary), now)
            .await?;
        stored.pop().ok_or(StoreError::NotFound)
    }

    async fn set_message_status(&mut self, message_id: &str, status: MessageStatus) -> StoreResult<()> {
        let _timer = QueryTimer::start("tx.set_message_status");
        let done = sqlx::query("UPDATE messages SET status = $1 WHERE id = $2")
            .bind(status.as_str())
            .bind(message_id)
            .execute(&mut *self.tx)
            .await
            .map_err(db_err)?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    async fn set_conversation_tip(&mut self, conversation_id: &str, tip_hash: &str) -> StoreResult<()> {
        let _timer = QueryTimer::start("tx.set_conversation_tip");
        let done = sqlx::query("UPDATE conversations SET tip_hash = $1 WHERE id = $2")
            .bind(tip_hash)
            .bind(conversation_id)
            .execute(&mut *self.tx)
            .await
            .map_err(db_err)?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    async fn insert_usage(&mut self, usage: &UsageRecord) -> StoreResult<()> {
        let _timer = QueryTimer::start("tx.insert_usage");
        let sql = format!("{INSERT_USAGE}($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)");
        bind_usage(sqlx::query(&sql), usage)
            .execute(&mut *self.tx)
            .await
            .map_err(db_err)?;
        Ok(())
    }

    async fn enqueue_event(&mut self, event: &OutboxEvent) -> StoreResult<()> {
        if !self.gate.wants(&event.event_type) {
            return Ok(());
        }
        let _timer = QueryTimer::start("tx.enqueue_event");
        let payload = serde_json::to_string(&event.payload)
            .map_err(|e| StoreError::Database(format!("cannot encode event payload: {e}")))?;
        sqlx::query(
            "INSERT INTO event_outbox (id, event_type, payload, created_ms, dispatched_ms) \
             VALUES ($1, $2, $3, $4, NULL)",
        )
        .bind(event.id.as_str())
        .bind(event.event_type.as_str())
        .bind(payload)
        .bind(event.created_ms)
        .execute(&mut *self.tx)
        .await
        .map_err(db_err)?;
        Ok(())
    }

    async fn insert_response(
        &mut self,
        response: &moltbot_core::responses::ResponseRecord,
    ) -> StoreResult<()> {
        crate::responses::insert(&mut self.tx, response).await
    }

    async fn revoke_api_key(&mut self, id: &str, now: i64) -> StoreResult<bool> {
        let _timer = QueryTimer::start("tx.revoke_api_key");
        let done = sqlx::query("UPDATE api_keys SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
            .bind(now)
            .bind(id)
            .execute(&mut *self.tx)
            .await
            .map_err(db_err)?;
        Ok(done.rows_affected() == 1)
    }

    async fn commit(self: Box<Self>) -> StoreResult<()> {
        let _timer = QueryTimer::start("tx.commit");
        self.tx.commit().await.map_err(db_err)
    }
}
