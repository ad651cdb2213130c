//! TLS configuration: the certificate the registry presents.

use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::BuildError;

/// Whether the registry also speaks TLS on its port, and with which
/// certificate.
#[derive(Clone, Default)]
pub enum TlsConfig {
    /// A self-signed certificate for `127.0.0.1`, `::1` and `localhost`,
    /// generated when the registry is built.
    #[default]
    SelfSigned,
    /// A certificate chain and its private key, both PEM.
    Provided {
        /// The certificate chain, leaf first, PEM.
        cert_chain_pem: Vec<u8>,
        /// The leaf's private key (PKCS#8, PKCS#1 or SEC1), PEM.
        key_pem: Vec<u8>,
    },
    /// Plain HTTP only.
    Disabled,
}

impl std::fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::SelfSigned => f.write_str("SelfSigned"),
            Self::Provided { .. } => f.write_str("Provided { .. }"),
            Self::Disabled => f.write_str("Disabled"),
        }
    }
}

/// The rustls server configuration for `tls`, or `None` when disabled.
pub(crate) fn server_config(
    tls: &TlsConfig,
) -> Result<Option<Arc<rustls::ServerConfig>>, BuildError> {
    let (chain, key) = match tls {
        TlsConfig::Disabled => return Ok(None),
        TlsConfig::SelfSigned => {
            let names = vec![
                "127.0.0.1".to_owned(),
                "::1".to_owned(),
                "localhost".to_owned(),
            ];
            let certified = rcgen::generate_simple_self_signed(names)
                .map_err(|e| BuildError::SelfSignedCertificate { source: e.into() })?;
            let key =
                PrivateKeyDer::try_from(certified.signing_key.serialize_der()).map_err(|e| {
                    BuildError::SelfSignedCertificate {
                        source: e.to_owned().into(),
                    }
                })?;
            (vec![certified.cert.der().clone()], key)
        }
        TlsConfig::Provided {
            cert_chain_pem,
            key_pem,
        } => {
            let chain = CertificateDer::pem_slice_iter(cert_chain_pem)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| BuildError::CertificateChain { source: e.into() })?;
            if chain.is_empty() {
                return Err(BuildError::CertificateChain {
                    source: "no certificate in the PEM data".into(),
                });
            }
            let key = PrivateKeyDer::from_pem_slice(key_pem)
                .map_err(|e| BuildError::PrivateKey { source: e.into() })?;
            (chain, key)
        }
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| BuildError::TlsSetup { source: e.into() })?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| BuildError::TlsSetup { source: e.into() })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Some(Arc::new(config)))
}
