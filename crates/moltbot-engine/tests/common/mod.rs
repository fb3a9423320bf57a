//! Shared helpers: the tiny random-weight model (written once per test binary) and collecting a
//! backend stream.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use futures::StreamExt;
use moltbot_api::ChatMessage;
use moltbot_core::{BackendError, BackendEvent, BackendRequest, ChatBackend, EventStream};
use moltbot_engine::gguf::{SyntheticShape, TensorType, write_synthetic};
use moltbot_engine::{EngineConfig, LocalBackend};

static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();

fn dir() -> &'static Path {
    DIR.get_or_init(|| tempfile::tempdir().expect("tempdir")).path()
}

/// The tiny chatml llama model (F32), written on first use.
pub fn tiny_model() -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let p = dir().join("tiny-f32.gguf");
        write_synthetic(&p, &SyntheticShape::tiny(), TensorType::F32, 1).expect("write tiny model");
        p
    })
    .clone()
}

pub fn config(name: &str, parallel: u32) -> EngineConfig {
    EngineConfig {
        threads: Some(1),
        parallel,
        context_per_slot: 1024,
        batch_size: 256,
        ..EngineConfig::new(name, tiny_model())
    }
}

pub fn backend(name: &str, parallel: u32) -> Arc<LocalBackend> {
    Arc::new(LocalBackend::start(config(name, parallel), None).expect("start tiny model"))
}

pub fn request(text: &str, max_tokens: u32) -> BackendRequest {
    BackendRequest {
        model: "tiny".into(),
        messages: vec![ChatMessage::text("user", text)],
        max_tokens,
        temperature: Some(0.0),
        ..BackendRequest::default()
    }
}

/// Text, finish reason and (prompt, completion) usage of a whole stream.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    pub text: String,
    pub deltas: usize,
    pub finish: String,
    pub usage: (u32, u32),
}

pub async fn collect(mut stream: EventStream) -> Result<Reply, BackendError> {
    let mut r = Reply {
        text: String::new(),
        deltas: 0,
        finish: String::new(),
        usage: (0, 0),
    };
    while let Some(ev) = stream.next().await {
        match ev? {
            BackendEvent::Delta { content, .. } => {
                r.text.push_str(content.as_deref().unwrap_or(""));
                r.deltas += 1;
            }
            BackendEvent::Finish { reason } => r.finish = reason,
            BackendEvent::Usage(u) => r.usage = (u.prompt_tokens, u.completion_tokens),
        }
    }
    Ok(r)
}

pub async fn chat(backend: &LocalBackend, req: BackendRequest) -> Result<Reply, BackendError> {
    collect(backend.chat(req).await?).await
}

/// The embedded default model, Gemma 3 270M (`make model`, or `MOLTBOT_TEST_GEMMA`); `None` (skip) when it
/// is missing, except under `CI=true`, where a missing model fails the test.
pub fn gemma() -> Option<PathBuf> {
    let path = std::env::var_os("MOLTBOT_TEST_GEMMA")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../models/gemma-3-270m-q4_k_m.gguf")
        });
    if path.exists() {
        return Some(path);
    }
    assert!(
        std::env::var("CI").is_err(),
        "{} is missing: run `make model`",
        path.display()
    );
    eprintln!("skipping: {} is missing (make model)", path.display());
    None
}
