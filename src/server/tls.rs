//! The federation listener's TLS: rustls, with the certificate chain and key the config names.
//!
//! Peers check the certificate against the server name (or the host `/.well-known/matrix/server`
//! delegates to), as the spec requires; a test setup uses a self-signed one and tells its peers
//! not to verify. HTTP/1.1 only, announced by ALPN, as the client listener serves.

use std::{path::Path, sync::Arc};

use rustls::{
    ServerConfig,
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
};
use tokio_rustls::TlsAcceptor;

use crate::error::Error;

/// The acceptor for `certificate` (PEM, the server's certificate first) and `key` (PEM).
pub(crate) fn acceptor(certificate: &Path, key: &Path) -> Result<TlsAcceptor, Error> {
    let mut config = server_config(certificate, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// The rustls configuration of `certificate` and `key` (also the email bridge's STARTTLS).
pub(crate) fn server_config(certificate: &Path, key: &Path) -> Result<ServerConfig, Error> {
    let failed = |what: &str, path: &Path, e: &dyn std::fmt::Display| {
        Error::internal(format!("TLS: {what} {}: {e}", path.display()))
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(certificate)
        .and_then(|certs| certs.collect())
        .map_err(|e| failed("cannot read the certificate", certificate, &e))?;
    if chain.is_empty() {
        return Err(failed("no certificate in", certificate, &"empty"));
    }
    let key =
        PrivateKeyDer::from_pem_file(key).map_err(|e| failed("cannot read the key", key, &e))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(|b| b.with_no_client_auth().with_single_cert(chain, key))
        .map_err(|e| {
            failed(
                "the certificate and key do not make a TLS config",
                certificate,
                &e,
            )
        })
}
