//! TLS for moltbot's outgoing HTTPS (upstream platforms, webhooks, chat platforms): one trust store per
//! process, read when the first certificate has to be checked.
//!
//! reqwest builds a trust store for every client it builds: the Mozilla roots, and — with
//! `rustls-native-certs`, which object_store's features switch on workspace-wide — the system's, read
//! from `/etc/ssl/certs` (on Debian the bundle *and* every file of the directory: 292 reads and parses,
//! ~11M instructions). A server start built two clients before `/ready`, so start-up paid that twice
//! before it could answer. Here the roots are read once per process, when the first certificate has to be
//! checked — by [`ready`] on a blocking thread before the first `https://` upstream call or webhook
//! delivery, else in that handshake — and building a client costs nothing of it. A process that never
//! speaks HTTPS (a local model, upstreams on `http://` inside the cluster) never reads them.
//!
//! What is trusted is what reqwest trusted: the Mozilla roots (webpki-roots) and the system's roots
//! (`SSL_CERT_FILE` / `SSL_CERT_DIR` when set, else the platform's store), certificates verified by
//! rustls' WebPKI verifier with the ring provider.

use std::sync::{Arc, OnceLock};

use rustls::DigitallySignedStruct;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};

/// Which protocols the client offers in ALPN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alpn {
    /// `http/1.1` only: what the upstream client must offer (see [`crate::http_client`]).
    Http1,
    /// `h2` then `http/1.1`, reqwest's own default.
    Any,
}

/// A rustls client configuration for `reqwest::ClientBuilder::use_preconfigured_tls`: the ring
/// provider, TLS 1.2 and 1.3, the process-wide lazily read roots, no client certificate.
pub fn client_config(alpn: Alpn) -> rustls::ClientConfig {
    let mut config = rustls::ClientConfig::builder_with_provider(provider().clone())
        .with_safe_default_protocol_versions()
        .expect("the ring provider supports TLS 1.2 and 1.3")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(LazyRoots))
        .with_no_client_auth();
    config.alpn_protocols = match alpn {
        Alpn::Http1 => vec![b"http/1.1".to_vec()],
        Alpn::Any => vec![b"h2".to_vec(), b"http/1.1".to_vec()],
    };
    config
}

/// Makes sure the trust store has been read, reading it on a blocking thread if not: called before an
/// `https://` request by the callers that can wait (the upstream backend, webhook delivery), so the first
/// handshake does not read 300 files on a runtime worker. Free once read (one atomic load).
pub async fn ready() {
    if ROOTS.get().is_none() {
        // A panic there would be the verifier's own, and the handshake would hit it again: nothing to add.
        let _ = tokio::task::spawn_blocking(verifier).await;
    }
}

/// What the process trusts, for `moltbot doctor`: read now if it was not yet.
pub fn trust_store() -> &'static TrustStore {
    &roots().1
}

/// The roots read, by source, and what could not be read.
#[derive(Debug, Clone, Default)]
pub struct TrustStore {
    /// The Mozilla roots compiled in (webpki-roots).
    pub mozilla: usize,
    /// Certificates added from the system store (`SSL_CERT_FILE` / `SSL_CERT_DIR`, else the platform's).
    pub system: usize,
    /// System certificates rustls could not parse (skipped, as reqwest does).
    pub skipped: usize,
    /// Files or directories of the system store that could not be read.
    pub errors: Vec<String>,
}

fn provider() -> &'static Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER.get_or_init(|| Arc::new(rustls::crypto::ring::default_provider()))
}

static ROOTS: OnceLock<(Arc<WebPkiServerVerifier>, TrustStore)> = OnceLock::new();

fn roots() -> &'static (Arc<WebPkiServerVerifier>, TrustStore) {
    ROOTS.get_or_init(|| {
        let mut store = rustls::RootCertStore::empty();
        store.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        let mozilla = store.len();
        let native = rustls_native_certs::load_native_certs();
        let errors: Vec<String> = native.errors.iter().map(ToString::to_string).collect();
        for e in &errors {
            tracing::warn!(error = %e, "could not read part of the system trust store");
        }
        // Old stores carry certificates webpki cannot parse (no extensions, say): skipped, as reqwest does.
        let (system, skipped) = store.add_parsable_certificates(native.certs);
        tracing::debug!(mozilla, system, skipped, "trust store read");
        let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(store), provider().clone())
            .build()
            .expect("a trust store with the Mozilla roots is never empty");
        let summary = TrustStore {
            mozilla,
            system,
            skipped,
            errors,
        };
        (verifier, summary)
    })
}

fn verifier() -> &'static WebPkiServerVerifier {
    &roots().0
}

/// rustls' WebPKI verifier over the process-wide roots, built on first use.
#[derive(Debug)]
struct LazyRoots;

impl ServerCertVerifier for LazyRoots {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        verifier().verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verifier().verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verifier().verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        // Known without the roots: what the provider can verify.
        provider().signature_verification_algorithms.supported_schemes()
    }
}
