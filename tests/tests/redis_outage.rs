//! Redis stops for 5 s in the middle of a stream of events and comes back:
//! no event the ingest acknowledged is lost, none is written twice, every
//! event published reaches Redis in order, and while Redis is down the
//! producer holds events in its bounded spool instead of growing memory.
//! An operator would notice a failure as gaps or repeats in a CSC's event
//! log after a Redis restart.

use meridian_manager::store::redis::RedisStore;
use meridian_producer::ProducerStats;
use meridian_tests::manual_csc::{stored_event_values, ManualCsc};
use meridian_tests::redis_server::RedisServer;
use meridian_tests::system::{test_config, System};
use meridian_tests::wait_for;
use std::sync::Arc;
use std::time::Duration;

const EVENTS: i64 = 10_000;
const SPOOL: usize = 50_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_for_five_seconds_loses_and_repeats_nothing() {
    let mut redis = RedisServer::start_persistent().unwrap();
    let store = Arc::new(RedisStore::connect(&redis.url()).await.unwrap());
    let mut system = System::start_with(store.clone(), test_config()).await.unwrap();
    let csc = ManualCsc::new("Test:3", 1024);
    let stats = system.spawn_producer(csc.clone(), |c| {
        c.producer.csc = "Test:3".into();
        c.producer.spool_events = SPOOL;
    });

    // Publish at about 1000 events/s in the background for the whole test.
    let publisher = {
        let csc = csc.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(10));
            for n in 1..=EVENTS {
                if n % 10 == 1 {
                    tick.tick().await;
                }
                csc.publish(n).await;
            }
        })
    };
    let acked = |stats: Arc<ProducerStats>, at_least: u64| async move {
        (ProducerStats::get(&stats.events_acked_seq) >= at_least).then_some(())
    };
    wait_for("1000 events stored", Duration::from_secs(30), || {
        acked(stats.clone(), 1000)
    })
    .await
    .unwrap();

    redis.stop();
    let acked_before_outage = ProducerStats::get(&stats.events_acked_seq);
    // The outage itself: 5 s with Redis down, events still published.
    let mut max_spooled = 0;
    let outage = tokio::time::Instant::now() + Duration::from_secs(5);
    while tokio::time::Instant::now() < outage {
        max_spooled = max_spooled.max(ProducerStats::get(&stats.spooled));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    redis.restart().unwrap();

    publisher.await.unwrap();
    wait_for("every event stored", Duration::from_secs(60), || {
        acked(stats.clone(), EVENTS as u64)
    })
    .await
    .unwrap();
    let stored = stored_event_values(store.as_ref(), "Test:3").await;
    let expected: Vec<i64> = (1..=EVENTS).collect();
    assert_eq!(
        stored.len(),
        expected.len(),
        "events stored once each (acked before the outage: {acked_before_outage})"
    );
    assert_eq!(stored, expected, "in order, none missing, none repeated");
    assert_eq!(ProducerStats::get(&stats.events_dropped), 0);
    assert!(max_spooled > 0, "events waited in the spool while Redis was down");
    assert!(
        max_spooled <= SPOOL as u64,
        "the spool stayed within its bound: {max_spooled}"
    );
    println!("outage: up to {max_spooled} events spooled; {acked_before_outage} acknowledged before it");
    system.stop().await;
}
