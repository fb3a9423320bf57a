//! API keys: create, look up by id and hash, list, update, revoke, touch, count, and the one-time
//! bootstrap; plus the daily usage sum.

use moltbot_core::auth::hash_secret;
use moltbot_core::{ApiKey, ApiKeyUpdate, KeyLimits, Scope, StoreError, UsageRecord, ids};

use crate::harness::TestDb;

fn key(name: &str, created_at: i64) -> (ApiKey, String) {
    ApiKey::generate(
        name,
        vec![Scope::Chat, Scope::Conversations],
        KeyLimits {
            requests_per_minute: Some(60),
            tokens_per_minute: None,
            daily_tokens: Some(5_000_000_000),
            concurrent_streams: Some(2),
        },
        created_at,
        Some(created_at + 3600),
    )
}

pub async fn api_keys_lifecycle(db: TestDb) {
    let store = db.migrated().await;
    assert_eq!(store.count_api_keys().await.unwrap(), 0);
    let (a, secret_a) = key("alice", 100);
    let (b, _) = key("bob", 200);
    store.create_api_key(&a).await.unwrap();
    store.create_api_key(&b).await.unwrap();
    assert_eq!(store.count_api_keys().await.unwrap(), 2);

    assert_eq!(store.get_api_key(&a.id).await.unwrap(), Some(a.clone()));
    assert_eq!(
        store.get_api_key_by_hash(&hash_secret(&secret_a)).await.unwrap(),
        Some(a.clone())
    );
    assert_eq!(
        store.get_api_key_by_hash(&hash_secret("mb_nope")).await.unwrap(),
        None
    );
    assert_eq!(store.get_api_key("key_missing").await.unwrap(), None);
    assert_eq!(store.list_api_keys().await.unwrap(), vec![a.clone(), b.clone()]);

    // The same secret hash twice is a conflict (ids are unique too).
    let mut dup = b.clone();
    dup.id = ids::new_id("key");
    let err = store.create_api_key(&dup).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");

    let update = ApiKeyUpdate {
        name: Some("alice-2".into()),
        scopes: Some(vec![Scope::Admin]),
        requests_per_minute: Some(None),
        tokens_per_minute: Some(Some(1000)),
        expires_at: Some(None),
        ..ApiKeyUpdate::default()
    };
    let updated = store.update_api_key(&a.id, &update).await.unwrap().unwrap();
    let mut expected = a.clone();
    update.apply(&mut expected);
    assert_eq!(updated, expected);
    assert_eq!(updated.limits.daily_tokens, Some(5_000_000_000), "untouched");
    assert_eq!(store.get_api_key(&a.id).await.unwrap(), Some(expected));
    assert_eq!(store.update_api_key("key_missing", &update).await.unwrap(), None);

    store.touch_api_key(&b.id, 250).await.unwrap();
    assert_eq!(
        store.get_api_key(&b.id).await.unwrap().unwrap().last_used_at,
        Some(250)
    );

    assert!(store.revoke_api_key(&b.id, 300).await.unwrap());
    assert!(store.revoke_api_key(&b.id, 400).await.unwrap(), "idempotent");
    let revoked = store.get_api_key(&b.id).await.unwrap().unwrap();
    assert_eq!(revoked.revoked_at, Some(300), "the first revocation time is kept");
    assert!(!revoked.is_active(301));
    assert!(!store.revoke_api_key("key_missing", 300).await.unwrap());
    assert_eq!(
        store.count_api_keys().await.unwrap(),
        2,
        "revoked keys still count"
    );
}

pub async fn bootstrap_happens_once(db: TestDb) {
    let store = db.migrated().await;
    let (first, _) = key("admin", 100);
    let (second, _) = key("admin-again", 200);
    assert!(store.bootstrap_api_key(&first).await.unwrap());
    assert!(!store.bootstrap_api_key(&second).await.unwrap());
    // Even once every key is revoked, the database is not fresh any more.
    store.revoke_api_key(&first.id, 150).await.unwrap();
    assert!(!store.bootstrap_api_key(&second).await.unwrap());
    assert_eq!(store.list_api_keys().await.unwrap().len(), 1);
}

pub async fn bootstrap_skipped_when_keys_exist(db: TestDb) {
    let store = db.migrated().await;
    let (made, _) = key("made-by-cli", 100);
    store.create_api_key(&made).await.unwrap();
    let (boot, _) = key("admin", 200);
    assert!(!store.bootstrap_api_key(&boot).await.unwrap());
    assert_eq!(store.list_api_keys().await.unwrap(), vec![made]);
}

pub async fn concurrent_bootstrap_has_one_winner(db: TestDb) {
    let store = db.migrated().await;
    let mut tasks = Vec::new();
    for i in 0..4 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let (k, _) = key(&format!("admin-{i}"), 100);
            store.bootstrap_api_key(&k).await.unwrap()
        }));
    }
    let mut wins = 0;
    for t in tasks {
        wins += u32::from(t.await.unwrap());
    }
    assert_eq!(wins, 1);
    assert_eq!(store.count_api_keys().await.unwrap(), 1);
}

fn usage(owner: &str, created_at: i64, prompt: u32, completion: u32) -> UsageRecord {
    UsageRecord {
        id: ids::usage_id(),
        owner: owner.into(),
        conversation_id: None,
        request_id: None,
        model: "m".into(),
        backend: None,
        prompt_tokens: prompt,
        completion_tokens: completion,
        latency_ms: 0,
        outcome: "ok".into(),
        created_at,
    }
}

pub async fn usage_tokens_are_summed_since(db: TestDb) {
    let store = db.migrated().await;
    let mut tx = store.begin().await.unwrap();
    for r in [
        usage("k1", 99, 1000, 1000),
        usage("k1", 100, 10, 5),
        usage("k1", 500, u32::MAX, u32::MAX),
        usage("k2", 200, 7, 7),
    ] {
        tx.insert_usage(&r).await.unwrap();
    }
    tx.commit().await.unwrap();
    assert_eq!(
        store.sum_usage_tokens("k1", 100).await.unwrap(),
        15 + 2 * u64::from(u32::MAX)
    );
    assert_eq!(store.sum_usage_tokens("k1", 501).await.unwrap(), 0);
    assert_eq!(store.sum_usage_tokens("nobody", 0).await.unwrap(), 0);
}
