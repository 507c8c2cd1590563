//! A night of Scripts adds entries, not keys. 1,000 Scripts run through
//! the simulated ScriptQueue, each a new SAL index, and their events are
//! stored through the real producer → QUIC → ingest → Redis path: Redis holds
//! one stream per Script topic for all of them plus one small state hash per
//! recent Script, and the hashes of finished Scripts expire. The replaced
//! system created a new set of keys for every Script, and Redis slowed down
//! as the night went on.

use meridian_manager::store::{redis::RedisStore, Store};
use meridian_proto::{topic::instance_key_prefix, Csc, Value};
use meridian_sim::interface::Interface;
use meridian_sim::{AckState, Middleware, SimMiddleware, SimOptions};
use meridian_tests::redis_server::RedisServer;
use meridian_tests::system::{test_config, System};
use meridian_tests::wait_for;
use std::sync::Arc;
use std::time::Duration;

const SCRIPTS: usize = 1000;

fn add_params(i: usize) -> Vec<(String, Value)> {
    let fail = i % 50 == 49;
    vec![
        ("isStandard".into(), Value::Bool(true)),
        ("path".into(), Value::Str("sleep.py".into())),
        ("config".into(), Value::Str(format!("duration: 0\nfail: {fail}"))),
        ("location".into(), Value::Int(2)),
        ("locationSalIndex".into(), Value::Int(0)),
        ("logLevel".into(), Value::Int(20)),
        ("blockSize".into(), Value::Int(0)),
        ("startBlock".into(), Value::Bool(false)),
    ]
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
    let options = SimOptions {
        start_enabled: true,
        ..SimOptions::default()
    };
    sim.start_with(&queue, options, system.stop_token()).unwrap();
    let queue_producer =
        system.spawn_producer(Arc::new(sim.clone()), |c| c.producer.csc = "ScriptQueue:1".into());
    let scripts = system.spawn_producer(Arc::new(sim.clone()), |c| {
        c.producer.csc = "Script".into();
        c.producer.all_indices = true;
    });
    wait_for("both producers connected", Duration::from_secs(20), || {
        let (a, b) = (queue_producer.clone(), scripts.clone());
        async move {
            (meridian_producer::ProducerStats::get(&a.connections) > 0
                && meridian_producer::ProducerStats::get(&b.connections) > 0)
                .then_some(())
        }
    })
    .await
    .unwrap();

    let mut max_keys = 0;
    for i in 0..SCRIPTS {
        let ack = sim
            .command(&queue, "add", add_params(i), Duration::from_secs(10))
            .await
            .unwrap();
        assert_eq!(ack.final_ack().await.state, AckState::Complete);
        if i % 100 == 0 {
            max_keys = max_keys.max(store.key_count().await.unwrap());
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
    let state_entries = store.len("meridian:{Script}:event:state").await.unwrap();
    assert!(
        state_entries >= SCRIPTS * 4,
        "every Script's states are in one stream: {state_entries}"
    );

    // Finished Scripts' state hashes expire (script_ttl_s = 1).
    let prefix = instance_key_prefix(&Csc::new("Script").unwrap());
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

    // The bound: one stream per declared topic of Script and ScriptQueue,
    // one exactly-once mark per producer stream, and the sweeper lock —
    // whatever the number of Scripts.
    let topics = |csc: &str| {
        let i = Interface::builtin(csc).unwrap();
        i.telemetry.len() + i.events.len()
    };
    let bound = topics("Script") + topics("ScriptQueue") + 2 + 1;
    let keys = store.key_count().await.unwrap();
    println!("{SCRIPTS} Scripts: {keys} keys at the end, at most {max_keys} seen while running (bound {bound} + recent Scripts' state)");
    assert!(
        keys <= bound,
        "{keys} keys after {SCRIPTS} Scripts; bound {bound}"
    );
    system.stop().await;
}
