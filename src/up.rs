//! `meridian up`: the whole system in one process, for a first look and for
//! demos. Simulated CSCs feed their producers, which talk QUIC to the
//! ingest role; the frontend role serves browsers; the commander relays
//! commands to the same simulators and audits them in the same store. The
//! store is in-memory unless `--redis` is given. Without
//! `commander.tokens`, the browser token (default `dev-token`) becomes a
//! development token that may command every simulated CSC, on the
//! commander and as a frontend command token; the banner prints it.
//!
//! Shutdown follows the pipeline: producers flush and stop, then ingest
//! drains into the store, then frontend and commander close.

use meridian_config::commander::CommanderToken;
use meridian_config::{Config, StoreBackend};
use meridian_manager::{frontend::Frontend, ingest::Ingest, love::ScriptQueueDeriver, tls::Identity};
use meridian_producer::{ProducerStats, ServerTrust};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub async fn run(mut config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    let dev_token = add_dev_command_token(&mut config);
    let store = meridian_store::open(&config.store).await?;
    // An in-process producer trusts exactly the certificate its ingest uses.
    let identity = Identity::from_config(&config.tls)?;
    let trust = if config.tls.cert.is_some() {
        ServerTrust::from_config(&config.tls)?
    } else {
        ServerTrust::Roots(identity.chain.clone())
    };
    let ingest = Ingest::bind(&config, store.clone(), identity)?;
    let script_queue = ScriptQueueDeriver::new(&config, store.clone());
    let producers_stop = shutdown.child_token();
    let sim = crate::cli::start_sims(&config.sim, &config.sim.cscs, &producers_stop)?;
    let middleware = Arc::new(sim.clone());
    let commander = meridian_commander::Commander::bind(&config, middleware.clone(), store.clone()).await?;
    // The dashboard's command panel sends to this process's commander.
    if config.frontend.commander_url.is_none() {
        config.frontend.commander_url = Some(format!("http://{}", commander.local_addr()));
    }
    let frontend = Frontend::bind(&config, store.clone()).await?;

    let ingest_addr = ingest.local_addr();
    let web = frontend.local_addr();
    let token = config.frontend.tokens.first().cloned().unwrap_or_default();
    let store_name = match config.store.backend {
        StoreBackend::Memory => "embedded in-memory store".to_string(),
        StoreBackend::Redis => format!("Redis at {}", config.store.redis_url),
        StoreBackend::Cluster => format!("Redis Cluster via {}", config.store.cluster_nodes.join(", ")),
    };
    println!(
        "Meridian is up ({store_name}), simulating {}",
        config.sim.cscs.join(", ")
    );
    println!("  browser:    http://{web}/?token={token}");
    println!("  websocket:  ws://{web}/ws?token={token}");
    let commander_addr = commander.local_addr();
    println!("  commander:  http://{commander_addr}/cmd/");
    match &dev_token {
        Some(token) => println!(
            "  commands:   send `Authorization: Bearer {token}` (API: http://{commander_addr}/openapi.json)"
        ),
        None => {
            println!("  commands:   tokens from commander.tokens (API: http://{commander_addr}/openapi.json)")
        }
    }
    println!("  ingest:     quic://{ingest_addr} (producers)");
    println!("Press Ctrl-C to stop.");

    let observers: Vec<Arc<dyn meridian_proto::metrics::Observe>> =
        vec![ingest.observer(), frontend.observer(), commander.observer()];
    crate::observe::serve(config.metrics.listen, observers, shutdown.clone()).await?;

    let tasks = TaskTracker::new();
    let mut producers = Vec::new();
    // One producer per simulated CSC, and one for every Script the
    // ScriptQueues start (all indices, one aggregated set of streams).
    let mut cscs: Vec<(String, bool)> = config.sim.cscs.iter().map(|c| (c.clone(), false)).collect();
    if config.sim.cscs.iter().any(|c| c.starts_with("ScriptQueue")) {
        cscs.push(("Script".to_string(), true));
    }
    for (csc, all_indices) in cscs {
        let mut producer_config = config.clone();
        producer_config.producer.csc = csc;
        producer_config.producer.all_indices = all_indices;
        producer_config.producer.ingest = vec![ingest_addr.to_string()];
        let (middleware, trust, stop) = (middleware.clone(), trust.clone(), producers_stop.clone());
        producers.push(tasks.spawn(async move {
            let stats = Arc::new(ProducerStats::default());
            meridian_producer::run(&producer_config, middleware, trust, stats, stop).await
        }));
    }
    let ingest_stop = CancellationToken::new();
    let edge_stop = CancellationToken::new();
    let ingest_task = tasks.spawn(ingest.run(ingest_stop.clone()));
    let script_queue_task = script_queue.map(|d| tasks.spawn(d.run(ingest_stop.clone())));
    let frontend_task = tasks.spawn(frontend.run(edge_stop.clone()));
    let commander_task = tasks.spawn(commander.run(edge_stop.clone()));
    tasks.close();

    shutdown.cancelled().await;
    producers_stop.cancel();
    for p in producers {
        p.await??;
    }
    sim.stopped().await;
    ingest_stop.cancel();
    ingest_task.await??;
    if let Some(task) = script_queue_task {
        task.await?;
    }
    edge_stop.cancel();
    frontend_task.await??;
    commander_task.await??;
    println!("Meridian stopped.");
    Ok(())
}

/// Without `commander.tokens`, makes the browser token a development token
/// that may send every command, on the commander and (as a command token)
/// on the frontend, so the printed URLs can both watch and command. `up`
/// commands only simulated CSCs. Returns the token, if it added one.
fn add_dev_command_token(config: &mut Config) -> Option<String> {
    if !config.commander.tokens.is_empty() {
        return None;
    }
    let token = config.frontend.tokens.first()?.clone();
    config.commander.tokens.push(CommanderToken {
        name: "dev".to_string(),
        token: token.clone(),
        cscs: vec!["*".to_string()],
        commands: vec!["*".to_string()],
        rate_limit_per_s: None,
        rate_limit_burst: None,
    });
    if !config.frontend.command_tokens.contains(&token) {
        config.frontend.command_tokens.push(token.clone());
    }
    Some(token)
}
