//! The ingest and the frontend under test, each bound on port 0 on its own
//! runtime so its CPU is its threads'; and `--pin`, which puts them and
//! redis-server on one core and the browsers on another.

use super::{BARE_THREADS, FRONT_THREADS};
use crate::measure::NamedRuntime;
use anyhow::Context;
use meridian_config::Config;
use meridian_manager::frontend::{Frontend, HubStats};
use meridian_manager::ingest::Ingest;
use meridian_quic::tls::{Identity, ServerTrust};
use meridian_store::redis::RedisStore;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// Pins the frontend's threads and redis-server to the first core and
/// leaves the last to the load generator (started with `taskset`).
pub(super) fn pin(cores: usize, redis: u32) -> String {
    if cores < 2 {
        return "--pin: one core only; nothing pinned".into();
    }
    let mut targets = vec![redis];
    if let Ok(tasks) = std::fs::read_dir("/proc/self/task") {
        for task in tasks.flatten() {
            let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
            if comm.starts_with(FRONT_THREADS) || comm.starts_with(BARE_THREADS) {
                if let Some(tid) = task.file_name().to_str().and_then(|t| t.parse().ok()) {
                    targets.push(tid);
                }
            }
        }
    }
    let all_ok = targets.iter().all(|tid| {
        std::process::Command::new("taskset")
            .args(["-p", "-c", "0", &tid.to_string()])
            .stdout(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    });
    format!(
        "--pin: frontend and bare-server threads and redis-server on core 0{}, load generator on core {}",
        if all_ok { "" } else { " (taskset failed for some)" },
        cores - 1
    )
}

pub(super) async fn start_ingest(
    rt: &NamedRuntime,
    config: &Config,
    stop: CancellationToken,
) -> anyhow::Result<(SocketAddr, ServerTrust)> {
    let config = config.clone();
    let ingest = rt
        .handle()
        .spawn(async move {
            let store = RedisStore::connect(&config.store.redis_url)
                .await
                .context("connecting the ingest to the bench Redis")?;
            let identity = Identity::self_signed("localhost")?;
            let trust = ServerTrust::Roots(identity.chain.clone());
            let ingest = Ingest::bind(&config, Arc::new(store), identity)?;
            anyhow::Ok((ingest, trust))
        })
        .await??;
    let (ingest, trust) = ingest;
    let addr = ingest.local_addr();
    rt.handle().spawn(async move {
        if let Err(e) = ingest.run(stop).await {
            eprintln!("bench fanout: the ingest failed: {e}");
        }
    });
    Ok((addr, trust))
}

pub(super) async fn start_frontend(
    rt: &NamedRuntime,
    config: &Config,
    stop: CancellationToken,
) -> anyhow::Result<(SocketAddr, Arc<HubStats>)> {
    let config = config.clone();
    // Bound on its own runtime: the hub's reader and the Redis connections run there.
    let frontend = rt
        .handle()
        .spawn(async move {
            let store = RedisStore::connect(&config.store.redis_url)
                .await
                .context("connecting the frontend to the bench Redis")?;
            anyhow::Ok(Frontend::bind(&config, Arc::new(store)).await?)
        })
        .await??;
    let (addr, stats) = (frontend.local_addr(), frontend.stats());
    rt.handle().spawn(async move {
        if let Err(e) = frontend.run(stop).await {
            eprintln!("bench fanout: the frontend failed: {e}");
        }
    });
    Ok((addr, stats))
}
