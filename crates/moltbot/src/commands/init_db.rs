//! `moltbot init-db`: create or migrate the database (idempotent), print the schema version, and on a
//! fresh database create the first admin key (see `bootstrap`).

use std::process::ExitCode;

use crate::args::{GlobalArgs, InitDbArgs};

pub fn run(global: &GlobalArgs, args: &InitDbArgs) -> anyhow::Result<ExitCode> {
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
        super::bootstrap::run(
            store.as_ref(),
            &config,
            loaded.bootstrap_admin_key.as_ref(),
            args.print_admin_key,
        )
        .await?;
        Ok(ExitCode::SUCCESS)
    })
}
