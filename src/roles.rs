//! The one place roles are wired: [`Roles::bind`] binds the set of roles a
//! process runs (simulated CSCs, producers, the manager's ingest and
//! frontend, the commander) on one store, and [`Roles::run`] serves them
//! until shutdown or until one of them fails. `meridian up`, every other
//! subcommand and the test harness start roles through it, so they start
//! them the same way.
//!
//! Each role has the same shape: `bind(config, deps)` fails on whatever can
//! fail before serving (addresses, certificates, the CSC), then
//! `local_addr()` / `observer()`, then `run(shutdown)`.
//!
//! Stop order follows the pipeline: producers flush and stop (with the
//! simulated CSCs), then the ingest drains into the store, then the frontend
//! and the commander close. The first role to fail starts the same stop,
//! and [`Roles::run`] returns its error, which names the role.

use meridian_commander::{Commander, CommanderError};
use meridian_config::{Config, SimConfig};
use meridian_manager::frontend::Frontend;
use meridian_manager::ingest::Ingest;
use meridian_manager::{Manager, ManagerError, Role};
use meridian_producer::{Producer, ProducerError};
use meridian_proto::metrics::Observe;
use meridian_quic::tls::{Identity, ServerTrust};
use meridian_sim::{Middleware, SimMiddleware, SimOptions};
use meridian_store::{self as store, Store, StoreError};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::task::JoinSet;
use tokio_util::sync::{CancellationToken, DropGuard};

/// Which roles [`Roles::bind`] binds; the constructors are the subcommands' sets.
#[derive(Debug, Clone, Default)]
pub struct RoleSet {
    /// The manager's roles (ingest, frontend or both), if any.
    pub manager: Option<Role>,
    /// The commander HTTP API.
    pub commander: bool,
    /// CSC instances to simulate in this process (`NAME:INDEX`), unless
    /// [`Deps::middleware`] is given.
    pub sims: Vec<String>,
    /// Producers, each `(csc, all_indices)`; the rest of their
    /// configuration is `producer.*`. With an ingest in this set, they send
    /// to it; otherwise to `producer.ingest`.
    pub producers: Vec<(String, bool)>,
}

impl RoleSet {
    /// `meridian up`: every role; a simulator and a producer per CSC of
    /// `sim.cscs`, plus one producer for every Script the ScriptQueues start
    /// (all indices, one aggregated set of streams).
    pub fn up(config: &Config) -> RoleSet {
        let mut producers: Vec<(String, bool)> = config.sim.cscs.iter().map(|c| (c.clone(), false)).collect();
        if config.sim.cscs.iter().any(|c| c.starts_with("ScriptQueue")) {
            producers.push(("Script".to_string(), true));
        }
        RoleSet {
            manager: Some(Role::All),
            commander: true,
            sims: config.sim.cscs.clone(),
            producers,
        }
    }

    /// `meridian manager --role`: the ingest, the frontend, or both.
    pub fn manager(role: Role) -> RoleSet {
        RoleSet {
            manager: Some(role),
            ..RoleSet::default()
        }
    }

    /// `meridian producer`: the producer of `producer.csc`, fed by a
    /// simulator of that CSC.
    pub fn producer(config: &Config) -> RoleSet {
        let p = &config.producer;
        RoleSet {
            sims: vec![p.csc.clone()],
            producers: vec![(p.csc.clone(), p.all_indices)],
            ..RoleSet::default()
        }
    }

    /// `meridian commander`: the commander, relaying to simulators of `sim.cscs`.
    pub fn commander(config: &Config) -> RoleSet {
        RoleSet {
            commander: true,
            sims: config.sim.cscs.clone(),
            ..RoleSet::default()
        }
    }

    /// `meridian sim`: simulators of `sim.cscs` alone.
    pub fn sim(config: &Config) -> RoleSet {
        RoleSet {
            sims: config.sim.cscs.clone(),
            ..RoleSet::default()
        }
    }
}

/// What roles use that a caller may bring; each `None` is made from the configuration.
#[derive(Default)]
pub struct Deps {
    /// The store of the manager and the commander; `None` opens `store.*`.
    pub store: Option<Arc<dyn Store>>,
    /// The certificate the ingest presents; `None` reads `tls.*` (or makes
    /// a development one). Producers of this process trust it.
    pub identity: Option<Identity>,
    /// The CSCs producers and the commander talk to; `None` simulates
    /// [`RoleSet::sims`] in this process.
    pub middleware: Option<Arc<dyn Middleware>>,
}

/// Why roles could not start, or the first one that failed; the message
/// starts with the role.
#[derive(Debug, thiserror::Error)]
pub enum RolesError {
    /// The store could not be opened: check `store.*` and that it runs.
    #[error("store: {0}")]
    Store(StoreError),
    /// A simulated CSC could not start: check `sim.cscs` and `sim.interfaces`.
    #[error("sim.cscs: {csc:?}: {reason}")]
    Sim { csc: String, reason: String },
    /// The ingest or the frontend (the message names which).
    #[error(transparent)]
    Manager(#[from] ManagerError),
    #[error("commander: {0}")]
    Commander(CommanderError),
    /// One producer (the message names its CSC).
    #[error("producer {csc}: {error}")]
    Producer { csc: String, error: ProducerError },
    /// Which ingest certificates producers trust (`tls.ca`, `tls.dev_self_signed`).
    #[error("producer: {0}")]
    Trust(ProducerError),
    /// A role stopped serving while nothing asked it to: restart the process.
    #[error("{role}: stopped on its own")]
    Stopped { role: String },
    /// A role's task panicked (a bug): restart the process and report it.
    #[error("{role}: panicked")]
    Panicked { role: String },
}

// Not `#[from]`: the message already carries the cause, and a source would
// print it twice in an error chain.
impl From<StoreError> for RolesError {
    fn from(e: StoreError) -> Self {
        RolesError::Store(e)
    }
}

impl From<CommanderError> for RolesError {
    fn from(e: CommanderError) -> Self {
        RolesError::Commander(e)
    }
}

/// Bound roles, not yet serving; [`Roles::run`] serves them.
pub struct Roles {
    /// The simulator started by [`Roles::bind`], if any.
    sim: Option<SimMiddleware>,
    /// Stops the simulated CSCs: cancelled with the producers, or when
    /// roles are dropped without running.
    sims_stop: DropGuard,
    producers: Vec<Producer>,
    manager: Option<Manager>,
    commander: Option<Commander>,
    trust: Option<ServerTrust>,
}

impl Roles {
    /// Binds `set`: opens the store (unless given), starts the simulated
    /// CSCs, then binds the commander, the manager's roles and the
    /// producers. Nothing serves until [`Roles::run`]. With both a frontend
    /// and a commander and no `frontend.commander_url`, the dashboard's
    /// command panel sends to this process's commander.
    pub async fn bind(config: &Config, set: &RoleSet, deps: Deps) -> Result<Roles, RolesError> {
        let mut config = config.clone();
        let store = match (deps.store, set.manager.is_some() || set.commander) {
            (Some(store), _) => Some(store),
            (None, true) => Some(store::open(&config.store).await?),
            (None, false) => None,
        };
        // Guarded from the start: a later step failing stops the CSCs already started.
        let sims_token = CancellationToken::new();
        let sims_stop = sims_token.clone().drop_guard();
        let (sim, middleware) = match deps.middleware {
            Some(middleware) => (None, middleware),
            None => {
                let sim = start_sims(&config.sim, &set.sims, &sims_token)?;
                (Some(sim.clone()), Arc::new(sim) as Arc<dyn Middleware>)
            }
        };
        let commander = match (set.commander, &store) {
            (true, Some(store)) => Some(Commander::bind(&config, middleware.clone(), store.clone()).await?),
            _ => None,
        };
        if let Some(commander) = &commander {
            if config.frontend.commander_url.is_none() {
                config.frontend.commander_url = Some(format!("http://{}", commander.local_addr()));
            }
        }
        let ingests = matches!(set.manager, Some(Role::Ingest | Role::All));
        let identity = match deps.identity {
            Some(identity) => Some(identity),
            None if ingests => {
                Some(Identity::from_config(&config.tls).map_err(|e| ManagerError::Ingest(e.into()))?)
            }
            None => None,
        };
        // An in-process producer trusts exactly the certificate its ingest
        // uses (unless a site certificate is configured).
        let trust = match (&identity, set.producers.is_empty()) {
            (_, true) => None,
            (Some(identity), false) if config.tls.cert.is_none() => {
                Some(ServerTrust::Roots(identity.chain.clone()))
            }
            _ => Some(ServerTrust::from_config(&config.tls).map_err(|e| RolesError::Trust(e.into()))?),
        };
        let manager = match (set.manager, store) {
            (Some(role), Some(store)) => Some(Manager::bind_with(&config, role, store, identity).await?),
            _ => None,
        };
        let ingest_addr = manager.as_ref().and_then(|m| m.ingest()).map(Ingest::local_addr);
        let mut producers = Vec::new();
        for (csc, all_indices) in &set.producers {
            let mut producer_config = config.clone();
            producer_config.producer.csc = csc.clone();
            producer_config.producer.all_indices = *all_indices;
            if let Some(addr) = ingest_addr {
                producer_config.producer.ingest = vec![addr.to_string()];
            }
            let trust = trust.clone().expect("set with producers");
            let producer = Producer::bind(&producer_config, middleware.clone(), trust).map_err(|error| {
                RolesError::Producer {
                    csc: csc.clone(),
                    error,
                }
            })?;
            producers.push(producer);
        }
        Ok(Roles {
            sim,
            sims_stop,
            producers,
            manager,
            commander,
            trust,
        })
    }

    /// What the process's metrics listener serves: one observer per role.
    /// A producer is observed only in a process of its own: the producers
    /// of `up` would repeat each other's metric families.
    pub fn observers(&self) -> Vec<Arc<dyn Observe>> {
        let mut observers: Vec<Arc<dyn Observe>> = Vec::new();
        if let [producer] = self.producers.as_slice() {
            if self.manager.is_none() {
                observers.push(producer.observer());
            }
        }
        if let Some(manager) = &self.manager {
            observers.extend(manager.observers());
        }
        if let Some(commander) = &self.commander {
            observers.push(commander.observer());
        }
        observers
    }

    /// The ingest, if bound: its address (`local_addr`) and counters.
    pub fn ingest(&self) -> Option<&Ingest> {
        self.manager.as_ref()?.ingest()
    }

    /// The frontend, if bound: its address, hub and counters.
    pub fn frontend(&self) -> Option<&Frontend> {
        self.manager.as_ref()?.frontend()
    }

    /// The commander, if bound.
    pub fn commander(&self) -> Option<&Commander> {
        self.commander.as_ref()
    }

    /// The producers, in the order of [`RoleSet::producers`].
    pub fn producers(&self) -> &[Producer] {
        &self.producers
    }

    /// The ingest certificates producers of this process trust, if it runs any.
    pub fn trust(&self) -> Option<&ServerTrust> {
        self.trust.as_ref()
    }

    /// Address of each bound endpoint, named by role (for banners and logs).
    pub fn addrs(&self) -> Vec<(&'static str, SocketAddr)> {
        let mut addrs = Vec::new();
        addrs.extend(self.ingest().map(|i| ("ingest", i.local_addr())));
        addrs.extend(self.frontend().map(|f| ("frontend", f.local_addr())));
        addrs.extend(self.commander().map(|c| ("commander", c.local_addr())));
        addrs
    }

    /// Serves every role until `shutdown`, or until one fails (returns an
    /// error, panics, or stops while nothing asked it to); either way stops
    /// them all in the pipeline's order and waits for them. The first
    /// failure is the error.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), RolesError> {
        /// When a role stops, in the pipeline's order.
        #[derive(Clone, Copy, PartialEq, Eq)]
        enum Stage {
            Producers,
            Servers,
        }
        let producers_stop = self.sims_stop.disarm();
        let servers_stop = CancellationToken::new();
        let mut tasks: JoinSet<Result<(), RolesError>> = JoinSet::new();
        let mut roles: HashMap<tokio::task::Id, (Stage, String)> = HashMap::new();
        for producer in self.producers {
            let csc = producer.csc().to_string();
            let role = format!("producer {csc}");
            let run = producer.run(producers_stop.clone());
            let task =
                tasks.spawn(async move { run.await.map_err(|error| RolesError::Producer { csc, error }) });
            roles.insert(task.id(), (Stage::Producers, role));
        }
        if let Some(manager) = self.manager {
            let run = manager.run(servers_stop.clone());
            let task = tasks.spawn(async move { Ok(run.await?) });
            roles.insert(task.id(), (Stage::Servers, "manager".to_string()));
        }
        if let Some(commander) = self.commander {
            let run = commander.run(servers_stop.clone());
            let task = tasks.spawn(async move { Ok(run.await?) });
            roles.insert(task.id(), (Stage::Servers, "commander".to_string()));
        }
        let mut producers_left = roles.values().filter(|(s, _)| *s == Stage::Producers).count();

        let mut failure: Option<RolesError> = None;
        let mut stopping = false;
        let mut servers_stopped = false;
        loop {
            // Producers are done (and the simulated CSCs with them): the
            // ingest may drain, then the frontend and the commander close.
            if stopping && producers_left == 0 && !servers_stopped {
                if let Some(sim) = &self.sim {
                    sim.stopped().await;
                }
                servers_stop.cancel();
                servers_stopped = true;
            }
            let joined = tokio::select! {
                _ = shutdown.cancelled(), if !stopping => {
                    stopping = true;
                    producers_stop.cancel();
                    continue;
                }
                joined = tasks.join_next_with_id() => joined,
            };
            let Some(joined) = joined else {
                if stopping {
                    break;
                }
                // Nothing but simulated CSCs (`meridian sim`): they run until shutdown.
                shutdown.cancelled().await;
                stopping = true;
                producers_stop.cancel();
                continue;
            };
            let id = match &joined {
                Ok((id, _)) => *id,
                Err(e) => e.id(),
            };
            let (stage, role) = roles
                .remove(&id)
                .unwrap_or((Stage::Servers, "a role".to_string()));
            if stage == Stage::Producers {
                producers_left -= 1;
            }
            let ran = match joined {
                Ok((_, Ok(()))) if !stopping => Err(RolesError::Stopped { role }),
                Ok((_, ran)) => ran,
                Err(_) => Err(RolesError::Panicked { role }),
            };
            if let Err(error) = ran {
                tracing::error!("{error}; stopping every role");
                failure.get_or_insert(error);
                if !stopping {
                    stopping = true;
                    producers_stop.cancel();
                }
            }
        }
        match failure {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }
}

/// The simulator `config` describes, with nothing running yet.
pub fn simulator(config: &SimConfig) -> SimMiddleware {
    let options = SimOptions {
        rate_multiplier: config.rate_multiplier,
        seed: config.seed,
        start_enabled: config.start_enabled,
        script_interval_s: config.script_interval_s,
    };
    SimMiddleware::with_options(options, config.interfaces.clone())
}

/// Starts a simulator for each of `cscs`, stopping at `shutdown`.
pub fn start_sims(
    config: &SimConfig,
    cscs: &[String],
    shutdown: &CancellationToken,
) -> Result<SimMiddleware, RolesError> {
    let sim = simulator(config);
    for csc in cscs {
        let failed = |reason: String| RolesError::Sim {
            csc: csc.clone(),
            reason,
        };
        let id = csc.parse().map_err(|e| failed(format!("{e}")))?;
        sim.start(&id, shutdown.clone())
            .map_err(|e| failed(e.to_string()))?;
    }
    Ok(sim)
}
