//! Write a random-weight tiny llama GGUF (the tests' model) for end-to-end tests that need a local model
//! file and have no real one; with `--pooling` it is an embedding model (`llama.pooling_type`).
//!
//! ```text
//! target/debug/examples/synthetic_gguf OUT.gguf [--pooling mean|cls|last] [--seed N]
//! ```

use std::path::PathBuf;
use std::process::ExitCode;

use moltbot_engine::gguf::{SyntheticOptions, SyntheticShape, TensorType, write_synthetic_with};

fn main() -> ExitCode {
    let mut out = None;
    let mut options = SyntheticOptions::default();
    let mut seed = 1;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--pooling" => {
                options.pooling_type = match args.next().as_deref() {
                    Some("mean") => Some(1),
                    Some("cls") => Some(2),
                    Some("last") => Some(3),
                    _ => return usage(),
                }
            }
            "--seed" => match args.next().map(|s| s.parse()) {
                Some(Ok(s)) => seed = s,
                _ => return usage(),
            },
            path if out.is_none() && !path.starts_with('-') => out = Some(PathBuf::from(path)),
            _ => return usage(),
        }
    }
    let Some(out) = out else { return usage() };
    match write_synthetic_with(&out, &SyntheticShape::tiny(), TensorType::F32, seed, &options) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cannot write {}: {e}", out.display());
            ExitCode::FAILURE
        }
    }
}

fn usage() -> ExitCode {
    eprintln!("usage: synthetic_gguf OUT.gguf [--pooling mean|cls|last] [--seed N]");
    ExitCode::from(2)
}
