//! `moltbot load-model`: fetch (with progress and resume), verify the checksum, check the GGUF header,
//! quantize when asked, run a short smoke generation, and register the model in the database.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use moltbot_core::{BackendRequest, ChatBackend, Clock, RegisteredModel, SystemClock};
use moltbot_engine::fetch::{self, Checksums, FetchOptions, Source};
use moltbot_engine::{EngineConfig, LocalBackend, Quantization, gguf};

use crate::args::{GlobalArgs, LoadModelArgs};

pub fn run(global: &GlobalArgs, args: &LoadModelArgs) -> anyhow::Result<ExitCode> {
    let config = super::load_config(global)?.config;
    moltbot_server::logging::init(
        config.log.format == moltbot_config::LogFormat::Json,
        &config.log.level,
    );
    let q = Quantization::parse(&args.quantization).with_context(|| {
        format!(
            "--quantization {}: expected 4bit, 8bit or none",
            args.quantization
        )
    })?;
    let source = Source::parse(&args.model_path)?;
    let rt = super::runtime()?;

    // 1. Fetch.
    let mut opts = FetchOptions::new(&args.models_dir);
    opts.progress = true;
    opts.object_store = fetch::object_store_env();
    let path = rt.block_on(fetch::fetch(&source, &opts))?;
    let downloaded = !matches!(source, Source::Local(_));
    eprintln!("model file: {}", path.display());

    // 2. Checksum (a downloaded file that does not match is removed).
    let expected = Checksums {
        sha256: args.sha256.clone(),
        md5: args.md5.clone(),
    };
    fetch::verify(&path, &expected, downloaded)?;
    if expected.sha256.is_some() || expected.md5.is_some() {
        eprintln!("checksum: ok");
    }

    // 3. Header.
    let info = gguf::inspect(&path)?;
    let weights = info.weight_type();
    eprintln!(
        "GGUF v{}: architecture {}, {} tensors, weights {}, chat template: {}",
        info.version,
        info.architecture().unwrap_or("unknown"),
        info.tensor_count,
        weights.map_or("unknown", gguf::TensorType::name),
        if info.chat_template().is_some() {
            "yes"
        } else {
            "none (plain transcript prompts)"
        }
    );

    // 4. Quantization.
    let final_path = match (q, weights) {
        (Quantization::None, _) => path.clone(),
        (q, Some(ty)) if q.matches(ty) => {
            eprintln!("already {}; nothing to quantize", ty.name());
            path.clone()
        }
        (q, _) => {
            let stem = path
                .file_stem()
                .map_or("model".into(), |s| s.to_string_lossy().into_owned());
            let out = args
                .models_dir
                .join(format!("{stem}-{}.gguf", q.gguf_name().to_ascii_lowercase()));
            std::fs::create_dir_all(&args.models_dir)?;
            eprintln!("quantizing to {} → {} (CPU)…", q.gguf_name(), out.display());
            moltbot_engine::quantize::quantize(&path, &out, q, moltbot_engine::default_threads())?;
            out
        }
    };
    let final_path = std::fs::canonicalize(&final_path).unwrap_or(final_path);

    // 5. Name and limits.
    let name = args.name.clone().unwrap_or_else(|| {
        final_path
            .file_stem()
            .map_or("local".into(), |s| s.to_string_lossy().into_owned())
    });
    if config.models.iter().any(|m| m.name == name) {
        anyhow::bail!(
            "model \"{name}\" is defined in the config file; config models are fixed — pass another --name"
        );
    }
    let trained = info
        .context_length()
        .map_or(4096, |n| n.min(u64::from(u32::MAX)) as u32);
    let context = args.context.unwrap_or(trained.min(4096));
    if args.gpu_layers > 0 && !moltbot_engine::gpu_offload_available() {
        eprintln!("warning: no GPU offload in this build or on this machine; the model runs on the CPU");
    }

    // 6. Smoke generation.
    if !args.no_smoke {
        let reply = smoke(&rt, &name, &final_path, args.gpu_layers, context)?;
        eprintln!("smoke test reply: {reply:?}");
    }

    // 7. Register.
    let (sha256, md5) = fetch::digests(&final_path)?;
    let model = RegisteredModel {
        name: name.clone(),
        source: match &source {
            Source::Local(_) => final_path.display().to_string(),
            Source::Http(u) | Source::Object(u) => u.to_string(),
        },
        local_path: final_path.display().to_string(),
        sha256,
        md5,
        quantization: q.as_str().to_owned(),
        context_window: context,
        max_tokens: args.max_tokens.min(context),
        gpu_layers: args.gpu_layers,
        created_at: SystemClock.now_secs(),
    };
    rt.block_on(async {
        let store =
            moltbot_server::app::open_store(&config, moltbot_server::BuildOptions { migrate: true }).await?;
        store
            .upsert_model(&model)
            .await
            .context("cannot register the model")
    })?;
    println!(
        "registered model \"{name}\" ({}; context {context}, max_tokens {}); restart `moltbot serve` to serve it",
        final_path.display(),
        model.max_tokens
    );
    Ok(ExitCode::SUCCESS)
}

fn smoke(
    rt: &tokio::runtime::Runtime,
    name: &str,
    path: &std::path::Path,
    gpu_layers: u32,
    context: u32,
) -> anyhow::Result<String> {
    let config = EngineConfig {
        gpu_layers,
        context_per_slot: context.min(1024),
        parallel: 1,
        ..EngineConfig::new(name, PathBuf::from(path))
    };
    let backend = Arc::new(LocalBackend::start(config, None)?);
    rt.block_on(async {
        use futures::StreamExt;
        let request = BackendRequest {
            model: name.into(),
            messages: vec![moltbot_api::ChatMessage::text("user", "Say hello.")],
            max_tokens: 8,
            temperature: Some(0.0),
            ..BackendRequest::default()
        };
        let mut stream = backend.chat(request).await.context("smoke generation failed")?;
        let mut text = String::new();
        while let Some(ev) = stream.next().await {
            if let moltbot_core::BackendEvent::Delta { content: Some(c), .. } =
                ev.context("smoke generation failed")?
            {
                text.push_str(&c);
            }
        }
        Ok(text)
    })
}
