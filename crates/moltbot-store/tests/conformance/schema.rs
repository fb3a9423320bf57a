//! Migrations: idempotence and blue-green tolerance of a newer schema.

use moltbot_core::{ItemQuery, MessageStatus, Role};
use moltbot_store::Backend;

use crate::harness::{TestDb, append, create_conversation, msg, seqs, user};

pub async fn migrate_is_idempotent(db: TestDb) {
    let store = db.store.clone();
    assert_eq!(store.kind(), db.backend().as_str());
    store.ping().await.expect("ping");

    let before = store.schema_status().await.expect("status before");
    assert_eq!(before.applied, 0, "{before:?}");
    assert!(before.known >= 1, "{before:?}");
    assert_eq!(before.pending.first(), Some(&1), "{before:?}");
    assert_eq!(before.pending.last(), Some(&before.known), "{before:?}");
    assert!(!before.is_current());

    let first = store.migrate().await.expect("first migrate");
    assert!(first.is_current(), "{first:?}");
    assert_eq!(first.applied, first.known);
    assert_eq!(first.known, before.known);

    let second = store.migrate().await.expect("second migrate");
    assert_eq!(second, first);
    assert_eq!(store.schema_status().await.expect("status after"), first);
}

/// A newer release has migrated (a version this binary does not know, an extra column with a default,
/// an extra table). This binary must keep migrating cleanly and serving.
pub async fn tolerates_newer_schema(db: TestDb) {
    let store = db.migrated().await;
    let conv = create_conversation(&store, "alice").await;
    append(&store, &conv.id, &[user("before the upgrade")]).await;

    let known = store.schema_status().await.expect("status").known;
    let future = known + 1000;
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES ($1, 'from a newer release', TRUE, $2, 0)",
    )
    .bind(future)
    .bind(vec![0u8; 48])
    .execute(db.sql.pool())
    .await
    .expect("insert future migration row");
    db.exec("ALTER TABLE messages ADD COLUMN future_note TEXT NULL")
        .await;
    db.exec("ALTER TABLE conversations ADD COLUMN future_flag BIGINT NOT NULL DEFAULT 7")
        .await;
    db.exec("CREATE TABLE future_things (id TEXT PRIMARY KEY)").await;
    if db.backend() == Backend::Postgres {
        db.exec("ALTER TABLE usage_records ADD COLUMN future_cost NUMERIC NULL")
            .await;
    }

    let status = store.migrate().await.expect("migrate against a newer schema");
    assert!(status.pending.is_empty(), "{status:?}");
    assert_eq!(status.applied, future);
    assert_eq!(status.known, known);
    assert_eq!(store.schema_status().await.expect("status"), status);

    // Still serves: reads and writes on the widened tables.
    let again = store
        .get_conversation("alice", &conv.id)
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(again, conv);
    let stored = append(
        &store,
        &conv.id,
        &[msg(Role::Assistant, "after", MessageStatus::Completed)],
    )
    .await;
    assert_eq!(seqs(&stored), vec![2]);
    let query = ItemQuery {
        after: None,
        limit: 10,
        ascending: true,
    };
    let (items, more) = store.list_messages(&conv.id, &query).await.expect("list");
    assert_eq!(seqs(&items), vec![1, 2]);
    assert!(!more);
    let fresh = create_conversation(&store, "alice").await;
    assert!(
        store
            .get_conversation("alice", &fresh.id)
            .await
            .expect("get")
            .is_some()
    );
}
