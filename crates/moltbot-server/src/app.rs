//! Building the application from configuration: the store (migrated per policy), the model backends
//! and the chat service.

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::Context;
use moltbot_config::{BackendKind, Config, ModelConfig};
use moltbot_core::{
    ChatBackend, ChatService, Clock, ModelRegistry, ModelRoute, Store, SystemClock, TokenCounter,
};
use moltbot_store::StoreOptions;

use crate::state::{AppState, Readiness, Shared};

#[derive(Debug, Clone, Copy, Default)]
pub struct BuildOptions {
    /// Apply pending PostgreSQL migrations at start (SQLite is always migrated).
    pub migrate: bool,
}

/// Open the store and check its schema: SQLite is migrated automatically; PostgreSQL only with
/// `--migrate`, otherwise an out-of-date schema refuses to start.
pub async fn open_store(config: &Config, opts: BuildOptions) -> anyhow::Result<Arc<dyn Store>> {
    let store_opts = StoreOptions {
        max_connections: config.store.max_connections,
        busy_timeout: config.store.busy_timeout,
        password: config.database_password.as_ref().map(|s| s.expose().to_owned()),
    };
    let store = moltbot_store::open(&config.database_url, &store_opts)
        .await
        .context("cannot open the database")?;
    if store.kind() == "sqlite" || opts.migrate {
        let status = store.migrate().await.context("cannot migrate the database")?;
        tracing::info!(
            schema_version = status.applied,
            backend = store.kind(),
            "database ready"
        );
    } else {
        let status = store
            .schema_status()
            .await
            .context("cannot read the database schema version")?;
        if !status.is_current() {
            anyhow::bail!(
                "the {} schema is at version {} but this binary needs migrations {:?}; run `moltbot init-db` \
                 (or start with --migrate)",
                store.kind(),
                status.applied,
                status.pending
            );
        }
    }
    Ok(store)
}

/// Build every configured model's backend and route.
pub fn build_models(config: &Config, clock: &dyn Clock) -> anyhow::Result<ModelRegistry> {
    let mut counters: HashMap<String, Arc<dyn TokenCounter>> = HashMap::new();
    let mut routes = Vec::new();
    for m in &config.models {
        if m.backend == BackendKind::Local {
            routes.push(crate::local::route(m, clock)?);
            continue;
        }
        let encoding = m.tokenizer.clone().unwrap_or_else(|| config.tokenizer.clone());
        let tokens = match counters.get(&encoding) {
            Some(c) => c.clone(),
            None => {
                let c: Arc<dyn TokenCounter> = Arc::new(
                    moltbot_llm::TiktokenCounter::new(&encoding)
                        .with_context(|| format!("model {}: tokenizer {encoding}", m.name))?,
                );
                counters.insert(encoding, c.clone());
                c
            }
        };
        let backend: Arc<dyn ChatBackend> = match m.backend {
            BackendKind::Remote => Arc::new(remote_backend(m, tokens.clone())?),
            BackendKind::Local => continue,
        };
        routes.push(ModelRoute {
            name: m.name.clone(),
            backend,
            upstream_model: m.upstream_model().to_owned(),
            max_tokens: m.max_tokens,
            context_window: m.context_window,
            temperature: m.temperature,
            top_p: m.top_p,
            fallbacks: m.fallbacks.clone(),
            tokens,
            owned_by: "moltbot".into(),
            created: clock.now_secs(),
        });
    }
    Ok(ModelRegistry::new(routes))
}

fn remote_backend(
    m: &ModelConfig,
    tokens: Arc<dyn TokenCounter>,
) -> anyhow::Result<moltbot_llm::RemoteBackend> {
    let base_url = m
        .endpoint
        .clone()
        .with_context(|| format!("model {}: `endpoint` is required", m.name))?;
    let settings = moltbot_llm::RemoteSettings {
        name: m.name.clone(),
        base_url,
        api_keys: m.keys().into_iter().map(|k| k.expose().to_owned()).collect(),
        timeouts: moltbot_llm::Timeouts {
            connect: m.timeouts.connect,
            first_byte: m.timeouts.first_byte,
            idle: m.timeouts.idle,
            total: m.timeouts.total,
        },
        retry: moltbot_llm::RetryPolicy {
            max_attempts: m.retry.max_attempts,
            base_delay: m.retry.base_delay,
            max_delay: m.retry.max_delay,
            retry_after_cap: m.retry.retry_after_cap,
        },
        circuit: moltbot_llm::CircuitSettings {
            failure_threshold: m.circuit.failure_threshold,
            open_for: m.circuit.open_for,
        },
        limits: moltbot_llm::OutboundLimits {
            requests_per_minute: m.limits.requests_per_minute,
            tokens_per_minute: m.limits.tokens_per_minute,
        },
        key_cooldown: m.key_cooldown,
        always_stream: m.always_stream,
    };
    let client = moltbot_llm::http_client(m.timeouts.connect);
    Ok(moltbot_llm::RemoteBackend::new(settings, client).with_token_counter(tokens))
}

/// `[memory]` as the chat service takes it.
fn memory_settings(m: &moltbot_config::MemoryConfig) -> moltbot_core::MemorySettings {
    moltbot_core::MemorySettings {
        enabled: m.enabled,
        compact_at: m.compact_at,
        keep_recent: m.keep_recent,
        summary_model: m.summary_model.clone(),
        summary_max_tokens: m.summary_max_tokens,
        prompt: m
            .prompt
            .clone()
            .unwrap_or_else(|| moltbot_core::memory::DEFAULT_PROMPT.to_owned()),
    }
}

/// Everything `serve` needs, from a validated configuration.
pub async fn build_state(config: Config, opts: BuildOptions) -> anyhow::Result<AppState> {
    // Install the metrics recorder before anything records (backends publish their circuit state).
    crate::telemetry::install();
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let store = open_store(&config, opts).await?;
    let mut routes: Vec<ModelRoute> = build_models(&config, clock.as_ref())?.iter().cloned().collect();
    routes.extend(crate::local::registered_routes(&config, store.as_ref(), clock.as_ref()).await?);
    let names: Vec<String> = routes.iter().map(|r| r.name.clone()).collect();
    routes.extend(crate::local::default_route(&config, &names, clock.as_ref())?);
    let models = Arc::new(ModelRegistry::new(routes));
    if models.is_empty() {
        tracing::warn!(
            "no model is configured: set MODEL_ENDPOINT (and API_KEY), add [[models]] to moltbot.toml, \
             or run `make model` for the embedded local default; \
             chat requests will get 404 model_not_found"
        );
    }
    let chat = Arc::new(
        ChatService::new(
            store.clone(),
            models,
            clock.clone(),
            config.store.record_exchanges,
        )
        .with_memory(memory_settings(&config.memory)),
    );
    let mut auth = crate::auth::Auth::new(&config, store.clone(), clock.clone());
    if let Some(url) = &config.redis_url {
        let shared = crate::cluster::Shared::start(url, &config.cluster)
            .map_err(|e| anyhow::anyhow!("redis_url: {e}"))?;
        tracing::info!(
            redis.policy = ?config.cluster.redis_failure,
            "cluster mode: rate limits, quotas, lockouts, WebSocket tickets and sign-outs shared through Redis"
        );
        auth = auth.with_cluster(shared);
    }
    let auth = Arc::new(auth);
    let channels = Arc::new(crate::channels::from_config(&config)?);
    Ok(AppState::new(Shared {
        channels,
        auth,
        body_limit: config.server.body_limit_bytes,
        telemetry: crate::telemetry::Telemetry::new(config.server.debug_requests),
        config: Arc::new(config),
        store,
        chat,
        clock,
        readiness: Arc::new(Readiness::default()),
    }))
}
