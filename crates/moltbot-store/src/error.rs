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
            StoreError::Unavailable("timed out waiting for a database connection".into())
        }
        sqlx::Error::Io(_) | sqlx::Error::Tls(_) | sqlx::Error::PoolClosed | sqlx::Error::WorkerCrashed => {
            StoreError::Unavailable(e.to_string())
        }
        sqlx::Error::Database(d) if d.code().is_some_and(|c| unreachable_sqlstate(&c)) => {
            StoreError::Unavailable(d.message().to_string())
        }
        e => StoreError::Database(e.to_string()),
    }
}

/// PostgreSQL's "try again later" states: class 08 (connection exception) and 57P01–57P03 (the server
/// is shutting down, crashed or starting up).
fn unreachable_sqlstate(code: &str) -> bool {
    code.starts_with("08") || matches!(code, "57P01" | "57P02" | "57P03")
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unreachable_database_errors_are_unavailable() {
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        for e in [
            sqlx::Error::PoolTimedOut,
            sqlx::Error::PoolClosed,
            sqlx::Error::WorkerCrashed,
            sqlx::Error::Io(refused),
        ] {
            assert!(matches!(db_err(e), StoreError::Unavailable(_)));
        }
        assert!(matches!(db_err(sqlx::Error::RowNotFound), StoreError::NotFound));
        assert!(matches!(
            db_err(sqlx::Error::Protocol("x".into())),
            StoreError::Database(_)
        ));
        assert!(unreachable_sqlstate("08006") && unreachable_sqlstate("57P01"));
        assert!(!unreachable_sqlstate("23505") && !unreachable_sqlstate("2067"));
    }
}
