//! Group commit for the two writes of every stored turn ([`moltbot_core::Store::open_turn`]: the user's
//! messages, in a new conversation or not; [`moltbot_core::Store::commit_turn`]: the reply, the user's
//! messages completed, a webhook event, the history hash and a usage row).
//!
//! Written alone, a turn costs two transactions and fourteen statements. Writes that arrive while another
//! group is being written wait in a queue, and the next group goes in one transaction with one multi-row
//! statement per table (the existing conversations' sequence numbers and history hashes included: one
//! `UPDATE … FROM (VALUES …)` for up to 32 of them). Nothing waits for a timer: a write that arrives alone is
//! written at once, as a group of one.
//!
//! Every caller learns its own outcome and returns only after the commit. A write whose conversation is
//! gone fails alone (`NotFound`); any other error rolls the group back and writes its members one by one,
//! so one bad write cannot fail the others. Ids are fixed before the first try, so a retry can never
//! store a row twice.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use moltbot_core::webhooks::{CONVERSATION_CREATED, EventGate, OutboxEvent};
use moltbot_core::{MessageStatus, NewMessage, StoreError, StoreResult, StoreTx, TurnCommit, TurnOpen, ids};
use serde_json::json;
use sqlx::{Any, AnyPool, Transaction};
use tokio::sync::oneshot;

use crate::Backend;
use crate::error::db_err;
use crate::metrics::QueryTimer;
use crate::params::{push_params, push_rows};
use crate::tx::{INSERT_MESSAGE, SqlTx, bind_message};
use crate::usage_log::{INSERT_USAGE, bind_usage};

/// Writes per transaction at most.
const MAX_GROUP: usize = 64;
/// Rows per multi-row statement, largest first: a group is split into these sizes so that each
/// connection's statement cache holds a handful of shapes instead of one per group size.
const CHUNKS: [usize; 6] = [32, 16, 8, 4, 2, 1];

/// One queued write and the caller waiting for its outcome.
#[derive(Debug)]
pub(crate) enum Job {
    Open(TurnOpen, oneshot::Sender<StoreResult<String>>),
    Commit(Box<TurnCommit>, oneshot::Sender<StoreResult<()>>),
}

/// One of a turn's two writes ([`crate::SqlStore::write_turns`] takes a group of them).
#[derive(Debug, Clone)]
pub enum TurnWrite {
    Open(TurnOpen),
    Commit(Box<TurnCommit>),
}

/// A write's outcome: the conversation id of an opened turn.
pub(crate) type Outcome = StoreResult<Option<String>>;

#[derive(Debug, Default)]
struct Queue {
    jobs: Vec<Job>,
    /// A task is writing (and will take what is queued before it stops).
    writing: bool,
}

#[derive(Debug)]
pub(crate) struct TurnLog {
    backend: Backend,
    gate: Arc<EventGate>,
    queue: Mutex<Queue>,
}

impl TurnLog {
    pub(crate) fn new(backend: Backend, gate: Arc<EventGate>) -> Arc<Self> {
        Arc::new(Self {
            backend,
            gate,
            queue: Mutex::default(),
        })
    }

    pub(crate) async fn open(self: &Arc<Self>, pool: &AnyPool, turn: TurnOpen) -> StoreResult<String> {
        let (tx, rx) = oneshot::channel();
        if let Err(Job::Open(turn, _)) = self.submit(pool, Job::Open(turn, tx)) {
            return write_one(pool, self.backend, &self.gate, &TurnWrite::Open(turn))
                .await
                .map(Option::unwrap_or_default);
        }
        rx.await.unwrap_or_else(|_| Err(stopped()))
    }

    pub(crate) async fn commit(self: &Arc<Self>, pool: &AnyPool, turn: TurnCommit) -> StoreResult<()> {
        let (tx, rx) = oneshot::channel();
        if let Err(Job::Commit(turn, _)) = self.submit(pool, Job::Commit(Box::new(turn), tx)) {
            return write_one(pool, self.backend, &self.gate, &TurnWrite::Commit(turn))
                .await
                .map(drop);
        }
        rx.await.unwrap_or_else(|_| Err(stopped()))
    }

    /// Queue `job`, starting a writer task unless one is running. The write runs in that task: a caller
    /// that goes away does not cancel it. Outside a Tokio runtime the job comes back, to be written inline.
    fn submit(self: &Arc<Self>, pool: &AnyPool, job: Job) -> Result<(), Job> {
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return Err(job);
        };
        let start = {
            let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
            q.jobs.push(job);
            !std::mem::replace(&mut q.writing, true)
        };
        if start {
            handle.spawn(drain(self.clone(), pool.clone()));
        }
        Ok(())
    }
}

fn stopped() -> StoreError {
    StoreError::Database("the turn writer stopped".into())
}

/// Write groups until the queue is empty.
async fn drain(log: Arc<TurnLog>, pool: AnyPool) {
    loop {
        let group: Vec<Job> = {
            let mut q = log.queue.lock().unwrap_or_else(|e| e.into_inner());
            if q.jobs.is_empty() {
                q.writing = false;
                return;
            }
            let n = q.jobs.len().min(MAX_GROUP);
            q.jobs.drain(..n).collect()
        };
        let mut writes = Vec::with_capacity(group.len());
        let mut waiters = Vec::with_capacity(group.len());
        for job in group {
            match job {
                Job::Open(turn, tx) => {
                    writes.push(TurnWrite::Open(turn));
                    waiters.push(Ok(tx));
                }
                Job::Commit(turn, tx) => {
                    writes.push(TurnWrite::Commit(turn));
                    waiters.push(Err(tx));
                }
            }
        }
        let results = write_group(&pool, log.backend, &log.gate, &writes).await;
        // Writes queued while the database could not be reached would wait for the pool's timeout
        // a second time: they fail now, with the same error.
        let unavailable = results.iter().find_map(|r| match r {
            Err(StoreError::Unavailable(reason)) => Some(reason.clone()),
            _ => None,
        });
        if let Some(reason) = unavailable {
            let queued: Vec<Job> = {
                let mut q = log.queue.lock().unwrap_or_else(|e| e.into_inner());
                std::mem::take(&mut q.jobs)
            };
            for job in queued {
                let err = || StoreError::Unavailable(reason.clone());
                match job {
                    Job::Open(_, tx) => drop(tx.send(Err(err()))),
                    Job::Commit(_, tx) => drop(tx.send(Err(err()))),
                }
            }
        }
        for (waiter, result) in waiters.into_iter().zip(results) {
            // A caller that went away no longer listens; its write stands.
            match waiter {
                Ok(open) => drop(open.send(result.and_then(|id| id.ok_or(StoreError::NotFound)))),
                Err(commit) => drop(commit.send(result.map(drop))),
            }
        }
    }
}

pub(crate) async fn write_group(
    pool: &AnyPool,
    backend: Backend,
    gate: &Arc<EventGate>,
    writes: &[TurnWrite],
) -> Vec<Outcome> {
    match try_group(pool, backend, gate, writes).await {
        Ok(results) => results,
        // An unreachable database fails the whole group at once: trying each write again would make
        // every caller wait for the pool's timeout twice.
        Err(StoreError::Unavailable(reason)) => writes
            .iter()
            .map(|_| Err(StoreError::Unavailable(reason.clone())))
            .collect(),
        Err(e) => {
            if writes.len() > 1 {
                tracing::warn!(error = %e, writes = writes.len(), "group commit failed; writing one by one");
            }
            let mut results = Vec::with_capacity(writes.len());
            for write in writes {
                results.push(write_one(pool, backend, gate, write).await);
            }
            results
        }
    }
}

/// One write in its own transaction, statement by statement (the reference path).
async fn write_one(pool: &AnyPool, backend: Backend, gate: &Arc<EventGate>, write: &TurnWrite) -> Outcome {
    let mut tx = SqlTx::new(begin(pool, backend).await?, gate.clone());
    let id = match write {
        TurnWrite::Open(turn) => Some(turn.write(&mut tx).await?),
        TurnWrite::Commit(turn) => {
            turn.write(&mut tx).await?;
            None
        }
    };
    Box::new(tx).commit().await?;
    Ok(id)
}

async fn begin(pool: &AnyPool, backend: Backend) -> StoreResult<Transaction<'static, Any>> {
    match backend {
        Backend::Sqlite => pool.begin_with("BEGIN IMMEDIATE").await,
        Backend::Postgres => pool.begin().await,
    }
    .map_err(db_err)
}

/// What a group's writes reserve in one existing conversation.
#[derive(Default)]
struct Reservation<'a> {
    /// The writes on it, in group order, with the sequence numbers each takes.
    writes: Vec<(usize, i64)>,
    /// Sequence numbers taken in all.
    count: i64,
    /// The history hash it ends with, if a commit moves it.
    tip: Option<&'a str>,
}

/// One statement for the sequence numbers (and history hashes) of up to 32 existing conversations;
/// the writes on a conversation that is gone keep `conv_ids[i] == None`. PostgreSQL first locks the
/// rows in id order, so that two replicas' groups sharing conversations cannot deadlock (SQLite's
/// `BEGIN IMMEDIATE` already holds the only write lock).
async fn reserve(
    tx: &mut Transaction<'static, Any>,
    backend: Backend,
    group: &[(&str, Reservation<'_>)],
    conv_ids: &mut [Option<String>],
    last_seq: &mut [i64],
) -> StoreResult<()> {
    if backend == Backend::Postgres {
        let mut sql = String::from("SELECT id FROM conversations WHERE id IN (");
        push_params(&mut sql, backend, 1, group.len());
        sql.push_str(") ORDER BY id FOR UPDATE");
        let mut q = sqlx::query(&sql);
        for (id, _) in group {
            q = q.bind(*id);
        }
        q.execute(&mut **tx).await.map_err(db_err)?;
    }
    // VALUES columns are `column1`, `column2`, … in both SQLite and PostgreSQL.
    let mut sql = String::from(
        "UPDATE conversations SET next_seq = next_seq + v.column2, \
         tip_hash = COALESCE(v.column3, tip_hash) FROM (VALUES ",
    );
    push_rows(&mut sql, backend, group.len(), 3, "");
    sql.push_str(") AS v WHERE conversations.id = v.column1 RETURNING id, next_seq");
    let mut q = sqlx::query_as::<_, (String, i64)>(&sql);
    for (id, r) in group {
        q = q.bind(*id).bind(r.count).bind(r.tip);
    }
    let reserved: HashMap<String, i64> = q
        .fetch_all(&mut **tx)
        .await
        .map_err(db_err)?
        .into_iter()
        .collect();
    for (id, r) in group {
        let Some(&end) = reserved.get(*id) else {
            continue;
        };
        // The last write ends at `end`; each one before ends where the next one's numbers start.
        let mut next_end = end;
        for &(i, count) in r.writes.iter().rev() {
            conv_ids[i] = Some((*id).to_owned());
            last_seq[i] = next_end;
            next_end -= count;
        }
    }
    Ok(())
}

/// A message row of the group.
struct Row<'a> {
    message: &'a NewMessage,
    conversation_id: &'a str,
    seq: i64,
    now: i64,
}

/// The whole group in one transaction. `Err` when it must be retried one by one.
pub(crate) async fn try_group(
    pool: &AnyPool,
    backend: Backend,
    gate: &EventGate,
    writes: &[TurnWrite],
) -> StoreResult<Vec<Outcome>> {
    let _timer = QueryTimer::start("turn_group");
    let mut tx = begin(pool, backend).await?;

    // New conversations get their ids here; existing ones reserve sequence numbers.
    let mut conv_ids: Vec<Option<String>> = vec![None; writes.len()];
    let mut last_seq: Vec<i64> = vec![0; writes.len()];
    let mut existing: BTreeMap<&str, Reservation<'_>> = BTreeMap::new();
    for (i, w) in writes.iter().enumerate() {
        let (id, count, tip) = match w {
            TurnWrite::Open(t) => match &t.conversation_id {
                Some(id) => (id, t.messages.len() as i64, None),
                None => {
                    conv_ids[i] = Some(ids::conversation_id());
                    last_seq[i] = t.messages.len() as i64;
                    continue;
                }
            },
            TurnWrite::Commit(t) => (&t.conversation_id, 1, t.tip.as_deref()),
        };
        let r = existing.entry(id.as_str()).or_default();
        r.writes.push((i, count));
        r.count += count;
        // The last commit's hash wins, as if the writes had run one after the other.
        r.tip = tip.or(r.tip);
    }
    let existing: Vec<(&str, Reservation<'_>)> = existing.into_iter().collect();
    for group in chunks(&existing) {
        reserve(&mut tx, backend, group, &mut conv_ids, &mut last_seq).await?;
    }

    let mut created: Vec<(&TurnOpen, &str)> = Vec::new();
    let mut rows: Vec<Row<'_>> = Vec::new();
    let mut completed: Vec<&str> = Vec::new();
    let mut events: Vec<Cow<'_, OutboxEvent>> = Vec::new();
    let mut usage = Vec::new();
    for (i, w) in writes.iter().enumerate() {
        let Some(conv) = conv_ids[i].as_deref() else {
            continue;
        };
        match w {
            TurnWrite::Open(t) => {
                if t.conversation_id.is_none() {
                    created.push((t, conv));
                }
                if t.conversation_id.is_none() && gate.wants(CONVERSATION_CREATED) {
                    events.push(Cow::Owned(OutboxEvent::new(
                        CONVERSATION_CREATED,
                        json!({"id": conv, "owner": t.owner, "created_at": t.now, "metadata": {}}),
                        crate::tx::event_millis(t.now),
                    )));
                }
                let first = last_seq[i] - t.messages.len() as i64 + 1;
                for (seq, message) in (first..).zip(&t.messages) {
                    rows.push(Row {
                        message,
                        conversation_id: conv,
                        seq,
                        now: t.now,
                    });
                }
            }
            TurnWrite::Commit(t) => {
                rows.push(Row {
                    message: &t.reply,
                    conversation_id: conv,
                    seq: last_seq[i],
                    now: t.usage.created_at,
                });
                completed.extend(t.completed.iter().map(String::as_str));
                events.extend(
                    t.event
                        .as_ref()
                        .filter(|e| gate.wants(&e.event_type))
                        .map(Cow::Borrowed),
                );
                usage.push(&t.usage);
            }
        }
    }

    let empty = crate::rows::metadata_json(&serde_json::Map::new())?;
    for group in chunks(&created) {
        let mut sql =
            String::from("INSERT INTO conversations (id, owner, created_at, metadata, next_seq) VALUES ");
        push_rows(&mut sql, backend, group.len(), 5, "");
        let mut q = sqlx::query(&sql);
        for (t, id) in group {
            let n = t.messages.len() as i64;
            q = q
                .bind(*id)
                .bind(t.owner.as_str())
                .bind(t.now)
                .bind(empty.as_str())
                .bind(n);
        }
        q.execute(&mut *tx).await.map_err(db_err)?;
    }

    for group in chunks(&rows) {
        let mut sql = String::from(INSERT_MESSAGE);
        push_rows(&mut sql, backend, group.len(), 16, "");
        let mut q = sqlx::query(&sql);
        for r in group {
            q = bind_message(q, r.message, r.conversation_id, r.seq, r.now)?;
        }
        q.execute(&mut *tx).await.map_err(db_err)?;
    }

    for ids in chunks(&completed) {
        let mut sql = String::from("UPDATE messages SET status = ");
        push_params(&mut sql, backend, 1, 1);
        sql.push_str(" WHERE id IN (");
        push_params(&mut sql, backend, 2, ids.len());
        sql.push(')');
        let mut q = sqlx::query(&sql).bind(MessageStatus::Completed.as_str());
        for id in ids {
            q = q.bind(*id);
        }
        let done = q.execute(&mut *tx).await.map_err(db_err)?;
        if done.rows_affected() != ids.len() as u64 {
            // A user message is gone: the one-by-one path finds out whose.
            return Err(StoreError::NotFound);
        }
    }

    let payloads = events
        .iter()
        .map(|e| serde_json::to_string(&e.payload))
        .collect::<Result<Vec<String>, _>>()
        .map_err(|e| StoreError::Database(format!("cannot encode event payload: {e}")))?;
    let events: Vec<(&OutboxEvent, &String)> = events.iter().map(|e| e.as_ref()).zip(&payloads).collect();
    for group in chunks(&events) {
        let mut sql = String::from(
            "INSERT INTO event_outbox (id, event_type, payload, created_ms, dispatched_ms) VALUES ",
        );
        push_rows(&mut sql, backend, group.len(), 4, ", NULL");
        let mut q = sqlx::query(&sql);
        for (event, payload) in group {
            q = q
                .bind(event.id.as_str())
                .bind(event.event_type.as_str())
                .bind(payload.as_str())
                .bind(event.created_ms);
        }
        q.execute(&mut *tx).await.map_err(db_err)?;
    }

    for group in chunks(&usage) {
        let mut sql = String::from(INSERT_USAGE);
        push_rows(&mut sql, backend, group.len(), 11, "");
        let mut q = sqlx::query(&sql);
        for u in group {
            q = bind_usage(q, u);
        }
        q.execute(&mut *tx).await.map_err(db_err)?;
    }

    tx.commit().await.map_err(db_err)?;
    Ok(writes
        .iter()
        .zip(conv_ids)
        .map(|(w, id)| match (w, id) {
            (_, None) => Err(StoreError::NotFound),
            (TurnWrite::Open(_), id) => Ok(id),
            (TurnWrite::Commit(_), Some(_)) => Ok(None),
        })
        .collect())
}

/// `items` cut into runs of the sizes in [`CHUNKS`], largest first.
fn chunks<T>(items: &[T]) -> impl Iterator<Item = &[T]> {
    crate::params::chunks(items, &CHUNKS)
}
