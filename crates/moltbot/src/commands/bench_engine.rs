//! `moltbot bench-engine`: prompt and generation tokens/s of the local engine on a model file or a
//! random-weight synthetic model (no download needed, so GPU and CPU hosts are comparable), the raw
//! decode-loop baseline over the same bindings, and aggregate tokens/s at several streams.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use moltbot_engine::gguf::{SyntheticShape, TensorType};
use moltbot_engine::{Engine, EngineConfig, bench};

use crate::args::BenchEngineArgs;

pub fn run(global: &crate::args::GlobalArgs, args: &BenchEngineArgs) -> anyhow::Result<ExitCode> {
    // Only `[engine]` matters here (which CPU backend a portable build loads).
    super::load_config(global)?;
    let tmp = tempfile::tempdir()?;
    let (path, label) = match (&args.synthetic, &args.model) {
        (Some(size), _) => {
            let shape = SyntheticShape::named(size)
                .with_context(|| format!("unknown size {size}: tiny, 270m, 1b, 3b or 8b"))?;
            let ty = match args.weights.to_ascii_lowercase().as_str() {
                "q8_0" => TensorType::Q8_0,
                "f16" => TensorType::F16,
                "f32" => TensorType::F32,
                other => anyhow::bail!("--weights {other}: expected q8_0, f16 or f32"),
            };
            let path = tmp.path().join(format!("synthetic-{size}.gguf"));
            eprintln!(
                "writing a random-weight {size} model ({} parameters, {})…",
                shape.n_params(),
                ty.name()
            );
            moltbot_engine::gguf::write_synthetic(&path, &shape, ty, 42)?;
            (path, format!("synthetic {size} {}", ty.name()))
        }
        (None, Some(p)) => (p.clone(), p.display().to_string()),
        (None, None) => anyhow::bail!("pass --synthetic SIZE or --model PATH"),
    };
    let threads = args.threads.unwrap_or_else(moltbot_engine::default_threads);
    let model = Arc::new(moltbot_engine::engine::load_model(&path, args.gpu_layers)?);
    let config = EngineConfig {
        threads: Some(threads),
        gpu_layers: args.gpu_layers,
        parallel: args.streams.max(1) as u32,
        context_per_slot: (args.prompt as u32 + args.gen_tokens + 16).max(256),
        ..EngineConfig::new("bench", &path)
    };
    let prompt = bench::prompt_tokens(&model, args.prompt);
    let rt = super::runtime()?;
    // Single stream on a one-slot engine (the same context size as the baseline's), then the baseline.
    let single = Engine::with_model(
        EngineConfig {
            parallel: 1,
            ..config.clone()
        },
        model.clone(),
    )?;
    let (pp, tg) = rt.block_on(bench::engine_single(&single, &prompt, args.gen_tokens))?;
    drop(single);
    let base = if args.baseline {
        Some(bench::raw_decode(&model, threads, &prompt, args.gen_tokens)?)
    } else {
        None
    };
    let engine = Engine::with_model(config, model.clone())?;
    let short = &prompt[..prompt.len().min(32)];
    let agg1 = rt.block_on(bench::engine_aggregate(&engine, short, args.gen_tokens, 1))?;
    let aggn = rt.block_on(bench::engine_aggregate(
        &engine,
        short,
        args.gen_tokens,
        args.streams,
    ))?;
    let offload = moltbot_engine::gpu_offload_available();
    let cpu = match moltbot_engine::cpu::choice() {
        Some(Ok(c)) => c.variant.clone(),
        _ => "unknown".to_owned(),
    };
    if args.json {
        let v = serde_json::json!({
            "model": label, "threads": threads, "gpu_layers": args.gpu_layers, "gpu_offload": offload,
            "cuda_build": moltbot_engine::CUDA_BUILD, "cpu_backend": cpu, "prompt_tokens": prompt.len(), "gen_tokens": args.gen_tokens,
            "prompt_tps": pp, "gen_tps": tg, "baseline_prompt_tps": base.map(|b| b.0),
            "baseline_gen_tps": base.map(|b| b.1), "streams": args.streams,
            "aggregate_1_tps": agg1, "aggregate_n_tps": aggn,
        });
        println!("{v}");
    } else {
        println!(
            "model: {label}; threads {threads}; cpu backend {cpu}; gpu_layers {} (offload available: {offload}, cuda build: {})",
            args.gpu_layers,
            moltbot_engine::CUDA_BUILD
        );
        println!(
            "engine   prompt {pp:>9.1} tok/s ({} tokens)   generation {tg:>7.1} tok/s ({} tokens)",
            prompt.len(),
            args.gen_tokens
        );
        if let Some((bpp, btg)) = base {
            println!("raw loop prompt {bpp:>9.1} tok/s                 generation {btg:>7.1} tok/s");
            println!(
                "ratio    prompt {:>9.2}                        generation {:>7.2}",
                pp / bpp,
                tg / btg
            );
        }
        println!(
            "aggregate generation: 1 stream {agg1:.1} tok/s, {} streams {aggn:.1} tok/s ({:.2}x)",
            args.streams,
            aggn / agg1
        );
    }
    Ok(ExitCode::SUCCESS)
}
