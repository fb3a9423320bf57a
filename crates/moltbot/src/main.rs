//! The `moltbot` binary: parse arguments, dispatch to `commands/`.

mod args;
mod commands;

use clap::Parser;

/// jemalloc instead of the C library's malloc: a proxied request makes many small, short-lived allocations
/// across worker threads (headers, JSON values, boxed futures), where jemalloc's per-thread caches cost less
/// (measured in docs/performance.md, "Tried").
#[cfg(unix)]
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// The internal child-process entry point of the CPU backend probe (see `moltbot_engine::cpu`); not a
/// user command, so it stays out of clap's help.
pub const CPU_PROBE_ARG: &str = "__cpu-probe";

fn main() -> std::process::ExitCode {
    let mut raw = std::env::args_os().skip(1);
    if raw.next().is_some_and(|a| a == CPU_PROBE_ARG) {
        let Some(module) = raw.next() else {
            eprintln!("usage: moltbot {CPU_PROBE_ARG} <libggml-cpu-VARIANT.so>");
            return std::process::ExitCode::from(2);
        };
        return match moltbot_engine::cpu::probe(std::path::Path::new(&module)) {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("{e}");
                std::process::ExitCode::FAILURE
            }
        };
    }
    let cli = args::Cli::parse();
    commands::run(cli)
}
