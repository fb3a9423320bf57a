//! [`SqlStore`]: the [`Store`] implementation over an `AnyPool` (SQLite or PostgreSQL).

use async_trait::async_trait;
use moltbot_core::webhooks::EventGate;
use moltbot_core::{
    ApiKey, ApiKeyUpdate, Conversation, ConversationQuery, ConversationSummary, IdempotencyRecord, ItemQuery,
    Owner, SchemaStatus, Store, StoreError, StoreResult, StoreTx, StoredMessage, StoredResponse, TurnCommit,
    TurnOpen, UsageQuery, UsageRecord, UsageRow,
};
use serde_json::{Map, Value};
use sqlx::AnyPool;

use crate::error::db_err;
use crate::metrics::QueryTimer;
use crate::rows::{self, CONVERSATION_COLUMNS, IDEMPOTENCY_COLUMNS, MESSAGE_COLUMNS, USAGE_COLUMNS};
use crate::turn_log::{TurnLog, TurnWrite};
use crate::tx::SqlTx;
use crate::usage_log::UsageLog;
use crate::{Backend, StoreOptions, connect, migrate};

/// A store over SQLite or PostgreSQL. Usually used as `Arc<dyn Store>` (see [`crate::open`]).
#[derive(Debug, Clone)]
pub struct SqlStore {
    pool: AnyPool,
    backend: Backend,
    usage: std::sync::Arc<UsageLog>,
    turns: std::sync::Arc<TurnLog>,
    /// Which webhook event types are written (`moltbot_core::webhooks::EventGate`).
    pub(crate) gate: std::sync::Arc<EventGate>,
}

impl SqlStore {
    /// Like [`crate::open`], but returns the concrete type.
    pub async fn connect(url: &str, opts: &StoreOptions) -> StoreResult<Self> {
        let (pool, backend) = connect::connect(url, opts).await?;
        let usage = UsageLog::start(&pool, backend);
        let gate = std::sync::Arc::new(EventGate::default());
        let turns = TurnLog::new(backend, gate.clone());
        Ok(Self {
            pool,
            backend,
            usage,
            turns,
            gate,
        })
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Write `writes` as one group, as concurrent [`Store::open_turn`] / [`Store::commit_turn`] calls
    /// are: one transaction, each write's own outcome in order (the conversation id of an opened turn;
    /// a write whose conversation is gone fails alone).
    pub async fn write_turns(&self, writes: &[TurnWrite]) -> Vec<StoreResult<Option<String>>> {
        crate::turn_log::write_group(&self.pool, self.backend, &self.gate, writes).await
    }

    /// [`Self::write_turns`]' first try alone: the whole group in one transaction, or the error that
    /// would make it write the group one by one (for tests and diagnostics).
    pub async fn write_turn_group(
        &self,
        writes: &[TurnWrite],
    ) -> StoreResult<Vec<StoreResult<Option<String>>>> {
        crate::turn_log::try_group(&self.pool, self.backend, &self.gate, writes).await
    }

    /// The underlying pool, for operational tooling and tests. Application code goes through [`Store`].
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Begin a write transaction. On SQLite it takes the write lock up front (`BEGIN IMMEDIATE`): a
    /// deferred transaction that reads and then writes can fail with SQLITE_BUSY on the upgrade without
    /// waiting for `busy_timeout`, and two read-then-write transactions cannot deadlock.
    ///
    /// The `BEGIN` runs in its own task, so it always finishes: sqlx counts the transaction on the
    /// connection before `BEGIN` completes, and a caller cancelled in between (a client that went away
    /// while the write lock was awaited) returned that connection to the pool still counted as in a
    /// transaction — every later `begin` on it failed ("attempted to call begin_with at non-zero
    /// transaction depth"; found by tests/chaos/test_soak.py). A transaction nobody awaits any more is
    /// dropped, which rolls it back.
    pub(crate) async fn begin_write(&self) -> StoreResult<sqlx::Transaction<'static, sqlx::Any>> {
        let pool = self.pool.clone();
        let backend = self.backend;
        let begin = async move {
            match backend {
                Backend::Sqlite => pool.begin_with("BEGIN IMMEDIATE").await,
                Backend::Postgres => pool.begin().await,
            }
            .map_err(db_err)
        };
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => handle
                .spawn(begin)
                .await
                .map_err(|e| StoreError::Database(format!("beginning a transaction: {e}")))?,
            Err(_) => begin.await,
        }
    }

    /// Write queued usage records, then close all connections (waits for checked-out ones to come
    /// back).
    pub async fn close(&self) {
        if let Err(e) = self.usage.flush(&self.pool).await {
            tracing::error!(error = %e, "usage records not written before closing the database");
        }
        self.pool.close().await;
    }
}

#[async_trait]
impl Store for SqlStore {
    fn kind(&self) -> &'static str {
        self.backend.as_str()
    }

    async fn ping(&self) -> StoreResult<()> {
        let _timer = QueryTimer::start("ping");
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map_err(db_err)?;
        Ok(())
    }

    async fn schema_status(&self) -> StoreResult<SchemaStatus> {
        let _timer = QueryTimer::start("schema_status");
        migrate::schema_status(&self.pool, self.backend).await
    }

    async fn migrate(&self) -> StoreResult<SchemaStatus> {
        let _timer = QueryTimer::start("migrate");
        migrate::migrate(&self.pool, self.backend).await
    }

    async fn begin(&self) -> StoreResult<Box<dyn StoreTx>> {
        let _timer = QueryTimer::start("begin");
        Ok(Box::new(SqlTx::new(self.begin_write().await?, self.gate.clone())))
    }

    async fn get_conversation(&self, owner: &Owner, id: &str) -> StoreResult<Option<Conversation>> {
        let _timer = QueryTimer::start("get_conversation");
        let sql = format!("SELECT {CONVERSATION_COLUMNS} FROM conversations WHERE id = $1 AND owner = $2");
        let row = sqlx::query(&sql)
            .bind(id)
            .bind(owner)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err)?;
        row.as_ref().map(rows::conversation).transpose()
    }

    async fn update_conversation_metadata(
        &self,
        owner: &Owner,
        id: &str,
        metadata: Map<String, Value>,
    ) -> StoreResult<Option<Conversation>> {
        let _timer = QueryTimer::start("update_conversation_metadata");
        let sql = format!(
            "UPDATE conversations SET metadata = $1 WHERE id = $2 AND owner = $3 RETURNING {CONVERSATION_COLUMNS}"
        );
        let row = sqlx::query(&sql)
            .bind(rows::metadata_json(&metadata)?)
            .bind(id)
            .bind(owner)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err)?;
        row.as_ref().map(rows::conversation).transpose()
    }

    async fn delete_conversation(&self, owner: &Owner, id: &str) -> StoreResult<bool> {
        let _timer = QueryTimer::start("delete_conversation");
        let done = sqlx::query("DELETE FROM conversations WHERE id = $1 AND owner = $2")
            .bind(id)
            .bind(owner)
            .execute(&self.pool)
            .await
            .map_err(db_err)?;
        Ok(done.rows_affected() > 0)
    }

    async fn list_conversations(
        &self,
        query: &ConversationQuery,
    ) -> StoreResult<(Vec<ConversationSummary>, bool)> {
        let _timer = QueryTimer::start("list_conversations");
        self.summaries(query, None).await
    }

    async fn conversation_summary(
        &self,
        owner: Option<&Owner>,
        id: &str,
    ) -> StoreResult<Option<ConversationSummary>> {
        let _timer = QueryTimer::start("conversation_summary");
        let query = ConversationQuery {
            owner: owner.map(str::to_owned),
            limit: 1,
            ..ConversationQuery::default()
        };
        let (mut found, _) = self.summaries(&query, Some(id)).await?;
        Ok(found.pop())
    }

    async fn find_conversation_by_tip(
        &self,
        owner: &Owner,
        tip_hash: &str,
    ) -> StoreResult<Option<Conversation>> {
        let _timer = QueryTimer::start("find_conversation_by_tip");
        let sql = format!(
            "SELECT {CONVERSATION_COLUMNS} FROM conversations WHERE owner = $1 AND tip_hash = $2 \
             ORDER BY created_at DESC, id DESC LIMIT 1"
        );
        let row = sqlx::query(&sql)
            .bind(owner)
            .bind(tip_hash)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err)?;
        row.as_ref().map(rows::conversation).transpose()
    }

    async fn list_messages(
        &self,
        conversation_id: &str,
        query: &ItemQuery,
    ) -> StoreResult<(Vec<StoredMessage>, bool)> {
        let _timer = QueryTimer::start("list_messages");
        let after_seq = match &query.after {
            None => None,
            Some(after) => {
                let row: Option<(i64,)> =
                    sqlx::query_as("SELECT seq FROM messages WHERE conversation_id = $1 AND id = $2")
                        .bind(conversation_id)
                        .bind(after)
                        .fetch_optional(&self.pool)
                        .await
                        .map_err(db_err)?;
                Some(row.ok_or(StoreError::NotFound)?.0)
            }
        };
        let (cmp, order) = if query.ascending {
            (">", "ASC")
        } else {
            ("<", "DESC")
        };
        let cursor = if after_seq.is_some() {
            format!(" AND seq {cmp} $3")
        } else {
            String::new()
        };
        let sql = format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages WHERE conversation_id = $1{cursor} ORDER BY seq {order} LIMIT $2"
        );
        let limit = i64::from(query.limit);
        let mut q = sqlx::query(&sql).bind(conversation_id).bind(limit + 1);
        if let Some(seq) = after_seq {
            q = q.bind(seq);
        }
        let rows = q.fetch_all(&self.pool).await.map_err(db_err)?;
        let has_more = rows.len() as i64 > limit;
        let items = rows
            .iter()
            .take(query.limit as usize)
            .map(rows::message)
            .collect::<StoreResult<_>>()?;
        Ok((items, has_more))
    }

    async fn context_messages(&self, conversation_id: &str, limit: u32) -> StoreResult<Vec<StoredMessage>> {
        let _timer = QueryTimer::start("context_messages");
        let sql = format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages \
             WHERE conversation_id = $1 AND status IN ('completed', 'truncated') AND compacted_by IS NULL \
               AND (role IN ('system', 'developer') \
                    OR seq IN (SELECT seq FROM messages \
                               WHERE conversation_id = $1 AND status IN ('completed', 'truncated') \
                               ORDER BY seq DESC LIMIT $2)) \
             ORDER BY seq ASC"
        );
        let rows = sqlx::query(&sql)
            .bind(conversation_id)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(db_err)?;
        rows.iter().map(rows::message).collect()
    }

    async fn get_message(
        &self,
        conversation_id: &str,
        message_id: &str,
    ) -> StoreResult<Option<StoredMessage>> {
        let _timer = QueryTimer::start("get_message");
        let sql = format!("SELECT {MESSAGE_COLUMNS} FROM messages WHERE conversation_id = $1 AND id = $2");
        let row = sqlx::query(&sql)
            .bind(conversation_id)
            .bind(message_id)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err)?;
        row.as_ref().map(rows::message).transpose()
    }

    async fn delete_message(&self, conversation_id: &str, message_id: &str) -> StoreResult<bool> {
        let _timer = QueryTimer::start("delete_message");
        // Deleting a compaction item gives back what it replaced (see `crate::compaction`).
        let mut tx = self.begin_write().await?;
        crate::compaction::release_replaced(&mut tx, conversation_id, message_id).await?;
        let done = sqlx::query("DELETE FROM messages WHERE conversation_id = $1 AND id = $2")
            .bind(conversation_id)
            .bind(message_id)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        tx.commit().await.map_err(db_err)?;
        Ok(done.rows_affected() > 0)
    }

    async fn get_idempotency(&self, owner: &Owner, key: &str) -> StoreResult<Option<IdempotencyRecord>> {
        let _timer = QueryTimer::start("get_idempotency");
        let sql = format!("SELECT {IDEMPOTENCY_COLUMNS} FROM idempotency_keys WHERE owner = $1 AND key = $2");
        let row = sqlx::query(&sql)
            .bind(owner)
            .bind(key)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err)?;
        row.as_ref().map(rows::idempotency).transpose()
    }

    async fn claim_idempotency(
        &self,
        owner: &Owner,
        key: &str,
        request_hash: &str,
        now: i64,
    ) -> StoreResult<bool> {
        let _timer = QueryTimer::start("claim_idempotency");
        let done = sqlx::query(
            "INSERT INTO idempotency_keys (owner, key, request_hash, created_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT DO NOTHING",
        )
        .bind(owner)
        .bind(key)
        .bind(request_hash)
        .bind(now)
        .execute(&self.pool)
        .await
        .map_err(db_err)?;
        Ok(done.rows_affected() == 1)
    }

    async fn complete_idempotency(
        &self,
        owner: &Owner,
        key: &str,
        response: &StoredResponse,
    ) -> StoreResult<()> {
        let _timer = QueryTimer::start("complete_idempotency");
        let done = sqlx::query(
            "UPDATE idempotency_keys SET status = $1, content_type = $2, body = $3, headers = $4 \
             WHERE owner = $5 AND key = $6",
        )
        .bind(i64::from(response.status))
        .bind(response.content_type.as_str())
        .bind(response.body.as_slice())
        .bind(rows::headers_json(&response.headers)?)
        .bind(owner)
        .bind(key)
        .execute(&self.pool)
        .await
        .map_err(db_err)?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    async fn release_idempotency(&self, owner: &Owner, key: &str) -> StoreResult<()> {
        let _timer = QueryTimer::start("release_idempotency");
        sqlx::query("DELETE FROM idempotency_keys WHERE owner = $1 AND key = $2")
            .bind(owner)
            .bind(key)
            .execute(&self.pool)
            .await
            .map_err(db_err)?;
        Ok(())
    }

    async fn purge_idempotency(&self, before: i64) -> StoreResult<u64> {
        let _timer = QueryTimer::start("purge_idempotency");
        let done = sqlx::query("DELETE FROM idempotency_keys WHERE created_at < $1")
            .bind(before)
            .execute(&self.pool)
            .await
            .map_err(db_err)?;
        Ok(done.rows_affected())
    }

    async fn fail_stale_messages(&self, before: i64) -> StoreResult<u64> {
        let _timer = QueryTimer::start("fail_stale_messages");
        let done = sqlx::query(
            "UPDATE messages SET status = 'failed' WHERE status = 'in_progress' AND created_at < $1",
        )
        .bind(before)
        .execute(&self.pool)
        .await
        .map_err(db_err)?;
        Ok(done.rows_affected())
    }

    async fn list_usage(&self, owner: &Owner, limit: u32) -> StoreResult<Vec<UsageRecord>> {
        self.usage.flush(&self.pool).await?;
        let _timer = QueryTimer::start("list_usage");
        let sql = format!(
            "SELECT {USAGE_COLUMNS} FROM usage_records WHERE owner = $1 ORDER BY created_at DESC, id DESC LIMIT $2"
        );
        let rows = sqlx::query(&sql)
            .bind(owner)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(db_err)?;
        rows.iter().map(rows::usage).collect()
    }

    async fn sum_usage_tokens(&self, owner: &Owner, since: i64) -> StoreResult<u64> {
        self.usage.flush(&self.pool).await?;
        let _timer = QueryTimer::start("sum_usage_tokens");
        self.usage_tokens_since(owner, since).await
    }

    async fn aggregate_usage(&self, query: &UsageQuery) -> StoreResult<Vec<UsageRow>> {
        self.usage.flush(&self.pool).await?;
        let _timer = QueryTimer::start("aggregate_usage");
        self.usage_rows(query).await
    }

    async fn create_api_key(&self, key: &ApiKey) -> StoreResult<()> {
        let _timer = QueryTimer::start("create_api_key");
        self.key_create(key).await
    }

    async fn bootstrap_api_key(&self, key: &ApiKey) -> StoreResult<bool> {
        let _timer = QueryTimer::start("bootstrap_api_key");
        self.key_bootstrap(key).await
    }

    async fn list_api_keys(&self) -> StoreResult<Vec<ApiKey>> {
        let _timer = QueryTimer::start("list_api_keys");
        self.key_list().await
    }

    async fn get_api_key(&self, id: &str) -> StoreResult<Option<ApiKey>> {
        let _timer = QueryTimer::start("get_api_key");
        self.key_get("id", id).await
    }

    async fn get_api_key_by_hash(&self, secret_hash: &str) -> StoreResult<Option<ApiKey>> {
        let _timer = QueryTimer::start("get_api_key_by_hash");
        self.key_get("secret_hash", secret_hash).await
    }

    async fn update_api_key(&self, id: &str, update: &ApiKeyUpdate) -> StoreResult<Option<ApiKey>> {
        let _timer = QueryTimer::start("update_api_key");
        self.key_update(id, update).await
    }

    async fn revoke_api_key(&self, id: &str, now: i64) -> StoreResult<bool> {
        let _timer = QueryTimer::start("revoke_api_key");
        self.key_revoke(id, now).await
    }

    async fn touch_api_key(&self, id: &str, now: i64) -> StoreResult<()> {
        let _timer = QueryTimer::start("touch_api_key");
        self.key_touch(id, now).await
    }

    async fn count_api_keys(&self) -> StoreResult<u64> {
        let _timer = QueryTimer::start("count_api_keys");
        self.key_count().await
    }

    async fn upsert_model(&self, model: &moltbot_core::RegisteredModel) -> StoreResult<()> {
        let _timer = QueryTimer::start("upsert_model");
        self.model_upsert(model).await
    }

    async fn list_models(&self) -> StoreResult<Vec<moltbot_core::RegisteredModel>> {
        let _timer = QueryTimer::start("list_models");
        self.model_list().await
    }

    async fn get_model(&self, name: &str) -> StoreResult<Option<moltbot_core::RegisteredModel>> {
        let _timer = QueryTimer::start("get_model");
        self.model_get(name).await
    }

    async fn delete_model(&self, name: &str) -> StoreResult<bool> {
        let _timer = QueryTimer::start("delete_model");
        self.model_delete(name).await
    }

    fn record_usage(&self, usage: UsageRecord) {
        self.usage.push(usage);
    }

    async fn flush(&self) -> StoreResult<()> {
        self.usage.flush(&self.pool).await
    }

    async fn commit_turn(&self, turn: TurnCommit) -> StoreResult<()> {
        self.turns.commit(&self.pool, turn).await
    }

    async fn open_turn(&self, turn: TurnOpen) -> StoreResult<String> {
        self.turns.open(&self.pool, turn).await
    }
}
