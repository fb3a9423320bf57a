//! Built-in ACME (`[tls.acme]`) through the `rustls-acme` crate: the account key and certificate are
//! cached in `cache_dir` (a restart reuses them instead of ordering again), and the certificate is
//! renewed before it expires while the server runs.
//!
//! Challenge: TLS-ALPN-01 on the HTTPS listeners by default (the validation handshake offers only
//! `acme-tls/1`; [`super::listener`] answers it with the challenge certificate and closes). With
//! `http01_addr` set, HTTP-01 instead: that plain listener answers
//! `/.well-known/acme-challenge/<token>` and redirects everything else to https. `rustls-acme` uses
//! one challenge type per configuration, so HTTP-01 replaces TLS-ALPN-01 rather than adding to it.

use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use axum::Router;
use axum::extract::{Path, Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use futures::StreamExt as _;
use moltbot_config::AcmeSettings;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_acme::caches::DirCache;
use rustls_acme::{AcmeConfig, AcmeState, EventOk, ResolvesServerCertAcme, UseChallenge};
use tokio_util::sync::CancellationToken;

use super::{CertInfo, record_cert};

/// Path prefix of HTTP-01 challenges (RFC 8555 §8.3).
pub const HTTP01_PREFIX: &str = "/.well-known/acme-challenge/";

pub struct Acme {
    state: AcmeState<std::io::Error>,
    resolver: Arc<AcmeResolver>,
    challenge: Option<Arc<ServerConfig>>,
    http01: bool,
}

impl Acme {
    pub fn new(settings: &AcmeSettings, provider: &Arc<CryptoProvider>) -> anyhow::Result<Self> {
        let client = Arc::new(
            ClientConfig::builder_with_provider(provider.clone())
                .with_safe_default_protocol_versions()
                .context("rustls protocol versions")?
                .with_root_certificates(roots(settings.ca_file.as_deref())?)
                .with_no_client_auth(),
        );
        std::fs::create_dir_all(&settings.cache_dir)
            .with_context(|| format!("cache_dir: cannot create {}", settings.cache_dir))?;
        let http01 = settings.http01_addr.is_some();
        let state = AcmeConfig::new_with_client_config(&settings.domains, client)
            .contact(&settings.contact)
            .directory(&settings.directory_url)
            .challenge_type(if http01 {
                UseChallenge::Http01
            } else {
                UseChallenge::TlsAlpn01
            })
            .cache(DirCache::new(settings.cache_dir.clone()))
            .state();
        let challenge = (!http01).then(|| state.challenge_rustls_config_with_provider(provider.clone()));
        let resolver = Arc::new(AcmeResolver {
            inner: state.resolver(),
            served: Mutex::new(None),
        });
        tracing::info!(domains = ?settings.domains, directory = %settings.directory_url,
            challenge = if http01 { "http-01" } else { "tls-alpn-01" }, cache_dir = %settings.cache_dir,
            "ACME enabled");
        Ok(Self {
            state,
            resolver,
            challenge,
            http01,
        })
    }

    pub fn resolver(&self) -> Arc<dyn ResolvesServerCert> {
        self.resolver.clone()
    }

    /// The server config for TLS-ALPN-01 validation handshakes (`None` with HTTP-01).
    pub fn challenge_config(&self) -> Option<Arc<ServerConfig>> {
        self.challenge.clone()
    }

    /// The plain HTTP-01 listener's router; redirects to `https://<host>:<https_port>`.
    pub fn http01_router(&self, https_port: u16) -> Option<Router> {
        self.http01.then(|| {
            Router::new()
                .route(
                    &format!("{HTTP01_PREFIX}{{token}}"),
                    axum::routing::get(http01_token),
                )
                .fallback(to_https)
                .with_state(Http01 {
                    resolver: self.resolver.inner.clone(),
                    https_port,
                })
        })
    }

    /// Drive the ACME client (order, renew, cache) until `stop`.
    pub async fn run(mut self, stop: CancellationToken) {
        loop {
            let event = tokio::select! {
                () = stop.cancelled() => return,
                e = self.state.next() => e,
            };
            match event {
                Some(Ok(ok)) => {
                    let what = match ok {
                        EventOk::DeployedCachedCert => "deployed the cached certificate",
                        EventOk::DeployedNewCert => "deployed a newly issued certificate",
                        EventOk::CertCacheStore => "stored the certificate in the cache",
                        EventOk::AccountCacheStore => "stored the account in the cache",
                    };
                    tracing::info!("ACME: {what}");
                }
                Some(Err(e)) => tracing::error!(error = %e, "ACME error (retried with backoff)"),
                None => return,
            }
        }
    }
}

/// The trusted roots for the ACME server: the Mozilla set, plus `ca_file` when given.
fn roots(ca_file: Option<&str>) -> anyhow::Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = ca_file {
        let certs = CertificateDer::pem_file_iter(path)
            .and_then(Iterator::collect::<Result<Vec<_>, _>>)
            .map_err(|e| anyhow::anyhow!("ca_file {path}: not a readable PEM certificate file ({e})"))?;
        if certs.is_empty() {
            anyhow::bail!("ca_file {path}: holds no CERTIFICATE block");
        }
        for cert in certs {
            roots
                .add(cert)
                .map_err(|e| anyhow::anyhow!("ca_file {path}: unusable CA certificate ({e})"))?;
        }
    }
    Ok(roots)
}

/// The ACME resolver, plus logging and the expiry gauge when the served certificate changes.
#[derive(Debug)]
struct AcmeResolver {
    inner: Arc<ResolvesServerCertAcme>,
    served: Mutex<Option<Arc<CertifiedKey>>>,
}

impl ResolvesServerCert for AcmeResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let cert = self.inner.resolve(hello)?;
        let mut served = self
            .served
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if served.as_ref().is_none_or(|s| !Arc::ptr_eq(s, &cert)) {
            if let Ok(info) = CertInfo::of(&cert) {
                tracing::info!(serial = %info.serial, not_after = %info.not_after_rfc3339(),
                    subject = %info.subject, "serving the ACME certificate");
                record_cert(&info);
            }
            *served = Some(cert.clone());
        }
        Some(cert)
    }
}

#[derive(Clone)]
struct Http01 {
    resolver: Arc<ResolvesServerCertAcme>,
    https_port: u16,
}

async fn http01_token(State(s): State<Http01>, Path(token): Path<String>) -> Response {
    match s.resolver.get_http_01_key_auth(&token) {
        Some(key_auth) => ([(header::CONTENT_TYPE, "application/octet-stream")], key_auth).into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

/// Everything but challenges: a permanent redirect to the same path over https.
async fn to_https(State(s): State<Http01>, req: Request) -> Response {
    let Some(host) = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.parse::<axum::http::uri::Authority>().ok())
    else {
        return (StatusCode::BAD_REQUEST, "a Host header is required\n").into_response();
    };
    let port = if s.https_port == 443 {
        String::new()
    } else {
        format!(":{}", s.https_port)
    };
    let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
    Redirect::permanent(&format!("https://{}{port}{path}", host.host())).into_response()
}
