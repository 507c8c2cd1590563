//! Which ingest certificates a producer trusts.

use crate::ProducerError;
use meridian_config::TlsConfig;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use std::sync::Arc;

/// The ALPN protocol of Meridian's QUIC frames (must match the ingest's).
pub const ALPN: &[u8] = b"meridian/1";

/// How the producer decides that it reached a genuine ingest manager.
#[derive(Clone, Debug)]
pub enum ServerTrust {
    /// Certificates signed by these roots (`tls.ca`), or these exact
    /// self-signed certificates (an in-process ingest's development cert).
    Roots(Vec<CertificateDer<'static>>),
    /// Any certificate: development only, when `tls.ca` is unset and
    /// `tls.dev_self_signed` is true. Logged as a warning at start.
    InsecureAnyCertificate,
}

impl ServerTrust {
    pub fn from_config(tls: &TlsConfig) -> Result<ServerTrust, ProducerError> {
        match &tls.ca {
            Some(path) => {
                let roots = CertificateDer::pem_file_iter(path)
                    .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                    .map_err(|e| ProducerError::Tls(format!("tls.ca = {}: {e}", path.display())))?;
                if roots.is_empty() {
                    return Err(ProducerError::Tls(format!("tls.ca = {}: no certificate in the file", path.display())));
                }
                Ok(ServerTrust::Roots(roots))
            }
            None if tls.dev_self_signed => Ok(ServerTrust::InsecureAnyCertificate),
            None => Err(ProducerError::Tls(
                "tls.ca is not set and tls.dev_self_signed is false: give the CA that signed the ingest certificate".into(),
            )),
        }
    }
}

/// Finishes the client config with the producer's own certificate, if configured.
fn with_identity(
    builder: rustls::ConfigBuilder<rustls::ClientConfig, rustls::client::WantsClientCert>,
    own: &TlsConfig,
) -> Result<rustls::ClientConfig, ProducerError> {
    let (Some(cert), Some(key)) = (&own.cert, &own.key) else {
        return Ok(builder.with_no_client_auth());
    };
    let file =
        |k: &str, p: &std::path::Path, e: String| ProducerError::Tls(format!("{k} = {}: {e}", p.display()));
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| file("tls.cert", cert, e.to_string()))?;
    let key_der = rustls::pki_types::PrivateKeyDer::from_pem_file(key)
        .map_err(|e| file("tls.key", key, e.to_string()))?;
    builder
        .with_client_auth_cert(chain, key_der)
        .map_err(|e| ProducerError::Tls(format!("tls.cert/tls.key: {e}")))
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The quinn client configuration for `trust`, presenting `tls.cert`/`tls.key`
/// as the producer's client certificate when they are set (required by an
/// ingest that checks producer identities).
pub fn client_config(trust: &ServerTrust, own: &TlsConfig) -> Result<quinn::ClientConfig, ProducerError> {
    let tls_err = |e: rustls::Error| ProducerError::Tls(format!("TLS configuration refused: {e}"));
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls_err)?;
    let mut tls = match trust {
        ServerTrust::Roots(certs) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in certs {
                roots.add(cert.clone()).map_err(tls_err)?;
            }
            with_identity(builder.with_root_certificates(roots), own)?
        }
        ServerTrust::InsecureAnyCertificate => {
            tracing::warn!("tls: ingest certificates are NOT verified (tls.dev_self_signed without tls.ca): development only");
            with_identity(
                builder
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider()))),
                own,
            )?
        }
    };
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls)
        .map_err(|e| ProducerError::Tls(format!("TLS configuration unusable for QUIC: {e}")))?;
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    let mut transport = quinn::TransportConfig::default();
    transport.keep_alive_interval(Some(std::time::Duration::from_secs(2)));
    transport.max_idle_timeout(Some(
        std::time::Duration::from_secs(10)
            .try_into()
            .map_err(|_| ProducerError::Tls("idle timeout out of range".into()))?,
    ));
    config.transport_config(Arc::new(transport));
    Ok(config)
}

/// Accepts any server certificate but still checks the handshake signatures.
#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
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
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
