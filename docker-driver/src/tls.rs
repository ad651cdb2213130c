//! TLS to a `tcp://` daemon, from a context's (or `DOCKER_CERT_PATH`'s)
//! material, as the Docker CLI sets it up: the daemon's certificate checked
//! against `ca.pem` (the system's roots without one) unless verification is
//! skipped, and `cert.pem` + `key.pem` presented as the client certificate.

use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use crate::context::TlsFiles;
use crate::error::DriverError;

/// The client configuration for `files`; `context` names them in errors.
pub(crate) fn client_config(
    context: &str,
    files: &TlsFiles,
) -> Result<Arc<ClientConfig>, DriverError> {
    let fail =
        |file: &Path, source: Box<dyn std::error::Error + Send + Sync>| DriverError::TlsMaterial {
            context: context.to_owned(),
            file: file.to_owned(),
            source,
        };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| fail(Path::new("tls"), Box::new(e)))?;
    let builder = if files.skip_verify {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(
                provider.signature_verification_algorithms,
            )))
    } else {
        let mut roots = RootCertStore::empty();
        match &files.ca {
            Some(ca) => {
                for cert in CertificateDer::pem_file_iter(ca).map_err(|e| fail(ca, Box::new(e)))? {
                    let cert = cert.map_err(|e| fail(ca, Box::new(e)))?;
                    roots.add(cert).map_err(|e| fail(ca, Box::new(e)))?;
                }
                if roots.is_empty() {
                    return Err(fail(ca, "no certificate in it".into()));
                }
            }
            None => {
                let native = rustls_native_certs::load_native_certs();
                roots.add_parsable_certificates(native.certs);
            }
        }
        builder.with_root_certificates(roots)
    };
    let config = match (&files.cert, &files.key) {
        (Some(cert), Some(key)) => {
            let chain = CertificateDer::pem_file_iter(cert)
                .map_err(|e| fail(cert, Box::new(e)))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| fail(cert, Box::new(e)))?;
            let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| fail(key, Box::new(e)))?;
            builder
                .with_client_auth_cert(chain, key_der)
                .map_err(|e| fail(cert, Box::new(e)))?
        }
        (Some(cert), None) => {
            return Err(fail(cert, "a client certificate without its key".into()));
        }
        (None, Some(key)) => return Err(fail(key, "a client key without its certificate".into())),
        (None, None) => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

/// The name the daemon's certificate must carry: the host of `host:port`.
pub(crate) fn server_name(authority: &str) -> Result<ServerName<'static>, DriverError> {
    let host = match authority.rsplit_once(':') {
        Some((host, port)) if !port.contains(']') => host,
        _ => authority,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(host.to_owned()).map_err(|_| DriverError::InvalidHost {
        host: authority.to_owned(),
    })
}

/// Accepts any certificate (`SkipTLSVerify`), still checking that the
/// handshake is signed by it.
#[derive(Debug)]
struct AnyCertificate(WebPkiSupportedAlgorithms);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_names() {
        let name = |a: &str| server_name(a).unwrap().to_str().into_owned();
        assert_eq!(name("127.0.0.1:2376"), "127.0.0.1");
        assert_eq!(name("[::1]:2376"), "::1");
        assert_eq!(name("docker.example:2376"), "docker.example");
    }

    #[test]
    fn broken_material_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, "not a certificate").unwrap();
        let files = TlsFiles {
            ca: Some(ca.clone()),
            ..TlsFiles::default()
        };
        let err = client_config("remote", &files).unwrap_err().to_string();
        assert!(err.contains("\"remote\""), "{err}");
        assert!(err.contains(&ca.display().to_string()), "{err}");
        let key = dir.path().join("key.pem");
        std::fs::write(&key, "x").unwrap();
        let files = TlsFiles {
            key: Some(key.clone()),
            skip_verify: true,
            ..TlsFiles::default()
        };
        let err = client_config("remote", &files).unwrap_err().to_string();
        assert!(err.contains(&key.display().to_string()), "{err}");
    }
}
