//! Embedded migrations, one directory per backend, and schema status.
//!
//! Blue-green friendly: the migrator ignores versions in the database that this binary does not know
//! (applied by a newer release), and [`schema_status`] only reports this binary's own gaps.

use std::collections::BTreeSet;

use moltbot_core::{SchemaStatus, StoreError};
use sqlx::AnyPool;
use sqlx::migrate::Migrator;

use crate::Backend;
use crate::error::{db_err, migrate_err};

fn migrator(backend: Backend) -> Migrator {
    let mut m = match backend {
        Backend::Sqlite => sqlx::migrate!("./migrations/sqlite"),
        Backend::Postgres => sqlx::migrate!("./migrations/postgres"),
    };
    m.set_ignore_missing(true);
    m
}

fn known_versions(backend: Backend) -> BTreeSet<i64> {
    migrator(backend)
        .iter()
        .filter(|m| m.migration_type.is_up_migration())
        .map(|m| m.version)
        .collect()
}

async fn applied_versions(pool: &AnyPool, backend: Backend) -> Result<BTreeSet<i64>, StoreError> {
    let exists_sql = match backend {
        Backend::Sqlite => {
            "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'"
        }
        Backend::Postgres => {
            "SELECT COUNT(*) FROM information_schema.tables \
             WHERE table_schema = current_schema() AND table_name = '_sqlx_migrations'"
        }
    };
    let (exists,): (i64,) = sqlx::query_as(exists_sql).fetch_one(pool).await.map_err(db_err)?;
    if exists == 0 {
        return Ok(BTreeSet::new());
    }
    let rows: Vec<(i64,)> = sqlx::query_as("SELECT version FROM _sqlx_migrations WHERE success = TRUE")
        .fetch_all(pool)
        .await
        .map_err(db_err)?;
    Ok(rows.into_iter().map(|(v,)| v).collect())
}

pub(crate) async fn schema_status(pool: &AnyPool, backend: Backend) -> Result<SchemaStatus, StoreError> {
    let known = known_versions(backend);
    let applied = applied_versions(pool, backend).await?;
    Ok(SchemaStatus {
        applied: applied.last().copied().unwrap_or(0),
        known: known.last().copied().unwrap_or(0),
        pending: known.difference(&applied).copied().collect(),
    })
}

pub(crate) async fn migrate(pool: &AnyPool, backend: Backend) -> Result<SchemaStatus, StoreError> {
    // On PostgreSQL the migrator holds an advisory lock, so concurrent starters apply each step once.
    migrator(backend).run(pool).await.map_err(migrate_err)?;
    schema_status(pool, backend).await
}
