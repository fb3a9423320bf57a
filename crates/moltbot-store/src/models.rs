//! The local model registry (`model_registry`), shared by both backends.

use moltbot_core::{RegisteredModel, StoreResult};
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::SqlStore;
use crate::error::{corrupt, db_err};
use crate::metrics::QueryTimer;

const COLUMNS: &str =
    "name, source, local_path, sha256, md5, quantization, context_window, max_tokens, gpu_layers, created_at";

fn u32_of(row: &AnyRow, column: &str) -> StoreResult<u32> {
    let v: i64 = row.try_get(column).map_err(db_err)?;
    u32::try_from(v).map_err(|e| corrupt(column, e))
}

fn model(row: &AnyRow) -> StoreResult<RegisteredModel> {
    let s = |c: &str| row.try_get::<String, _>(c).map_err(db_err);
    Ok(RegisteredModel {
        name: s("name")?,
        source: s("source")?,
        local_path: s("local_path")?,
        sha256: s("sha256")?,
        md5: s("md5")?,
        quantization: s("quantization")?,
        context_window: u32_of(row, "context_window")?,
        max_tokens: u32_of(row, "max_tokens")?,
        gpu_layers: u32_of(row, "gpu_layers")?,
        created_at: row.try_get("created_at").map_err(db_err)?,
    })
}

impl SqlStore {
    pub(crate) async fn model_upsert(&self, m: &RegisteredModel) -> StoreResult<()> {
        let _timer = QueryTimer::start("model_upsert");
        let sql = format!(
            "INSERT INTO model_registry ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
             ON CONFLICT (name) DO UPDATE SET source = excluded.source, local_path = excluded.local_path, \
             sha256 = excluded.sha256, md5 = excluded.md5, quantization = excluded.quantization, \
             context_window = excluded.context_window, max_tokens = excluded.max_tokens, \
             gpu_layers = excluded.gpu_layers, created_at = excluded.created_at"
        );
        sqlx::query(&sql)
            .bind(m.name.as_str())
            .bind(m.source.as_str())
            .bind(m.local_path.as_str())
            .bind(m.sha256.as_str())
            .bind(m.md5.as_str())
            .bind(m.quantization.as_str())
            .bind(i64::from(m.context_window))
            .bind(i64::from(m.max_tokens))
            .bind(i64::from(m.gpu_layers))
            .bind(m.created_at)
            .execute(self.pool())
            .await
            .map_err(db_err)?;
        Ok(())
    }

    pub(crate) async fn model_list(&self) -> StoreResult<Vec<RegisteredModel>> {
        let _timer = QueryTimer::start("model_list");
        let sql = format!("SELECT {COLUMNS} FROM model_registry ORDER BY name");
        let rows = sqlx::query(&sql).fetch_all(self.pool()).await.map_err(db_err)?;
        rows.iter().map(model).collect()
    }

    pub(crate) async fn model_get(&self, name: &str) -> StoreResult<Option<RegisteredModel>> {
        let _timer = QueryTimer::start("model_get");
        let sql = format!("SELECT {COLUMNS} FROM model_registry WHERE name = $1");
        let row = sqlx::query(&sql)
            .bind(name)
            .fetch_optional(self.pool())
            .await
            .map_err(db_err)?;
        row.as_ref().map(model).transpose()
    }

    pub(crate) async fn model_delete(&self, name: &str) -> StoreResult<bool> {
        let _timer = QueryTimer::start("model_delete");
        let done = sqlx::query("DELETE FROM model_registry WHERE name = $1")
            .bind(name)
            .execute(self.pool())
            .await
            .map_err(db_err)?;
        Ok(done.rows_affected() > 0)
    }
}
