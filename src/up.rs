//! `meridian up`: the whole system in one process, for a first look and for
//! demos. Simulated CSCs feed their producers, which talk QUIC to the
//! ingest role; the frontend role serves browsers; the commander relays
//! commands to the same simulators and audits them in the same store. The
//! store is in-memory unless `--redis` is given. Without
//! `commander.tokens`, the browser token (default `dev-token`) becomes a
//! development token that may command every simulated CSC, on the
//! commander and as a frontend command token; the banner prints it.
//!
//! The roles are wired by [`meridian::roles`]: shutdown follows the
//! pipeline (producers flush and stop, then ingest drains into the store,
//! then frontend and commander close), and a role that fails stops them all
//! and makes `up` exit with an error naming it.

use meridian::roles::{Deps, RoleSet, Roles};
use meridian_config::commander::CommanderToken;
use meridian_config::{Config, StoreBackend};
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// `up`'s log filter unless `RUST_LOG` or `log.filter` says otherwise: state
/// changes of the whole, warnings and errors, but not the routine line of
/// every producer, simulated CSC and browser that connects (`RUST_LOG=info`
/// shows them), so the banner stays readable.
pub const QUIET_FILTER: &str = "info,meridian_producer=warn,meridian_sim=warn,\
meridian_manager::ingest::connection=warn,meridian_manager::frontend::client=warn,\
meridian_manager::love::endpoint=warn";

/// How long the banner waits for every producer's first connection, so that
/// it is printed after the start-up lines rather than buried under them.
const BANNER_WAIT: Duration = Duration::from_secs(5);

pub async fn run(mut config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    let dev_token = add_dev_command_token(&mut config);
    let roles = Roles::bind(&config, &RoleSet::up(&config), Deps::default()).await?;
    let bound = "up binds every role";
    let ingest_addr = roles.ingest().expect(bound).local_addr();
    let web = roles.frontend().expect(bound).local_addr();
    let commander_addr = roles.commander().expect(bound).local_addr();
    let producers: Vec<_> = roles.producers().iter().map(|p| p.stats()).collect();
    crate::observe::serve(config.metrics.listen, roles.observers(), shutdown.clone()).await?;
    let running = tokio::spawn(roles.run(shutdown));
    // The banner comes last: once every producer has connected (a few
    // milliseconds), or BANNER_WAIT, or at once if a role already failed.
    let waited = tokio::time::Instant::now() + BANNER_WAIT;
    while producers
        .iter()
        .any(|s| s.connections.load(Ordering::Relaxed) == 0)
        && !running.is_finished()
        && tokio::time::Instant::now() < waited
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    if running.is_finished() {
        running.await??;
        return Ok(());
    }
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

    running.await??;
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
