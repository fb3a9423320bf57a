//! The `moltbot` binary: parse arguments, dispatch to `commands/`.

mod args;
mod commands;

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = args::Cli::parse();
    commands::run(cli)
}
