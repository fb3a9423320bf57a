//! Conversation memory: compaction items, the messages they replace, and the once-only write.

use std::sync::Arc;

use moltbot_core::{
    Compaction, CompactionTrigger, ItemQuery, MessageStatus, NewMessage, Role, Store, StoreError,
    StoredMessage,
};

use crate::harness::*;

fn summary(text: &str, replaced: &[&StoredMessage], message_count: u32) -> NewMessage {
    let mut m = msg(Role::System, text, MessageStatus::Completed);
    m.compaction = Some(Compaction {
        replaced_ids: replaced.iter().map(|m| m.id.clone()).collect(),
        message_count,
        model: "summarizer".into(),
        trigger: CompactionTrigger::Auto,
        tokens_before: 1234,
    });
    m
}

async fn compact(
    store: &Arc<dyn Store>,
    conversation_id: &str,
    item: &NewMessage,
) -> Result<StoredMessage, StoreError> {
    let mut tx = store.begin().await.expect("begin");
    let stored = tx.insert_compaction(conversation_id, item, 1_700_000_200).await?;
    tx.commit().await.expect("commit");
    Ok(stored)
}

async fn all_items(store: &Arc<dyn Store>, conversation_id: &str) -> Vec<StoredMessage> {
    let query = ItemQuery {
        after: None,
        limit: 100,
        ascending: true,
    };
    store.list_messages(conversation_id, &query).await.unwrap().0
}

async fn context_seqs(store: &Arc<dyn Store>, conversation_id: &str) -> Vec<i64> {
    seqs(&store.context_messages(conversation_id, 100).await.unwrap())
}

pub async fn compaction_replaces_messages_in_context(db: TestDb) {
    let store = db.migrated().await;
    let conv = create_conversation(&store, "alice").await;
    let sys = msg(Role::System, "be brief", MessageStatus::Completed);
    let turns: Vec<NewMessage> = (1..=6)
        .map(|i| {
            let role = if i % 2 == 1 { Role::User } else { Role::Assistant };
            msg(role, &format!("m{i}"), MessageStatus::Completed)
        })
        .collect();
    let mut spec = vec![sys];
    spec.extend(turns);
    let stored = append(&store, &conv.id, &spec).await; // seq 1 (system) .. 7
    assert_eq!(context_seqs(&store, &conv.id).await, [1, 2, 3, 4, 5, 6, 7]);

    // The first compaction replaces m1..m4 (seq 2..5); the summary is appended (seq 8).
    let first = summary("S1", &[&stored[1], &stored[2], &stored[3], &stored[4]], 4);
    let s1 = compact(&store, &conv.id, &first).await.unwrap();
    assert_eq!(s1.seq, 8);
    assert_eq!(s1.role, Role::System);
    assert_eq!(s1.compaction, first.compaction);
    assert_eq!(s1.compacted_by, None);
    assert_eq!(
        context_seqs(&store, &conv.id).await,
        [1, 6, 7, 8],
        "the instruction, the kept turns and the summary"
    );
    let ctx = store.context_messages(&conv.id, 100).await.unwrap();
    assert_eq!(ctx[3], s1, "the summary reads back as written");

    // Every item stays listed; replaced ones name their summary.
    let items = all_items(&store, &conv.id).await;
    assert_eq!(items.len(), 8);
    for m in &items {
        let expected = (2..=5).contains(&m.seq).then(|| s1.id.clone());
        assert_eq!(m.compacted_by, expected, "seq {}", m.seq);
    }
    let got = store.get_message(&conv.id, &s1.id).await.unwrap().unwrap();
    assert_eq!(got.compaction.unwrap().replaced_ids.len(), 4);

    // A second compaction absorbs the first summary and m5.
    let second = summary("S2", &[&s1, &stored[5]], 5);
    let s2 = compact(&store, &conv.id, &second).await.unwrap();
    assert_eq!(context_seqs(&store, &conv.id).await, [1, 7, 9]);
    let s1_now = store.get_message(&conv.id, &s1.id).await.unwrap().unwrap();
    assert_eq!(s1_now.compacted_by.as_deref(), Some(s2.id.as_str()));
    assert!(
        s1_now.compaction.is_some(),
        "an absorbed summary keeps its record"
    );

    // Deleting the summary in force gives back what it replaced: the first summary and m5.
    assert!(store.delete_message(&conv.id, &s2.id).await.unwrap());
    assert_eq!(context_seqs(&store, &conv.id).await, [1, 6, 7, 8]);
    let s1_again = store.get_message(&conv.id, &s1.id).await.unwrap().unwrap();
    assert_eq!(s1_again.compacted_by, None);
    let m1 = store.get_message(&conv.id, &stored[1].id).await.unwrap().unwrap();
    assert_eq!(
        m1.compacted_by.as_deref(),
        Some(s1.id.as_str()),
        "still replaced by the first"
    );
    assert!(!store.delete_message(&conv.id, &s2.id).await.unwrap());

    // The conversation's listing is unaffected by the replaced items staying stored.
    let summary_row = store
        .conversation_summary(Some("alice"), &conv.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(summary_row.title, "m1");
}

pub async fn compaction_of_claimed_items_conflicts(db: TestDb) {
    let store = db.migrated().await;
    let conv = create_conversation(&store, "alice").await;
    let other = create_conversation(&store, "alice").await;
    let stored = append(&store, &conv.id, &[user("a"), user("b"), user("c")]).await;
    let theirs = append(&store, &other.id, &[user("x")]).await;

    compact(&store, &conv.id, &summary("S1", &[&stored[0], &stored[1]], 2))
        .await
        .unwrap();
    let before = all_items(&store, &conv.id).await;

    // Overlapping an earlier compaction, naming another conversation's item, or nothing at all.
    for (what, item) in [
        ("overlap", summary("S2", &[&stored[1], &stored[2]], 2)),
        ("foreign", summary("S3", &[&stored[2], &theirs[0]], 2)),
        ("empty", summary("S4", &[], 0)),
    ] {
        let err = compact(&store, &conv.id, &item).await.unwrap_err();
        match what {
            "empty" => assert!(matches!(err, StoreError::Database(_)), "{what}: {err:?}"),
            _ => assert!(matches!(err, StoreError::Conflict(_)), "{what}: {err:?}"),
        }
        assert_eq!(
            all_items(&store, &conv.id).await,
            before,
            "{what}: rolled back, nothing appended or claimed"
        );
    }
    assert_eq!(all_items(&store, &other.id).await[0].compacted_by, None);
}

pub async fn concurrent_compactions_have_one_winner(db: TestDb) {
    let store = db.migrated().await;
    let conv = create_conversation(&store, "alice").await;
    let stored = append(&store, &conv.id, &[user("a"), user("b"), user("c")]).await;

    // One compaction holds its claim uncommitted while others race for the same items.
    let mut first = store.begin().await.unwrap();
    let winner = first
        .insert_compaction(
            &conv.id,
            &summary("first", &[&stored[0], &stored[1]], 2),
            1_700_000_200,
        )
        .await
        .unwrap();
    let mut racers = Vec::new();
    for i in 0..3 {
        let store = store.clone();
        let conv_id = conv.id.clone();
        let replaced = [stored[0].clone(), stored[1].clone()];
        racers.push(tokio::spawn(async move {
            let item = summary(&format!("racer {i}"), &[&replaced[0], &replaced[1]], 2);
            compact(&store, &conv_id, &item).await
        }));
    }
    first.commit().await.unwrap();
    for r in racers {
        let outcome = r.await.unwrap();
        assert!(matches!(outcome, Err(StoreError::Conflict(_))), "{outcome:?}");
    }
    let items = all_items(&store, &conv.id).await;
    let summaries: Vec<&StoredMessage> = items.iter().filter(|m| m.compaction.is_some()).collect();
    assert_eq!(summaries.len(), 1, "exactly one summary");
    assert_eq!(summaries[0].id, winner.id);
    assert_eq!(context_seqs(&store, &conv.id).await, [3, 4]);
}
