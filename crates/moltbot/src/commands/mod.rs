//! One file per subcommand.

mod bench_engine;
mod bootstrap;
mod config;
mod doctor;
mod init_db;
mod keys;
mod load_model;
mod serve;
mod token;

use std::process::ExitCode;

use moltbot_config::{CliOverrides, Config, LoadOptions, LoadedConfig};

use crate::args::{Cli, Command, GlobalArgs, ServeArgs};

pub fn run(cli: Cli) -> ExitCode {
    let result = match cli.command {
        None => serve::run(&cli.global, ServeArgs::default()),
        Some(Command::Serve(args)) => serve::run(&cli.global, args),
        Some(Command::InitDb(args)) => init_db::run(&cli.global, &args),
        Some(Command::Keys { action }) => keys::run(&cli.global, action),
        Some(Command::Token(args)) => token::run(&cli.global, &args),
        Some(Command::Config { action }) => config::run(&cli.global, action),
        Some(Command::Doctor(args)) => doctor::run(&cli.global, &args),
        Some(Command::LoadModel(args)) => load_model::run(&cli.global, &args),
        Some(Command::BenchEngine(args)) => bench_engine::run(&args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Load the layered configuration for this process: file, `.env` in the working directory,
/// environment, flags.
pub fn load_config(global: &GlobalArgs) -> Result<LoadedConfig, moltbot_config::ConfigError> {
    Config::load(LoadOptions::from_process(
        global.config.clone(),
        CliOverrides {
            chat_addr: global.chat_addr.clone(),
            admin_addr: global.admin_addr.clone(),
            debug_addr: global.debug_addr.clone(),
            database_url: global.database_url.clone(),
            redis_url: global.redis_url.clone(),
            profile: global.profile.clone(),
            dev: global.dev,
            log_format: global.log_format.clone(),
        },
    ))
}

pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().enable_all().build()?)
}
