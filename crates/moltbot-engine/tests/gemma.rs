//! The embedded default model, Gemma 3 270M Q4_K_M (a base model: plain transcript prompts). Needs
//! `make model` (or `MOLTBOT_TEST_GEMMA=/path/to/file.gguf`); skipped without it unless `CI=true`.
//! Runs in the `gemma` nextest group (one at a time, 1 thread each).

mod common;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use common::{chat, gemma, request};
use moltbot_engine::{EngineConfig, Event, LocalBackend, Sampling};

fn start(path: PathBuf, parallel: u32) -> Arc<LocalBackend> {
    let config = EngineConfig {
        threads: Some(1),
        parallel,
        context_per_slot: 1024,
        ..EngineConfig::new("gemma", path)
    };
    Arc::new(LocalBackend::start(config, None).unwrap())
}

#[tokio::test]
async fn gemma_answers_and_stops_at_the_turn_boundary() {
    let Some(path) = gemma() else { return };
    let b = start(path, 1);
    assert_eq!(
        b.template_source(),
        moltbot_engine::template::TemplateSource::Transcript
    );
    let reply = chat(&b, request("What is the capital of France?", 128))
        .await
        .unwrap();
    assert!(!reply.text.trim().is_empty(), "{reply:?}");
    assert!(
        !reply.text.contains("User:") && !reply.text.contains("\nAssistant:"),
        "{reply:?}"
    );
    assert_eq!(reply.finish, "stop", "{reply:?}");
    eprintln!("gemma: {:?}", reply.text);
}

#[tokio::test]
async fn gemma_greedy_with_seed_is_identical_across_runs() {
    let Some(path) = gemma() else { return };
    let b = start(path, 1);
    let mut req = request("Write one sentence about the sea.", 32);
    req.seed = Some(7);
    let first = chat(&b, req.clone()).await.unwrap();
    let second = chat(&b, req).await.unwrap();
    assert!(!first.text.is_empty());
    assert_eq!(first, second);
}

#[tokio::test]
async fn gemma_batches_for_real() {
    let Some(path) = gemma() else { return };
    let b = start(path, 4);
    let engine = b.engine().clone();
    let sampling = Sampling {
        ignore_eos: true,
        ..Sampling::greedy()
    };
    let mut first = engine
        .submit(
            engine.tokenize("User: Count to one hundred.\nAssistant:"),
            200,
            sampling.clone(),
            vec![],
        )
        .unwrap();
    assert!(matches!(first.recv().await, Some(Event::Text(_))));
    let mut second = engine
        .submit(engine.tokenize("User: Say hi.\nAssistant:"), 8, sampling, vec![])
        .unwrap();
    assert!(matches!(second.recv().await, Some(Event::Text(_))));
    while let Ok(ev) = first.try_recv() {
        assert!(
            matches!(ev, Event::Text(_)),
            "the first request finished before the second's first token"
        );
    }
    drop(first);
    while second.recv().await.is_some() {}
    assert!(engine.stats().multi_sequence_steps.load(Ordering::Relaxed) >= 1);
    assert!(engine.stats().max_sequences_per_step.load(Ordering::Relaxed) >= 2);

    // Four concurrent chats, each with the right usage.
    let questions = [
        "Name a fruit.",
        "Name a color.",
        "Name a country.",
        "Name an animal.",
    ];
    let runs = questions.iter().map(|q| {
        let b = b.clone();
        async move {
            let req = request(q, 24);
            let prompt = b.token_counter().count_messages(&req.messages) as u32;
            (prompt, chat(&b, req).await.unwrap())
        }
    });
    for (prompt, reply) in futures::future::join_all(runs).await {
        assert_eq!(reply.usage.0, prompt, "{reply:?}");
        assert!(reply.usage.1 >= 1 && reply.usage.1 <= 24, "{reply:?}");
        if reply.finish == "length" {
            assert_eq!(reply.usage.1, 24);
        }
    }
}

#[tokio::test]
async fn gemma_follows_a_json_schema() {
    let Some(path) = gemma() else { return };
    let b = start(path, 1);
    let schema = serde_json::json!({"type": "object", "properties": {"capital": {"type": "string", "maxLength": 24},
        "country": {"type": "string", "maxLength": 24}}, "required": ["country", "capital"], "additionalProperties": false});
    let mut req = request("Name the capital of France.", 64);
    req.response_format =
        Some(serde_json::json!({"type": "json_schema", "json_schema": {"name": "c", "schema": schema}}));
    let reply = chat(&b, req).await.unwrap();
    let v: serde_json::Value =
        serde_json::from_str(&reply.text).unwrap_or_else(|e| panic!("{e}: {:?}", reply.text));
    assert!(v["capital"].is_string() && v["country"].is_string(), "{v}");
    eprintln!("gemma json: {v}");
}
