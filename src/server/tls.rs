//! HTTPS on the listening port (`tls_cert`, `tls_key`): rustls with the
//! aws-lc-rs provider, TLS 1.2 and 1.3, ALPN `h2` and `http/1.1` (the
//! listener serves both on one port, as on plain HTTP).
//!
//! The certificate is re-read when its files change: every
//! [`RELOAD_POLL`] the two files are `stat`ed (through symlinks, so a
//! Kubernetes secret's `..data` swap or a certbot `live/` link counts), and
//! when either changed, both are loaded and checked (PEM, the key parses,
//! the key belongs to the first certificate). A good pair replaces the one
//! in use for every handshake from then on, atomically; a bad one (a
//! half-written file, a key of another certificate) is logged, counted
//! (`berth_tls_reloads_failed_total`) and ignored: the previous certificate
//! stays until the files change again. At startup, a bad pair is an error.
//!
//! Connections already open keep the certificate they were established
//! with. The handshake itself is bounded by the listener (see
//! `listener::serve_connection`): it happens within the connection's slot and
//! its idle timeout.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::crypto::CryptoProvider;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::{ClientHello, ResolvesServerCert};
use tokio_rustls::rustls::sign::CertifiedKey;
use tokio_rustls::rustls::{self, ServerConfig};

use crate::config::TlsFiles;
use crate::metrics::Metrics;

/// How often the certificate files are checked for changes.
pub const RELOAD_POLL: Duration = Duration::from_secs(2);

/// Why a certificate and key could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: no PEM certificate (-----BEGIN CERTIFICATE-----) in it")]
    NoCertificate { path: PathBuf },
    #[error(
        "{path}: no PEM private key (-----BEGIN PRIVATE KEY-----, RSA PRIVATE KEY or EC PRIVATE KEY) in it"
    )]
    NoKey { path: PathBuf },
    #[error("{path}: malformed PEM: {source}")]
    Pem {
        path: PathBuf,
        source: rustls::pki_types::pem::Error,
    },
    #[error("{key} does not hold a usable private key for {cert}: {source}")]
    Key {
        cert: PathBuf,
        key: PathBuf,
        source: rustls::Error,
    },
    #[error("setting up TLS: {0}")]
    Config(rustls::Error),
}

/// What identifies a version of a file: device, inode, size and mtime.
type Stamp = Option<(u64, u64, u64, i64, i64)>;

fn stamp(path: &Path) -> Stamp {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some((m.dev(), m.ino(), m.size(), m.mtime(), m.mtime_nsec()))
}

/// The certificate in use, and the files it comes from.
#[derive(Debug)]
pub struct CertStore {
    files: TlsFiles,
    provider: Arc<CryptoProvider>,
    current: RwLock<Arc<CertifiedKey>>,
    /// The stamps of (cert, key) when they were last looked at.
    seen: Mutex<(Stamp, Stamp)>,
}

impl CertStore {
    /// Load the certificate and key of `files`; an error says what is wrong with which file.
    pub fn open(files: &TlsFiles) -> Result<CertStore, TlsError> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let seen = (stamp(&files.cert), stamp(&files.key));
        let current = load(files, &provider)?;
        Ok(CertStore {
            files: files.clone(),
            provider,
            current: RwLock::new(current),
            seen: Mutex::new(seen),
        })
    }

    /// The certificate file.
    pub fn cert_path(&self) -> &Path {
        &self.files.cert
    }

    /// The certificate chain handshakes present now.
    pub fn current(&self) -> Arc<CertifiedKey> {
        self.current.read().expect("certificate lock").clone()
    }

    /// Reload if either file changed since last looked at: `None` when
    /// nothing changed, else whether the new pair was taken.
    pub fn reload_if_changed(&self) -> Option<Result<(), TlsError>> {
        let now = (stamp(&self.files.cert), stamp(&self.files.key));
        {
            let mut seen = self.seen.lock().expect("stamp lock");
            if *seen == now {
                return None;
            }
            *seen = now;
        }
        Some(load(&self.files, &self.provider).map(|ck| {
            *self.current.write().expect("certificate lock") = ck;
        }))
    }

    /// The acceptor of handshakes with this store's certificate.
    pub fn acceptor(self: &Arc<Self>) -> Result<TlsAcceptor, TlsError> {
        let mut config = ServerConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(TlsError::Config)?
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(TlsAcceptor::from(Arc::new(config)))
    }

    /// Check the files every [`RELOAD_POLL`], for as long as the process runs.
    pub async fn watch(self: Arc<Self>, metrics: Arc<Metrics>) {
        let mut tick = tokio::time::interval(RELOAD_POLL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let store = self.clone();
            let outcome = tokio::task::spawn_blocking(move || store.reload_if_changed())
                .await
                .ok()
                .flatten();
            match outcome {
                None => {}
                Some(Ok(())) => tracing::info!(
                    cert = %self.files.cert.display(),
                    sha256 = %fingerprint(&self.current()),
                    "TLS certificate reloaded"
                ),
                Some(Err(e)) => {
                    metrics.tls_reloads_failed.inc();
                    tracing::error!(
                        error = %e,
                        sha256 = %fingerprint(&self.current()),
                        "the changed TLS certificate files could not be loaded; still serving the previous certificate"
                    );
                }
            }
        }
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

/// The SHA-256 of the server certificate (as `openssl x509 -fingerprint -sha256` shows it, without colons).
pub fn fingerprint(ck: &CertifiedKey) -> String {
    use sha2::Digest;
    ck.cert
        .first()
        .map(|c| hex::encode(sha2::Sha256::digest(c.as_ref())))
        .unwrap_or_default()
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// Read and check a certificate chain and its key.
fn load(files: &TlsFiles, provider: &CryptoProvider) -> Result<Arc<CertifiedKey>, TlsError> {
    let pem_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| TlsError::Pem { path, source }
    };
    let cert_pem = read(&files.cert)?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(pem_err(&files.cert))?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate {
            path: files.cert.clone(),
        });
    }
    let key_pem = read(&files.key)?;
    let key = match PrivateKeyDer::from_pem_slice(&key_pem) {
        Ok(k) => k,
        Err(rustls::pki_types::pem::Error::NoItemsFound) => {
            return Err(TlsError::NoKey {
                path: files.key.clone(),
            });
        }
        Err(e) => return Err(pem_err(&files.key)(e)),
    };
    CertifiedKey::from_der(chain, key, provider)
        .map(Arc::new)
        .map_err(|source| TlsError::Key {
            cert: files.cert.clone(),
            key: files.key.clone(),
            source,
        })
}
