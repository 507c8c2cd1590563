//! The ingest and the frontend under test, each bound on port 0 on its own
//! runtime so its CPU is its threads'; and `--pin`, which puts them and
//! redis-server on one core and the browsers on another.
//!
//! Each is a [`Manager`] of one role (the one wiring every manager process
//! uses), not one `--role all` manager: that would run both roles' tasks on
//! one runtime, and their CPU could no longer be told apart.

use super::args::{BARE_THREADS, FRONT_THREADS};
use crate::measure::NamedRuntime;
use anyhow::Context;
use meridian_config::Config;
use meridian_manager::frontend::HubStats;
use meridian_manager::{Manager, Role};
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
    let manager = rt
        .handle()
        .spawn(async move {
            let store = RedisStore::connect(&config.store.redis_url)
                .await
                .context("connecting the ingest to the bench Redis")?;
            let identity = Identity::self_signed("localhost")?;
            let trust = ServerTrust::Roots(identity.chain.clone());
            let manager = Manager::bind_with(&config, Role::Ingest, Arc::new(store), Some(identity)).await?;
            anyhow::Ok((manager, trust))
        })
        .await??;
    let (manager, trust) = manager;
    let addr = manager
        .ingest()
        .context("an ingest manager binds an ingest")?
        .local_addr();
    rt.handle().spawn(async move {
        if let Err(e) = manager.run(stop).await {
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
    let manager = rt
        .handle()
        .spawn(async move {
            let store = RedisStore::connect(&config.store.redis_url)
                .await
                .context("connecting the frontend to the bench Redis")?;
            anyhow::Ok(Manager::bind_with(&config, Role::Frontend, Arc::new(store), None).await?)
        })
        .await??;
    let frontend = manager
        .frontend()
        .context("a frontend manager binds a frontend")?;
    let (addr, stats) = (frontend.local_addr(), frontend.stats());
    rt.handle().spawn(async move {
        if let Err(e) = manager.run(stop).await {
            eprintln!("bench fanout: the frontend failed: {e}");
        }
    });
    Ok((addr, stats))
}
