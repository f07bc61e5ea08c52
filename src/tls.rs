//! TLS for the gRPC port (rustls with ring, the one TLS stack of the
//! process): server certificates, optional client-certificate checking
//! (mutual TLS), and files re-read when they change, so certificates rotate
//! without a restart. Connections already open keep their session.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use sha2::{Digest, Sha256};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;

/// How long a client has to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Installs ring as the rustls provider; idempotent and cheap.
pub fn install_crypto_provider() {
    // An error means a provider is already installed, which is the goal.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The PEM files of the gRPC port's TLS.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// The certificate chain.
    pub cert: PathBuf,
    /// Its private key.
    pub key: PathBuf,
    /// CA certificates client certificates must chain to (mutual TLS).
    pub client_ca: Option<PathBuf>,
}

/// Why TLS could not be set up. Messages name files, never their content.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read {}", .0.display())]
    Read(PathBuf),
    /// A file holds no usable PEM item of the expected kind.
    #[error("{} holds no usable {what}", path.display())]
    Pem {
        /// The file.
        path: PathBuf,
        /// What was expected.
        what: &'static str,
    },
    /// rustls refused the combination.
    #[error("the TLS configuration is invalid: {0}")]
    Config(String),
}

/// A TLS acceptor that follows its files.
pub struct ReloadingAcceptor {
    files: TlsFiles,
    current: RwLock<TlsAcceptor>,
    loaded_digest: Mutex<[u8; 32]>,
}

impl std::fmt::Debug for ReloadingAcceptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReloadingAcceptor")
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

impl ReloadingAcceptor {
    /// Loads the files.
    ///
    /// # Errors
    /// A file is unreadable or the certificates and key do not fit.
    pub fn load(files: TlsFiles) -> Result<Self, TlsError> {
        install_crypto_provider();
        let (acceptor, digest) = build(&files)?;
        Ok(Self {
            files,
            current: RwLock::new(acceptor),
            loaded_digest: Mutex::new(digest),
        })
    }

    /// The acceptor for the next connection.
    pub fn acceptor(&self) -> TlsAcceptor {
        self.current
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Re-reads the files and switches to them when they changed.
    ///
    /// # Errors
    /// The new files are unusable; the previous configuration stays.
    pub fn reload(&self) -> Result<bool, TlsError> {
        let digest = files_digest(&self.files)?;
        let mut loaded = self
            .loaded_digest
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if *loaded == digest {
            return Ok(false);
        }
        let (acceptor, digest) = build(&self.files)?;
        *self
            .current
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = acceptor;
        *loaded = digest;
        Ok(true)
    }

    /// Polls the files every `interval` until `shutdown`.
    pub fn spawn_reloader(self: &Arc<Self>, interval: Duration, shutdown: CancellationToken) {
        let acceptor = Arc::clone(self);
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(interval);
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    _ = ticker.tick() => {}
                }
                match acceptor.reload() {
                    Ok(true) => tracing::info!("TLS certificates reloaded"),
                    Ok(false) => {}
                    Err(error) => {
                        tracing::warn!(%error, "TLS files unusable; keeping the previous ones");
                    }
                }
            }
        });
    }
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|_| TlsError::Read(path.to_owned()))
}

fn files_digest(files: &TlsFiles) -> Result<[u8; 32], TlsError> {
    let mut hasher = Sha256::new();
    for path in [
        Some(&files.cert),
        Some(&files.key),
        files.client_ca.as_ref(),
    ]
    .into_iter()
    .flatten()
    {
        hasher.update(read(path)?);
        hasher.update([0]);
    }
    Ok(hasher.finalize().into())
}

fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(path)?;
    let certs: Vec<_> = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<_, _>>()
        .map_err(|_| TlsError::Pem {
            path: path.to_owned(),
            what: "certificate",
        })?;
    if certs.is_empty() {
        return Err(TlsError::Pem {
            path: path.to_owned(),
            what: "certificate",
        });
    }
    Ok(certs)
}

fn build(files: &TlsFiles) -> Result<(TlsAcceptor, [u8; 32]), TlsError> {
    let digest = files_digest(files)?;
    let chain = certificates(&files.cert)?;
    let key = PrivateKeyDer::from_pem_slice(&read(&files.key)?).map_err(|_| TlsError::Pem {
        path: files.key.clone(),
        what: "private key",
    })?;
    let builder = ServerConfig::builder();
    let builder = match &files.client_ca {
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for cert in certificates(ca)? {
                roots
                    .add(cert)
                    .map_err(|error| TlsError::Config(error.to_string()))?;
            }
            let verifier = WebPkiClientVerifier::builder(Arc::new(roots))
                .build()
                .map_err(|error| TlsError::Config(error.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(chain, key)
        .map_err(|error| TlsError::Config(error.to_string()))?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok((TlsAcceptor::from(Arc::new(config)), digest))
}

/// TLS connections accepted on `listener`, handshakes done concurrently
/// (a slow or failing client never delays the others), until `shutdown`.
pub fn incoming(
    listener: TcpListener,
    acceptor: Arc<ReloadingAcceptor>,
    shutdown: CancellationToken,
) -> ReceiverStream<std::io::Result<TlsStream<TcpStream>>> {
    let (sender, receiver) = tokio::sync::mpsc::channel(64);
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                () = shutdown.cancelled() => return,
                () = sender.closed() => return,
                accepted = listener.accept() => accepted,
            };
            let Ok((stream, _peer)) = accepted else {
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            };
            let _ = stream.set_nodelay(true);
            let tls = acceptor.acceptor();
            let sender = sender.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.accept(stream)).await {
                    Ok(Ok(stream)) => {
                        let _ = sender.send(Ok(stream)).await;
                    }
                    Ok(Err(error)) => tracing::debug!(%error, "TLS handshake refused"),
                    Err(_) => tracing::debug!("TLS handshake timed out"),
                }
            });
        }
    });
    ReceiverStream::new(receiver)
}
