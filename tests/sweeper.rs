//! One Script sweeper at a time across every ingest manager, on a real
//! Redis: the sweeper lock is a Redis key with an expiry, held (and
//! renewed) by one ingest; while it lives the others do not take it, and
//! when it dies without a goodbye (a killed pod) Redis expires the lock and
//! another ingest takes over and sweeps. An operator would notice a failure
//! as Script state piling up after the sweeping ingest was killed, or as
//! ingests sweeping (and deleting) at the same time.

use meridian_manager::ingest::sweeper::{self, SweepConfig};
use meridian_proto::keys::{self, SWEEPER_LOCK};
use meridian_proto::stored::InstanceState;
use meridian_store::{redis::RedisStore, Store};
use meridian_testkit::redis_server::RedisServer;
use meridian_testkit::wait_for;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const INTERVAL: Duration = Duration::from_millis(200);

/// The current holder of the sweeper lock, read straight from Redis.
async fn holder(redis: &mut redis::aio::MultiplexedConnection) -> Option<String> {
    redis::cmd("GET")
        .arg(SWEEPER_LOCK)
        .query_async(redis)
        .await
        .unwrap()
}

/// Puts a Script state hash that was last updated long ago and never
/// ended (no TTL): the sweeper must remove it.
async fn stale_state(store: &dyn Store, index: u32) -> String {
    let key = keys::instance(&meridian_proto::CscId::new("Script", index).unwrap());
    let fields = InstanceState {
        updated: 0.0,
        state: Some(3),
    }
    .into_fields();
    store.hash_set(&key, &fields, None).await.unwrap();
    key
}

async fn swept(store: Arc<dyn Store>, key: String) -> Option<()> {
    (!store.exists(&key).await.unwrap()).then_some(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_sweeper_at_a_time_and_another_takes_over_when_it_dies() {
    let server = RedisServer::start().unwrap();
    let store: Arc<dyn Store> = Arc::new(RedisStore::connect(&server.url()).await.unwrap());
    let mut redis = redis::Client::open(server.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let config = SweepConfig {
        interval: INTERVAL,
        max_age: Duration::from_secs(60),
    };

    let first = tokio::spawn(sweeper::run(
        store.clone(),
        config.clone(),
        CancellationToken::new(),
    ));
    let first_holder = wait_for(
        "the first sweeper holds the lock",
        Duration::from_secs(20),
        || {
            let mut redis = redis.clone();
            async move { holder(&mut redis).await }
        },
    )
    .await
    .unwrap();
    let pttl: i64 = redis::cmd("PTTL")
        .arg(SWEEPER_LOCK)
        .query_async(&mut redis)
        .await
        .unwrap();
    assert!(
        pttl > 0 && pttl <= (INTERVAL * 3).as_millis() as i64,
        "the lock expires by itself, within three intervals: {pttl} ms left"
    );

    // A second ingest's sweeper starts; the first keeps the lock and sweeps.
    let second_stop = CancellationToken::new();
    let second = tokio::spawn(sweeper::run(store.clone(), config.clone(), second_stop.clone()));
    let key = stale_state(store.as_ref(), 7).await;
    wait_for("the holder swept", Duration::from_secs(20), || {
        swept(store.clone(), key.clone())
    })
    .await
    .unwrap();
    assert_eq!(
        holder(&mut redis).await.as_deref(),
        Some(first_holder.as_str()),
        "the second sweeper did not take a live holder's lock"
    );

    // The first dies without releasing its lock (a killed process): Redis
    // expires it and the second takes over.
    first.abort();
    let _ = first.await;
    let second_holder = wait_for(
        "the second sweeper took the lock",
        Duration::from_secs(20),
        || {
            let (mut redis, first_holder) = (redis.clone(), first_holder.clone());
            async move { holder(&mut redis).await.filter(|h| *h != first_holder) }
        },
    )
    .await
    .unwrap();
    let key = stale_state(store.as_ref(), 8).await;
    wait_for("the second sweeper swept", Duration::from_secs(20), || {
        swept(store.clone(), key.clone())
    })
    .await
    .unwrap();

    // A sweeper that stops cleanly releases the lock at once.
    second_stop.cancel();
    second.await.unwrap();
    assert_eq!(
        holder(&mut redis).await,
        None,
        "{second_holder} released the lock"
    );
}
