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

/// SIGINT / SIGTERM. The handlers are installed here, before `serve` writes its ready file: a
/// future that registered them on its first poll would leave a window in which a SIGTERM sent right
/// after readiness took the default action and killed the process without draining.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).ok();
        let mut int = signal(SignalKind::interrupt()).ok();
        async move {
            let wait = |s: Option<tokio::signal::unix::Signal>| async move {
                match s {
                    Some(mut s) => {
                        s.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                () = wait(int.take()) => tracing::info!("SIGINT received"),
                () = wait(term.take()) => tracing::info!("SIGTERM received"),
            }
        }
    }
    #[cfg(not(unix))]
    async {
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("Ctrl-C received");
    }
}
