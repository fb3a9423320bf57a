//! `POST /v1/embeddings` through the real server: remote models over the fake upstream (floats,
//! base64, `dimensions`, token inputs, retries, upstream failures), local GGUF embedding models (a
//! generated tiny one), validation with the envelope naming the field, usage records and quotas.

mod common;

use base64::Engine as _;
use common::*;
use moltbot_core::{KeyLimits, Scope};
use moltbot_engine::gguf::{
    SyntheticOptions, SyntheticShape, TensorType, write_synthetic, write_synthetic_with,
};
use moltbot_testkit::{FAKE_EMBEDDING_DIMS, Script, fake_embedding};
use serde_json::{Value, json};

async fn embed(srv: &TestServer, body: Value) -> (u16, Value) {
    let r = srv.post("/v1/embeddings", body).await;
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

fn vector(v: &Value) -> Vec<f32> {
    v.as_array()
        .unwrap_or_else(|| panic!("not a float vector: {v}"))
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

fn norm(v: &[f32]) -> f32 {
    v.iter().map(|x| x * x).sum::<f32>().sqrt()
}

#[tokio::test]
async fn remote_embeddings_follow_the_upstream_and_are_recorded() {
    let fake = fake().await;
    let srv = start(&fake).await;

    let (status, body) = embed(
        &srv,
        json!({"model": "gpt-test", "input": ["hello world", "bye"]}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["object"], "list");
    assert_eq!(body["model"], "gpt-test");
    assert_eq!(body["data"][0]["object"], "embedding");
    assert_eq!(body["data"][1]["index"], 1);
    assert_eq!(
        vector(&body["data"][0]["embedding"]),
        fake_embedding("hello world", FAKE_EMBEDDING_DIMS)
    );
    assert_eq!(
        vector(&body["data"][1]["embedding"]),
        fake_embedding("bye", FAKE_EMBEDDING_DIMS)
    );
    assert_eq!(body["usage"], json!({"prompt_tokens": 3, "total_tokens": 3}));

    let sent = fake.requests();
    let up = sent
        .iter()
        .find(|r| r.path == "/v1/embeddings")
        .expect("an upstream call");
    assert_eq!(up.bearer(), Some(KEY));
    assert_eq!(up.body["model"], "fake-model", "the upstream model id");
    assert_eq!(up.body["input"], json!(["hello world", "bye"]));
    assert_eq!(up.body["encoding_format"], "float");
    assert!(up.header("x-request-id").is_some());

    let usage = srv.state.store.list_usage(&srv.key_id, 10).await.unwrap();
    assert_eq!(usage.len(), 1, "{usage:?}");
    assert_eq!(usage[0].model, "gpt-test");
    assert_eq!(usage[0].outcome, "ok");
    assert_eq!((usage[0].prompt_tokens, usage[0].completion_tokens), (3, 0));
    assert!(usage[0].conversation_id.is_none());

    // One string, base64, dimensions passed through, extra fields forwarded.
    let (status, body) = embed(
        &srv,
        json!({"model": "gpt-test", "input": "one", "encoding_format": "base64", "dimensions": 8, "user": "u-1", "x_extra": true}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let b64 = body["data"][0]["embedding"].as_str().expect("a base64 string");
    let bytes = base64::engine::general_purpose::STANDARD.decode(b64).unwrap();
    let floats: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    assert_eq!(floats, fake_embedding("one", 8));
    let up = fake
        .requests()
        .into_iter()
        .rev()
        .find(|r| r.path == "/v1/embeddings")
        .unwrap();
    assert_eq!(
        up.body["encoding_format"], "float",
        "floats upstream, base64 encoded here"
    );
    assert_eq!(up.body["dimensions"], 8);
    assert_eq!(up.body["user"], "u-1");
    assert_eq!(up.body["x_extra"], true);

    // Token inputs pass through as token arrays.
    let (status, body) = embed(&srv, json!({"model": "gpt-test", "input": [[1, 2, 3], [4]]})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        vector(&body["data"][0]["embedding"]),
        fake_embedding("[1,2,3]", FAKE_EMBEDDING_DIMS)
    );
    assert_eq!(
        vector(&body["data"][1]["embedding"]),
        fake_embedding("[4]", FAKE_EMBEDDING_DIMS)
    );
    srv.stop().await;
}

#[tokio::test]
async fn upstream_failures_are_retried_then_reported() {
    let fake = fake().await;
    let srv = start(&fake).await;
    fake.push(Script::status(503));
    let (status, body) = embed(&srv, json!({"model": "gpt-test", "input": "again"})).await;
    assert_eq!(status, 200, "a 503 is retried: {body}");
    assert_eq!(
        fake.requests()
            .iter()
            .filter(|r| r.path == "/v1/embeddings")
            .count(),
        2
    );

    fake.push(Script::status(500));
    fake.push(Script::status(500));
    let (status, body) = embed(&srv, json!({"model": "gpt-test", "input": "x"})).await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(body["error"]["code"], "upstream_error");

    // The upstream's own 400 is the client's error, with its message.
    fake.push(Script::status(400));
    let (status, body) = embed(&srv, json!({"model": "gpt-test", "input": "x"})).await;
    assert_eq!(status, 400, "{body}");

    let usage = srv.state.store.list_usage(&srv.key_id, 10).await.unwrap();
    let outcomes: Vec<&str> = usage.iter().map(|u| u.outcome.as_str()).collect();
    assert!(
        outcomes.contains(&"ok") && outcomes.contains(&"error"),
        "{outcomes:?}"
    );
    assert_eq!(usage.len(), 2, "client errors are not recorded: {outcomes:?}");
    srv.stop().await;
}

#[tokio::test]
async fn bad_requests_name_the_field_and_never_reach_the_upstream() {
    let fake = fake().await;
    let srv = start(&fake).await;
    let many: Vec<String> = (0..2049).map(|i| i.to_string()).collect();
    for (body, param) in [
        (json!({"model": "gpt-test", "input": []}), "input"),
        (json!({"model": "gpt-test", "input": ""}), "input"),
        (json!({"model": "gpt-test", "input": ["a", ""]}), "input"),
        (json!({"model": "gpt-test", "input": [[]]}), "input"),
        (json!({"model": "gpt-test", "input": many}), "input"),
        (json!({"model": "gpt-test", "input": 5}), "input"),
        (json!({"model": "gpt-test", "input": ["a", 1]}), "input"),
        (json!({"model": "gpt-test"}), "input"),
        (
            json!({"model": "gpt-test", "input": "a", "encoding_format": "hex"}),
            "encoding_format",
        ),
        (
            json!({"model": "gpt-test", "input": "a", "dimensions": 0}),
            "dimensions",
        ),
        (
            json!({"model": "gpt-test", "input": "a", "dimensions": -3}),
            "dimensions",
        ),
    ] {
        let (status, got) = embed(&srv, body.clone()).await;
        assert_eq!(status, 400, "{body} → {got}");
        assert_eq!(got["error"]["type"], "invalid_request_error", "{got}");
        assert_eq!(got["error"]["param"], param, "{body} → {got}");
    }
    // Over the remote model's context (4096 tokens in the test config): refused before the upstream.
    let long = "lorem ipsum ".repeat(3000);
    let (status, got) = embed(&srv, json!({"model": "gpt-test", "input": ["short", long]})).await;
    assert_eq!(status, 400, "{got}");
    assert_eq!(got["error"]["param"], "input");
    assert_eq!(got["error"]["code"], "context_length_exceeded");
    assert!(
        got["error"]["message"].as_str().unwrap().contains("input[1]"),
        "{got}"
    );
    let (status, got) = embed(&srv, json!({"model": "nope", "input": "a"})).await;
    assert_eq!(status, 404, "{got}");
    assert_eq!(got["error"]["code"], "model_not_found");
    assert_eq!(got["error"]["param"], "model");
    assert_eq!(fake.request_count(), 0, "{:?}", fake.requests());
    assert!(
        srv.state
            .store
            .list_usage(&srv.key_id, 10)
            .await
            .unwrap()
            .is_empty()
    );

    // Authentication and scopes as for chat.
    let r = srv
        .anon
        .post(srv.url("/v1/embeddings"))
        .json(&json!({"model": "gpt-test", "input": "a"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let (_, secret) = create_key(&srv.state, &[Scope::Conversations], KeyLimits::default()).await;
    let r = client(&secret)
        .post(srv.url("/v1/embeddings"))
        .json(&json!({"model": "gpt-test", "input": "a"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    srv.stop().await;
}

#[tokio::test]
async fn embeddings_count_against_the_daily_quota() {
    let fake = fake().await;
    let srv = start(&fake).await;
    let limits = KeyLimits {
        daily_tokens: Some(3),
        ..KeyLimits::default()
    };
    let (_, secret) = create_key(&srv.state, &[Scope::Chat], limits).await;
    let c = client(&secret);
    let send = |input: &'static str| {
        c.post(srv.url("/v1/embeddings"))
            .json(&json!({"model": "gpt-test", "input": input}))
            .send()
    };
    assert_eq!(send("one two three").await.unwrap().status(), 200);
    let r = send("four").await.unwrap();
    assert_eq!(r.status(), 429);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "insufficient_quota", "{body}");
    srv.stop().await;
}

/// A remote model plus three local ones: a tiny embedding model (mean pooling in its GGUF), a tiny
/// generative model (no pooling), and the same generative file with `pooling = "last"` configured.
fn local_config(dir: &std::path::Path) -> moltbot_config::Config {
    let embedder = dir.join("tiny-embed.gguf");
    let pooled = SyntheticOptions {
        pooling_type: Some(1),
    };
    write_synthetic_with(&embedder, &SyntheticShape::tiny(), TensorType::F32, 7, &pooled).unwrap();
    let chat = dir.join("tiny-chat.gguf");
    write_synthetic(&chat, &SyntheticShape::tiny(), TensorType::F32, 7).unwrap();
    let local = |name: &str, path: &std::path::Path, extra: &str| {
        format!(
            "\n[[models]]\nname = \"{name}\"\nbackend = \"local\"\nmodel_path = \"{}\"\ncontext_window = 64\n\
             max_tokens = 16\nthreads = 1\nparallel = 1\n{extra}",
            path.display()
        )
    };
    let extra = local("tiny-embed", &embedder, "")
        + &local("tiny-chat", &chat, "")
        + &local("tiny-last", &chat, "pooling = \"last\"\n");
    common::config(dir, "http://127.0.0.1:1/v1", &extra)
}

#[tokio::test]
async fn local_models_embed_by_their_pooling_and_refuse_what_they_cannot_do() {
    let dir = tempfile::tempdir().unwrap();
    let srv = start_config(local_config(dir.path()), dir).await;

    let (status, body) = embed(
        &srv,
        json!({"model": "tiny-embed", "input": ["alpha", "beta", "alpha"]}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let v: Vec<Vec<f32>> = (0..3).map(|i| vector(&body["data"][i]["embedding"])).collect();
    assert_eq!(v[0].len(), 256, "the model's embedding size");
    for x in &v {
        assert!((norm(x) - 1.0).abs() < 1e-4, "L2-normalised: {}", norm(x));
    }
    let diff = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max);
    assert!(diff(&v[0], &v[2]) < 1e-5, "same text, same vector");
    assert!(diff(&v[0], &v[1]) > 1e-3, "different texts, different vectors");
    let prompt = body["usage"]["prompt_tokens"].as_u64().unwrap();
    assert!(prompt >= 3, "{body}");
    let usage = srv.state.store.list_usage(&srv.key_id, 10).await.unwrap();
    assert_eq!(usage[0].prompt_tokens as u64, prompt);
    assert_eq!(usage[0].backend.as_deref(), Some("tiny-embed"));

    // `dimensions` only as the model's own size; inputs over the context are refused naming `input`.
    let (status, _) = embed(
        &srv,
        json!({"model": "tiny-embed", "input": "a", "dimensions": 256}),
    )
    .await;
    assert_eq!(status, 200);
    let (status, body) = embed(
        &srv,
        json!({"model": "tiny-embed", "input": "a", "dimensions": 64}),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["param"], "dimensions");
    let long = "word ".repeat(100);
    let (status, body) = embed(&srv, json!({"model": "tiny-embed", "input": ["ok", long]})).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["param"], "input");
    assert_eq!(body["error"]["code"], "context_length_exceeded");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("maximum context length is 64 tokens"),
        "{message}"
    );
    let (status, body) = embed(&srv, json!({"model": "tiny-embed", "input": [[1, 2, 99999]]})).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["param"], "input");

    // A generative model without pooling: 400 naming the model; with `pooling` configured: vectors.
    let (status, body) = embed(&srv, json!({"model": "tiny-chat", "input": "a"})).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["param"], "model");
    assert!(
        body["error"]["message"].as_str().unwrap().contains("pooling"),
        "{body}"
    );
    let (status, body) = embed(
        &srv,
        json!({"model": "tiny-last", "input": "a", "encoding_format": "base64"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(body["data"][0]["embedding"].as_str().unwrap())
        .unwrap();
    assert_eq!(bytes.len(), 256 * 4);

    // The embedding model still answers chat (its own engine); embeddings do not disturb it.
    let (status, body) = srv
        .chat(json!({"model": "tiny-embed", "messages": [user("hi")], "max_tokens": 4}))
        .await;
    assert_eq!(status, 200, "{body}");
    srv.stop().await;
}

#[tokio::test]
async fn the_openapi_document_describes_the_route() {
    let fake = fake().await;
    let srv = start(&fake).await;
    let doc: Value = srv.get("/openapi.json").await.json().await.unwrap();
    let op = &doc["paths"]["/v1/embeddings"]["post"];
    assert_eq!(op["tags"], json!(["embeddings"]), "{op}");
    for status in ["200", "400", "404"] {
        assert!(op["responses"].get(status).is_some(), "{status}: {op}");
    }
    let schemas = &doc["components"]["schemas"];
    for name in ["EmbeddingRequest", "EmbeddingList", "Embedding", "EncodingFormat"] {
        assert!(schemas.get(name).is_some(), "{name} missing");
    }
    srv.stop().await;
}
