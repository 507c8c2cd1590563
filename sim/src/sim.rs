//! [`SimMiddleware`]: simulated CSCs running in this process, reached the
//! way the real middleware would be reached.

use crate::csc::SimCsc;
use crate::middleware::{Ack, AckState, CscFeed, Middleware, MiddlewareError};
use crate::test_csc;
use async_trait::async_trait;
use meridian_proto::{CscId, Fields};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Why a simulator could not start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SimError {
    /// Only the CSCs listed here are simulated.
    #[error("no simulator for CSC {0:?}; simulated CSCs: Test")]
    NotSimulated(String),
    #[error("CSC {0} is already running")]
    AlreadyRunning(CscId),
}

/// The simulated CSCs of this process.
#[derive(Clone, Default)]
pub struct SimMiddleware {
    cscs: Arc<Mutex<HashMap<CscId, Arc<SimCsc>>>>,
    tasks: TaskTracker,
}

impl SimMiddleware {
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts simulating `id` until `shutdown`; `rate_hz` is its telemetry rate.
    pub fn start(&self, id: &CscId, rate_hz: f64, shutdown: CancellationToken) -> Result<(), SimError> {
        let mut cscs = self.cscs.lock().unwrap_or_else(|p| p.into_inner());
        if cscs.contains_key(id) {
            return Err(SimError::AlreadyRunning(id.clone()));
        }
        let csc = match id.csc.as_str() {
            "Test" => SimCsc::new(id.clone(), test_csc::schemas(rate_hz as f32)),
            other => return Err(SimError::NotSimulated(other.to_string())),
        };
        cscs.insert(id.clone(), csc.clone());
        self.tasks.spawn(test_csc::run(csc, rate_hz, shutdown));
        Ok(())
    }

    /// Waits for every simulator to stop (after their shutdown token fired).
    pub async fn stopped(&self) {
        self.tasks.close();
        self.tasks.wait().await;
    }

    fn get(&self, id: &CscId) -> Result<Arc<SimCsc>, MiddlewareError> {
        self.cscs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .cloned()
            .ok_or_else(|| MiddlewareError::UnknownCsc(id.clone()))
    }
}

#[async_trait]
impl Middleware for SimMiddleware {
    fn subscribe(&self, csc: &CscId) -> Result<CscFeed, MiddlewareError> {
        Ok(self.get(csc)?.feed())
    }

    async fn command(
        &self,
        csc: &CscId,
        command: &str,
        _params: Fields,
        timeout: Duration,
    ) -> Result<Ack, MiddlewareError> {
        let sim = self.get(csc)?;
        if !test_csc::has_command(command) {
            return Err(MiddlewareError::UnknownCommand {
                csc: csc.clone(),
                command: command.into(),
            });
        }
        let run = async {
            if crate::csc::STANDARD_COMMANDS.contains(&command) {
                sim.standard_command(command).await
            } else {
                Ack {
                    state: AckState::Complete,
                    result: "Done".into(),
                }
            }
        };
        Ok(tokio::time::timeout(timeout, run).await.unwrap_or(Ack {
            state: AckState::Timeout,
            result: format!("no final acknowledgement within {} ms", timeout.as_millis()),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use meridian_proto::Value;

    #[tokio::test]
    async fn a_subscriber_sees_telemetry_and_events_and_commands_change_state() {
        let sim = SimMiddleware::new();
        let stop = CancellationToken::new();
        let id: CscId = "Test:1".parse().unwrap();
        // Subscribing before start is refused with the CSC named.
        assert_eq!(
            sim.subscribe(&id).err(),
            Some(MiddlewareError::UnknownCsc(id.clone()))
        );
        sim.start(&id, 100.0, stop.clone()).unwrap();
        let mut feed = sim.subscribe(&id).unwrap();
        let mut seen = HashMap::new();
        let mut out = Vec::new();
        while out.is_empty() {
            feed.telemetry.wait_changed().await;
            feed.telemetry.changed_since(&mut seen, &mut out);
        }
        assert!(out.iter().any(|p| p.topic == "scalars" || p.topic == "arrays"));

        let ack = sim
            .command(&id, "start", vec![], Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(ack.state, AckState::Complete);
        let ack = sim
            .command(&id, "start", vec![], Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(ack.state, AckState::Failed);
        assert!(ack.result.contains("not allowed"), "{}", ack.result);
        loop {
            let ev = feed.events.recv().await.unwrap();
            if ev.topic == "summaryState" && ev.fields[0].1 == Value::Int(1) {
                break;
            }
        }
        let err = sim
            .command(&id, "nope", vec![], Duration::from_secs(1))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("nope"));
        stop.cancel();
        sim.stopped().await;
    }
}
