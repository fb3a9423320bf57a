//! Backends for the conformance cases, and small helpers shared by them.

use std::future::Future;
use std::sync::Arc;

use moltbot_core::{Conversation, MessageStatus, NewMessage, Role, Store, StoredMessage};
use moltbot_store::{Backend, SqlStore, StoreOptions};
use serde_json::{Map, Value, json};
use sqlx::{Connection, Executor};

pub const POSTGRES_ENV: &str = "MOLTBOT_TEST_POSTGRES_URL";

/// One test database. Keeps the temporary directory alive for SQLite files.
pub struct TestDb {
    pub sql: SqlStore,
    pub store: Arc<dyn Store>,
    /// `sqlite::memory:` has one connection: a case must not read through the store while holding a
    /// transaction there.
    pub single_connection: bool,
    url: String,
    _dir: Option<tempfile::TempDir>,
}

impl TestDb {
    async fn open(url: &str, single_connection: bool, dir: Option<tempfile::TempDir>) -> TestDb {
        let sql = SqlStore::connect(url, &StoreOptions::default())
            .await
            .expect("open test store");
        TestDb {
            store: Arc::new(sql.clone()),
            sql,
            single_connection,
            url: url.to_owned(),
            _dir: dir,
        }
    }

    pub fn backend(&self) -> Backend {
        self.sql.backend()
    }

    /// A second store on the same database, as another replica would open it; `None` for
    /// `sqlite::memory:` (one connection, one store).
    pub async fn replica(&self) -> Option<Arc<dyn Store>> {
        if self.single_connection {
            return None;
        }
        let sql = SqlStore::connect(&self.url, &StoreOptions::default())
            .await
            .expect("open a second store");
        Some(Arc::new(sql))
    }

    /// Migrate, then hand out the store.
    pub async fn migrated(&self) -> Arc<dyn Store> {
        let status = self.store.migrate().await.expect("migrate");
        assert!(status.is_current(), "{status:?}");
        self.store.clone()
    }

    /// The single integer a `SELECT count(*) …` returns, read past the store (no flush).
    pub async fn count(&self, sql: &str) -> i64 {
        sqlx::query_scalar::<_, i64>(sql)
            .fetch_one(self.sql.pool())
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    /// Run raw SQL (to play a newer release).
    pub async fn exec(&self, sql: &str) {
        self.sql
            .pool()
            .execute(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
}

pub async fn sqlite_file<F, Fut>(case: F)
where
    F: FnOnce(TestDb) -> Fut,
    Fut: Future<Output = ()>,
{
    let dir = tempfile::tempdir().expect("tempdir");
    // A nested, not yet existing directory: `open` creates it.
    let url = format!("sqlite://{}/nested/dir/moltbot.db", dir.path().display());
    case(TestDb::open(&url, false, Some(dir)).await).await;
}

pub async fn sqlite_memory<F, Fut>(case: F)
where
    F: FnOnce(TestDb) -> Fut,
    Fut: Future<Output = ()>,
{
    case(TestDb::open("sqlite::memory:", true, None).await).await;
}

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true") || v == "1")
}

/// The PostgreSQL URL from the environment; `None` means skip (outside CI only).
pub fn postgres_url() -> Option<String> {
    match std::env::var(POSTGRES_ENV) {
        Ok(url) if !url.is_empty() => Some(url),
        _ if in_ci() => {
            panic!("CI=true but {POSTGRES_ENV} is not set: PostgreSQL conformance cannot be skipped in CI")
        }
        _ => {
            eprintln!(
                "skipping PostgreSQL case: set {POSTGRES_ENV} (e.g. postgres://postgres@127.0.0.1:5432/test)"
            );
            None
        }
    }
}

/// `url` with `search_path` set to `schema` for every connection.
pub fn with_search_path(url: &str, schema: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}options=-c%20search_path%3D{schema}")
}

pub async fn postgres<F, Fut>(case: F)
where
    F: FnOnce(TestDb) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let Some(base) = postgres_url() else { return };
    let schema = format!("mbtest_{}", uuid::Uuid::new_v4().simple());
    let mut admin = sqlx::PgConnection::connect(&base)
        .await
        .expect("connect to PostgreSQL");
    admin
        .execute(format!("CREATE SCHEMA {schema}").as_str())
        .await
        .expect("create schema");

    let db = TestDb::open(&with_search_path(&base, &schema), false, None).await;
    let sql = db.sql.clone();
    // Run the case in its own task so the schema is dropped even when it panics.
    let outcome = tokio::spawn(case(db)).await;
    sql.close().await;
    admin
        .execute(format!("DROP SCHEMA IF EXISTS {schema} CASCADE").as_str())
        .await
        .expect("drop schema");
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}

// ---- helpers for cases ----

pub fn meta(pairs: Value) -> Map<String, Value> {
    match pairs {
        Value::Object(map) => map,
        other => panic!("not an object: {other}"),
    }
}

pub fn msg(role: Role, content: &str, status: MessageStatus) -> NewMessage {
    NewMessage::new(role, content, status)
}

pub fn user(content: &str) -> NewMessage {
    msg(Role::User, content, MessageStatus::Completed)
}

pub async fn create_conversation(store: &Arc<dyn Store>, owner: &str) -> Conversation {
    let mut tx = store.begin().await.expect("begin");
    let conv = tx
        .create_conversation(owner, meta(json!({"k": "v"})), 1_700_000_000)
        .await
        .expect("create");
    tx.commit().await.expect("commit");
    conv
}

pub async fn append(
    store: &Arc<dyn Store>,
    conversation_id: &str,
    messages: &[NewMessage],
) -> Vec<StoredMessage> {
    let mut tx = store.begin().await.expect("begin");
    let stored = tx
        .append_messages(conversation_id, messages, 1_700_000_100)
        .await
        .expect("append");
    tx.commit().await.expect("commit");
    stored
}

pub fn seqs(messages: &[StoredMessage]) -> Vec<i64> {
    messages.iter().map(|m| m.seq).collect()
}
