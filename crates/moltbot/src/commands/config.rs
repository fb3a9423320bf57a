//! `moltbot config show|check`.

use std::process::ExitCode;

use crate::args::{ConfigAction, GlobalArgs};

pub fn run(global: &GlobalArgs, action: ConfigAction) -> anyhow::Result<ExitCode> {
    let loaded = match super::load_config(global) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("configuration is invalid: {e}");
            return Ok(ExitCode::FAILURE);
        }
    };
    for w in &loaded.warnings {
        eprintln!("warning: {w}");
    }
    match action {
        ConfigAction::Show => {
            print!("{}", loaded.config.redacted_toml());
        }
        ConfigAction::Check => {
            let sources = if loaded.sources.is_empty() {
                "defaults and environment".into()
            } else {
                loaded.sources.join(", ")
            };
            println!(
                "configuration is valid ({} profile; {} model(s); read from {sources}; {} warning(s))",
                loaded.config.profile.as_str(),
                loaded.config.models.len(),
                loaded.warnings.len()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
