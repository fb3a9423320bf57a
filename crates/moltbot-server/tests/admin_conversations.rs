//! The admin API for conversations and usage (`/admin/api/conversations…`, `/admin/api/usage`) and
//! `GET /v1/conversations`, over conversations created by real chats against the fake upstream.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::*;
use moltbot_core::{ApiKey, ConversationQuery, KeyLimits, Scope};
use moltbot_testkit::Script;
use serde_json::{Value, json};

/// Tokens a chat reported, summed per group.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
struct Tokens {
    requests: u64,
    prompt: u64,
    completion: u64,
}

struct Fixture {
    srv: TestServer,
    _fake: moltbot_testkit::FakeUpstream,
    alice: (ApiKey, reqwest::Client),
    bob: (ApiKey, reqwest::Client),
    /// alice: "Hello Alpha world" on gpt-test; "Bravo tango" on gpt-other.
    a1: String,
    a2: String,
    /// bob: "hello charlie" on gpt-test, then "second Delta" on gpt-other.
    b1: String,
    /// The test key's failed turn (upstream 400).
    failed: String,
    by_key: BTreeMap<String, Tokens>,
    by_model: BTreeMap<String, Tokens>,
}

async fn named_key(srv: &TestServer, name: &str) -> (ApiKey, reqwest::Client) {
    let (key, secret) = ApiKey::generate(
        name,
        vec![Scope::Chat, Scope::Conversations],
        KeyLimits::default(),
        srv.state.clock.now_secs(),
        None,
    );
    srv.state.store.create_api_key(&key).await.unwrap();
    (key, client(&secret))
}

impl Fixture {
    async fn chat(&mut self, who: &str, body: Value) -> String {
        let (owner, c) = match who {
            "alice" => (self.alice.0.id.clone(), &self.alice.1),
            _ => (self.bob.0.id.clone(), &self.bob.1),
        };
        let r = c
            .post(self.srv.url("/v1/chat/completions"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let conv = r.headers()["x-moltbot-conversation"].to_str().unwrap().to_owned();
        let reply: Value = r.json().await.unwrap();
        let usage = &reply["usage"];
        let tokens = Tokens {
            requests: 1,
            prompt: usage["prompt_tokens"].as_u64().unwrap(),
            completion: usage["completion_tokens"].as_u64().unwrap(),
        };
        assert!(tokens.completion > 0);
        for (map, group) in [
            (&mut self.by_key, owner),
            (&mut self.by_model, body["model"].as_str().unwrap().to_owned()),
        ] {
            let t = map.entry(group).or_default();
            t.requests += 1;
            t.prompt += tokens.prompt;
            t.completion += tokens.completion;
        }
        conv
    }
}

async fn fixture() -> Fixture {
    let fake = fake_with(Script::echo()).await;
    let other = format!(
        r#"
[[models]]
name = "gpt-other"
endpoint = "{}"
api_key = "{KEY}"
upstream_model = "fake-model"
context_window = 4096
max_tokens = 1024
"#,
        fake.base_url()
    );
    let srv = start_with(&fake, &other, |_| {}).await;
    let alice = named_key(&srv, "alice").await;
    let bob = named_key(&srv, "bob").await;
    let mut f = Fixture {
        srv,
        _fake: fake,
        alice,
        bob,
        a1: String::new(),
        a2: String::new(),
        b1: String::new(),
        failed: String::new(),
        by_key: BTreeMap::new(),
        by_model: BTreeMap::new(),
    };
    f.a1 = f
        .chat(
            "alice",
            json!({"model": "gpt-test", "messages": [user("Hello   Alpha\nworld")]}),
        )
        .await;
    f.a2 = f
        .chat(
            "alice",
            json!({"model": "gpt-other", "messages": [user("Bravo tango")]}),
        )
        .await;
    f.b1 = f
        .chat(
            "bob",
            json!({"model": "gpt-test", "messages": [user("hello charlie")]}),
        )
        .await;
    let again = f
        .chat(
            "bob",
            json!({"model": "gpt-other", "conversation": f.b1, "messages": [user("second Delta")]}),
        )
        .await;
    assert_eq!(again, f.b1);

    // A failed turn under the test key: recorded as an error.
    f._fake.set_default(Script::status(400));
    let r = f
        .srv
        .post(
            "/v1/chat/completions",
            json!({"model": "gpt-test", "messages": [user("doomed request")]}),
        )
        .await;
    assert!(r.status().is_client_error() || r.status().is_server_error());
    let query = ConversationQuery {
        owner: Some(f.srv.key_id.clone()),
        limit: 10,
        ..ConversationQuery::default()
    };
    let (mine, _) = f.srv.state.store.list_conversations(&query).await.unwrap();
    assert_eq!(mine.len(), 1);
    f.failed = mine[0].conversation.id.clone();
    f._fake.set_default(Script::echo());
    f
}

async fn admin_get(srv: &TestServer, path_and_query: impl AsRef<str>) -> (u16, Value) {
    let r = srv
        .http
        .get(srv.admin_url(path_and_query.as_ref()))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

fn ids(list: &Value) -> BTreeSet<String> {
    list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap().to_owned())
        .collect()
}

fn set(items: &[&String]) -> BTreeSet<String> {
    items.iter().map(|s| (*s).clone()).collect()
}

#[tokio::test]
async fn admin_lists_searches_views_exports_and_deletes_conversations() {
    let f = fixture().await;
    let srv = &f.srv;

    // Everything, newest activity first, with owner and key name.
    let (status, all) = admin_get(srv, "/admin/api/conversations").await;
    assert_eq!(status, 200, "{all}");
    assert_eq!(all["object"], "list");
    assert_eq!(all["has_more"], false);
    assert_eq!(ids(&all), set(&[&f.a1, &f.a2, &f.b1, &f.failed]));
    let data = all["data"].as_array().unwrap();
    let order: Vec<(i64, &str)> = data
        .iter()
        .map(|c| (c["updated_at"].as_i64().unwrap(), c["id"].as_str().unwrap()))
        .collect();
    let mut sorted = order.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    assert_eq!(order, sorted);
    assert_eq!(all["last_id"], data.last().unwrap()["id"]);
    let b1 = data.iter().find(|c| c["id"] == f.b1.as_str()).unwrap();
    assert_eq!(b1["object"], "conversation");
    assert_eq!(b1["owner"], f.bob.0.id.as_str());
    assert_eq!(b1["key_name"], "bob");
    assert_eq!(b1["title"], "hello charlie");
    assert_eq!(b1["message_count"], 4);
    assert_eq!(b1["models"], json!(["gpt-other", "gpt-test"]));
    assert_eq!(b1["metadata"], json!({}));
    let a1 = data.iter().find(|c| c["id"] == f.a1.as_str()).unwrap();
    assert_eq!(a1["title"], "Hello Alpha world");
    assert_eq!(a1["key_name"], "alice");

    // Search by text (case-insensitive, user and assistant messages), key, model, time.
    let search = |q: &str| admin_get(srv, format!("/admin/api/conversations?{q}"));
    assert_eq!(ids(&search("q=ALPHA").await.1), set(&[&f.a1]));
    assert_eq!(ids(&search("q=hello").await.1), set(&[&f.a1, &f.b1]));
    assert_eq!(ids(&search("q=echo%3A%20second").await.1), set(&[&f.b1]));
    assert!(ids(&search("q=nowhere").await.1).is_empty());
    assert_eq!(
        ids(&search(&format!("key_id={}", f.alice.0.id)).await.1),
        set(&[&f.a1, &f.a2])
    );
    assert_eq!(ids(&search("model=gpt-other").await.1), set(&[&f.a2, &f.b1]));
    assert_eq!(
        ids(
            &search(&format!("model=gpt-test&key_id={}&q=CHARLIE", f.bob.0.id))
                .await
                .1
        ),
        set(&[&f.b1])
    );
    let now = srv.state.clock.now_secs();
    assert_eq!(ids(&search(&format!("since={}", now - 600)).await.1).len(), 4);
    assert!(ids(&search(&format!("since={}", now + 600)).await.1).is_empty());
    assert!(ids(&search(&format!("until={}", now - 600)).await.1).is_empty());
    assert_eq!(ids(&search("since=2020-01-01&until=2999-12-31").await.1).len(), 4);
    assert!(ids(&search("until=2020-01-01").await.1).is_empty());

    // Keyset pages.
    let (_, p1) = search("limit=3").await;
    assert_eq!(p1["data"].as_array().unwrap().len(), 3);
    assert_eq!(p1["has_more"], true);
    let (_, p2) = search(&format!("limit=3&after={}", p1["last_id"].as_str().unwrap())).await;
    assert_eq!(p2["has_more"], false);
    let mut walked = ids(&p1);
    walked.extend(ids(&p2));
    assert_eq!(walked, ids(&all));

    // The transcript.
    let (status, detail) = admin_get(srv, &format!("/admin/api/conversations/{}", f.b1)).await;
    assert_eq!(status, 200, "{detail}");
    assert_eq!(detail["id"], f.b1.as_str());
    assert_eq!(detail["owner"], f.bob.0.id.as_str());
    assert_eq!(detail["key_name"], "bob");
    assert_eq!(detail["title"], "hello charlie");
    let messages = detail["messages"].as_array().unwrap();
    let roles: Vec<&str> = messages.iter().map(|m| m["role"].as_str().unwrap()).collect();
    assert_eq!(roles, ["user", "assistant", "user", "assistant"]);
    assert_eq!(messages[0]["content"], "hello charlie");
    assert_eq!(messages[1]["content"], "echo: hello charlie");
    assert_eq!(messages[2]["content"], "second Delta");
    assert_eq!(messages[3]["content"], "echo: second Delta");
    assert_eq!(messages[1]["model"], "gpt-test");
    assert_eq!(messages[3]["model"], "gpt-other");
    assert_eq!(messages[3]["finish_reason"], "stop");
    assert!(messages[3]["completion_tokens"].as_u64().unwrap() > 0);
    assert!(messages[0]["prompt_tokens"].is_null());
    assert!(messages.iter().all(|m| m["status"] == "completed"));
    let (_, failed) = admin_get(srv, &format!("/admin/api/conversations/{}", f.failed)).await;
    assert_eq!(failed["messages"][0]["status"], "failed");
    assert_eq!(failed["key_name"], "test");

    // Exports: JSON is the detail object; Markdown has role headings.
    let r = srv
        .http
        .get(srv.admin_url(&format!("/admin/api/conversations/{}/export?format=json", f.b1)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["content-disposition"],
        format!("attachment; filename=\"{}.json\"", f.b1).as_str()
    );
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
    assert_eq!(r.json::<Value>().await.unwrap(), detail);
    let r = srv
        .http
        .get(srv.admin_url(&format!(
            "/admin/api/conversations/{}/export?format=markdown",
            f.b1
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["content-disposition"],
        format!("attachment; filename=\"{}.md\"", f.b1).as_str()
    );
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/markdown")
    );
    let md = r.text().await.unwrap();
    assert!(md.starts_with("# hello charlie\n"), "{md}");
    assert!(md.contains(&format!("- Key: bob (`{}`)", f.bob.0.id)), "{md}");
    let expected = "## User\n\nhello charlie\n\n## Assistant (gpt-test)\n\necho: hello charlie\n\n\
                    ## User\n\nsecond Delta\n\n## Assistant (gpt-other)\n\necho: second Delta\n";
    assert!(md.ends_with(expected), "{md}");

    // Delete (any owner), then it is gone everywhere.
    let r = srv
        .http
        .delete(srv.admin_url(&format!("/admin/api/conversations/{}", f.b1)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"id": f.b1, "object": "conversation.deleted", "deleted": true})
    );
    for path in [
        format!("/admin/api/conversations/{}", f.b1),
        format!("/admin/api/conversations/{}/export?format=markdown", f.b1),
    ] {
        let (status, body) = admin_get(srv, &path).await;
        assert_eq!(status, 404, "{path}");
        assert_eq!(body["error"]["code"], "conversation_not_found");
    }
    let r = srv
        .http
        .delete(srv.admin_url(&format!("/admin/api/conversations/{}", f.b1)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert!(!ids(&admin_get(srv, "/admin/api/conversations").await.1).contains(&f.b1));
    let r = f
        .bob
        .1
        .get(srv.url(&format!("/v1/conversations/{}", f.b1)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);

    // A key without the admin scope gets 403.
    let r = f
        .alice
        .1
        .get(srv.admin_url("/admin/api/conversations"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    f.srv.stop().await;
}

#[tokio::test]
async fn v1_conversations_lists_only_the_callers_own() {
    let f = fixture().await;
    let srv = &f.srv;
    let list = |c: &reqwest::Client, q: &str| {
        let url = srv.url(&format!("/v1/conversations{q}"));
        let c = c.clone();
        async move {
            let r = c.get(url).send().await.unwrap();
            assert_eq!(r.status(), 200);
            r.json::<Value>().await.unwrap()
        }
    };
    let alice = list(&f.alice.1, "").await;
    assert_eq!(alice["object"], "list");
    assert_eq!(ids(&alice), set(&[&f.a1, &f.a2]));
    let first = &alice["data"][0];
    for field in ["owner", "key_name", "messages"] {
        assert!(first.get(field).is_none(), "{field} leaked: {first}");
    }
    let a2 = alice["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == f.a2.as_str())
        .unwrap();
    assert_eq!(a2["object"], "conversation");
    assert_eq!(a2["title"], "Bravo tango");
    assert_eq!(a2["message_count"], 2);
    assert_eq!(a2["models"], json!(["gpt-other"]));
    assert!(a2["updated_at"].as_i64().unwrap() >= a2["created_at"].as_i64().unwrap());

    let bob = list(&f.bob.1, "").await;
    assert_eq!(ids(&bob), set(&[&f.b1]));
    assert_eq!(bob["has_more"], false);
    assert_eq!(bob["last_id"], f.b1.as_str());

    let p1 = list(&f.alice.1, "?limit=1").await;
    assert_eq!(p1["has_more"], true);
    let p2 = list(
        &f.alice.1,
        &format!("?limit=1&after={}", p1["last_id"].as_str().unwrap()),
    )
    .await;
    assert_eq!(p2["has_more"], false);
    assert_eq!(p1["data"][0]["id"], alice["data"][0]["id"]);
    assert_eq!(p2["data"][0]["id"], alice["data"][1]["id"]);

    // Another owner's conversation is not a cursor here.
    let r = f
        .alice
        .1
        .get(srv.url(&format!("/v1/conversations?after={}", f.b1)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(r.json::<Value>().await.unwrap()["error"]["param"], "after");
    f.srv.stop().await;
}

fn totals(rows: &[Value]) -> Tokens {
    Tokens {
        requests: rows.iter().map(|r| r["requests"].as_u64().unwrap()).sum(),
        prompt: rows.iter().map(|r| r["prompt_tokens"].as_u64().unwrap()).sum(),
        completion: rows
            .iter()
            .map(|r| r["completion_tokens"].as_u64().unwrap())
            .sum(),
    }
}

#[tokio::test]
async fn usage_is_grouped_by_day_key_and_model_as_json_and_csv() {
    let f = fixture().await;
    let srv = &f.srv;
    let usage = |q: &str| admin_get(srv, format!("/admin/api/usage{q}"));
    let reported = f.by_key.values().fold(Tokens::default(), |a, t| Tokens {
        requests: a.requests + t.requests,
        prompt: a.prompt + t.prompt,
        completion: a.completion + t.completion,
    });
    assert_eq!(reported.requests, 4);
    let test_key = srv.key_id.as_str();
    // The failed turn: one request, one error, its prompt tokens, no completion.
    let failed = |rows: &[Value]| -> Tokens {
        let all = totals(rows);
        Tokens {
            requests: all.requests - reported.requests,
            prompt: all.prompt - reported.prompt,
            completion: all.completion - reported.completion,
        }
    };

    // By day (the default): today, all turns.
    let (status, days) = usage("").await;
    assert_eq!(status, 200, "{days}");
    assert_eq!(days["object"], "list");
    assert_eq!(days["group_by"], "day");
    let rows = days["data"].as_array().unwrap();
    let today = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    assert!(rows.iter().any(|r| r["group"] == today[..10]), "{days}");
    assert_eq!(failed(rows).requests, 1);
    assert_eq!(failed(rows).completion, 0);
    assert_eq!(rows.iter().map(|r| r["errors"].as_u64().unwrap()).sum::<u64>(), 1);
    for r in rows {
        assert_eq!(
            r["total_tokens"].as_u64().unwrap(),
            r["prompt_tokens"].as_u64().unwrap() + r["completion_tokens"].as_u64().unwrap()
        );
        assert!(r.get("key_name").is_none());
    }

    // By key: each key's totals are what its chats reported.
    let (_, keys) = usage("?group_by=key").await;
    assert_eq!(keys["group_by"], "key");
    let rows = keys["data"].as_array().unwrap();
    assert_eq!(rows.len(), 3, "{keys}");
    for (key, name) in [(&f.alice.0, "alice"), (&f.bob.0, "bob")] {
        let row = rows.iter().find(|r| r["group"] == key.id.as_str()).unwrap();
        assert_eq!(row["key_name"], name);
        assert_eq!(totals(std::slice::from_ref(row)), f.by_key[&key.id]);
        assert_eq!(row["errors"], 0);
    }
    let test_row = rows.iter().find(|r| r["group"] == test_key).unwrap();
    assert_eq!(
        (test_row["requests"].as_u64(), test_row["errors"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(test_row["key_name"], "test");

    // By model, and filtered to one key.
    let (_, models) = usage("?group_by=model").await;
    let rows = models["data"].as_array().unwrap();
    let other = rows.iter().find(|r| r["group"] == "gpt-other").unwrap();
    assert_eq!(totals(std::slice::from_ref(other)), f.by_model["gpt-other"]);
    let test = rows.iter().find(|r| r["group"] == "gpt-test").unwrap();
    assert_eq!(
        test["requests"].as_u64().unwrap(),
        f.by_model["gpt-test"].requests + 1
    );
    assert_eq!(test["errors"], 1);
    let (_, bob) = usage(&format!("?group_by=model&key_id={}", f.bob.0.id)).await;
    assert_eq!(totals(bob["data"].as_array().unwrap()), f.by_key[&f.bob.0.id]);
    let (_, none) = usage("?since=2020-01-01&until=2020-01-31").await;
    assert!(none["data"].as_array().unwrap().is_empty());

    // CSV: a header row, then the same numbers.
    let r = srv
        .http
        .get(srv.admin_url("/admin/api/usage?group_by=key&format=csv"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/csv")
    );
    assert_eq!(
        r.headers()["content-disposition"],
        "attachment; filename=\"usage-by-key.csv\""
    );
    let body = r.text().await.unwrap();
    let mut reader = csv::Reader::from_reader(body.as_bytes());
    assert_eq!(
        reader.headers().unwrap().iter().collect::<Vec<_>>(),
        [
            "group",
            "key_name",
            "requests",
            "errors",
            "prompt_tokens",
            "completion_tokens",
            "total_tokens"
        ]
    );
    let mut csv_by_key = BTreeMap::new();
    for record in reader.records() {
        let record = record.unwrap();
        let n = |i: usize| record[i].parse::<u64>().unwrap();
        csv_by_key.insert(
            record[0].to_owned(),
            (
                record[1].to_owned(),
                Tokens {
                    requests: n(2),
                    prompt: n(4),
                    completion: n(5),
                },
                n(6),
            ),
        );
    }
    assert_eq!(csv_by_key.len(), 3);
    for key in [&f.alice.0, &f.bob.0] {
        let (name, tokens, total) = &csv_by_key[&key.id];
        assert_eq!(name, &key.name);
        assert_eq!(tokens, &f.by_key[&key.id]);
        assert_eq!(*total, tokens.prompt + tokens.completion);
    }
    let r = srv
        .http
        .get(srv.admin_url("/admin/api/usage?format=csv"))
        .send()
        .await
        .unwrap();
    let body = r.text().await.unwrap();
    assert!(body.starts_with("group,requests,errors,prompt_tokens,completion_tokens,total_tokens\n"));

    // Usage outlives a deleted conversation.
    let r = srv
        .http
        .delete(srv.admin_url(&format!("/admin/api/conversations/{}", f.a1)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let (_, after) = usage("?group_by=key").await;
    assert_eq!(after["data"], keys["data"]);
    f.srv.stop().await;
}

#[tokio::test]
async fn bad_parameters_are_400_naming_the_parameter() {
    let fake = fake_with(Script::echo()).await;
    let srv = start(&fake).await;
    for (path, param) in [
        ("/admin/api/conversations?limit=0", "limit"),
        ("/admin/api/conversations?limit=1000", "limit"),
        ("/admin/api/conversations?limit=ten", "limit"),
        ("/admin/api/conversations?since=yesterday", "since"),
        ("/admin/api/conversations?until=2026-02-30", "until"),
        ("/admin/api/conversations?since=200&until=100", "until"),
        ("/admin/api/conversations?after=conv_missing", "after"),
        ("/admin/api/conversations/conv_x/export?format=pdf", "format"),
        ("/admin/api/usage?group_by=week", "group_by"),
        ("/admin/api/usage?format=xml", "format"),
        ("/admin/api/usage?since=soon", "since"),
        ("/admin/api/usage?since=2026-01-02&until=2026-01-01", "until"),
    ] {
        let (status, body) = admin_get(&srv, path).await;
        assert_eq!(status, 400, "{path}: {body}");
        assert_eq!(body["error"]["param"], param, "{path}: {body}");
        assert_eq!(body["error"]["type"], "invalid_request_error", "{path}");
    }
    for (query, param) in [
        ("?limit=0", "limit"),
        ("?limit=abc", "limit"),
        ("?after=conv_nope", "after"),
    ] {
        let r = srv.get(&format!("/v1/conversations{query}")).await;
        assert_eq!(r.status(), 400, "{query}");
        assert_eq!(
            r.json::<Value>().await.unwrap()["error"]["param"],
            param,
            "{query}"
        );
    }
    let (status, body) = admin_get(&srv, "/admin/api/conversations/conv_missing").await;
    assert_eq!(status, 404);
    assert_eq!(body["error"]["param"], "conversation");
    srv.stop().await;
}
