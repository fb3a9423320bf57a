//! Outbound webhooks: subscriptions, the outbox written in the record's transaction (rolled back with
//! it), idempotent dispatch, exclusive claims with lock expiry, retries, dead letters, redelivery with
//! the same event id, the attempt log and purge.

use std::collections::HashSet;
use std::sync::Arc;

use moltbot_core::webhooks::{
    CONVERSATION_CREATED, DeliveryOutcome, DeliveryQuery, DeliveryStatus, Dispatched, KEY_REVOKED,
    OutboxEvent, WEBHOOK_TEST, WebhookAttempt, WebhookSubscription, WebhookSubscriptionUpdate,
};
use moltbot_core::{ApiKey, KeyLimits, Scope, Store, ids};
use serde_json::{Map, json};

use crate::harness::TestDb;

fn sub(id: &str, events: &[&str], enabled: bool, created_ms: i64) -> WebhookSubscription {
    WebhookSubscription {
        id: id.into(),
        url: format!("https://example.com/{id}"),
        events: events.iter().map(|e| (*e).to_owned()).collect(),
        secret: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into(),
        description: format!("sub {id}"),
        enabled,
        created_ms,
        updated_ms: created_ms,
    }
}

fn attempt(delivery_id: &str, at: i64, status: Option<u16>, error: Option<&str>) -> WebhookAttempt {
    WebhookAttempt {
        id: ids::new_id("whatt"),
        delivery_id: delivery_id.into(),
        attempted_ms: at,
        status_code: status,
        error: error.map(str::to_owned),
        duration_ms: 5,
    }
}

fn all(limit: u32) -> DeliveryQuery {
    DeliveryQuery {
        limit,
        ..DeliveryQuery::default()
    }
}

async fn outbox_count(db: &TestDb) -> i64 {
    let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM event_outbox")
        .fetch_one(db.sql.pool())
        .await
        .unwrap();
    n
}

pub async fn webhook_subscriptions_crud(db: TestDb) {
    let store = db.migrated().await;
    let a = sub("whsub_a", &[CONVERSATION_CREATED, KEY_REVOKED], true, 1_000);
    let b = sub("whsub_b", &[KEY_REVOKED], false, 2_000);
    store.create_webhook_subscription(&a).await.unwrap();
    store.create_webhook_subscription(&b).await.unwrap();
    assert!(
        store.create_webhook_subscription(&a).await.is_err(),
        "duplicate id"
    );
    assert_eq!(
        store.list_webhook_subscriptions().await.unwrap(),
        vec![a.clone(), b.clone()]
    );
    assert_eq!(
        store.get_webhook_subscription("whsub_a").await.unwrap(),
        Some(a.clone())
    );
    assert_eq!(store.get_webhook_subscription("nope").await.unwrap(), None);

    let changed = store
        .update_webhook_subscription(
            "whsub_b",
            &WebhookSubscriptionUpdate {
                enabled: Some(true),
                events: Some(vec![CONVERSATION_CREATED.into()]),
                ..Default::default()
            },
            3_000,
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        changed,
        WebhookSubscription {
            enabled: true,
            events: vec![CONVERSATION_CREATED.into()],
            updated_ms: 3_000,
            ..b.clone()
        },
        "only the given fields change"
    );
    let rotated = store
        .update_webhook_subscription(
            "whsub_b",
            &WebhookSubscriptionUpdate {
                url: Some("https://example.org/x".into()),
                secret: Some("whsec_new".into()),
                description: Some(String::new()),
                enabled: Some(false),
                events: None,
            },
            4_000,
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (
            rotated.url.as_str(),
            rotated.secret.as_str(),
            rotated.description.as_str(),
            rotated.enabled
        ),
        ("https://example.org/x", "whsec_new", "", false)
    );
    assert_eq!(
        store
            .update_webhook_subscription("nope", &WebhookSubscriptionUpdate::default(), 1)
            .await
            .unwrap(),
        None
    );

    // Deleting a subscription takes its deliveries and attempts along.
    let ev = OutboxEvent::new(WEBHOOK_TEST, json!({}), 5_000);
    let d = store
        .enqueue_webhook_test("whsub_a", &ev, 60_000)
        .await
        .unwrap()
        .unwrap();
    let job = store
        .claim_webhook_delivery("w", 5_000, 9_000)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(job.delivery.id, d.id);
    store
        .finish_webhook_delivery(
            "w",
            &attempt(&d.id, 5_000, Some(200), None),
            &DeliveryOutcome::Delivered,
        )
        .await
        .unwrap();
    assert!(store.delete_webhook_subscription("whsub_a").await.unwrap());
    assert!(!store.delete_webhook_subscription("whsub_a").await.unwrap());
    assert_eq!(store.get_webhook_delivery(&d.id).await.unwrap(), None);
    assert!(store.list_webhook_attempts(&d.id).await.unwrap().is_empty());
    assert_eq!(store.list_webhook_subscriptions().await.unwrap().len(), 1);
}

pub async fn webhook_outbox_commits_with_the_record(db: TestDb) {
    let store = db.migrated().await;
    let owner = "alice";
    // Rolled back: neither the conversation nor its event exists.
    {
        let mut tx = store.begin().await.unwrap();
        tx.create_conversation(owner, Map::new(), 10).await.unwrap();
        tx.enqueue_event(&OutboxEvent::new(KEY_REVOKED, json!({"id": "k"}), 10_000))
            .await
            .unwrap();
    }
    assert_eq!(outbox_count(&db).await, 0, "dropped transaction: no event");

    let mut tx = store.begin().await.unwrap();
    let conv = tx
        .create_conversation(owner, Map::from_iter([("k".to_owned(), json!("v"))]), 20)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let (payload,): (String,) = sqlx::query_as("SELECT payload FROM event_outbox WHERE event_type = $1")
        .bind(CONVERSATION_CREATED)
        .fetch_one(db.sql.pool())
        .await
        .unwrap();
    let payload: serde_json::Value = serde_json::from_str(&payload).unwrap();
    assert_eq!(
        payload,
        json!({
            "type": "conversation.created",
            "timestamp": "1970-01-01T00:00:20.000Z",
            "data": {"id": conv.id, "owner": "alice", "created_at": 20, "metadata": {"k": "v"}},
        })
    );

    // A transactional revoke: true once, and its event commits with it.
    let (key, _) = ApiKey::generate("k", vec![Scope::Chat], KeyLimits::default(), 30, None);
    store.create_api_key(&key).await.unwrap();
    let mut tx = store.begin().await.unwrap();
    assert!(tx.revoke_api_key(&key.id, 40).await.unwrap());
    tx.enqueue_event(&OutboxEvent::new(KEY_REVOKED, json!({"id": key.id}), 40_000))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let mut tx = store.begin().await.unwrap();
    assert!(!tx.revoke_api_key(&key.id, 50).await.unwrap(), "already revoked");
    assert!(!tx.revoke_api_key("nope", 50).await.unwrap(), "no such key");
    drop(tx);
    assert_eq!(
        store.get_api_key(&key.id).await.unwrap().unwrap().revoked_at,
        Some(40)
    );
    assert_eq!(outbox_count(&db).await, 2);

    // Dispatch: one delivery per enabled subscription that wants the type.
    store
        .create_webhook_subscription(&sub("whsub_conv", &[CONVERSATION_CREATED], true, 1))
        .await
        .unwrap();
    store
        .create_webhook_subscription(&sub("whsub_both", &[CONVERSATION_CREATED, KEY_REVOKED], true, 2))
        .await
        .unwrap();
    store
        .create_webhook_subscription(&sub("whsub_off", &[CONVERSATION_CREATED, KEY_REVOKED], false, 3))
        .await
        .unwrap();
    assert_eq!(
        store.dispatch_webhook_events(100_000, 60_000, 1).await.unwrap(),
        Dispatched {
            events: 1,
            deliveries: 2
        },
        "limit; the conversation event goes to both subscriptions that want it"
    );
    assert_eq!(
        store.dispatch_webhook_events(100_000, 60_000, 10).await.unwrap(),
        Dispatched {
            events: 1,
            deliveries: 1
        }
    );
    assert_eq!(
        store
            .dispatch_webhook_events(100_000, 60_000, 10)
            .await
            .unwrap()
            .events,
        0
    );
    let mut got: Vec<(String, String, i64)> = store
        .list_webhook_deliveries(&all(10))
        .await
        .unwrap()
        .into_iter()
        .map(|d| {
            assert_eq!(d.status, DeliveryStatus::Pending);
            assert_eq!(d.next_attempt_ms, 100_000);
            (d.subscription_id, d.event_type, d.expires_ms)
        })
        .collect();
    got.sort();
    assert_eq!(
        got,
        [
            ("whsub_both".to_owned(), CONVERSATION_CREATED.to_owned(), 80_000),
            ("whsub_both".to_owned(), KEY_REVOKED.to_owned(), 100_000),
            ("whsub_conv".to_owned(), CONVERSATION_CREATED.to_owned(), 80_000),
        ],
        "expiry counts from the event's creation"
    );

    // Dispatching the same events again (a second dispatcher, a crash before marking) adds nothing.
    db.exec("UPDATE event_outbox SET dispatched_ms = NULL").await;
    assert_eq!(
        store.dispatch_webhook_events(200_000, 60_000, 10).await.unwrap(),
        Dispatched {
            events: 2,
            deliveries: 0
        },
        "no delivery twice"
    );
    assert_eq!(store.list_webhook_deliveries(&all(10)).await.unwrap().len(), 3);

    // An event nobody wants is dropped.
    let mut tx = store.begin().await.unwrap();
    tx.enqueue_event(&OutboxEvent::new("message.failed", json!({}), 300_000))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(outbox_count(&db).await, 3);
    assert_eq!(
        store.dispatch_webhook_events(300_000, 60_000, 10).await.unwrap(),
        Dispatched {
            events: 1,
            deliveries: 0
        }
    );
    assert_eq!(outbox_count(&db).await, 2);
    assert_eq!(store.list_webhook_deliveries(&all(10)).await.unwrap().len(), 3);

    // A large batch (more ids than one `IN` list takes), wanted and unwanted events mixed.
    let mut tx = store.begin().await.unwrap();
    for i in 0..700 {
        let kind = if i == 350 { KEY_REVOKED } else { "message.failed" };
        tx.enqueue_event(&OutboxEvent::new(kind, json!({"i": i}), 400_000 + i))
            .await
            .unwrap();
    }
    tx.commit().await.unwrap();
    assert_eq!(
        store
            .dispatch_webhook_events(500_000, 60_000, 1000)
            .await
            .unwrap(),
        Dispatched {
            events: 700,
            deliveries: 1
        }
    );
    assert_eq!(outbox_count(&db).await, 3, "the 699 unwanted events are gone");
    assert_eq!(store.list_webhook_deliveries(&all(10)).await.unwrap().len(), 4);
    assert_eq!(
        store
            .dispatch_webhook_events(600_000, 60_000, 1000)
            .await
            .unwrap(),
        Dispatched::default()
    );
}

pub async fn webhook_claims_retries_dead_letters_and_redelivery(db: TestDb) {
    let store = db.migrated().await;
    let s = sub("whsub_a", &[KEY_REVOKED], true, 1);
    store.create_webhook_subscription(&s).await.unwrap();
    let mut events = Vec::new();
    for i in 0..6 {
        let ev = OutboxEvent::new(KEY_REVOKED, json!({"i": i}), 1_000 + i);
        let mut tx = store.begin().await.unwrap();
        tx.enqueue_event(&ev).await.unwrap();
        tx.commit().await.unwrap();
        events.push(ev);
    }
    assert_eq!(
        store
            .dispatch_webhook_events(2_000, 10_000, 100)
            .await
            .unwrap()
            .events,
        6
    );
    assert!(
        store
            .claim_webhook_delivery("w", 1_999, 9_000)
            .await
            .unwrap()
            .is_none(),
        "not due yet"
    );

    // Concurrent claimers never share a delivery.
    let mut tasks = Vec::new();
    for w in 0..4 {
        let store: Arc<dyn Store> = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            while let Some(job) = store
                .claim_webhook_delivery(&format!("w{w}"), 2_000, 3_000)
                .await
                .unwrap()
            {
                mine.push(job.delivery.id);
            }
            mine
        }));
    }
    let mut claimed = Vec::new();
    for t in tasks {
        claimed.extend(t.await.unwrap());
    }
    assert_eq!(claimed.len(), 6, "{claimed:?}");
    assert_eq!(
        claimed.iter().collect::<HashSet<_>>().len(),
        6,
        "each exactly once"
    );

    // Locks expire: after 3 000 the deliveries can be claimed again, with the job's data.
    let job = store
        .claim_webhook_delivery("w9", 3_001, 4_000)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(job.url, s.url);
    assert_eq!(job.secret, s.secret);
    assert_eq!(job.delivery.attempts, 2);
    assert_eq!(job.delivery.expires_ms, 1_000 + 10_000);
    let ev = events.iter().find(|e| e.id == job.delivery.event_id).unwrap();
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&job.payload).unwrap(),
        ev.payload
    );
    assert_eq!(job.event_created_ms, ev.created_ms);
    let id = job.delivery.id.clone();

    // A worker that lost its claim changes nothing but the attempt log.
    assert!(
        !store
            .finish_webhook_delivery(
                "w0",
                &attempt(&id, 3_002, Some(500), None),
                &DeliveryOutcome::Dead
            )
            .await
            .unwrap()
    );
    // Retry: not claimable before its time.
    assert!(
        store
            .finish_webhook_delivery(
                "w9",
                &attempt(&id, 3_010, Some(503), Some("503 Service Unavailable")),
                &DeliveryOutcome::Retry { at_ms: 5_000 },
            )
            .await
            .unwrap()
    );
    let d = store.get_webhook_delivery(&id).await.unwrap().unwrap();
    assert_eq!(
        (
            d.status,
            d.next_attempt_ms,
            d.last_status,
            d.last_error.as_deref()
        ),
        (
            DeliveryStatus::Pending,
            5_000,
            Some(503),
            Some("503 Service Unavailable")
        )
    );
    // Release the other claims' locks by time; drain the others first.
    let mut others = 0;
    while let Some(j) = store.claim_webhook_delivery("w9", 4_500, 4_600).await.unwrap() {
        assert_ne!(j.delivery.id, id, "not due before 5 000");
        store
            .finish_webhook_delivery(
                "w9",
                &attempt(&j.delivery.id, 4_500, Some(204), None),
                &DeliveryOutcome::Delivered,
            )
            .await
            .unwrap();
        others += 1;
    }
    assert_eq!(others, 5);
    let job = store
        .claim_webhook_delivery("w9", 5_000, 6_000)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(job.delivery.id, id);
    assert!(
        store
            .finish_webhook_delivery(
                "w9",
                &attempt(&id, 5_000, None, Some("connection refused")),
                &DeliveryOutcome::Dead
            )
            .await
            .unwrap()
    );
    let dead = store.get_webhook_delivery(&id).await.unwrap().unwrap();
    assert_eq!((dead.status, dead.last_status), (DeliveryStatus::Dead, None));
    assert!(
        store
            .claim_webhook_delivery("w9", 99_000, 99_999)
            .await
            .unwrap()
            .is_none()
    );

    // The log: attempts oldest first; filters.
    let attempts = store.list_webhook_attempts(&id).await.unwrap();
    let codes: Vec<_> = attempts
        .iter()
        .map(|a| (a.status_code, a.error.clone()))
        .collect();
    assert_eq!(
        codes,
        [
            (Some(500), None),
            (Some(503), Some("503 Service Unavailable".to_owned())),
            (None, Some("connection refused".to_owned())),
        ]
    );
    let q = |status| DeliveryQuery {
        status: Some(status),
        subscription_id: Some("whsub_a".into()),
        limit: 100,
        ..DeliveryQuery::default()
    };
    assert_eq!(
        store
            .list_webhook_deliveries(&q(DeliveryStatus::Dead))
            .await
            .unwrap()
            .len(),
        1
    );
    let delivered = store
        .list_webhook_deliveries(&q(DeliveryStatus::Delivered))
        .await
        .unwrap();
    assert_eq!(delivered.len(), 5);
    assert!(delivered.iter().all(|d| d.delivered_ms == Some(4_505)));
    assert_eq!(
        store.list_webhook_deliveries(&all(2)).await.unwrap().len(),
        2,
        "limit"
    );

    // Redeliver: pending again, same event, a fresh retry window.
    let again = store
        .redeliver_webhook(&id, 50_000, 10_000)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (
            again.status,
            again.event_id.as_str(),
            again.next_attempt_ms,
            again.expires_ms
        ),
        (DeliveryStatus::Pending, dead.event_id.as_str(), 50_000, 60_000)
    );
    assert_eq!(store.redeliver_webhook("nope", 1, 1).await.unwrap(), None);
    let job = store
        .claim_webhook_delivery("w1", 50_000, 51_000)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (job.delivery.id.as_str(), job.delivery.attempts),
        (id.as_str(), 4)
    );
    store
        .finish_webhook_delivery(
            "w1",
            &attempt(&id, 50_000, Some(200), None),
            &DeliveryOutcome::Delivered,
        )
        .await
        .unwrap();

    // A test event goes to one subscription, whatever its event list.
    store
        .create_webhook_subscription(&sub("whsub_b", &[CONVERSATION_CREATED], true, 2))
        .await
        .unwrap();
    let test = OutboxEvent::new(WEBHOOK_TEST, json!({"hello": true}), 60_000);
    let d = store
        .enqueue_webhook_test("whsub_b", &test, 10_000)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (d.event_id.as_str(), d.event_type.as_str(), d.status, d.expires_ms),
        (test.id.as_str(), WEBHOOK_TEST, DeliveryStatus::Pending, 70_000)
    );
    assert_eq!(store.enqueue_webhook_test("nope", &test, 1).await.unwrap(), None);
    assert_eq!(
        store.dispatch_webhook_events(60_000, 1, 10).await.unwrap().events,
        0,
        "already dispatched"
    );

    // Purge: finished deliveries (and their attempts and events) before the cut; pending ones stay.
    assert_eq!(store.purge_webhooks(59_999).await.unwrap(), 6);
    assert!(store.list_webhook_attempts(&id).await.unwrap().is_empty());
    let left = store.list_webhook_deliveries(&all(10)).await.unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].id, d.id);
    assert_eq!(
        outbox_count(&db).await,
        1,
        "only the test event still referred to"
    );
}
