//! Property-based fuzzing of `POST /v1/chat/completions` through the real server (real sockets, SQLite, the
//! fake upstream): arbitrary bodies, and valid requests mutated one value at a time (any JSON in any place,
//! a field removed, a field added), with or without the conversation and idempotency headers, streamed or
//! not. Whatever arrives: never a 5xx, never a hang; a 4xx is always the OpenAI envelope; a 200 is a whole
//! completion or a stream that ends with `[DONE]`.
//!
//! Cases per property: `PROPTEST_CASES` (default 256). Failures proptest finds are saved in
//! `fuzz_requests.proptest-regressions` beside this file and replayed first; `corpus()` keeps inputs that
//! once mattered.

mod common;

use std::time::Duration;

use common::*;
use proptest::prelude::*;
use proptest::test_runner::{Config, FileFailurePersistence, TestCaseError, TestRunner};
use serde_json::{Value, json};

/// A server on a runtime of its own, so that proptest's synchronous runner can drive it.
struct Env {
    rt: tokio::runtime::Runtime,
    /// An `Option` only so that `stop` can take it.
    srv: Option<TestServer>,
    _fake: moltbot_testkit::FakeUpstream,
    http: reqwest::Client,
}

impl Env {
    fn start() -> Env {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let (fake, srv) = rt.block_on(async {
            let fake = fake().await;
            let srv = start(&fake).await;
            (fake, srv)
        });
        // A hang is a failure: no request may take longer than this.
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap();
        Env {
            rt,
            srv: Some(srv),
            _fake: fake,
            http,
        }
    }

    fn srv(&self) -> &TestServer {
        self.srv.as_ref().expect("server running")
    }

    /// Send `body` with the given headers; check the answer's shape.
    fn check(&self, body: &[u8], headers: &[(String, String)]) -> Result<(), TestCaseError> {
        let srv = self.srv();
        let mut req = self
            .http
            .post(srv.url("/v1/chat/completions"))
            .bearer_auth(&srv.secret)
            .header("content-type", "application/json")
            .body(body.to_vec());
        for (k, v) in headers {
            req = req.header(k.as_str(), v.as_str());
        }
        let shown = String::from_utf8_lossy(body).into_owned();
        let (status, ctype, text) = self
            .rt
            .block_on(async {
                let r = req.send().await?;
                let status = r.status().as_u16();
                let ctype = r
                    .headers()
                    .get("content-type")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_owned();
                Ok::<_, reqwest::Error>((status, ctype, r.text().await?))
            })
            .map_err(|e| TestCaseError::fail(format!("no complete answer ({e}) to {shown}")))?;
        prop_assert!(status < 500, "{status} for {shown}: {text}");
        if status >= 400 {
            prop_assert!(
                ctype.starts_with("application/json"),
                "{status} {ctype} for {shown}"
            );
            let v: Value = serde_json::from_str(&text)
                .map_err(|_| TestCaseError::fail(format!("{status} without JSON for {shown}: {text}")))?;
            assert_envelope(&v).map_err(|m| TestCaseError::fail(format!("{m} for {shown}: {text}")))?;
        } else if ctype.starts_with("text/event-stream") {
            prop_assert_eq!(status, 200);
            prop_assert!(
                text.ends_with("data: [DONE]\n\n"),
                "unfinished stream for {}: {}",
                shown,
                text
            );
        } else {
            prop_assert_eq!(status, 200);
            let v: Value = serde_json::from_str(&text).map_err(|_| TestCaseError::fail(text.clone()))?;
            prop_assert_eq!(&v["object"], "chat.completion", "{}", text);
            prop_assert!(v["choices"][0]["message"].is_object(), "{}", text);
        }
        Ok(())
    }

    fn stop(mut self) {
        if let Some(srv) = self.srv.take() {
            self.rt.block_on(srv.stop());
        }
    }
}

/// `{"error": {"message": non-empty, "type": string, "param": string|null, "code": string|null}}`.
fn assert_envelope(v: &Value) -> Result<(), String> {
    let e = &v["error"];
    let ok = e["message"].as_str().is_some_and(|m| !m.is_empty())
        && e["type"].is_string()
        && (e["param"].is_null() || e["param"].is_string())
        && (e["code"].is_null() || e["code"].is_string())
        && v.as_object().is_some_and(|o| o.len() == 1);
    if ok {
        Ok(())
    } else {
        Err("not an OpenAI error envelope".into())
    }
}

fn runner() -> TestRunner {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256);
    TestRunner::new(Config {
        cases,
        source_file: Some(file!()),
        failure_persistence: Some(Box::new(FileFailurePersistence::SourceParallel(
            "proptest-regressions",
        ))),
        ..Config::default()
    })
}

/// JSON of limited depth with the request's own vocabulary, so mutations land on meaningful shapes.
fn json_value() -> impl Strategy<Value = Value> {
    let keys = prop_oneof![
        Just("model"),
        Just("messages"),
        Just("role"),
        Just("content"),
        Just("type"),
        Just("text"),
        Just("image_url"),
        Just("url"),
        Just("name"),
        Just("tool_calls"),
        Just("tool_call_id"),
        Just("function"),
        Just("arguments"),
        Just("stream"),
        Just("stream_options"),
        Just("include_usage"),
        Just("max_tokens"),
        Just("max_completion_tokens"),
        Just("temperature"),
        Just("top_p"),
        Just("stop"),
        Just("n"),
        Just("seed"),
        Just("user"),
        Just("tools"),
        Just("tool_choice"),
        Just("response_format"),
        Just("conversation"),
        Just("metadata"),
    ];
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u32>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        prop_oneof![
            Just("gpt-test".to_owned()),
            Just("user".to_owned()),
            Just("assistant".to_owned()),
            Just("system".to_owned()),
            Just("tool".to_owned()),
            Just("developer".to_owned()),
            Just("text".to_owned()),
            Just("function".to_owned()),
            Just("auto".to_owned()),
            Just("none".to_owned()),
            Just("json_object".to_owned()),
            Just("conv_00000000000000000000000000000000".to_owned()),
            Just("call f {\"a\":1}".to_owned()),
            ".{0,16}",
        ]
        .prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 48, 6, move |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            proptest::collection::btree_map(keys.clone(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())),
        ]
    })
}

/// Valid requests covering the shapes the server handles.
fn seeds() -> Vec<Value> {
    vec![
        json!({"model": "gpt-test", "messages": [{"role": "user", "content": "hi"}]}),
        json!({"model": "gpt-test", "stream": true, "stream_options": {"include_usage": true},
               "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]}),
        json!({"model": "gpt-test", "max_tokens": 16, "temperature": 0.5, "top_p": 0.9, "stop": ["\n", "END"],
               "seed": 7, "user": "u1", "metadata": {"k": "v"},
               "messages": [{"role": "user", "content": [{"type": "text", "text": "parts"}]}]}),
        json!({"model": "gpt-test", "tool_choice": "auto",
               "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
               "messages": [{"role": "user", "content": "call f {\"a\":1}"},
                            {"role": "assistant", "content": null, "tool_calls": [{"id": "c1", "type": "function",
                              "function": {"name": "f", "arguments": "{\"a\":1}"}}]},
                            {"role": "tool", "tool_call_id": "c1", "content": "42"}]}),
        json!({"model": "gpt-test", "response_format": {"type": "json_object"}, "max_completion_tokens": 8,
               "messages": [{"role": "developer", "content": "json"}, {"role": "user", "content": "x", "name": "n"}]}),
    ]
}

/// Replace the `n`th value (depth first, modulo the count) with `with`; `None` removes it from its parent.
fn mutate(v: &mut Value, n: usize, with: Option<&Value>) {
    fn count(v: &Value) -> usize {
        1 + match v {
            Value::Array(a) => a.iter().map(count).sum(),
            Value::Object(o) => o.values().map(count).sum(),
            _ => 0,
        }
    }
    fn walk(v: &mut Value, n: &mut usize, with: Option<&Value>) -> bool {
        let children: Vec<String> = match v {
            Value::Object(o) => o.keys().cloned().collect(),
            Value::Array(a) => (0..a.len()).map(|i| i.to_string()).collect(),
            _ => return false,
        };
        for k in children {
            *n -= 1;
            if *n == 0 {
                let i = k.parse::<usize>().unwrap_or(0);
                match (v, with) {
                    (Value::Object(o), Some(w)) => {
                        o.insert(k, w.clone());
                    }
                    (Value::Object(o), None) => {
                        o.remove(&k);
                    }
                    (Value::Array(a), Some(w)) => a[i] = w.clone(),
                    (Value::Array(a), None) => {
                        a.remove(i);
                    }
                    _ => {}
                }
                return true;
            }
            let child = match v {
                Value::Object(o) => o.get_mut(&k),
                Value::Array(a) => k.parse::<usize>().ok().and_then(|i| a.get_mut(i)),
                _ => None,
            };
            if child.is_some_and(|c| walk(c, n, with)) {
                return true;
            }
        }
        false
    }
    let total = count(v);
    let mut n = n % total;
    if n == 0 {
        // The root itself.
        *v = with.cloned().unwrap_or(Value::Null);
        return;
    }
    walk(v, &mut n, with);
}

fn headers() -> impl Strategy<Value = Vec<(String, String)>> {
    let value = prop_oneof![
        Just("conv_00000000000000000000000000000000".to_owned()),
        "[ -~]{0,40}"
    ];
    proptest::collection::vec(
        prop_oneof![
            value
                .clone()
                .prop_map(|v| ("x-moltbot-conversation".to_owned(), v)),
            value.prop_map(|v| ("idempotency-key".to_owned(), v)),
        ],
        0..2,
    )
}

#[test]
fn arbitrary_bodies_never_get_a_5xx() {
    let env = Env::start();
    let body = prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..300),
        json_value().prop_map(|v| serde_json::to_vec(&v).unwrap()),
        // Truncated valid requests.
        (0usize..5, any::<usize>()).prop_map(|(i, cut)| {
            let bytes = serde_json::to_vec(&seeds()[i]).unwrap();
            bytes[..cut % (bytes.len() + 1)].to_vec()
        }),
    ];
    let result = runner().run(&(body, headers()), |(body, headers)| env.check(&body, &headers));
    env.stop();
    result.unwrap();
}

#[test]
fn mutated_valid_requests_never_get_a_5xx() {
    let env = Env::start();
    let mutation = (
        0usize..5,
        proptest::collection::vec(
            (any::<usize>(), proptest::option::weighted(0.8, json_value())),
            1..4,
        ),
        proptest::option::of(("[a-z_]{1,12}", json_value())),
        any::<bool>(),
    );
    let result = runner().run(
        &(mutation, headers()),
        |((seed, edits, added, stream), headers)| {
            let mut v = seeds()[seed].clone();
            if stream && let Some(o) = v.as_object_mut() {
                o.insert("stream".into(), Value::Bool(true));
            }
            for (at, with) in &edits {
                mutate(&mut v, *at, with.as_ref());
            }
            if let (Some((k, val)), Some(o)) = (&added, v.as_object_mut()) {
                o.insert(k.clone(), val.clone());
            }
            env.check(&serde_json::to_vec(&v).unwrap(), &headers)
        },
    );
    env.stop();
    result.unwrap();
}

/// Inputs kept because they once mattered, checked on every run.
#[test]
fn corpus() {
    let env = Env::start();
    let corpus: &[&[u8]] = &[
        b"",
        b"null",
        b"[]",
        b"{}",
        b"{\"model\":",
        b"\xff\xfe",
        br#"{"model":"gpt-test","messages":[{"role":"user","content":"\u0000"}]}"#,
        br#"{"model":"gpt-test","messages":[{"role":"user","content":"hi"}],"max_tokens":0}"#,
        br#"{"model":"gpt-test","messages":[{"role":"user","content":"hi"}],"max_tokens":4294967295}"#,
        br#"{"model":"gpt-test","messages":[{"role":"user","content":"hi"}],"max_tokens":-1}"#,
        br#"{"model":"gpt-test","messages":[{"role":"user","content":"hi"}],"stop":[]}"#,
        br#"{"model":"gpt-test","messages":[{"role":"user","content":[]}]}"#,
        br#"{"model":"gpt-test","messages":[{"role":"user","content":[{"type":"image_url"}]}]}"#,
        br#"{"model":"gpt-test","messages":[{"role":"assistant","content":null}]}"#,
        br#"{"model":"gpt-test","messages":[{"role":"tool","content":"x"}],"stream":true}"#,
        br#"{"model":"gpt-test","messages":[{"role":"user","content":"hi"}],"conversation":""}"#,
        br#"{"model":"gpt-test","messages":[{"role":"user","content":"hi"}],"stream":true,"stream_options":null}"#,
        br#"{"model":"gpt-test","messages":[{"role":"user","content":"hi"}],"temperature":1e308}"#,
        br#"{"model":"gpt-test","messages":[{"role":"user","content":"hi"}],"seed":18446744073709551615}"#,
        br#"{"model":"","messages":[{"role":"user","content":"hi"}]}"#,
    ];
    let mut failures = Vec::new();
    for body in corpus {
        for headers in [vec![], vec![("idempotency-key".to_owned(), "k".to_owned())]] {
            if let Err(e) = env.check(body, &headers) {
                failures.push(e.to_string());
            }
        }
    }
    env.stop();
    assert!(failures.is_empty(), "{failures:#?}");
}
