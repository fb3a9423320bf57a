//! One file per subcommand.

mod bench_engine;
mod bootstrap;
mod chat;
mod config;
mod doctor;
mod healthcheck;
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
        Some(Command::BenchEngine(args)) => bench_engine::run(&cli.global, &args),
        Some(Command::Chat(args)) => chat::run(&cli.global, &args),
        Some(Command::Healthcheck(args)) => healthcheck::run(&cli.global, &args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The base URL (`scheme://ip:port`) that reaches a listener bound to `addr` from this host: loopback when
/// it listens on every address; `https` when the listener speaks native TLS.
pub fn loopback_url(addr: std::net::SocketAddr, tls: bool) -> String {
    let mut addr = addr;
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr {
            std::net::SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            std::net::SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    let scheme = if tls { "https" } else { "http" };
    format!("{scheme}://{addr}")
}

/// Load the layered configuration for this process: file, `.env` in the working directory,
/// environment, flags.
pub fn load_config(global: &GlobalArgs) -> Result<LoadedConfig, moltbot_config::ConfigError> {
    let loaded = Config::load(LoadOptions::from_process(
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
    ))?;
    configure_cpu(&loaded.config);
    Ok(loaded)
}

/// How a portable build picks llama.cpp's CPU backend (`[engine]`): each candidate is first run in a
/// child process (`moltbot __cpu-probe`), so a module that dies with SIGILL is passed over.
fn configure_cpu(config: &Config) {
    use moltbot_engine::cpu::{CpuConfig, CpuVariant, Probe};
    let probe = match std::env::current_exe() {
        Ok(exe) => Probe::Command {
            exe,
            args: vec![crate::CPU_PROBE_ARG.to_owned()],
            timeout: std::time::Duration::from_secs(60),
        },
        Err(_) => Probe::None,
    };
    moltbot_engine::cpu::configure(CpuConfig {
        dir: config.engine.backends_dir.as_ref().map(std::path::PathBuf::from),
        variant: CpuVariant::parse(&config.engine.cpu_variant),
        probe,
    });
}

pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().enable_all().build()?)
}
