//! The whole pipeline in this process, every hop over real sockets:
//! simulated CSCs → producers → QUIC → ingest → store → frontend → WebSocket.
//! Ingest and frontend are bound and run by `meridian::roles`, as in the binary.

use anyhow::Context;
use meridian::roles::{Deps, RoleSet, Roles, RolesError};
use meridian_config::Config;
use meridian_manager::frontend::hub::Hub;
use meridian_manager::frontend::HubStats;
use meridian_manager::ingest::IngestStats;
use meridian_manager::Role;
use meridian_producer::ProducerStats;
use meridian_quic::tls::{Identity, ServerTrust};
use meridian_sim::{Middleware, SimMiddleware, SimOptions};
use meridian_store::Store;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Token the test frontends accept.
pub const TOKEN: &str = "test-token";

/// A running pipeline; dropped or [`System::stop`]ped at the end of a test.
pub struct System {
    pub store: Arc<dyn Store>,
    pub ingest_addr: SocketAddr,
    /// The ingest's gauges (what it buffers).
    pub ingest_stats: Arc<IngestStats>,
    pub frontend_addr: SocketAddr,
    /// The certificate producers must trust to reach this ingest.
    pub trust: ServerTrust,
    pub producers: Vec<Arc<ProducerStats>>,
    /// The frontend's counters: entries read from the store, deliveries, inbox sizes.
    pub frontend_stats: Arc<HubStats>,
    /// The frontend's hub (which streams it reads).
    pub hub: Hub,
    stop: CancellationToken,
    tasks: TaskTracker,
    /// The ingest and frontend serving, and how they ended.
    roles: Option<tokio::task::JoinHandle<Result<(), RolesError>>>,
}

/// A configuration for tests: loopback, free ports, a test token.
pub fn test_config() -> Config {
    let mut config = Config::default();
    config.ingest.listen = ([127, 0, 0, 1], 0).into();
    config.frontend.listen = ([127, 0, 0, 1], 0).into();
    config.commander.listen = ([127, 0, 0, 1], 0).into();
    config.frontend.tokens = vec![TOKEN.to_string()];
    config.frontend.read_block_ms = 50;
    config
}

impl System {
    /// Starts ingest and frontend on `store`, and a simulator plus producer
    /// for each of `cscs` publishing telemetry at `rate_hz`.
    pub async fn start(store: Arc<dyn Store>, cscs: &[&str], rate_hz: f64) -> anyhow::Result<System> {
        let mut system = Self::start_with(store, test_config()).await?;
        for csc in cscs {
            system.start_producer(csc, rate_hz)?;
        }
        Ok(system)
    }

    /// Starts ingest and frontend on `store` with `config` (e.g. from
    /// [`test_config`] with changes), and no producer yet.
    pub async fn start_with(store: Arc<dyn Store>, config: Config) -> anyhow::Result<System> {
        let identity = Identity::self_signed(&config.tls.server_name)?;
        let trust = ServerTrust::Roots(identity.chain.clone());
        let deps = Deps {
            store: Some(store.clone()),
            identity: Some(identity),
            middleware: None,
        };
        let roles = Roles::bind(&config, &RoleSet::manager(Role::All), deps).await?;
        let (ingest, frontend) = (
            roles.ingest().context("ingest")?,
            roles.frontend().context("frontend")?,
        );
        let (ingest_addr, frontend_addr) = (ingest.local_addr(), frontend.local_addr());
        let (frontend_stats, hub) = (frontend.stats(), frontend.hub());
        let ingest_stats = ingest.stats();
        let stop = CancellationToken::new();
        let tasks = TaskTracker::new();
        let roles = Some(tasks.spawn(roles.run(stop.clone())));
        Ok(System {
            store,
            ingest_addr,
            ingest_stats,
            frontend_addr,
            trust,
            producers: Vec::new(),
            frontend_stats,
            hub,
            stop,
            tasks,
            roles,
        })
    }

    /// Starts a simulated CSC publishing telemetry at `rate_hz` times each
    /// topic's nominal rate (the Test CSC's is 1 Hz), and its producer
    /// sampling at the rates the simulator declares (`rate_hz` for a topic
    /// that declares none).
    pub fn start_producer(&mut self, csc: &str, rate_hz: f64) -> anyhow::Result<Arc<ProducerStats>> {
        let sim = SimMiddleware::new();
        let options = SimOptions {
            rate_multiplier: rate_hz,
            ..SimOptions::default()
        };
        sim.start_with(&csc.parse().context("csc")?, options, self.stop.clone())?;
        Ok(self.spawn_producer(Arc::new(sim), |config| {
            config.producer.csc = csc.to_string();
            config.producer.telemetry_rate_hz = rate_hz;
        }))
    }

    /// The parameters of a ScriptQueue's `add` command: a standard Script
    /// at `path` with the YAML `config`, added last, at the default log level.
    pub fn add_script(path: &str, config: &str) -> meridian_proto::Fields {
        use meridian_proto::Value;
        vec![
            ("isStandard".into(), Value::Bool(true)),
            ("path".into(), Value::Str(path.into())),
            ("config".into(), Value::Str(config.into())),
            ("location".into(), Value::Int(2)),
            ("locationSalIndex".into(), Value::Int(0)),
            ("logLevel".into(), Value::Int(20)),
            ("blockSize".into(), Value::Int(0)),
            ("startBlock".into(), Value::Bool(false)),
        ]
    }

    /// Starts the simulated ScriptQueue `queue` (`Name:index`, enabled) on
    /// `sim`, a producer for it and one for every Script it runs (all
    /// indices), and waits until both are connected. The Scripts'
    /// producer's counters.
    pub async fn start_script_queue(
        &mut self,
        sim: &SimMiddleware,
        queue: &str,
    ) -> anyhow::Result<Arc<ProducerStats>> {
        let options = SimOptions {
            start_enabled: true,
            ..SimOptions::default()
        };
        sim.start_with(&queue.parse().context("queue")?, options, self.stop.clone())?;
        let queue_producer = self.spawn_producer(Arc::new(sim.clone()), |c| c.producer.csc = queue.into());
        let scripts = self.spawn_producer(Arc::new(sim.clone()), |c| {
            c.producer.csc = "Script".into();
            c.producer.all_indices = true;
        });
        crate::wait_for(
            "both producers connected",
            std::time::Duration::from_secs(20),
            || {
                let (a, b) = (queue_producer.clone(), scripts.clone());
                async move {
                    (ProducerStats::get(&a.connections) > 0 && ProducerStats::get(&b.connections) > 0)
                        .then_some(())
                }
            },
        )
        .await?;
        Ok(scripts)
    }

    /// Starts a producer on `middleware` for this system's ingest;
    /// `configure` sets its CSC and anything else.
    pub fn spawn_producer(
        &mut self,
        middleware: Arc<dyn Middleware>,
        configure: impl FnOnce(&mut Config),
    ) -> Arc<ProducerStats> {
        let mut config = test_config();
        config.producer.ingest = vec![self.ingest_addr.to_string()];
        configure(&mut config);
        let stats = Arc::new(ProducerStats::default());
        let (trust, stop, s) = (self.trust.clone(), self.stop.clone(), stats.clone());
        self.tasks.spawn(async move {
            if let Err(e) = meridian_producer::run(&config, middleware, trust, s, stop).await {
                tracing::error!("producer failed: {e}");
            }
        });
        self.producers.push(stats.clone());
        stats
    }

    /// A token that stops with this system (for simulators a test starts).
    pub fn stop_token(&self) -> CancellationToken {
        self.stop.clone()
    }

    /// The WebSocket URL of the native protocol, with the test token.
    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws?token={TOKEN}", self.frontend_addr)
    }

    /// Stops every task and waits for them.
    pub async fn stop(mut self) {
        if let Err(e) = self.shutdown().await {
            tracing::error!("{e}");
        }
    }

    /// Stops every task like [`System::stop`], and says how the ingest
    /// and the frontend ended (e.g. a drain past its deadline is an error).
    pub async fn shutdown(&mut self) -> Result<(), RolesError> {
        self.stop.cancel();
        self.tasks.close();
        self.tasks.wait().await;
        match self.roles.take() {
            Some(roles) => roles
                .await
                .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic())),
            None => Ok(()),
        }
    }
}

impl Drop for System {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}
