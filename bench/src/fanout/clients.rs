//! The bench's side of the browsers process (`meridian-bench
//! fanout-clients`): starting it with its flags, and reading its `stat` and
//! `lags` lines.

use crate::binaries;
use crate::load_generator::{field, LoadGenerator};
use crate::measure::Percentiles;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Counters of the load generator, as it reports them (`stat …`).
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct ClientStat {
    pub(super) samples: u64,
    pub(super) frames: u64,
    pub(super) bytes: u64,
    pub(super) closed: u64,
}

/// Starts the load generator (`meridian-bench fanout-clients`). Its line protocol: it prints `ready
/// <connected> <failed>`, then answers `stat`, `begin` (start recording
/// lags) and `end` (stop) with `stat <samples> <frames> <bytes> <closed>
/// <errors>`, `end` also with `lags …`; `quit` ends it.
pub(super) fn spawn_clients(
    url: &str,
    clients: usize,
    lag_clients: usize,
    subscribe: &[String],
    pin: bool,
    cores: usize,
) -> anyhow::Result<LoadGenerator> {
    let exe = binaries::bench()?;
    let mut command = if pin && cores >= 2 {
        let mut c = std::process::Command::new("taskset");
        c.args(["-c", &(cores - 1).to_string()]).arg(exe);
        c
    } else {
        std::process::Command::new(exe)
    };
    command
        .args(["fanout-clients", "--url", url])
        .args(["--clients", &clients.to_string()])
        .args(["--lag-clients", &lag_clients.to_string()]);
    if !subscribe.is_empty() {
        command.arg("--subscribe").arg(subscribe.join(","));
    }
    if std::env::var_os("RUST_LOG").is_none() {
        command.env("RUST_LOG", "warn");
    }
    LoadGenerator::spawn(command, "meridian-bench fanout-clients")
}

impl ClientStat {
    /// Sends `command` (`stat`, `begin`, `end`) and reads its `stat` line.
    pub(super) async fn ask(
        clients: &mut LoadGenerator,
        command: &str,
        shutdown: &CancellationToken,
    ) -> anyhow::Result<ClientStat> {
        let parts = clients.ask(command, Duration::from_secs(30), shutdown).await?;
        Ok(ClientStat {
            samples: field(&parts, 1)?,
            frames: field(&parts, 2)?,
            bytes: field(&parts, 3)?,
            closed: field(&parts, 4)?,
        })
    }
}

/// `lags <count>` then four series (total, three hops) of `p50 p99 max` in µs.
pub(super) fn parse_lags(parts: &[String]) -> anyhow::Result<[Percentiles; 4]> {
    let count: usize = field(parts, 1)?;
    let mut out = [Percentiles::default(); 4];
    for (k, p) in out.iter_mut().enumerate() {
        let us = |j: usize| field::<u64>(parts, 2 + k * 3 + j).map(Duration::from_micros);
        *p = Percentiles {
            count,
            p50: us(0)?,
            p99: us(1)?,
            max: us(2)?,
        };
    }
    Ok(out)
}
