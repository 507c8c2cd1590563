//! The harness of the system tests in `tests/`: real servers on free ports,
//! the roles in one process or in processes of their own, and their clients.
//!
//! Layout:
//! - [`redis_server`]: starts a real `redis-server` on a free port (never 6379) and stops it on drop.
//! - [`redis_cluster`]: a real Redis Cluster (masters and replicas) on free ports, killed on drop; kills, failovers, reshards.
//! - [`system`]: the whole pipeline in one process over real sockets (QUIC, WebSocket, Redis).
//! - [`browser`]: a WebSocket client of the native protocol.
//! - [`love`]: a browser and a producer of the replaced system (LOVE) on its compatibility endpoint.
//! - [`manual_csc`]: a CSC whose events the test publishes, to count them end to end.
//! - [`http`]: a small HTTP/1.1 client over a real socket (the commander's API).
//! - [`process`]: roles of the `meridian` binary in processes of their own: start, scrape, kill, restart.
//! - [`udp_proxy`]: a UDP relay a test can cut, to take a producer's network away.

pub mod browser;
pub mod http;
pub mod love;
pub mod manual_csc;
pub mod process;
pub mod redis_cluster;
pub mod redis_server;
pub mod system;
pub mod udp_proxy;

/// Waits until `check` returns `Some`, polling every 10 ms, up to `deadline`.
/// For conditions with no event to await (e.g. "the store holds N entries").
pub async fn wait_for<T, F, Fut>(what: &str, deadline: std::time::Duration, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let end = tokio::time::Instant::now() + deadline;
    loop {
        if let Some(v) = check().await {
            return Ok(v);
        }
        if tokio::time::Instant::now() > end {
            anyhow::bail!("timed out after {deadline:?} waiting for {what}");
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}
