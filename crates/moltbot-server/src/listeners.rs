//! Binding the listeners (with errors that name the address and the cause) and running them until
//! shutdown: `/ready` turns 503 at once, the listeners keep accepting for `shutdown_delay` so load
//! balancers notice, then stop accepting; in-flight requests and streams get `shutdown_grace` to finish.
//!
//! Listeners named in `tls.listeners` speak TLS (see [`crate::tls`]); their handshakes run off the
//! accept loop, and the same shutdown sequence applies.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;

use axum::serve::ListenerExt as _;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::state::AppState;
use crate::tls::listener::ServeListener;

#[derive(Debug, thiserror::Error)]
#[error("cannot bind the {name} listener to {addr}: {cause}")]
pub struct BindError {
    pub name: &'static str,
    pub addr: SocketAddr,
    pub cause: String,
}

pub struct Listeners {
    pub chat: TcpListener,
    pub admin: TcpListener,
    pub debug: Option<TcpListener>,
    /// `/metrics` on its own address (`metrics_addr`); see [`Listeners::with_metrics`].
    pub metrics: Option<TcpListener>,
    /// Plain-HTTP ACME HTTP-01 listener (`tls.acme.http01_addr`); see [`Listeners::with_acme_http01`].
    pub http01: Option<TcpListener>,
}

/// The addresses actually bound (port 0 resolved), written to `--ready-file`.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct BoundAddrs {
    pub chat_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub debug_addr: Option<SocketAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_addr: Option<SocketAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http01_addr: Option<SocketAddr>,
    pub pid: u32,
}

/// The accept queue of every listener. tokio's `TcpListener::bind` (like std's) asks for 128: a burst
/// of new connections (10,000 streams opened at once, clients reconnecting after a deploy) then
/// overflows it, and each dropped SYN is retried by the client only a second or more later. The
/// kernel caps the value at `net.core.somaxconn` (4096 by default since Linux 5.4).
pub const LISTEN_BACKLOG: u32 = 4096;

/// Bind like `TcpListener::bind` (SO_REUSEADDR, then bind) but listen with [`LISTEN_BACKLOG`].
pub fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

async fn bind_one(name: &'static str, addr: SocketAddr) -> Result<TcpListener, BindError> {
    listen(addr).map_err(|e| {
        let cause = match e.kind() {
            std::io::ErrorKind::AddrInUse => {
                "address already in use (another process is listening there; `moltbot doctor` shows which)"
                    .to_owned()
            }
            std::io::ErrorKind::PermissionDenied => {
                "permission denied (ports below 1024 need root or CAP_NET_BIND_SERVICE)".to_owned()
            }
            std::io::ErrorKind::AddrNotAvailable => "address not available on this host".to_owned(),
            _ => e.to_string(),
        };
        BindError { name, addr, cause }
    })
}

impl Listeners {
    pub async fn bind(
        chat: SocketAddr,
        admin: SocketAddr,
        debug: Option<SocketAddr>,
    ) -> Result<Self, BindError> {
        let chat = bind_one("dialog", chat).await?;
        let admin = bind_one("admin", admin).await?;
        let debug = match debug {
            Some(a) => Some(bind_one("debug", a).await?),
            None => None,
        };
        Ok(Self {
            chat,
            admin,
            debug,
            metrics: None,
            http01: None,
        })
    }

    /// Also bind the `metrics_addr` listener, when configured.
    pub async fn with_metrics(mut self, addr: Option<SocketAddr>) -> Result<Self, BindError> {
        if let Some(a) = addr {
            self.metrics = Some(bind_one("metrics", a).await?);
        }
        Ok(self)
    }

    /// Also bind the ACME HTTP-01 listener (`tls.acme.http01_addr`), when configured.
    pub async fn with_acme_http01(mut self, addr: Option<SocketAddr>) -> Result<Self, BindError> {
        if let Some(a) = addr {
            self.http01 = Some(bind_one("ACME HTTP-01", a).await?);
        }
        Ok(self)
    }

    pub fn addrs(&self) -> std::io::Result<BoundAddrs> {
        Ok(BoundAddrs {
            chat_addr: self.chat.local_addr()?,
            admin_addr: self.admin.local_addr()?,
            debug_addr: self.debug.as_ref().map(TcpListener::local_addr).transpose()?,
            metrics_addr: self.metrics.as_ref().map(TcpListener::local_addr).transpose()?,
            http01_addr: self.http01.as_ref().map(TcpListener::local_addr).transpose()?,
            pid: std::process::id(),
        })
    }
}

/// Serve until `shutdown` resolves, then drain and stop.
pub async fn serve(
    state: AppState,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send,
    ready_file: Option<PathBuf>,
) -> anyhow::Result<()> {
    let addrs = listeners.addrs()?;
    // Certificate files are read (or the ACME client set up) before anything is served, so that a
    // bad `[tls]` stops the start with an error naming the file.
    let tls = crate::tls::Tls::from_config(&state.config)?;
    let acceptor = tls.as_ref().map(crate::tls::Tls::acceptor);
    let tls_config = &state.config.tls;
    let stop_accepting = CancellationToken::new();
    let mut servers = tokio::task::JoinSet::new();
    let spawn = |servers: &mut tokio::task::JoinSet<std::io::Result<()>>,
                 name: &str,
                 l: TcpListener,
                 r: axum::Router|
     -> std::io::Result<()> {
        let token = stop_accepting.clone();
        let (l, r) = match &acceptor {
            Some(acceptor) if tls_config.on(name) => (
                ServeListener::Tls(acceptor.clone().listen(l)?),
                r.layer(axum::Extension(crate::tls::TlsConnection)),
            ),
            _ => (ServeListener::Plain(l), r),
        };
        servers.spawn(async move {
            // `tap_io` only so that axum's `ConnectInfo<SocketAddr>` applies to our listener type.
            axum::serve(
                l.tap_io(|_| {}),
                r.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .with_graceful_shutdown(token.cancelled_owned())
            .await
        });
        Ok(())
    };
    spawn(
        &mut servers,
        "dialog",
        listeners.chat,
        crate::chat_router(state.clone()),
    )?;
    spawn(
        &mut servers,
        "admin",
        listeners.admin,
        crate::admin_router(state.clone()),
    )?;
    if let Some(l) = listeners.debug {
        tracing::warn!(addr = %addrs.debug_addr.map(|a| a.to_string()).unwrap_or_default(),
            "the debug listener is enabled (development only)");
        spawn(&mut servers, "debug", l, crate::debug_router(state.clone()))?;
    }
    if let Some(l) = listeners.metrics {
        spawn(&mut servers, "metrics", l, crate::metrics_router(state.clone()))?;
    }
    let https_port = if tls_config.on("dialog") {
        addrs.chat_addr.port()
    } else {
        addrs.admin_addr.port()
    };
    match (
        listeners.http01,
        tls.as_ref().and_then(|t| t.http01_router(https_port)),
    ) {
        (Some(l), Some(router)) => spawn(&mut servers, "http01", l, router)?,
        (Some(_), None) => tracing::warn!("tls.acme.http01_addr is bound but ACME is off; not serving it"),
        _ => {}
    }
    let stop_tls = CancellationToken::new();
    let tls_task = tls.map(|t| t.spawn(stop_tls.clone()));
    if acceptor.is_some() {
        tracing::info!(listeners = ?tls_config.listeners, "native TLS enabled");
    }
    let purge = tokio::spawn(crate::idempotency::purge_loop(state.clone()));
    let sweep = tokio::spawn(crate::housekeeping::stale_turns_loop(state.clone()));
    // Channel workers and long-lived platform connections, outbound webhook delivery: they finish the
    // item in hand after the listeners drained (what they leave is retried by the next replica/start).
    let stop_background = CancellationToken::new();
    let mut background = crate::channels::spawn(&state, &stop_background);
    background.extend(crate::webhooks::spawn(&state, &stop_background));
    state.readiness.set_listening();
    tracing::info!(chat_addr = %addrs.chat_addr, admin_addr = %addrs.admin_addr, "moltbot is ready");
    if let Some(path) = &ready_file {
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(&addrs)?)?;
        std::fs::rename(&tmp, path)?;
    }

    tokio::select! {
        () = shutdown => {}
        Some(res) = servers.join_next() => {
            // A listener stopped by itself: that is an error worth exiting on.
            res??;
            anyhow::bail!("a listener stopped unexpectedly");
        }
    }
    let cfg = &state.config.server;
    state.readiness.start_draining();
    tracing::info!(delay = ?cfg.shutdown_delay, grace = ?cfg.shutdown_grace, "shutting down: /ready now returns 503");
    tokio::time::sleep(cfg.shutdown_delay).await;
    stop_accepting.cancel();
    let drained = tokio::time::timeout(cfg.shutdown_grace, async {
        while let Some(res) = servers.join_next().await {
            if let Ok(Err(e)) = res {
                tracing::warn!(error = %e, "listener error during shutdown");
            }
        }
    })
    .await;
    if drained.is_err() {
        tracing::warn!("shutdown grace expired; closing the remaining connections");
        servers.abort_all();
    }
    purge.abort();
    sweep.abort();
    stop_background.cancel();
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        futures::future::join_all(background),
    )
    .await;
    if let Err(e) = state.store.flush().await {
        tracing::error!(error = %e, "queued usage records could not be written before exit");
    }
    stop_tls.cancel();
    if let Some(t) = tls_task {
        t.abort();
    }
    tracing::info!("moltbot stopped");
    Ok(())
}
