//! moltbot's local model engine: GGUF models through llama.cpp (`llama-cpp-2`).
//!
//! - [`engine`]: one OS thread owns the model's context; a bounded queue feeds a continuous-batching
//!   scheduler; each request has its own response channel; a dropped receiver cancels its sequence.
//! - [`backend::LocalBackend`]: the engine behind moltbot's `ChatBackend` trait.
//! - [`embed`]: embeddings from GGUF embedding models, on their own context and thread.
//! - [`gguf`]: header checks with clear errors, and a writer for random-weight test/bench models.
//! - [`fetch`], [`quantize`]: what `moltbot load-model` needs.
//!
//! This is the only moltbot crate allowed `unsafe`, and only where the bindings have no safe wrapper
//! (the quantizer).

pub mod backend;
pub mod bench;
pub mod cpu;
pub mod embed;
pub mod engine;
pub mod fetch;
pub mod gguf;
pub mod metrics;
pub mod quantize;
pub mod sampling;
pub mod template;
pub mod text;
pub mod tools;

pub use backend::LocalBackend;
pub use embed::Pooling;
pub use engine::{Engine, EngineConfig, EngineError, Event, default_threads};
pub use quantize::Quantization;
pub use sampling::Sampling;

/// Whether this binary was built with llama.cpp's CUDA backend.
pub const CUDA_BUILD: bool = cfg!(feature = "cuda");

/// Whether llama.cpp can offload layers to a GPU here (built with a GPU backend and a device present).
pub fn gpu_offload_available() -> bool {
    engine::backend().is_ok_and(llama_cpp_2::llama_backend::LlamaBackend::supports_gpu_offload)
}
