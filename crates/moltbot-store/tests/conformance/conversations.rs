//! Conversations: owner scoping, tips, transactions, cascading deletes.

use moltbot_core::{ItemQuery, StoreError, UsageRecord, ids};
use serde_json::json;

use crate::harness::{TestDb, append, create_conversation, meta, user};

pub async fn conversations_are_owner_scoped(db: TestDb) {
    let store = db.migrated().await;
    let mut tx = store.begin().await.expect("begin");
    let conv = tx
        .create_conversation("alice", meta(json!({"topic": "x", "n": 1})), 42)
        .await
        .expect("create");
    let anon = tx
        .create_conversation("", meta(json!({})), 43)
        .await
        .expect("create anonymous");
    tx.commit().await.expect("commit");
    assert!(conv.id.starts_with("conv_"));
    assert_eq!(conv.owner, "alice");
    assert_eq!(conv.created_at, 42);

    assert_eq!(
        store.get_conversation("alice", &conv.id).await.unwrap(),
        Some(conv.clone())
    );
    assert_eq!(store.get_conversation("bob", &conv.id).await.unwrap(), None);
    assert_eq!(store.get_conversation("", &conv.id).await.unwrap(), None);
    assert_eq!(
        store.get_conversation("", &anon.id).await.unwrap(),
        Some(anon.clone())
    );
    assert_eq!(
        store.get_conversation("alice", "conv_missing").await.unwrap(),
        None
    );

    let new_meta = meta(json!({"topic": "y", "nested": {"a": [1, 2]}}));
    assert_eq!(
        store
            .update_conversation_metadata("bob", &conv.id, new_meta.clone())
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        store
            .get_conversation("alice", &conv.id)
            .await
            .unwrap()
            .unwrap()
            .metadata,
        conv.metadata
    );
    let updated = store
        .update_conversation_metadata("alice", &conv.id, new_meta.clone())
        .await
        .unwrap();
    let updated = updated.expect("updated");
    assert_eq!(updated.metadata, new_meta);
    assert_eq!((updated.id.as_str(), updated.created_at), (conv.id.as_str(), 42));
    assert_eq!(
        store.get_conversation("alice", &conv.id).await.unwrap(),
        Some(updated)
    );
    assert_eq!(
        store
            .update_conversation_metadata("alice", "conv_missing", new_meta)
            .await
            .unwrap(),
        None
    );

    assert!(!store.delete_conversation("bob", &conv.id).await.unwrap());
    assert!(store.get_conversation("alice", &conv.id).await.unwrap().is_some());
    assert!(store.delete_conversation("alice", &conv.id).await.unwrap());
    assert_eq!(store.get_conversation("alice", &conv.id).await.unwrap(), None);
    assert!(!store.delete_conversation("alice", &conv.id).await.unwrap());
    assert!(store.get_conversation("", &anon.id).await.unwrap().is_some());
}

pub async fn tip_hash_finds_conversation(db: TestDb) {
    let store = db.migrated().await;
    let a = create_conversation(&store, "alice").await;
    let b = create_conversation(&store, "alice").await;
    let mut tx = store.begin().await.unwrap();
    tx.set_conversation_tip(&a.id, "h1").await.unwrap();
    tx.set_conversation_tip(&b.id, "h2").await.unwrap();
    tx.commit().await.unwrap();

    assert_eq!(
        store.find_conversation_by_tip("alice", "h1").await.unwrap(),
        Some(a.clone())
    );
    assert_eq!(
        store.find_conversation_by_tip("alice", "h2").await.unwrap(),
        Some(b.clone())
    );
    assert_eq!(store.find_conversation_by_tip("bob", "h1").await.unwrap(), None);
    assert_eq!(
        store.find_conversation_by_tip("alice", "nope").await.unwrap(),
        None
    );

    // Moving the tip forward forgets the old one.
    let mut tx = store.begin().await.unwrap();
    tx.set_conversation_tip(&a.id, "h3").await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(store.find_conversation_by_tip("alice", "h1").await.unwrap(), None);
    assert_eq!(
        store.find_conversation_by_tip("alice", "h3").await.unwrap(),
        Some(a)
    );

    let mut tx = store.begin().await.unwrap();
    let err = tx.set_conversation_tip("conv_missing", "h4").await.unwrap_err();
    assert!(matches!(err, StoreError::NotFound), "{err:?}");
}

fn usage(owner: &str, conversation_id: Option<&str>, created_at: i64) -> UsageRecord {
    UsageRecord {
        id: ids::usage_id(),
        owner: owner.into(),
        conversation_id: conversation_id.map(Into::into),
        request_id: Some("req-1".into()),
        model: "m".into(),
        backend: Some("b".into()),
        prompt_tokens: 10,
        completion_tokens: 5,
        latency_ms: 120,
        outcome: "ok".into(),
        created_at,
    }
}

pub async fn rollback_on_drop(db: TestDb) {
    let store = db.migrated().await;
    let kept = create_conversation(&store, "alice").await;
    let conv_id;
    {
        let mut tx = store.begin().await.unwrap();
        let conv = tx.create_conversation("alice", meta(json!({})), 1).await.unwrap();
        tx.append_messages(&conv.id, &[user("lost")], 1).await.unwrap();
        tx.append_messages(&kept.id, &[user("lost too")], 1)
            .await
            .unwrap();
        tx.set_conversation_tip(&kept.id, "lost-tip").await.unwrap();
        tx.insert_usage(&usage("alice", Some(&conv.id), 1)).await.unwrap();
        conv_id = conv.id;
        // dropped without commit
    }
    assert_eq!(store.get_conversation("alice", &conv_id).await.unwrap(), None);
    assert!(store.list_usage("alice", 10).await.unwrap().is_empty());
    assert_eq!(
        store.find_conversation_by_tip("alice", "lost-tip").await.unwrap(),
        None
    );
    let all = ItemQuery {
        after: None,
        limit: 10,
        ascending: true,
    };
    assert!(store.list_messages(&kept.id, &all).await.unwrap().0.is_empty());
    // The rolled-back reservation is not burnt: the next append starts at 1.
    let stored = append(&store, &kept.id, &[user("kept")]).await;
    assert_eq!(stored[0].seq, 1);
}

pub async fn commit_makes_writes_visible(db: TestDb) {
    let store = db.migrated().await;
    let mut tx = store.begin().await.unwrap();
    let conv = tx
        .create_conversation("alice", meta(json!({"a": true})), 7)
        .await
        .unwrap();
    let stored = tx
        .append_messages(&conv.id, &[user("hi"), user("there")], 8)
        .await
        .unwrap();
    tx.insert_usage(&usage("alice", Some(&conv.id), 9)).await.unwrap();
    if !db.single_connection {
        // Other connections do not see uncommitted writes.
        assert_eq!(store.get_conversation("alice", &conv.id).await.unwrap(), None);
        assert!(store.list_usage("alice", 10).await.unwrap().is_empty());
    }
    tx.commit().await.unwrap();

    assert_eq!(
        store.get_conversation("alice", &conv.id).await.unwrap(),
        Some(conv.clone())
    );
    let all = ItemQuery {
        after: None,
        limit: 10,
        ascending: true,
    };
    assert_eq!(
        store.list_messages(&conv.id, &all).await.unwrap(),
        (stored, false)
    );
    assert_eq!(store.list_usage("alice", 10).await.unwrap().len(), 1);
}

pub async fn delete_cascades_messages_keeps_usage(db: TestDb) {
    let store = db.migrated().await;
    let conv = create_conversation(&store, "alice").await;
    let other = create_conversation(&store, "alice").await;
    let stored = append(&store, &conv.id, &[user("a"), user("b")]).await;
    let others = append(&store, &other.id, &[user("c")]).await;
    let record = usage("alice", Some(&conv.id), 5);
    let mut tx = store.begin().await.unwrap();
    tx.insert_usage(&record).await.unwrap();
    tx.commit().await.unwrap();

    assert!(store.delete_conversation("alice", &conv.id).await.unwrap());
    for m in &stored {
        assert_eq!(store.get_message(&conv.id, &m.id).await.unwrap(), None);
    }
    let all = ItemQuery {
        after: None,
        limit: 10,
        ascending: true,
    };
    assert!(store.list_messages(&conv.id, &all).await.unwrap().0.is_empty());
    assert!(store.context_messages(&conv.id, 10).await.unwrap().is_empty());
    assert_eq!(store.list_messages(&other.id, &all).await.unwrap().0, others);
    assert_eq!(store.list_usage("alice", 10).await.unwrap(), vec![record]);
}
