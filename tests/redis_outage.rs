//! Redis stops for 5 s in the middle of a stream of events and comes back:
//! no event the ingest acknowledged is lost, none is written twice, every
//! event published reaches Redis in order, and memory stays bounded while
//! Redis is down. An operator would notice a failure as gaps or repeats in
//! a CSC's event log after a Redis restart, or as an ingest or producer
//! whose memory grows with the length of an outage.
//!
//! The outage brings about 5,000 events, each in a frame of its own
//! (`producer.batch_max = 1`), which is more than either side may hold:
//! - the ingest holds at most [`ACKS_IN_FLIGHT`] unstored batches per
//!   producer stream ([`IngestStats::batches_held`]; this producer has two
//!   streams, only the event one busy), then stops reading and lets QUIC
//!   flow control hold the producer back; an ingest that kept reading would
//!   hold thousands;
//! - the producer holds at most [`SPOOL`] events (sent or not, until
//!   acknowledged); with `spool_on_full = "block"` it then stops reading its
//!   CSC, which waits, so nothing is dropped either.

use meridian::roles::RolesError;
use meridian_manager::ingest::{IngestError, IngestStats, ACKS_IN_FLIGHT};
use meridian_manager::ManagerError;
use meridian_producer::ProducerStats;
use meridian_proto::OnFull;
use meridian_store::redis::RedisStore;
use meridian_testkit::manual_csc::{stored_event_values, ManualCsc};
use meridian_testkit::redis_server::RedisServer;
use meridian_testkit::system::{test_config, System};
use meridian_testkit::wait_for;
use std::sync::Arc;
use std::time::Duration;

const EVENTS: i64 = 10_000;
/// The producer's spool, in events: less than the outage brings.
const SPOOL: usize = 2_000;
/// Streams of one producer connection: events and telemetry.
const STREAMS: usize = 2;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_for_five_seconds_loses_and_repeats_nothing() {
    let mut redis = RedisServer::start_persistent().unwrap();
    let store = Arc::new(RedisStore::connect(&redis.url()).await.unwrap());
    let mut system = System::start_with(store.clone(), test_config()).await.unwrap();
    let csc = ManualCsc::new("Test:3", 1024);
    let stats = system.spawn_producer(csc.clone(), |c| {
        c.producer.csc = "Test:3".into();
        c.producer.spool_events = SPOOL;
        c.producer.spool_on_full = OnFull::Block;
        c.producer.batch_max = 1;
        c.producer.batch_delay_ms = 0;
    });
    let ingest = system.ingest_stats.clone();

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
    // The outage itself: 5 s with Redis down, events still published; what
    // each side holds is sampled meanwhile.
    let (mut max_spooled, mut max_held) = (0, 0);
    let outage = tokio::time::Instant::now() + Duration::from_secs(5);
    while tokio::time::Instant::now() < outage {
        max_spooled = max_spooled.max(ProducerStats::get(&stats.spooled));
        max_held = max_held.max(IngestStats::get(&ingest.batches_held));
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
    assert_eq!(
        ProducerStats::get(&stats.events_dropped),
        0,
        "a full spool blocks, it does not drop"
    );

    // The load exceeded both bounds, and neither side went past its own.
    assert_eq!(
        max_spooled, SPOOL as u64,
        "the outage filled the producer's spool, and it held no more"
    );
    assert_eq!(
        max_held, ACKS_IN_FLIGHT as u64,
        "the ingest's event stream reached its bound of unstored batches, and stopped reading"
    );
    let held_max = IngestStats::get(&ingest.batches_held_max);
    assert!(
        held_max <= (STREAMS * ACKS_IN_FLIGHT) as u64,
        "the ingest never held more than {ACKS_IN_FLIGHT} batches per stream: {held_max}"
    );
    println!(
        "outage: {max_spooled} events spooled (bound {SPOOL}), {max_held} batches held by the ingest \
         (at most {held_max} in the whole run, bound {}); {acked_before_outage} acknowledged before it",
        STREAMS * ACKS_IN_FLIGHT
    );
    system.stop().await;
}

/// Redis goes away for good while the ingest holds batches for it, and the
/// ingest is told to stop (SIGTERM, Ctrl-C): it gives up at its drain
/// deadline (`ingest.drain_timeout_ms`) and says how many samples it
/// received but could not store, instead of waiting for Redis forever. An
/// operator would notice the failure as an ingest that never exits while
/// Redis is down, until a service manager kills it without a word.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ingest_stopped_while_redis_stays_down_gives_up_at_its_drain_deadline() {
    let mut redis = RedisServer::start().unwrap();
    let store = Arc::new(RedisStore::connect(&redis.url()).await.unwrap());
    let mut config = test_config();
    config.ingest.drain_timeout_ms = 1000;
    let mut system = System::start_with(store, config).await.unwrap();
    let csc = ManualCsc::new("Test:4", 1024);
    let stats = system.spawn_producer(csc.clone(), |c| {
        c.producer.csc = "Test:4".into();
        c.producer.batch_max = 1;
        c.producer.batch_delay_ms = 0;
    });
    let ingest = system.ingest_stats.clone();
    csc.publish(1).await;
    wait_for("the first event stored", Duration::from_secs(30), || {
        let stats = stats.clone();
        async move { (ProducerStats::get(&stats.events_acked_seq) >= 1).then_some(()) }
    })
    .await
    .unwrap();

    redis.stop();
    for n in 2..=20 {
        csc.publish(n).await;
    }
    wait_for(
        "the ingest holding batches for the store",
        Duration::from_secs(30),
        || {
            let ingest = ingest.clone();
            async move {
                (IngestStats::get(&ingest.store_failing) > 0 && IngestStats::get(&ingest.samples_held) > 0)
                    .then_some(())
            }
        },
    )
    .await
    .unwrap();
    let held = IngestStats::get(&ingest.samples_held);
    let stopping = tokio::time::Instant::now();
    let ended = tokio::time::timeout(Duration::from_secs(10), system.shutdown())
        .await
        .expect("the ingest stops within its drain deadline while Redis is down");
    let took = stopping.elapsed();
    assert!(
        took >= Duration::from_millis(1000),
        "the ingest waited for the store until its deadline: {took:?}"
    );
    let message = ended.as_ref().map_err(ToString::to_string).unwrap_err();
    assert!(
        message.starts_with("ingest: the store stayed down") && message.contains("not stored"),
        "the error names the role and what was lost: {message}"
    );
    match ended {
        Err(RolesError::Manager(ManagerError::Ingest(IngestError::Drain { samples, timeout_ms }))) => {
            assert_eq!(timeout_ms, 1000);
            assert!(
                samples >= held,
                "the samples the ingest held are reported as not stored: {samples} < {held}"
            );
        }
        other => panic!("the drain's end is reported as the store staying down, got {other:?}"),
    }
}
