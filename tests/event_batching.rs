//! A burst of events travels in full frames: with `producer.batch_delay_ms`
//! the producer waits up to that long for a frame to fill to
//! `producer.batch_max` events, so a burst of 95 events costs 10 frames (10
//! acknowledgements, 10 store round trips), not 95; the last, partial frame
//! still goes out once its oldest event waited the delay. An operator would
//! notice a failure as an ingest busy with tiny frames during event storms,
//! or as events stuck in a partial frame.

use meridian_producer::ProducerStats;
use meridian_store::memory::MemoryStore;
use meridian_testkit::manual_csc::{stored_event_values, ManualCsc};
use meridian_testkit::system::{test_config, System};
use meridian_testkit::wait_for;
use std::sync::Arc;
use std::time::Duration;

const EVENTS: i64 = 95;
const BATCH_MAX: usize = 10;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_events_is_sent_in_full_frames_and_the_rest_after_the_delay() {
    let store = Arc::new(MemoryStore::new());
    let mut system = System::start_with(store.clone(), test_config()).await.unwrap();
    let csc = ManualCsc::new("Test:8", 1024);
    let stats = system.spawn_producer(csc.clone(), |c| {
        c.producer.csc = "Test:8".into();
        c.producer.batch_max = BATCH_MAX;
        // Far longer than publishing the burst takes.
        c.producer.batch_delay_ms = 1000;
    });
    wait_for("the producer connected", Duration::from_secs(20), || {
        let stats = stats.clone();
        async move { (ProducerStats::get(&stats.connections) > 0).then_some(()) }
    })
    .await
    .unwrap();

    for n in 1..=EVENTS {
        csc.publish(n).await;
    }
    wait_for("every event stored", Duration::from_secs(20), || {
        let stats = stats.clone();
        async move { (ProducerStats::get(&stats.events_acked_seq) >= EVENTS as u64).then_some(()) }
    })
    .await
    .unwrap();

    let frames = ProducerStats::get(&stats.event_frames);
    assert_eq!(
        frames,
        (EVENTS as u64).div_ceil(BATCH_MAX as u64),
        "{EVENTS} events in frames of {BATCH_MAX}, the last one partial"
    );
    let stored = stored_event_values(store.as_ref(), "Test:8").await;
    assert_eq!(
        stored,
        (1..=EVENTS).collect::<Vec<_>>(),
        "each event once, in order"
    );
    system.stop().await;
}
