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
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::config::watch::Watched;

/// Installs ring as the rustls provider; idempotent and cheap.
pub fn install_crypto_provider() {
    // An error means a provider is already installed, which is the goal.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The PEM files of the gRPC port's TLS.
#[derive(Debug, Clone)]
pub(crate) struct TlsFiles {
    /// The certificate chain.
    pub(crate) cert: PathBuf,
    /// Its private key.
    pub(crate) key: PathBuf,
    /// CA certificates client certificates must chain to (mutual TLS).
    pub(crate) client_ca: Option<PathBuf>,
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
pub(crate) struct ReloadingAcceptor {
    acceptor: Arc<Watched<TlsAcceptor, TlsError>>,
}

impl ReloadingAcceptor {
    /// Loads the files.
    ///
    /// # Errors
    /// A file is unreadable or the certificates and key do not fit.
    pub(crate) fn load(files: TlsFiles) -> Result<Self, TlsError> {
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
    pub(crate) fn acceptor(&self) -> TlsAcceptor {
        (*self.acceptor.current()).clone()
    }

    /// Polls the files every `interval` until `shutdown`.
    pub(crate) fn spawn_reloader(&self, interval: Duration, shutdown: CancellationToken) {
        self.acceptor.spawn_reloader(interval, shutdown, |_, _| {});
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
    // HTTP/2 for gRPC, HTTP/1.1 for HTTP/JSON clients that speak only it.
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}
