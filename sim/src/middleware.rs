//! The boundary between Meridian and the observatory's middleware.
//!
//! The producer and the commander use only this trait. [`crate::SimMiddleware`]
//! implements it with simulated CSCs; an adapter to the observatory's real
//! middleware implements the same methods.

use crate::interface::{CommandSchema, ParamError};
use async_trait::async_trait;
use meridian_proto::{Category, Csc, CscId, Fields, TopicSchema};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, Notify};

/// One value a CSC published on a topic.
#[derive(Debug, Clone, PartialEq)]
pub struct Published {
    /// The publishing instance; differs between values of one wildcard feed.
    pub salindex: u32,
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
    /// Empty for a wildcard feed (instances started on demand, e.g. Scripts,
    /// publish events only).
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

    /// How many values `topic` has had (its generation): a test counts
    /// publications with it.
    pub fn generation(&self, topic: &str) -> u64 {
        self.latest
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(topic)
            .map_or(0, |(g, _)| *g)
    }

    /// Waits until some topic gets a new value.
    pub async fn wait_changed(&self) {
        self.changed.notified().await
    }
}

/// Progress of a command, as the CSC reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckState {
    /// Accepted and running; a final acknowledgement follows.
    InProgress,
    Complete,
    /// The CSC refused or the command failed; the result says why.
    Failed,
    /// No final acknowledgement arrived within the timeout.
    Timeout,
}

impl AckState {
    pub fn is_final(self) -> bool {
        !matches!(self, AckState::InProgress)
    }
}

/// An acknowledgement with the CSC's result text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack {
    pub state: AckState,
    pub result: String,
}

/// The acknowledgements of one command, in order; the last one is final.
pub struct CommandAcks {
    rx: mpsc::Receiver<Ack>,
    done: bool,
}

impl CommandAcks {
    pub fn new(rx: mpsc::Receiver<Ack>) -> Self {
        CommandAcks { rx, done: false }
    }

    /// The next acknowledgement; `None` after the final one.
    pub async fn next(&mut self) -> Option<Ack> {
        if self.done {
            return None;
        }
        let ack = self.rx.recv().await.unwrap_or(Ack {
            state: AckState::Failed,
            result: "the CSC stopped before acknowledging".into(),
        });
        self.done = ack.state.is_final();
        Some(ack)
    }

    /// Waits for the final acknowledgement.
    pub async fn final_ack(mut self) -> Ack {
        let mut last = None;
        while let Some(ack) = self.next().await {
            last = Some(ack);
        }
        last.unwrap_or(Ack {
            state: AckState::Failed,
            result: "no acknowledgement".into(),
        })
    }
}

/// Why the middleware could not do what was asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MiddlewareError {
    /// No such CSC is running: check the CSC name and SAL index.
    #[error("no CSC {0} is running")]
    UnknownCsc(CscId),
    /// The command or its parameters do not match the CSC's interface; the
    /// message names the parameter. Nothing was sent.
    #[error(transparent)]
    BadCommand(#[from] ParamError),
    /// The CSC's command queue is full: it is busy; try again.
    #[error("CSC {0} is busy: its command queue is full")]
    Busy(CscId),
}

/// What the producer and commander need from the observatory's middleware.
#[async_trait]
pub trait Middleware: Send + Sync + 'static {
    /// Subscribes to every topic of one CSC instance.
    fn subscribe(&self, csc: &CscId) -> Result<CscFeed, MiddlewareError>;

    /// Subscribes to the events of every instance of `csc`, present and
    /// future (e.g. every `Script` the ScriptQueue starts); each value names
    /// its instance in [`Published::salindex`].
    fn subscribe_all_indices(&self, csc: &Csc) -> Result<CscFeed, MiddlewareError>;

    /// Sends a command; the acknowledgements follow (in progress, then
    /// complete, failed or timed out after `timeout`).
    async fn command(
        &self,
        csc: &CscId,
        command: &str,
        params: Fields,
        timeout: Duration,
    ) -> Result<CommandAcks, MiddlewareError>;

    /// The schema of `command` of the running instance `csc` (from its
    /// interface definition), so a caller can check parameters, and tell an
    /// unknown CSC from an unknown command, before anything is sent.
    /// `UnknownCsc` if no such instance runs; `BadCommand` with
    /// `ParamError::UnknownCommand` if it has no such command.
    fn command_schema(&self, csc: &CscId, command: &str) -> Result<CommandSchema, MiddlewareError>;

    /// Whether commands can be carried now (a readiness probe); the reason
    /// if not, for the operator.
    async fn ready(&self) -> Result<(), String>;
}
