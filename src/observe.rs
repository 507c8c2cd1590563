//! The process's observability listener (`metrics.listen`,
//! `--metrics-listen`): `GET /metrics` with the page of every role this
//! process runs plus its own CPU and memory, `GET /healthz` (the process
//! answers) and `GET /readyz` (every role can work; 503 names the ones that
//! cannot). The same routes on every role, so a deployment scrapes and
//! probes every pod at one port.

use anyhow::Context;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use meridian_proto::metrics::{Exposition, Observe, CONTENT_TYPE};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

type Roles = Arc<Vec<Arc<dyn Observe>>>;

/// Binds `addr` (if any) and serves `roles` on it until `shutdown`.
pub async fn serve(
    addr: Option<SocketAddr>,
    roles: Vec<Arc<dyn Observe>>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let Some(addr) = addr else { return Ok(()) };
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} (metrics.listen)"))?;
    let local = listener.local_addr()?;
    let names: Vec<&str> = roles.iter().map(|r| r.role()).collect();
    tracing::info!(addr = %local, roles = ?names, "metrics listening (HTTP /metrics, /healthz, /readyz)");
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .with_state(Arc::new(roles));
    tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "metrics listener failed");
        }
    });
    Ok(())
}

async fn metrics(State(roles): State<Roles>) -> Response {
    let mut page = Exposition::new();
    for role in roles.iter() {
        role.metrics(&mut page);
    }
    process_metrics(&mut page);
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], page.finish()).into_response()
}

async fn readyz(State(roles): State<Roles>) -> Response {
    let mut problems = Vec::new();
    for role in roles.iter() {
        if let Err(why) = role.ready().await {
            problems.push(format!("{}: {why}", role.role()));
        }
    }
    match problems.is_empty() {
        true => (StatusCode::OK, "ready").into_response(),
        false => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {}", problems.join("; ")),
        )
            .into_response(),
    }
}

/// The process's resident memory and CPU time, under Prometheus's standard
/// names, from `/proc/self` (Linux); left out where it cannot be read.
fn process_metrics(page: &mut Exposition) {
    // Linux's page size and USER_HZ on the architectures we run on; reading
    // them with sysconf would need libc for no gain.
    const PAGE: u64 = 4096;
    const TICKS_PER_S: f64 = 100.0;
    if let Some(rss_pages) = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
    {
        page.gauge(
            "process_resident_memory_bytes",
            "Resident memory of this process.",
            (rss_pages * PAGE) as f64,
        );
    }
    if let Some(ticks) = std::fs::read_to_string("/proc/self/stat").ok().and_then(|s| {
        // Fields after the command name (which may hold spaces) in parentheses.
        let rest = s.rsplit_once(')')?.1;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let utime: u64 = fields.get(11)?.parse().ok()?;
        let stime: u64 = fields.get(12)?.parse().ok()?;
        Some(utime + stime)
    }) {
        page.counter_f64(
            "process_cpu_seconds_total",
            "User and system CPU time of this process.",
            ticks as f64 / TICKS_PER_S,
        );
    }
}
