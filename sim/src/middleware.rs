//! The boundary between Meridian and the observatory's middleware.

use async_trait::async_trait;
use meridian_proto::{Category, CscId, Fields, TopicSchema};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, Notify};

/// One value a CSC published on a topic.
#[derive(Debug, Clone, PartialEq)]
pub struct Published {
    pub topic: String,
    pub category: Category,
    /// When the CSC published it, Unix seconds.
    pub source_ts: f64,
    pub fields: Fields,
}

/// How many events may wait in a feed before the publishing CSC waits for
/// its reader: an event is never dropped at the source.
pub const EVENT_FEED_CAPACITY: usize = 4096;

/// Everything one CSC publishes, for one subscriber.
pub struct CscFeed {
    /// Topic schemas, as the handshake declares them.
    pub schemas: Vec<TopicSchema>,
    /// Events in publication order; bounded by [`EVENT_FEED_CAPACITY`].
    pub events: mpsc::Receiver<Published>,
    /// The latest telemetry value of each topic; read at the sampling rate.
    pub telemetry: Arc<LatestTelemetry>,
}

/// Latest value per telemetry topic. Memory is bounded by the number of
/// topics the CSC declares: a new value replaces the old one.
#[derive(Default)]
pub struct LatestTelemetry {
    latest: Mutex<HashMap<String, (u64, Published)>>,
    changed: Notify,
}

impl LatestTelemetry {
    /// Replaces the topic's latest value.
    pub fn publish(&self, sample: Published) {
        let mut latest = self.latest.lock().unwrap_or_else(|p| p.into_inner());
        let generation = latest.get(&sample.topic).map_or(1, |(g, _)| g + 1);
        latest.insert(sample.topic.clone(), (generation, sample));
        drop(latest);
        self.changed.notify_waiters();
    }

    /// Values that changed since the reader last looked; `seen` is the
    /// reader's own record of the generation it saw per topic.
    pub fn changed_since(&self, seen: &mut HashMap<String, u64>, out: &mut Vec<Published>) {
        let latest = self.latest.lock().unwrap_or_else(|p| p.into_inner());
        for (topic, (generation, sample)) in latest.iter() {
            let last = seen.get(topic).copied().unwrap_or(0);
            if *generation > last {
                seen.insert(topic.clone(), *generation);
                out.push(sample.clone());
            }
        }
    }

    /// Waits until some topic gets a new value.
    pub async fn wait_changed(&self) {
        self.changed.notified().await
    }
}

/// Progress of a command, as the CSC reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckState {
    InProgress,
    Complete,
    /// The CSC refused or the command failed; the result says why.
    Failed,
    /// No final acknowledgement arrived within the timeout.
    Timeout,
}

/// An acknowledgement with the CSC's result text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack {
    pub state: AckState,
    pub result: String,
}

/// Why the middleware could not do what was asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MiddlewareError {
    /// No such CSC is running: check the CSC name and SAL index.
    #[error("no CSC {0} is running")]
    UnknownCsc(CscId),
    /// The CSC has no such command: check the name against its interface.
    #[error("CSC {csc} has no command {command:?}")]
    UnknownCommand { csc: CscId, command: String },
}

/// What the producer and commander need from the observatory's middleware.
#[async_trait]
pub trait Middleware: Send + Sync + 'static {
    /// Subscribes to every topic of one CSC.
    fn subscribe(&self, csc: &CscId) -> Result<CscFeed, MiddlewareError>;

    /// Sends a command and waits for its final acknowledgement, at most `timeout`.
    async fn command(
        &self,
        csc: &CscId,
        command: &str,
        params: Fields,
        timeout: Duration,
    ) -> Result<Ack, MiddlewareError>;
}
