//! Conversation memory (docs/memory.md): a stored conversation that outgrows its model's context is
//! compacted into a summary instead of losing its beginning. Checked through what the fake upstreams
//! receive. Every case runs on SQLite and, when `MOLTBOT_TEST_POSTGRES_URL` is set, on PostgreSQL
//! (a fresh schema each; under `CI=true` a missing URL fails instead of skipping).

mod common;

use std::time::Duration;

use common::*;
use moltbot_config::Config;
use moltbot_core::memory::{DEFAULT_PROMPT, SUMMARY_HEADING};
use moltbot_testkit::{FakeUpstream, RecordedRequest, Script};
use serde_json::{Value, json};

const SYSTEM: &str = "SYSTEM-PROMPT: you are a terse assistant.";
const FACT: &str = "My name is Zorblax and my locker code is 7319.";
const SUMMARY: &str = "SUMMARY: the user is called Zorblax; their locker code is 7319.";
const FILLER: &str = "lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor ";

/// The user's text of turn `i` (1-based): the fact first, filler after.
fn turn_text(i: usize) -> String {
    if i == 1 {
        format!("{FACT} {}", FILLER.repeat(2))
    } else {
        format!("Turn {i}: {}", FILLER.repeat(3))
    }
}

// ---- the database of a case ----

/// Where a case keeps its data: the test's SQLite file, or a fresh PostgreSQL schema.
#[derive(Clone)]
struct Db {
    postgres: Option<(String, String)>,
}

impl Db {
    fn sqlite() -> Self {
        Db { postgres: None }
    }

    /// A migrated fresh schema, or `None` to skip (outside CI).
    async fn postgres() -> Option<Self> {
        use sqlx::{Connection, Executor};
        let base = match std::env::var("MOLTBOT_TEST_POSTGRES_URL") {
            Ok(url) if !url.is_empty() => url,
            _ => {
                assert!(
                    std::env::var("CI").as_deref() != Ok("true"),
                    "CI=true requires MOLTBOT_TEST_POSTGRES_URL"
                );
                eprintln!("skipping: MOLTBOT_TEST_POSTGRES_URL is not set");
                return None;
            }
        };
        let schema = moltbot_core::ids::new_id("mbmem");
        let mut admin = sqlx::PgConnection::connect(&base).await.expect("connect");
        admin
            .execute(format!("CREATE SCHEMA {schema}").as_str())
            .await
            .expect("create schema");
        let db = Db {
            postgres: Some((base, schema)),
        };
        let store = moltbot_store::open(&db.url().unwrap(), &Default::default())
            .await
            .expect("open");
        store.migrate().await.expect("migrate");
        Some(db)
    }

    fn url(&self) -> Option<String> {
        self.postgres.as_ref().map(|(base, schema)| {
            let sep = if base.contains('?') { '&' } else { '?' };
            format!("{base}{sep}options=-c%20search_path%3D{schema}")
        })
    }

    async fn drop_schema(&self) {
        use sqlx::{Connection, Executor};
        if let Some((base, schema)) = &self.postgres {
            let mut admin = sqlx::PgConnection::connect(base).await.expect("connect");
            admin
                .execute(format!("DROP SCHEMA IF EXISTS {schema} CASCADE").as_str())
                .await
                .expect("drop schema");
        }
    }
}

/// Each case once per database.
macro_rules! on_both_databases {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::$case(super::Db::sqlite()).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let Some(db) = super::Db::postgres().await else { return };
                    // In its own task so the schema is dropped even when the case panics.
                    let outcome = tokio::spawn(super::$case(db.clone())).await;
                    db.drop_schema().await;
                    if let Err(e) = outcome {
                        std::panic::resume_unwind(e.into_panic());
                    }
                }
            )*
        }
    };
}

on_both_databases!(
    early_facts_survive_through_the_summary,
    concurrent_turns_compact_once,
    a_failed_compaction_falls_back_to_trimming,
    the_conversations_own_model_summarises_by_default,
    manual_compaction_and_its_errors,
);

// ---- the stack of a case ----

struct Stack {
    /// Answers the conversation (echo).
    chat: FakeUpstream,
    /// Answers as the `summarizer` model.
    summarizer: FakeUpstream,
    srv: TestServer,
}

/// moltbot with `gpt-test` (context 1000, replies up to 100 tokens, echo) and `summarizer`
/// (answering with `summarizer_script`), memory keeping the latest 2 turns.
async fn stack(db: &Db, summarizer_script: Script, tweak: impl FnOnce(&mut Config)) -> Stack {
    let chat = fake_with(Script::echo()).await;
    let summarizer = fake_with(summarizer_script).await;
    let extra = format!(
        r#"
[[models]]
name = "summarizer"
endpoint = "{url}"
api_key = "{KEY}"
upstream_model = "summary-model"
retry = {{ max_attempts = 1, base_delay = "10ms", max_delay = "50ms", retry_after_cap = "1s" }}
timeouts = {{ connect = "2s", first_byte = "5s", idle = "5s", total = "20s" }}
"#,
        url = summarizer.base_url()
    );
    let url = db.url();
    let srv = start_with(&chat, &extra, |c| {
        c.models[0].context_window = 1000;
        c.models[0].max_tokens = 100;
        c.memory.keep_recent = 2;
        c.memory.summary_model = Some("summarizer".into());
        if let Some(url) = url {
            c.database_url = url;
        }
        tweak(c);
    })
    .await;
    Stack {
        chat,
        summarizer,
        srv,
    }
}

async fn conversation(srv: &TestServer, items: Value) -> String {
    let r = srv.post("/v1/conversations", json!({ "items": items })).await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    v["id"].as_str().unwrap().to_owned()
}

async fn turn(srv: &TestServer, conv: &str, text: &str) -> Value {
    let (status, body) = srv
        .chat(json!({"model": "gpt-test", "conversation": conv, "messages": [user(text)]}))
        .await;
    assert_eq!(status, 200, "{body}");
    body
}

/// Every item of a conversation, oldest first.
async fn items(srv: &TestServer, conv: &str) -> Vec<Value> {
    let r = srv
        .get(&format!("/v1/conversations/{conv}/items?order=asc&limit=100"))
        .await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["has_more"], false);
    v["data"].as_array().unwrap().clone()
}

fn text(item: &Value) -> &str {
    item["content"][0]["text"].as_str().unwrap_or_default()
}

fn messages(req: &RecordedRequest) -> Vec<Value> {
    req.body["messages"].as_array().unwrap().clone()
}

fn content(m: &Value) -> &str {
    m["content"].as_str().unwrap_or_default()
}

/// `n` items of alternating user/assistant turns after a system message (a conversation over the
/// compaction threshold of the test model once `n` is about 16).
fn history_items(n: usize) -> Value {
    let mut items = vec![json!({"role": "system", "content": SYSTEM})];
    for i in 1..=n / 2 {
        items.push(json!({"role": "user", "content": turn_text(i)}));
        items.push(json!({"role": "assistant", "content": format!("echo: {}", turn_text(i))}));
    }
    Value::Array(items)
}

// ---- cases ----

async fn early_facts_survive_through_the_summary(db: Db) {
    let s = stack(&db, Script::text(SUMMARY), |_| {}).await;
    let conv = conversation(&s.srv, json!([{"role": "system", "content": SYSTEM}])).await;
    const TURNS: usize = 14;
    for i in 1..=TURNS {
        turn(&s.srv, &conv, &turn_text(i)).await;
    }

    // The summary model was asked to summarise turn 1, with the configured prompt.
    let summaries = s.summarizer.chat_requests();
    assert!(
        summaries.len() >= 2,
        "compacted, then compacted again: {}",
        summaries.len()
    );
    let first = messages(&summaries[0]);
    assert_eq!(summaries[0].body["model"], "summary-model");
    assert_eq!(
        (first[0]["role"].as_str(), content(&first[0])),
        (Some("system"), DEFAULT_PROMPT)
    );
    assert!(
        content(&first[1]).contains(FACT),
        "turn 1 is summarised: {}",
        content(&first[1])
    );
    assert!(
        !content(&first[1]).contains(SYSTEM),
        "the system prompt is never compacted"
    );
    // A later compaction folds the earlier summary in (so the fact lives on through it).
    for later in &summaries[1..] {
        let m = messages(later);
        assert!(content(&m[1]).contains(SUMMARY), "{}", content(&m[1]));
        assert!(!content(&m[1]).contains(FACT), "turn 1 is summarised once");
    }

    // What the conversation's model receives after that: instructions, summary, recent turns verbatim.
    let chats = s.chat.chat_requests();
    assert_eq!(
        chats.len(),
        TURNS,
        "no extra requests to the conversation's model"
    );
    let last = messages(chats.last().unwrap());
    assert_eq!(
        (last[0]["role"].as_str(), content(&last[0])),
        (Some("system"), SYSTEM)
    );
    assert_eq!(last[1]["role"], "system");
    assert!(content(&last[1]).starts_with(SUMMARY_HEADING));
    assert!(content(&last[1]).ends_with(SUMMARY), "{}", content(&last[1]));
    assert!(
        last.iter().all(|m| !content(m).contains(FACT)),
        "the raw first turn is no longer sent"
    );
    let tail: Vec<&str> = last[2..].iter().map(content).collect();
    let expected: Vec<String> = (TURNS - 2..TURNS)
        .flat_map(|i| [turn_text(i), format!("echo: {}", turn_text(i))])
        .chain([turn_text(TURNS)])
        .collect();
    assert!(tail.len() >= expected.len(), "{tail:?}");
    assert_eq!(
        &tail[tail.len() - expected.len()..],
        expected,
        "the latest turns verbatim"
    );
    // Everything after the summary is a verbatim, gap-free run of the conversation's end.
    let first_kept = tail.len() / 2;
    let start = TURNS - first_kept;
    let run: Vec<String> = (start..TURNS)
        .flat_map(|i| [turn_text(i), format!("echo: {}", turn_text(i))])
        .chain([turn_text(TURNS)])
        .collect();
    assert_eq!(tail, run);

    // The items: every message is still there; the summary in force says what it replaced.
    let all = items(&s.srv, &conv).await;
    let compactions: Vec<&Value> = all.iter().filter(|i| i["type"] == "compaction").collect();
    assert_eq!(compactions.len(), summaries.len(), "one summary per compaction");
    let active: Vec<&&Value> = compactions
        .iter()
        .filter(|c| c["compacted_by"].is_null())
        .collect();
    assert_eq!(active.len(), 1);
    let active = active[0];
    assert_eq!(active["role"], "system");
    assert_eq!(active["content"][0]["type"], "summary_text");
    assert_eq!(text(active), SUMMARY);
    assert_eq!(active["compaction"]["model"], "summarizer");
    assert_eq!(active["compaction"]["trigger"], "auto");
    assert!(active["compaction"]["tokens_before"].as_u64().unwrap() > 500);
    let active_id = active["id"].as_str().unwrap();
    for id in active["compaction"]["replaced_item_ids"].as_array().unwrap() {
        let replaced = all.iter().find(|i| i["id"] == *id).expect("replaced item listed");
        assert_eq!(replaced["compacted_by"], active_id);
    }
    let messages_replaced = all
        .iter()
        .filter(|i| i["type"] == "message" && !i["compacted_by"].is_null())
        .count();
    assert_eq!(active["compaction"]["message_count"], messages_replaced);
    // Turn 1 leads to the summary in force through the chain of summaries.
    let fact_item = all.iter().find(|i| text(i).starts_with(FACT)).unwrap();
    let mut next = fact_item["compacted_by"].as_str().expect("turn 1 was compacted");
    while next != active_id {
        let s = all.iter().find(|i| i["id"] == next).unwrap();
        next = s["compacted_by"].as_str().unwrap();
    }
    assert!(
        all.iter()
            .any(|i| text(i) == SYSTEM && i["compacted_by"].is_null())
    );
    // The summaries' tokens are accounted to the caller.
    let usage = s.srv.state.store.list_usage(&s.srv.key_id, 100).await.unwrap();
    assert_eq!(
        usage.iter().filter(|u| u.model == "summarizer").count(),
        summaries.len()
    );
    s.srv.stop().await;
}

async fn concurrent_turns_compact_once(db: Db) {
    // A slow summary model: the second request arrives while the first is compacting.
    let slow = Script::text(SUMMARY).headers_delay(Duration::from_millis(400));
    let s = stack(&db, slow, |_| {}).await;
    let conv = conversation(&s.srv, history_items(18)).await;
    let (a, b) = tokio::join!(
        turn(&s.srv, &conv, "first at once"),
        turn(&s.srv, &conv, "second at once")
    );
    assert!(a["choices"][0]["message"]["content"].is_string());
    assert!(b["choices"][0]["message"]["content"].is_string());

    assert_eq!(s.summarizer.chat_requests().len(), 1, "one summarisation");
    let all = items(&s.srv, &conv).await;
    assert_eq!(
        all.iter().filter(|i| i["type"] == "compaction").count(),
        1,
        "one summary"
    );
    for req in s.chat.chat_requests() {
        let m = messages(&req);
        assert_eq!(content(&m[0]), SYSTEM);
        assert!(
            content(&m[1]).ends_with(SUMMARY),
            "both turns use the one summary"
        );
    }
    s.srv.stop().await;
}

async fn a_failed_compaction_falls_back_to_trimming(db: Db) {
    let s = stack(&db, Script::status(503), |_| {}).await;
    let conv = conversation(&s.srv, json!([{"role": "system", "content": SYSTEM}])).await;
    for i in 1..=16 {
        turn(&s.srv, &conv, &turn_text(i)).await;
    }
    assert!(!s.summarizer.chat_requests().is_empty(), "compaction was tried");
    let all = items(&s.srv, &conv).await;
    assert!(
        all.iter()
            .all(|i| i["type"] == "message" && i["compacted_by"].is_null())
    );
    // Today's trimming: the system prompt stays, the oldest turns are dropped, the latest is sent.
    let last = messages(s.chat.chat_requests().last().unwrap());
    assert_eq!(content(&last[0]), SYSTEM);
    assert!(!content(&last[1]).starts_with(SUMMARY_HEADING));
    assert!(
        last.iter().all(|m| !content(m).contains(FACT)),
        "turn 1 was dropped"
    );
    assert_eq!(content(last.last().unwrap()), turn_text(16));
    // Logged and counted.
    let metrics = s
        .srv
        .http
        .get(s.srv.admin_url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let failed = metrics
        .lines()
        .find(|l| {
            l.starts_with("moltbot_memory_compactions_total{")
                && l.contains("outcome=\"failed\"")
                && l.contains("trigger=\"auto\"")
        })
        .unwrap_or_else(|| panic!("no failed compactions counted:\n{metrics}"));
    let n: f64 = failed.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(n >= 1.0, "{failed}");
    s.srv.stop().await;
}

async fn the_conversations_own_model_summarises_by_default(db: Db) {
    let s = stack(&db, Script::status(500), |c| c.memory.summary_model = None).await;
    let conv = conversation(&s.srv, history_items(18)).await;
    // The next request to the conversation's model is the summarisation, then the turn (echo).
    s.chat.push(Script::text(SUMMARY));
    turn(&s.srv, &conv, "and now?").await;
    assert!(s.summarizer.chat_requests().is_empty());
    let reqs = s.chat.chat_requests();
    assert_eq!(reqs.len(), 2);
    assert_eq!(content(&messages(&reqs[0])[0]), DEFAULT_PROMPT);
    assert_eq!(reqs[0].body["model"], "fake-model");
    let chat = messages(&reqs[1]);
    assert_eq!(content(&chat[0]), SYSTEM);
    assert!(content(&chat[1]).ends_with(SUMMARY));
    assert_eq!(content(chat.last().unwrap()), "and now?");
    let all = items(&s.srv, &conv).await;
    let summary = all.iter().find(|i| i["type"] == "compaction").unwrap();
    assert_eq!(summary["compaction"]["model"], "gpt-test");
    s.srv.stop().await;
}

async fn manual_compaction_and_its_errors(db: Db) {
    let s = stack(&db, Script::text(SUMMARY), |c| {
        c.memory.summary_model = None;
        c.memory.enabled = false;
    })
    .await;
    let srv = &s.srv;
    let conv = conversation(srv, history_items(8)).await; // system + 4 turns
    let compact = |body: Option<Value>| {
        let url = srv.url(&format!("/v1/conversations/{conv}/compact"));
        let req = srv.http.post(url);
        let req = match body {
            Some(b) => req.json(&b),
            None => req,
        };
        async move {
            let r = req.send().await.unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };

    // No model has answered in this conversation and none is configured for summaries.
    let (status, err) = compact(None).await;
    assert_eq!(status, 400, "{err}");
    assert_eq!(err["error"]["param"], "model");
    // Bad bodies name the field; an unknown model is a 404.
    let (status, err) = compact(Some(json!({"keep_recent": -1}))).await;
    assert_eq!(
        (status, err["error"]["param"].as_str()),
        (400, Some("keep_recent")),
        "{err}"
    );
    let (status, err) = compact(Some(json!({"keep": 1}))).await;
    assert_eq!(
        (status, err["error"]["param"].as_str()),
        (400, Some("keep")),
        "{err}"
    );
    let (status, err) = compact(Some(json!({"model": "nope"}))).await;
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (404, Some("model_not_found")),
        "{err}"
    );
    assert!(s.summarizer.chat_requests().is_empty());

    // Compact all but the latest 2 turns.
    let before = items(srv, &conv).await;
    let (status, item) = compact(Some(json!({"model": "summarizer", "keep_recent": 2}))).await;
    assert_eq!(status, 200, "{item}");
    assert_eq!(item["type"], "compaction");
    assert_eq!(item["role"], "system");
    assert_eq!(item["status"], "completed");
    assert_eq!(text(&item), SUMMARY);
    assert_eq!(item["compaction"]["trigger"], "manual");
    assert_eq!(item["compaction"]["model"], "summarizer");
    assert_eq!(item["compaction"]["message_count"], 4);
    let replaced: Vec<&Value> = before[1..5].iter().map(|i| &i["id"]).collect();
    let listed: Vec<&Value> = item["compaction"]["replaced_item_ids"]
        .as_array()
        .unwrap()
        .iter()
        .collect();
    assert_eq!(listed, replaced, "turns 1 and 2, oldest first");
    let req = messages(&s.summarizer.chat_requests()[0]);
    assert!(content(&req[1]).contains(FACT));
    assert!(
        !content(&req[1]).contains(&turn_text(3)),
        "kept turns are not summarised"
    );
    let got: Value = srv
        .get(&format!(
            "/v1/conversations/{conv}/items/{}",
            item["id"].as_str().unwrap()
        ))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(got, item);

    // The admin transcript and its Markdown export show the summary and what it replaced.
    let admin = |path: String| srv.http.get(srv.admin_url(&path)).send();
    let detail: Value = admin(format!("/admin/api/conversations/{conv}"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let transcript = detail["messages"].as_array().unwrap();
    assert_eq!(transcript.len(), 10);
    assert_eq!(transcript[9]["compaction"]["message_count"], 4);
    assert_eq!(transcript[1]["compacted_by"], item["id"]);
    assert!(
        transcript[0].get("compacted_by").is_none(),
        "the system prompt stays"
    );
    let md = admin(format!("/admin/api/conversations/{conv}/export?format=markdown"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        md.contains("## Summary (compacts 4 earlier messages, by summarizer)"),
        "{md}"
    );
    assert_eq!(md.matches("(compacted)").count(), 4, "{md}");

    // Nothing left to compact with the same setting: 400 naming keep_recent.
    let (status, err) = compact(Some(json!({"model": "summarizer", "keep_recent": 2}))).await;
    assert_eq!(
        (status, err["error"]["param"].as_str()),
        (400, Some("keep_recent")),
        "{err}"
    );

    // The next turn sees the summary; then `{}` takes the model of that reply and keep_recent 0
    // absorbs the first summary and every turn.
    turn(srv, &conv, "what is my locker code?").await;
    let sent = messages(s.chat.chat_requests().last().unwrap());
    assert_eq!(content(&sent[0]), SYSTEM);
    assert!(content(&sent[1]).ends_with(SUMMARY));
    assert_eq!(sent.len(), 2 + 4 + 1, "summary, turns 3 and 4, the question");
    s.chat
        .push(Script::text("SUMMARY 2: Zorblax, 7319, asked for the code."));
    let (status, second) = compact(Some(json!({"keep_recent": 0}))).await;
    assert_eq!(status, 200, "{second}");
    assert_eq!(second["compaction"]["model"], "gpt-test");
    assert_eq!(second["compaction"]["message_count"], 4 + 6);
    assert_eq!(second["compaction"]["replaced_item_ids"][0], item["id"]);
    let all = items(srv, &conv).await;
    let first_now = all.iter().find(|i| i["id"] == item["id"]).unwrap();
    assert_eq!(first_now["compacted_by"], second["id"]);

    // Unknown and foreign conversations are 404; a key without the chat scope may not compact.
    let r = srv.post("/v1/conversations/conv_nope/compact", json!({})).await;
    assert_eq!(r.status(), 404);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "conversation_not_found");
    let (_, other) = create_key(
        &srv.state,
        &moltbot_core::Scope::ALL,
        moltbot_core::KeyLimits::default(),
    )
    .await;
    let r = client(&other)
        .post(srv.url(&format!("/v1/conversations/{conv}/compact")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let (_, reader) = create_key(
        &srv.state,
        &[moltbot_core::Scope::Conversations],
        moltbot_core::KeyLimits::default(),
    )
    .await;
    let r = client(&reader)
        .post(srv.url(&format!("/v1/conversations/{conv}/compact")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    s.srv.stop().await;
}
