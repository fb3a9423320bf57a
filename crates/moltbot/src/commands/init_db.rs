//! `moltbot init-db`: create or migrate the database (idempotent) and print the schema version.

use std::process::ExitCode;

use crate::args::GlobalArgs;

pub fn run(global: &GlobalArgs) -> anyhow::Result<ExitCode> {
    let loaded = super::load_config(global)?;
    let config = loaded.config;
    moltbot_server::logging::init(
        config.log.format == moltbot_config::LogFormat::Json,
        &config.log.level,
    );
    super::runtime()?.block_on(async {
        let store =
            moltbot_server::app::open_store(&config, moltbot_server::BuildOptions { migrate: true }).await?;
        let status = store.schema_status().await?;
        println!(
            "database ready: {} schema version {}",
            store.kind(),
            status.applied
        );
        Ok(ExitCode::SUCCESS)
    })
}
