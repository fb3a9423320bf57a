//! Throughput measurement shared by `moltbot bench-engine` and `make bench-engine`: single-stream
//! prompt and generation tokens/s through the engine, the same through a raw decode loop over the same
//! bindings (the baseline), and aggregate generation tokens/s at several concurrent streams.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Instant;

use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::LlamaToken;

use crate::engine::{Engine, EngineError, Event, backend};
use crate::sampling::Sampling;

/// Prompt tokens for a benchmark: the model's own tokens for a repeated English text.
pub fn prompt_tokens(model: &LlamaModel, n: usize) -> Vec<LlamaToken> {
    let text = "The quick brown fox jumps over the lazy dog while the cat sleeps in the warm sun. "
        .repeat(n / 4 + 8);
    let mut t = model.vocab().tokenize(text.as_bytes(), false, false);
    t.truncate(n);
    t
}

/// (prompt tokens/s, generation tokens/s) of one sequence through the engine.
pub async fn engine_single(
    engine: &Engine,
    prompt: &[LlamaToken],
    n_gen: u32,
) -> Result<(f64, f64), EngineError> {
    let sampling = Sampling {
        ignore_eos: true,
        ..Sampling::greedy()
    };
    let start = Instant::now();
    let mut rx = engine.submit(prompt.to_vec(), n_gen, sampling, Vec::new())?;
    let mut first = None;
    while let Some(ev) = rx.recv().await {
        match ev {
            Event::Text(_) if first.is_none() => first = Some(Instant::now()),
            Event::Text(_) => {}
            Event::Done {
                completion_tokens, ..
            } => {
                let first = first.unwrap_or(start);
                let pp = prompt.len() as f64 / (first - start).as_secs_f64();
                let tg = f64::from(completion_tokens.saturating_sub(1)) / first.elapsed().as_secs_f64();
                return Ok((pp, tg));
            }
            Event::Error(e) => return Err(EngineError::Decode(e)),
        }
    }
    Err(EngineError::Stopped)
}

/// Aggregate generation tokens/s with `streams` sequences generating `n_gen` tokens each at once.
pub async fn engine_aggregate(
    engine: &Engine,
    prompt: &[LlamaToken],
    n_gen: u32,
    streams: usize,
) -> Result<f64, EngineError> {
    let sampling = Sampling {
        ignore_eos: true,
        ..Sampling::greedy()
    };
    let start = Instant::now();
    let mut rxs = Vec::new();
    for _ in 0..streams {
        rxs.push(engine.submit(prompt.to_vec(), n_gen, sampling.clone(), Vec::new())?);
    }
    let mut total = 0u64;
    for mut rx in rxs {
        while let Some(ev) = rx.recv().await {
            if let Event::Done {
                completion_tokens, ..
            } = ev
            {
                total += u64::from(completion_tokens);
            }
        }
    }
    Ok(total as f64 / start.elapsed().as_secs_f64())
}

/// The baseline: one sequence, a plain decode loop over `llama-cpp-2` (no scheduler, no channels).
pub fn raw_decode(
    model: &Arc<LlamaModel>,
    threads: u32,
    prompt: &[LlamaToken],
    n_gen: u32,
) -> Result<(f64, f64), EngineError> {
    let ctx_len = prompt.len() as u32 + n_gen + 16;
    let params = LlamaContextParams::default()
        .with_n_ctx(NonZeroU32::new(ctx_len))
        .with_n_batch(512)
        .with_n_ubatch(512)
        .with_n_threads(threads as i32)
        .with_n_threads_batch(threads as i32);
    let fail = |e: &dyn std::fmt::Display| EngineError::Decode(e.to_string());
    let mut ctx = model.new_context(backend()?, params).map_err(|e| fail(&e))?;
    let mut batch = LlamaBatch::new(512, 1);
    let start = Instant::now();
    for (chunk_i, chunk) in prompt.chunks(512).enumerate() {
        batch.clear();
        for (i, t) in chunk.iter().enumerate() {
            let pos = (chunk_i * 512 + i) as i32;
            let last = chunk_i * 512 + i + 1 == prompt.len();
            batch.add(*t, pos, &[0], last).map_err(|e| fail(&e))?;
        }
        ctx.decode(&mut batch).map_err(|e| fail(&e))?;
    }
    let mut sampler = LlamaSampler::greedy();
    let mut token = sampler.sample(&ctx, batch.n_tokens() - 1);
    let pp = prompt.len() as f64 / start.elapsed().as_secs_f64();
    let gen_start = Instant::now();
    for i in 0..n_gen.saturating_sub(1) {
        batch.clear();
        batch
            .add(token, prompt.len() as i32 + i as i32, &[0], true)
            .map_err(|e| fail(&e))?;
        ctx.decode(&mut batch).map_err(|e| fail(&e))?;
        token = sampler.sample(&ctx, 0);
    }
    let tg = f64::from(n_gen.saturating_sub(1)) / gen_start.elapsed().as_secs_f64();
    Ok((pp, tg))
}
