//! The engine: one OS thread owns the llama.cpp context; requests arrive over a bounded queue, each
//! with its own response channel, and a continuous-batching scheduler decodes every active sequence
//! in one `llama_batch` per step (per-sequence KV cache; new requests join between steps, finished
//! or cancelled ones leave).

use std::num::NonZeroU32;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, TrySendError, sync_channel};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::LlamaToken;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};

use crate::metrics as m;
use crate::sampling::Sampling;
use crate::text::{Stop, StopMatcher, Utf8Stream};

/// How to run one local model.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Name used in logs and metric labels.
    pub name: String,
    pub model_path: PathBuf,
    /// Layers offloaded to the GPU (0 = CPU only; more than the model has = all).
    pub gpu_layers: u32,
    /// Context (prompt + output) of each sequence, in tokens.
    pub context_per_slot: u32,
    /// Sequences decoded together (continuous batching slots).
    pub parallel: u32,
    /// CPU threads; `None` = [`default_threads`].
    pub threads: Option<u32>,
    /// Tokens per decode step (prompt chunks + one per generating sequence).
    pub batch_size: u32,
    /// Requests waiting for a slot before new ones get `Overloaded`.
    pub queue_capacity: usize,
    /// Embeddings: the pooling, overriding the GGUF's `{arch}.pooling_type` (see [`crate::embed`]).
    pub pooling: Option<crate::embed::Pooling>,
}

impl EngineConfig {
    pub fn new(name: impl Into<String>, model_path: impl Into<PathBuf>) -> Self {
        Self {
            name: name.into(),
            model_path: model_path.into(),
            gpu_layers: 0,
            context_per_slot: 4096,
            parallel: 4,
            threads: None,
            batch_size: 512,
            queue_capacity: 64,
            pooling: None,
        }
    }
}

/// Half the logical CPUs (about the physical cores), at least 1 and at most 16: more threads than idle
/// cores makes llama.cpp much slower, not faster.
pub fn default_threads() -> u32 {
    let n = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
    (n / 2).clamp(1, 16)
}

#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum EngineError {
    #[error("llama.cpp could not be initialised: {0}")]
    Backend(String),
    #[error("cannot load model {path}: {message}")]
    Load { path: String, message: String },
    #[error("cannot create a context for model {name}: {message}")]
    Context { name: String, message: String },
    #[error("the request queue is full")]
    QueueFull,
    #[error("the engine has stopped")]
    Stopped,
    #[error(
        "the prompt ({prompt} tokens) plus max_tokens ({max_tokens}) exceeds the context of {context} tokens"
    )]
    ContextLength {
        prompt: u32,
        max_tokens: u32,
        context: u32,
    },
    #[error("generation failed: {0}")]
    Decode(String),
}

static BACKEND: OnceLock<Result<LlamaBackend, String>> = OnceLock::new();

/// The process-wide llama.cpp backend (initialised once; llama.cpp's logs go to `tracing` at debug).
pub fn backend() -> Result<&'static LlamaBackend, EngineError> {
    BACKEND
        .get_or_init(|| {
            // llama.cpp logs every load step at INFO: forward them only when this crate logs at debug.
            let verbose = tracing::enabled!(tracing::Level::DEBUG);
            llama_cpp_2::send_logs_to_tracing(llama_cpp_2::LogOptions::default().with_logs_enabled(verbose));
            // A portable build has no CPU backend until one module is chosen and loaded.
            crate::cpu::ensure_loaded()?;
            LlamaBackend::init().map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|e| EngineError::Backend(e.clone()))
}

/// Load a model's weights (and vocabulary).
pub fn load_model(path: &std::path::Path, gpu_layers: u32) -> Result<LlamaModel, EngineError> {
    let backend = backend()?;
    let mut gpu_layers = gpu_layers;
    if gpu_layers > 0 && !backend.supports_gpu_offload() {
        tracing::warn!(
            gpu_layers,
            "this build or machine has no GPU offload; running on the CPU"
        );
        gpu_layers = 0;
    }
    let params = LlamaModelParams::default().with_n_gpu_layers(gpu_layers);
    LlamaModel::load_from_file(backend, path, &params).map_err(|e| EngineError::Load {
        path: path.display().to_string(),
        message: e.to_string(),
    })
}

/// What one generation streams back.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Text(String),
    /// The last event: `stop` (end of turn or stop string) or `length`.
    Done {
        reason: &'static str,
        prompt_tokens: u32,
        completion_tokens: u32,
    },
    Error(String),
}

/// One queued generation.
pub struct Job {
    pub prompt: Vec<LlamaToken>,
    pub max_tokens: u32,
    pub sampling: Sampling,
    pub stops: Vec<String>,
    tx: UnboundedSender<Event>,
    queued_at: Instant,
}

/// Counters the scheduler keeps besides the `metrics` it records (tests and `bench-engine` read these).
#[derive(Debug, Default)]
pub struct EngineStats {
    pub steps: AtomicU64,
    /// Decode steps that carried two or more sequences.
    pub multi_sequence_steps: AtomicU64,
    pub max_sequences_per_step: AtomicU64,
    pub prompt_tokens: AtomicU64,
    pub generated_tokens: AtomicU64,
    pub cancelled: AtomicU64,
}

/// A running engine. Dropping it stops the thread once the running sequences are done.
pub struct Engine {
    pub model: Arc<LlamaModel>,
    config: EngineConfig,
    tx: SyncSender<Job>,
    queued: Arc<AtomicUsize>,
    stats: Arc<EngineStats>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Engine {
    /// Load the model and start the engine thread; returns once the context exists.
    pub fn start(config: EngineConfig) -> Result<Self, EngineError> {
        let model = Arc::new(load_model(&config.model_path, config.gpu_layers)?);
        Self::with_model(config, model)
    }

    pub fn with_model(config: EngineConfig, model: Arc<LlamaModel>) -> Result<Self, EngineError> {
        crate::metrics::describe();
        let (tx, rx) = sync_channel::<Job>(config.queue_capacity.max(1));
        let queued = Arc::new(AtomicUsize::new(0));
        let stats = Arc::new(EngineStats::default());
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let worker = Worker {
            model: model.clone(),
            config: config.clone(),
            queued: queued.clone(),
            stats: stats.clone(),
        };
        std::thread::Builder::new()
            .name(format!("engine-{}", config.name))
            .spawn(move || worker.run(&rx, &ready_tx))
            .map_err(|e| EngineError::Context {
                name: config.name.clone(),
                message: e.to_string(),
            })?;
        ready_rx.recv().map_err(|_| EngineError::Stopped)??;
        Ok(Self {
            model,
            config,
            tx,
            queued,
            stats,
        })
    }

    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    pub fn stats(&self) -> &EngineStats {
        &self.stats
    }

    /// Requests waiting for a slot.
    pub fn queue_depth(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }

    /// Tokenize a rendered prompt (special tokens in the text are parsed; BOS is added when the model
    /// wants one and the text does not already start with it).
    pub fn tokenize(&self, text: &str) -> Vec<LlamaToken> {
        let vocab = self.model.vocab();
        let bos = vocab.token_to_piece(vocab.bos(), true, None);
        let has_bos = !bos.is_empty() && text.as_bytes().starts_with(&bos);
        let add_bos = vocab.should_add_bos() && !has_bos;
        vocab.tokenize(text.as_bytes(), add_bos, true)
    }

    /// Queue a generation. Fails at once when the prompt and `max_tokens` do not fit a slot, or the
    /// queue is full. Dropping the receiver cancels the generation at the next step.
    pub fn submit(
        &self,
        prompt: Vec<LlamaToken>,
        max_tokens: u32,
        sampling: Sampling,
        stops: Vec<String>,
    ) -> Result<UnboundedReceiver<Event>, EngineError> {
        let context = self.config.context_per_slot;
        let len = prompt.len() as u32;
        if prompt.is_empty() || len.saturating_add(max_tokens) > context {
            return Err(EngineError::ContextLength {
                prompt: len,
                max_tokens,
                context,
            });
        }
        let (tx, rx) = unbounded_channel();
        let job = Job {
            prompt,
            max_tokens,
            sampling,
            stops,
            tx,
            queued_at: Instant::now(),
        };
        self.queued.fetch_add(1, Ordering::Relaxed);
        match self.tx.try_send(job) {
            Ok(()) => {
                m::queue_depth(&self.config.name, self.queued.load(Ordering::Relaxed));
                Ok(rx)
            }
            Err(e) => {
                self.queued.fetch_sub(1, Ordering::Relaxed);
                m::rejected(&self.config.name);
                Err(match e {
                    TrySendError::Full(_) => EngineError::QueueFull,
                    TrySendError::Disconnected(_) => EngineError::Stopped,
                })
            }
        }
    }
}

struct Worker {
    model: Arc<LlamaModel>,
    config: EngineConfig,
    queued: Arc<AtomicUsize>,
    stats: Arc<EngineStats>,
}

/// One sequence being generated.
struct Seq {
    slot: i32,
    job: Job,
    /// Prompt tokens already in the KV cache.
    prompt_done: usize,
    n_past: i32,
    /// The token to feed next (sampled last step).
    next: Option<LlamaToken>,
    /// Batch index whose logits this sequence samples from after the current decode.
    logits_at: Option<i32>,
    sampler: LlamaSampler,
    generated: u32,
    utf8: Utf8Stream,
    stop: StopMatcher,
    prefill_started: Instant,
    first_token_at: Option<Instant>,
}

impl Worker {
    fn run(self, rx: &Receiver<Job>, ready: &std::sync::mpsc::Sender<Result<(), EngineError>>) {
        let cfg = &self.config;
        let parallel = cfg.parallel.max(1);
        let threads = cfg.threads.unwrap_or_else(default_threads).max(1) as i32;
        let params = LlamaContextParams::default()
            .with_n_ctx(NonZeroU32::new(cfg.context_per_slot.saturating_mul(parallel)))
            .with_n_seq_max(parallel)
            .with_n_batch(cfg.batch_size.max(1))
            .with_n_ubatch(cfg.batch_size.max(1))
            .with_n_threads(threads)
            .with_n_threads_batch(threads);
        let backend = match backend() {
            Ok(b) => b,
            Err(e) => {
                let _ = ready.send(Err(e));
                return;
            }
        };
        let mut ctx = match self.model.new_context(backend, params) {
            Ok(c) => c,
            Err(e) => {
                let _ = ready.send(Err(EngineError::Context {
                    name: cfg.name.clone(),
                    message: e.to_string(),
                }));
                return;
            }
        };
        let _ = ready.send(Ok(()));
        tracing::info!(model = %cfg.name, parallel, threads, context_per_slot = cfg.context_per_slot, "engine started");
        self.schedule(&mut ctx, rx, parallel);
        tracing::info!(model = %cfg.name, "engine stopped");
    }

    fn schedule(&self, ctx: &mut LlamaContext<'_>, rx: &Receiver<Job>, parallel: u32) {
        let name = self.config.name.as_str();
        let batch_cap = self.config.batch_size.max(1) as usize;
        let mut batch = LlamaBatch::new(batch_cap, parallel as i32);
        let mut free: Vec<i32> = (0..parallel as i32).rev().collect();
        let mut active: Vec<Seq> = Vec::new();
        let mut open = true;
        loop {
            // Join: block when idle, otherwise take what is waiting between steps.
            if active.is_empty() {
                if !open {
                    return;
                }
                match rx.recv() {
                    Ok(job) => self.admit(job, &mut free, &mut active),
                    Err(_) => return,
                }
            }
            while open && !free.is_empty() {
                match rx.try_recv() {
                    Ok(job) => self.admit(job, &mut free, &mut active),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => open = false,
                }
            }
            m::queue_depth(name, self.queued.load(Ordering::Relaxed));
            // Leave: clients that went away.
            let (gone, kept): (Vec<Seq>, Vec<Seq>) = active.into_iter().partition(|s| s.job.tx.is_closed());
            active = kept;
            for s in gone {
                self.stats.cancelled.fetch_add(1, Ordering::Relaxed);
                release(ctx, &mut free, s.slot);
            }
            if active.is_empty() {
                continue;
            }
            // One step: a token for every generating sequence, then prompt chunks in the space left.
            batch.clear();
            let mut in_step = 0u64;
            for s in active.iter_mut() {
                s.logits_at = None;
                if let Some(t) = s.next.take() {
                    let _ = batch.add(t, s.n_past, &[s.slot], true);
                    s.logits_at = Some(batch.n_tokens() - 1);
                    s.n_past += 1;
                    in_step += 1;
                }
            }
            let mut prompt_tokens = 0u64;
            for s in active.iter_mut().filter(|s| s.prompt_done < s.job.prompt.len()) {
                let room = batch_cap.saturating_sub(batch.n_tokens() as usize);
                if room == 0 {
                    break;
                }
                let end = (s.prompt_done + room).min(s.job.prompt.len());
                for i in s.prompt_done..end {
                    let last = i + 1 == s.job.prompt.len();
                    let _ = batch.add(s.job.prompt[i], s.n_past, &[s.slot], last);
                    s.n_past += 1;
                }
                prompt_tokens += (end - s.prompt_done) as u64;
                s.prompt_done = end;
                if s.prompt_done == s.job.prompt.len() {
                    s.logits_at = Some(batch.n_tokens() - 1);
                }
                in_step += 1;
            }
            self.record_step(in_step, prompt_tokens, &active);
            if let Err(e) = ctx.decode(&mut batch) {
                tracing::error!(model = name, error = %e, "decode failed; failing the sequences of this step");
                for s in active.drain(..) {
                    let _ = s.job.tx.send(Event::Error(e.to_string()));
                    release(ctx, &mut free, s.slot);
                }
                continue;
            }
            let mut still = Vec::with_capacity(active.len());
            for mut s in active {
                match s.logits_at {
                    Some(idx) => {
                        if self.advance(ctx, &mut s, idx) {
                            still.push(s);
                        } else {
                            release(ctx, &mut free, s.slot);
                        }
                    }
                    None => still.push(s),
                }
            }
            active = still;
        }
    }

    fn admit(&self, job: Job, free: &mut Vec<i32>, active: &mut Vec<Seq>) {
        self.queued.fetch_sub(1, Ordering::Relaxed);
        m::queue_wait(&self.config.name, job.queued_at.elapsed());
        if job.tx.is_closed() {
            self.stats.cancelled.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let Some(slot) = free.pop() else { return };
        let sampler = job.sampling.build(&self.model);
        let stop = StopMatcher::new(job.stops.clone());
        active.push(Seq {
            slot,
            job,
            prompt_done: 0,
            n_past: 0,
            next: None,
            logits_at: None,
            sampler,
            generated: 0,
            utf8: Utf8Stream::default(),
            stop,
            prefill_started: Instant::now(),
            first_token_at: None,
        });
    }

    /// Sample the next token of `s`; false when the sequence is finished (or its client is gone).
    fn advance(&self, ctx: &LlamaContext<'_>, s: &mut Seq, idx: i32) -> bool {
        let name = self.config.name.as_str();
        let token = s.sampler.sample(ctx, idx);
        let now = Instant::now();
        if s.first_token_at.is_none() {
            s.first_token_at = Some(now);
            m::prefill_done(name, s.job.prompt.len(), now - s.prefill_started);
        }
        let vocab = self.model.vocab();
        if vocab.is_eog(token) && !s.job.sampling.ignore_eos {
            let tail = s.utf8.finish() + &s.stop.flush();
            return self.finish(s, tail, "stop");
        }
        s.generated += 1;
        self.stats.generated_tokens.fetch_add(1, Ordering::Relaxed);
        let piece = vocab.token_to_piece(token, false, None);
        let text = s.utf8.push(&piece);
        match s.stop.push(&text) {
            Stop::Matched(before) => return self.finish(s, before, "stop"),
            Stop::Continue(out) if !out.is_empty() => {
                if s.job.tx.send(Event::Text(out)).is_err() {
                    self.stats.cancelled.fetch_add(1, Ordering::Relaxed);
                    return false;
                }
            }
            Stop::Continue(_) => {}
        }
        if s.generated >= s.job.max_tokens {
            let tail = s.utf8.finish() + &s.stop.flush();
            return self.finish(s, tail, "length");
        }
        s.next = Some(token);
        true
    }

    fn finish(&self, s: &Seq, tail: String, reason: &'static str) -> bool {
        if !tail.is_empty() {
            let _ = s.job.tx.send(Event::Text(tail));
        }
        if let Some(first) = s.first_token_at {
            m::generation_done(&self.config.name, s.generated, first.elapsed());
        }
        let _ = s.job.tx.send(Event::Done {
            reason,
            prompt_tokens: s.job.prompt.len() as u32,
            completion_tokens: s.generated,
        });
        false
    }

    fn record_step(&self, sequences: u64, prompt_tokens: u64, active: &[Seq]) {
        let st = &self.stats;
        st.steps.fetch_add(1, Ordering::Relaxed);
        st.prompt_tokens.fetch_add(prompt_tokens, Ordering::Relaxed);
        if sequences >= 2 {
            st.multi_sequence_steps.fetch_add(1, Ordering::Relaxed);
        }
        st.max_sequences_per_step.fetch_max(sequences, Ordering::Relaxed);
        let kv_tokens: i64 = active.iter().map(|s| i64::from(s.n_past)).sum();
        let kv_total = u64::from(self.config.context_per_slot) * u64::from(self.config.parallel.max(1));
        m::step(
            &self.config.name,
            sequences,
            active.len(),
            prompt_tokens,
            kv_tokens.max(0) as u64,
            kv_total,
        );
    }
}

fn release(ctx: &mut LlamaContext<'_>, free: &mut Vec<i32>, slot: i32) {
    if let Err(e) = ctx.clear_kv_cache_seq(Some(slot as u32), None, None) {
        tracing::warn!(slot, error = %e, "could not clear a sequence's KV cache");
    }
    free.push(slot);
}
