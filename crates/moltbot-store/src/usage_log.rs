//! Write-behind usage records: the usage row of a request that stores nothing else (no conversation, no
//! stored response) is queued in memory and written in batches — one multi-row `INSERT` per flush, every
//! [`FLUSH_INTERVAL`] or as soon as [`FLUSH_ROWS`] are waiting — instead of one transaction per request.
//!
//! Readers of usage (`list_usage`, `sum_usage_tokens`, `aggregate_usage`) flush first, so a process always
//! reads its own writes. A failed flush keeps the rows for the next one (up to [`MAX_PENDING`]; beyond
//! that the oldest are dropped and counted in `moltbot_usage_records_dropped_total`). A graceful shutdown
//! flushes ([`moltbot_core::Store::flush`]); a crash loses at most the last interval's rows of
//! unrecorded requests — never a conversation turn, which always commits before the client is answered.

use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use moltbot_core::{StoreResult, UsageRecord};
use sqlx::AnyPool;

use crate::Backend;
use crate::error::db_err;
use crate::metrics::QueryTimer;
use crate::params::push_rows;

/// How often queued rows are written.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(100);
/// Queue length that triggers a flush before the interval ends.
pub const FLUSH_ROWS: usize = 512;
/// Rows kept while the database is unreachable.
pub const MAX_PENDING: usize = 100_000;
/// Rows per `INSERT` statement (11 parameters each: well under SQLite's and PostgreSQL's limits), largest
/// first: a batch of any size is written with statements of these few shapes, which stay prepared (a
/// statement per batch size made SQLite parse a new one at every flush and churned the statement cache).
const ROWS_PER_STATEMENT: [usize; 5] = [256, 64, 16, 4, 1];

#[derive(Debug)]
pub(crate) struct UsageLog {
    backend: Backend,
    pending: Mutex<Vec<UsageRecord>>,
    wake: tokio::sync::Notify,
    /// One flush at a time, so a reader that flushes waits for a flush already under way.
    flushing: tokio::sync::Mutex<()>,
}

impl UsageLog {
    /// A log whose background writer runs while the log is alive (none outside a Tokio runtime: then
    /// rows are written only by explicit flushes).
    pub(crate) fn start(pool: &AnyPool, backend: Backend) -> Arc<Self> {
        let log = Arc::new(Self {
            backend,
            pending: Mutex::default(),
            wake: tokio::sync::Notify::default(),
            flushing: tokio::sync::Mutex::default(),
        });
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(writer(Arc::downgrade(&log), pool.clone()));
        }
        log
    }

    pub(crate) fn push(&self, record: UsageRecord) {
        let len = {
            let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            pending.push(record);
            pending.len()
        };
        if len >= FLUSH_ROWS {
            self.wake.notify_one();
        }
    }

    /// Write everything queued so far.
    pub(crate) async fn flush(&self, pool: &AnyPool) -> StoreResult<()> {
        let _one = self.flushing.lock().await;
        let batch = std::mem::take(&mut *self.pending.lock().unwrap_or_else(|e| e.into_inner()));
        if batch.is_empty() {
            return Ok(());
        }
        let mut written = 0;
        for chunk in crate::params::chunks(&batch, &ROWS_PER_STATEMENT) {
            if let Err(e) = insert(pool, self.backend, chunk).await {
                self.requeue(&batch[written..]);
                return Err(e);
            }
            written += chunk.len();
        }
        Ok(())
    }

    /// Put unwritten rows back in front of those queued meanwhile, keeping the newest [`MAX_PENDING`].
    fn requeue(&self, rows: &[UsageRecord]) {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let mut all = rows.to_vec();
        all.append(&mut pending);
        if all.len() > MAX_PENDING {
            let dropped = all.len() - MAX_PENDING;
            all.drain(..dropped);
            metrics::counter!("moltbot_usage_records_dropped_total").increment(dropped as u64);
            tracing::error!(
                dropped,
                "usage records dropped: the database has been unreachable too long"
            );
        }
        *pending = all;
    }
}

async fn writer(log: Weak<UsageLog>, pool: AnyPool) {
    loop {
        let Some(strong) = log.upgrade() else { return };
        let _ = tokio::time::timeout(FLUSH_INTERVAL, strong.wake.notified()).await;
        if pool.is_closed() {
            return;
        }
        if let Err(e) = strong.flush(&pool).await {
            tracing::warn!(error = %e, "could not write usage records; will retry");
        }
    }
}

/// One multi-row `INSERT`. SQLite gets anonymous `?` parameters: sqlx resolves each named one by a
/// linear search in SQLite's parameter list, quadratic in a statement this size.
async fn insert(pool: &AnyPool, backend: Backend, rows: &[UsageRecord]) -> StoreResult<()> {
    let _timer = QueryTimer::start("insert_usage_batch");
    let mut sql = String::with_capacity(200 + rows.len() * 60);
    sql.push_str(INSERT_USAGE);
    push_rows(&mut sql, backend, rows.len(), 11, "");
    let mut q = sqlx::query(&sql);
    for u in rows {
        q = bind_usage(q, u);
    }
    q.execute(pool).await.map_err(db_err)?;
    Ok(())
}

pub(crate) type AnyQuery<'q> = sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>;

/// The columns of a usage row, in the order [`bind_usage`] binds them.
pub(crate) const INSERT_USAGE: &str = "INSERT INTO usage_records (id, owner, conversation_id, request_id, model, \
    backend, prompt_tokens, completion_tokens, latency_ms, outcome, created_at) VALUES ";

/// Bind one usage record's 11 values, in [`INSERT_USAGE`]'s column order.
pub(crate) fn bind_usage<'q>(q: AnyQuery<'q>, u: &'q UsageRecord) -> AnyQuery<'q> {
    q.bind(u.id.as_str())
        .bind(u.owner.as_str())
        .bind(u.conversation_id.as_deref())
        .bind(u.request_id.as_deref())
        .bind(u.model.as_str())
        .bind(u.backend.as_deref())
        .bind(i64::from(u.prompt_tokens))
        .bind(i64::from(u.completion_tokens))
        .bind(u.latency_ms)
        .bind(u.outcome.as_str())
        .bind(u.created_at)
}
