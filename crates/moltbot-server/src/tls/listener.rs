//! TLS listeners for `axum::serve`: a task accepts TCP connections and runs each handshake in its own
//! task with a timeout, so a slow or idle client never holds up the accept loop; finished handshakes
//! are handed to axum through a channel. When axum stops accepting (graceful shutdown) it drops the
//! listener, which ends the accept task and closes the port, as for a plain `TcpListener`.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls::ServerConfig;
use tokio::io::AsyncWriteExt as _;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_rustls::LazyConfigAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_util::either::Either;

/// Longest a client may take to complete the TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes in progress at once per listener; beyond that, accepting waits.
const MAX_PENDING_HANDSHAKES: usize = 1024;
/// The ALPN protocol of ACME TLS-ALPN-01 validation (RFC 8737).
const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

/// Shared by every TLS listener: the server config, and the ACME challenge config when ACME runs.
#[derive(Clone)]
pub struct TlsAcceptor {
    config: Arc<ServerConfig>,
    challenge: Option<Arc<ServerConfig>>,
    timeout: Duration,
}

impl TlsAcceptor {
    pub fn new(config: Arc<ServerConfig>, challenge: Option<Arc<ServerConfig>>) -> Self {
        Self {
            config,
            challenge,
            timeout: HANDSHAKE_TIMEOUT,
        }
    }

    /// Override [`HANDSHAKE_TIMEOUT`] (tests).
    #[must_use]
    pub fn with_handshake_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// `Ok(None)`: an ACME TLS-ALPN-01 validation, answered and closed.
    async fn handshake(&self, tcp: TcpStream) -> io::Result<Option<TlsStream<TcpStream>>> {
        let start = LazyConfigAcceptor::new(rustls::server::Acceptor::default(), tcp).await?;
        if let Some(challenge) = &self.challenge
            && start
                .client_hello()
                .alpn()
                .is_some_and(|mut protocols| protocols.any(|p| p == ACME_TLS_ALPN))
        {
            let mut stream = start.into_stream(challenge.clone()).await?;
            let _ = stream.shutdown().await;
            return Ok(None);
        }
        Ok(Some(start.into_stream(self.config.clone()).await?))
    }

    /// Serve TLS on this bound listener.
    pub fn listen(self, tcp: TcpListener) -> io::Result<TlsListener> {
        let local = tcp.local_addr()?;
        let (tx, rx) = mpsc::channel(64);
        let task = tokio::spawn(accept_loop(tcp, self, tx));
        Ok(TlsListener { rx, local, task })
    }
}

/// A bound TLS listener; dropping it closes the port.
pub struct TlsListener {
    rx: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn accept_loop(
    tcp: TcpListener,
    acceptor: TlsAcceptor,
    tx: mpsc::Sender<(TlsStream<TcpStream>, SocketAddr)>,
) {
    let pending = Arc::new(Semaphore::new(MAX_PENDING_HANDSHAKES));
    loop {
        let permit = tokio::select! {
            () = tx.closed() => return,
            p = pending.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return,
            },
        };
        let (stream, peer) = tokio::select! {
            () = tx.closed() => return,
            r = tcp.accept() => match r {
                Ok(conn) => conn,
                Err(e) => {
                    accept_error(e).await;
                    continue;
                }
            },
        };
        no_delay(&stream);
        let acceptor = acceptor.clone();
        let tx = tx.clone();
        tokio::spawn(async move {
            let _permit = permit;
            match tokio::time::timeout(acceptor.timeout, acceptor.handshake(stream)).await {
                Ok(Ok(Some(tls))) => {
                    // Fails only when the server stopped accepting: the connection is dropped.
                    let _ = tx.send((tls, peer)).await;
                }
                Ok(Ok(None)) => tracing::info!(%peer, "answered an ACME TLS-ALPN-01 validation"),
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                Err(_) => tracing::debug!(%peer, timeout = ?acceptor.timeout, "TLS handshake timed out"),
            }
        });
    }
}

/// Like axum's own loop: per-connection errors are ignored; others (EMFILE) are logged and slowed
/// down so that the loop does not spin.
async fn accept_error(e: io::Error) {
    if matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused | io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset
    ) {
        return;
    }
    tracing::error!(error = %e, "accept error");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

/// TCP_NODELAY on every accepted connection: a streamed reply is many small writes (one SSE event per
/// token), and with Nagle's algorithm each write after the first waits for the client's ACK of the
/// previous one. The upstream client (reqwest) sets it on its side too.
fn no_delay(stream: &TcpStream) {
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!(error = %e, "could not set TCP_NODELAY");
    }
}

/// A plain or TLS listener, one type for `axum::serve`.
pub enum ServeListener {
    Plain(TcpListener),
    Tls(TlsListener),
}

impl axum::serve::Listener for ServeListener {
    type Io = Either<TcpStream, TlsStream<TcpStream>>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self {
            Self::Plain(l) => {
                let (s, a) = axum::serve::Listener::accept(l).await;
                no_delay(&s);
                (Either::Left(s), a)
            }
            Self::Tls(l) => match l.rx.recv().await {
                Some((s, a)) => (Either::Right(s), a),
                // The accept task ended (it only does when the listener is being dropped).
                None => std::future::pending().await,
            },
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        match self {
            Self::Plain(l) => l.local_addr(),
            Self::Tls(l) => Ok(l.local),
        }
    }
}
