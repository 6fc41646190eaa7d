//! TLS termination on the engine listener (rustls with the ring provider).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

/// Why the listener's certificate or key cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The certificate chain cannot be read or holds no certificate.
    #[error("{}: cannot read the certificate chain: {why}", path.display())]
    Chain {
        /// `server.tls.cert`.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// The private key cannot be read.
    #[error("{}: cannot read the private key: {source}", path.display())]
    Key {
        /// `server.tls.key`.
        path: PathBuf,
        /// The PEM error.
        source: rustls_pki_types::pem::Error,
    },
    /// rustls refuses the pair (e.g. the key does not match the certificate).
    #[error("{}: {source}", path.display())]
    Config {
        /// `server.tls.cert`.
        path: PathBuf,
        /// rustls' reason.
        source: rustls::Error,
    },
}

/// Builds an acceptor from a PEM certificate chain and private key, offering HTTP/2 and HTTP/1.1.
pub fn acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor, TlsError> {
    let chain_error = |why: String| TlsError::Chain {
        path: cert.to_owned(),
        why,
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect())
        .map_err(|err| chain_error(err.to_string()))?;
    if chain.is_empty() {
        return Err(chain_error("no PEM certificate in it".into()));
    }
    let private = PrivateKeyDer::from_pem_file(key).map_err(|source| TlsError::Key {
        path: key.to_owned(),
        source,
    })?;
    let config_error = |source| TlsError::Config {
        path: cert.to_owned(),
        source,
    };
    let mut config =
        ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(config_error)?
            .with_no_client_auth()
            .with_single_cert(chain, private)
            .map_err(config_error)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}
