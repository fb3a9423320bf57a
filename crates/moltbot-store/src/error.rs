//! sqlx errors to [`StoreError`].

use moltbot_core::StoreError;
use sqlx::error::ErrorKind;
use sqlx::migrate::MigrateError;

pub(crate) fn db_err(e: sqlx::Error) -> StoreError {
    match e {
        sqlx::Error::RowNotFound => StoreError::NotFound,
        sqlx::Error::Database(d) if d.kind() == ErrorKind::UniqueViolation => {
            StoreError::Conflict(d.message().to_string())
        }
        sqlx::Error::PoolTimedOut => {
            StoreError::Database("timed out waiting for a database connection".into())
        }
        e => StoreError::Database(e.to_string()),
    }
}

pub(crate) fn migrate_err(e: MigrateError) -> StoreError {
    match e {
        MigrateError::Execute(e) => db_err(e),
        e => StoreError::Database(format!("migration failed: {e}")),
    }
}

pub(crate) fn corrupt(what: &str, detail: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("{what}: {detail}"))
}
