//! The ingest role: accepts producers over QUIC and appends their samples
//! to the store.
//!
//! A producer connection opens with a handshake on its first bidirectional
//! stream ([`meridian_proto::Hello`]); that stream then carries batches, and
//! the producer may open more streams (e.g. telemetry apart from events).
//! Every batch goes to the shared [`writer`], which writes pipelined batches
//! to the store, event batches before telemetry; a stream is acknowledged
//! (`Ack { up_to_seq }`) only once its samples are stored. When the store is
//! slow or down, each stream stops reading once [`ACKS_IN_FLIGHT`] of its
//! batches wait for the store (and every stream once the writer's bounded
//! queues are full), and QUIC flow control pushes back on producers: memory
//! stays bounded ([`IngestStats::batches_held`]) and nothing acknowledged is
//! lost.
//!
//! Malformed input closes only the connection that sent it, with a reason
//! the producer sees; the endpoint keeps serving everyone else.
//!
//! Layout, each module using only those below it (this one binds and runs
//! the endpoint):
//! - `connection`: one producer connection, handshake then batches.
//! - [`writer`]: the batched, pipelined store writer shared by every connection.
//! - [`stats`]: [`IngestStats`], what the ingest counts (a leaf).
//! - [`sweeper`]: removes stored state of Scripts whose end was never seen (uses none of the others).

mod connection;
pub mod stats;
pub mod sweeper;
pub mod writer;

pub use connection::ACKS_IN_FLIGHT;
pub use stats::IngestStats;

use meridian_config::Config;
use meridian_proto::metrics::{Exposition, Observe, ReadyCheck};
use meridian_quic::tls::{self, Identity, TlsError};
use meridian_store::Store;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

/// QUIC application close codes, so a producer can tell why it was closed
/// (they are part of the wire protocol, hence defined in `meridian-proto`).
pub use meridian_proto::frame::close_code;

/// Why the ingest role could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The listen address could not be bound: is another process using `ingest.listen`?
    #[error("cannot listen on {addr} (ingest.listen): {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The store stayed unavailable for the whole drain
    /// (`ingest.drain_timeout_ms`): the samples received but not stored
    /// were dropped. None was acknowledged, so producers replay the events
    /// to another ingest; that telemetry is lost. Check the store.
    #[error(
        "the store stayed down for the whole drain ({timeout_ms} ms, ingest.drain_timeout_ms): \
         {samples} samples received were not stored (never acknowledged: producers replay \
         their events to another ingest; that telemetry is lost)"
    )]
    Drain { samples: u64, timeout_ms: u64 },
}

/// The ingest role as the metrics listener sees it: its [`IngestStats`] as
/// Prometheus families, and ready while its store answers.
pub struct IngestObserver {
    stats: Arc<IngestStats>,
    store: Arc<dyn Store>,
}

/// How long a drain past its deadline waits for its last tasks (after
/// dropping what the store did not take), and for producers to confirm the
/// close of their connections.
const ABANDON_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// How long `/readyz` waits for the store before calling it unreachable.
pub const READY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

impl Observe for IngestObserver {
    fn role(&self) -> &'static str {
        "ingest"
    }

    fn metrics(&self, page: &mut Exposition) {
        let s = &self.stats;
        let get = IngestStats::get;
        page.gauge(
            "meridian_ingest_producers",
            "Producers connected (past the handshake).",
            get(&s.producers) as f64,
        )
        .counter(
            "meridian_ingest_connections_total",
            "Producer connections accepted past the handshake.",
            get(&s.connections),
        )
        .counters(
            "meridian_ingest_connections_closed_total",
            "Producer connections the ingest closed, by reason.",
            "reason",
            &[
                ("refused", get(&s.refused)),
                ("protocol_error", get(&s.protocol_errors)),
            ],
        )
        .counters(
            "meridian_ingest_samples_received_total",
            "Samples received from producers (replayed events count again).",
            "category",
            &[
                ("telemetry", get(&s.telemetry_received)),
                ("event", get(&s.events_received)),
            ],
        )
        .counters(
            "meridian_ingest_samples_stored_total",
            "Samples written to the store (each event once).",
            "category",
            &[
                ("telemetry", get(&s.telemetry_stored)),
                ("event", get(&s.events_stored)),
            ],
        )
        .counter(
            "meridian_ingest_events_duplicate_total",
            "Replayed events already in the store, not written twice.",
            get(&s.events_duplicate),
        )
        .gauge(
            "meridian_ingest_batches_held",
            "Producer frames waiting for the store writer (bounded; see writer::EVENT_QUEUE).",
            get(&s.batches_held) as f64,
        )
        .gauge(
            "meridian_ingest_batches_held_max",
            "Most producer frames ever waiting for the store writer.",
            get(&s.batches_held_max) as f64,
        )
        .counter(
            "meridian_ingest_store_retries_total",
            "Store writes that failed and were retried (nothing acknowledged is lost).",
            get(&s.store_retries),
        )
        .gauge(
            "meridian_ingest_store_up",
            "0 while store writes fail and are retried, 1 otherwise.",
            f64::from(u8::from(get(&s.store_failing) == 0)),
        )
        .histogram(
            "meridian_ingest_store_write_seconds",
            "Store write latency: one pipeline round trip, retries included.",
            &s.store_write,
        )
        .histograms(
            "meridian_ingest_lag_seconds",
            "From a sample's source timestamp to its arrival at the ingest (CSC -> producer -> ingest).",
            "category",
            &[("telemetry", &s.telemetry_lag), ("event", &s.event_lag)],
        );
    }

    fn ready(&self) -> ReadyCheck<'_> {
        Box::pin(async move {
            match tokio::time::timeout(
                READY_TIMEOUT,
                self.store.exists(meridian_proto::keys::READY_PROBE),
            )
            .await
            {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(e)) => Err(format!("store unreachable: {e}")),
                Err(_) => Err(format!(
                    "store did not answer within {} s",
                    READY_TIMEOUT.as_secs()
                )),
            }
        })
    }
}

/// A bound ingest endpoint; [`Ingest::run`] serves it.
pub struct Ingest {
    endpoint: quinn::Endpoint,
    config: Config,
    store: Arc<dyn Store>,
    stats: Arc<IngestStats>,
}

impl Ingest {
    /// Binds `ingest.listen` (port 0 picks a free port) with `identity`.
    pub fn bind(config: &Config, store: Arc<dyn Store>, identity: Identity) -> Result<Ingest, IngestError> {
        let addr = config.ingest.listen;
        let client_roots = tls::client_roots(&config.tls)?;
        let mut server = tls::server_config(identity, client_roots)?;
        let mut transport = quinn::TransportConfig::default();
        transport.max_concurrent_bidi_streams(8u32.into());
        transport.max_concurrent_uni_streams(0u32.into());
        transport.keep_alive_interval(Some(std::time::Duration::from_secs(5)));
        server.transport_config(Arc::new(transport));
        let endpoint =
            quinn::Endpoint::server(server, addr).map_err(|source| IngestError::Bind { addr, source })?;
        Ok(Ingest {
            endpoint,
            config: config.clone(),
            store,
            stats: Arc::new(IngestStats::default()),
        })
    }

    /// Gauges of this ingest, readable while it runs.
    pub fn stats(&self) -> Arc<IngestStats> {
        self.stats.clone()
    }

    /// What the process's metrics listener serves for this ingest.
    pub fn observer(&self) -> Arc<IngestObserver> {
        Arc::new(IngestObserver {
            stats: self.stats.clone(),
            store: self.store.clone(),
        })
    }

    /// The address producers connect to.
    pub fn local_addr(&self) -> SocketAddr {
        self.endpoint.local_addr().unwrap_or(self.config.ingest.listen)
    }

    /// Serves producers until `shutdown`, then closes their connections with
    /// [`close_code::DRAINING`] and writes what was received to the store,
    /// for at most `ingest.drain_timeout_ms`: past it, what is not stored
    /// is dropped unacknowledged and reported as [`IngestError::Drain`].
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), IngestError> {
        let tasks = TaskTracker::new();
        let abandon = CancellationToken::new();
        let writer = writer::Writer::start(
            self.store.clone(),
            &self.config.ingest,
            &tasks,
            self.stats.clone(),
            abandon.clone(),
        );
        let ingest = &self.config.ingest;
        let ctx = Arc::new(connection::Context {
            writer,
            telemetry_maxlen: self.config.store.telemetry_maxlen,
            event_maxlen: self.config.store.event_maxlen,
            check_identity: self.config.tls.ca.is_some(),
            instance_ttl: std::time::Duration::from_secs(ingest.script_ttl_s),
            dedup_ttl: std::time::Duration::from_secs(ingest.dedup_ttl_s),
            stats: self.stats.clone(),
        });
        tasks.spawn(sweeper::run(
            self.store.clone(),
            sweeper::SweepConfig::from(ingest),
            shutdown.clone(),
        ));
        let limit = Arc::new(tokio::sync::Semaphore::new(self.config.ingest.max_producers));
        tracing::info!(addr = %self.local_addr(), "ingest listening (QUIC)");
        let connections = CancellationToken::new();
        loop {
            let incoming = tokio::select! {
                _ = shutdown.cancelled() => break,
                incoming = self.endpoint.accept() => match incoming {
                    Some(i) => i,
                    None => break,
                },
            };
            let peer = incoming.remote_address();
            let Ok(permit) = limit.clone().try_acquire_owned() else {
                tracing::warn!(%peer, limit = self.config.ingest.max_producers, "refusing producer: ingest.max_producers reached");
                self.stats.refused.fetch_add(1, Ordering::Relaxed);
                incoming.refuse();
                continue;
            };
            let span = tracing::info_span!("producer", %peer, csc = tracing::field::Empty);
            let ctx = ctx.clone();
            let stop = connections.child_token();
            tasks.spawn(
                async move {
                    connection::serve(incoming, ctx, stop).await;
                    drop(permit);
                }
                .instrument(span),
            );
        }
        let timeout_ms = ingest.drain_timeout_ms;
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_millis(timeout_ms);
        tracing::info!("ingest draining: closing producer connections");
        connections.cancel();
        drop(ctx);
        tasks.close();
        let mut outcome = Ok(());
        if tokio::time::timeout_at(deadline, tasks.wait()).await.is_err() {
            let samples = IngestStats::get(&self.stats.samples_held);
            abandon.cancel();
            let error = IngestError::Drain { samples, timeout_ms };
            tracing::error!(samples, "{error}");
            // The writer is gone; what is left (connections waiting on it, the
            // sweeper) ends at once, but is not waited for past a second more.
            let _ = tokio::time::timeout(ABANDON_WAIT, tasks.wait()).await;
            outcome = Err(error);
        }
        self.endpoint
            .close(close_code::DRAINING.into(), b"ingest shutting down");
        // Producers gone for good never confirm the close: QUIC would wait
        // several probe timeouts for them.
        let closed = deadline.max(tokio::time::Instant::now()) + ABANDON_WAIT;
        if tokio::time::timeout_at(closed, self.endpoint.wait_idle())
            .await
            .is_err()
        {
            tracing::debug!("some producers did not confirm the close; stopping anyway");
        }
        tracing::info!("ingest stopped");
        outcome
    }
}
