//! What a fan-out run measured: per run, the delivered samples, lag per
//! hop, the CPU of every party and the memory per connection.

use super::args::{BARE_THREADS, FRONT_THREADS, INGEST_THREADS, PRODUCER_THREADS};
use crate::measure::{core_percent, process_cpu, threads_cpu, Percentiles};
use meridian_proto::browser::FrameFormat;
use std::time::Duration;

/// Everything `meridian-bench fanout` measured, for its tables and `meridian-bench all`'s report.
pub struct FanoutResults {
    /// Per client count, the frontend run then the bare broadcast's.
    pub runs: Vec<Run>,
    pub memory: Option<(usize, Setup)>,
    pub topics: usize,
    pub rate_hz: f64,
    pub tick: Duration,
    /// How data frames were encoded (both servers alike).
    pub format: FrameFormat,
}

/// Which server a run measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Server {
    Frontend,
    Bare,
}

impl Server {
    /// The prefix of the threads that run it.
    fn threads(self) -> &'static str {
        match self {
            Server::Frontend => FRONT_THREADS,
            Server::Bare => BARE_THREADS,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Server::Frontend => "frontend",
            Server::Bare => "bare broadcast",
        }
    }
}

/// The figures of one run.
pub struct Run {
    pub clients: usize,
    pub server: Server,
    pub setup: Setup,
    pub wall: Duration,
    /// Samples per second each client would get if nothing were conflated.
    pub offered_per_client: f64,
    pub delivered: u64,
    pub frames: u64,
    pub bytes: u64,
    /// Clients the server closed (or whose connection failed) during the window.
    pub closed: u64,
    /// Producer → client, producer → ingest, ingest → frontend read, frontend read → client.
    pub lag: [Percentiles; 4],
    pub cpu: Cpu,
    /// RSS growth of this process per client at the end of the window.
    pub rss_loaded: f64,
    /// Frontend runs: the hub's counters over the window (entries read, inbox deliveries, events lost).
    pub hub: Option<(u64, u64, u64)>,
    /// The frontend was still busy with the previous run's clients when this run started.
    pub skewed: bool,
}

impl Run {
    pub fn rate(&self) -> f64 {
        self.delivered as f64 / self.wall.as_secs_f64()
    }

    pub fn fraction(&self) -> f64 {
        self.rate() / (self.offered_per_client * self.clients as f64)
    }

    pub fn cores(&self) -> f64 {
        core_percent(self.cpu.server, self.wall) / 100.0
    }
}

/// CPU time of every party at one instant.
#[derive(Clone, Copy, Default)]
pub struct Cpu {
    pub server: Duration,
    pub ingest: Duration,
    pub producers: Duration,
    pub redis: Duration,
    pub clients: Duration,
}

impl Cpu {
    pub(super) fn take(server: Server, redis: u32, clients: u32) -> Cpu {
        Cpu {
            server: threads_cpu(server.threads()),
            ingest: threads_cpu(INGEST_THREADS),
            producers: threads_cpu(PRODUCER_THREADS),
            redis: process_cpu(redis),
            clients: process_cpu(clients),
        }
    }

    pub(super) fn since(&self, e: &Cpu) -> Cpu {
        Cpu {
            server: self.server.saturating_sub(e.server),
            ingest: self.ingest.saturating_sub(e.ingest),
            producers: self.producers.saturating_sub(e.producers),
            redis: self.redis.saturating_sub(e.redis),
            clients: self.clients.saturating_sub(e.clients),
        }
    }
}

/// How long connecting and subscribing took, and what the idle clients cost.
pub struct Setup {
    pub connect: Duration,
    pub subscribed_in: Duration,
    /// RSS growth of this process per client: connected, then subscribed (no data flowing).
    pub rss_connected: f64,
    pub rss_subscribed: f64,
}
