//! Conversation listings and search, and usage aggregation (the admin console, `/v1/conversations`).

use std::sync::Arc;

use moltbot_core::{
    Conversation, ConversationQuery, ConversationSummary, MessageStatus, NewMessage, Role, Store, StoreError,
    UsageGroupBy, UsageQuery, UsageRecord, UsageRow, ids,
};

use crate::harness::{TestDb, meta, msg, user};

async fn conversation(store: &Arc<dyn Store>, owner: &str, created_at: i64) -> Conversation {
    let mut tx = store.begin().await.unwrap();
    let conv = tx
        .create_conversation(owner, meta(serde_json::json!({})), created_at)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    conv
}

async fn append_at(store: &Arc<dyn Store>, conv: &Conversation, messages: &[NewMessage], at: i64) {
    let mut tx = store.begin().await.unwrap();
    tx.append_messages(&conv.id, messages, at).await.unwrap();
    tx.commit().await.unwrap();
}

fn reply(content: &str, model: &str) -> NewMessage {
    let mut m = msg(Role::Assistant, content, MessageStatus::Completed);
    m.meta.model = Some(model.into());
    m
}

fn query(owner: Option<&str>) -> ConversationQuery {
    ConversationQuery {
        owner: owner.map(str::to_owned),
        limit: 50,
        ..ConversationQuery::default()
    }
}

async fn ids_of(store: &Arc<dyn Store>, q: ConversationQuery) -> Vec<String> {
    let (page, has_more) = store.list_conversations(&q).await.unwrap();
    assert!(!has_more, "{q:?}");
    page.into_iter().map(|s| s.conversation.id).collect()
}

pub async fn conversations_are_listed_and_searched(db: TestDb) {
    let store = db.migrated().await;
    // alice: c1 (active at 1100), c2 and c4 (no messages, created at 1200), c3 (active at 1350).
    let c1 = conversation(&store, "alice", 1000).await;
    append_at(
        &store,
        &c1,
        &[
            msg(Role::System, "You are terse.", MessageStatus::Completed),
            user("  Hello \n\t World   again "),
            reply("ffs and 100 percent", "m-a"),
        ],
        1100,
    )
    .await;
    let c2 = conversation(&store, "alice", 1200).await;
    let c3 = conversation(&store, "alice", 900).await;
    append_at(&store, &c3, &[user("50% off_sale"), reply("ok", "m-b")], 1300).await;
    append_at(&store, &c3, &[user("more"), reply("sure", "m-a")], 1350).await;
    let c4 = conversation(&store, "alice", 1200).await;
    // bob: b1 (active at 1500).
    let b1 = conversation(&store, "bob", 1000).await;
    append_at(&store, &b1, &[user("hello bob")], 1500).await;

    // Newest activity first; equal activity by id, descending.
    let (tie_hi, tie_lo) = if c2.id > c4.id { (&c2, &c4) } else { (&c4, &c2) };
    let alice_order = vec![c3.id.clone(), tie_hi.id.clone(), tie_lo.id.clone(), c1.id.clone()];
    let (page, has_more) = store.list_conversations(&query(Some("alice"))).await.unwrap();
    assert!(!has_more);
    assert_eq!(
        page.iter().map(|s| s.conversation.id.clone()).collect::<Vec<_>>(),
        alice_order
    );
    assert_eq!(
        page[0],
        ConversationSummary {
            conversation: c3.clone(),
            updated_at: 1350,
            message_count: 4,
            title: "50% off_sale".into(),
            models: vec!["m-a".into(), "m-b".into()],
        }
    );
    assert_eq!(
        (page[1].updated_at, page[1].message_count, page[1].title.as_str()),
        (1200, 0, "")
    );
    assert!(page[1].models.is_empty());
    assert_eq!(
        page[3],
        ConversationSummary {
            conversation: c1.clone(),
            updated_at: 1100,
            message_count: 3,
            title: "Hello World again".into(),
            models: vec!["m-a".into()],
        }
    );

    // Keyset pages: limit 1 walks the same order, `has_more` until the last.
    let mut walked = Vec::new();
    let mut after = None;
    loop {
        let q = ConversationQuery {
            limit: 1,
            after: after.clone(),
            ..query(Some("alice"))
        };
        let (page, has_more) = store.list_conversations(&q).await.unwrap();
        assert_eq!(page.len(), 1);
        walked.push(page[0].conversation.id.clone());
        after = Some(page[0].conversation.id.clone());
        if !has_more {
            break;
        }
    }
    assert_eq!(walked, alice_order);
    let q = ConversationQuery {
        limit: 2,
        after: Some(tie_hi.id.clone()),
        ..query(Some("alice"))
    };
    let (page, has_more) = store.list_conversations(&q).await.unwrap();
    assert!(!has_more);
    assert_eq!(page.len(), 2);
    assert_eq!(page[0].conversation.id, tie_lo.id);

    // Every owner.
    let all = ids_of(&store, query(None)).await;
    assert_eq!(all.len(), 5);
    assert_eq!(all[0], b1.id);
    assert!(ids_of(&store, query(Some("carol"))).await.is_empty());

    // Text: case-insensitive substring of any message; LIKE wildcards are literal.
    let text = |owner: Option<&str>, t: &str| ConversationQuery {
        text: Some(t.into()),
        ..query(owner)
    };
    assert_eq!(
        ids_of(&store, text(Some("alice"), "HELLO")).await,
        vec![c1.id.clone()]
    );
    assert_eq!(
        ids_of(&store, text(None, "hello")).await,
        vec![b1.id.clone(), c1.id.clone()]
    );
    assert_eq!(ids_of(&store, text(None, "terse")).await, vec![c1.id.clone()]);
    assert_eq!(ids_of(&store, text(None, "PERCENT")).await, vec![c1.id.clone()]);
    assert_eq!(ids_of(&store, text(None, "%")).await, vec![c3.id.clone()]);
    assert_eq!(ids_of(&store, text(None, "f_s")).await, vec![c3.id.clone()]);
    assert_eq!(ids_of(&store, text(None, "0% O")).await, vec![c3.id.clone()]);
    assert!(ids_of(&store, text(None, "x%")).await.is_empty());
    assert!(ids_of(&store, text(None, "\\")).await.is_empty());

    // Model.
    let model = |m: &str| ConversationQuery {
        model: Some(m.into()),
        ..query(None)
    };
    assert_eq!(ids_of(&store, model("m-b")).await, vec![c3.id.clone()]);
    assert_eq!(
        ids_of(&store, model("m-a")).await,
        vec![c3.id.clone(), c1.id.clone()]
    );
    assert!(ids_of(&store, model("m-z")).await.is_empty());

    // Last activity: `since` inclusive, `until` exclusive.
    let range = |since: Option<i64>, until: Option<i64>| ConversationQuery {
        since,
        until,
        ..query(Some("alice"))
    };
    assert_eq!(ids_of(&store, range(Some(1200), None)).await, alice_order[..3]);
    assert_eq!(ids_of(&store, range(None, Some(1200))).await, vec![c1.id.clone()]);
    assert_eq!(
        ids_of(&store, range(Some(1100), Some(1350))).await,
        alice_order[1..]
    );
    let combined = ConversationQuery {
        text: Some("sale".into()),
        model: Some("m-a".into()),
        since: Some(1300),
        ..query(Some("alice"))
    };
    assert_eq!(ids_of(&store, combined).await, vec![c3.id.clone()]);

    // A cursor that is not one of the owner's conversations.
    for (owner, after) in [(Some("alice"), b1.id.as_str()), (None, "conv_missing")] {
        let q = ConversationQuery {
            after: Some(after.into()),
            ..query(owner)
        };
        let err = store.list_conversations(&q).await.unwrap_err();
        assert!(matches!(err, StoreError::NotFound), "{err:?}");
    }

    // One summary, for its owner or for anyone.
    let b1_summary = store.conversation_summary(None, &b1.id).await.unwrap().unwrap();
    assert_eq!(b1_summary.conversation.owner, "bob");
    assert_eq!(
        (
            b1_summary.updated_at,
            b1_summary.message_count,
            b1_summary.title.as_str()
        ),
        (1500, 1, "hello bob")
    );
    assert_eq!(
        store.conversation_summary(Some("bob"), &b1.id).await.unwrap(),
        Some(b1_summary)
    );
    assert_eq!(
        store.conversation_summary(Some("alice"), &b1.id).await.unwrap(),
        None
    );
    assert_eq!(
        store.conversation_summary(None, "conv_missing").await.unwrap(),
        None
    );
}

pub async fn titles_are_collapsed_and_cut(db: TestDb) {
    let store = db.migrated().await;
    let conv = conversation(&store, "alice", 10).await;
    let long = format!("{}\n\n{}", "é".repeat(50), "word ".repeat(40));
    append_at(
        &store,
        &conv,
        &[reply("first", "m"), user(&long), user("second")],
        20,
    )
    .await;
    let summary = store
        .conversation_summary(Some("alice"), &conv.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(summary.title.chars().count(), 80);
    assert_eq!(
        summary.title,
        format!("{} {}", "é".repeat(50), "word ".repeat(6).trim_end())
    );
    assert_eq!(summary.title, ConversationSummary::title_from(&long));
}

fn record(owner: &str, model: &str, created_at: i64, tokens: (u32, u32), outcome: &str) -> UsageRecord {
    UsageRecord {
        id: ids::usage_id(),
        owner: owner.into(),
        conversation_id: None,
        request_id: None,
        model: model.into(),
        backend: None,
        prompt_tokens: tokens.0,
        completion_tokens: tokens.1,
        latency_ms: 1,
        outcome: outcome.into(),
        created_at,
    }
}

fn row(group: &str, requests: u64, errors: u64, prompt: u64, completion: u64) -> UsageRow {
    UsageRow {
        group: group.into(),
        requests,
        errors,
        prompt_tokens: prompt,
        completion_tokens: completion,
    }
}

pub async fn usage_is_aggregated(db: TestDb) {
    let store = db.migrated().await;
    // 2023-11-14 00:00:00 UTC.
    let day = 19_675 * 86_400;
    let mut tx = store.begin().await.unwrap();
    for r in [
        record("alice", "model-a", day + 10, (10, 5), "ok"),
        record("alice", "model-b", day + 86_399, (3, 0), "error"),
        record("bob", "model-a", day + 86_400, (1, 2), "ok"),
        record("bob", "model-a", day + 90_000, (4, 1), "cancelled"),
        // Outside [since, until).
        record("alice", "model-a", day - 1, (100, 100), "ok"),
        record("alice", "model-a", day + 2 * 86_400, (100, 100), "ok"),
    ] {
        tx.insert_usage(&r).await.unwrap();
    }
    tx.commit().await.unwrap();

    let q = |group_by, owner: Option<&str>| UsageQuery {
        group_by,
        since: day,
        until: day + 2 * 86_400,
        owner: owner.map(str::to_owned),
    };
    assert_eq!(
        store.aggregate_usage(&q(UsageGroupBy::Day, None)).await.unwrap(),
        vec![row("2023-11-14", 2, 1, 13, 5), row("2023-11-15", 2, 0, 5, 3)]
    );
    assert_eq!(
        store.aggregate_usage(&q(UsageGroupBy::Key, None)).await.unwrap(),
        vec![row("alice", 2, 1, 13, 5), row("bob", 2, 0, 5, 3)]
    );
    assert_eq!(
        store
            .aggregate_usage(&q(UsageGroupBy::Model, None))
            .await
            .unwrap(),
        vec![row("model-a", 3, 0, 15, 8), row("model-b", 1, 1, 3, 0)]
    );
    assert_eq!(
        store
            .aggregate_usage(&q(UsageGroupBy::Model, Some("bob")))
            .await
            .unwrap(),
        vec![row("model-a", 2, 0, 5, 3)]
    );
    assert!(
        store
            .aggregate_usage(&q(UsageGroupBy::Day, Some("carol")))
            .await
            .unwrap()
            .is_empty()
    );
    let wide = UsageQuery {
        since: 0,
        until: i64::MAX,
        ..q(UsageGroupBy::Key, None)
    };
    assert_eq!(
        store.aggregate_usage(&wide).await.unwrap(),
        vec![row("alice", 4, 1, 213, 205), row("bob", 2, 0, 5, 3)]
    );
}
