//! API keys: rows, queries and the one-time bootstrap, shared by both backends.

use moltbot_core::{ApiKey, ApiKeyUpdate, KeyLimits, Scope, StoreError, StoreResult};
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::SqlStore;
use crate::error::{corrupt, db_err};
use crate::metrics::QueryTimer;

const COLUMNS: &str = "id, name, prefix, secret_hash, scopes, requests_per_minute, tokens_per_minute, \
     daily_tokens, concurrent_streams, created_at, last_used_at, expires_at, revoked_at";

fn get<'r, T>(row: &'r AnyRow, column: &str) -> StoreResult<T>
where
    T: sqlx::Decode<'r, sqlx::Any> + sqlx::Type<sqlx::Any>,
{
    row.try_get(column).map_err(db_err)
}

fn opt_u32(row: &AnyRow, column: &str) -> StoreResult<Option<u32>> {
    get::<Option<i64>>(row, column)?
        .map(|v| u32::try_from(v).map_err(|e| corrupt(column, e)))
        .transpose()
}

fn key(row: &AnyRow) -> StoreResult<ApiKey> {
    let scopes: String = get(row, "scopes")?;
    Ok(ApiKey {
        id: get(row, "id")?,
        name: get(row, "name")?,
        prefix: get(row, "prefix")?,
        secret_hash: get(row, "secret_hash")?,
        scopes: Scope::parse_list(&scopes).map_err(|e| corrupt("api key scopes", e))?,
        limits: KeyLimits {
            requests_per_minute: opt_u32(row, "requests_per_minute")?,
            tokens_per_minute: opt_u32(row, "tokens_per_minute")?,
            daily_tokens: get::<Option<i64>>(row, "daily_tokens")?
                .map(|v| u64::try_from(v).map_err(|e| corrupt("daily_tokens", e)))
                .transpose()?,
            concurrent_streams: opt_u32(row, "concurrent_streams")?,
        },
        created_at: get(row, "created_at")?,
        last_used_at: get(row, "last_used_at")?,
        expires_at: get(row, "expires_at")?,
        revoked_at: get(row, "revoked_at")?,
    })
}

fn i64_of(v: Option<u64>) -> StoreResult<Option<i64>> {
    v.map(|v| i64::try_from(v).map_err(|e| StoreError::Database(format!("value out of range: {e}"))))
        .transpose()
}

async fn insert<'e, E>(exec: E, k: &ApiKey) -> StoreResult<()>
where
    E: sqlx::Executor<'e, Database = sqlx::Any>,
{
    let sql = format!(
        "INSERT INTO api_keys ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)"
    );
    sqlx::query(&sql)
        .bind(k.id.as_str())
        .bind(k.name.as_str())
        .bind(k.prefix.as_str())
        .bind(k.secret_hash.as_str())
        .bind(Scope::join(&k.scopes))
        .bind(k.limits.requests_per_minute.map(i64::from))
        .bind(k.limits.tokens_per_minute.map(i64::from))
        .bind(i64_of(k.limits.daily_tokens)?)
        .bind(k.limits.concurrent_streams.map(i64::from))
        .bind(k.created_at)
        .bind(k.last_used_at)
        .bind(k.expires_at)
        .bind(k.revoked_at)
        .execute(exec)
        .await
        .map_err(db_err)?;
    Ok(())
}

impl SqlStore {
    pub(crate) async fn key_create(&self, k: &ApiKey) -> StoreResult<()> {
        let _timer = QueryTimer::start("key_create");
        insert(self.pool(), k).await
    }

    pub(crate) async fn key_bootstrap(&self, k: &ApiKey) -> StoreResult<bool> {
        let _timer = QueryTimer::start("key_bootstrap");
        let mut tx = self.begin_write().await?;
        // The marker's primary key serialises concurrent bootstraps: a second inserter waits for the
        // first transaction, then finds the row and inserts nothing.
        let marked = sqlx::query(
            "INSERT INTO auth_bootstrap (id, key_id, created_at) VALUES (1, $1, $2) ON CONFLICT DO NOTHING",
        )
        .bind(k.id.as_str())
        .bind(k.created_at)
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
        if marked.rows_affected() == 0 {
            return Ok(false);
        }
        let (existing,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM api_keys")
            .fetch_one(&mut *tx)
            .await
            .map_err(db_err)?;
        if existing > 0 {
            // Keys were created another way first: remember that bootstrapping is over.
            sqlx::query("UPDATE auth_bootstrap SET key_id = NULL WHERE id = 1")
                .execute(&mut *tx)
                .await
                .map_err(db_err)?;
            tx.commit().await.map_err(db_err)?;
            return Ok(false);
        }
        insert(&mut *tx, k).await?;
        tx.commit().await.map_err(db_err)?;
        Ok(true)
    }

    pub(crate) async fn key_list(&self) -> StoreResult<Vec<ApiKey>> {
        let _timer = QueryTimer::start("key_list");
        let sql = format!("SELECT {COLUMNS} FROM api_keys ORDER BY created_at ASC, id ASC");
        let rows = sqlx::query(&sql).fetch_all(self.pool()).await.map_err(db_err)?;
        rows.iter().map(key).collect()
    }

    pub(crate) async fn key_get(&self, column: &str, value: &str) -> StoreResult<Option<ApiKey>> {
        let _timer = QueryTimer::start("key_get");
        debug_assert!(matches!(column, "id" | "secret_hash"));
        let sql = format!("SELECT {COLUMNS} FROM api_keys WHERE {column} = $1");
        let row = sqlx::query(&sql)
            .bind(value)
            .fetch_optional(self.pool())
            .await
            .map_err(db_err)?;
        row.as_ref().map(key).transpose()
    }

    pub(crate) async fn key_update(&self, id: &str, update: &ApiKeyUpdate) -> StoreResult<Option<ApiKey>> {
        let _timer = QueryTimer::start("key_update");
        let Some(mut k) = self.key_get("id", id).await? else {
            return Ok(None);
        };
        update.apply(&mut k);
        let sql = format!(
            "UPDATE api_keys SET name = $1, scopes = $2, requests_per_minute = $3, tokens_per_minute = $4, \
             daily_tokens = $5, concurrent_streams = $6, expires_at = $7 WHERE id = $8 RETURNING {COLUMNS}"
        );
        let row = sqlx::query(&sql)
            .bind(k.name.as_str())
            .bind(Scope::join(&k.scopes))
            .bind(k.limits.requests_per_minute.map(i64::from))
            .bind(k.limits.tokens_per_minute.map(i64::from))
            .bind(i64_of(k.limits.daily_tokens)?)
            .bind(k.limits.concurrent_streams.map(i64::from))
            .bind(k.expires_at)
            .bind(id)
            .fetch_optional(self.pool())
            .await
            .map_err(db_err)?;
        row.as_ref().map(key).transpose()
    }

    pub(crate) async fn key_revoke(&self, id: &str, now: i64) -> StoreResult<bool> {
        let _timer = QueryTimer::start("key_revoke");
        let done = sqlx::query("UPDATE api_keys SET revoked_at = COALESCE(revoked_at, $1) WHERE id = $2")
            .bind(now)
            .bind(id)
            .execute(self.pool())
            .await
            .map_err(db_err)?;
        Ok(done.rows_affected() > 0)
    }

    pub(crate) async fn key_touch(&self, id: &str, now: i64) -> StoreResult<()> {
        let _timer = QueryTimer::start("key_touch");
        sqlx::query("UPDATE api_keys SET last_used_at = $1 WHERE id = $2")
            .bind(now)
            .bind(id)
            .execute(self.pool())
            .await
            .map_err(db_err)?;
        Ok(())
    }

    pub(crate) async fn key_count(&self) -> StoreResult<u64> {
        let _timer = QueryTimer::start("key_count");
        let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM api_keys")
            .fetch_one(self.pool())
            .await
            .map_err(db_err)?;
        u64::try_from(n).map_err(|e| corrupt("api key count", e))
    }

    pub(crate) async fn usage_tokens_since(&self, owner: &str, since: i64) -> StoreResult<u64> {
        let _timer = QueryTimer::start("usage_tokens_since");
        // CAST keeps the sum an integer on both backends (PostgreSQL's SUM(bigint) is NUMERIC).
        let (n,): (i64,) = sqlx::query_as(
            "SELECT CAST(COALESCE(SUM(prompt_tokens + completion_tokens), 0) AS BIGINT) FROM usage_records \
             WHERE owner = $1 AND created_at >= $2",
        )
        .bind(owner)
        .bind(since)
        .fetch_one(self.pool())
        .await
        .map_err(db_err)?;
        u64::try_from(n).map_err(|e| corrupt("usage sum", e))
    }
}
