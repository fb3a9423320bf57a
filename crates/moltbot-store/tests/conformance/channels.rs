//! The channel pipeline's persistence: dedupe on enqueue, claims (due, one per chat in order, lock
//! expiry, concurrent claimers never share an event), progress, outcomes, purge, conversation
//! mapping, state and leases.

use std::collections::HashSet;
use std::sync::Arc;

use moltbot_core::Store;
use moltbot_core::channels::{ChannelEventStatus, ChannelOutcome, NewChannelEvent};
use serde_json::json;

use crate::harness::TestDb;

fn ev(event_id: &str, chat: &str, now_ms: i64) -> NewChannelEvent {
    NewChannelEvent {
        platform: "telegram".into(),
        account: "main".into(),
        event_id: event_id.into(),
        chat_key: format!("telegram/main/{chat}"),
        message: json!({"text": event_id}),
        status: ChannelEventStatus::Queued,
        now_ms,
    }
}

pub async fn channel_events_dedupe_and_claim_in_chat_order(db: TestDb) {
    let store = db.migrated().await;
    assert!(store.enqueue_channel_event(&ev("e1", "a", 1_000)).await.unwrap());
    assert!(
        !store.enqueue_channel_event(&ev("e1", "a", 1_001)).await.unwrap(),
        "same event id: duplicate"
    );
    let mut other_account = ev("e1", "a", 1_002);
    other_account.account = "second".into();
    other_account.chat_key = "telegram/second/a".into();
    assert!(
        store.enqueue_channel_event(&other_account).await.unwrap(),
        "ids are per account"
    );
    assert!(store.enqueue_channel_event(&ev("e2", "a", 1_003)).await.unwrap());
    assert!(store.enqueue_channel_event(&ev("e3", "b", 1_004)).await.unwrap());

    // Chat a: e1 first; e2 waits while e1 is unfinished. Chat b and the other account's chat go meanwhile.
    let first = store
        .claim_channel_event("w1", 2_000, 10_000)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (first.event_id.as_str(), first.account.as_str(), first.attempts),
        ("e1", "main", 1)
    );
    assert_eq!(first.message, json!({"text": "e1"}));
    let mut claimed = vec![];
    while let Some(e) = store.claim_channel_event("w2", 2_000, 10_000).await.unwrap() {
        claimed.push((e.account.clone(), e.event_id.clone()));
    }
    claimed.sort();
    assert_eq!(
        claimed,
        [
            ("main".to_owned(), "e3".to_owned()),
            ("second".to_owned(), "e1".to_owned())
        ],
        "e2 is behind e1 in its chat"
    );

    // Progress and reply belong to the holder only.
    assert!(
        !store
            .save_channel_reply(&first.id, "w2", "nope", None, 2_100)
            .await
            .unwrap()
    );
    assert!(
        store
            .save_channel_reply(&first.id, "w1", "hello", Some("conv_1"), 2_100)
            .await
            .unwrap()
    );
    assert!(
        store
            .set_channel_progress(&first.id, "w1", 1, 12_000, 2_200)
            .await
            .unwrap()
    );
    let retry = ChannelOutcome::Retry {
        at_ms: 5_000,
        error: "429".into(),
    };
    assert!(
        store
            .finish_channel_event(&first.id, "w1", &retry, 2_300)
            .await
            .unwrap()
    );
    assert!(
        !store
            .finish_channel_event(&first.id, "w1", &ChannelOutcome::Done, 2_300)
            .await
            .unwrap(),
        "no longer held"
    );

    // Not due before 5 000; then resumed with the reply and progress kept.
    assert!(
        store
            .claim_channel_event("w3", 4_999, 20_000)
            .await
            .unwrap()
            .is_none()
    );
    let again = store
        .claim_channel_event("w3", 5_000, 20_000)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(again.id, first.id);
    assert_eq!((again.attempts, again.chunks_sent), (2, 1));
    assert_eq!(again.reply.as_deref(), Some("hello"));
    assert_eq!(again.conversation_id.as_deref(), Some("conv_1"));
    assert_eq!(again.last_error.as_deref(), Some("429"));
    assert!(
        store
            .finish_channel_event(&again.id, "w3", &ChannelOutcome::Done, 5_100)
            .await
            .unwrap()
    );

    // Now e2 of chat a.
    let e2 = store
        .claim_channel_event("w3", 5_200, 20_000)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(e2.event_id, "e2");
    let failed = ChannelOutcome::Failed {
        error: "x".repeat(5000),
    };
    assert!(
        store
            .finish_channel_event(&e2.id, "w3", &failed, 5_300)
            .await
            .unwrap()
    );
    let e2 = store.get_channel_event(&e2.id).await.unwrap().unwrap();
    assert_eq!(e2.status, ChannelEventStatus::Failed);
    assert!(e2.last_error.unwrap().len() < 1100, "errors are clipped");

    let stats = store.channel_stats().await.unwrap();
    let main = stats.iter().find(|s| s.account == "main").unwrap();
    assert_eq!((main.queued, main.done, main.failed), (1, 1, 1));
    assert_eq!(main.last_event_ms, Some(1_004));
    let listed = store
        .list_channel_events(Some("telegram"), Some("main"), 10)
        .await
        .unwrap();
    assert_eq!(
        listed.iter().map(|e| e.event_id.as_str()).collect::<Vec<_>>(),
        ["e3", "e2", "e1"]
    );

    // Purge removes finished events only.
    assert_eq!(store.purge_channel_events(10_000).await.unwrap(), 2);
    assert_eq!(store.list_channel_events(None, None, 10).await.unwrap().len(), 2);
}

pub async fn channel_claims_expire_and_are_exclusive(db: TestDb) {
    let store = db.migrated().await;
    store.enqueue_channel_event(&ev("only", "a", 0)).await.unwrap();
    let held = store
        .claim_channel_event("dead-worker", 1_000, 3_000)
        .await
        .unwrap()
        .unwrap();
    assert!(
        store
            .claim_channel_event("w2", 2_999, 9_000)
            .await
            .unwrap()
            .is_none(),
        "lock still live"
    );
    let taken = store
        .claim_channel_event("w2", 3_001, 9_000)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((taken.id.as_str(), taken.attempts), (held.id.as_str(), 2));
    assert!(
        !store
            .finish_channel_event(&held.id, "dead-worker", &ChannelOutcome::Done, 3_100)
            .await
            .unwrap()
    );
    assert!(
        store
            .finish_channel_event(&held.id, "w2", &ChannelOutcome::Done, 3_100)
            .await
            .unwrap()
    );

    if db.single_connection {
        return;
    }
    // Many events, many concurrent claimers: every event claimed exactly once.
    for i in 0..40 {
        store
            .enqueue_channel_event(&ev(&format!("c{i}"), &format!("chat{i}"), 10))
            .await
            .unwrap();
    }
    let store: Arc<dyn Store> = store;
    let mut tasks = Vec::new();
    for w in 0..8 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut got = Vec::new();
            loop {
                match store.claim_channel_event(&format!("w{w}"), 20_000, 90_000).await {
                    Ok(Some(e)) => got.push(e.event_id),
                    Ok(None) => break,
                    Err(e) => panic!("claim failed: {e}"),
                }
            }
            got
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let unique: HashSet<_> = all.iter().collect();
    assert_eq!(all.len(), 40, "{all:?}");
    assert_eq!(unique.len(), 40);
}

pub async fn channel_conversations_state_and_leases(db: TestDb) {
    let store = db.migrated().await;
    assert_eq!(store.channel_conversation("k").await.unwrap(), None);
    assert_eq!(
        store.bind_channel_conversation("k", "conv_a", 1).await.unwrap(),
        "conv_a"
    );
    assert_eq!(
        store.bind_channel_conversation("k", "conv_b", 2).await.unwrap(),
        "conv_a",
        "first binding wins"
    );
    store
        .unbind_channel_conversation("k", "conv_other")
        .await
        .unwrap();
    assert_eq!(
        store.channel_conversation("k").await.unwrap().as_deref(),
        Some("conv_a")
    );
    store.unbind_channel_conversation("k", "conv_a").await.unwrap();
    assert_eq!(
        store.bind_channel_conversation("k", "conv_b", 3).await.unwrap(),
        "conv_b"
    );

    assert_eq!(store.get_channel_state("offset").await.unwrap(), None);
    store.set_channel_state("offset", "10", 1).await.unwrap();
    store.set_channel_state("offset", "11", 2).await.unwrap();
    assert_eq!(
        store.get_channel_state("offset").await.unwrap().as_deref(),
        Some("11")
    );

    assert!(store.acquire_lease("poll", "a", 1_000, 500).await.unwrap());
    assert!(
        !store.acquire_lease("poll", "b", 1_200, 500).await.unwrap(),
        "held by a"
    );
    assert!(
        store.acquire_lease("poll", "a", 1_400, 500).await.unwrap(),
        "renewed by its holder"
    );
    assert_eq!(
        store.lease_holder("poll", 1_500).await.unwrap().as_deref(),
        Some("a")
    );
    assert!(
        !store.acquire_lease("poll", "b", 1_900, 500).await.unwrap(),
        "renewal moved the expiry to 1 900"
    );
    assert!(
        store.acquire_lease("poll", "b", 1_901, 500).await.unwrap(),
        "expired: b takes over"
    );
    assert!(!store.acquire_lease("poll", "a", 1_950, 500).await.unwrap());
    store.release_lease("poll", "a").await.unwrap();
    assert_eq!(
        store.lease_holder("poll", 2_000).await.unwrap().as_deref(),
        Some("b"),
        "only the holder releases"
    );
    store.release_lease("poll", "b").await.unwrap();
    assert!(store.acquire_lease("poll", "a", 2_001, 500).await.unwrap());
    assert_eq!(
        store.lease_holder("poll", 3_000).await.unwrap(),
        None,
        "expired leases have no holder"
    );
}
