//! OpenAI's Conversations API, continuing stored conversations, and grouping client-sent history.

mod common;

use common::*;
use moltbot_core::ItemQuery;
use moltbot_testkit::Script;
use serde_json::{Value, json};

#[tokio::test]
async fn conversations_crud_and_items_pagination() {
    let fake = fake().await;
    let srv = start(&fake).await;
    let r = srv
        .post(
            "/v1/conversations",
            json!({"metadata": {"topic": "demo"},
                   "items": [{"type": "message", "role": "user", "content": "Hello!"},
                             {"role": "assistant", "content": [{"type": "output_text", "text": "Hi."}]}]}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let conv: Value = r.json().await.unwrap();
    let id = conv["id"].as_str().unwrap();
    assert!(id.starts_with("conv_"));
    assert_eq!(conv["object"], "conversation");
    assert_eq!(conv["metadata"]["topic"], "demo");
    assert!(conv["created_at"].as_i64().unwrap() > 1_700_000_000);

    let got: Value = srv
        .get(&format!("/v1/conversations/{id}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(got, conv);
    let upd: Value = srv
        .post(
            &format!("/v1/conversations/{id}"),
            json!({"metadata": {"topic": "changed"}}),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(upd["metadata"]["topic"], "changed");

    let added: Value = srv
        .post(
            &format!("/v1/conversations/{id}/items"),
            json!({"items": [{"role": "user", "content": "three"}, {"role": "user", "content": "four"}]}),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(added["data"].as_array().unwrap().len(), 2);

    // Default order is desc; paginate with limit + after.
    let page1: Value = srv
        .get(&format!("/v1/conversations/{id}/items?limit=3"))
        .await
        .json()
        .await
        .unwrap();
    let texts = |v: &Value| -> Vec<String> {
        v["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["content"][0]["text"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(texts(&page1), ["four", "three", "Hi."]);
    assert_eq!(page1["has_more"], true);
    assert_eq!(page1["data"][2]["content"][0]["type"], "output_text");
    let after = page1["last_id"].as_str().unwrap();
    let page2: Value = srv
        .get(&format!("/v1/conversations/{id}/items?limit=3&after={after}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(texts(&page2), ["Hello!"]);
    assert_eq!(page2["has_more"], false);
    let asc: Value = srv
        .get(&format!("/v1/conversations/{id}/items?order=asc"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(texts(&asc), ["Hello!", "Hi.", "three", "four"]);

    let item_id = asc["data"][2]["id"].as_str().unwrap();
    let item: Value = srv
        .get(&format!("/v1/conversations/{id}/items/{item_id}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(item["content"][0]["text"], "three");
    assert_eq!(item["type"], "message");
    let r = srv
        .http
        .delete(srv.url(&format!("/v1/conversations/{id}/items/{item_id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = srv.get(&format!("/v1/conversations/{id}/items/{item_id}")).await;
    assert_eq!(r.status(), 404);

    // Bad input on this API names the field too.
    let r = srv.get(&format!("/v1/conversations/{id}/items?limit=0")).await;
    assert_eq!(r.status(), 400);
    assert_eq!(r.json::<Value>().await.unwrap()["error"]["param"], "limit");
    let r = srv.get(&format!("/v1/conversations/{id}/items?limit=abc")).await;
    assert_eq!(r.status(), 400);
    let r = srv
        .post(
            &format!("/v1/conversations/{id}/items"),
            json!({"items": [{"role": "bogus", "content": "x"}]}),
        )
        .await;
    assert_eq!(r.status(), 400);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["param"],
        "items[0].role"
    );

    let del: Value = srv
        .http
        .delete(srv.url(&format!("/v1/conversations/{id}")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        del,
        json!({"id": id, "object": "conversation.deleted", "deleted": true})
    );
    assert_eq!(srv.get(&format!("/v1/conversations/{id}")).await.status(), 404);
    srv.stop().await;
}

#[tokio::test]
async fn continuing_a_conversation_prepends_stored_history() {
    let fake = fake_with(Script::echo()).await;
    let srv = start(&fake).await;
    let conv: Value = srv
        .post(
            "/v1/conversations",
            json!({"items": [{"role": "system", "content": "Be brief."}]}),
        )
        .await
        .json()
        .await
        .unwrap();
    let id = conv["id"].as_str().unwrap();
    let (s, a) = srv
        .chat(json!({"model": "gpt-test", "conversation": id, "messages": [user("first")]}))
        .await;
    assert_eq!(s, 200);
    assert_eq!(a["choices"][0]["message"]["content"], "echo: first");
    let r = srv
        .http
        .post(srv.url("/v1/chat/completions"))
        .header("x-moltbot-conversation", id)
        .json(&json!({"model": "gpt-test", "messages": [user("second")]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-moltbot-conversation"], id);
    let sent = &fake.chat_requests()[1].body["messages"];
    let roles: Vec<&str> = sent
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["system", "user", "assistant", "user"]);
    assert_eq!(sent[2]["content"], "echo: first");
    let items: Value = srv
        .get(&format!("/v1/conversations/{id}/items?order=asc"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(items["data"].as_array().unwrap().len(), 5);
    srv.stop().await;
}

#[tokio::test]
async fn history_is_trimmed_to_the_context_budget() {
    let fake = fake_with(Script::echo()).await;
    let srv = start_with(&fake, "", |c| {
        c.models[0].context_window = 400;
        c.models[0].max_tokens = 100;
        // Plain trimming (compaction has its own tests in memory.rs).
        c.memory.enabled = false;
    })
    .await;
    let conv: Value = srv
        .post(
            "/v1/conversations",
            json!({"items": [{"role": "system", "content": "Always kept."}]}),
        )
        .await
        .json()
        .await
        .unwrap();
    let id = conv["id"].as_str().unwrap();
    for i in 0..12 {
        let text = format!("message {i} {}", "filler ".repeat(20));
        let (s, _) = srv
            .chat(json!({"model": "gpt-test", "conversation": id, "messages": [user(&text)]}))
            .await;
        assert_eq!(s, 200);
    }
    let requests = fake.chat_requests();
    let last = &requests.last().unwrap().body["messages"];
    let msgs = last.as_array().unwrap();
    assert_eq!(
        msgs[0]["content"], "Always kept.",
        "instructions survive trimming"
    );
    assert!(
        msgs.len() < 1 + 2 * 12,
        "old history was dropped: {} messages",
        msgs.len()
    );
    assert!(
        msgs.last().unwrap()["content"]
            .as_str()
            .unwrap()
            .starts_with("message 11")
    );
    srv.stop().await;
}

#[tokio::test]
async fn client_sent_history_is_grouped_and_stored_once() {
    let fake = fake_with(Script::echo()).await;
    let srv = start(&fake).await;
    let mut messages = vec![json!({"role": "system", "content": "sys"}), user("one")];
    let mut conv_ids = Vec::new();
    for turn in ["two", "three", "four"] {
        let r = srv
            .post(
                "/v1/chat/completions",
                json!({"model": "gpt-test", "messages": messages}),
            )
            .await;
        assert_eq!(r.status(), 200);
        conv_ids.push(r.headers()["x-moltbot-conversation"].to_str().unwrap().to_owned());
        let body: Value = r.json().await.unwrap();
        messages.push(json!({"role": "assistant", "content": body["choices"][0]["message"]["content"]}));
        messages.push(user(turn));
    }
    assert!(
        conv_ids.iter().all(|c| c == &conv_ids[0]),
        "one conversation: {conv_ids:?}"
    );
    let (items, _) = srv
        .state
        .store
        .list_messages(
            &conv_ids[0],
            &ItemQuery {
                after: None,
                limit: 100,
                ascending: true,
            },
        )
        .await
        .unwrap();
    // sys, one, echo, two, echo, three, echo: each message stored exactly once.
    let texts: Vec<&str> = items.iter().map(|m| m.content.as_str()).collect();
    assert_eq!(
        texts,
        [
            "sys",
            "one",
            "echo: one",
            "two",
            "echo: two",
            "three",
            "echo: three"
        ]
    );

    // An edited history starts a new conversation instead of corrupting this one.
    let edited = vec![
        user("one"),
        json!({"role": "assistant", "content": "something else"}),
        user("x"),
    ];
    let r = srv
        .post(
            "/v1/chat/completions",
            json!({"model": "gpt-test", "messages": edited}),
        )
        .await;
    assert_ne!(
        r.headers()["x-moltbot-conversation"].to_str().unwrap(),
        conv_ids[0]
    );
    srv.stop().await;
}

#[tokio::test]
async fn recording_can_be_turned_off_but_usage_is_kept() {
    let fake = fake().await;
    let srv = start_with(&fake, "", |c| c.store.record_exchanges = false).await;
    let r = srv
        .post(
            "/v1/chat/completions",
            json!({"model": "gpt-test", "messages": [user("private")]}),
        )
        .await;
    assert_eq!(r.status(), 200);
    assert!(r.headers().get("x-moltbot-conversation").is_none());
    let usage = srv.state.store.list_usage(&srv.key_id, 10).await.unwrap();
    assert_eq!(usage.len(), 1);
    assert!(usage[0].conversation_id.is_none());
    srv.stop().await;
}

#[tokio::test]
async fn a_stored_conversation_survives_a_restart() {
    let fake = fake_with(Script::echo()).await;
    let srv = start(&fake).await;
    let conv: Value = srv
        .post("/v1/conversations", json!({}))
        .await
        .json()
        .await
        .unwrap();
    let id = conv["id"].as_str().unwrap().to_owned();
    let (s, _) = srv
        .chat(json!({"model": "gpt-test", "conversation": id, "messages": [user("remember me")]}))
        .await;
    assert_eq!(s, 200);
    let cfg = (*srv.state.config).clone();
    let mut srv = srv;
    srv.shutdown();
    let _ = (&mut srv.handle).await;
    let dir = std::mem::replace(&mut srv.dir, tempfile::tempdir().unwrap());
    let secret = srv.secret.clone();
    let mut srv2 = start_config(cfg, dir).await;
    // The same key, from the database, after the restart: it owns the conversation.
    srv2.http = client(&secret);
    let (s, _) = srv2
        .chat(json!({"model": "gpt-test", "conversation": id, "messages": [user("again")]}))
        .await;
    assert_eq!(s, 200);
    let requests = fake.chat_requests();
    let sent = &requests.last().unwrap().body["messages"];
    assert_eq!(sent[0]["content"], "remember me");
    assert_eq!(sent[1]["content"], "echo: remember me");
    srv2.stop().await;
}

#[tokio::test]
async fn idempotent_stream_replays_the_same_events() {
    let fake = fake().await;
    let srv = start(&fake).await;
    let send = || {
        srv.http
            .post(srv.url("/v1/chat/completions"))
            .header("idempotency-key", "stream-1")
            .json(&json!({"model": "gpt-test", "messages": [user("hi")], "stream": true}))
            .send()
    };
    let first = send().await.unwrap().text().await.unwrap();
    let second = send().await.unwrap();
    assert_eq!(second.headers()["idempotent-replayed"], "true");
    assert!(
        second.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    assert_eq!(second.text().await.unwrap(), first);
    assert_eq!(fake.chat_requests().len(), 1);
    srv.stop().await;
}
