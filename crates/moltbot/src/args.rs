//! Command-line arguments. Flags override every other configuration layer.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "moltbot", version, about = "Self-hosted conversational AI service", long_about = None)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Args, Clone, Default)]
pub struct GlobalArgs {
    /// Configuration file (default: ./moltbot.toml if present). Also MOLTBOT_CONFIG.
    #[arg(long, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Dialog service address (chat_addr).
    #[arg(long, global = true, value_name = "HOST:PORT")]
    pub chat_addr: Option<String>,
    /// Admin listener address (admin_addr).
    #[arg(long, global = true, value_name = "HOST:PORT")]
    pub admin_addr: Option<String>,
    /// Debug listener address (debug_addr; development only).
    #[arg(long, global = true, value_name = "HOST:PORT")]
    pub debug_addr: Option<String>,
    /// Database URL: sqlite://PATH or postgres://… (database_url).
    #[arg(long, global = true, value_name = "URL")]
    pub database_url: Option<String>,
    /// Redis URL (redis_url).
    #[arg(long, global = true, value_name = "URL")]
    pub redis_url: Option<String>,
    /// development or production (profile).
    #[arg(long, global = true, value_name = "PROFILE")]
    pub profile: Option<String>,
    /// Development mode: enable the debug listener on 127.0.0.1:5000.
    #[arg(long, global = true)]
    pub dev: bool,
    /// text or json (log.format).
    #[arg(long, global = true, value_name = "FORMAT")]
    pub log_format: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start the listeners (the default command).
    Serve(ServeArgs),
    /// Create or migrate the database (idempotent) and print the schema version.
    InitDb,
    /// Show or check the effective configuration.
    Config {
        #[command(subcommand)]
        action: ConfigAction,
    },
}

#[derive(Debug, Args, Default)]
pub struct ServeArgs {
    /// Write the bound addresses as JSON to this file once ready.
    #[arg(long, value_name = "PATH")]
    pub ready_file: Option<PathBuf>,
    /// Apply pending PostgreSQL migrations before serving.
    #[arg(long)]
    pub migrate: bool,
}

#[derive(Debug, Clone, Copy, Subcommand)]
pub enum ConfigAction {
    /// Print the effective configuration with every secret as ***.
    Show,
    /// Validate the configuration; exit non-zero with a precise message if it is invalid.
    Check,
}
