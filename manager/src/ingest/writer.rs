//! The store writer shared by every producer connection of one ingest
//! manager: it gathers batches from all streams into pipelines of up to
//! `ingest.batch_max` entries, waiting at most `ingest.batch_delay_ms` to
//! fill one, and tells each batch's stream when it is stored.
//!
//! Queue bound: [`QUEUE_BATCHES`] batches. When full (the store is slow or
//! down), stream readers wait in `submit`, stop reading their QUIC streams,
//! and flow control makes producers wait: the producer pays, with its own
//! bounded spool, and no memory grows here.

use crate::store::{Append, Store, StoreError};
use meridian_config::IngestConfig;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio_util::task::TaskTracker;

/// Batches waiting for the writer, across all connections.
pub const QUEUE_BATCHES: usize = 256;

/// Longest wait between retries of a failed store write.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(2);

struct Request {
    appends: Vec<Append>,
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

    /// Queues `appends`; the returned receiver resolves once they are stored
    /// (or with the store's reason if it refused them). Waits while the queue is full.
    pub async fn submit(
        &self,
        appends: Vec<Append>,
    ) -> Result<oneshot::Receiver<Result<(), String>>, WriterStopped> {
        let (stored, rx) = oneshot::channel();
        self.tx
            .send(Request { appends, stored })
            .await
            .map_err(|_| WriterStopped)?;
        Ok(rx)
    }
}

async fn run(store: Arc<dyn Store>, mut rx: mpsc::Receiver<Request>, batch_max: usize, delay: Duration) {
    let mut pending: Vec<Request> = Vec::new();
    let mut appends: Vec<Append> = Vec::with_capacity(batch_max);
    while let Some(first) = rx.recv().await {
        let mut count = first.appends.len();
        pending.push(first);
        let deadline = tokio::time::Instant::now() + delay;
        while count < batch_max {
            let next = match rx.try_recv() {
                Ok(r) => Some(r),
                Err(_) if delay.is_zero() => None,
                Err(_) => tokio::time::timeout_at(deadline, rx.recv()).await.ok().flatten(),
            };
            let Some(next) = next else { break };
            count += next.appends.len();
            pending.push(next);
        }
        for request in &mut pending {
            appends.append(&mut request.appends);
        }
        let outcome = write_until_stored(store.as_ref(), &appends).await;
        appends.clear();
        for request in pending.drain(..) {
            let _ = request.stored.send(outcome.clone());
        }
    }
}

/// Writes `appends`, retrying with backoff while the store is unavailable.
/// A refused write (a bug or misconfiguration, e.g. a key of another type)
/// is not retried: its streams get the reason and are not acknowledged.
async fn write_until_stored(store: &dyn Store, appends: &[Append]) -> Result<(), String> {
    let mut delay = Duration::from_millis(50);
    let mut failing = false;
    loop {
        match store.append(appends).await {
            Ok(_) => {
                if failing {
                    tracing::warn!(
                        entries = appends.len(),
                        "store writes resumed; nothing acknowledged was lost"
                    );
                }
                return Ok(());
            }
            Err(StoreError::Refused(reason)) => {
                tracing::error!(entries = appends.len(), %reason, "store refused a batch; not acknowledged");
                return Err(format!("store refused the batch: {reason}"));
            }
            Err(e) => {
                if !failing {
                    tracing::warn!(error = %e, "store write failed; retrying and holding producers back");
                    failing = true;
                }
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(MAX_RETRY_DELAY);
            }
        }
    }
}
