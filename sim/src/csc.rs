//! What every simulated CSC shares: its topics, its subscribers and the
//! summary state machine of Rubin's CSCs.

use crate::middleware::{Ack, AckState, CscFeed, LatestTelemetry, Published, EVENT_FEED_CAPACITY};
use meridian_proto::{Category, CscId, Fields, TopicSchema, Value};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;
use tokio::sync::mpsc;

/// Summary states, with the numbers the observatory uses on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SummaryState {
    Disabled = 1,
    Enabled = 2,
    Fault = 3,
    Offline = 4,
    Standby = 5,
}

impl SummaryState {
    /// The state a standard command leads to from `self`, or why it is not allowed.
    pub fn after(self, command: &str) -> Result<SummaryState, String> {
        use SummaryState::*;
        match (self, command) {
            (Standby, "start") => Ok(Disabled),
            (Disabled, "enable") => Ok(Enabled),
            (Enabled, "disable") => Ok(Disabled),
            (Disabled | Fault, "standby") => Ok(Standby),
            (Standby, "exitControl") => Ok(Offline),
            (state, cmd) => Err(format!("{cmd} not allowed in state {state:?}")),
        }
    }
}

/// Standard commands every CSC accepts.
pub const STANDARD_COMMANDS: &[&str] = &[
    "start",
    "enable",
    "disable",
    "standby",
    "exitControl",
    "setLogLevel",
];

/// Event feeds of the subscribers, and the last value of each event topic.
#[derive(Default)]
struct Subscribers {
    feeds: Vec<mpsc::Sender<Published>>,
    last: HashMap<String, Published>,
}

/// The shared state of one running simulated CSC.
pub struct SimCsc {
    pub id: CscId,
    pub schemas: Vec<TopicSchema>,
    /// Subscribers' event feeds, and the last value of each event topic:
    /// like the observatory's middleware (DDS "transient local"), a new
    /// subscriber first receives each event topic's current value, so a
    /// producer started late still learns e.g. the CSC's summary state.
    subscribers: Mutex<Subscribers>,
    telemetry: Arc<LatestTelemetry>,
    state: Mutex<SummaryState>,
}

impl SimCsc {
    pub fn new(id: CscId, schemas: Vec<TopicSchema>) -> Arc<SimCsc> {
        Arc::new(SimCsc {
            id,
            schemas,
            subscribers: Mutex::new(Subscribers::default()),
            telemetry: Arc::new(LatestTelemetry::default()),
            state: Mutex::new(SummaryState::Standby),
        })
    }

    /// A new subscriber's feed, holding the last value of each event topic.
    pub fn feed(&self) -> CscFeed {
        let (tx, rx) = mpsc::channel(EVENT_FEED_CAPACITY);
        let mut subscribers = self.subscribers.lock().unwrap_or_else(|p| p.into_inner());
        let mut last: Vec<&Published> = subscribers.last.values().collect();
        last.sort_by(|a, b| a.source_ts.total_cmp(&b.source_ts));
        for event in last {
            // A CSC has far fewer event topics than the feed's capacity.
            let _ = tx.try_send(event.clone());
        }
        subscribers.feeds.push(tx);
        drop(subscribers);
        CscFeed {
            schemas: self.schemas.clone(),
            events: rx,
            telemetry: self.telemetry.clone(),
        }
    }

    /// Publishes a telemetry value: it replaces the topic's latest value.
    pub fn telemetry(&self, topic: &str, fields: Fields) {
        self.telemetry.publish(Published {
            topic: topic.to_string(),
            category: Category::Telemetry,
            source_ts: meridian_proto::unix_now(SystemTime::now()),
            fields,
        });
    }

    /// Publishes an event to every subscriber, waiting for room in their
    /// feeds: a simulated CSC slows down rather than lose an event.
    pub async fn event(&self, topic: &str, fields: Fields) {
        let sample = Published {
            topic: topic.to_string(),
            category: Category::Event,
            source_ts: meridian_proto::unix_now(SystemTime::now()),
            fields,
        };
        let subscribers: Vec<_> = {
            let mut subscribers = self.subscribers.lock().unwrap_or_else(|p| p.into_inner());
            subscribers.last.insert(sample.topic.clone(), sample.clone());
            subscribers.feeds.clone()
        };
        let mut gone = false;
        for tx in &subscribers {
            gone |= tx.send(sample.clone()).await.is_err();
        }
        if gone {
            self.subscribers
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .feeds
                .retain(|tx| !tx.is_closed());
        }
    }

    pub fn summary_state(&self) -> SummaryState {
        *self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs a standard state-machine command; publishes `summaryState` on success.
    pub async fn standard_command(&self, command: &str) -> Ack {
        if command == "setLogLevel" {
            return Ack {
                state: AckState::Complete,
                result: "Done".into(),
            };
        }
        let next = {
            let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
            match state.after(command) {
                Ok(next) => {
                    *state = next;
                    next
                }
                Err(reason) => {
                    return Ack {
                        state: AckState::Failed,
                        result: reason,
                    }
                }
            }
        };
        self.event(
            "summaryState",
            vec![("summaryState".into(), Value::Int(next as i64))],
        )
        .await;
        Ack {
            state: AckState::Complete,
            result: "Done".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::SummaryState::*;

    #[test]
    fn the_standard_state_machine_refuses_commands_out_of_order() {
        assert_eq!(Standby.after("start"), Ok(Disabled));
        assert_eq!(Disabled.after("enable"), Ok(Enabled));
        assert_eq!(Fault.after("standby"), Ok(Standby));
        let err = Standby.after("enable").unwrap_err();
        assert!(err.contains("enable not allowed in state Standby"), "{err}");
    }
}
