//! Spreading browsers over frontend managers.
//!
//! WebSockets live for hours, so a manager added by an autoscaler gets no
//! load unless existing connections move. Every `frontend.load_interval_ms`
//! each manager publishes its load in the store under
//! [`keys::load`] (a hash that expires after three intervals,
//! so a dead manager drops out by itself), reads the others', and, when it
//! holds more than `frontend.rebalance_factor` times the average, asks its
//! excess browsers to reconnect after a random delay (so they do not arrive
//! at once). A browser recovers by stream id, so moving loses nothing.
//!
//! On shutdown the same hint goes to every browser ([`Balancer::drain`]).

use super::hub::Hub;
use meridian_config::FrontendConfig;
use meridian_proto::keys;
use meridian_store::Store;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio_util::sync::CancellationToken;

/// Intervals a manager waits after moving browsers before it judges its share again.
const REBALANCE_COOLDOWN: u32 = 3;

/// Most other managers read per round (a bound on the scan).
const MAX_MANAGERS: usize = 1000;

/// A name for this manager that is unique among its peers.
pub fn server_id(addr: SocketAddr) -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "frontend".to_string());
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!("{host}-{}-{}-{nanos:x}", addr.port(), std::process::id())
}

/// A small generator for delays; quality is not a concern, spreading is.
fn spread(seed: u64, max: Duration) -> Duration {
    let mut x = seed ^ 0x9E37_79B9_7F4A_7C15;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    let ms = max.as_millis().max(1) as u64;
    Duration::from_millis(x % ms)
}

#[derive(Clone)]
pub struct Balancer {
    store: Arc<dyn Store>,
    hub: Hub,
    server: String,
    interval: Duration,
    factor: f64,
}

impl Balancer {
    pub fn new(store: Arc<dyn Store>, hub: Hub, config: &FrontendConfig, server: String) -> Balancer {
        Balancer {
            store,
            hub,
            server,
            interval: Duration::from_millis(config.load_interval_ms),
            factor: config.rebalance_factor,
        }
    }

    fn key(&self) -> String {
        keys::load(&self.server)
    }

    /// Publishes the load and rebalances every interval until `shutdown`,
    /// then removes this manager's load entry.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut ticker = tokio::time::interval(self.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut cooldown = 0u32;
        let mut last = (
            Instant::now(),
            self.hub.stats().deliveries.load(Ordering::Relaxed),
            cpu_seconds(),
        );
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = ticker.tick() => {}
            }
            let now = (
                Instant::now(),
                self.hub.stats().deliveries.load(Ordering::Relaxed),
                cpu_seconds(),
            );
            let secs = now.0.duration_since(last.0).as_secs_f64().max(1e-3);
            let rate = (now.1 - last.1) as f64 / secs;
            let cpu = (now.2 - last.2) / secs;
            last = now;
            match self.round(rate, cpu, cooldown == 0).await {
                // Peers publish their new load within an interval: let them,
                // so one move is not counted twice (no oscillation).
                Ok(true) => cooldown = REBALANCE_COOLDOWN,
                Ok(false) => cooldown = cooldown.saturating_sub(1),
                Err(e) => tracing::debug!(error = %e, "load publishing failed; retrying next interval"),
            }
        }
        let _ = self.store.delete(&[self.key()]).await;
    }

    /// Publishes this manager's load and, if it holds more than its share,
    /// asks the excess browsers to move; true if it asked any.
    async fn round(&self, rate: f64, cpu: f64, rebalance: bool) -> Result<bool, meridian_store::StoreError> {
        let clients = self.hub.clients();
        let fields = vec![
            ("clients".to_string(), clients.to_string()),
            ("deliveries_per_s".to_string(), format!("{rate:.0}")),
            ("cpu".to_string(), format!("{cpu:.3}")),
        ];
        self.store
            .hash_set(&self.key(), &fields, Some(self.interval * 3))
            .await?;
        let mut total = 0usize;
        let mut managers = 0usize;
        for key in self
            .store
            .keys_with_prefix(keys::LOAD_PREFIX, MAX_MANAGERS)
            .await?
        {
            let load = self.store.hash_get(&key).await?;
            if let Some(n) = load
                .iter()
                .find(|(f, _)| f == "clients")
                .and_then(|(_, v)| v.parse::<usize>().ok())
            {
                total += n;
                managers += 1;
            }
        }
        if managers < 2 || !rebalance {
            return Ok(false);
        }
        let average = total as f64 / managers as f64;
        if (clients as f64) <= self.factor * average {
            return Ok(false);
        }
        let excess = clients - average.ceil() as usize;
        tracing::info!(
            clients,
            average,
            excess,
            managers,
            "above this manager's share: asking browsers to reconnect"
        );
        for (id, inbox) in self.hub.inboxes().into_iter().take(excess) {
            let after = spread(id.wrapping_mul(31) ^ nanos(), self.interval);
            inbox.leave("rebalancing: reconnect to any frontend", after);
        }
        Ok(true)
    }

    /// Tells every browser to reconnect elsewhere within `grace` (each after
    /// a random part of it); returns how many were told.
    pub async fn drain(&self, grace: Duration) -> usize {
        let inboxes = self.hub.inboxes();
        tracing::info!(
            clients = inboxes.len(),
            ?grace,
            "draining: asking every browser to reconnect elsewhere"
        );
        let _ = self.store.delete(&[self.key()]).await;
        for (id, inbox) in &inboxes {
            inbox.leave(
                "server shutting down: reconnect to another frontend",
                spread(*id ^ nanos(), grace / 2),
            );
        }
        inboxes.len()
    }
}

fn nanos() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// CPU seconds this process has used (user + system), from `/proc/self/stat`; 0 where unavailable.
pub fn cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    // Fields after the command name (which may contain spaces, closed by ')').
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
        return 0.0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of the whole line: 11 and 12 after ')' and the state.
    (ticks(11) + ticks(12)) / 100.0
}
