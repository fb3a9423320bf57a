//! The documented rule on the real default model, Gemma 3 270M (a generative model: no pooling type in
//! its GGUF): embeddings are refused, and work once the configuration names a pooling. Needs
//! `make model` (or `MOLTBOT_TEST_GEMMA`); skipped without it unless `CI=true`. In the `gemma` nextest
//! group.

use std::path::PathBuf;

mod common;

use common::gemma;
use moltbot_core::{BackendError, ChatBackend, EmbedInput, EmbedRequest};
use moltbot_engine::{EngineConfig, LocalBackend, Pooling};

fn start(path: PathBuf, pooling: Option<Pooling>) -> LocalBackend {
    let config = EngineConfig {
        threads: Some(1),
        parallel: 1,
        context_per_slot: 512,
        pooling,
        ..EngineConfig::new("gemma", path)
    };
    LocalBackend::start(config, None).unwrap()
}

fn request(texts: &[&str]) -> EmbedRequest {
    EmbedRequest {
        model: "gemma".into(),
        inputs: texts.iter().map(|t| EmbedInput::Text((*t).to_owned())).collect(),
        ..EmbedRequest::default()
    }
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

#[tokio::test]
async fn gemma_is_refused_by_default_and_embeds_with_a_configured_pooling() {
    let Some(path) = gemma() else { return };
    match start(path.clone(), None).embed(request(&["hello"])).await {
        Err(BackendError::Unsupported { param, message }) => {
            assert_eq!(param, "model");
            assert!(message.contains("generative model"), "{message}");
        }
        other => panic!("{other:?}"),
    }

    let b = start(path, Some(Pooling::Mean));
    let texts = [
        "The capital of France is Paris.",
        "Paris is the capital city of France.",
        "Bananas are a good source of potassium.",
    ];
    let out = b.embed(request(&texts)).await.unwrap();
    assert_eq!(out.vectors.len(), 3);
    for v in &out.vectors {
        assert_eq!(v.len(), 640, "Gemma 3 270M's hidden size");
        assert!((dot(v, v).sqrt() - 1.0).abs() < 1e-4);
    }
    let (near, far) = (
        dot(&out.vectors[0], &out.vectors[1]),
        dot(&out.vectors[0], &out.vectors[2]),
    );
    eprintln!("gemma mean-pooled cosine: paraphrase {near:.3}, unrelated {far:.3}");
    assert!(
        near > far,
        "a paraphrase is closer than an unrelated sentence: {near} vs {far}"
    );
    let one = b.embed(request(&texts[..1])).await.unwrap();
    let diff = one.vectors[0]
        .iter()
        .zip(&out.vectors[0])
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max);
    assert!(diff < 1e-3, "batched and alone differ by {diff}");
}
