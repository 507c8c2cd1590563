//! Command-line flags of every subcommand, and how they override the TOML
//! configuration (`--config FILE`): flags win, then the file, then defaults.

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};
use meridian::roles::{Deps, RoleSet, Roles};
use meridian_config::{Config, LogConfig, LogFormat, StoreBackend};
use meridian_manager::Role;
use std::net::SocketAddr;
use std::path::PathBuf;
use tokio_util::sync::CancellationToken;

#[derive(Parser, Debug)]
#[command(
    name = "meridian",
    version,
    about = "Telemetry bridge for observatory control rooms."
)]
pub struct Cli {
    /// TOML configuration file (see config/examples/); flags override its values.
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Log format: `text` for people, `json` for log collectors (overrides log.format).
    #[arg(long, global = true, value_enum)]
    log_format: Option<LogFormatArg>,
    /// Serve /metrics, /healthz and /readyz of this process's roles at this
    /// TCP address, e.g. 0.0.0.0:9090 (overrides metrics.listen).
    #[arg(long, global = true, value_name = "ADDR", env = "MERIDIAN_METRICS_LISTEN")]
    metrics_listen: Option<SocketAddr>,
    /// A development run: a standalone frontend or commander may start with
    /// the public `dev-token` or without commander tokens (sets
    /// `frontend.dev_tokens` and `commander.dev_tokens`). `up` always is one.
    #[arg(long, global = true)]
    dev: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run everything in one process: simulators, producers, ingest, frontend and commander.
    Up(UpArgs),
    /// Run the producer of one CSC (simulated in this process until a middleware adapter exists).
    Producer(ProducerArgs),
    /// Run a manager: the ingest role, the frontend role, or both.
    Manager(ManagerArgs),
    /// Run the commander HTTP API (commands go to CSCs simulated in this process; audit log in the store).
    Commander(CommanderArgs),
    /// Run simulated CSCs and log what they publish each second.
    Sim(SimArgs),
}

#[derive(ValueEnum, Clone, Copy, Debug)]
enum LogFormatArg {
    Text,
    Json,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
enum RoleArg {
    Ingest,
    Frontend,
    All,
}

#[derive(Args, Debug)]
struct UpArgs {
    /// Use this Redis (redis://host:port/) instead of the embedded in-memory store.
    #[arg(long, value_name = "URL")]
    redis: Option<String>,
    /// Address every endpoint binds to (ports come from the config).
    #[arg(long, default_value = "127.0.0.1", value_name = "IP")]
    host: std::net::IpAddr,
    /// CSC instances to simulate and produce, e.g. `--csc Test:1 --csc Test:2` (overrides sim.cscs).
    #[arg(long, value_name = "CSC:INDEX")]
    csc: Vec<String>,
    /// Read CSC interfaces from this directory of the site's XML definitions (overrides sim.interfaces).
    #[arg(long, value_name = "DIR")]
    interfaces: Option<PathBuf>,
}

#[derive(Args, Debug)]
struct ProducerArgs {
    /// The CSC this producer serves, e.g. `Test:1` (overrides producer.csc).
    #[arg(long, value_name = "CSC:INDEX")]
    csc: Option<String>,
    /// Ingest manager address host:port; repeat for fallbacks (overrides producer.ingest).
    #[arg(long, value_name = "HOST:PORT")]
    ingest: Vec<String>,
    /// Sampling rate in Hz of telemetry topics that declare no rate (overrides producer.telemetry_rate_hz).
    #[arg(long, value_name = "HZ")]
    rate: Option<f64>,
}

#[derive(Args, Debug)]
struct ManagerArgs {
    /// Which roles to run.
    #[arg(long, value_enum, default_value = "all")]
    role: RoleArg,
    /// Use this Redis (sets store.backend = "redis" and store.redis_url).
    #[arg(long, value_name = "URL")]
    redis: Option<String>,
    /// QUIC address producers connect to (overrides ingest.listen).
    #[arg(long, value_name = "ADDR")]
    ingest_listen: Option<SocketAddr>,
    /// HTTP/WebSocket address browsers connect to (overrides frontend.listen).
    #[arg(long, value_name = "ADDR")]
    frontend_listen: Option<SocketAddr>,
}

#[derive(Args, Debug)]
struct CommanderArgs {
    /// HTTP address of the commander (overrides commander.listen).
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// Keep the audit log in this Redis (sets store.backend = "redis" and store.redis_url).
    #[arg(long, value_name = "URL")]
    redis: Option<String>,
    /// CSC instances to simulate and accept commands for (overrides sim.cscs).
    #[arg(long, value_name = "CSC:INDEX")]
    csc: Vec<String>,
    /// Validate commands against this directory of the site's XML definitions (overrides sim.interfaces).
    #[arg(long, value_name = "DIR")]
    interfaces: Option<PathBuf>,
}

#[derive(Args, Debug)]
struct SimArgs {
    /// CSC instances to simulate (overrides sim.cscs).
    #[arg(long, value_name = "CSC:INDEX")]
    csc: Vec<String>,
    /// Print the CSCs, topics, rates and load that would be simulated, then exit.
    #[arg(long)]
    list: bool,
    /// Multiply every telemetry rate, for stress (overrides sim.rate_multiplier).
    #[arg(long, value_name = "X")]
    rate_multiplier: Option<f64>,
    /// Seed of the simulated values (overrides sim.seed).
    #[arg(long, value_name = "N")]
    seed: Option<u64>,
    /// Read CSC interfaces from this directory of XML definitions (overrides sim.interfaces).
    #[arg(long, value_name = "DIR")]
    interfaces: Option<PathBuf>,
}

impl Cli {
    /// The configuration file (or defaults) with this command's flags applied, validated.
    pub fn config(&self) -> anyhow::Result<Config> {
        let mut config = match &self.config {
            Some(path) => Config::load(path)?,
            None => Config::default(),
        };
        if let Some(format) = self.log_format {
            config.log.format = match format {
                LogFormatArg::Text => LogFormat::Text,
                LogFormatArg::Json => LogFormat::Json,
            };
        }
        if let Some(addr) = self.metrics_listen {
            config.metrics.listen = Some(addr);
        }
        if self.dev {
            config.frontend.dev_tokens = true;
            config.commander.dev_tokens = true;
        }
        let use_redis = |config: &mut Config, url: &Option<String>| {
            if let Some(url) = url {
                config.store.backend = StoreBackend::Redis;
                config.store.redis_url = url.clone();
            }
        };
        match &self.command {
            Command::Up(a) => {
                if config.log.filter == LogConfig::default().filter {
                    config.log.filter = crate::up::QUIET_FILTER.to_string();
                }
                use_redis(&mut config, &a.redis);
                if !a.csc.is_empty() {
                    config.sim.cscs = a.csc.clone();
                }
                if let Some(dir) = &a.interfaces {
                    config.sim.interfaces = Some(dir.clone());
                }
                config.ingest.listen.set_ip(a.host);
                config.frontend.listen.set_ip(a.host);
                config.commander.listen.set_ip(a.host);
            }
            Command::Producer(a) => {
                if let Some(csc) = &a.csc {
                    config.producer.csc = csc.clone();
                }
                if !a.ingest.is_empty() {
                    config.producer.ingest = a.ingest.clone();
                }
                if let Some(rate) = a.rate {
                    config.producer.telemetry_rate_hz = rate;
                }
            }
            Command::Manager(a) => {
                use_redis(&mut config, &a.redis);
                if let Some(addr) = a.ingest_listen {
                    config.ingest.listen = addr;
                }
                if let Some(addr) = a.frontend_listen {
                    config.frontend.listen = addr;
                }
            }
            Command::Commander(a) => {
                use_redis(&mut config, &a.redis);
                if let Some(addr) = a.listen {
                    config.commander.listen = addr;
                }
                if let Some(dir) = &a.interfaces {
                    config.sim.interfaces = Some(dir.clone());
                }
                if !a.csc.is_empty() {
                    config.sim.cscs = a.csc.clone();
                }
            }
            Command::Sim(a) => {
                if !a.csc.is_empty() {
                    config.sim.cscs = a.csc.clone();
                }
                if let Some(x) = a.rate_multiplier {
                    config.sim.rate_multiplier = x;
                }
                if let Some(seed) = a.seed {
                    config.sim.seed = seed;
                }
                if let Some(dir) = &a.interfaces {
                    config.sim.interfaces = Some(dir.clone());
                }
            }
        }
        config.validate()?;
        // A standalone frontend or commander serves beyond this machine:
        // the public development token would let anyone in.
        let refused = match &self.command {
            Command::Manager(a) if !matches!(a.role, RoleArg::Ingest) => config.frontend.refuse_dev_token(),
            Command::Commander(_) => config.commander.refuse_dev_token(),
            _ => None,
        };
        if let Some(reason) = refused {
            anyhow::bail!("{reason}");
        }
        Ok(config)
    }

    pub async fn run(self, config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
        let set = match self.command {
            Command::Up(_) => return crate::up::run(config, shutdown).await,
            Command::Sim(a) if a.list => return crate::sim_list::print(&config.sim),
            Command::Manager(a) => RoleSet::manager(match a.role {
                RoleArg::Ingest => Role::Ingest,
                RoleArg::Frontend => Role::Frontend,
                RoleArg::All => Role::All,
            }),
            Command::Producer(_) => RoleSet::producer(&config),
            Command::Commander(_) => {
                if config.store.backend == StoreBackend::Memory {
                    tracing::warn!("the audit log is in memory and lost at exit: set store.backend = \"redis\" or --redis");
                }
                RoleSet::commander(&config)
            }
            Command::Sim(_) => RoleSet::sim(&config),
        };
        let roles = Roles::bind(&config, &set, Deps::default()).await?;
        if set.manager.is_none() && !set.commander && set.producers.is_empty() {
            // `meridian sim`: nothing else would tell that it runs.
            eprintln!("simulating {}; Ctrl-C to stop", config.sim.cscs.join(", "));
        }
        crate::observe::serve(config.metrics.listen, roles.observers(), shutdown.clone()).await?;
        Ok(roles.run(shutdown).await?)
    }
}

/// Logs to stderr as text or JSON; `RUST_LOG` overrides `log.filter`.
pub fn init_tracing(log: &LogConfig) -> anyhow::Result<()> {
    use tracing_subscriber::EnvFilter;
    let filter = match std::env::var("RUST_LOG") {
        Ok(env) if !env.is_empty() => {
            EnvFilter::try_new(&env).with_context(|| format!("RUST_LOG={env:?}"))?
        }
        _ => EnvFilter::try_new(&log.filter).with_context(|| format!("log.filter = {:?}", log.filter))?,
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match log.format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
    Ok(())
}

/// A token cancelled by the first SIGINT or SIGTERM; a second one exits at once.
pub fn shutdown_on_signals() -> CancellationToken {
    let token = CancellationToken::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        let mut signals = 0;
        loop {
            wait_for_signal().await;
            signals += 1;
            if signals == 1 {
                tracing::info!("shutting down (signal again to quit at once)");
                cancel.cancel();
            } else {
                std::process::exit(130);
            }
        }
    });
    token
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let term = signal(SignalKind::terminate());
    match term {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
