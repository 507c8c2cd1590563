//! The store writer shared by every producer connection of one ingest
//! manager: it gathers batches from all streams into pipelines of up to
//! `ingest.batch_max` entries, waiting at most `ingest.batch_delay_ms` to
//! fill one, and tells each batch's stream when it is stored.
//!
//! Telemetry is appended as is; events are appended exactly once per
//! producer sequence number ([`Store::append_once`]), so a replay after a
//! lost acknowledgement is not written twice; per-instance state hashes of
//! aggregated CSCs (Scripts) are updated after their events.
//!
//! Events before telemetry: batches with events wait in their own queue
//! ([`EVENT_QUEUE`]), which the writer always empties first, and within a
//! pipeline the events go to the store first. A burst of telemetry that
//! fills [`TELEMETRY_QUEUE`] (Redis slow, say) therefore never holds an
//! event back behind it: the event is accepted and written next.
//!
//! Lanes: the writer runs [`WRITER_LANES`] such loops side by side, each
//! with its own two queues and one pipeline in flight, so Redis works on
//! one lane's pipeline while the other's is built, sent or answered. A
//! producer connection submits through one lane ([`Writer::lane`]), so the
//! batches of each of its streams are written in the order they were read,
//! one pipeline after the other, and its events go before its queued
//! telemetry. Lanes of different producers are not ordered with respect to
//! each other, as two ingest managers are not: exactly-once writes rely on
//! the store's high-water marks, not on one writer.
//!
//! Both queues are bounded and [`OnFull::Block`]: when one is full (the
//! store is slow or down), the stream readers submitting to it wait in
//! [`Writer::submit`], stop reading their QUIC streams, and flow control
//! makes producers wait: the producer pays, with its own bounded spool (or,
//! for telemetry, by sending newer values later), and no memory grows here.
//! A write that fails because the store is unavailable is retried with
//! backoff until it succeeds, or until a stopping ingest's drain deadline
//! abandons it: nothing is acknowledged before it is stored.

use super::stats::IngestStats;
use meridian_config::IngestConfig;
use meridian_proto::OnFull;
use meridian_store::{Append, OnceBatch, Store, StoreError};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// A writer queue's bound, in batches (one producer frame each), and what a full one does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueBound {
    pub batches: usize,
    /// Always [`OnFull::Block`]: the reader waits in [`Writer::submit`] and
    /// stops reading its QUIC stream; flow control then stops the producer,
    /// which keeps events in its spool and resamples telemetry. The
    /// producer pays; the ingest's memory does not grow. (A writer that
    /// dropped would break "acknowledged means stored".)
    pub on_full: OnFull,
}

/// Writer loops side by side, each with its own queues and one store
/// pipeline in flight. Two: with one, Redis waits while the writer builds
/// and parses each pipeline (the store writer alone reaches about half the
/// rate of several pipelines in flight); more than two gain little on a
/// two-core host and cost memory (each lane has its own queues).
pub const WRITER_LANES: usize = 2;

/// Batches with events waiting for one lane of the writer, across its
/// connections; served before any telemetry batch of the lane.
pub const EVENT_QUEUE: QueueBound = QueueBound {
    batches: 256,
    on_full: OnFull::Block,
};

/// Telemetry batches waiting for one lane of the writer, across its connections.
pub const TELEMETRY_QUEUE: QueueBound = QueueBound {
    batches: 256,
    on_full: OnFull::Block,
};
// The writer only blocks (see `QueueBound::on_full`); a dropping policy here would lose acknowledged data.
const _: () =
    assert!(matches!(EVENT_QUEUE.on_full, OnFull::Block) && matches!(TELEMETRY_QUEUE.on_full, OnFull::Block));

/// Longest wait between retries of a failed store write.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(2);

/// A hash to set after the batch's entries are stored.
#[derive(Debug, Clone, PartialEq)]
pub struct HashUpdate {
    pub key: String,
    pub fields: Vec<(String, String)>,
    pub ttl: Option<Duration>,
}

/// What one batch of one producer stream writes.
#[derive(Debug, Default)]
pub struct Write {
    /// Telemetry entries, appended as they are.
    pub appends: Vec<Append>,
    /// Events, appended once per sequence number.
    pub once: Option<OnceBatch>,
    /// State hashes updated after the entries.
    pub hashes: Vec<HashUpdate>,
}

impl Write {
    fn entries(&self) -> usize {
        self.appends.len() + self.once.as_ref().map_or(0, |o| o.entries.len())
    }

    /// Whether this batch goes to the event queue: it has events (or the
    /// state hashes that come with them).
    fn has_events(&self) -> bool {
        self.once.is_some() || !self.hashes.is_empty()
    }
}

struct Request {
    write: Write,
    stored: oneshot::Sender<Result<(), String>>,
}

/// The two queues of one writer lane.
struct Lane {
    events: mpsc::Sender<Request>,
    telemetry: mpsc::Sender<Request>,
}

/// Handle to the writer's lanes, submitting to one of them; cheap to clone.
#[derive(Clone)]
pub struct Writer {
    lanes: Arc<[Lane]>,
    /// The lane this handle submits to.
    lane: usize,
    /// The lane the next [`Writer::lane`] hands out.
    next_lane: Arc<AtomicUsize>,
    stats: Arc<IngestStats>,
}

/// The writer task has stopped (shutdown): the batch was not written.
#[derive(Debug, thiserror::Error)]
#[error("the store writer has stopped")]
pub struct WriterStopped;

impl Writer {
    /// Starts the [`WRITER_LANES`] writer tasks on `tasks`. They stop once
    /// every `Writer` handle is dropped and their queues are written out, or
    /// at once when `abandon` is cancelled (a drain past its deadline: what
    /// they hold is dropped unstored and unacknowledged). They keep
    /// `stats.batches_held` and `stats.samples_held` current. The handle
    /// returned submits to the first lane; give each producer connection
    /// its own [`Writer::lane`].
    pub fn start(
        store: Arc<dyn Store>,
        config: &IngestConfig,
        tasks: &TaskTracker,
        stats: Arc<IngestStats>,
        abandon: CancellationToken,
    ) -> Writer {
        let batch_max = config.batch_max;
        let delay = Duration::from_millis(config.batch_delay_ms);
        let lanes: Vec<Lane> = (0..WRITER_LANES)
            .map(|_| {
                let (events, events_rx) = mpsc::channel(EVENT_QUEUE.batches);
                let (telemetry, telemetry_rx) = mpsc::channel(TELEMETRY_QUEUE.batches);
                let queues = Queues {
                    events: events_rx,
                    telemetry: telemetry_rx,
                };
                let lane = run(store.clone(), queues, batch_max, delay, stats.clone());
                let abandon = abandon.clone();
                tasks.spawn(async move {
                    tokio::select! {
                        _ = lane => {}
                        _ = abandon.cancelled() => {}
                    }
                });
                Lane { events, telemetry }
            })
            .collect();
        Writer {
            lanes: lanes.into(),
            lane: 0,
            next_lane: Arc::new(AtomicUsize::new(0)),
            stats,
        }
    }

    /// A handle on the next lane, in turn: everything one producer
    /// connection submits goes through one lane, so each of its streams is
    /// written in order and its events before its queued telemetry.
    pub fn lane(&self) -> Writer {
        let lane = self.next_lane.fetch_add(1, Ordering::Relaxed) % self.lanes.len();
        Writer { lane, ..self.clone() }
    }

    /// Queues `write` on this handle's lane (in the event queue if it has
    /// events, else in the telemetry queue); the returned receiver resolves
    /// once it is stored (or with the store's reason if it refused it).
    /// Waits while its queue is full ([`OnFull::Block`]).
    pub async fn submit(&self, write: Write) -> Result<oneshot::Receiver<Result<(), String>>, WriterStopped> {
        let lane = &self.lanes[self.lane];
        let queue = match write.has_events() {
            true => &lane.events,
            false => &lane.telemetry,
        };
        let permit = queue.reserve().await.map_err(|_| WriterStopped)?;
        // Counted before the writer can see it, so the gauge never goes below zero.
        let held = self.stats.batches_held.fetch_add(1, Ordering::Relaxed) + 1;
        self.stats.batches_held_max.fetch_max(held, Ordering::Relaxed);
        self.stats
            .samples_held
            .fetch_add(write.entries() as u64, Ordering::Relaxed);
        let (stored, rx) = oneshot::channel();
        permit.send(Request { write, stored });
        Ok(rx)
    }
}

/// The writer's two queues, events first.
struct Queues {
    events: mpsc::Receiver<Request>,
    telemetry: mpsc::Receiver<Request>,
}

impl Queues {
    /// The next batch, waiting for one: an event batch if any is queued.
    /// `None` once both queues are closed and empty.
    async fn recv(&mut self) -> Option<Request> {
        tokio::select! {
            biased;
            Some(r) = self.events.recv() => Some(r),
            Some(r) = self.telemetry.recv() => Some(r),
            else => None,
        }
    }

    /// The next batch already queued, event batches first.
    fn try_recv(&mut self) -> Option<Request> {
        self.events
            .try_recv()
            .ok()
            .or_else(|| self.telemetry.try_recv().ok())
    }
}

async fn run(
    store: Arc<dyn Store>,
    mut queues: Queues,
    batch_max: usize,
    delay: Duration,
    stats: Arc<IngestStats>,
) {
    let mut pending: Vec<Request> = Vec::new();
    while let Some(first) = queues.recv().await {
        let mut count = first.write.entries();
        pending.push(first);
        let deadline = tokio::time::Instant::now() + delay;
        while count < batch_max {
            let next = match queues.try_recv() {
                Some(r) => Some(r),
                None if delay.is_zero() => None,
                None => tokio::time::timeout_at(deadline, queues.recv())
                    .await
                    .ok()
                    .flatten(),
            };
            let Some(next) = next else { break };
            count += next.write.entries();
            pending.push(next);
        }
        let mut appends = Vec::with_capacity(count);
        let mut once = Vec::new();
        let mut hashes = Vec::new();
        for request in &mut pending {
            appends.append(&mut request.write.appends);
            once.extend(request.write.once.take());
            hashes.append(&mut request.write.hashes);
        }
        let samples = count as u64;
        let (telemetry_count, event_count) = (
            appends.len() as u64,
            once.iter().map(|o| o.entries.len() as u64).sum::<u64>(),
        );
        let started = std::time::Instant::now();
        // `join!` polls in order: the events' pipeline goes to the store first.
        let (o, a) = tokio::join!(
            async {
                match once.is_empty() {
                    true => Ok(0),
                    false => until_stored("append_once", &stats, || store.append_once(&once))
                        .await
                        .map(|written| written.iter().sum::<usize>() as u64),
                }
            },
            async {
                match appends.is_empty() {
                    true => Ok(()),
                    false => until_stored("append", &stats, || store.append(&appends))
                        .await
                        .map(drop),
                }
            },
        );
        if let Ok(written) = o {
            stats.events_stored.fetch_add(written, Ordering::Relaxed);
            stats
                .events_duplicate
                .fetch_add(event_count.saturating_sub(written), Ordering::Relaxed);
        }
        if a.is_ok() {
            stats
                .telemetry_stored
                .fetch_add(telemetry_count, Ordering::Relaxed);
        }
        let mut outcome = o.map(drop).and(a);
        if outcome.is_ok() {
            for h in &hashes {
                if let Err(e) =
                    until_stored("hash_set", &stats, || store.hash_set(&h.key, &h.fields, h.ttl)).await
                {
                    outcome = Err(e);
                }
            }
        }
        stats.store_write.observe(started.elapsed().as_secs_f64());
        stats.samples_held.fetch_sub(samples, Ordering::Relaxed);
        for request in pending.drain(..) {
            let _ = request.stored.send(outcome.clone());
            stats.batches_held.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// Runs a store write, retrying with backoff while the store is unavailable.
/// A refused write (a bug or misconfiguration, e.g. a key of another type)
/// is not retried: its streams get the reason and are not acknowledged.
async fn until_stored<T, F, Fut>(what: &str, stats: &IngestStats, mut write: F) -> Result<T, String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, StoreError>>,
{
    let mut delay = Duration::from_millis(50);
    let mut failing = false;
    loop {
        match write().await {
            Ok(value) => {
                if failing {
                    stats.store_failing.fetch_sub(1, Ordering::Relaxed);
                    tracing::warn!(what, "store writes resumed; nothing acknowledged was lost");
                }
                return Ok(value);
            }
            Err(StoreError::Refused(reason)) => {
                if failing {
                    stats.store_failing.fetch_sub(1, Ordering::Relaxed);
                }
                tracing::error!(what, %reason, "store refused a batch; not acknowledged");
                return Err(format!("store refused the batch: {reason}"));
            }
            Err(e) => {
                stats.store_retries.fetch_add(1, Ordering::Relaxed);
                if !failing {
                    stats.store_failing.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(what, error = %e, "store write failed; retrying and holding producers back");
                    failing = true;
                }
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(MAX_RETRY_DELAY);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_trait::async_trait;
    use futures_util::FutureExt;
    use meridian_proto::StreamId;
    use meridian_store::memory::MemoryStore;
    use meridian_store::{Entry, StreamReader};
    use std::future::Future;
    use std::sync::Mutex;
    use std::task::Poll;
    use tokio::sync::watch;

    /// A store whose writes wait until the test opens a gate (a store that
    /// is slow or down), and that records which keys were written, in order.
    struct GatedStore {
        inner: MemoryStore,
        open: watch::Receiver<bool>,
        /// How many writes have started (and are waiting at the gate or done).
        entered: watch::Sender<usize>,
        written: Mutex<Vec<String>>,
    }

    impl GatedStore {
        async fn gate(&self, keys: impl Iterator<Item = String>) {
            self.entered.send_modify(|n| *n += 1);
            let mut open = self.open.clone();
            let _ = open.wait_for(|open| *open).await;
            self.written.lock().unwrap().extend(keys);
        }
    }

    #[async_trait]
    impl Store for GatedStore {
        async fn append(&self, batch: &[Append]) -> Result<Vec<StreamId>, StoreError> {
            self.gate(batch.iter().map(|a| a.key.clone())).await;
            self.inner.append(batch).await
        }
        async fn append_once(&self, batches: &[OnceBatch]) -> Result<Vec<usize>, StoreError> {
            let keys = batches
                .iter()
                .flat_map(|b| b.entries.iter().map(|(_, a)| a.key.clone()));
            self.gate(keys.collect::<Vec<_>>().into_iter()).await;
            self.inner.append_once(batches).await
        }
        async fn last(&self, key: &str, count: usize) -> Result<Vec<Entry>, StoreError> {
            self.inner.last(key, count).await
        }
        async fn range(
            &self,
            key: &str,
            after: StreamId,
            until: Option<StreamId>,
            count: usize,
        ) -> Result<Vec<Entry>, StoreError> {
            self.inner.range(key, after, until, count).await
        }
        async fn len(&self, key: &str) -> Result<usize, StoreError> {
            self.inner.len(key).await
        }
        async fn reader(&self) -> Result<Box<dyn StreamReader>, StoreError> {
            self.inner.reader().await
        }
        async fn hash_set(
            &self,
            key: &str,
            fields: &[(String, String)],
            ttl: Option<Duration>,
        ) -> Result<(), StoreError> {
            self.inner.hash_set(key, fields, ttl).await
        }
        async fn hash_get(&self, key: &str) -> Result<Vec<(String, String)>, StoreError> {
            self.inner.hash_get(key).await
        }
        async fn ttl(&self, key: &str) -> Result<Option<Duration>, StoreError> {
            self.inner.ttl(key).await
        }
        async fn exists(&self, key: &str) -> Result<bool, StoreError> {
            self.inner.exists(key).await
        }
        async fn trim_before(&self, key: &str, min_id: StreamId) -> Result<usize, StoreError> {
            self.inner.trim_before(key, min_id).await
        }
        async fn delete(&self, keys: &[String]) -> Result<usize, StoreError> {
            self.inner.delete(keys).await
        }
        async fn keys_with_prefix(&self, prefix: &str, limit: usize) -> Result<Vec<String>, StoreError> {
            self.inner.keys_with_prefix(prefix, limit).await
        }
        async fn key_count(&self) -> Result<usize, StoreError> {
            self.inner.key_count().await
        }
        async fn lock(&self, name: &str, holder: &str, ttl: Duration) -> Result<bool, StoreError> {
            self.inner.lock(name, holder, ttl).await
        }
        async fn unlock(&self, name: &str, holder: &str) -> Result<bool, StoreError> {
            self.inner.unlock(name, holder).await
        }
    }

    fn append(key: &str) -> Append {
        Append {
            key: key.into(),
            maxlen: 10,
            fields: vec![("f".into(), "{}".into())],
        }
    }

    fn telemetry(key: &str) -> Write {
        Write {
            appends: vec![append(key)],
            ..Write::default()
        }
    }

    fn event(key: &str, seq: u64) -> Write {
        Write {
            once: Some(OnceBatch {
                dedup_key: "dedup".into(),
                mark_ttl: Duration::from_secs(60),
                entries: vec![(seq, append(key))],
            }),
            ..Write::default()
        }
    }

    fn held(stats: &IngestStats) -> u64 {
        stats.batches_held.load(Ordering::Relaxed)
    }

    /// Polls `future` once: whether it is still waiting.
    async fn is_pending<F: Future + Unpin>(future: &mut F) -> bool {
        std::future::poll_fn(|cx| Poll::Ready(future.poll_unpin(cx).is_pending())).await
    }

    /// With the store stuck on a telemetry batch and the telemetry queue
    /// full, one more telemetry batch waits (the queue is bounded), but an
    /// event batch is accepted at once and, when the store comes back, is
    /// written right after the batch in progress: before every telemetry
    /// batch that was queued ahead of it.
    #[tokio::test]
    async fn an_event_batch_overtakes_a_full_telemetry_queue() {
        let (gate, open) = watch::channel(false);
        let (entered, mut entered_rx) = watch::channel(0);
        let store = Arc::new(GatedStore {
            inner: MemoryStore::new(),
            open,
            entered,
            written: Mutex::new(Vec::new()),
        });
        let config = IngestConfig {
            batch_max: 1,
            batch_delay_ms: 0,
            ..IngestConfig::default()
        };
        let (tasks, stats) = (TaskTracker::new(), Arc::new(IngestStats::default()));
        let writer = Writer::start(
            store.clone(),
            &config,
            &tasks,
            stats.clone(),
            CancellationToken::new(),
        );

        let mut stored = vec![writer.submit(telemetry("t0")).await.unwrap()];
        entered_rx.wait_for(|n| *n >= 1).await.unwrap(); // the writer is stuck on t0
        let queued = TELEMETRY_QUEUE.batches;
        for i in 1..=queued {
            // Unconstrained: tokio's cooperative budget would make the 129th
            // send in one poll yield even with room in the queue.
            let accepted = tokio::task::unconstrained(writer.submit(telemetry(&format!("t{i}"))))
                .now_or_never()
                .unwrap_or_else(|| panic!("telemetry batch {i} of {queued} fits the queue"));
            stored.push(accepted.unwrap());
        }
        let mut late = Box::pin(tokio::task::unconstrained(writer.submit(telemetry("late"))));
        assert!(is_pending(&mut late).await, "a full telemetry queue blocks");
        let event_stored = tokio::task::unconstrained(writer.submit(event("e", 1)))
            .now_or_never()
            .expect("an event batch is accepted while the telemetry queue is full")
            .unwrap();
        assert_eq!(
            held(&stats),
            queued as u64 + 2,
            "t0, the queued telemetry and the event"
        );

        gate.send(true).unwrap();
        stored.push(late.await.unwrap());
        event_stored.await.unwrap().unwrap();
        for rx in stored {
            rx.await.unwrap().unwrap();
        }
        let written = store.written.lock().unwrap().clone();
        let mut expected = vec!["t0".to_string(), "e".to_string()];
        expected.extend((1..=queued).map(|i| format!("t{i}")));
        expected.push("late".into());
        assert_eq!(
            written, expected,
            "the event is written before the queued telemetry"
        );
        assert_eq!(held(&stats), 0);
        assert_eq!(
            stats.batches_held_max.load(Ordering::Relaxed),
            queued as u64 + 2,
            "never more than the batch being written, a full queue and the event"
        );
        drop(writer);
        tasks.close();
        tasks.wait().await;
    }
}
