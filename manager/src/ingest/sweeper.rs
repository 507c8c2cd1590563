//! The sweeper: removes per-instance state of aggregated CSCs (Scripts)
//! whose end was never seen — a producer or ingest died before the Script's
//! last state arrived, so no TTL was set.
//!
//! Every ingest manager runs one, but only one sweeps at a time: each
//! round it takes (or renews) the lock [`keys::SWEEPER_LOCK`] with an expiry of three
//! intervals; if its holder dies, the lock expires and another ingest takes
//! over. What a sweep reads is bounded by [`MAX_KEYS_PER_SWEEP`].

use meridian_config::IngestConfig;
use meridian_proto::stored::InstanceState;
use meridian_proto::{keys, unix_now, Csc, AGGREGATED_CSCS};
use meridian_store::Store;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio_util::sync::CancellationToken;

/// Instance keys examined per sweep at most; the rest wait for the next one.
pub const MAX_KEYS_PER_SWEEP: usize = 10_000;

/// When and what the sweeper sweeps.
#[derive(Debug, Clone)]
pub struct SweepConfig {
    pub interval: Duration,
    /// State not updated for this long is removed.
    pub max_age: Duration,
}

impl From<&IngestConfig> for SweepConfig {
    fn from(c: &IngestConfig) -> Self {
        SweepConfig {
            interval: Duration::from_secs(c.sweep_interval_s),
            max_age: Duration::from_secs(c.script_max_age_s),
        }
    }
}

/// A random holder name for this ingest manager's lock.
fn holder() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    format!("ingest-{}-{:016x}", std::process::id(), h.finish())
}

/// Sweeps every `interval` while this ingest holds the lock, until `shutdown`.
pub async fn run(store: Arc<dyn Store>, config: SweepConfig, shutdown: CancellationToken) {
    let me = holder();
    let mut holding = false;
    let mut tick = tokio::time::interval(config.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tick.tick() => {}
        }
        match store.lock(keys::SWEEPER_LOCK, &me, config.interval * 3).await {
            Ok(true) => {
                if !holding {
                    tracing::info!(holder = %me, "this ingest is now the sweeper");
                    holding = true;
                }
                match sweep(store.as_ref(), config.max_age).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(removed = n, "swept per-Script state whose end was never seen"),
                    Err(e) => tracing::warn!(error = %e, "sweep failed; retrying next interval"),
                }
            }
            Ok(false) => holding = false,
            Err(e) => tracing::debug!(error = %e, "sweeper lock unavailable"),
        }
    }
    if holding {
        let _ = store.unlock(keys::SWEEPER_LOCK, &me).await;
    }
}

/// Removes instance state without a TTL that was not updated for `max_age`.
/// Returns how many keys were removed.
pub async fn sweep(store: &dyn Store, max_age: Duration) -> Result<usize, meridian_store::StoreError> {
    let now = unix_now(SystemTime::now());
    let mut stale = Vec::new();
    for name in AGGREGATED_CSCS {
        let Ok(csc) = Csc::new(*name) else { continue };
        for key in store
            .keys_with_prefix(&keys::instance_prefix(&csc), MAX_KEYS_PER_SWEEP)
            .await?
        {
            if store.ttl(&key).await?.is_some() {
                continue; // ended: it expires by itself
            }
            let fields = store.hash_get(&key).await?;
            let updated = InstanceState::from_fields(&fields).ok().map(|s| s.updated);
            if updated.is_none_or(|u| now - u > max_age.as_secs_f64()) {
                stale.push(key);
            }
        }
    }
    if stale.is_empty() {
        return Ok(0);
    }
    store.delete(&stale).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use meridian_proto::CscId;
    use meridian_store::memory::MemoryStore;

    async fn wait_until(what: &str, mut check: impl AsyncFnMut() -> bool) {
        let end = tokio::time::Instant::now() + Duration::from_secs(20);
        while !check().await {
            assert!(tokio::time::Instant::now() < end, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn state(updated: f64) -> Vec<(String, String)> {
        InstanceState {
            updated,
            state: Some(3),
        }
        .into_fields()
    }

    #[tokio::test]
    async fn only_stale_state_without_a_ttl_is_swept() {
        let store = MemoryStore::new();
        let now = unix_now(SystemTime::now());
        let key = |i: u32| keys::instance(&CscId::new("Script", i).unwrap());
        store.hash_set(&key(1), &state(now - 7200.0), None).await.unwrap(); // stale, never ended
        store.hash_set(&key(2), &state(now), None).await.unwrap(); // running now
        store
            .hash_set(&key(3), &state(now - 7200.0), Some(Duration::from_secs(60)))
            .await
            .unwrap(); // ended
        assert_eq!(sweep(&store, Duration::from_secs(3600)).await.unwrap(), 1);
        assert!(!store.exists(&key(1)).await.unwrap());
        assert!(store.exists(&key(2)).await.unwrap());
        assert!(store.exists(&key(3)).await.unwrap());
    }

    #[tokio::test]
    async fn one_sweeper_at_a_time_and_another_takes_over_when_it_dies() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let config = SweepConfig {
            interval: Duration::from_millis(200),
            max_age: Duration::from_secs(60),
        };
        let first = tokio::spawn(run(store.clone(), config.clone(), CancellationToken::new()));
        wait_until("the first sweeper holds the lock", async || {
            !store
                .lock(keys::SWEEPER_LOCK, "probe", Duration::from_millis(1))
                .await
                .unwrap()
        })
        .await;
        let second_stop = CancellationToken::new();
        let second = tokio::spawn(run(store.clone(), config.clone(), second_stop.clone()));
        // The first dies without releasing its lock (a killed process).
        first.abort();
        // A stale Script state appears; only a live sweeper can remove it.
        let stale = keys::instance(&CscId::new("Script", 7).unwrap());
        store.hash_set(&stale, &state(0.0), None).await.unwrap();
        wait_until("the second sweeper took over and swept", async || {
            !store.exists(&stale).await.unwrap()
        })
        .await;
        second_stop.cancel();
        second.await.unwrap();
        // A sweeper that stops cleanly releases the lock.
        assert!(store
            .lock(keys::SWEEPER_LOCK, "probe", Duration::from_secs(1))
            .await
            .unwrap());
    }
}
