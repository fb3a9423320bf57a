//! Turning a database URL and [`StoreOptions`] into an `AnyPool`.
//!
//! Nothing here ever formats the URL into an error or a log line: it may carry a password.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use moltbot_core::StoreError;
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{AnyPool, ConnectOptions, Executor};
use url::Url;

use crate::error::db_err;
use crate::{Backend, StoreOptions};

pub(crate) async fn connect(url: &str, opts: &StoreOptions) -> Result<(AnyPool, Backend), StoreError> {
    sqlx::any::install_default_drivers();
    if let Some(rest) = url.strip_prefix("sqlite:") {
        Ok((connect_sqlite(rest, opts).await?, Backend::Sqlite))
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok((connect_postgres(url, opts).await?, Backend::Postgres))
    } else {
        Err(StoreError::Database(
            "unsupported database URL: expected `sqlite:` or `postgres://`".into(),
        ))
    }
}

fn any_options(url: &Url) -> Result<AnyConnectOptions, StoreError> {
    let opts =
        AnyConnectOptions::from_url(url).map_err(|_| StoreError::Database("invalid database URL".into()))?;
    // Every statement at INFO would drown the logs; slow ones still warn (sqlx default: 1 s).
    Ok(opts.log_statements(log::LevelFilter::Debug))
}

/// How long a caller waits for a pooled connection (including connecting at startup): the same
/// budget as SQLite's `busy_timeout`, so an overloaded or unreachable database fails fast.
fn acquire_timeout(opts: &StoreOptions) -> Duration {
    opts.busy_timeout.max(Duration::from_secs(1))
}

/// `rest` is the URL after `sqlite:`: `//path`, `path`, `:memory:`, optionally `?params`.
async fn connect_sqlite(rest: &str, opts: &StoreOptions) -> Result<AnyPool, StoreError> {
    let rest = rest.strip_prefix("//").unwrap_or(rest);
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    let memory = path == ":memory:"
        || url::form_urlencoded::parse(query.as_bytes()).any(|(k, v)| k == "mode" && v == "memory");

    // Validates the parameters and percent-decodes the file name the way sqlx will.
    let parsed = SqliteConnectOptions::from_str(&format!("sqlite://{rest}"))
        .map_err(|e| StoreError::Database(format!("invalid SQLite URL: {e}")))?;

    let url = if memory {
        Url::parse(&format!("sqlite:{rest}"))
            .map_err(|_| StoreError::Database("invalid SQLite URL".into()))?
    } else {
        sqlite_file_url(parsed.get_filename(), query)?
    };
    let any = any_options(&url)?;

    let busy_ms = opts.busy_timeout.as_millis().min(i32::MAX as u128);
    let pool = AnyPoolOptions::new().after_connect(move |conn, _meta| {
        Box::pin(async move {
            // busy_timeout first, so the journal_mode switch itself waits for locks.
            conn.execute(format!("PRAGMA busy_timeout = {busy_ms}").as_str())
                .await?;
            conn.execute("PRAGMA foreign_keys = ON").await?;
            conn.execute("PRAGMA synchronous = NORMAL").await?;
            if !memory {
                conn.execute("PRAGMA journal_mode = WAL").await?;
            }
            Ok(())
        })
    });
    let pool = pool.acquire_timeout(acquire_timeout(opts));
    let pool = if memory {
        // Every connection to `sqlite::memory:` is a new, empty database: keep exactly one, forever.
        pool.max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
    } else {
        pool.max_connections(opts.max_connections.max(1))
    };
    pool.connect_with(any).await.map_err(db_err)
}

/// An absolute `sqlite://` URL for a file, creating its parent directories; `mode=rwc` unless given.
fn sqlite_file_url(filename: &Path, query: &str) -> Result<Url, StoreError> {
    let abs: PathBuf = std::path::absolute(filename)
        .map_err(|e| StoreError::Database(format!("invalid SQLite database path: {e}")))?;
    if let Some(parent) = abs.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| StoreError::Database(format!("cannot create the SQLite database directory: {e}")))?;
    }
    let file_url = Url::from_file_path(&abs)
        .map_err(|()| StoreError::Database("invalid SQLite database path".into()))?;
    let rest = file_url
        .as_str()
        .strip_prefix("file://")
        .unwrap_or(file_url.as_str());
    let mut url = Url::parse(&format!("sqlite://{rest}"))
        .map_err(|_| StoreError::Database("invalid SQLite database path".into()))?;

    let mut pairs: Vec<(String, String)> = url::form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect();
    if !pairs.iter().any(|(k, _)| k == "mode") {
        pairs.push(("mode".into(), "rwc".into()));
    }
    url.query_pairs_mut().clear().extend_pairs(pairs);
    Ok(url)
}

/// Parse a PostgreSQL URL and add `password` (percent-encoded) unless the URL already has one.
fn postgres_url(url: &str, password: Option<&str>) -> Result<Url, StoreError> {
    let mut url = Url::parse(url).map_err(|_| StoreError::Database("invalid PostgreSQL URL".into()))?;
    if url.password().is_none()
        && let Some(password) = password
    {
        url.set_password(Some(password))
            .map_err(|()| StoreError::Database("cannot set a password on this PostgreSQL URL".into()))?;
    }
    Ok(url)
}

async fn connect_postgres(url: &str, opts: &StoreOptions) -> Result<AnyPool, StoreError> {
    let url = postgres_url(url, opts.password.as_deref())?;
    let any = any_options(&url)?;
    AnyPoolOptions::new()
        .max_connections(opts.max_connections.max(1))
        .acquire_timeout(acquire_timeout(opts))
        .connect_with(any)
        .await
        .map_err(db_err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_urls_are_absolute_and_created() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a b").join("c.db");
        let url = sqlite_file_url(&path, "").unwrap();
        assert!(dir.path().join("a b").is_dir());
        assert!(url.as_str().starts_with("sqlite:///"), "{url}");
        assert!(url.as_str().ends_with("?mode=rwc"), "{url}");
        let back = SqliteConnectOptions::from_url(&url).unwrap();
        assert_eq!(back.get_filename(), path);
    }

    #[test]
    fn postgres_password_is_injected_only_when_missing() {
        let url = postgres_url("postgres://app@db:5432/moltbot", Some("p@ss:w/rd")).unwrap();
        assert_eq!(url.username(), "app");
        let encoded = url.password().unwrap();
        assert_ne!(encoded, "p@ss:w/rd", "percent-encoded");
        assert_eq!(
            url::form_urlencoded::parse(format!("x={encoded}").as_bytes())
                .next()
                .unwrap()
                .1,
            "p@ss:w/rd"
        );

        let url = postgres_url("postgres://app:own@db/moltbot", Some("other")).unwrap();
        assert_eq!(url.password(), Some("own"));
        let url = postgres_url("postgresql://app@db/moltbot", None).unwrap();
        assert_eq!(url.password(), None);
    }

    #[tokio::test]
    async fn bad_urls_do_not_echo_secrets() {
        let opts = StoreOptions::default();
        for url in ["mysql://u:hunter2@h/db", "postgres://u:hunter2@[bad/db"] {
            let err = connect(url, &opts).await.unwrap_err().to_string();
            assert!(!err.contains("hunter2"), "{err}");
        }
    }
}
