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
//! Queue bound: [`QUEUE_BATCHES`] batches. When full (the store is slow or
//! down), stream readers wait in `submit`, stop reading their QUIC streams,
//! and flow control makes producers wait: the producer pays, with its own
//! bounded spool, and no memory grows here. A write that fails because the
//! store is unavailable is retried with backoff until it succeeds: nothing
//! is acknowledged before it is stored.

use crate::store::{Append, OnceBatch, Store, StoreError};
use meridian_config::IngestConfig;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio_util::task::TaskTracker;

/// Batches waiting for the writer, across all connections.
pub const QUEUE_BATCHES: usize = 256;

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
}

struct Request {
    write: Write,
    stored: oneshot::Sender<Result<(), String>>,
}

/// Handle to the writer task; cheap to clone.
#[derive(Clone)]
pub struct Writer {
    tx: mpsc::Sender<Request>,
}

/// The writer task has stopped (shutdown): the batch was not written.
#[derive(Debug, thiserror::Error)]
#[error("the store writer has stopped")]
pub struct WriterStopped;

impl Writer {
    /// Starts the writer task on `tasks`. It stops once every `Writer`
    /// handle is dropped and its queue is written out.
    pub fn start(store: Arc<dyn Store>, config: &IngestConfig, tasks: &TaskTracker) -> Writer {
        let (tx, rx) = mpsc::channel(QUEUE_BATCHES);
        let batch_max = config.batch_max;
        let delay = Duration::from_millis(config.batch_delay_ms);
        tasks.spawn(run(store, rx, batch_max, delay));
        Writer { tx }
    }

    /// Queues `write`; the returned receiver resolves once it is stored
    /// (or with the store's reason if it refused it). Waits while the queue is full.
    pub async fn submit(&self, write: Write) -> Result<oneshot::Receiver<Result<(), String>>, WriterStopped> {
        let (stored, rx) = oneshot::channel();
        self.tx
            .send(Request { write, stored })
            .await
            .map_err(|_| WriterStopped)?;
        Ok(rx)
    }
}

async fn run(store: Arc<dyn Store>, mut rx: mpsc::Receiver<Request>, batch_max: usize, delay: Duration) {
    let mut pending: Vec<Request> = Vec::new();
    while let Some(first) = rx.recv().await {
        let mut count = first.write.entries();
        pending.push(first);
        let deadline = tokio::time::Instant::now() + delay;
        while count < batch_max {
            let next = match rx.try_recv() {
                Ok(r) => Some(r),
                Err(_) if delay.is_zero() => None,
                Err(_) => tokio::time::timeout_at(deadline, rx.recv()).await.ok().flatten(),
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
        let (a, o) = tokio::join!(
            async {
                match appends.is_empty() {
                    true => Ok(()),
                    false => until_stored("append", || store.append(&appends)).await,
                }
            },
            async {
                match once.is_empty() {
                    true => Ok(()),
                    false => until_stored("append_once", || store.append_once(&once)).await,
                }
            },
        );
        let mut outcome = a.and(o);
        if outcome.is_ok() {
            for h in &hashes {
                if let Err(e) = until_stored("hash_set", || store.hash_set(&h.key, &h.fields, h.ttl)).await {
                    outcome = Err(e);
                }
            }
        }
        for request in pending.drain(..) {
            let _ = request.stored.send(outcome.clone());
        }
    }
}

/// Runs a store write, retrying with backoff while the store is unavailable.
/// A refused write (a bug or misconfiguration, e.g. a key of another type)
/// is not retried: its streams get the reason and are not acknowledged.
async fn until_stored<T, F, Fut>(what: &str, mut write: F) -> Result<(), String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, StoreError>>,
{
    let mut delay = Duration::from_millis(50);
    let mut failing = false;
    loop {
        match write().await {
            Ok(_) => {
                if failing {
                    tracing::warn!(what, "store writes resumed; nothing acknowledged was lost");
                }
                return Ok(());
            }
            Err(StoreError::Refused(reason)) => {
                tracing::error!(what, %reason, "store refused a batch; not acknowledged");
                return Err(format!("store refused the batch: {reason}"));
            }
            Err(e) => {
                if !failing {
                    tracing::warn!(what, error = %e, "store write failed; retrying and holding producers back");
                    failing = true;
                }
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(MAX_RETRY_DELAY);
            }
        }
    }
}
