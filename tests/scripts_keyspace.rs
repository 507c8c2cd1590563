//! A night of Scripts adds entries, not keys. 1,000 Scripts run through
//! the simulated ScriptQueue, each a new SAL index, and their events are
//! stored through the real producer → QUIC → ingest → Redis path: Redis holds
//! one stream per Script topic for all of them plus one small state hash per
//! recent Script, and the hashes of finished Scripts expire. The replaced
//! system created a new set of keys for every Script, and Redis slowed down
//! as the night went on.
//!
//! The bound, checked throughout the run and at its end:
//! - fixed keys, whatever the number of Scripts: one stream per declared
//!   topic of Script and of ScriptQueue (all Scripts share them), one
//!   exactly-once mark per producer event stream (two producers), the
//!   sweeper lock, and the queue's four derived pseudo-CSC streams
//!   (`ScriptQueueState`, `ScriptHeartbeats`) with their deriver's lock —
//!   37 keys with the builtin interfaces;
//! - plus one state hash per recent Script: one added less than
//!   [`RECENT`] ago (`ingest.script_ttl_s` = 1 s after it ends, plus its run,
//!   the ingest's lag and Redis reclaiming the expired key). Scripts are
//!   added at most [`SCRIPTS_PER_S`] a second, so that is at most about 300
//!   keys however many Scripts have run: a leak of one key per Script
//!   crosses it after a third of the run, one of a set of streams per
//!   Script at once.

use meridian_proto::{keys, Category, Csc, TopicId, Value};
use meridian_sim::interface::Interface;
use meridian_sim::{AckState, Middleware, SimMiddleware};
use meridian_store::{redis::RedisStore, Store};
use meridian_testkit::redis_server::RedisServer;
use meridian_testkit::system::{test_config, System};
use meridian_testkit::wait_for;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

const SCRIPTS: usize = 1000;

/// Most Scripts added per second: the run lasts ten times [`RECENT`].
const SCRIPTS_PER_S: u64 = 100;

/// How long after it is added a Script's state hash may still exist:
/// `ingest.script_ttl_s` (1 s here) after the Script ended, with 2 s to spare
/// for its run, the ingest's lag and Redis reclaiming expired keys.
const RECENT: Duration = Duration::from_secs(3);

/// Checks the bound (see the module doc) once: every key that is not a
/// Script's state hash is one of the `fixed` keys, and the key count is at
/// most `fixed` plus the Scripts added within [`RECENT`]. Returns the key count.
async fn check_bound(store: &RedisStore, fixed: usize, added: &[Instant], state_prefix: &str) -> usize {
    let now = Instant::now();
    let keys = store.key_count().await.unwrap();
    let all = store.keys_with_prefix("", 1_000_000).await.unwrap();
    let not_state: Vec<&String> = all.iter().filter(|k| !k.starts_with(state_prefix)).collect();
    assert!(
        not_state.len() <= fixed,
        "after {} Scripts, {} keys besides Script state hashes; bound {fixed}: {not_state:?}",
        added.len(),
        not_state.len()
    );
    let recent = added
        .iter()
        .filter(|&&at| now.duration_since(at) < RECENT)
        .count();
    assert!(
        keys <= fixed + recent,
        "after {} Scripts, {keys} keys; bound {fixed} + {recent} Scripts added in the last {RECENT:?}",
        added.len()
    );
    keys
}

fn add_params(i: usize) -> Vec<(String, Value)> {
    let fail = i % 50 == 49;
    System::add_script("sleep.py", &format!("duration: 0\nfail: {fail}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_scripts_leave_a_bounded_keyspace_and_their_state_expires() {
    let redis = RedisServer::start().unwrap();
    let store = Arc::new(RedisStore::connect(&redis.url()).await.unwrap());
    let mut config = test_config();
    config.ingest.script_ttl_s = 1;
    let mut system = System::start_with(store.clone(), config).await.unwrap();

    let sim = SimMiddleware::new();
    let queue = "ScriptQueue:1".parse().unwrap();
    let scripts = system.start_script_queue(&sim, "ScriptQueue:1").await.unwrap();

    // The bound's fixed part: one stream per declared topic of Script and
    // ScriptQueue, one exactly-once mark per producer event stream, the
    // sweeper lock, the queue's derived streams and their deriver's lock —
    // whatever the number of Scripts.
    let topics = |csc: &str| {
        let i = Interface::builtin(csc).unwrap();
        i.telemetry.len() + i.events.len()
    };
    let fixed = topics("Script") + topics("ScriptQueue") + 2 + 1 + 4 + 1;
    let prefix = keys::instance_prefix(&Csc::new("Script").unwrap());

    let mut max_keys = 0;
    let mut added = Vec::with_capacity(SCRIPTS);
    let mut pace = tokio::time::interval(Duration::from_secs(1) / SCRIPTS_PER_S as u32);
    for i in 0..SCRIPTS {
        pace.tick().await;
        let ack = sim
            .command(&queue, "add", add_params(i), Duration::from_secs(10))
            .await
            .unwrap();
        assert_eq!(ack.final_ack().await.state, AckState::Complete);
        added.push(Instant::now());
        if i % 10 == 9 {
            max_keys = max_keys.max(check_bound(&store, fixed, &added, &prefix).await);
        }
    }
    // Every Script has run when none is left in the middleware and the
    // Script producer's events are all stored.
    wait_for("all Scripts ended and stored", Duration::from_secs(60), || {
        let (sim, scripts) = (sim.clone(), scripts.clone());
        async move {
            let running = sim.running().iter().any(|id| id.csc.as_str() == "Script");
            let seen = meridian_producer::ProducerStats::get(&scripts.events_seen);
            let acked = meridian_producer::ProducerStats::get(&scripts.events_acked_seq);
            (!running && seen > 0 && acked == seen).then_some(())
        }
    })
    .await
    .unwrap();
    let state_stream =
        keys::stream(&TopicId::new("Script:0".parse().unwrap(), Category::Event, "state").unwrap());
    let state_entries = store.len(&state_stream).await.unwrap();
    assert!(
        state_entries >= SCRIPTS * 4,
        "every Script's states are in one stream: {state_entries}"
    );

    max_keys = max_keys.max(check_bound(&store, fixed, &added, &prefix).await);

    // Finished Scripts' state hashes expire (script_ttl_s = 1).
    wait_for("finished Scripts' state expired", Duration::from_secs(30), || {
        let store = store.clone();
        let prefix = prefix.clone();
        async move {
            store
                .keys_with_prefix(&prefix, 10)
                .await
                .unwrap()
                .is_empty()
                .then_some(())
        }
    })
    .await
    .unwrap();

    // Once every state hash expired, only the fixed keys are left.
    let keys = store.key_count().await.unwrap();
    let most_recent = (SCRIPTS_PER_S as f64 * RECENT.as_secs_f64()) as usize;
    println!(
        "{SCRIPTS} Scripts: {keys} keys at the end, at most {max_keys} while running \
         (bound {fixed} + Scripts added in the last {RECENT:?}, at most ~{most_recent})"
    );
    assert!(
        keys <= fixed,
        "{keys} keys after {SCRIPTS} Scripts; bound {fixed}"
    );
    system.stop().await;
}
