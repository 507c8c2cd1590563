//! TLS of Meridian's QUIC connections, both ends.
//!
//! The ingest presents an [`Identity`]: the certificate and key of
//! `tls.cert`/`tls.key`, or, in development (`meridian up`, tests,
//! `tls.dev_self_signed = true` without a cert), a self-signed one generated
//! at start, whose DER an in-process producer can trust exactly. With
//! `tls.ca` set, it requires producers' client certificates signed by it.
//!
//! The producer decides by its [`ServerTrust`] whether it reached a genuine
//! ingest, and presents its own `tls.cert`/`tls.key` when they are set.
//! Both speak TLS 1.3 with ring and the [`ALPN`] below.

use meridian_config::TlsConfig;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// The ALPN protocol both sides must agree on; bumped with the frame format.
pub const ALPN: &[u8] = b"meridian/1";

/// How often a producer's connection sends a keep-alive, so an idle one
/// (no events, telemetry at low rates) stays open through NATs.
pub const CLIENT_KEEP_ALIVE: Duration = Duration::from_secs(2);

/// How long a producer's connection may hear nothing before it counts as
/// lost (and the producer reconnects).
pub const CLIENT_IDLE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why TLS could not be set up; each names the configuration key to fix.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A certificate or key file could not be read or parsed: check the path in `key`.
    #[error("{key} = {path}: {reason}")]
    File {
        key: &'static str,
        path: String,
        reason: String,
    },
    /// An ingest has neither a certificate nor `tls.dev_self_signed`: give it one.
    #[error(
        "tls.cert and tls.key are not set and tls.dev_self_signed is false: give the ingest a certificate"
    )]
    NoCertificate,
    /// A producer has neither `tls.ca` nor `tls.dev_self_signed`: give it the CA.
    #[error(
        "tls.ca is not set and tls.dev_self_signed is false: give the CA that signed the ingest certificate"
    )]
    NoTrust,
    /// rustls refused the certificates or keys (wrong kind, mismatched pair).
    #[error("TLS configuration refused: {0}")]
    Rustls(String),
    /// quinn refused the rustls configuration (a bug of ours, not of the files).
    #[error("TLS configuration unusable for QUIC: {0}")]
    Quic(String),
}

fn file_err(key: &'static str, path: &Path, reason: impl ToString) -> TlsError {
    TlsError::File {
        key,
        path: path.display().to_string(),
        reason: reason.to_string(),
    }
}

/// Every certificate of the PEM file `path` (the value of `key`); none is an error.
fn certificates(key: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_err(key, path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_err(key, path, e))?;
    if certs.is_empty() {
        return Err(file_err(key, path, "no certificate in the file"));
    }
    Ok(certs)
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
                let chain = certificates("tls.cert", cert)?;
                let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| file_err("tls.key", key, e))?;
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
    tls.ca
        .as_deref()
        .map(|path| certificates("tls.ca", path))
        .transpose()
}

/// A quinn server config for the ingest endpoint; with `client_roots`,
/// producers must present a client certificate signed by one of them.
/// The caller sets the transport (stream limits, keep-alive).
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
    let crypto =
        quinn::crypto::rustls::QuicServerConfig::try_from(tls).map_err(|e| TlsError::Quic(e.to_string()))?;
    Ok(quinn::ServerConfig::with_crypto(Arc::new(crypto)))
}

/// How a producer decides that it reached a genuine ingest manager.
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
    pub fn from_config(tls: &TlsConfig) -> Result<ServerTrust, TlsError> {
        match &tls.ca {
            Some(path) => Ok(ServerTrust::Roots(certificates("tls.ca", path)?)),
            None if tls.dev_self_signed => Ok(ServerTrust::InsecureAnyCertificate),
            None => Err(TlsError::NoTrust),
        }
    }
}

/// Finishes a client config with the producer's own certificate, if configured.
fn with_identity(
    builder: rustls::ConfigBuilder<rustls::ClientConfig, rustls::client::WantsClientCert>,
    own: &TlsConfig,
) -> Result<rustls::ClientConfig, TlsError> {
    let (Some(cert), Some(key)) = (&own.cert, &own.key) else {
        return Ok(builder.with_no_client_auth());
    };
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| file_err("tls.cert", cert, e))?;
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| file_err("tls.key", key, e))?;
    builder
        .with_client_auth_cert(chain, key_der)
        .map_err(|e| TlsError::Rustls(format!("tls.cert/tls.key: {e}")))
}

/// The quinn client configuration for `trust`, presenting `tls.cert`/`tls.key`
/// as the producer's client certificate when they are set (required by an
/// ingest that checks producer identities), with [`CLIENT_KEEP_ALIVE`] and
/// [`CLIENT_IDLE_TIMEOUT`].
pub fn client_config(trust: &ServerTrust, own: &TlsConfig) -> Result<quinn::ClientConfig, TlsError> {
    let tls_err = |e: rustls::Error| TlsError::Rustls(e.to_string());
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
    let crypto =
        quinn::crypto::rustls::QuicClientConfig::try_from(tls).map_err(|e| TlsError::Quic(e.to_string()))?;
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    let mut transport = quinn::TransportConfig::default();
    transport.keep_alive_interval(Some(CLIENT_KEEP_ALIVE));
    transport.max_idle_timeout(Some(
        CLIENT_IDLE_TIMEOUT
            .try_into()
            .map_err(|_| TlsError::Quic("idle timeout out of range".into()))?,
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
