//! Local (llama.cpp) models in the server: `backend = "local"` entries of the config file, models
//! registered in the database with `moltbot load-model`, and the embedded default model.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use moltbot_config::{BackendKind, Config, ModelConfig};
use moltbot_core::{ChatBackend, Clock, ModelRoute, RegisteredModel, Store, TokenCounter};
use moltbot_engine::{EngineConfig, LocalBackend};

/// The embedded default model: `make model` puts Gemma 3 270M (Q4_K_M) here.
pub const DEFAULT_MODEL_PATH: &str = "models/gemma-3-270m-q4_k_m.gguf";
/// The name it is served under (the same name `MODEL_ENDPOINT` gives the remote default).
pub const DEFAULT_MODEL_NAME: &str = "default";

/// Start a local model's engine (loads the weights; blocking).
pub fn start(m: &ModelConfig) -> anyhow::Result<(Arc<dyn ChatBackend>, Arc<dyn TokenCounter>)> {
    let path = m
        .model_path
        .as_deref()
        .with_context(|| format!("model {}: `model_path` is required", m.name))?;
    let path =
        moltbot_engine::fetch::resolve_local(Path::new(path)).with_context(|| format!("model {}", m.name))?;
    moltbot_engine::gguf::inspect(&path).with_context(|| format!("model {}", m.name))?;
    let config = EngineConfig {
        gpu_layers: m.gpu_layers,
        context_per_slot: m.context_window,
        parallel: m.parallel,
        threads: m.threads,
        batch_size: m.batch_size,
        queue_capacity: m.queue_capacity as usize,
        pooling: m.pooling.map(pooling),
        ..EngineConfig::new(m.name.clone(), path)
    };
    let backend = Arc::new(
        LocalBackend::start(config, m.chat_template.as_deref())
            .with_context(|| format!("model {}", m.name))?,
    );
    let tokens = backend.token_counter();
    Ok((backend, tokens))
}

fn pooling(p: moltbot_config::Pooling) -> moltbot_engine::Pooling {
    match p {
        moltbot_config::Pooling::None => moltbot_engine::Pooling::None,
        moltbot_config::Pooling::Mean => moltbot_engine::Pooling::Mean,
        moltbot_config::Pooling::Cls => moltbot_engine::Pooling::Cls,
        moltbot_config::Pooling::Last => moltbot_engine::Pooling::Last,
    }
}

pub(crate) fn route(m: &ModelConfig, clock: &dyn Clock) -> anyhow::Result<ModelRoute> {
    let (backend, tokens) = start(m)?;
    Ok(ModelRoute {
        name: m.name.clone(),
        backend,
        upstream_model: m.name.clone(),
        max_tokens: m.max_tokens.min(m.context_window),
        context_window: m.context_window,
        temperature: m.temperature,
        top_p: m.top_p,
        fallbacks: m.fallbacks.clone(),
        tokens,
        owned_by: "moltbot-local".into(),
        created: clock.now_secs(),
    })
}

/// A registered model as a config entry (defaults for what the registry does not hold).
fn as_config(r: &RegisteredModel, path: &Path) -> ModelConfig {
    ModelConfig {
        name: r.name.clone(),
        backend: BackendKind::Local,
        model_path: Some(path.display().to_string()),
        context_window: r.context_window,
        max_tokens: r.max_tokens,
        gpu_layers: r.gpu_layers,
        ..ModelConfig::default()
    }
}

/// Routes for the models registered in the database. A name also defined in the config file is an
/// error (config models are fixed). A file missing on this replica is fetched from its source and
/// verified against the registered checksum.
pub async fn registered_routes(
    config: &Config,
    store: &dyn Store,
    clock: &dyn Clock,
) -> anyhow::Result<Vec<ModelRoute>> {
    let mut routes = Vec::new();
    for r in store
        .list_models()
        .await
        .context("cannot read the model registry")?
    {
        if config.models.iter().any(|m| m.name == r.name) {
            anyhow::bail!(
                "model \"{}\" is defined in the config file and also registered with load-model; \
                 rename one of them",
                r.name
            );
        }
        let path = ensure_file(&r)
            .await
            .with_context(|| format!("registered model {}", r.name))?;
        routes.push(route(&as_config(&r, &path), clock)?);
    }
    Ok(routes)
}

async fn ensure_file(r: &RegisteredModel) -> anyhow::Result<PathBuf> {
    let path = PathBuf::from(&r.local_path);
    if !path.exists() {
        tracing::info!(model = %r.name, source = %r.source, "model file missing here; fetching it");
        let source = moltbot_engine::fetch::Source::parse(&r.source)?;
        let mut opts = moltbot_engine::fetch::FetchOptions::new(path.parent().unwrap_or(Path::new(".")));
        opts.object_store = moltbot_engine::fetch::object_store_env();
        let fetched = moltbot_engine::fetch::fetch(&source, &opts).await?;
        let q = moltbot_engine::Quantization::parse(&r.quantization)
            .unwrap_or(moltbot_engine::Quantization::None);
        if q != moltbot_engine::Quantization::None && fetched != path {
            let (from, to) = (fetched.clone(), path.clone());
            tokio::task::spawn_blocking(move || {
                moltbot_engine::quantize::quantize(&from, &to, q, moltbot_engine::default_threads())
            })
            .await??;
        } else if fetched != path {
            tokio::fs::rename(&fetched, &path).await?;
        }
    }
    let checks = moltbot_engine::fetch::Checksums {
        sha256: Some(r.sha256.clone()),
        md5: None,
    };
    moltbot_engine::fetch::verify(&path, &checks, false)?;
    Ok(path)
}

/// The embedded default model, when no remote model is configured, nothing is named `default`
/// already, and `models/gemma-3-270m-q4_k_m.gguf` exists.
pub fn default_route(
    config: &Config,
    taken: &[String],
    clock: &dyn Clock,
) -> anyhow::Result<Option<ModelRoute>> {
    let has_remote = config.models.iter().any(|m| m.backend == BackendKind::Remote);
    if has_remote || taken.iter().any(|n| n == DEFAULT_MODEL_NAME) || !Path::new(DEFAULT_MODEL_PATH).exists()
    {
        return Ok(None);
    }
    tracing::info!(
        path = DEFAULT_MODEL_PATH,
        "no remote model configured: serving the embedded default model"
    );
    let m = ModelConfig {
        name: DEFAULT_MODEL_NAME.into(),
        backend: BackendKind::Local,
        model_path: Some(DEFAULT_MODEL_PATH.into()),
        context_window: 4096,
        max_tokens: 512,
        temperature: Some(0.7),
        ..ModelConfig::default()
    };
    route(&m, clock).map(Some)
}
