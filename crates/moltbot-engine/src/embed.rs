//! Embeddings from a local GGUF model.
//!
//! - **Which models**: the pooling comes from the model's GGUF metadata (`{arch}.pooling_type`: mean,
//!   cls or last), or from the configuration (`pooling` on the model), which wins. A model with neither
//!   (a generative model such as Gemma 3) is refused with a 400 naming `model`; so is a reranker (rank
//!   pooling) and `pooling = "none"`.
//! - **How**: an [`Embedder`] thread owns its own llama.cpp context (`embeddings = true`, the pooling
//!   above, one unified KV cache) beside the chat engine's, so embeddings never wait for generations
//!   and generations never wait for embeddings. Requests queue on a bounded channel (full: 503); the
//!   inputs of a request are packed into as few decodes as possible, up to [`MAX_SEQS`] sequences and
//!   the context per decode.
//! - **Output**: each pooled vector is L2-normalised (length 1, like OpenAI's embeddings), so cosine
//!   similarity is a dot product.
//! - **Limits**: an input may have at most `min(context_window, n_ctx_train)` tokens (over it: 400
//!   naming `input`); `dimensions` must be omitted or equal the model's embedding size.

use std::num::NonZeroU32;
use std::ops::Range;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::time::Duration;

use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::context::params::{LlamaContextParams, LlamaPoolingType};
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::token::LlamaToken;
use moltbot_core::{BackendError, EmbedInput, EmbedOutput, EmbedRequest};
use tokio::sync::oneshot;

use crate::engine::{Engine, EngineConfig, EngineError, backend, default_threads};

/// Most inputs decoded together in one batch (each its own sequence).
pub const MAX_SEQS: u32 = 32;

/// How token vectors become one vector per input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pooling {
    /// No embeddings from this model.
    None,
    /// The average of the token vectors.
    Mean,
    /// The first token's vector (BERT's `[CLS]`).
    Cls,
    /// The last token's vector (decoder embedding models such as Qwen3-Embedding).
    Last,
}

impl Pooling {
    pub fn as_str(self) -> &'static str {
        match self {
            Pooling::None => "none",
            Pooling::Mean => "mean",
            Pooling::Cls => "cls",
            Pooling::Last => "last",
        }
    }

    fn llama(self) -> LlamaPoolingType {
        match self {
            Pooling::None => LlamaPoolingType::None,
            Pooling::Mean => LlamaPoolingType::Mean,
            Pooling::Cls => LlamaPoolingType::Cls,
            Pooling::Last => LlamaPoolingType::Last,
        }
    }
}

/// The GGUF's `{arch}.pooling_type`, as llama.cpp numbers it (0 none, 1 mean, 2 cls, 3 last, 4 rank).
pub fn gguf_pooling(model: &LlamaModel) -> Option<u32> {
    let arch = model.meta_val_str("general.architecture").ok()?;
    model
        .meta_val_str(&format!("{arch}.pooling_type"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// What a local model can do about embeddings, decided when its backend starts.
pub(crate) enum Embeddings {
    Ready(Embedder),
    /// Not an embedding model: the 400's message.
    Refused(String),
    /// An embedding model whose context could not be created: requests get a 502.
    Failed(String),
}

impl Embeddings {
    /// Start the embedder when the model (or its configuration) has a pooling type.
    pub(crate) fn new(engine: &Engine) -> Self {
        let config = engine.config();
        let name = config.name.as_str();
        let declared = gguf_pooling(&engine.model);
        let pooling = match (config.pooling, declared) {
            (Some(p), _) => p,
            (None, Some(1)) => Pooling::Mean,
            (None, Some(2)) => Pooling::Cls,
            (None, Some(3)) => Pooling::Last,
            (None, Some(4)) => {
                return Embeddings::Refused(format!(
                    "The model `{name}` is a reranker (rank pooling); it does not produce embeddings."
                ));
            }
            (None, _) => {
                return Embeddings::Refused(format!(
                    "The model `{name}` is a generative model without a pooling type in its GGUF metadata; \
                     it does not produce embeddings (set `pooling` on the model in the configuration to \
                     use it anyway)."
                ));
            }
        };
        if pooling == Pooling::None {
            return Embeddings::Refused(format!(
                "Embeddings are turned off for the model `{name}` (`pooling = \"none\"`)."
            ));
        }
        match Embedder::start(engine.model.clone(), config, pooling) {
            Ok(e) => Embeddings::Ready(e),
            Err(e) => {
                tracing::warn!(model = name, error = %e, "cannot start the embedding context");
                Embeddings::Failed(e.to_string())
            }
        }
    }

    pub(crate) async fn embed(&self, request: EmbedRequest) -> Result<EmbedOutput, BackendError> {
        match self {
            Embeddings::Ready(e) => e.embed(request).await,
            Embeddings::Refused(message) => Err(BackendError::Unsupported {
                param: "model".into(),
                message: message.clone(),
            }),
            Embeddings::Failed(message) => Err(BackendError::Connect(message.clone())),
        }
    }
}

type Reply = oneshot::Sender<Result<Vec<Vec<f32>>, String>>;

struct Job {
    inputs: Vec<Vec<LlamaToken>>,
    reply: Reply,
}

/// A running embedding context of one model. Dropping it stops its thread after the current job.
pub struct Embedder {
    name: String,
    model: Arc<LlamaModel>,
    pooling: Pooling,
    dims: usize,
    /// Most tokens in one input.
    limit: u32,
    tx: SyncSender<Job>,
}

impl std::fmt::Debug for Embedder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Embedder")
            .field("name", &self.name)
            .field("pooling", &self.pooling)
            .field("dims", &self.dims)
            .field("limit", &self.limit)
            .finish_non_exhaustive()
    }
}

impl Embedder {
    /// Create the embedding context on its own thread; returns once it exists.
    pub fn start(
        model: Arc<LlamaModel>,
        config: &EngineConfig,
        pooling: Pooling,
    ) -> Result<Self, EngineError> {
        let train = model.n_ctx_train();
        let limit = if train == 0 {
            config.context_per_slot
        } else {
            config.context_per_slot.min(train)
        }
        .max(1);
        // Tokens per decode: a multiple of MAX_SEQS, or llama.cpp's worst-case graph reservation rounds
        // the tokens up but not the outputs, and mean pooling's matrix product fails to build.
        let size = limit.div_ceil(MAX_SEQS) * MAX_SEQS;
        let dims = usize::try_from(model.n_embd_out()).unwrap_or(0);
        let threads = config.threads.unwrap_or_else(default_threads).max(1) as i32;
        let params = LlamaContextParams::default()
            .with_n_ctx(NonZeroU32::new(size))
            .with_n_batch(size)
            .with_n_ubatch(size)
            .with_n_seq_max(MAX_SEQS)
            .with_kv_unified(true)
            .with_embeddings(true)
            .with_pooling_type(pooling.llama())
            .with_n_threads(threads)
            .with_n_threads_batch(threads);
        let (tx, rx) = sync_channel::<Job>(config.queue_capacity.max(1));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let name = config.name.clone();
        let worker_model = model.clone();
        std::thread::Builder::new()
            .name(format!("embed-{name}"))
            .spawn(move || run(&worker_model, params, size as usize, &rx, &ready_tx))
            .map_err(|e| EngineError::Context {
                name: name.clone(),
                message: e.to_string(),
            })?;
        ready_rx
            .recv()
            .map_err(|_| EngineError::Stopped)?
            .map_err(|message| EngineError::Context {
                name: name.clone(),
                message,
            })?;
        tracing::info!(model = %name, pooling = pooling.as_str(), dims, limit, "embeddings ready");
        Ok(Self {
            name,
            model,
            pooling,
            dims,
            limit,
            tx,
        })
    }

    pub fn pooling(&self) -> Pooling {
        self.pooling
    }

    /// Size of the vectors.
    pub fn dims(&self) -> usize {
        self.dims
    }

    /// Most tokens in one input.
    pub fn limit(&self) -> u32 {
        self.limit
    }

    /// Text as the model reads it for an embedding: with the model's special tokens (BOS, and EOS
    /// where its vocabulary adds one), special-token text in the input not parsed.
    fn tokenize(&self, text: &str) -> Vec<LlamaToken> {
        self.model.vocab().tokenize(text.as_bytes(), true, false)
    }

    /// Check and tokenize the inputs: 400 naming `dimensions` or `input` for what the model cannot do.
    fn prepare(&self, request: &EmbedRequest) -> Result<Vec<Vec<LlamaToken>>, BackendError> {
        if let Some(d) = request.dimensions
            && d as usize != self.dims
        {
            return Err(BackendError::Unsupported {
                param: "dimensions".into(),
                message: format!(
                    "The model `{}` produces {}-dimensional embeddings; `dimensions` must be {} or omitted.",
                    self.name, self.dims, self.dims
                ),
            });
        }
        let n_vocab = u32::try_from(self.model.n_vocab()).unwrap_or(0);
        let mut out = Vec::with_capacity(request.inputs.len());
        for (i, input) in request.inputs.iter().enumerate() {
            let tokens = match input {
                EmbedInput::Text(t) => self.tokenize(t),
                EmbedInput::Tokens(ids) => {
                    if let Some(bad) = ids.iter().find(|&&t| t >= n_vocab) {
                        return Err(BackendError::InvalidRequest {
                            param: Some("input".into()),
                            message: format!(
                                "input[{i}] has the token id {bad}, outside this model's vocabulary of {n_vocab} tokens."
                            ),
                        });
                    }
                    ids.iter().map(|&t| LlamaToken(t as i32)).collect()
                }
            };
            if tokens.is_empty() {
                return Err(BackendError::InvalidRequest {
                    param: Some("input".into()),
                    message: format!("input[{i}] has no tokens."),
                });
            }
            if tokens.len() > self.limit as usize {
                return Err(BackendError::ContextLength(format!(
                    "This model's maximum context length is {} tokens, however you requested {} tokens \
                     (input[{i}]). Please reduce your input.",
                    self.limit,
                    tokens.len()
                )));
            }
            out.push(tokens);
        }
        Ok(out)
    }

    pub async fn embed(&self, request: EmbedRequest) -> Result<EmbedOutput, BackendError> {
        let inputs = self.prepare(&request)?;
        let prompt_tokens = inputs.iter().map(Vec::len).sum::<usize>();
        let (reply, rx) = oneshot::channel();
        self.tx.try_send(Job { inputs, reply }).map_err(|e| match e {
            TrySendError::Full(_) => BackendError::Overloaded {
                retry_after: Duration::from_secs(1),
            },
            TrySendError::Disconnected(_) => BackendError::Connect("the embedding thread has stopped".into()),
        })?;
        let vectors = rx
            .await
            .map_err(|_| BackendError::Connect("the embedding thread has stopped".into()))?
            .map_err(|e| BackendError::Protocol(format!("local embedding failed: {e}")))?;
        Ok(EmbedOutput {
            vectors,
            prompt_tokens: u32::try_from(prompt_tokens).unwrap_or(u32::MAX),
        })
    }
}

/// The embedding thread: `size` tokens fit one decode.
fn run(
    model: &LlamaModel,
    params: LlamaContextParams,
    size: usize,
    rx: &Receiver<Job>,
    ready: &std::sync::mpsc::Sender<Result<(), String>>,
) {
    let mut ctx = match backend()
        .map_err(|e| e.to_string())
        .and_then(|b| model.new_context(b, params).map_err(|e| e.to_string()))
    {
        Ok(c) => c,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let _ = ready.send(Ok(()));
    let mut batch = LlamaBatch::new(size, 1);
    while let Ok(job) = rx.recv() {
        if job.reply.is_closed() {
            continue;
        }
        let result = embed_job(&mut ctx, &mut batch, &job, size);
        let _ = job.reply.send(result);
    }
}

/// Every input of a job, packed into as few decodes of `size` tokens as fit.
fn embed_job(
    ctx: &mut LlamaContext<'_>,
    batch: &mut LlamaBatch<'_>,
    job: &Job,
    size: usize,
) -> Result<Vec<Vec<f32>>, String> {
    let lens: Vec<usize> = job.inputs.iter().map(Vec::len).collect();
    let mut out = Vec::with_capacity(job.inputs.len());
    for group in groups(&lens, size, MAX_SEQS as usize) {
        if job.reply.is_closed() {
            return Err("cancelled".into());
        }
        ctx.clear_kv_cache();
        batch.clear();
        for (seq, tokens) in job.inputs[group.clone()].iter().enumerate() {
            batch
                .add_sequence(tokens, seq as i32, true)
                .map_err(|e| e.to_string())?;
        }
        ctx.decode(batch).map_err(|e| e.to_string())?;
        for seq in 0..group.len() {
            let v = ctx.embeddings_seq_ith(seq as i32).map_err(|e| e.to_string())?;
            out.push(normalize(v));
        }
    }
    Ok(out)
}

/// Consecutive inputs per decode: at most `max_seqs` of them and `limit` tokens together (every input
/// is at most `limit` tokens long, so each group holds at least one).
pub(crate) fn groups(lens: &[usize], limit: usize, max_seqs: usize) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let mut start = 0;
    while start < lens.len() {
        let mut end = start;
        let mut tokens = 0;
        while end < lens.len() && end - start < max_seqs && (end == start || tokens + lens[end] <= limit) {
            tokens += lens[end];
            end += 1;
        }
        out.push(start..end);
        start = end;
    }
    out
}

/// The vector scaled to length 1 (a zero vector stays zero).
pub fn normalize(v: &[f32]) -> Vec<f32> {
    let norm = v
        .iter()
        .map(|x| f64::from(*x) * f64::from(*x))
        .sum::<f64>()
        .sqrt();
    if norm == 0.0 || !norm.is_finite() {
        return v.to_vec();
    }
    v.iter().map(|x| (f64::from(*x) / norm) as f32).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inputs_are_packed_by_tokens_and_sequences() {
        assert_eq!(groups(&[], 10, 4), Vec::<Range<usize>>::new());
        assert_eq!(groups(&[3, 3, 3, 3], 10, 4), vec![0..3, 3..4]);
        assert_eq!(groups(&[10, 1, 9], 10, 4), vec![0..1, 1..3]);
        assert_eq!(groups(&[1; 5], 100, 2), vec![0..2, 2..4, 4..5]);
    }

    #[test]
    fn vectors_are_scaled_to_length_one() {
        let v = normalize(&[3.0, 4.0]);
        assert!((v[0] - 0.6).abs() < 1e-6 && (v[1] - 0.8).abs() < 1e-6, "{v:?}");
        assert_eq!(normalize(&[0.0, 0.0]), vec![0.0, 0.0]);
    }
}
