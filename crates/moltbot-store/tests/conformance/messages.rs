//! Messages: sequencing, pagination, context selection, status, deletion, concurrency.

use moltbot_api::Usage;
use moltbot_core::{ItemQuery, MessageStatus, NewMessage, Role, StoreError, TurnMeta};
use serde_json::json;

use crate::harness::{TestDb, append, create_conversation, msg, seqs, user};

fn page(after: Option<&str>, limit: u32, ascending: bool) -> ItemQuery {
    ItemQuery {
        after: after.map(Into::into),
        limit,
        ascending,
    }
}

pub async fn appends_and_paginates(db: TestDb) {
    let store = db.migrated().await;
    let conv = create_conversation(&store, "alice").await;
    let mut rich = msg(Role::Assistant, "hello ✓", MessageStatus::Truncated);
    rich.raw = Some(json!({"tool_calls": [{"id": "c1", "type": "function"}], "name": null}));
    rich.meta = TurnMeta {
        model: Some("gpt-x".into()),
        backend: Some("local".into()),
        finish_reason: Some("length".into()),
        usage: Some(Usage::new(12, 34)),
        latency_ms: Some(987),
        request_id: Some("req-9".into()),
    };
    let first = append(
        &store,
        &conv.id,
        &[user("1"), rich.clone(), user("3"), user("4"), user("5")],
    )
    .await;
    let second = append(&store, &conv.id, &[user("6"), user("7")]).await;
    assert_eq!(seqs(&first), vec![1, 2, 3, 4, 5]);
    assert_eq!(seqs(&second), vec![6, 7]);
    assert_eq!(first[1].meta, rich.meta);
    assert_eq!(first[1].raw, rich.raw);
    assert_eq!(first[1].id, rich.id);
    assert_eq!(first[1].conversation_id, conv.id);
    assert_eq!(first[1].created_at, 1_700_000_100);
    assert_eq!(
        store.get_message(&conv.id, &rich.id).await.unwrap(),
        Some(first[1].clone())
    );
    let all: Vec<_> = first.iter().chain(&second).cloned().collect();

    let list = |q: ItemQuery| {
        let store = store.clone();
        let id = conv.id.clone();
        async move { store.list_messages(&id, &q).await }
    };
    // Ascending.
    let (p, more) = list(page(None, 3, true)).await.unwrap();
    assert_eq!((seqs(&p), more), (vec![1, 2, 3], true));
    assert_eq!(p, all[..3].to_vec());
    let (p, more) = list(page(Some(&all[2].id), 3, true)).await.unwrap();
    assert_eq!((seqs(&p), more), (vec![4, 5, 6], true));
    let (p, more) = list(page(Some(&all[5].id), 3, true)).await.unwrap();
    assert_eq!((seqs(&p), more), (vec![7], false));
    let (p, more) = list(page(Some(&all[6].id), 3, true)).await.unwrap();
    assert_eq!((seqs(&p), more), (vec![], false));
    // Descending.
    let (p, more) = list(page(None, 3, false)).await.unwrap();
    assert_eq!((seqs(&p), more), (vec![7, 6, 5], true));
    let (p, more) = list(page(Some(&all[4].id), 3, false)).await.unwrap();
    assert_eq!((seqs(&p), more), (vec![4, 3, 2], true));
    let (p, more) = list(page(Some(&all[1].id), 3, false)).await.unwrap();
    assert_eq!((seqs(&p), more), (vec![1], false));
    // Exact fit and oversize pages.
    let (p, more) = list(page(None, 7, true)).await.unwrap();
    assert_eq!((p, more), (all.clone(), false));
    let (p, more) = list(page(None, 100, false)).await.unwrap();
    assert_eq!((seqs(&p), more), (vec![7, 6, 5, 4, 3, 2, 1], false));

    // Unknown cursor, and a cursor from another conversation.
    let err = list(page(Some("msg_missing"), 3, true)).await.unwrap_err();
    assert!(matches!(err, StoreError::NotFound), "{err:?}");
    let other = create_conversation(&store, "alice").await;
    let foreign = append(&store, &other.id, &[user("x")]).await;
    let err = list(page(Some(&foreign[0].id), 3, true)).await.unwrap_err();
    assert!(matches!(err, StoreError::NotFound), "{err:?}");
    // Each conversation has its own sequence.
    assert_eq!(foreign[0].seq, 1);
}

pub async fn append_errors(db: TestDb) {
    let store = db.migrated().await;
    let mut tx = store.begin().await.unwrap();
    let err = tx
        .append_messages("conv_missing", &[user("x")], 1)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound), "{err:?}");
    drop(tx);

    let conv = create_conversation(&store, "alice").await;
    let stored = append(&store, &conv.id, &[user("x")]).await;
    // Reusing a message id is a conflict, not a crash.
    let mut dup = user("again");
    dup.id = stored[0].id.clone();
    let mut tx = store.begin().await.unwrap();
    let err = tx.append_messages(&conv.id, &[dup], 2).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
    drop(tx);

    // Nothing appended is fine and changes nothing.
    let mut tx = store.begin().await.unwrap();
    assert!(tx.append_messages(&conv.id, &[], 3).await.unwrap().is_empty());
    tx.commit().await.unwrap();
    assert_eq!(seqs(&append(&store, &conv.id, &[user("y")]).await), vec![2]);
}

pub async fn context_messages_filter(db: TestDb) {
    use MessageStatus::*;
    use Role::*;
    let store = db.migrated().await;
    let conv = create_conversation(&store, "alice").await;
    let spec: [(Role, MessageStatus); 10] = [
        (System, Completed),    // 1
        (User, Completed),      // 2
        (Assistant, Completed), // 3
        (User, Completed),      // 4
        (Assistant, Failed),    // 5
        (Developer, Completed), // 6
        (User, Completed),      // 7
        (Assistant, Truncated), // 8
        (System, Failed),       // 9
        (User, InProgress),     // 10
    ];
    let messages: Vec<NewMessage> = spec
        .iter()
        .enumerate()
        .map(|(i, (r, s))| msg(*r, &format!("m{}", i + 1), *s))
        .collect();
    let stored = append(&store, &conv.id, &messages).await;

    let ctx = |limit| {
        let store = store.clone();
        let id = conv.id.clone();
        async move { seqs(&store.context_messages(&id, limit).await.unwrap()) }
    };
    assert_eq!(ctx(100).await, vec![1, 2, 3, 4, 6, 7, 8]);
    assert_eq!(ctx(2).await, vec![1, 6, 7, 8]);
    assert_eq!(ctx(3).await, vec![1, 6, 7, 8]); // 6 is both recent and an instruction: once
    assert_eq!(ctx(4).await, vec![1, 4, 6, 7, 8]);
    assert_eq!(ctx(0).await, vec![1, 6]);
    let full = store.context_messages(&conv.id, 100).await.unwrap();
    assert_eq!(full[6], stored[7]);
    assert!(
        store
            .context_messages("conv_missing", 10)
            .await
            .unwrap()
            .is_empty()
    );
}

pub async fn set_message_status_updates(db: TestDb) {
    let store = db.migrated().await;
    let conv = create_conversation(&store, "alice").await;
    let stored = append(
        &store,
        &conv.id,
        &[
            user("q"),
            msg(Role::Assistant, "partial", MessageStatus::InProgress),
        ],
    )
    .await;
    assert_eq!(
        seqs(&store.context_messages(&conv.id, 10).await.unwrap()),
        vec![1]
    );

    let mut tx = store.begin().await.unwrap();
    tx.set_message_status(&stored[1].id, MessageStatus::Truncated)
        .await
        .unwrap();
    tx.set_message_status(&stored[0].id, MessageStatus::Failed)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let got = store.get_message(&conv.id, &stored[1].id).await.unwrap().unwrap();
    assert_eq!(got.status, MessageStatus::Truncated);
    assert_eq!(got.content, "partial");
    assert_eq!(
        seqs(&store.context_messages(&conv.id, 10).await.unwrap()),
        vec![2]
    );

    let mut tx = store.begin().await.unwrap();
    let err = tx
        .set_message_status("msg_missing", MessageStatus::Completed)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound), "{err:?}");
}

/// The crash sweep: only `in_progress` messages older than the cut-off become `failed`; newer ones (a
/// turn another replica may still be generating) and settled ones are left alone.
pub async fn fail_stale_messages_settles_only_old_in_progress(db: TestDb) {
    let store = db.migrated().await;
    let conv = create_conversation(&store, "alice").await;
    let append_at = |at: i64, messages: Vec<NewMessage>| {
        let store = store.clone();
        let id = conv.id.clone();
        async move {
            let mut tx = store.begin().await.unwrap();
            let stored = tx.append_messages(&id, &messages, at).await.unwrap();
            tx.commit().await.unwrap();
            stored
        }
    };
    let old = append_at(
        1_000,
        vec![
            user("answered"),
            msg(Role::User, "crashed mid-turn", MessageStatus::InProgress),
            msg(Role::Assistant, "cut", MessageStatus::Truncated),
        ],
    )
    .await;
    let recent = append_at(
        5_000,
        vec![msg(Role::User, "still generating", MessageStatus::InProgress)],
    )
    .await;

    assert_eq!(store.fail_stale_messages(4_000).await.unwrap(), 1);
    let status = |id: String| {
        let store = store.clone();
        let conv = conv.id.clone();
        async move { store.get_message(&conv, &id).await.unwrap().unwrap().status }
    };
    assert_eq!(status(old[0].id.clone()).await, MessageStatus::Completed);
    assert_eq!(status(old[1].id.clone()).await, MessageStatus::Failed);
    assert_eq!(status(old[2].id.clone()).await, MessageStatus::Truncated);
    assert_eq!(status(recent[0].id.clone()).await, MessageStatus::InProgress);
    // Idempotent; a later cut-off takes the rest.
    assert_eq!(store.fail_stale_messages(4_000).await.unwrap(), 0);
    assert_eq!(store.fail_stale_messages(5_001).await.unwrap(), 1);
    assert_eq!(status(recent[0].id.clone()).await, MessageStatus::Failed);
}

pub async fn get_and_delete_message(db: TestDb) {
    let store = db.migrated().await;
    let conv = create_conversation(&store, "alice").await;
    let other = create_conversation(&store, "alice").await;
    let stored = append(&store, &conv.id, &[user("a"), user("b"), user("c")]).await;

    assert_eq!(
        store.get_message(&conv.id, &stored[1].id).await.unwrap(),
        Some(stored[1].clone())
    );
    assert_eq!(store.get_message(&other.id, &stored[1].id).await.unwrap(), None);
    assert_eq!(store.get_message(&conv.id, "msg_missing").await.unwrap(), None);

    assert!(!store.delete_message(&other.id, &stored[1].id).await.unwrap());
    assert!(store.delete_message(&conv.id, &stored[1].id).await.unwrap());
    assert!(!store.delete_message(&conv.id, &stored[1].id).await.unwrap());
    assert_eq!(store.get_message(&conv.id, &stored[1].id).await.unwrap(), None);
    let (items, _) = store
        .list_messages(&conv.id, &page(None, 10, true))
        .await
        .unwrap();
    assert_eq!(seqs(&items), vec![1, 3]);
    // Sequence numbers are never reused.
    assert_eq!(seqs(&append(&store, &conv.id, &[user("d")]).await), vec![4]);
}

pub async fn appends_are_sequenced(db: TestDb) {
    let store = db.migrated().await;
    let conv = create_conversation(&store, "alice").await;
    let tasks: Vec<_> = (0..2)
        .map(|t| {
            let store = store.clone();
            let id = conv.id.clone();
            tokio::spawn(async move {
                for i in 0..20 {
                    let mut tx = store.begin().await.expect("begin");
                    tx.append_messages(&id, &[user(&format!("t{t}-{i}"))], i)
                        .await
                        .expect("append");
                    tx.commit().await.expect("commit");
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("appender");
    }
    let (items, more) = store
        .list_messages(&conv.id, &page(None, 100, true))
        .await
        .unwrap();
    assert!(!more);
    assert_eq!(seqs(&items), (1..=40).collect::<Vec<_>>());
    for t in 0..2 {
        let mine: Vec<_> = items
            .iter()
            .filter(|m| m.content.starts_with(&format!("t{t}-")))
            .collect();
        let order: Vec<_> = mine.iter().map(|m| m.content.clone()).collect();
        let expected: Vec<_> = (0..20).map(|i| format!("t{t}-{i}")).collect();
        assert_eq!(order, expected, "each writer's messages stay in its order");
    }
}
