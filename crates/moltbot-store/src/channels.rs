//! [`ChannelStore`] for [`SqlStore`]: the durable channel-event queue, chat → conversation mapping,
//! per-account state and leases. Portable SQL for SQLite and PostgreSQL through sqlx `Any`.

use async_trait::async_trait;
use moltbot_core::channels::{
    ChannelEvent, ChannelEventStatus, ChannelOutcome, ChannelStats, ChannelStore, NewChannelEvent,
};
use moltbot_core::{StoreError, StoreResult};
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::SqlStore;
use crate::error::{corrupt, db_err};
use crate::metrics::QueryTimer;

const COLUMNS: &str = "id, platform, account, event_id, chat_key, message, status, attempts, next_attempt_ms, \
     reply, chunks_sent, conversation_id, last_error, created_ms, updated_ms";

/// A claimable event: queued, due, not held by a live worker.
const CLAIMABLE: &str =
    "status = 'queued' AND next_attempt_ms <= $3 AND (locked_until_ms IS NULL OR locked_until_ms < $3)";

fn event(row: &AnyRow) -> StoreResult<ChannelEvent> {
    let s = |c: &str| row.try_get::<String, _>(c).map_err(db_err);
    let o = |c: &str| row.try_get::<Option<String>, _>(c).map_err(db_err);
    let i = |c: &str| row.try_get::<i64, _>(c).map_err(db_err);
    let status = s("status")?;
    let message = s("message")?;
    Ok(ChannelEvent {
        id: s("id")?,
        platform: s("platform")?,
        account: s("account")?,
        event_id: s("event_id")?,
        chat_key: s("chat_key")?,
        message: serde_json::from_str(&message).map_err(|e| corrupt("channel event message", e))?,
        status: ChannelEventStatus::parse(&status).ok_or_else(|| corrupt("channel event status", &status))?,
        attempts: u32::try_from(i("attempts")?).map_err(|e| corrupt("attempts", e))?,
        next_attempt_ms: i("next_attempt_ms")?,
        reply: o("reply")?,
        chunks_sent: u32::try_from(i("chunks_sent")?).map_err(|e| corrupt("chunks_sent", e))?,
        conversation_id: o("conversation_id")?,
        last_error: o("last_error")?,
        created_ms: i("created_ms")?,
        updated_ms: i("updated_ms")?,
    })
}

fn count(row: &AnyRow, c: &str) -> StoreResult<u64> {
    let v: i64 = row.try_get(c).map_err(db_err)?;
    Ok(v.max(0) as u64)
}

/// Errors worth showing in the console are short; a stack of upstream text is not.
fn clip(s: &str) -> String {
    const MAX: usize = 1000;
    if s.len() <= MAX {
        return s.to_owned();
    }
    let mut end = MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

#[async_trait]
impl ChannelStore for SqlStore {
    async fn enqueue_channel_event(&self, e: &NewChannelEvent) -> StoreResult<bool> {
        let _timer = QueryTimer::start("enqueue_channel_event");
        let message = serde_json::to_string(&e.message)
            .map_err(|err| StoreError::Database(format!("cannot encode channel message: {err}")))?;
        let done = sqlx::query(
            "INSERT INTO channel_events (id, platform, account, event_id, chat_key, message, status, attempts, \
             next_attempt_ms, chunks_sent, created_ms, updated_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, 0, $8, 0, $8, $8) ON CONFLICT DO NOTHING",
        )
        .bind(moltbot_core::ids::new_id("chev"))
        .bind(&e.platform)
        .bind(&e.account)
        .bind(&e.event_id)
        .bind(&e.chat_key)
        .bind(message)
        .bind(e.status.as_str())
        .bind(e.now_ms)
        .execute(self.pool())
        .await
        .map_err(db_err)?;
        Ok(done.rows_affected() == 1)
    }

    async fn claim_channel_event(
        &self,
        worker: &str,
        now_ms: i64,
        lock_until_ms: i64,
    ) -> StoreResult<Option<ChannelEvent>> {
        let _timer = QueryTimer::start("claim_channel_event");
        // The oldest claimable event whose chat has no older unfinished event (one at a time per chat,
        // in order). The conditions are repeated outside the subquery: on PostgreSQL (READ COMMITTED)
        // a concurrent claimer that loses the row lock re-checks them on the new row version and
        // updates nothing, instead of taking an event another worker holds.
        let sql = format!(
            "UPDATE channel_events SET locked_by = $1, locked_until_ms = $2, attempts = attempts + 1, updated_ms = $3 \
             WHERE id = (SELECT c.id FROM channel_events c \
                         WHERE c.status = 'queued' AND c.next_attempt_ms <= $3 \
                           AND (c.locked_until_ms IS NULL OR c.locked_until_ms < $3) \
                           AND NOT EXISTS (SELECT 1 FROM channel_events o \
                                           WHERE o.chat_key = c.chat_key AND o.status = 'queued' AND o.id < c.id) \
                         ORDER BY c.next_attempt_ms, c.id LIMIT 1) \
               AND {CLAIMABLE} \
             RETURNING {COLUMNS}"
        );
        let row = sqlx::query(&sql)
            .bind(worker)
            .bind(lock_until_ms)
            .bind(now_ms)
            .fetch_optional(self.pool())
            .await
            .map_err(db_err)?;
        row.as_ref().map(event).transpose()
    }

    async fn save_channel_reply(
        &self,
        id: &str,
        worker: &str,
        reply: &str,
        conversation_id: Option<&str>,
        now_ms: i64,
    ) -> StoreResult<bool> {
        let _timer = QueryTimer::start("save_channel_reply");
        let done = sqlx::query(
            "UPDATE channel_events SET reply = $1, conversation_id = $2, updated_ms = $3 \
             WHERE id = $4 AND locked_by = $5 AND status = 'queued'",
        )
        .bind(reply)
        .bind(conversation_id)
        .bind(now_ms)
        .bind(id)
        .bind(worker)
        .execute(self.pool())
        .await
        .map_err(db_err)?;
        Ok(done.rows_affected() == 1)
    }

    async fn set_channel_progress(
        &self,
        id: &str,
        worker: &str,
        chunks_sent: u32,
        lock_until_ms: i64,
        now_ms: i64,
    ) -> StoreResult<bool> {
        let _timer = QueryTimer::start("set_channel_progress");
        let done = sqlx::query(
            "UPDATE channel_events SET chunks_sent = $1, locked_until_ms = $2, updated_ms = $3 \
             WHERE id = $4 AND locked_by = $5 AND status = 'queued'",
        )
        .bind(i64::from(chunks_sent))
        .bind(lock_until_ms)
        .bind(now_ms)
        .bind(id)
        .bind(worker)
        .execute(self.pool())
        .await
        .map_err(db_err)?;
        Ok(done.rows_affected() == 1)
    }

    async fn finish_channel_event(
        &self,
        id: &str,
        worker: &str,
        outcome: &ChannelOutcome,
        now_ms: i64,
    ) -> StoreResult<bool> {
        let _timer = QueryTimer::start("finish_channel_event");
        let (status, next, error) = match outcome {
            ChannelOutcome::Done => ("done", now_ms, None),
            ChannelOutcome::Retry { at_ms, error } => ("queued", *at_ms, Some(clip(error))),
            ChannelOutcome::Failed { error } => ("failed", now_ms, Some(clip(error))),
        };
        let done = sqlx::query(
            "UPDATE channel_events SET status = $1, next_attempt_ms = $2, last_error = COALESCE($3, last_error), \
             locked_by = NULL, locked_until_ms = NULL, updated_ms = $4 \
             WHERE id = $5 AND locked_by = $6 AND status = 'queued'",
        )
        .bind(status)
        .bind(next)
        .bind(error)
        .bind(now_ms)
        .bind(id)
        .bind(worker)
        .execute(self.pool())
        .await
        .map_err(db_err)?;
        Ok(done.rows_affected() == 1)
    }

    async fn get_channel_event(&self, id: &str) -> StoreResult<Option<ChannelEvent>> {
        let _timer = QueryTimer::start("get_channel_event");
        let sql = format!("SELECT {COLUMNS} FROM channel_events WHERE id = $1");
        let row = sqlx::query(&sql)
            .bind(id)
            .fetch_optional(self.pool())
            .await
            .map_err(db_err)?;
        row.as_ref().map(event).transpose()
    }

    async fn list_channel_events(
        &self,
        platform: Option<&str>,
        account: Option<&str>,
        limit: u32,
    ) -> StoreResult<Vec<ChannelEvent>> {
        let _timer = QueryTimer::start("list_channel_events");
        let mut sql = format!("SELECT {COLUMNS} FROM channel_events WHERE 1 = 1");
        let mut n = 1;
        for (column, value) in [("platform", platform), ("account", account)] {
            if value.is_some() {
                sql.push_str(&format!(" AND {column} = ${n}"));
                n += 1;
            }
        }
        sql.push_str(&format!(" ORDER BY created_ms DESC, id DESC LIMIT ${n}"));
        let mut q = sqlx::query(&sql);
        for value in [platform, account].into_iter().flatten() {
            q = q.bind(value);
        }
        let rows = q
            .bind(i64::from(limit))
            .fetch_all(self.pool())
            .await
            .map_err(db_err)?;
        rows.iter().map(event).collect()
    }

    async fn channel_stats(&self) -> StoreResult<Vec<ChannelStats>> {
        let _timer = QueryTimer::start("channel_stats");
        let rows = sqlx::query(
            "SELECT platform, account, \
                    SUM(CASE WHEN status = 'queued' THEN 1 ELSE 0 END) AS queued, \
                    SUM(CASE WHEN status = 'done' THEN 1 ELSE 0 END) AS done, \
                    SUM(CASE WHEN status = 'failed' THEN 1 ELSE 0 END) AS failed, \
                    SUM(CASE WHEN status = 'ignored' THEN 1 ELSE 0 END) AS ignored, \
                    MAX(created_ms) AS last_ms \
             FROM channel_events GROUP BY platform, account ORDER BY platform, account",
        )
        .fetch_all(self.pool())
        .await
        .map_err(db_err)?;
        rows.iter()
            .map(|r| {
                Ok(ChannelStats {
                    platform: r.try_get("platform").map_err(db_err)?,
                    account: r.try_get("account").map_err(db_err)?,
                    queued: count(r, "queued")?,
                    done: count(r, "done")?,
                    failed: count(r, "failed")?,
                    ignored: count(r, "ignored")?,
                    last_event_ms: r.try_get("last_ms").map_err(db_err)?,
                })
            })
            .collect()
    }

    async fn purge_channel_events(&self, before_ms: i64) -> StoreResult<u64> {
        let _timer = QueryTimer::start("purge_channel_events");
        let done = sqlx::query("DELETE FROM channel_events WHERE status <> 'queued' AND created_ms < $1")
            .bind(before_ms)
            .execute(self.pool())
            .await
            .map_err(db_err)?;
        Ok(done.rows_affected())
    }

    async fn channel_conversation(&self, key: &str) -> StoreResult<Option<String>> {
        let _timer = QueryTimer::start("channel_conversation");
        let row: Option<(String,)> =
            sqlx::query_as("SELECT conversation_id FROM channel_conversations WHERE chat_key = $1")
                .bind(key)
                .fetch_optional(self.pool())
                .await
                .map_err(db_err)?;
        Ok(row.map(|r| r.0))
    }

    async fn bind_channel_conversation(
        &self,
        key: &str,
        conversation_id: &str,
        now_ms: i64,
    ) -> StoreResult<String> {
        let _timer = QueryTimer::start("bind_channel_conversation");
        sqlx::query(
            "INSERT INTO channel_conversations (chat_key, conversation_id, created_ms) VALUES ($1, $2, $3) \
             ON CONFLICT DO NOTHING",
        )
        .bind(key)
        .bind(conversation_id)
        .bind(now_ms)
        .execute(self.pool())
        .await
        .map_err(db_err)?;
        self.channel_conversation(key).await?.ok_or(StoreError::NotFound)
    }

    async fn unbind_channel_conversation(&self, key: &str, conversation_id: &str) -> StoreResult<()> {
        let _timer = QueryTimer::start("unbind_channel_conversation");
        sqlx::query("DELETE FROM channel_conversations WHERE chat_key = $1 AND conversation_id = $2")
            .bind(key)
            .bind(conversation_id)
            .execute(self.pool())
            .await
            .map_err(db_err)?;
        Ok(())
    }

    async fn get_channel_state(&self, name: &str) -> StoreResult<Option<String>> {
        let _timer = QueryTimer::start("get_channel_state");
        let row: Option<(String,)> = sqlx::query_as("SELECT value FROM channel_state WHERE name = $1")
            .bind(name)
            .fetch_optional(self.pool())
            .await
            .map_err(db_err)?;
        Ok(row.map(|r| r.0))
    }

    async fn set_channel_state(&self, name: &str, value: &str, now_ms: i64) -> StoreResult<()> {
        let _timer = QueryTimer::start("set_channel_state");
        sqlx::query(
            "INSERT INTO channel_state (name, value, updated_ms) VALUES ($1, $2, $3) \
             ON CONFLICT (name) DO UPDATE SET value = excluded.value, updated_ms = excluded.updated_ms",
        )
        .bind(name)
        .bind(value)
        .bind(now_ms)
        .execute(self.pool())
        .await
        .map_err(db_err)?;
        Ok(())
    }

    async fn acquire_lease(&self, name: &str, holder: &str, now_ms: i64, ttl_ms: i64) -> StoreResult<bool> {
        let _timer = QueryTimer::start("acquire_lease");
        // Insert-or-take in one statement: the conditional DO UPDATE only fires when the lease is free
        // (expired) or ours, so two replicas cannot both get it.
        let done = sqlx::query(
            "INSERT INTO leases (name, holder, expires_ms) VALUES ($1, $2, $3) \
             ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_ms = excluded.expires_ms \
             WHERE leases.holder = excluded.holder OR leases.expires_ms < $4",
        )
        .bind(name)
        .bind(holder)
        .bind(now_ms + ttl_ms)
        .bind(now_ms)
        .execute(self.pool())
        .await
        .map_err(db_err)?;
        Ok(done.rows_affected() == 1)
    }

    async fn release_lease(&self, name: &str, holder: &str) -> StoreResult<()> {
        let _timer = QueryTimer::start("release_lease");
        sqlx::query("DELETE FROM leases WHERE name = $1 AND holder = $2")
            .bind(name)
            .bind(holder)
            .execute(self.pool())
            .await
            .map_err(db_err)?;
        Ok(())
    }

    async fn lease_holder(&self, name: &str, now_ms: i64) -> StoreResult<Option<String>> {
        let _timer = QueryTimer::start("lease_holder");
        let row: Option<(String,)> =
            sqlx::query_as("SELECT holder FROM leases WHERE name = $1 AND expires_ms >= $2")
                .bind(name)
                .bind(now_ms)
                .fetch_optional(self.pool())
                .await
                .map_err(db_err)?;
        Ok(row.map(|r| r.0))
    }
}
