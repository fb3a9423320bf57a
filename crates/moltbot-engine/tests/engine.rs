//! The engine on a tiny random-weight model: loading, batching, cancellation, stop strings, context
//! errors, queue limits, unsupported parameters and determinism.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::{backend, chat, request};
use moltbot_core::{BackendError, ChatBackend};
use moltbot_engine::{Event, LocalBackend, Sampling};
use serde_json::json;

#[tokio::test]
async fn loads_generates_and_counts_usage() {
    let b = backend("tiny-basic", 1);
    assert_eq!(
        b.template_source(),
        moltbot_engine::template::TemplateSource::Gguf
    );
    let req = request("Hello there", 12);
    let prompt = b.render(&req.messages).unwrap();
    assert!(
        prompt.text.ends_with("<|im_start|>assistant\n"),
        "{:?}",
        prompt.text
    );
    let expected_prompt = b.engine().tokenize(&prompt.text).len() as u32;
    let counter = b.token_counter();
    assert_eq!(counter.count_messages(&req.messages) as u32, expected_prompt);

    let reply = chat(&b, req).await.unwrap();
    assert!(reply.finish == "stop" || reply.finish == "length", "{reply:?}");
    assert_eq!(reply.usage.0, expected_prompt);
    assert!(reply.usage.1 >= 1 && reply.usage.1 <= 12, "{reply:?}");
    if reply.finish == "length" {
        assert_eq!(reply.usage.1, 12);
    }
}

#[tokio::test]
async fn greedy_and_seeded_generation_is_deterministic() {
    let b = backend("tiny-determinism", 1);
    let mut seeded = request("Tell me a story", 24);
    seeded.temperature = Some(0.9);
    seeded.seed = Some(1234);
    let first = chat(&b, seeded.clone()).await.unwrap();
    let second = chat(&b, seeded).await.unwrap();
    assert_eq!(first, second);
    let g1 = chat(&b, request("Tell me a story", 24)).await.unwrap();
    let g2 = chat(&b, request("Tell me a story", 24)).await.unwrap();
    assert_eq!(g1, g2);
}

/// Text of a greedy run that ignores end-of-turn, straight from the engine.
async fn engine_text(b: &LocalBackend, prompt: &str, max: u32, stops: Vec<String>) -> (String, &'static str) {
    let tokens = b.engine().tokenize(prompt);
    let sampling = Sampling {
        ignore_eos: true,
        ..Sampling::greedy()
    };
    let mut rx = b.engine().submit(tokens, max, sampling, stops).unwrap();
    let mut text = String::new();
    while let Some(ev) = rx.recv().await {
        match ev {
            Event::Text(t) => text.push_str(&t),
            Event::Done { reason, .. } => return (text, reason),
            Event::Error(e) => panic!("{e}"),
        }
    }
    panic!("stream ended without Done")
}

#[tokio::test]
async fn stop_strings_match_across_token_boundaries() {
    let b = backend("tiny-stops", 1);
    let (full, reason) = engine_text(&b, "abc", 40, vec![]).await;
    assert_eq!(reason, "length");
    let chars: Vec<char> = full.chars().collect();
    assert!(chars.len() >= 12, "{full:?}");
    // A three-character stop string: with this byte/char-level vocabulary it spans three tokens.
    let stop: String = chars[8..11].iter().collect();
    let expected = &full[..full.find(&stop).unwrap()];
    let (cut, reason) = engine_text(&b, "abc", 40, vec![stop.clone()]).await;
    assert_eq!(reason, "stop");
    assert_eq!(cut, expected, "stop {stop:?} in {full:?}");
}

#[tokio::test]
async fn batching_joins_between_steps_and_dropped_clients_are_cancelled() {
    let b = backend("tiny-batching", 4);
    let engine = b.engine().clone();
    let sampling = Sampling {
        ignore_eos: true,
        ..Sampling::greedy()
    };
    // A long generation, then a second request once the first is producing tokens.
    let mut a = engine
        .submit(engine.tokenize("first"), 900, sampling.clone(), vec![])
        .unwrap();
    assert!(matches!(a.recv().await, Some(Event::Text(_))));
    let mut second = engine
        .submit(engine.tokenize("second"), 16, sampling.clone(), vec![])
        .unwrap();
    assert!(matches!(second.recv().await, Some(Event::Text(_))));
    // The first is still running: nothing buffered for it is its end.
    while let Ok(ev) = a.try_recv() {
        assert!(
            matches!(ev, Event::Text(_)),
            "first finished before the second's first token: {ev:?}"
        );
    }
    // Client of the first goes away: its sequence is cancelled at the next step.
    drop(a);
    let mut done = None;
    while let Some(ev) = second.recv().await {
        if let Event::Done {
            completion_tokens,
            reason,
            ..
        } = ev
        {
            done = Some((completion_tokens, reason));
        }
    }
    assert_eq!(done, Some((16, "length")));
    for _ in 0..200 {
        if engine.stats().cancelled.load(Ordering::Relaxed) >= 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(engine.stats().cancelled.load(Ordering::Relaxed), 1);
    assert!(engine.stats().multi_sequence_steps.load(Ordering::Relaxed) >= 1);

    // Four at once: all complete with the right usage, decoded together.
    let before = engine.stats().multi_sequence_steps.load(Ordering::Relaxed);
    let runs = (0..4).map(|i| {
        let b = b.clone();
        async move {
            let req = request(&format!("chat number {i}"), 20);
            let expected = b.token_counter().count_messages(&req.messages) as u32;
            (expected, chat(&b, req).await.unwrap())
        }
    });
    for (expected, reply) in futures::future::join_all(runs).await {
        assert_eq!(reply.usage.0, expected);
        assert!(reply.usage.1 >= 1 && reply.usage.1 <= 20);
    }
    assert!(engine.stats().max_sequences_per_step.load(Ordering::Relaxed) >= 2);
    assert!(engine.stats().multi_sequence_steps.load(Ordering::Relaxed) >= before);
}

#[tokio::test]
async fn context_overflow_is_a_context_length_error() {
    let b = backend("tiny-context", 1);
    let err = b.chat(request("hi", 1024)).await.err().unwrap();
    assert!(
        matches!(err, BackendError::ContextLength(ref m) if m.contains("1024")),
        "{err:?}"
    );
    assert!(!err.should_fall_back());
    let long = "x".repeat(3000);
    let err = b.chat(request(&long, 1)).await.err().unwrap();
    assert!(matches!(err, BackendError::ContextLength(_)), "{err:?}");
}

#[tokio::test]
async fn full_queue_is_overloaded_with_retry_after() {
    let config = moltbot_engine::EngineConfig {
        queue_capacity: 1,
        ..common::config("tiny-queue", 1)
    };
    let b = LocalBackend::start(config, None).unwrap();
    let long = request("busy", 600);
    let mut streams = Vec::new();
    let mut overloaded = 0;
    for _ in 0..4 {
        match b.chat(long.clone()).await {
            Ok(s) => streams.push(s),
            Err(BackendError::Overloaded { retry_after }) => {
                assert!(retry_after >= Duration::from_secs(1));
                overloaded += 1;
            }
            Err(e) => panic!("{e:?}"),
        }
    }
    assert!(
        overloaded >= 1 && streams.len() <= 3,
        "{overloaded} overloaded, {} accepted",
        streams.len()
    );
}

#[tokio::test]
async fn parameters_a_local_model_cannot_honour_are_named() {
    let b = backend("tiny-params", 1);
    let cases = [
        ("tools", {
            let mut r = request("x", 4);
            r.tools = Some(json!([{"type": "function", "function": {"name": "f"}}]));
            r
        }),
        ("n", {
            let mut r = request("x", 4);
            r.extra.insert("n".into(), json!(2));
            r
        }),
    ];
    for (param, req) in cases {
        match b.chat(req).await.err() {
            Some(BackendError::Unsupported { param: p, .. }) => assert_eq!(p, param),
            other => panic!("{param}: {other:?}"),
        }
    }
    let mut ok = request("x", 2);
    ok.response_format = Some(json!({"type": "text"}));
    assert!(chat(&b, ok).await.is_ok());
    // JSON output is supported through a grammar (see tests/structured.rs).
}

#[test]
fn corrupt_and_truncated_files_fail_to_load_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(common::tiny_model()).unwrap();
    let cut = dir.path().join("cut.gguf");
    std::fs::write(&cut, &bytes[..bytes.len() - 4096]).unwrap();
    let err = moltbot_engine::gguf::inspect(&cut).unwrap_err().to_string();
    assert!(err.contains("truncated"), "{err}");
    let garbage = dir.path().join("garbage.gguf");
    std::fs::write(&garbage, b"definitely not a model").unwrap();
    let err = LocalBackend::start(moltbot_engine::EngineConfig::new("bad", &garbage), None).unwrap_err();
    assert!(matches!(err, moltbot_engine::EngineError::Load { .. }), "{err:?}");
}
