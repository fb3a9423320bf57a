//! Finished turns: `commit_turn` (grouped when turns finish together) stores exactly what the
//! statement-by-statement path stores, sequences replies per conversation, and fails a turn alone.

use std::sync::Arc;

use moltbot_api::Usage;
use moltbot_core::webhooks::{
    CONVERSATION_CREATED, KEY_REVOKED, MESSAGE_CREATED, OutboxEvent, WebhookSubscription,
};
use moltbot_core::{
    ItemQuery, MessageStatus, Role, Store, StoreError, StoredMessage, TurnCommit, TurnMeta, TurnOpen,
    UsageRecord, ids,
};
use serde_json::json;

use moltbot_store::TurnWrite;

use crate::harness::{TestDb, append, create_conversation, msg, user};

const NOW: i64 = 1_700_000_200;

/// A pending user message in `conv`; returns its id.
async fn pending(store: &Arc<dyn Store>, conv: &str, text: &str) -> String {
    append(store, conv, &[msg(Role::User, text, MessageStatus::InProgress)])
        .await
        .remove(0)
        .id
}

fn turn(conv: &str, completed: Vec<String>, text: &str, tip: Option<&str>) -> TurnCommit {
    let mut reply = msg(Role::Assistant, text, MessageStatus::Completed);
    reply.meta = TurnMeta {
        model: Some("model-a".into()),
        backend: Some("remote".into()),
        finish_reason: Some("stop".into()),
        usage: Some(Usage::new(7, 3)),
        latency_ms: Some(12),
        request_id: Some(format!("req-{text}")),
    };
    TurnCommit {
        conversation_id: conv.into(),
        event: Some(OutboxEvent::new(
            MESSAGE_CREATED,
            json!({"id": reply.id, "text": text}),
            NOW * 1000,
        )),
        reply,
        completed,
        tip: tip.map(str::to_owned),
        usage: UsageRecord {
            id: ids::usage_id(),
            owner: "alice".into(),
            conversation_id: Some(conv.into()),
            request_id: Some(format!("req-{text}")),
            model: "model-a".into(),
            backend: Some("remote".into()),
            prompt_tokens: 7,
            completion_tokens: 3,
            latency_ms: 12,
            outcome: "ok".into(),
            created_at: NOW,
        },
    }
}

async fn messages(store: &Arc<dyn Store>, conv: &str) -> Vec<StoredMessage> {
    let query = ItemQuery {
        after: None,
        limit: 100,
        ascending: true,
    };
    store.list_messages(conv, &query).await.unwrap().0
}

async fn count(db: &TestDb, table: &str) -> i64 {
    db.count(&format!("SELECT COUNT(*) FROM {table}")).await
}

/// One group: replies land with every field, sequenced per conversation (two turns of one
/// conversation in the same group included), user messages completed, events and usage written,
/// the tip moved; a turn whose conversation is missing fails alone.
pub async fn grouped_turns_commit_together(db: TestDb) {
    let store = db.migrated().await;
    let a = create_conversation(&store, "alice").await;
    let b = create_conversation(&store, "alice").await;
    let (events0, usage0) = (
        count(&db, "event_outbox").await,
        count(&db, "usage_records").await,
    );
    let pa1 = pending(&store, &a.id, "a1").await;
    let pa2 = pending(&store, &a.id, "a2").await;
    let pb = pending(&store, &b.id, "b").await;

    let turns = [
        turn(&a.id, vec![pa1.clone()], "reply a1", None),
        turn("conv_missing", vec![], "lost", Some("tip-lost")),
        turn(&b.id, vec![pb.clone()], "reply b", Some("tip-b")),
        turn(&a.id, vec![pa2.clone()], "reply a2", Some("tip-a")),
    ];
    // Two opens in the same group: a new conversation, and more messages for `b`.
    let fresh = TurnOpen {
        owner: "alice".into(),
        conversation_id: None,
        messages: vec![
            msg(Role::User, "new 1", MessageStatus::InProgress),
            msg(Role::User, "new 2", MessageStatus::InProgress),
        ],
        now: NOW,
    };
    let more_b = TurnOpen {
        owner: "alice".into(),
        conversation_id: Some(b.id.clone()),
        messages: vec![msg(Role::User, "b again", MessageStatus::InProgress)],
        now: NOW,
    };
    let missing = TurnOpen {
        conversation_id: Some("conv_missing".into()),
        ..more_b.clone()
    };
    let mut writes: Vec<TurnWrite> = turns
        .iter()
        .cloned()
        .map(|t| TurnWrite::Commit(Box::new(t)))
        .collect();
    writes.push(TurnWrite::Open(fresh.clone()));
    writes.push(TurnWrite::Open(more_b.clone()));
    writes.push(TurnWrite::Open(missing));
    // One transaction: the group itself succeeds (no fallback to one write at a time).
    let results = db.sql.write_turn_group(&writes).await.unwrap();
    assert!(
        matches!(results[0], Ok(None)) && matches!(results[2], Ok(None)) && matches!(results[3], Ok(None)),
        "{results:?}"
    );
    assert!(matches!(results[1], Err(StoreError::NotFound)), "{results:?}");
    assert!(matches!(results[6], Err(StoreError::NotFound)), "{results:?}");
    assert_eq!(results[5].as_ref().unwrap().as_deref(), Some(b.id.as_str()));
    let fresh_id = results[4].as_ref().unwrap().clone().unwrap();
    let conv = store.get_conversation("alice", &fresh_id).await.unwrap().unwrap();
    assert_eq!((conv.created_at, conv.metadata.len()), (NOW, 0));
    let got = messages(&store, &fresh_id).await;
    let shape: Vec<(i64, &str, MessageStatus)> = got
        .iter()
        .map(|m| (m.seq, m.content.as_str(), m.status))
        .collect();
    assert_eq!(
        shape,
        [
            (1, "new 1", MessageStatus::InProgress),
            (2, "new 2", MessageStatus::InProgress)
        ]
    );
    assert_eq!(got[0].id, fresh.messages[0].id);
    // The new conversation continues where the group left it.
    append(
        &store,
        &fresh_id,
        &[msg(Role::User, "new 3", MessageStatus::Completed)],
    )
    .await;
    assert_eq!(messages(&store, &fresh_id).await[2].seq, 3);

    let got = messages(&store, &a.id).await;
    let shape: Vec<(i64, Role, &str, MessageStatus)> = got
        .iter()
        .map(|m| (m.seq, m.role, m.content.as_str(), m.status))
        .collect();
    assert_eq!(
        shape,
        [
            (1, Role::User, "a1", MessageStatus::Completed),
            (2, Role::User, "a2", MessageStatus::Completed),
            (3, Role::Assistant, "reply a1", MessageStatus::Completed),
            (4, Role::Assistant, "reply a2", MessageStatus::Completed),
        ]
    );
    assert_eq!(got[2].id, turns[0].reply.id);
    assert_eq!(got[2].meta, turns[0].reply.meta);
    assert_eq!(got[2].created_at, NOW);
    let got = messages(&store, &b.id).await;
    assert_eq!(got.len(), 3);
    assert!(got.iter().any(|m| m.id == turns[2].reply.id));
    assert!(
        got.iter()
            .any(|m| m.id == more_b.messages[0].id && m.status == MessageStatus::InProgress)
    );
    assert_eq!(got[0].status, MessageStatus::Completed);
    assert_eq!(got.iter().map(|m| m.seq).collect::<Vec<_>>(), [1, 2, 3]);

    // Three `message.created` events and the new conversation's `conversation.created`.
    assert_eq!(count(&db, "event_outbox").await, events0 + 4);
    assert_eq!(count(&db, "usage_records").await, usage0 + 3);
    let found = store.find_conversation_by_tip("alice", "tip-a").await.unwrap();
    assert_eq!(found.map(|c| c.id), Some(a.id.clone()));
    assert!(
        store
            .find_conversation_by_tip("alice", "tip-lost")
            .await
            .unwrap()
            .is_none()
    );

    // A group where one turn's user message is gone: the group is retried turn by turn, and only
    // that turn fails (its reply is not stored).
    let pa3 = pending(&store, &a.id, "a3").await;
    let turns = vec![
        turn(&a.id, vec![pa3.clone()], "reply a3", None),
        turn(&b.id, vec!["msg_missing".into()], "orphan", None),
    ];
    let writes: Vec<TurnWrite> = turns
        .into_iter()
        .map(|t| TurnWrite::Commit(Box::new(t)))
        .collect();
    let results = db.sql.write_turns(&writes).await;
    assert!(results[0].is_ok(), "{results:?}");
    assert!(matches!(results[1], Err(StoreError::NotFound)), "{results:?}");
    assert_eq!(messages(&store, &a.id).await.len(), 6);
    assert_eq!(
        messages(&store, &b.id).await.len(),
        3,
        "the orphan reply rolled back"
    );
    assert_eq!(count(&db, "usage_records").await, usage0 + 4);
}

/// Many turns finishing at once through `commit_turn`: every one acknowledged is stored once, with
/// distinct sequence numbers per conversation.
pub async fn concurrent_turns_are_all_stored(db: TestDb) {
    let store = db.migrated().await;
    let mut convs = Vec::new();
    for _ in 0..3 {
        convs.push(create_conversation(&store, "alice").await.id);
    }
    let mut tasks = Vec::new();
    for i in 0..90 {
        let conv = convs[i % 3].clone();
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let user = msg(Role::User, &format!("q{i}"), MessageStatus::InProgress);
            let user_id = user.id.clone();
            let open = TurnOpen {
                owner: "alice".into(),
                conversation_id: Some(conv.clone()),
                messages: vec![user],
                now: NOW,
            };
            assert_eq!(store.open_turn(open).await?, conv);
            let t = turn(&conv, vec![user_id], &format!("r{i}"), Some(&format!("tip{i}")));
            store.commit_turn(t).await
        }));
    }
    // And new conversations, opened at the same time.
    for i in 0..30 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let open = TurnOpen {
                owner: "bob".into(),
                conversation_id: None,
                messages: vec![msg(Role::User, &format!("hello {i}"), MessageStatus::InProgress)],
                now: NOW,
            };
            store.open_turn(open).await.map(drop)
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    for conv in &convs {
        let got = messages(&store, conv).await;
        assert_eq!(got.len(), 60);
        let seqs: Vec<i64> = got.iter().map(|m| m.seq).collect();
        assert_eq!(seqs, (1..=60).collect::<Vec<_>>());
        assert!(got.iter().all(|m| m.status == MessageStatus::Completed));
        let replies = got.iter().filter(|m| m.role == Role::Assistant).count();
        assert_eq!(replies, 30);
    }
    assert_eq!(count(&db, "usage_records").await, 90);
    assert_eq!(count(&db, "conversations WHERE owner = 'bob'").await, 30);
    assert_eq!(
        count(&db, "messages WHERE content LIKE 'hello %' AND seq = 1").await,
        30
    );
}

fn subscription(id: &str, events: &[&str]) -> WebhookSubscription {
    WebhookSubscription {
        id: id.into(),
        url: format!("https://example.com/{id}"),
        events: events.iter().map(|e| (*e).to_owned()).collect(),
        secret: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into(),
        description: String::new(),
        enabled: true,
        created_ms: 1,
        updated_ms: 1,
    }
}

/// Events that no enabled subscription wants are not written (the dispatcher would only delete them),
/// on the grouped path and through a transaction alike; a subscription made here opens its types at
/// once, another replica's at its next refresh; a deleted one closes them at the next refresh.
pub async fn unwanted_events_are_not_written(db: TestDb) {
    let store = db.migrated().await;
    // A turn in a new conversation, as a recorded exchange writes it (grouped); its id.
    let stored_turn = |text: &'static str| {
        let store = store.clone();
        async move {
            let open = TurnOpen {
                owner: "alice".into(),
                conversation_id: None,
                messages: vec![user("hi")],
                now: NOW,
            };
            let conv = store.open_turn(open).await.unwrap();
            store.commit_turn(turn(&conv, vec![], text, None)).await.unwrap();
            conv
        }
    };
    // Outbox rows: (conversation.created, message.created).
    let events = || async {
        let n = |t: &str| format!("SELECT COUNT(*) FROM event_outbox WHERE event_type = '{t}'");
        (
            db.count(&n(CONVERSATION_CREATED)).await,
            db.count(&n(MESSAGE_CREATED)).await,
        )
    };
    // Until the first refresh nothing is known: every event is written.
    assert!(store.wants_event(MESSAGE_CREATED));
    stored_turn("first").await;
    assert_eq!(events().await, (1, 1));
    db.exec("DELETE FROM event_outbox").await;

    store.refresh_event_gate().await.unwrap();
    assert!(!store.wants_event(CONVERSATION_CREATED) && !store.wants_event(MESSAGE_CREATED));
    let conv = stored_turn("second").await;
    let mut tx = store.begin().await.unwrap();
    tx.create_conversation("alice", serde_json::Map::new(), NOW)
        .await
        .unwrap();
    tx.enqueue_event(&OutboxEvent::new(KEY_REVOKED, json!({"id": "k"}), NOW * 1000))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(
        count(&db, "event_outbox").await,
        0,
        "nobody subscribed: no event rows"
    );
    assert_eq!(
        messages(&store, &conv).await.len(),
        2,
        "the turn itself is stored"
    );

    let replica = db.replica().await;
    if let Some(r) = &replica {
        r.refresh_event_gate().await.unwrap();
        assert!(!r.wants_event(MESSAGE_CREATED));
    }
    store
        .create_webhook_subscription(&subscription("whsub_m", &[MESSAGE_CREATED]))
        .await
        .unwrap();
    assert!(
        store.wants_event(MESSAGE_CREATED),
        "open at once where it was made"
    );
    assert!(!store.wants_event(CONVERSATION_CREATED));
    stored_turn("third").await;
    assert_eq!(events().await, (0, 1));
    if let Some(r) = &replica {
        assert!(
            !r.wants_event(MESSAGE_CREATED),
            "another replica learns it at its next refresh"
        );
        r.refresh_event_gate().await.unwrap();
        assert!(r.wants_event(MESSAGE_CREATED) && !r.wants_event(CONVERSATION_CREATED));
    }

    assert!(store.delete_webhook_subscription("whsub_m").await.unwrap());
    assert!(store.wants_event(MESSAGE_CREATED), "closed only by a refresh");
    store.refresh_event_gate().await.unwrap();
    assert!(!store.wants_event(MESSAGE_CREATED));
}
