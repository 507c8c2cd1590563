//! TLS for the ingest manager's QUIC endpoint.
//!
//! Production config names a certificate and key (PEM). For development
//! (`meridian up`, tests, `tls.dev_self_signed = true` without a cert), a
//! self-signed certificate is generated at start; its DER is returned so an
//! in-process producer can trust exactly it.

use meridian_config::TlsConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use std::sync::Arc;

/// The ALPN protocol both sides must agree on; bumped with the frame format.
pub const ALPN: &[u8] = b"meridian/1";

/// Why the ingest endpoint's TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A certificate or key file could not be read or parsed: check the path in `tls.cert`/`tls.key`.
    #[error("{key} = {path}: {reason}")]
    File {
        key: &'static str,
        path: String,
        reason: String,
    },
    /// Neither a certificate nor `tls.dev_self_signed` was configured.
    #[error(
        "tls.cert and tls.key are not set and tls.dev_self_signed is false: give the ingest a certificate"
    )]
    NoCertificate,
    #[error("TLS configuration refused: {0}")]
    Rustls(String),
}

/// A certificate and its key, ready for rustls.
pub struct Identity {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
}

impl Identity {
    /// A fresh self-signed certificate for `name` (and `localhost`, `127.0.0.1`).
    pub fn self_signed(name: &str) -> Result<Identity, TlsError> {
        let names = vec![name.to_string(), "localhost".to_string(), "127.0.0.1".to_string()];
        let cert = rcgen::generate_simple_self_signed(names).map_err(|e| TlsError::Rustls(e.to_string()))?;
        Ok(Identity {
            chain: vec![cert.cert.der().clone()],
            key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(cert.signing_key.serialize_der())),
        })
    }

    /// The identity `tls` describes: files if given, else a self-signed one in development.
    pub fn from_config(tls: &TlsConfig) -> Result<Identity, TlsError> {
        match (&tls.cert, &tls.key) {
            (Some(cert), Some(key)) => {
                let file_err = |k: &'static str, p: &std::path::Path, e: String| TlsError::File {
                    key: k,
                    path: p.display().to_string(),
                    reason: e,
                };
                let chain = CertificateDer::pem_file_iter(cert)
                    .map_err(|e| file_err("tls.cert", cert, e.to_string()))?
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| file_err("tls.cert", cert, e.to_string()))?;
                if chain.is_empty() {
                    return Err(file_err("tls.cert", cert, "no certificate in the file".into()));
                }
                let key_der =
                    PrivateKeyDer::from_pem_file(key).map_err(|e| file_err("tls.key", key, e.to_string()))?;
                Ok(Identity { chain, key: key_der })
            }
            _ if tls.dev_self_signed => {
                tracing::warn!("tls: no certificate configured, using a self-signed one (development only)");
                Identity::self_signed(&tls.server_name)
            }
            _ => Err(TlsError::NoCertificate),
        }
    }
}

/// The rustls provider every Meridian endpoint uses: ring, named explicitly,
/// because rustls panics when two providers are compiled in and none is chosen.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The CA producers' client certificates must be signed by (`tls.ca`), if set.
pub fn client_roots(tls: &TlsConfig) -> Result<Option<Vec<CertificateDer<'static>>>, TlsError> {
    let Some(path) = &tls.ca else { return Ok(None) };
    let file_err = |e: String| TlsError::File {
        key: "tls.ca",
        path: path.display().to_string(),
        reason: e,
    };
    let roots = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_err(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_err(e.to_string()))?;
    if roots.is_empty() {
        return Err(file_err("no certificate in the file".into()));
    }
    Ok(Some(roots))
}

/// A quinn server config for the ingest endpoint; with `client_roots`,
/// producers must present a client certificate signed by one of them.
pub fn server_config(
    identity: Identity,
    client_roots: Option<Vec<CertificateDer<'static>>>,
) -> Result<quinn::ServerConfig, TlsError> {
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| TlsError::Rustls(e.to_string()))?;
    let builder = match client_roots {
        None => builder.with_no_client_auth(),
        Some(certs) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in certs {
                roots
                    .add(cert)
                    .map_err(|e| TlsError::Rustls(format!("tls.ca: {e}")))?;
            }
            let verifier =
                rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                    .build()
                    .map_err(|e| TlsError::Rustls(format!("tls.ca: {e}")))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut tls = builder
        .with_single_cert(identity.chain, identity.key)
        .map_err(|e| TlsError::Rustls(e.to_string()))?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls)
        .map_err(|e| TlsError::Rustls(e.to_string()))?;
    Ok(quinn::ServerConfig::with_crypto(Arc::new(crypto)))
}
