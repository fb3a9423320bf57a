//! Local embeddings on generated tiny models: a llama GGUF with `llama.pooling_type` is an embedding
//! model; one without is refused unless the configuration names a pooling.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use moltbot_core::{BackendError, ChatBackend, EmbedInput, EmbedRequest};
use moltbot_engine::gguf::{SyntheticOptions, SyntheticShape, TensorType, write_synthetic_with};
use moltbot_engine::{EngineConfig, LocalBackend, Pooling};

static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();

fn model(pooling_type: Option<u32>) -> PathBuf {
    let dir = DIR.get_or_init(|| tempfile::tempdir().expect("tempdir")).path();
    let path = dir.join(format!("tiny-{pooling_type:?}.gguf"));
    if !path.exists() {
        let tmp = dir.join(format!("{}.tmp", std::process::id()));
        write_synthetic_with(
            &tmp,
            &SyntheticShape::tiny(),
            TensorType::F32,
            11,
            &SyntheticOptions { pooling_type },
        )
        .expect("write tiny model");
        std::fs::rename(&tmp, &path).expect("rename");
    }
    path
}

fn start(path: &Path, context: u32, pooling: Option<Pooling>) -> Arc<LocalBackend> {
    let config = EngineConfig {
        threads: Some(1),
        parallel: 1,
        context_per_slot: context,
        batch_size: 64,
        pooling,
        ..EngineConfig::new("tiny-embed", path)
    };
    Arc::new(LocalBackend::start(config, None).expect("start tiny model"))
}

fn request(texts: &[&str]) -> EmbedRequest {
    EmbedRequest {
        model: "tiny-embed".into(),
        inputs: texts.iter().map(|t| EmbedInput::Text((*t).to_owned())).collect(),
        ..EmbedRequest::default()
    }
}

fn norm(v: &[f32]) -> f32 {
    v.iter().map(|x| x * x).sum::<f32>().sqrt()
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

#[tokio::test]
async fn an_embedding_model_gives_unit_vectors_batched_or_not() {
    let b = start(&model(Some(1)), 256, None);
    let texts = [
        "the cat sat",
        "a completely different sentence",
        "the cat sat",
        "x",
    ];
    let out = b.embed(request(&texts)).await.unwrap();
    assert_eq!(out.vectors.len(), 4);
    for v in &out.vectors {
        assert_eq!(v.len(), 256, "n_embd of the tiny shape");
        assert!((norm(v) - 1.0).abs() < 1e-4, "|v| = {}", norm(v));
    }
    assert!(
        max_diff(&out.vectors[0], &out.vectors[2]) < 1e-5,
        "same text in one batch, same vector"
    );
    assert!(
        max_diff(&out.vectors[0], &out.vectors[1]) > 1e-2,
        "different texts differ"
    );
    let vocab = b.engine().model.vocab();
    let expected: usize = texts
        .iter()
        .map(|t| vocab.tokenize(t.as_bytes(), true, false).len())
        .sum();
    assert_eq!(
        out.prompt_tokens as usize, expected,
        "prompt tokens are the tokens read"
    );

    // One by one gives the same vectors as the batch (up to float rounding across batch shapes).
    let mut tokens = 0;
    for (i, t) in texts.iter().enumerate() {
        let one = b.embed(request(&[t])).await.unwrap();
        tokens += one.prompt_tokens;
        let d = max_diff(&one.vectors[0], &out.vectors[i]);
        assert!(d < 1e-4, "input {i}: batched and alone differ by {d}");
    }
    assert_eq!(tokens, out.prompt_tokens, "prompt tokens add up");

    // Token ids embed like the text they spell when they are the same tokens.
    let ids = b.engine().model.vocab().tokenize(b"the cat sat", true, false);
    let by_ids = EmbedRequest {
        inputs: vec![EmbedInput::Tokens(ids.iter().map(|t| t.0 as u32).collect())],
        ..request(&[])
    };
    let v = b.embed(by_ids).await.unwrap();
    assert!(max_diff(&v.vectors[0], &out.vectors[0]) < 1e-4);
}

#[tokio::test]
async fn more_inputs_than_one_decode_holds_are_split() {
    // A 48-token context: 40 inputs of a few tokens need several decodes (and more than MAX_SEQS).
    let b = start(&model(Some(1)), 48, None);
    let texts: Vec<String> = (0..40).map(|i| format!("n{i}")).collect();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let all = b.embed(request(&refs)).await.unwrap();
    assert_eq!(all.vectors.len(), 40);
    for i in [0, 17, 39] {
        let one = b.embed(request(&[refs[i]])).await.unwrap();
        assert!(max_diff(&one.vectors[0], &all.vectors[i]) < 1e-4, "input {i}");
    }
}

#[tokio::test]
async fn limits_and_parameters_are_checked_before_the_queue() {
    let b = start(&model(Some(1)), 32, None);
    let long = "abcdefgh ".repeat(10);
    match b.embed(request(&["short", &long])).await {
        Err(BackendError::ContextLength(m)) => {
            assert!(m.contains("maximum context length is 32 tokens"), "{m}");
            assert!(m.contains("input[1]"), "{m}");
        }
        other => panic!("{other:?}"),
    }
    let wrong_dims = EmbedRequest {
        dimensions: Some(128),
        ..request(&["a"])
    };
    match b.embed(wrong_dims).await {
        Err(BackendError::Unsupported { param, .. }) => assert_eq!(param, "dimensions"),
        other => panic!("{other:?}"),
    }
    let right_dims = EmbedRequest {
        dimensions: Some(256),
        ..request(&["a"])
    };
    assert!(b.embed(right_dims).await.is_ok());
    let bad_token = EmbedRequest {
        inputs: vec![EmbedInput::Tokens(vec![1, 1_000_000])],
        ..request(&[])
    };
    match b.embed(bad_token).await {
        Err(BackendError::InvalidRequest { param, .. }) => assert_eq!(param.as_deref(), Some("input")),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn generative_models_are_refused_unless_a_pooling_is_configured() {
    let plain = model(None);
    let b = start(&plain, 128, None);
    match b.embed(request(&["a"])).await {
        Err(BackendError::Unsupported { param, message }) => {
            assert_eq!(param, "model");
            assert!(message.contains("pooling"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    let off = start(&model(Some(1)), 128, Some(Pooling::None));
    assert!(matches!(
        off.embed(request(&["a"])).await,
        Err(BackendError::Unsupported { .. })
    ));

    let mean = start(&plain, 128, Some(Pooling::Mean))
        .embed(request(&["a b c"]))
        .await
        .unwrap();
    let last = start(&plain, 128, Some(Pooling::Last))
        .embed(request(&["a b c"]))
        .await
        .unwrap();
    let cls = start(&plain, 128, Some(Pooling::Cls))
        .embed(request(&["a b c"]))
        .await
        .unwrap();
    for v in [&mean, &last, &cls] {
        assert!((norm(&v.vectors[0]) - 1.0).abs() < 1e-4);
    }
    assert!(
        max_diff(&mean.vectors[0], &last.vectors[0]) > 1e-3,
        "the pooling is applied"
    );
    assert!(
        max_diff(&cls.vectors[0], &last.vectors[0]) > 1e-3,
        "the pooling is applied"
    );
    // The GGUF's pooling and the same pooling configured give the same vectors.
    let declared = start(&model(Some(1)), 128, None)
        .embed(request(&["a b c"]))
        .await
        .unwrap();
    let configured = start(&model(Some(1)), 128, Some(Pooling::Mean))
        .embed(request(&["a b c"]))
        .await
        .unwrap();
    assert!(max_diff(&declared.vectors[0], &configured.vectors[0]) < 1e-5);
}

#[tokio::test]
async fn a_client_that_goes_away_does_not_stop_the_embedder() {
    let b = start(&model(Some(1)), 64, None);
    let texts: Vec<String> = (0..64).map(|i| format!("text {i}")).collect();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    // Submitted (the first poll queues the job), then abandoned: its reply channel closes.
    let fut = b.embed(request(&refs));
    let _ = tokio::time::timeout(std::time::Duration::from_millis(1), fut).await;
    let out = b.embed(request(&["still here"])).await.unwrap();
    assert_eq!(out.vectors.len(), 1);
}
