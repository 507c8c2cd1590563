//! The producer: one process per CSC, between the observatory's middleware
//! and an ingest manager.
//!
//! It subscribes to one CSC through the [`meridian_sim::Middleware`]
//! boundary, samples telemetry at fixed rates (the latest value of each topic
//! at each tick of its declared or configured rate, and only if it changed),
//! forwards events as they happen (in frames of up to `producer.batch_max`
//! events, a partial frame waiting at most `producer.batch_delay_ms`), and
//! sends both over QUIC to the first reachable ingest manager of its pool.
//! An ingest that refuses it (identity, protocol) stops it; one that is
//! unreachable, busy or draining is retried.
//!
//! Nothing is lost between the CSC and the store while the producer runs:
//! every event waits in a bounded [`Spool`] until the ingest acknowledges it
//! as stored; when the connection is lost, the producer keeps reading its
//! CSC into the spool, reconnects with exponential backoff and jitter, and
//! replays what was not acknowledged, in order (the ingest writes each
//! event once). Telemetry is not spooled: while disconnected only the latest
//! value of each topic is kept, and sent at the first tick after reconnecting.
//!
//! It must not know about the store or browsers: its whole output is frames.
//!
//! Layout:
//! - [`sampler`]: per-topic telemetry rates.
//! - [`session`]: one QUIC connection: handshake, stream writers, acknowledgements.
//! - [`link`]: when to connect, back off, replay the spool, give up or stop (no I/O).
//! - [`Producer`]: the role: `bind` (CSC, TLS, socket), then `run` (the
//!   producer's loop: feed, spool, sampler, reconnects).

pub mod link;
pub mod sampler;
pub mod session;

use link::{Action, Input, Link};
use meridian_config::Config;
use meridian_proto::metrics::{Exposition, Histogram, Observe, ReadyCheck};
use meridian_proto::spool::{Pushed, Spool};
use meridian_proto::{CscId, ProducerFrame, Sample};
use meridian_quic::tls::{self, ServerTrust};
use meridian_sim::{CscFeed, Middleware, MiddlewareError, Published};
use session::{ConnectError, Report, Session, Stream};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

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
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error("cannot open a UDP socket for QUIC: {0}")]
    Socket(std::io::Error),
    /// The ingest refused this producer (identity, protocol version):
    /// retrying cannot help, the configuration must change.
    #[error("{0}")]
    Refused(String),
}

/// Counters a test or a metrics page can read while the producer runs.
#[derive(Debug, Default)]
pub struct ProducerStats {
    /// Samples written to a QUIC stream (replays count again).
    pub sent: AtomicU64,
    /// Event frames (batches) written to the event stream (replays count
    /// again): with `producer.batch_delay_ms`, a burst costs one frame per
    /// `producer.batch_max` events, not one per event.
    pub event_frames: AtomicU64,
    /// Samples the ingest manager acknowledged as stored.
    pub acked: AtomicU64,
    /// Highest event sequence number acknowledged.
    pub events_acked_seq: AtomicU64,
    /// Events taken from the CSC (each gets a sequence number).
    pub events_seen: AtomicU64,
    /// Events dropped because the spool was full (`producer.spool_on_full`).
    pub events_dropped: AtomicU64,
    /// Events in the spool now (sent or not, not yet acknowledged).
    pub spooled: AtomicU64,
    /// Telemetry frames not sent because the stream was busy; the next tick
    /// sends the newer values instead.
    pub telemetry_conflated: AtomicU64,
    /// Connections established (1 + reconnects).
    pub connections: AtomicU64,
    /// 1 while connected to an ingest manager, 0 otherwise.
    pub connected: AtomicU64,
    /// Seconds from a telemetry sample's source timestamp to the moment its
    /// frame is handed to the QUIC stream (CSC → producer hop).
    pub telemetry_lag: Histogram,
    /// The same for events (a replay after a reconnect counts again, with
    /// the time it waited in the spool).
    pub event_lag: Histogram,
}

impl ProducerStats {
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    /// What the process's metrics listener serves for this producer.
    pub fn observer(self: &Arc<Self>) -> Arc<ProducerObserver> {
        Arc::new(ProducerObserver { stats: self.clone() })
    }
}

/// A producer as the metrics listener sees it: its [`ProducerStats`] as
/// Prometheus families, and ready while connected to an ingest manager.
pub struct ProducerObserver {
    stats: Arc<ProducerStats>,
}

impl Observe for ProducerObserver {
    fn role(&self) -> &'static str {
        "producer"
    }

    fn metrics(&self, page: &mut Exposition) {
        let s = &self.stats;
        let get = ProducerStats::get;
        page.gauge(
            "meridian_producer_connected",
            "1 while connected to an ingest manager.",
            get(&s.connected) as f64,
        )
        .counter(
            "meridian_producer_connections_total",
            "Connections to an ingest manager established (1 + reconnects).",
            get(&s.connections),
        )
        .counter(
            "meridian_producer_events_seen_total",
            "Events taken from the CSC.",
            get(&s.events_seen),
        )
        .counter(
            "meridian_producer_samples_sent_total",
            "Samples written to QUIC streams (replayed events count again).",
            get(&s.sent),
        )
        .counter(
            "meridian_producer_event_frames_total",
            "Event frames (batches) written to the event stream.",
            get(&s.event_frames),
        )
        .counter(
            "meridian_producer_events_acked_total",
            "Events the ingest acknowledged as stored.",
            get(&s.acked),
        )
        .gauge(
            "meridian_producer_spooled_events",
            "Events in the spool, not yet acknowledged (bound: producer.spool_events).",
            get(&s.spooled) as f64,
        )
        .counter(
            "meridian_producer_events_dropped_total",
            "Events dropped because the spool was full (producer.spool_on_full).",
            get(&s.events_dropped),
        )
        .counter(
            "meridian_producer_telemetry_conflated_total",
            "Telemetry frames not sent because the stream was busy (newer values went next).",
            get(&s.telemetry_conflated),
        )
        .histograms(
            "meridian_producer_lag_seconds",
            "From a sample's source timestamp to its frame being sent (CSC -> producer).",
            "category",
            &[("telemetry", &s.telemetry_lag), ("event", &s.event_lag)],
        );
    }

    fn ready(&self) -> ReadyCheck<'_> {
        let connected = ProducerStats::get(&self.stats.connected) == 1;
        Box::pin(async move {
            match connected {
                true => Ok(()),
                false => Err("not connected to an ingest manager".to_string()),
            }
        })
    }
}

/// Largest encoded frame the producer builds, in estimated bytes; well under
/// the protocol's `MAX_FRAME_LEN`, so one batch never hogs a stream.
const FRAME_BYTES: usize = 1024 * 1024;

/// How long, at shutdown, to wait for the spool to be acknowledged.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a stopping producer waits for the ingest to confirm the
/// connection's close before it exits anyway.
const CLOSE_WAIT: Duration = Duration::from_secs(1);

type Connecting = Pin<Box<dyn Future<Output = Result<Session, ConnectError>> + Send>>;

/// Runs the producer of `config.producer.csc` until `shutdown`, counting in
/// `stats`: [`Producer::bind`] then [`Producer::run`].
pub async fn run(
    config: &Config,
    middleware: Arc<dyn Middleware>,
    trust: ServerTrust,
    stats: Arc<ProducerStats>,
    shutdown: CancellationToken,
) -> Result<(), ProducerError> {
    let mut producer = Producer::bind(config, middleware, trust)?;
    producer.stats = stats;
    producer.run(shutdown).await
}

/// A producer subscribed to its CSC, with its QUIC endpoint open, not yet
/// connected: whatever can fail before it serves (`producer.csc`, the
/// middleware's lookup of the CSC, TLS files, the UDP socket) has failed in
/// [`Producer::bind`]. [`Producer::run`] serves it.
pub struct Producer {
    config: meridian_config::ProducerConfig,
    server_name: String,
    csc: CscId,
    feed: CscFeed,
    endpoint: quinn::Endpoint,
    identity: session::Identity,
    stats: Arc<ProducerStats>,
}

impl Producer {
    /// Subscribes to `producer.csc` on `middleware` and opens a QUIC
    /// endpoint that trusts ingest certificates as `trust` says.
    pub fn bind(
        config: &Config,
        middleware: Arc<dyn Middleware>,
        trust: ServerTrust,
    ) -> Result<Producer, ProducerError> {
        let p = &config.producer;
        let csc: CscId = p.csc.parse().map_err(|e| ProducerError::Csc(format!("{e}")))?;
        let feed = if p.all_indices {
            middleware.subscribe_all_indices(&csc.csc)?
        } else {
            middleware.subscribe(&csc)?
        };
        let client = tls::client_config(&trust, &config.tls)?;
        let mut endpoint =
            quinn::Endpoint::client(([0, 0, 0, 0], 0).into()).map_err(ProducerError::Socket)?;
        endpoint.set_default_client_config(client);
        let identity = session::Identity {
            producer_id: random_id(),
            csc: csc.clone(),
            all_indices: p.all_indices,
            schemas: feed.schemas.clone(),
        };
        Ok(Producer {
            config: p.clone(),
            server_name: config.tls.server_name.clone(),
            csc,
            feed,
            endpoint,
            identity,
            stats: Arc::default(),
        })
    }

    /// The CSC it serves (`producer.csc`).
    pub fn csc(&self) -> &CscId {
        &self.csc
    }

    /// The local UDP address of its QUIC endpoint.
    pub fn local_addr(&self) -> std::net::SocketAddr {
        self.endpoint
            .local_addr()
            .unwrap_or_else(|_| ([0, 0, 0, 0], 0).into())
    }

    /// Its counters, readable while it runs.
    pub fn stats(&self) -> Arc<ProducerStats> {
        self.stats.clone()
    }

    /// What the process's metrics listener serves for this producer.
    pub fn observer(&self) -> Arc<ProducerObserver> {
        self.stats.observer()
    }

    /// Serves the CSC until `shutdown`: connects (and reconnects) to the
    /// first reachable ingest of its pool, and sends what the CSC publishes.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), ProducerError> {
        let Producer {
            config: p,
            server_name,
            csc,
            feed,
            endpoint,
            identity,
            stats,
        } = self;
        let addrs = p.ingest_addresses().to_vec();
        let connect = |endpoint: &quinn::Endpoint| -> Connecting {
            Box::pin(Session::connect(
                endpoint.clone(),
                addrs.clone(),
                server_name.clone(),
                identity.clone(),
            ))
        };
        let span = tracing::info_span!("producer", %csc, id = format_args!("{:016x}", identity.producer_id));
        tracing::Instrument::instrument(
            produce(feed, endpoint, connect, &p, stats, shutdown, addrs.clone()),
            span,
        )
        .await
    }
}

/// The producer's loop, inside its span.
async fn produce(
    mut feed: CscFeed,
    endpoint: quinn::Endpoint,
    connect: impl Fn(&quinn::Endpoint) -> Connecting,
    p: &meridian_config::ProducerConfig,
    stats: Arc<ProducerStats>,
    shutdown: CancellationToken,
    addrs: Vec<String>,
) -> Result<(), ProducerError> {
    let csc_all = p.all_indices;
    let single_index: Option<u32> = if csc_all {
        None
    } else {
        p.csc.parse::<CscId>().ok().map(|c| c.salindex)
    };
    tracing::info!(ingest = ?addrs, all_indices = p.all_indices, "producer started");

    let mut state = State {
        spool: Spool::new(p.spool_events, p.spool_bytes, p.spool_on_full),
        flush_at: None,
        batch_delay: Duration::from_millis(p.batch_delay_ms),
        held: None,
        sampler: sampler::Sampler::new(&feed.schemas, p),
        event_seq: 0,
        telemetry_seq: 0,
        batch_max: p.batch_max.max(1),
        stats: stats.clone(),
        single_index,
    };
    let mut tick = tokio::time::interval(state.sampler.tick());
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut session: Option<Session> = None;
    let mut link = Link::new(random_id(), DRAIN_TIMEOUT);
    // The link starts in `Connecting`: the first attempt, at once.
    let mut connecting: Option<Connecting> = Some(connect(&endpoint));
    let mut feed_open = true;
    let now = || tokio::time::Instant::now().into_std();

    loop {
        if let Some(s) = &session {
            state.flush_events(s, tokio::time::Instant::now());
        }
        let read_feed = feed_open && state.held.is_none();
        let flush_at = state.flush_timer(session.is_some());
        let wake_at = link.timeout().map(tokio::time::Instant::from_std);
        let action = tokio::select! {
            _ = shutdown.cancelled() => link.handle(Input::Shutdown { spool_empty: state.spool.is_empty() }, now()),
            // A partial batch waited `producer.batch_delay_ms`: the loop's top sends it.
            _ = tokio::time::sleep_until(flush_at.unwrap_or_else(tokio::time::Instant::now)), if flush_at.is_some() => Action::Nothing,
            event = feed.events.recv(), if read_feed => {
                match event {
                    Some(event) => state.push_event(event),
                    None => feed_open = false,
                }
                Action::Nothing
            }
            _ = tick.tick() => {
                if let Some(s) = &session {
                    state.send_telemetry(s, &feed);
                }
                Action::Nothing
            }
            result = async { connecting.as_mut().expect("guarded").await }, if connecting.is_some() => {
                connecting = None;
                match result {
                    Ok(s) => {
                        stats.connections.fetch_add(1, Ordering::Relaxed);
                        stats.connected.store(1, Ordering::Relaxed);
                        tracing::info!(ingest = %s.addr, spooled = state.spool.len(), "connected to ingest");
                        session = Some(s);
                        link.handle(Input::Connected { spooled_up_to: state.spool.last_seq() }, now())
                    }
                    Err(ConnectError::Refused { addr, reason }) => {
                        tracing::error!(ingest = %addr, %reason, "ingest refused this producer");
                        link.handle(Input::Refused(format!("{addr} refused this producer: {reason}")), now())
                    }
                    Err(e) => {
                        let action = link.handle(Input::Unreachable, now());
                        if let Action::Retry { first_failure: true, .. } = action {
                            tracing::warn!(error = %e, spooled = state.spool.len(), "cannot reach an ingest manager; spooling events and retrying with backoff");
                        }
                        action
                    }
                }
            }
            _ = tokio::time::sleep_until(wake_at.unwrap_or_else(tokio::time::Instant::now)), if wake_at.is_some() => {
                link.handle(Input::Timeout, now())
            }
            report = async { session.as_mut().expect("guarded").report().await }, if session.is_some() => {
                match report {
                    Report::EventsStored(seq) => {
                        state.events_stored(seq);
                        link.handle(Input::Acked { up_to_seq: seq, spool_empty: state.spool.is_empty() }, now())
                    }
                    Report::TelemetryStored(_) => Action::Nothing,
                    Report::Refused(reason) => {
                        tracing::error!(%reason, "ingest refused a batch; reconnecting");
                        link.handle(Input::BatchRefused, now())
                    }
                    Report::Lost(reason) => {
                        tracing::warn!(%reason, spooled = state.spool.len(), "lost the ingest manager; spooling events and reconnecting");
                        link.handle(Input::Lost, now())
                    }
                }
            }
        };
        match action {
            Action::Nothing => {}
            Action::Connect => connecting = Some(connect(&endpoint)),
            // Everything unacknowledged goes again on the new connection.
            Action::Replay => state.rewind(),
            Action::Retry { .. } => {
                if session.take().is_some() {
                    stats.connected.store(0, Ordering::Relaxed);
                    state.rewind();
                }
            }
            Action::Drain { .. } | Action::Stop => break,
            Action::GiveUp(reason) => return Err(ProducerError::Refused(reason)),
        }
        state
            .stats
            .spooled
            .store(state.spool.len() as u64, Ordering::Relaxed);
    }

    // Shutdown: hand the ingest what is spooled and wait (bounded by the
    // link's drain deadline) for it to be stored.
    if let Some(mut s) = session {
        while let Some(deadline) = link.timeout() {
            // Nothing waits for a batch to fill any more.
            state.flush_at = Some(tokio::time::Instant::now());
            state.flush_events(&s, tokio::time::Instant::now());
            let input = match tokio::time::timeout_at(deadline.into(), s.report()).await {
                Ok(Report::EventsStored(seq)) => {
                    state.events_stored(seq);
                    Input::Acked {
                        up_to_seq: seq,
                        spool_empty: state.spool.is_empty(),
                    }
                }
                Ok(Report::TelemetryStored(_)) => continue,
                Ok(Report::Refused(_)) => Input::BatchRefused,
                Ok(Report::Lost(_)) => Input::Lost,
                Err(_) => Input::Timeout,
            };
            link.handle(input, now());
        }
        s.close("producer shutting down");
        stats.connected.store(0, Ordering::Relaxed);
    }
    if !state.spool.is_empty() {
        tracing::error!(
            events = state.spool.len(),
            "stopping with events not acknowledged by an ingest: they are lost"
        );
    }
    // Let the close reach the ingest, but not for long: an ingest already
    // gone never acknowledges it, and QUIC would keep the endpoint for
    // several (growing) probe timeouts, which held a stopping producer for
    // 8-11 s; a service manager's stop timeout should not have to cover that.
    if tokio::time::timeout(CLOSE_WAIT, endpoint.wait_idle())
        .await
        .is_err()
    {
        tracing::debug!("the ingest did not confirm the close; stopping anyway");
    }
    tracing::info!("producer stopped");
    Ok(())
}

/// What the producer's loop keeps between events.
struct State {
    spool: Spool,
    /// When the spool's unsent events are sent even if they do not fill a
    /// frame: `producer.batch_delay_ms` after the oldest of them arrived.
    /// `None` while nothing is unsent.
    flush_at: Option<tokio::time::Instant>,
    batch_delay: Duration,
    /// An event a blocking full spool handed back; the feed is not read until it fits.
    held: Option<Sample>,
    sampler: sampler::Sampler,
    event_seq: u64,
    telemetry_seq: u64,
    batch_max: usize,
    stats: Arc<ProducerStats>,
    /// The hello's SAL index, or `None` when serving all indices.
    single_index: Option<u32>,
}

impl State {
    fn sample(&self, p: Published, seq: u64) -> Sample {
        Sample {
            topic: p.topic,
            category: p.category,
            salindex: if self.single_index.is_some() {
                None
            } else {
                Some(p.salindex)
            },
            seq,
            source_ts: p.source_ts,
            fields: p.fields,
        }
    }

    fn push_event(&mut self, event: Published) {
        self.event_seq += 1;
        self.stats.events_seen.fetch_add(1, Ordering::Relaxed);
        let sample = self.sample(event, self.event_seq);
        self.push(sample);
    }

    fn push(&mut self, sample: Sample) {
        if !self.spool.has_unsent() {
            // The first event of a new batch: it waits at most `batch_delay`.
            self.flush_at = Some(tokio::time::Instant::now() + self.batch_delay);
        }
        match self.spool.push(sample) {
            Pushed::Spooled => {}
            Pushed::DroppedOldest | Pushed::DroppedNewest => {
                let dropped = self.stats.events_dropped.fetch_add(1, Ordering::Relaxed);
                if dropped == 0 || dropped.is_power_of_two() {
                    tracing::error!(
                        dropped = dropped + 1,
                        "event spool full (producer.spool_events/spool_bytes): events lost"
                    );
                }
            }
            Pushed::Full(sample) => self.held = Some(*sample),
        }
    }

    fn events_stored(&mut self, seq: u64) {
        let released = self.spool.ack(seq);
        self.stats.acked.fetch_add(released as u64, Ordering::Relaxed);
        self.stats.events_acked_seq.fetch_max(seq, Ordering::Relaxed);
        if let Some(sample) = self.held.take() {
            self.push(sample);
        }
    }

    /// The connection changed: everything unacknowledged is sent again, at once.
    fn rewind(&mut self) {
        self.spool.rewind();
        self.flush_at = self.spool.has_unsent().then(tokio::time::Instant::now);
    }

    /// Events sent on no connection yet.
    fn unsent(&self) -> usize {
        self.spool.len() - self.spool.in_flight()
    }

    /// When the loop must wake to send a partial batch: only while
    /// connected, and only while that time is still ahead (a batch that is
    /// due but did not fit the session's queue goes with the next ack).
    fn flush_timer(&self, connected: bool) -> Option<tokio::time::Instant> {
        let at = self.flush_at.filter(|_| connected && self.spool.has_unsent())?;
        (at > tokio::time::Instant::now()).then_some(at)
    }

    /// Moves unsent events from the spool into the session's queue while it
    /// has room: full frames (`producer.batch_max` events) at once, a
    /// partial one only once its oldest event waited `producer.batch_delay_ms`.
    fn flush_events(&mut self, session: &Session, now: tokio::time::Instant) {
        while self.spool.has_unsent() {
            let due = self.flush_at.is_none_or(|at| at <= now);
            if self.unsent() < self.batch_max && !due {
                return;
            }
            let Some(permit) = session.try_reserve(Stream::Events) else {
                return;
            };
            let mut batch = self.spool.take_unsent(self.batch_max);
            let mut bytes: usize = batch.iter().map(meridian_proto::spool::estimated_size).sum();
            while bytes > FRAME_BYTES && batch.len() > 1 {
                // Too big for one frame: send the first half now, the rest next.
                let rest = batch.split_off(batch.len() / 2);
                bytes = batch.iter().map(meridian_proto::spool::estimated_size).sum();
                self.spool.unsend(rest.len());
            }
            let n = batch.len() as u64;
            let now = meridian_proto::unix_now(std::time::SystemTime::now());
            for sample in &batch {
                self.stats.event_lag.observe(now - sample.source_ts);
            }
            match session::encode(&ProducerFrame::Batch(batch)) {
                Ok(frame) => {
                    permit.send(frame);
                    self.stats.sent.fetch_add(n, Ordering::Relaxed);
                    self.stats.event_frames.fetch_add(1, Ordering::Relaxed);
                }
                Err(reason) => tracing::error!(%reason, "an event batch could not be encoded"),
            }
        }
        if !self.spool.has_unsent() {
            self.flush_at = None;
        }
    }

    /// Sends the telemetry due now, if the stream has room; otherwise the
    /// next tick sends newer values.
    fn send_telemetry(&mut self, session: &Session, feed: &CscFeed) {
        let mut due = Vec::new();
        self.sampler.sample(&feed.telemetry, Instant::now(), &mut due);
        if due.is_empty() {
            return;
        }
        let Some(permit) = session.try_reserve(Stream::Telemetry) else {
            self.stats.telemetry_conflated.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let samples: Vec<Sample> = due
            .into_iter()
            .map(|p| {
                self.telemetry_seq += 1;
                self.sample(p, self.telemetry_seq)
            })
            .collect();
        let n = samples.len() as u64;
        let now = meridian_proto::unix_now(std::time::SystemTime::now());
        for sample in &samples {
            self.stats.telemetry_lag.observe(now - sample.source_ts);
        }
        match session::encode(&ProducerFrame::Batch(samples)) {
            Ok(frame) => {
                permit.send(frame);
                self.stats.sent.fetch_add(n, Ordering::Relaxed);
            }
            Err(reason) => tracing::error!(%reason, "a telemetry batch could not be encoded"),
        }
    }
}

/// A random 64-bit id, from the OS's hashing seed (no RNG dependency).
fn random_id() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.finish()
}
