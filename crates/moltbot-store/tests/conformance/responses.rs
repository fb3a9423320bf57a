//! Responses API records: written in a turn's transaction, owner-scoped reads, deletes.

use moltbot_core::responses::ResponseRecord;
use serde_json::json;

use crate::harness::TestDb;

fn record(id: &str, owner: &str, previous: Option<&str>) -> ResponseRecord {
    ResponseRecord {
        id: id.into(),
        owner: owner.into(),
        previous_response_id: previous.map(str::to_owned),
        conversation_id: None,
        input: vec![
            json!({"type": "message", "id": format!("msg_{id}"), "role": "user",
            "content": [{"type": "input_text", "text": "héllo ✓"}]}),
        ],
        body: json!({"id": id, "object": "response", "status": "completed",
            "output": [{"type": "message", "content": [{"type": "output_text", "text": "hi"}]}]}),
        created_at: 1_700_000_000,
    }
}

pub async fn responses_commit_with_the_turn_and_are_owner_scoped(db: TestDb) {
    let store = db.migrated().await;
    let first = record("resp_1", "alice", None);
    let second = ResponseRecord {
        conversation_id: Some("conv_x".into()),
        ..record("resp_2", "alice", Some("resp_1"))
    };
    // Rolled back: nothing is visible.
    let mut tx = store.begin().await.unwrap();
    tx.insert_response(&first).await.unwrap();
    drop(tx);
    assert_eq!(store.get_response("alice", "resp_1").await.unwrap(), None);

    let mut tx = store.begin().await.unwrap();
    tx.insert_response(&first).await.unwrap();
    tx.insert_response(&second).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(
        store.get_response("alice", "resp_1").await.unwrap(),
        Some(first.clone())
    );
    let got = store.get_response("alice", "resp_2").await.unwrap().unwrap();
    assert_eq!(got, second);
    assert_eq!(got.output().len(), 1);
    assert_eq!(store.get_response("bob", "resp_1").await.unwrap(), None);

    // The same id twice is refused (the id is the primary key).
    let mut tx = store.begin().await.unwrap();
    assert!(tx.insert_response(&first).await.is_err());
    drop(tx);

    assert!(!store.delete_response("bob", "resp_1").await.unwrap());
    assert!(store.delete_response("alice", "resp_1").await.unwrap());
    assert!(!store.delete_response("alice", "resp_1").await.unwrap());
    assert_eq!(store.get_response("alice", "resp_1").await.unwrap(), None);
    // The later link survives the deletion of the earlier one.
    assert!(store.get_response("alice", "resp_2").await.unwrap().is_some());
}
