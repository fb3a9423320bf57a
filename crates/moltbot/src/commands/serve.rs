//! `moltbot serve`: start the listeners; SIGTERM/SIGINT drain and stop.

use std::process::ExitCode;

use crate::args::{GlobalArgs, ServeArgs};

pub fn run(global: &GlobalArgs, args: ServeArgs) -> anyhow::Result<ExitCode> {
    let loaded = super::load_config(global)?;
    let config = loaded.config.clone();
    moltbot_server::logging::init(
        config.log.format == moltbot_config::LogFormat::Json,
        &config.log.level,
    );
    for w in &loaded.warnings {
        tracing::warn!("{w}");
    }
    super::runtime()?.block_on(async move {
        let listeners =
            moltbot_server::Listeners::bind(config.chat_addr, config.admin_addr, config.debug_addr)
                .await?
                .with_metrics(config.metrics_addr)
                .await?
                .with_acme_http01(config.tls.acme.http01_addr)
                .await?;
        let state = moltbot_server::build_state(
            config,
            moltbot_server::BuildOptions {
                migrate: args.migrate,
            },
        )
        .await?;
        if state.store.kind() == "sqlite" {
            // The first start on SQLite creates the admin key, like `init-db` (never twice).
            super::bootstrap::run(
                state.store.as_ref(),
                &state.config,
                loaded.bootstrap_admin_key.as_ref(),
                args.print_admin_key,
            )
            .await?;
        }
        moltbot_server::serve(state, listeners, shutdown_signal(), args.ready_file).await?;
        Ok(ExitCode::SUCCESS)
    })
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("SIGINT received"),
        () = term => tracing::info!("SIGTERM received"),
    }
}
