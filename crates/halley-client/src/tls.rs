//! Which servers a client trusts over `https://` (long-polling) and the
//! WebSocket upgraded from it (`wss`).
//!
//! [`Trust::system`]: the operating system's roots (`rustls-native-certs`:
//! `/etc/ssl/certs` on Debian, and `SSL_CERT_FILE` when set), read once per
//! process, so the certificates an operator installed for curl work here
//! too. [`Trust::with_ca_file`] adds CA certificates of one's own (a
//! private CA, or a test server's self-signed certificate): a server is
//! never trusted without a certificate that chains to one of these.
//!
//! One [`Trust`] serves both ways a client talks HTTP: the long-polling
//! connections of its own (`transport::http1`), through a rustls
//! connector, and the `reqwest` client of raw requests and WebSocket
//! upgrades ([`Trust::http_client`]), given the same rustls configuration.
//! Building either costs an `Arc` clone, not a new root store, which
//! matters to a load generator making thousands of clients.

use std::net::IpAddr;
use std::path::Path;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use tokio_rustls::TlsConnector;

use crate::error::Error;

/// The roots a client checks a server's certificate against.
#[derive(Debug, Clone)]
pub struct Trust {
    config: Arc<ClientConfig>,
}

/// The system's roots, read once (a few milliseconds and a few hundred
/// certificates parsed).
static SYSTEM: LazyLock<Arc<RootCertStore>> = LazyLock::new(|| {
    let mut roots = RootCertStore::empty();
    let found = rustls_native_certs::load_native_certs();
    for error in &found.errors {
        tracing::debug!(%error, "a system root certificate could not be read");
    }
    let (added, ignored) = roots.add_parsable_certificates(found.certs);
    tracing::debug!(added, ignored, "system root certificates");
    Arc::new(roots)
});

impl Trust {
    /// The operating system's roots only (the default of every client).
    pub fn system() -> Trust {
        static TRUST: LazyLock<Trust> = LazyLock::new(|| Trust::from_roots(SYSTEM.clone()));
        TRUST.clone()
    }

    /// The system's roots and every certificate of the PEM file at `path`
    /// (a CA, or a server's self-signed certificate).
    pub fn with_ca_file(path: &Path) -> Result<Trust, Error> {
        let pem = std::fs::read(path)
            .map_err(|e| Error::Tls(format!("CA certificate {}: {e}", path.display())))?;
        Trust::with_ca_pem(&pem)
            .map_err(|e| Error::Tls(format!("CA certificate {}: {e}", path.display())))
    }

    /// The system's roots and every certificate of `pem`.
    pub fn with_ca_pem(pem: &[u8]) -> Result<Trust, Error> {
        let extra = CertificateDer::pem_slice_iter(pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| Error::Tls(format!("not PEM certificates: {e}")))?;
        if extra.is_empty() {
            return Err(Error::Tls(
                "no certificate in it (expected PEM, -----BEGIN CERTIFICATE-----)".into(),
            ));
        }
        let mut roots = (**SYSTEM).clone();
        for cert in extra {
            roots
                .add(cert)
                .map_err(|e| Error::Tls(format!("not a usable CA certificate: {e}")))?;
        }
        Ok(Trust::from_roots(Arc::new(roots)))
    }

    fn from_roots(roots: Arc<RootCertStore>) -> Trust {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("ring supports the default TLS versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        Trust {
            config: Arc::new(config),
        }
    }

    /// The connector of long-polling connections.
    pub(crate) fn connector(&self) -> TlsConnector {
        TlsConnector::from(self.config.clone())
    }

    /// An HTTP client suited to long-polling, trusting these roots:
    /// HTTP/1.1, no proxy, no Nagle delay, optionally bound to a local
    /// source address (a load generator spreads its connections over
    /// several addresses to get past one address's ports).
    ///
    /// Many [`crate::Client`]s can share one; each keeps its own cookies. A
    /// long-polling client uses it for raw requests only (its Bayeux
    /// exchanges go over connections of its own); a websocket client for
    /// its upgrades.
    pub fn http_client(&self, local_address: Option<IpAddr>) -> reqwest::Result<reqwest::Client> {
        reqwest::Client::builder()
            .use_preconfigured_tls((*self.config).clone())
            .no_proxy()
            .tcp_nodelay(true)
            .pool_idle_timeout(Duration::from_secs(60))
            .connect_timeout(Duration::from_secs(10))
            .local_address(local_address)
            .build()
    }
}
