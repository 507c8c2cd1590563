//! [`SimMiddleware`]: simulated CSCs running in this process, reached the
//! way the real middleware would be reached.

use crate::csc::{self, CommandRequest, SimCsc, SimOptions, SummaryState, Wildcard, COMMAND_QUEUE};
use crate::cscs;
use crate::interface::{CommandSchema, Interface, InterfaceError, ParamError};
use crate::middleware::{Ack, AckState, CommandAcks, CscFeed, LatestTelemetry, Middleware, MiddlewareError};
use async_trait::async_trait;
use meridian_proto::{Csc, CscId, Fields};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
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

struct Running {
    csc: Arc<SimCsc>,
    /// `None` for CSCs driven by another (Scripts run by a ScriptQueue).
    commands: Option<mpsc::Sender<CommandRequest>>,
}

#[derive(Default)]
struct Registry {
    cscs: HashMap<CscId, Running>,
    wildcards: HashMap<String, Wildcard>,
}

/// The simulated CSCs of this process; cheap to clone.
#[derive(Clone, Default)]
pub struct SimMiddleware {
    registry: Arc<Mutex<Registry>>,
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

    fn lock(&self) -> std::sync::MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(|p| p.into_inner())
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
        let csc = {
            let mut registry = self.lock();
            if registry.cscs.contains_key(id) {
                return Err(SimError::AlreadyRunning(id.clone()));
            }
            let wildcard = registry.wildcards.entry(id.csc.to_string()).or_default().clone();
            let csc = SimCsc::new(id.clone(), interface, wildcard);
            if options.start_enabled {
                csc.preset_state(SummaryState::Enabled);
            }
            registry.cscs.insert(
                id.clone(),
                Running {
                    csc: csc.clone(),
                    commands: Some(tx),
                },
            );
            csc
        };
        let this = self.clone();
        let id = id.clone();
        self.tasks.spawn(async move {
            csc::run(csc, behaviour, this.clone(), options, rx, shutdown).await;
            this.remove(&id);
        });
        Ok(())
    }

    /// Registers a CSC another one drives (a Script of a ScriptQueue): it
    /// publishes what its driver tells it and takes no commands of its own.
    pub fn register_driven(&self, id: CscId, interface: Interface) -> Arc<SimCsc> {
        let mut registry = self.lock();
        let wildcard = registry.wildcards.entry(id.csc.to_string()).or_default().clone();
        let csc = SimCsc::new(id.clone(), interface, wildcard);
        registry.cscs.insert(
            id,
            Running {
                csc: csc.clone(),
                commands: None,
            },
        );
        csc
    }

    /// Forgets a CSC that ended.
    pub fn remove(&self, id: &CscId) {
        self.lock().cscs.remove(id);
    }

    /// A running CSC, for tests and `--list`.
    pub fn csc(&self, id: &CscId) -> Option<Arc<SimCsc>> {
        self.lock().cscs.get(id).map(|r| r.csc.clone())
    }

    /// Every running CSC instance.
    pub fn running(&self) -> Vec<CscId> {
        let mut ids: Vec<CscId> = self.lock().cscs.keys().cloned().collect();
        ids.sort();
        ids
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
        self.lock()
            .wildcards
            .entry(csc.to_string())
            .or_default()
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(tx);
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
        let (running, commands) = {
            let registry = self.lock();
            let r = registry
                .cscs
                .get(csc)
                .ok_or_else(|| MiddlewareError::UnknownCsc(csc.clone()))?;
            (r.csc.clone(), r.commands.clone())
        };
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
        let registry = self.lock();
        let running = registry
            .cscs
            .get(csc)
            .ok_or_else(|| MiddlewareError::UnknownCsc(csc.clone()))?;
        let unknown = |command: String| {
            MiddlewareError::BadCommand(ParamError::UnknownCommand {
                csc: csc.to_string(),
                command,
            })
        };
        if running.commands.is_none() {
            return Err(unknown(format!(
                "{command} (this instance is driven by another CSC and takes no commands)"
            )));
        }
        running
            .csc
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
