//! With `tls.ca` set on the ingest, a producer must present a client
//! certificate signed by that CA and valid for the CSC it claims. A
//! producer presenting another CSC's certificate is refused, and both sides
//! say why: otherwise any process could write telemetry in a CSC's name.

use meridian_config::Config;
use meridian_manager::ingest::Ingest;
use meridian_producer::{ProducerError, ProducerStats};
use meridian_quic::tls::{Identity, ServerTrust};
use meridian_sim::{SimMiddleware, SimOptions};
use meridian_store::memory::MemoryStore;
use meridian_testkit::system::test_config;
use meridian_testkit::wait_for;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// A CA, and certificates it signs, written as PEM files in a temp dir.
struct Pki {
    dir: PathBuf,
    ca: CertifiedIssuer<'static, KeyPair>,
}

impl Pki {
    fn new(name: &str) -> Pki {
        let dir = std::env::temp_dir().join(format!("meridian-pki-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
        Pki { dir, ca }
    }

    /// A certificate for `names`, returning (cert path, key path).
    fn issue(&self, file: &str, names: &[&str]) -> (PathBuf, PathBuf) {
        let key = KeyPair::generate().unwrap();
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let cert = CertificateParams::new(names)
            .unwrap()
            .signed_by(&key, &self.ca)
            .unwrap();
        let (c, k) = (
            self.dir.join(format!("{file}.pem")),
            self.dir.join(format!("{file}.key")),
        );
        std::fs::write(&c, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        (c, k)
    }

    fn ca(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// An ingest requiring client certificates from `pki`.
fn ingest(pki: &Pki) -> (Ingest, Config) {
    let (cert, key) = pki.issue("ingest", &["meridian-ingest"]);
    let mut config = test_config();
    config.tls.cert = Some(cert);
    config.tls.key = Some(key);
    config.tls.ca = Some(pki.ca());
    let identity = Identity::from_config(&config.tls).unwrap();
    (
        Ingest::bind(&config, Arc::new(MemoryStore::new()), identity).unwrap(),
        config,
    )
}

/// Runs a producer for `csc` presenting `cert`; returns its stats and its end.
fn producer(
    csc: &str,
    cert: (&Path, &Path),
    pki: &Pki,
    ingest: std::net::SocketAddr,
    stop: &CancellationToken,
) -> (
    Arc<ProducerStats>,
    tokio::task::JoinHandle<Result<(), ProducerError>>,
) {
    let sim = SimMiddleware::new();
    sim.start_with(&csc.parse().unwrap(), SimOptions::default(), stop.clone())
        .unwrap();
    let mut config = test_config();
    config.producer.csc = csc.into();
    config.producer.ingest = vec![ingest.to_string()];
    config.tls.cert = Some(cert.0.to_path_buf());
    config.tls.key = Some(cert.1.to_path_buf());
    config.tls.ca = Some(pki.ca());
    let trust = ServerTrust::from_config(&config.tls).unwrap();
    let stats = Arc::new(ProducerStats::default());
    let (s, stop) = (stats.clone(), stop.clone());
    let task =
        tokio::spawn(async move { meridian_producer::run(&config, Arc::new(sim), trust, s, stop).await });
    (stats, task)
}

#[tokio::test]
async fn a_producer_with_another_cscs_certificate_is_refused_and_told_why() {
    let pki = Pki::new("refused");
    let (ingest, _) = ingest(&pki);
    let addr = ingest.local_addr();
    let stop = CancellationToken::new();
    let server = tokio::spawn(ingest.run(stop.clone()));

    let (dome_cert, dome_key) = pki.issue("atdome", &["ATDome"]);
    let (_, task) = producer("MTM1M3:0", (&dome_cert, &dome_key), &pki, addr, &stop);
    let err = tokio::time::timeout(Duration::from_secs(20), task)
        .await
        .expect("refused promptly")
        .unwrap();
    let message = err
        .expect_err("the producer must not run under another CSC's certificate")
        .to_string();
    assert!(message.contains("not valid for CSC MTM1M3"), "{message}");

    // The right certificate is accepted on the same ingest.
    let (m1m3_cert, m1m3_key) = pki.issue("m1m3", &["MTM1M3"]);
    let (stats, _task) = producer("MTM1M3:0", (&m1m3_cert, &m1m3_key), &pki, addr, &stop);
    wait_for("the genuine producer connected", Duration::from_secs(20), || {
        let stats = stats.clone();
        async move { (ProducerStats::get(&stats.acked) > 0).then_some(()) }
    })
    .await
    .unwrap();
    stop.cancel();
    server.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_producer_without_a_certificate_is_refused_when_the_ingest_requires_one() {
    let pki = Pki::new("none");
    let (ingest, _) = ingest(&pki);
    let addr = ingest.local_addr();
    let stop = CancellationToken::new();
    let server = tokio::spawn(ingest.run(stop.clone()));
    let sim = SimMiddleware::new();
    sim.start_with(&"ATDome:0".parse().unwrap(), SimOptions::default(), stop.clone())
        .unwrap();
    let mut config = test_config();
    config.producer.csc = "ATDome:0".into();
    config.producer.ingest = vec![addr.to_string()];
    config.tls.ca = Some(pki.ca());
    let trust = ServerTrust::from_config(&config.tls).unwrap();
    let stats = Arc::new(ProducerStats::default());
    let run = meridian_producer::run(&config, Arc::new(sim), trust, stats.clone(), stop.clone());
    // Without a certificate the TLS handshake itself fails with an alert: a
    // configuration error, reported as such rather than retried forever.
    let outcome = tokio::time::timeout(Duration::from_secs(20), run)
        .await
        .expect("refused promptly");
    let message = outcome.expect_err("no data without a certificate").to_string();
    assert!(message.contains("TLS handshake rejected"), "{message}");
    assert!(message.contains("tls.cert"), "{message}");
    assert_eq!(ProducerStats::get(&stats.connections), 0);
    stop.cancel();
    server.await.unwrap().unwrap();
}
