//! The producer: one process per CSC, between the observatory's middleware
//! and an ingest manager.
//!
//! It subscribes to one CSC through the [`meridian_sim::Middleware`]
//! boundary, samples telemetry at fixed rates (the latest value of each topic
//! at each tick, and only if it changed), forwards events as they happen, and
//! sends both over QUIC to the first reachable ingest manager of
//! `producer.ingest`. Events and telemetry travel on separate QUIC streams
//! so a burst of telemetry never delays an event.
//!
//! It must not know about the store or browsers: its whole output is frames.
//!
//! Layout:
//! - [`tls`]: which ingest certificates to trust.
//! - [`sampler`]: per-topic telemetry rates.
//! - [`session`]: one QUIC connection: handshake, streams, acknowledgements.
//! - [`run`]: the reconnect loop.

pub mod sampler;
pub mod session;
pub mod tls;

use meridian_config::Config;
use meridian_proto::CscId;
use meridian_sim::{Middleware, MiddlewareError};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

pub use tls::ServerTrust;

/// Why a producer could not run.
#[derive(Debug, thiserror::Error)]
pub enum ProducerError {
    /// `producer.csc` is not a valid `NAME:INDEX`.
    #[error("producer.csc: {0}")]
    Csc(String),
    /// The middleware does not know the CSC: is it running?
    #[error(transparent)]
    Middleware(#[from] MiddlewareError),
    /// The TLS configuration is unusable; the message names the key.
    #[error("{0}")]
    Tls(String),
    #[error("cannot open a UDP socket for QUIC: {0}")]
    Socket(std::io::Error),
}

/// Counters a test or a metrics page can read while the producer runs.
#[derive(Debug, Default)]
pub struct ProducerStats {
    /// Samples written to a QUIC stream.
    pub sent: AtomicU64,
    /// Samples the ingest manager acknowledged as stored.
    pub acked: AtomicU64,
    /// Connections established (1 + reconnects).
    pub connections: AtomicU64,
}

impl ProducerStats {
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// Runs the producer of `config.producer.csc` until `shutdown`, reconnecting
/// with exponential backoff and jitter whenever the ingest manager is lost.
pub async fn run(
    config: &Config,
    middleware: Arc<dyn Middleware>,
    trust: ServerTrust,
    stats: Arc<ProducerStats>,
    shutdown: CancellationToken,
) -> Result<(), ProducerError> {
    let csc: CscId = config
        .producer
        .csc
        .parse()
        .map_err(|e| ProducerError::Csc(format!("{e}")))?;
    let mut feed = middleware.subscribe(&csc)?;
    let client = tls::client_config(&trust)?;
    let bind: std::net::SocketAddr = ([0, 0, 0, 0], 0).into();
    let mut endpoint = quinn::Endpoint::client(bind).map_err(ProducerError::Socket)?;
    endpoint.set_default_client_config(client);
    let mut sampler = sampler::Sampler::new(&feed.schemas, &config.producer);
    let mut backoff = Backoff::new();
    let mut seq = 0u64;
    let mut was_connected = true;
    tracing::info!(%csc, ingest = ?config.producer.ingest, "producer started");
    while !shutdown.is_cancelled() {
        match session::Session::connect(&endpoint, config, &csc, &feed.schemas, &stats, &shutdown).await {
            Ok(session) => {
                stats.connections.fetch_add(1, Ordering::Relaxed);
                backoff.reset();
                was_connected = true;
                let end = session
                    .run(&mut feed, &mut sampler, &mut seq, &stats, &shutdown)
                    .await;
                match end {
                    session::End::Shutdown => break,
                    session::End::Lost(reason) => {
                        tracing::warn!(%reason, "lost the ingest manager; reconnecting");
                    }
                }
            }
            Err(e) => {
                if was_connected {
                    tracing::warn!(error = %e, "cannot reach an ingest manager; retrying with backoff");
                    was_connected = false;
                }
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(backoff.next_delay()) => {}
        }
    }
    endpoint.wait_idle().await;
    tracing::info!(%csc, "producer stopped");
    Ok(())
}

/// Exponential backoff from 100 ms to 5 s with ±25 % jitter, so producers
/// restarted together do not reconnect in lockstep.
struct Backoff {
    delay: Duration,
    state: u64,
}

impl Backoff {
    const MIN: Duration = Duration::from_millis(100);
    const MAX: Duration = Duration::from_secs(5);

    fn new() -> Self {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.subsec_nanos() as u64 | 1);
        Backoff {
            delay: Self::MIN,
            state: seed,
        }
    }

    fn reset(&mut self) {
        self.delay = Self::MIN;
    }

    fn next_delay(&mut self) -> Duration {
        self.state ^= self.state << 13;
        self.state ^= self.state >> 7;
        self.state ^= self.state << 17;
        let jitter = 0.75 + (self.state % 1000) as f64 / 2000.0;
        let d = self.delay.mul_f64(jitter);
        self.delay = (self.delay * 2).min(Self::MAX);
        d
    }
}
