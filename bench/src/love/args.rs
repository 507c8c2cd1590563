//! The flags of `meridian-bench love`, the servers it compares, and what
//! every run shares (its own module, so that the parts need not import
//! their parent).

use super::messages::Topic;
use crate::redis_tools::RedisServer;
use anyhow::bail;
use clap::Args;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// The browsers' token and the producers' password on both servers.
pub(super) const TOKEN: &str = "bench-token";
pub(super) const PASSWORD: &str = "bench-pass";

/// Data flows this long before the measurement window opens.
pub(super) const WARMUP: Duration = Duration::from_secs(2);

/// Longest wait for a server to accept connections.
pub(super) const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Longest wait for the load generator to answer a command.
pub(super) const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

/// Longest wait for one client's connection, and for its subscriptions.
pub(super) const CLIENT_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Args, Debug, Clone)]
pub struct LoveArgs {
    /// Client counts to measure, one run per server each.
    #[arg(long, value_delimiter = ',', default_value = "100,1000", value_name = "N")]
    pub(super) clients: Vec<usize>,
    /// Telemetry topics every client subscribes to (MTM1M3's 50 Hz topics over instances 1, 2, …).
    #[arg(long, default_value_t = 10, value_name = "T")]
    pub(super) topics: usize,
    /// Messages per second of each topic. The default stays under one per
    /// frontend tick, so Meridian conflates nothing and counts compare like for like.
    #[arg(long, default_value_t = 10.0, value_name = "HZ")]
    pub(super) rate: f64,
    /// Seconds of each measurement window (after a 2 s warm-up).
    #[arg(long, default_value_t = 10.0, value_name = "S")]
    pub(super) duration: f64,
    /// Clients that time every message for the lag figures (the others only count).
    #[arg(long, default_value_t = 20, value_name = "K")]
    pub(super) lag_clients: usize,
    /// Worker threads of Meridian's frontend (TOKIO_WORKER_THREADS); daphne runs one Python process.
    #[arg(long, default_value_t = 1, value_name = "THREADS")]
    pub(super) frontend_threads: usize,
    /// channels_redis capacity of the relay (LOVE's chart default 100).
    #[arg(long, default_value_t = 100)]
    pub(super) capacity: u32,
    /// channels_redis expiry of the relay in seconds (LOVE's summit value 5).
    #[arg(long, default_value_t = 5)]
    pub(super) expiry: u32,
    /// Servers to run, in order.
    #[arg(long, value_delimiter = ',', default_value = "django-channels,meridian")]
    pub(super) servers: Vec<String>,
    /// The relay's directory (with `setup`, `requirements.txt`, `lovebench/`).
    #[arg(long, value_name = "DIR", default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/love"))]
    pub(super) love_dir: PathBuf,
    /// Also write the rows as JSON here (read by `all`).
    #[arg(long, value_name = "PATH")]
    pub(super) json: Option<PathBuf>,
    /// The `meridian` binary whose frontend is measured (default: the one next to meridian-bench).
    #[arg(long, value_name = "PATH")]
    pub(super) meridian: Option<PathBuf>,
}

/// Which server a run measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Server {
    Django,
    Meridian,
}

impl Server {
    pub(super) fn parse(name: &str) -> anyhow::Result<Server> {
        match name {
            "django-channels" => Ok(Server::Django),
            "meridian" => Ok(Server::Meridian),
            _ => bail!("--servers: {name:?} is not one of django-channels, meridian"),
        }
    }

    pub(super) fn name(self) -> &'static str {
        match self {
            Server::Django => "django-channels",
            Server::Meridian => "meridian",
        }
    }
}

/// Everything a run reads but does not own.
pub(super) struct RunContext<'a> {
    pub(super) args: &'a LoveArgs,
    pub(super) redis: &'a RedisServer,
    pub(super) venv: &'a Path,
    pub(super) topics: &'a Arc<Vec<Topic>>,
    pub(super) label: String,
}
