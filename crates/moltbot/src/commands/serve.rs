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
    raise_open_file_limit();
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

/// Raise the soft open-file limit to the hard one, as Go programs do since Go 1.19: every streamed
/// chat holds two sockets (the client's and the upstream's), so a shell's default soft limit of 1024
/// would cap a replica at ~500 concurrent streams whatever the hard limit allows. systemd's
/// `LimitNOFILE=` (65536 in deploy/systemd) sets both already; this covers everything else.
fn raise_open_file_limit() {
    #[cfg(unix)]
    {
        use rustix::process::{Resource, getrlimit, setrlimit};
        let limit = getrlimit(Resource::Nofile);
        // `None` is unlimited: nothing to raise to (and the kernel refuses an unlimited NOFILE anyway).
        if let (Some(current), Some(maximum)) = (limit.current, limit.maximum)
            && current < maximum
        {
            let raised = rustix::process::Rlimit {
                current: Some(maximum),
                maximum: Some(maximum),
            };
            match setrlimit(Resource::Nofile, raised) {
                Ok(()) => tracing::debug!(
                    from = current,
                    to = maximum,
                    "raised the open-file limit to the hard limit"
                ),
                Err(e) => tracing::warn!(error = %e, "could not raise the open-file limit"),
            }
        }
        let now = getrlimit(Resource::Nofile).current;
        if now.is_some_and(|n| n < 4096) {
            tracing::warn!(
                limit = now,
                "the open-file limit is low: each streamed chat holds two sockets; raise LimitNOFILE / ulimit -n"
            );
        }
    }
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
