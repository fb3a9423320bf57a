//! Storing a compaction (`moltbot_core::memory`): the conditional write that lets exactly one of two
//! racing compactions of a conversation commit.
//!
//! Every replaced item is claimed with `compacted_by IS NULL` in the condition. On PostgreSQL a
//! concurrent claim of the same row waits for the first transaction and then finds the row claimed
//! (READ COMMITTED re-checks the condition); SQLite runs one writer at a time (`BEGIN IMMEDIATE`). Fewer
//! rows claimed than listed means another compaction (or a delete) got there first: `Conflict`.

use moltbot_core::{NewMessage, StoreError, StoreResult};

use crate::error::db_err;
use crate::metrics::QueryTimer;

/// Items claimed per statement (keeps the number of bound parameters small on both backends).
const CHUNK: usize = 500;

fn conflict(detail: &str) -> StoreError {
    StoreError::Conflict(format!("compaction: {detail}"))
}

/// A deadlock or serialization failure between two compactions is the same race as a lost claim.
fn claim_err(e: sqlx::Error) -> StoreError {
    if let sqlx::Error::Database(d) = &e
        && matches!(d.code().as_deref(), Some("40P01" | "40001"))
    {
        return conflict(d.message());
    }
    db_err(e)
}

/// Before a compaction item is deleted: the items it replaced are context again (an earlier summary it
/// absorbed is in force again, with the messages that one replaced still replaced by it).
pub(crate) async fn release_replaced(
    conn: &mut sqlx::AnyConnection,
    conversation_id: &str,
    summary_id: &str,
) -> StoreResult<()> {
    sqlx::query("UPDATE messages SET compacted_by = NULL WHERE conversation_id = $1 AND compacted_by = $2")
        .bind(conversation_id)
        .bind(summary_id)
        .execute(&mut *conn)
        .await
        .map_err(db_err)?;
    Ok(())
}

/// Mark every item `summary.compaction` replaces as compacted by `summary`, or fail with `Conflict`.
pub(crate) async fn mark_replaced(
    conn: &mut sqlx::AnyConnection,
    conversation_id: &str,
    summary: &NewMessage,
) -> StoreResult<()> {
    let _timer = QueryTimer::start("tx.mark_compacted");
    let ids = match &summary.compaction {
        Some(c) if !c.replaced_ids.is_empty() => &c.replaced_ids,
        _ => {
            return Err(StoreError::Database(
                "a compaction item must list the items it replaces".into(),
            ));
        }
    };
    let mut claimed = 0u64;
    for chunk in ids.chunks(CHUNK) {
        let placeholders: Vec<String> = (0..chunk.len()).map(|i| format!("${}", i + 3)).collect();
        let sql = format!(
            "UPDATE messages SET compacted_by = $1 \
             WHERE conversation_id = $2 AND compacted_by IS NULL AND id IN ({})",
            placeholders.join(", ")
        );
        let mut q = sqlx::query(&sql).bind(summary.id.as_str()).bind(conversation_id);
        for id in chunk {
            q = q.bind(id.as_str());
        }
        claimed += q.execute(&mut *conn).await.map_err(claim_err)?.rows_affected();
    }
    let listed = ids.len() as u64;
    if claimed != listed {
        return Err(conflict(&format!(
            "{} of the {listed} items to replace are gone or compacted already",
            listed - claimed
        )));
    }
    Ok(())
}
