//! `[store]`: where telemetry and events live between ingest and the
//! browsers.

use serde::{Deserialize, Serialize};

use crate::validate::Problems;

/// Which store implementation a process uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreBackend {
    /// In-process streams. Only shared by roles running in the same
    /// process (`meridian up`), lost at exit: for development and tests.
    #[default]
    Memory,
    /// Redis streams at `store.redis_url`: shared by separate ingest and
    /// frontend processes, survives their restarts. Production on one host.
    Redis,
    /// Redis Cluster, found through the seed nodes `store.cluster_nodes`:
    /// when one Redis is not enough. Every key of one CSC instance carries
    /// the hash tag `{CSC:salindex}`, so each CSC lives on one shard.
    Cluster,
}

/// `[store]`: read by ingest (writes) and frontend (reads).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// `"memory"` or `"redis"`. Default `"memory"`, so `meridian up` runs
    /// with nothing else installed; separate ingest and frontend processes
    /// must both say `"redis"` to see the same data.
    pub backend: StoreBackend,

    /// Redis connection URL, `redis://` or `rediss://` (TLS), optionally
    /// with `user:password@` and a `/db` number. Default
    /// `"redis://127.0.0.1:6379/"`. Read only when `backend = "redis"`,
    /// but checked always, so a typo is caught before the switch.
    pub redis_url: String,

    /// Seed nodes of a Redis Cluster, each a `redis://` or `rediss://` URL
    /// (optionally with `user:password@`; database 0 only, the only one a
    /// cluster has), 1 to 64 of them. Default none. Any one reachable
    /// master or replica is enough to discover the others; list several so
    /// a start does not depend on one node. Required when
    /// `backend = "cluster"`, read only then, checked always.
    pub cluster_nodes: Vec<String>,

    /// Replicas that must hold a write before it counts as stored (Redis
    /// `WAIT`), 0 to 5. Default 0. With 1, ingest acknowledges a batch only
    /// once a replica of its shard has it, so a master that crashes and is
    /// replaced by that replica loses nothing acknowledged (the producer
    /// resends what was not acknowledged; events are deduplicated). Costs
    /// one replication round trip per CSC per write (what that does to the
    /// write rate: `docs/performance.md`, "Redis Cluster store"); a shard with fewer live replicas than this holds its producers back
    /// until one returns.
    /// Read only when `backend = "cluster"`.
    pub cluster_replica_acks: usize,

    /// Entries kept per telemetry stream (`XADD MAXLEN ~`), 1 to
    /// 10000000. Default 10000: at 50 Hz that is over three minutes of
    /// history for a browser that reconnects, at a bounded memory cost.
    /// Approximate trimming lets Redis keep slightly more.
    pub telemetry_maxlen: usize,

    /// Entries kept per event stream (`XADD MAXLEN ~`), 1 to 10000000.
    /// Default 100000: events are rare and each one matters to an
    /// operator reading the log, so keep far more of them than telemetry.
    pub event_maxlen: usize,
}

impl StoreConfig {
    const MAXLEN: std::ops::RangeInclusive<usize> = 1..=10_000_000;

    /// Most seed nodes accepted: a seed list only has to reach one node.
    pub const MAX_CLUSTER_NODES: usize = 64;

    /// Most replicas a write may wait for; more than a shard has would block
    /// every write.
    pub const MAX_REPLICA_ACKS: usize = 5;

    pub(crate) fn check(&self, problems: &mut Problems) {
        if !(self.redis_url.starts_with("redis://") || self.redis_url.starts_with("rediss://")) {
            problems.push(
                "store.redis_url",
                "a URL starting with redis:// or rediss://",
                format!("{:?}", self.redis_url),
            );
        }
        for (i, url) in self.cluster_nodes.iter().enumerate() {
            let key = format!("store.cluster_nodes[{i}]");
            match url
                .strip_prefix("redis://")
                .or_else(|| url.strip_prefix("rediss://"))
            {
                None => problems.push(
                    key,
                    "a URL starting with redis:// or rediss://",
                    format!("{url:?}"),
                ),
                Some(rest) => {
                    let db = rest
                        .split_once('/')
                        .map(|(_, db)| db.split('?').next().unwrap_or(""));
                    if db.is_some_and(|db| !db.is_empty() && db != "0") {
                        problems.push(
                            key,
                            "a URL without a database number, or with /0 (a cluster has only database 0)",
                            format!("{url:?}"),
                        );
                    }
                }
            }
        }
        if self.cluster_nodes.len() > Self::MAX_CLUSTER_NODES {
            problems.push(
                "store.cluster_nodes",
                format!("at most {} seed URLs", Self::MAX_CLUSTER_NODES),
                format!("{} URLs", self.cluster_nodes.len()),
            );
        }
        if self.backend == StoreBackend::Cluster && self.cluster_nodes.is_empty() {
            problems.push(
                "store.cluster_nodes",
                "at least one seed URL when store.backend = \"cluster\"",
                "an empty list",
            );
        }
        problems.in_range(
            "store.cluster_replica_acks",
            self.cluster_replica_acks,
            0..=Self::MAX_REPLICA_ACKS,
        );
        problems.in_range("store.telemetry_maxlen", self.telemetry_maxlen, Self::MAXLEN);
        problems.in_range("store.event_maxlen", self.event_maxlen, Self::MAXLEN);
    }
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            backend: StoreBackend::Memory,
            redis_url: "redis://127.0.0.1:6379/".to_string(),
            cluster_nodes: Vec::new(),
            cluster_replica_acks: 0,
            telemetry_maxlen: 10_000,
            event_maxlen: 100_000,
        }
    }
}
