//! Native TLS (`[tls]`): rustls on the listeners named in `tls.listeners`, with the certificate from
//! PEM files (reloaded without restart, see [`files`]) or from built-in ACME (see [`acme`]).
//!
//! Handshakes run off the accept loop with a timeout ([`listener`]); ALPN offers `h2` and
//! `http/1.1`. Requests that arrived over TLS carry [`TlsConnection`], which the security headers
//! (HSTS), the admin session cookie (`Secure`) and WebSocket origin checks read through
//! [`crate::security::request_is_tls`].

pub mod acme;
pub mod files;
pub mod listener;

use std::sync::Arc;

use anyhow::Context as _;
use metrics::{Unit, counter, describe_counter, describe_gauge, gauge};
use moltbot_config::Config;
use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::sign::CertifiedKey;
use tokio_util::sync::CancellationToken;

pub use listener::{HANDSHAKE_TIMEOUT, TlsAcceptor};

/// Reloads of `tls.cert`/`tls.key` that failed (the old pair stays in use).
pub const TLS_RELOAD_ERRORS: &str = "moltbot_tls_reload_errors_total";
/// Expiry (`notAfter`) of the served certificate, as a Unix timestamp.
pub const TLS_CERT_EXPIRY: &str = "moltbot_tls_cert_expiry_seconds";

/// ALPN protocols offered to clients, in order of preference.
pub const ALPN: &[&[u8]] = &[b"h2", b"http/1.1"];

/// Marker in the extensions of every request that arrived over a TLS connection of ours.
#[derive(Debug, Clone, Copy)]
pub struct TlsConnection;

/// Whether the request arrived over one of our TLS listeners.
pub fn arrived_over_tls(extensions: &http::Extensions) -> bool {
    extensions.get::<TlsConnection>().is_some()
}

/// The ring provider: the one the rest of the workspace (reqwest, sqlx) builds already.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// What the logs and metrics say about a certificate.
#[derive(Debug, Clone, Default)]
pub struct CertInfo {
    /// Serial number, hex with colons (as `openssl x509 -serial` prints it, lower case).
    pub serial: String,
    pub subject: String,
    /// `notAfter` as a Unix timestamp.
    pub not_after: i64,
}

impl CertInfo {
    /// Parse the leaf certificate of a pair.
    pub fn of(certified: &CertifiedKey) -> Result<Self, String> {
        let leaf = certified.cert.first().ok_or("empty certificate chain")?;
        Self::of_der(leaf)
    }

    pub fn of_der(der: &[u8]) -> Result<Self, String> {
        let (_, cert) = x509_parser::parse_x509_certificate(der)
            .map_err(|e| format!("the leaf certificate does not parse ({e})"))?;
        Ok(Self {
            serial: cert.raw_serial_as_string(),
            subject: cert.subject().to_string(),
            not_after: cert.validity().not_after.timestamp(),
        })
    }

    pub fn not_after_rfc3339(&self) -> String {
        std::time::UNIX_EPOCH
            .checked_add(std::time::Duration::from_secs(
                u64::try_from(self.not_after).unwrap_or_default(),
            ))
            .map(|t| humantime::format_rfc3339_seconds(t).to_string())
            .unwrap_or_default()
    }
}

fn describe() {
    describe_counter!(
        TLS_RELOAD_ERRORS,
        Unit::Count,
        "Reloads of tls.cert/tls.key that failed (unreadable, invalid or mismatched files); the previous \
         certificate stays in use."
    );
    describe_gauge!(
        TLS_CERT_EXPIRY,
        Unit::Seconds,
        "Expiry (notAfter) of the certificate being served, as a Unix timestamp; alert on \
         moltbot_tls_cert_expiry_seconds - time() < 14 days."
    );
}

/// Log and count a failed reload.
pub(crate) fn reload_error(e: &dyn std::fmt::Display) {
    tracing::error!(error = %e, "TLS certificate reload failed; still serving the previous certificate");
    counter!(TLS_RELOAD_ERRORS).increment(1);
}

pub(crate) fn record_cert(info: &CertInfo) {
    #[allow(clippy::cast_precision_loss)] // Unix seconds fit an f64 exactly until the year 285 million.
    gauge!(TLS_CERT_EXPIRY).set(info.not_after as f64);
}

/// TLS for one process: the server config shared by every TLS listener, plus the background work
/// (file polling or the ACME client) that [`Tls::spawn`] starts.
pub struct Tls {
    acceptor: TlsAcceptor,
    background: Background,
}

enum Background {
    Files {
        resolver: Arc<files::FileResolver>,
        interval: std::time::Duration,
    },
    Acme(acme::Acme),
}

impl Tls {
    /// Build from the configuration; `None` when TLS is not configured. Errors name the file or key.
    pub fn from_config(config: &Config) -> anyhow::Result<Option<Self>> {
        let tls = &config.tls;
        if !tls.enabled() {
            return Ok(None);
        }
        describe();
        let provider = provider();
        if let (Some(cert), Some(key)) = (&tls.cert, &tls.key) {
            let resolver = files::FileResolver::load(
                files::CertFiles {
                    cert: cert.into(),
                    key: key.into(),
                },
                provider.clone(),
            )?;
            let server = server_config(&provider, resolver.clone())?;
            return Ok(Some(Self {
                acceptor: TlsAcceptor::new(server, None),
                background: Background::Files {
                    resolver,
                    interval: tls.reload_interval,
                },
            }));
        }
        let acme = acme::Acme::new(&tls.acme, &provider).context("tls.acme")?;
        let server = server_config(&provider, acme.resolver())?;
        Ok(Some(Self {
            acceptor: TlsAcceptor::new(server, acme.challenge_config()),
            background: Background::Acme(acme),
        }))
    }

    /// The acceptor for the TLS listeners.
    pub fn acceptor(&self) -> TlsAcceptor {
        self.acceptor.clone()
    }

    /// The HTTP-01 challenge router, when `tls.acme.http01_addr` is configured.
    pub fn http01_router(&self, https_port: u16) -> Option<axum::Router> {
        match &self.background {
            Background::Acme(acme) => acme.http01_router(https_port),
            Background::Files { .. } => None,
        }
    }

    /// Start polling the files or the ACME client; both stop when `stop` is cancelled.
    pub fn spawn(self, stop: CancellationToken) -> tokio::task::JoinHandle<()> {
        match self.background {
            Background::Files { resolver, interval } => tokio::spawn(resolver.watch(interval, stop)),
            Background::Acme(acme) => tokio::spawn(acme.run(stop)),
        }
    }
}

fn server_config(
    provider: &Arc<CryptoProvider>,
    resolver: Arc<dyn rustls::server::ResolvesServerCert>,
) -> anyhow::Result<Arc<ServerConfig>> {
    let mut config = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .context("rustls protocol versions")?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}
