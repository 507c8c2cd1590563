//! `[tls]`: the certificates of the QUIC link between producers and ingest.

use std::net::IpAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::validate::Problems;

/// `[tls]`: read by ingest (server side) and producer (client side).
///
/// Paths are not opened here: the role that loads them reports a missing
/// or malformed file when it starts.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain this process presents: the server certificate
    /// for ingest; for a producer, its client certificate, which must be
    /// valid for the DNS name of its CSC (e.g. `MTM1M3`) when the ingest
    /// requires client certificates (`tls.ca` set on the ingest). No
    /// default. Must be given together with `tls.key`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cert: Option<PathBuf>,

    /// PEM private key of `tls.cert`. No default. Must be given together
    /// with `tls.cert`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<PathBuf>,

    /// PEM CA bundle trusted for the peer: for a producer, the CA that
    /// signed the ingest certificate; for an ingest, setting it REQUIRES
    /// every producer to present a client certificate signed by it and
    /// valid for the DNS name of the CSC it claims (case-insensitive): a
    /// producer of another CSC is refused, with the reason, on both sides.
    /// No default.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca: Option<PathBuf>,

    /// DNS name (or IP address) a producer requires in the ingest
    /// certificate, and the name a development certificate is made for.
    /// Default `"meridian-ingest"`, so one certificate serves every ingest
    /// host whatever address producers dial.
    pub server_name: String,

    /// DEVELOPMENT ONLY. Default `true`. When `tls.cert` and `tls.key` are
    /// absent, ingest generates a throw-away self-signed certificate for
    /// `tls.server_name` at start. Such a certificate proves nothing to a
    /// producer: the link is encrypted but anyone can impersonate ingest.
    /// Set `false` in production, so a missing certificate stops the
    /// process instead of silently downgrading. Ignored when a certificate
    /// is configured. A producer reads it to know its ingest may present
    /// such a certificate, which no CA vouches for.
    pub dev_self_signed: bool,
}

impl TlsConfig {
    pub(crate) fn check(&self, problems: &mut Problems) {
        match (&self.cert, &self.key) {
            (Some(_), None) => problems.push(
                "tls.key",
                "a PEM private key path, since tls.cert is set (tls.cert and tls.key go together)",
                "no tls.key",
            ),
            (None, Some(_)) => problems.push(
                "tls.cert",
                "a PEM certificate chain path, since tls.key is set (tls.cert and tls.key go together)",
                "no tls.cert",
            ),
            _ => {}
        }
        for (key, path) in [
            ("tls.cert", &self.cert),
            ("tls.key", &self.key),
            ("tls.ca", &self.ca),
        ] {
            if path.as_ref().is_some_and(|p| p.as_os_str().is_empty()) {
                problems.push(key, "a file path", "\"\"");
            }
        }
        if !is_server_name(&self.server_name) {
            problems.push(
                "tls.server_name",
                "a DNS name (ASCII letters, digits, '-' and '.') or an IP address",
                format!("{:?}", self.server_name),
            );
        }
    }
}

/// What rustls accepts as a server name, approximately: an IP address, or
/// dot-separated non-empty labels of ASCII letters, digits and `-`.
fn is_server_name(name: &str) -> bool {
    if name.parse::<IpAddr>().is_ok() {
        return true;
    }
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

impl Default for TlsConfig {
    fn default() -> Self {
        Self {
            cert: None,
            key: None,
            ca: None,
            server_name: "meridian-ingest".to_string(),
            dev_self_signed: true,
        }
    }
}
