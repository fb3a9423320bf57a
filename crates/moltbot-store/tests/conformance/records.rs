//! Usage records and idempotency keys.

use moltbot_core::{StoreError, StoredResponse, UsageRecord, ids};

use crate::harness::TestDb;

fn usage(owner: &str, created_at: i64, tokens: u32) -> UsageRecord {
    UsageRecord {
        id: ids::usage_id(),
        owner: owner.into(),
        conversation_id: None,
        request_id: None,
        model: "model-a".into(),
        backend: None,
        prompt_tokens: tokens,
        completion_tokens: u32::MAX,
        latency_ms: 0,
        outcome: "error".into(),
        created_at,
    }
}

pub async fn usage_insert_and_list(db: TestDb) {
    let store = db.migrated().await;
    let a1 = usage("alice", 100, 1);
    let mut a2 = usage("alice", 300, 2);
    a2.conversation_id = Some("conv_gone".into());
    a2.request_id = Some("req".into());
    a2.backend = Some("local".into());
    a2.latency_ms = 1234;
    a2.outcome = "ok".into();
    let a3 = usage("alice", 200, 3);
    let b1 = usage("bob", 150, 4);
    let mut tx = store.begin().await.unwrap();
    for r in [&a1, &a2, &a3, &b1] {
        tx.insert_usage(r).await.unwrap();
    }
    tx.commit().await.unwrap();

    assert_eq!(
        store.list_usage("alice", 10).await.unwrap(),
        vec![a2.clone(), a3.clone(), a1]
    );
    assert_eq!(store.list_usage("alice", 2).await.unwrap(), vec![a2.clone(), a3]);
    assert_eq!(store.list_usage("bob", 10).await.unwrap(), vec![b1]);
    assert!(store.list_usage("carol", 10).await.unwrap().is_empty());

    let mut tx = store.begin().await.unwrap();
    let err = tx.insert_usage(&a2).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
}

/// Write-behind usage: queued records are read back at once (readers flush), land in the table
/// without any reader within a few flush intervals, and more than one statement's worth (256 rows)
/// goes through in order-independent batches.
pub async fn usage_write_behind(db: TestDb) {
    let store = db.migrated().await;
    let queued: Vec<UsageRecord> = (0..600).map(|i| usage("dora", 1_000 + i, 1)).collect();
    for r in &queued {
        store.record_usage(r.clone());
    }
    assert_eq!(
        store.sum_usage_tokens("dora", 0).await.unwrap(),
        600 * (1 + u64::from(u32::MAX))
    );
    let listed = store.list_usage("dora", 1000).await.unwrap();
    assert_eq!(listed.len(), 600);
    assert_eq!(listed[0], queued[599]);

    // No reader: the background writer alone gets the row into the table.
    let late = usage("erin", 5, 7);
    store.record_usage(late.clone());
    let mut seen = 0;
    for _ in 0..100 {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        seen = db
            .count("SELECT count(*) FROM usage_records WHERE owner = 'erin'")
            .await;
        if seen == 1 {
            break;
        }
    }
    assert_eq!(seen, 1, "the background writer did not write the queued record");
    store.flush().await.unwrap();
    assert_eq!(store.list_usage("erin", 10).await.unwrap(), vec![late]);
}

pub async fn idempotency_lifecycle(db: TestDb) {
    let store = db.migrated().await;
    assert!(
        store
            .claim_idempotency("alice", "k1", "hash-1", 100)
            .await
            .unwrap()
    );
    assert!(
        !store
            .claim_idempotency("alice", "k1", "hash-2", 101)
            .await
            .unwrap()
    );
    assert!(store.claim_idempotency("bob", "k1", "hash-b", 200).await.unwrap());
    assert!(
        store
            .claim_idempotency("alice", "k2", "hash-3", 300)
            .await
            .unwrap()
    );

    let pending = store
        .get_idempotency("alice", "k1")
        .await
        .unwrap()
        .expect("claimed");
    assert_eq!(
        (
            pending.owner.as_str(),
            pending.key.as_str(),
            pending.request_hash.as_str()
        ),
        ("alice", "k1", "hash-1")
    );
    assert_eq!((pending.response, pending.created_at), (None, 100));
    assert_eq!(store.get_idempotency("carol", "k1").await.unwrap(), None);

    let response = StoredResponse {
        status: 201,
        content_type: "application/json".into(),
        body: vec![0, 159, 146, 150, b'{', b'}'],
        headers: vec![
            ("x-conversation-id".into(), "conv_1".into()),
            ("x-a".into(), "b".into()),
        ],
    };
    store
        .complete_idempotency("alice", "k1", &response)
        .await
        .unwrap();
    let done = store
        .get_idempotency("alice", "k1")
        .await
        .unwrap()
        .expect("completed");
    assert_eq!(done.response, Some(response.clone()));
    assert_eq!(done.request_hash, "hash-1");
    // Bob's key of the same name is untouched.
    assert_eq!(
        store
            .get_idempotency("bob", "k1")
            .await
            .unwrap()
            .unwrap()
            .response,
        None
    );
    let err = store
        .complete_idempotency("carol", "k1", &response)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound), "{err:?}");

    store.release_idempotency("bob", "k1").await.unwrap();
    store.release_idempotency("bob", "k1").await.unwrap();
    assert_eq!(store.get_idempotency("bob", "k1").await.unwrap(), None);
    assert!(
        store
            .claim_idempotency("bob", "k1", "hash-b2", 250)
            .await
            .unwrap()
    );

    assert_eq!(store.purge_idempotency(260).await.unwrap(), 2); // alice/k1 (100), bob/k1 (250)
    assert_eq!(store.get_idempotency("alice", "k1").await.unwrap(), None);
    assert_eq!(store.get_idempotency("bob", "k1").await.unwrap(), None);
    assert!(store.get_idempotency("alice", "k2").await.unwrap().is_some());
    assert_eq!(store.purge_idempotency(260).await.unwrap(), 0);
}
