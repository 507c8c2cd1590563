//! `[metrics]`: the process's observability listener, the same for every
//! role, so a deployment scrapes and probes every pod at one port whatever
//! role it runs.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

/// `[metrics]`: read by every role but the simulator.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// TCP address of an HTTP listener serving `GET /metrics` (Prometheus
    /// text of every role this process runs), `GET /healthz` (the process
    /// is up) and `GET /readyz` (every role can work: the ingest reaches
    /// its store, a producer is connected to an ingest, a frontend reads
    /// its store, a commander reaches its middleware and store),
    /// `"ip:port"`. Port 0 picks a free port (tests). No default: off,
    /// since several roles often share one host in development; deployments
    /// set `"0.0.0.0:9090"` on every role (or `--metrics-listen`, or the
    /// `MERIDIAN_METRICS_LISTEN` environment variable). The frontend and
    /// the commander also serve these routes on their own port.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,
}
