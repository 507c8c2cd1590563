//! [`SimMiddleware`]: simulated CSCs running in this process, reached the
//! way the real middleware would be reached.

use crate::csc::{self, CommandRequest, Registry, SimCsc, SimOptions, SummaryState, COMMAND_QUEUE};
use crate::cscs;
use crate::interface::{CommandSchema, Interface, InterfaceError, ParamError};
use crate::middleware::{Ack, AckState, CommandAcks, CscFeed, LatestTelemetry, Middleware, MiddlewareError};
use async_trait::async_trait;
use meridian_proto::{Csc, CscId, Fields};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Why a simulator could not start.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// Only the CSCs listed in the message can be started.
    #[error("no simulator for CSC {0:?}; simulated CSCs: {list}", list = cscs::STARTABLE.join(", "))]
    NotSimulated(String),
    #[error("CSC {0} is already running")]
    AlreadyRunning(CscId),
    /// The interface definition could not be loaded (`--interfaces DIR`).
    #[error(transparent)]
    Interface(#[from] InterfaceError),
}

/// The simulated CSCs of this process; cheap to clone.
#[derive(Clone, Default)]
pub struct SimMiddleware {
    registry: Registry,
    tasks: TaskTracker,
    options: SimOptions,
    /// Where to read interface definitions (the site's XML); builtin ones if `None`.
    interfaces: Option<PathBuf>,
}

impl SimMiddleware {
    pub fn new() -> Self {
        Self::default()
    }

    /// A simulator running with `options`, reading interfaces from `interfaces` (XML) if given.
    pub fn with_options(options: SimOptions, interfaces: Option<PathBuf>) -> Self {
        SimMiddleware {
            options,
            interfaces,
            ..Self::default()
        }
    }

    pub fn options(&self) -> SimOptions {
        self.options
    }

    /// The interface of `csc`: the site's XML if configured, else the builtin one.
    pub fn interface(&self, csc: &str) -> Result<Interface, SimError> {
        match &self.interfaces {
            Some(dir) => Ok(Interface::from_xml_dir(dir, csc)?),
            None => Interface::builtin(csc).ok_or_else(|| SimError::NotSimulated(csc.to_string())),
        }
    }

    /// Starts simulating `id` until `shutdown`, with this middleware's options.
    pub fn start(&self, id: &CscId, shutdown: CancellationToken) -> Result<(), SimError> {
        self.start_with(id, self.options, shutdown)
    }

    /// Starts simulating `id` with its own options (e.g. a faster rate in a test).
    pub fn start_with(
        &self,
        id: &CscId,
        options: SimOptions,
        shutdown: CancellationToken,
    ) -> Result<(), SimError> {
        let behaviour =
            cscs::behaviour_for(id.csc.as_str()).ok_or_else(|| SimError::NotSimulated(id.csc.to_string()))?;
        let mut interface = self.interface(id.csc.as_str())?;
        // Declare the rates actually published, so producers sample (and
        // frontends judge staleness) at them.
        for topic in &mut interface.telemetry {
            topic.rate_hz = Some(topic.rate_hz.unwrap_or(1.0) * options.rate_multiplier as f32);
        }
        let (tx, rx) = mpsc::channel(COMMAND_QUEUE);
        let state = if options.start_enabled {
            SummaryState::Enabled
        } else {
            SummaryState::Standby
        };
        let csc = self
            .registry
            .add(id, interface, state, tx)
            .ok_or_else(|| SimError::AlreadyRunning(id.clone()))?;
        let registry = self.registry.clone();
        let id = id.clone();
        self.tasks.spawn(async move {
            csc::run(csc, behaviour, registry.clone(), options, rx, shutdown).await;
            registry.remove(&id);
        });
        Ok(())
    }

    /// A running CSC, for tests and `--list`.
    pub fn csc(&self, id: &CscId) -> Option<Arc<SimCsc>> {
        self.registry.get(id).map(|(csc, _)| csc)
    }

    /// Every running CSC instance.
    pub fn running(&self) -> Vec<CscId> {
        self.registry.ids()
    }

    /// Waits for every simulator to stop (after their shutdown token fired).
    pub async fn stopped(&self) {
        self.tasks.close();
        self.tasks.wait().await;
    }
}

#[async_trait]
impl Middleware for SimMiddleware {
    fn subscribe(&self, csc: &CscId) -> Result<CscFeed, MiddlewareError> {
        let running = self
            .csc(csc)
            .ok_or_else(|| MiddlewareError::UnknownCsc(csc.clone()))?;
        Ok(running.feed())
    }

    fn subscribe_all_indices(&self, csc: &Csc) -> Result<CscFeed, MiddlewareError> {
        let interface = self.interface(csc.as_str()).map_err(|_| {
            MiddlewareError::UnknownCsc(CscId {
                csc: csc.clone(),
                salindex: 0,
            })
        })?;
        let (tx, rx) = mpsc::channel(crate::middleware::EVENT_FEED_CAPACITY);
        self.registry.subscribe_all_indices(csc.as_str(), tx);
        Ok(CscFeed {
            schemas: interface.events.clone(),
            events: rx,
            telemetry: Arc::new(LatestTelemetry::default()),
        })
    }

    async fn command(
        &self,
        csc: &CscId,
        command: &str,
        params: Fields,
        timeout: Duration,
    ) -> Result<CommandAcks, MiddlewareError> {
        let (running, commands) = self
            .registry
            .get(csc)
            .ok_or_else(|| MiddlewareError::UnknownCsc(csc.clone()))?;
        running.interface.check_params(command, &params)?;
        let Some(commands) = commands else {
            return Err(MiddlewareError::BadCommand(ParamError::UnknownCommand {
                csc: csc.to_string(),
                command: format!("{command} (this instance is driven by another CSC and takes no commands)"),
            }));
        };
        let (to_csc, mut from_csc) = mpsc::channel(4);
        let request = CommandRequest {
            name: command.to_string(),
            params,
            acks: to_csc,
        };
        commands
            .try_send(request)
            .map_err(|_| MiddlewareError::Busy(csc.clone()))?;
        // Relay the CSC's acknowledgements, ending with a timeout if no final one comes in time.
        let (to_caller, acks) = mpsc::channel(4);
        tokio::spawn(async move {
            let deadline = tokio::time::Instant::now() + timeout;
            loop {
                let ack = match tokio::time::timeout_at(deadline, from_csc.recv()).await {
                    Ok(Some(ack)) => ack,
                    Ok(None) => Ack {
                        state: AckState::Failed,
                        result: "the CSC stopped".into(),
                    },
                    Err(_) => Ack {
                        state: AckState::Timeout,
                        result: format!("no final acknowledgement within {} ms", timeout.as_millis()),
                    },
                };
                let last = ack.state.is_final();
                if to_caller.send(ack).await.is_err() || last {
                    break;
                }
            }
        });
        Ok(CommandAcks::new(acks))
    }

    fn command_schema(&self, csc: &CscId, command: &str) -> Result<CommandSchema, MiddlewareError> {
        let (running, commands) = self
            .registry
            .get(csc)
            .ok_or_else(|| MiddlewareError::UnknownCsc(csc.clone()))?;
        let unknown = |command: String| {
            MiddlewareError::BadCommand(ParamError::UnknownCommand {
                csc: csc.to_string(),
                command,
            })
        };
        if commands.is_none() {
            return Err(unknown(format!(
                "{command} (this instance is driven by another CSC and takes no commands)"
            )));
        }
        running
            .interface
            .command(command)
            .cloned()
            .ok_or_else(|| unknown(command.to_string()))
    }

    async fn ready(&self) -> Result<(), String> {
        if self.tasks.is_closed() {
            Err("the simulator has stopped".into())
        } else {
            Ok(())
        }
    }
}
