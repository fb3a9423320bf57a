//! Certificates from PEM files (`tls.cert` / `tls.key`), swapped in without a restart when the files
//! change: a poll every `tls.reload_interval` (and on SIGHUP) compares the files' contents; a valid new
//! pair replaces the served one for new handshakes, an invalid one keeps the old pair, logs an error and
//! counts `moltbot_tls_reload_errors_total`. certbot renews by rewriting the `live/` links one after the
//! other, so a poll may see a new certificate with the old key: that attempt fails, and the next poll
//! (with both files new) succeeds.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use super::{CertInfo, record_cert, reload_error};

/// Why a certificate/key pair could not be loaded. The message names the file.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read {key} {path}: {source}")]
    Read {
        key: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{key} {path}: {message}")]
    Invalid {
        key: &'static str,
        path: PathBuf,
        message: String,
    },
    #[error("tls.key {key} does not belong to tls.cert {cert}: {message}")]
    Mismatch {
        cert: PathBuf,
        key: PathBuf,
        message: String,
    },
}

/// The pair of files and what was last read from them.
#[derive(Debug, Clone)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Contents of both files, read together.
struct Contents {
    cert: Vec<u8>,
    key: Vec<u8>,
}

impl Contents {
    fn digest(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(&self.cert);
        h.update([0]);
        h.update(&self.key);
        h.finalize().into()
    }
}

impl CertFiles {
    fn read(&self) -> Result<Contents, LoadError> {
        let read = |key: &'static str, path: &Path| {
            std::fs::read(path).map_err(|source| LoadError::Read {
                key,
                path: path.to_owned(),
                source,
            })
        };
        Ok(Contents {
            cert: read("tls.cert", &self.cert)?,
            key: read("tls.key", &self.key)?,
        })
    }

    fn parse(&self, contents: &Contents, provider: &CryptoProvider) -> Result<CertifiedKey, LoadError> {
        let invalid = |key: &'static str, path: &Path, message: String| LoadError::Invalid {
            key,
            path: path.to_owned(),
            message,
        };
        let chain = CertificateDer::pem_slice_iter(&contents.cert)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| {
                invalid(
                    "tls.cert",
                    &self.cert,
                    format!("not a PEM certificate chain ({e})"),
                )
            })?;
        if chain.is_empty() {
            return Err(invalid(
                "tls.cert",
                &self.cert,
                "holds no CERTIFICATE block".to_owned(),
            ));
        }
        let key = PrivateKeyDer::from_pem_slice(&contents.key)
            .map_err(|e| invalid("tls.key", &self.key, format!("not a PEM private key ({e})")))?;
        let signing = provider
            .key_provider
            .load_private_key(key)
            .map_err(|e| invalid("tls.key", &self.key, format!("unusable private key ({e})")))?;
        let certified = CertifiedKey::new(chain, signing);
        certified.keys_match().map_err(|e| LoadError::Mismatch {
            cert: self.cert.clone(),
            key: self.key.clone(),
            message: e.to_string(),
        })?;
        // The leaf must at least parse, so that a truncated file is refused here, not at the client.
        CertInfo::of(&certified).map_err(|message| invalid("tls.cert", &self.cert, message))?;
        Ok(certified)
    }
}

/// Serves the current pair; [`FileResolver::reload`] swaps it.
#[derive(Debug)]
pub struct FileResolver {
    files: CertFiles,
    provider: Arc<CryptoProvider>,
    current: RwLock<Arc<CertifiedKey>>,
    /// Digest of the contents last tried (loaded or refused): unchanged files are not parsed again,
    /// and a refused pair is reported once, not on every poll.
    last_seen: RwLock<[u8; 32]>,
}

impl FileResolver {
    /// Load the pair at startup; an error here stops the server (it names the file).
    pub fn load(files: CertFiles, provider: Arc<CryptoProvider>) -> Result<Arc<Self>, LoadError> {
        let contents = files.read()?;
        let certified = files.parse(&contents, &provider)?;
        let info = CertInfo::of(&certified).unwrap_or_default();
        tracing::info!(cert = %files.cert.display(), serial = %info.serial, not_after = %info.not_after_rfc3339(),
            subject = %info.subject, "TLS certificate loaded");
        record_cert(&info);
        Ok(Arc::new(Self {
            files,
            provider,
            current: RwLock::new(Arc::new(certified)),
            last_seen: RwLock::new(contents.digest()),
        }))
    }

    /// Re-read the files; swap the pair in when they changed and are valid. Returns whether a new pair
    /// is being served.
    pub fn reload(&self) -> bool {
        let contents = match self.files.read() {
            Ok(c) => c,
            Err(e) => {
                // Also counted each poll while a file is missing: that is an outage in the making.
                reload_error(&e);
                return false;
            }
        };
        let digest = contents.digest();
        if *read_lock(&self.last_seen) == digest {
            return false;
        }
        *write_lock(&self.last_seen) = digest;
        match self.files.parse(&contents, &self.provider) {
            Ok(certified) => {
                let info = CertInfo::of(&certified).unwrap_or_default();
                *write_lock(&self.current) = Arc::new(certified);
                tracing::info!(cert = %self.files.cert.display(), serial = %info.serial,
                    not_after = %info.not_after_rfc3339(), subject = %info.subject,
                    "TLS certificate reloaded; new connections get the new certificate");
                record_cert(&info);
                true
            }
            Err(e) => {
                reload_error(&e);
                false
            }
        }
    }

    /// Poll the files every `interval` (and on SIGHUP) until `stop`.
    pub async fn watch(self: Arc<Self>, interval: Duration, stop: CancellationToken) {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        let mut hup = hangup();
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = tick.tick() => {}
                () = next_hangup(&mut hup) => tracing::info!("SIGHUP: checking the TLS certificate files"),
            }
            let this = self.clone();
            // File reads and key parsing are blocking work.
            let _ = tokio::task::spawn_blocking(move || this.reload()).await;
        }
    }
}

impl ResolvesServerCert for FileResolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(read_lock(&self.current).clone())
    }
}

fn read_lock<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn write_lock<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(unix)]
type Hangup = Option<tokio::signal::unix::Signal>;
#[cfg(not(unix))]
type Hangup = ();

#[cfg(unix)]
fn hangup() -> Hangup {
    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok()
}
#[cfg(not(unix))]
fn hangup() -> Hangup {}

#[cfg(unix)]
async fn next_hangup(h: &mut Hangup) {
    match h {
        Some(s) => {
            if s.recv().await.is_none() {
                std::future::pending::<()>().await;
            }
        }
        None => std::future::pending::<()>().await,
    }
}
#[cfg(not(unix))]
async fn next_hangup(_h: &mut Hangup) {
    std::future::pending::<()>().await
}
