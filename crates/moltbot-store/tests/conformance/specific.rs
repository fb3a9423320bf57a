//! Backend-specific checks: connection settings, URL handling, error hygiene.

use std::time::Duration;

use moltbot_store::{SqlStore, StoreOptions, open};

use crate::harness::{postgres_url, with_search_path};

#[tokio::test]
async fn sqlite_file_settings() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a").join("b").join("x.db");
    let opts = StoreOptions {
        busy_timeout: Duration::from_millis(1234),
        ..StoreOptions::default()
    };
    let store = SqlStore::connect(&format!("sqlite://{}", path.display()), &opts)
        .await
        .unwrap();
    assert!(path.is_file(), "database file is created with its directories");
    let pool = store.pool();
    let (mode,): (String,) = sqlx::query_as("PRAGMA journal_mode")
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(mode.to_lowercase(), "wal");
    let (fk,): (i64,) = sqlx::query_as("PRAGMA foreign_keys")
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(fk, 1);
    let (sync,): (i64,) = sqlx::query_as("PRAGMA synchronous")
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(sync, 1, "NORMAL");
    let (busy,): (i64,) = sqlx::query_as("PRAGMA busy_timeout")
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(busy, 1234);
    store.close().await;

    // `sqlite:` without slashes, reopening an existing file.
    let again = open(&format!("sqlite:{}", path.display()), &opts).await.unwrap();
    assert_eq!(again.kind(), "sqlite");
    again.migrate().await.unwrap();
}

/// `sqlite://./relative/path.db` is relative to the working directory (the crate root under cargo).
#[tokio::test]
async fn sqlite_relative_path() {
    struct RemoveOnDrop(std::path::PathBuf);
    impl Drop for RemoveOnDrop {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    let top = format!("rel-test-{}", uuid::Uuid::new_v4().simple());
    let _cleanup = RemoveOnDrop(std::env::current_dir().unwrap().join(&top));
    let store = open(
        &format!("sqlite://./{top}/data/moltbot.db"),
        &StoreOptions::default(),
    )
    .await
    .unwrap();
    store.migrate().await.unwrap();
    assert!(
        std::path::Path::new(&top)
            .join("data")
            .join("moltbot.db")
            .is_file()
    );
}

#[tokio::test]
async fn errors_never_echo_urls_or_passwords() {
    let quick = StoreOptions {
        busy_timeout: Duration::from_secs(1),
        ..StoreOptions::default()
    };
    let with_password = StoreOptions {
        password: Some("injected-s3cret".into()),
        ..quick.clone()
    };
    let cases = [
        ("mysql://root:url-s3cret@localhost/db", quick.clone()),
        ("postgres://u:url-s3cret@[::1/db", quick.clone()),
        // Nothing listens on port 1: a connection error.
        ("postgres://u:url-s3cret@127.0.0.1:1/db", quick.clone()),
        ("postgresql://u@127.0.0.1:1/db", with_password),
    ];
    for (url, opts) in cases {
        let err = match open(url, &opts).await {
            Ok(_) => panic!("opening {url} should fail"),
            Err(e) => e.to_string(),
        };
        assert!(
            !err.contains("s3cret") && !err.contains("127.0.0.1:1/db"),
            "{err}"
        );
    }
}

/// Two instances (old and new release) starting together: the advisory lock serialises migrations.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_concurrent_migrations() {
    use sqlx::{Connection, Executor};
    let Some(base) = postgres_url() else { return };
    let schema = format!("mbtest_{}", uuid::Uuid::new_v4().simple());
    let mut admin = sqlx::PgConnection::connect(&base).await.unwrap();
    admin
        .execute(format!("CREATE SCHEMA {schema}").as_str())
        .await
        .unwrap();
    let url = with_search_path(&base, &schema);
    let a = open(&url, &StoreOptions::default()).await.unwrap();
    let b = open(&url, &StoreOptions::default()).await.unwrap();
    let (ra, rb) = tokio::join!(a.migrate(), b.migrate());
    let outcome = (ra, rb);
    admin
        .execute(format!("DROP SCHEMA IF EXISTS {schema} CASCADE").as_str())
        .await
        .unwrap();
    let (ra, rb) = outcome;
    assert_eq!(ra.unwrap(), rb.unwrap());
}
