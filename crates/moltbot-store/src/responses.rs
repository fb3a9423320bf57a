//! [`ResponseStore`] for [`SqlStore`], and the transactional insert used by the turn recorder.

use async_trait::async_trait;
use moltbot_core::responses::{ResponseRecord, ResponseStore};
use moltbot_core::{Owner, StoreError, StoreResult};
use serde_json::Value;
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::SqlStore;
use crate::error::db_err;
use crate::metrics::QueryTimer;

const COLUMNS: &str = "id, owner, previous_response_id, conversation_id, input, body, created_at";

fn json_column(row: &AnyRow, c: &str) -> StoreResult<Value> {
    let text: String = row.try_get(c).map_err(db_err)?;
    serde_json::from_str(&text).map_err(|e| StoreError::Corrupt(format!("responses.{c}: {e}")))
}

fn response(row: &AnyRow) -> StoreResult<ResponseRecord> {
    let input = match json_column(row, "input")? {
        Value::Array(items) => items,
        other => {
            return Err(StoreError::Corrupt(format!(
                "responses.input is not an array: {other}"
            )));
        }
    };
    Ok(ResponseRecord {
        id: row.try_get("id").map_err(db_err)?,
        owner: row.try_get("owner").map_err(db_err)?,
        previous_response_id: row.try_get("previous_response_id").map_err(db_err)?,
        conversation_id: row.try_get("conversation_id").map_err(db_err)?,
        input,
        body: json_column(row, "body")?,
        created_at: row.try_get("created_at").map_err(db_err)?,
    })
}

/// The INSERT of one response, for [`crate::tx::SqlTx`].
pub(crate) async fn insert(conn: &mut sqlx::AnyConnection, r: &ResponseRecord) -> StoreResult<()> {
    let _timer = QueryTimer::start("tx.insert_response");
    let input = serde_json::to_string(&r.input).map_err(|e| StoreError::Database(e.to_string()))?;
    let body = serde_json::to_string(&r.body).map_err(|e| StoreError::Database(e.to_string()))?;
    sqlx::query(&format!(
        "INSERT INTO responses ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7)"
    ))
    .bind(r.id.as_str())
    .bind(r.owner.as_str())
    .bind(r.previous_response_id.as_deref())
    .bind(r.conversation_id.as_deref())
    .bind(input)
    .bind(body)
    .bind(r.created_at)
    .execute(conn)
    .await
    .map_err(db_err)?;
    Ok(())
}

#[async_trait]
impl ResponseStore for SqlStore {
    async fn get_response(&self, owner: &Owner, id: &str) -> StoreResult<Option<ResponseRecord>> {
        let _timer = QueryTimer::start("get_response");
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM responses WHERE id = $1 AND owner = $2"
        ))
        .bind(id)
        .bind(owner)
        .fetch_optional(self.pool())
        .await
        .map_err(db_err)?;
        row.as_ref().map(response).transpose()
    }

    async fn delete_response(&self, owner: &Owner, id: &str) -> StoreResult<bool> {
        let _timer = QueryTimer::start("delete_response");
        let done = sqlx::query("DELETE FROM responses WHERE id = $1 AND owner = $2")
            .bind(id)
            .bind(owner)
            .execute(self.pool())
            .await
            .map_err(db_err)?;
        Ok(done.rows_affected() > 0)
    }
}
