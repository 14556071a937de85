//! TLS on the public listener (`tls-cert`, `tls-key`): HTTPS and WSS.
//!
//! One layer between the TCP accept and hyper: the accept loop
//! ([`crate::server`]) hands every admitted connection to
//! [`PublicTls::accept`] (or, without TLS, wraps it as it is) and serves
//! the [`Stream`] it gets back; nothing above knows whether the bytes were
//! encrypted. (The browser cookie is marked `Secure` when TLS is on, see
//! [`crate::Config::secure_cookie`].)
//!
//! - The handshake is bounded by `header-read-timeout`, as the request head
//!   that follows it is: a client that opens TCP and sends nothing is
//!   closed, and meanwhile holds one of the capped places
//!   ([`super::connections`]) like any other connection. A failed or timed
//!   out handshake is counted and logged at a bounded rate
//!   ([`Limit::TlsHandshake`]).
//! - The certificate and key are read when the server binds (an unreadable
//!   or invalid file is an error naming it), then again whenever either
//!   file's modification time or size changes (checked every
//!   [`WATCH_PERIOD`]) and on [`PublicTls::reload`] (`halley serve` calls
//!   it on SIGHUP). New connections get the new certificate; open ones go
//!   on with theirs. A new pair that does not load (half written, key and
//!   certificate not matching) is logged as an error and the old one kept.
//! - rustls on `ring`; TLS 1.2 and 1.3; ALPN `http/1.1` (hyper serves
//!   HTTP/1.1 only here, and WebSocket upgrades need it).

use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use parking_lot::{Mutex, RwLock};
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

/// How often the files' modification times are looked at.
pub const WATCH_PERIOD: Duration = Duration::from_secs(2);

/// The public listener's TLS: the acceptor and the certificate it serves.
pub struct PublicTls {
    acceptor: TlsAcceptor,
    current: Arc<CurrentCertificate>,
    files: CertificateFiles,
    /// What the files looked like when last loaded (or tried).
    seen: Mutex<Stamps>,
}

/// Where the certificate chain and the key are read from.
#[derive(Debug, Clone)]
struct CertificateFiles {
    cert: PathBuf,
    key: PathBuf,
}

/// Modification time and size of each file; a change of either means the
/// file was rewritten.
type Stamps = [Option<(SystemTime, u64)>; 2];

/// The certificate new handshakes get, swapped by a reload.
#[derive(Debug)]
struct CurrentCertificate(RwLock<Arc<CertifiedKey>>);

impl ResolvesServerCert for CurrentCertificate {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.read().clone())
    }
}

impl PublicTls {
    /// Reads `cert` (a PEM chain, the server's certificate first) and `key`
    /// (PKCS#8, PKCS#1 or SEC1 PEM); the error names the file at fault.
    pub fn load(cert: &Path, key: &Path) -> Result<PublicTls, String> {
        let files = CertificateFiles {
            cert: cert.to_owned(),
            key: key.to_owned(),
        };
        let stamps = files.stamps();
        let certified = files.load()?;
        let current = Arc::new(CurrentCertificate(RwLock::new(Arc::new(certified))));
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS: {e}"))?
            .with_no_client_auth()
            .with_cert_resolver(current.clone());
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(PublicTls {
            acceptor: TlsAcceptor::from(Arc::new(config)),
            current,
            files,
            seen: Mutex::new(stamps),
        })
    }

    /// Runs the TLS handshake on an accepted connection, for at most
    /// `timeout`.
    pub async fn accept(&self, tcp: TcpStream, timeout: Duration) -> io::Result<Stream> {
        match tokio::time::timeout(timeout, self.acceptor.accept(tcp)).await {
            Ok(Ok(tls)) => Ok(Stream::Tls(Box::new(tls))),
            Ok(Err(error)) => Err(error),
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no TLS handshake in {timeout:?}"),
            )),
        }
    }

    /// Reads the files again: new connections get the new certificate; on
    /// failure the old one stays and the error is logged (and returned).
    pub fn reload(&self) -> Result<(), String> {
        *self.seen.lock() = self.files.stamps();
        match self.files.load() {
            Ok(certified) => {
                *self.current.0.write() = Arc::new(certified);
                tracing::info!(
                    cert = %self.files.cert.display(),
                    "TLS certificate reloaded: new connections use it"
                );
                Ok(())
            }
            Err(error) => {
                tracing::error!(
                    %error,
                    "TLS certificate not reloaded: still serving the previous one"
                );
                Err(error)
            }
        }
    }

    /// Reloads whenever a file changes (looked at every [`WATCH_PERIOD`]),
    /// until `stop` resolves.
    pub async fn watch(&self, stop: impl std::future::Future<Output = ()>) {
        tokio::pin!(stop);
        loop {
            tokio::select! {
                _ = tokio::time::sleep(WATCH_PERIOD) => {}
                _ = &mut stop => return,
            }
            let changed = *self.seen.lock() != self.files.stamps();
            if changed {
                let _ = self.reload();
            }
        }
    }

    /// The certificate new connections get (its DER bytes), for tests.
    pub fn serving(&self) -> Vec<u8> {
        self.current.0.read().cert[0].to_vec()
    }
}

/// rustls's `ring` provider, named rather than taken from the process
/// default, which depends on the features other crates turn on.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl CertificateFiles {
    fn stamps(&self) -> Stamps {
        [&self.cert, &self.key].map(|path| {
            let meta = std::fs::metadata(path).ok()?;
            Some((meta.modified().ok()?, meta.len()))
        })
    }

    fn load(&self) -> Result<CertifiedKey, String> {
        let (cert_path, key_path) = (self.cert.display(), self.key.display());
        let pem = std::fs::read(&self.cert)
            .map_err(|e| format!("tls-cert {cert_path}: cannot read it: {e}"))?;
        let chain = CertificateDer::pem_slice_iter(&pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("tls-cert {cert_path}: not a PEM certificate chain: {e}"))?;
        if chain.is_empty() {
            return Err(format!(
                "tls-cert {cert_path}: no certificate in it (expected PEM, -----BEGIN CERTIFICATE-----)"
            ));
        }
        let pem = std::fs::read(&self.key)
            .map_err(|e| format!("tls-key {key_path}: cannot read it: {e}"))?;
        let key = PrivateKeyDer::from_pem_slice(&pem).map_err(|e| {
            format!("tls-key {key_path}: no PEM private key in it (PKCS#8, PKCS#1 or SEC1): {e}")
        })?;
        CertifiedKey::from_der(chain, key, &provider())
            .map_err(|e| format!("tls-key {key_path} does not go with tls-cert {cert_path}: {e}"))
    }
}

/// An accepted connection as hyper reads it: plain TCP, or TLS over it.
pub enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(tcp) => Pin::new(tcp).poll_read(cx, buf),
            Stream::Tls(tls) => Pin::new(tls.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(tcp) => Pin::new(tcp).poll_write(cx, buf),
            Stream::Tls(tls) => Pin::new(tls.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(tcp) => Pin::new(tcp).poll_write_vectored(cx, bufs),
            Stream::Tls(tls) => Pin::new(tls.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Plain(tcp) => tcp.is_write_vectored(),
            Stream::Tls(tls) => tls.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(tcp) => Pin::new(tcp).poll_flush(cx),
            Stream::Tls(tls) => Pin::new(tls.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(tcp) => Pin::new(tcp).poll_shutdown(cx),
            Stream::Tls(tls) => Pin::new(tls.as_mut()).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(dir: &Path, name: &str) -> (PathBuf, PathBuf, Vec<u8>) {
        let rcgen::CertifiedKey { cert, signing_key } =
            rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let (cert_path, key_path) = (
            dir.join(format!("{name}.crt")),
            dir.join(format!("{name}.key")),
        );
        std::fs::write(&cert_path, cert.pem()).unwrap();
        std::fs::write(&key_path, signing_key.serialize_pem()).unwrap();
        (cert_path, key_path, cert.der().to_vec())
    }

    #[test]
    fn loads_reloads_and_keeps_the_old_pair_on_a_bad_one() {
        let dir = std::env::temp_dir().join(format!("halley-tls-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (cert, key, first) = pair(&dir, "a");
        let tls = PublicTls::load(&cert, &key).unwrap();
        assert_eq!(tls.serving(), first);

        // A new pair written over the old files.
        let (b_cert, b_key, second) = pair(&dir, "b");
        std::fs::copy(&b_cert, &cert).unwrap();
        std::fs::copy(&b_key, &key).unwrap();
        tls.reload().unwrap();
        assert_eq!(tls.serving(), second);

        // A key that does not match: refused, the current pair stays.
        let (_, other_key, _) = pair(&dir, "c");
        std::fs::copy(&other_key, &key).unwrap();
        let error = tls.reload().unwrap_err();
        assert!(error.contains("does not go with"), "{error}");
        assert_eq!(tls.serving(), second);
        // Garbage and missing files: errors naming the file.
        std::fs::write(&cert, "not a certificate").unwrap();
        let error = tls.reload().unwrap_err();
        assert!(
            error.contains("tls-cert") && error.contains("a.crt"),
            "{error}"
        );
        let error = PublicTls::load(&dir.join("missing.crt"), &key)
            .err()
            .unwrap();
        assert!(error.contains("missing.crt: cannot read it"), "{error}");
        let error = PublicTls::load(&b_cert, &b_cert).err().unwrap();
        assert!(
            error.contains("tls-key") && error.contains("no PEM private key"),
            "{error}"
        );
        assert_eq!(tls.serving(), second);
    }
}
