//! TLS for the gRPC port (rustls with ring, the one TLS stack of the
//! process): server certificates, optional client-certificate checking
//! (mutual TLS), and files re-read when they change, so certificates rotate
//! without a restart. Connections already open keep their session.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;

use crate::watch::Watched;

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
#[derive(Debug)]
pub struct ReloadingAcceptor {
    acceptor: Arc<Watched<TlsAcceptor, TlsError>>,
}

impl ReloadingAcceptor {
    /// Loads the files.
    ///
    /// # Errors
    /// A file is unreadable or the certificates and key do not fit.
    pub fn load(files: TlsFiles) -> Result<Self, TlsError> {
        install_crypto_provider();
        let paths = [
            Some(&files.cert),
            Some(&files.key),
            files.client_ca.as_ref(),
        ]
        .into_iter()
        .flatten()
        .cloned()
        .collect();
        let acceptor = Watched::load(
            "TLS certificates",
            paths,
            |path| TlsError::Read(path.to_owned()),
            move |contents| build(&files, contents),
        )?;
        Ok(Self {
            acceptor: Arc::new(acceptor),
        })
    }

    /// The acceptor for the next connection.
    pub fn acceptor(&self) -> TlsAcceptor {
        (*self.acceptor.current()).clone()
    }

    /// Re-reads the files and switches to them when they changed.
    ///
    /// # Errors
    /// The new files are unusable; the previous configuration stays.
    pub fn reload(&self) -> Result<bool, TlsError> {
        self.acceptor.reload()
    }

    /// Polls the files every `interval` until `shutdown`.
    pub fn spawn_reloader(&self, interval: Duration, shutdown: CancellationToken) {
        self.acceptor.spawn_reloader(interval, shutdown, |_| {});
    }
}

fn certificates(path: &Path, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs: Vec<_> = CertificateDer::pem_slice_iter(pem)
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

/// The acceptor for the files' contents (certificate chain, key, and the
/// client CA bundle when configured, in that order).
fn build(files: &TlsFiles, contents: &[Vec<u8>]) -> Result<TlsAcceptor, TlsError> {
    let chain = certificates(&files.cert, &contents[0])?;
    let key = PrivateKeyDer::from_pem_slice(&contents[1]).map_err(|_| TlsError::Pem {
        path: files.key.clone(),
        what: "private key",
    })?;
    let builder = ServerConfig::builder();
    let builder = match &files.client_ca {
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for cert in certificates(ca, &contents[2])? {
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
    Ok(TlsAcceptor::from(Arc::new(config)))
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
