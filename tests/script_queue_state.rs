//! A ScriptQueue served by a Meridian producer still feeds the replaced
//! system's ScriptQueue panel: the simulated ScriptQueue runs Scripts
//! through the real producer → QUIC → ingest → Redis path, the ingest
//! derives the pseudo-CSCs its producer built (`ScriptQueueState` streams
//! `stateStream`, `scriptsStream`, `availableScriptsStream`;
//! `ScriptHeartbeats` `stream`), and a client of the compatibility
//! endpoint, subscribed as the replaced browser client is, receives them
//! in its shapes: a script goes waiting → current → finished, the finished
//! list is capped, heartbeats come every 2 s per current and waiting
//! script with lost ones counted, and a client that subscribes later gets
//! the last state at once. With several ingest managers on one Redis,
//! exactly one derives, and another takes over when it dies, counting on
//! from what was stored.
//!
//! If this fails, an operator who moved a ScriptQueue to Meridian sees an
//! empty ScriptQueue panel or stale heartbeats in the existing dashboard.

use meridian_proto::Value;
use meridian_sim::{AckState, Middleware, SimMiddleware};
use meridian_store::redis::RedisStore;
use meridian_testkit::love::{keys, Love};
use meridian_testkit::redis_server::RedisServer;
use meridian_testkit::system::{test_config, System};
use meridian_testkit::wait_for;
use serde_json::{json, Value as Json};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// Finished scripts listed (`ingest.finished_scripts`), below the number run.
const FINISHED: usize = 3;

/// The groups the replaced client's ScriptQueue panel joins for queue 1.
const GROUPS: &[(&str, &str)] = &[
    ("ScriptQueueState", "stateStream"),
    ("ScriptQueueState", "scriptsStream"),
    ("ScriptQueueState", "availableScriptsStream"),
    ("ScriptHeartbeats", "stream"),
];

/// The fields of a script in `scriptsStream`, as the replaced producer sends them.
const SCRIPT_FIELDS: &[&str] = &[
    "remote",
    "setup",
    "index",
    "path",
    "type",
    "process_state",
    "script_state",
    "timestampConfigureEnd",
    "timestampConfigureStart",
    "timestampProcessEnd",
    "timestampProcessStart",
    "timestampRunStart",
    "expected_duration",
    "last_checkpoint",
    "description",
    "classname",
    "remotes",
    "last_heartbeat_timestamp",
    "lost_heartbeats",
    "pause_checkpoints",
    "stop_checkpoints",
    "log_level",
];

/// Joins every group of [`GROUPS`] and waits for each confirmation; the
/// messages that came before the last confirmation.
async fn join_panel(love: &mut Love) -> Vec<Json> {
    for (csc, stream) in GROUPS {
        love.subscribe("event", csc, json!("1"), stream).await;
    }
    let mut early = Vec::new();
    let mut confirmed = BTreeSet::new();
    while confirmed.len() < GROUPS.len() {
        let m = love.json().await;
        match m["data"].as_str() {
            Some(text) if m.get("category").is_none() => {
                confirmed.insert(text.to_string());
            }
            _ => early.push(m),
        }
    }
    let want: BTreeSet<String> = GROUPS
        .iter()
        .map(|(csc, s)| format!("Successfully subscribed to event-{csc}-1-{s}"))
        .collect();
    assert_eq!(confirmed, want);
    early
}

fn pseudo(m: &Json) -> (String, Json) {
    assert_eq!(
        keys(m),
        ["category", "data", "subscription", "tracing"].into(),
        "{m}"
    );
    assert_eq!(m["category"], "event");
    let data = m["data"].as_array().expect("data is a list");
    assert_eq!(data.len(), 1, "{m}");
    assert_eq!(keys(&data[0]), ["csc", "data", "salindex"].into(), "{m}");
    assert_eq!(data[0]["salindex"], 1, "{m}");
    let csc = data[0]["csc"].as_str().unwrap();
    let streams = data[0]["data"].as_object().unwrap();
    assert_eq!(streams.len(), 1, "{m}");
    let (stream, payload) = streams.iter().next().unwrap();
    assert_eq!(m["subscription"], format!("event-{csc}-1-{stream}"));
    // Pseudo-CSC payloads are bare dicts: no field wrappers, not a list.
    assert!(payload.is_object(), "{m}");
    (stream.clone(), payload.clone())
}

fn indices(scripts: &Json, list: &str) -> Vec<u64> {
    scripts[list]
        .as_array()
        .unwrap_or_else(|| panic!("{list} missing: {scripts}"))
        .iter()
        .map(|s| s["index"].as_u64().unwrap())
        .collect()
}

fn add(duration_s: f64) -> Vec<(String, Value)> {
    System::add_script("maintel/track_target.py", &format!("duration: {duration_s}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_script_queue_panel_follows_a_queue_served_by_a_meridian_producer() {
    let redis = RedisServer::start().unwrap();
    let store = Arc::new(RedisStore::connect(&redis.url()).await.unwrap());
    let mut config = test_config();
    config.ingest.finished_scripts = FINISHED;
    let mut system = System::start_with(store.clone(), config).await.unwrap();

    let sim = SimMiddleware::new();
    let queue = "ScriptQueue:1".parse().unwrap();
    system.start_script_queue(&sim, "ScriptQueue:1").await.unwrap();

    let mut panel = Love::browser(&system).await;
    let mut early = join_panel(&mut panel).await;
    // The deriver follows the queue once it is in the catalog: its first
    // state (the queue's initial `queue` event) says so.
    let end = Instant::now() + Duration::from_secs(20);
    while !early.iter().any(|m| pseudo(m).0 == "stateStream") {
        assert!(Instant::now() < end, "the queue's state never came: {early:?}");
        early.push(panel.json().await);
    }

    // Script A runs 5 s; B waits meanwhile, then runs 0.5 s.
    let mut added = Vec::new();
    for duration in [5.0, 0.5] {
        let ack = sim
            .command(&queue, "add", add(duration), Duration::from_secs(10))
            .await
            .unwrap();
        let done = ack.final_ack().await;
        assert_eq!(done.state, AckState::Complete, "{done:?}");
        added.push(done.result.parse::<u64>().unwrap());
    }
    let (a, b) = (added[0], added[1]);

    // Everything the panel receives until B is finished and A's and B's
    // heartbeats were reported.
    let mut got: Vec<(String, Json)> = early.iter().map(pseudo).collect();
    let end = Instant::now() + Duration::from_secs(30);
    let finished = |got: &[(String, Json)]| {
        got.iter()
            .any(|(s, p)| s == "scriptsStream" && indices(p, "finished_scripts").first() == Some(&b))
    };
    // Derivation lag: from the ScriptQueue's event time (`producer_snd`) to
    // the derived entry's store time (`manager_rcv_from_producer`, TAI).
    let mut lags_ms = Vec::new();
    while !finished(&got) {
        assert!(Instant::now() < end, "B never finished: {got:?}");
        let m = panel.json().await;
        let (stream, payload) = pseudo(&m);
        if stream == "scriptsStream" {
            let t = &m["tracing"];
            let lag =
                t["manager_rcv_from_producer"].as_f64().unwrap() - 37.0 - t["producer_snd"].as_f64().unwrap();
            lags_ms.push(lag * 1000.0);
        }
        got.push((stream, payload));
    }
    lags_ms.sort_by(f64::total_cmp);
    println!(
        "scriptsStream derivation lag over {} messages: median {:.1} ms, max {:.1} ms",
        lags_ms.len(),
        lags_ms[lags_ms.len() / 2],
        lags_ms[lags_ms.len() - 1]
    );

    // stateStream: {"enabled","running"} exactly.
    let (_, state) = got
        .iter()
        .rev()
        .find(|(s, _)| s == "stateStream")
        .expect("a stateStream");
    assert_eq!(*state, json!({"enabled": true, "running": true}));

    // availableScriptsStream: the queue's availableScripts, standard ones.
    let (_, available) = got
        .iter()
        .rev()
        .find(|(s, _)| s == "availableScriptsStream")
        .expect("an availableScriptsStream");
    let listed: Vec<&Json> = available["available_scripts"]
        .as_array()
        .unwrap()
        .iter()
        .collect();
    assert!(listed.len() >= 4, "{available}");
    for entry in &listed {
        assert_eq!(keys(entry), ["configSchema", "path", "type"].into());
        assert_eq!(entry["type"], "standard");
    }
    assert!(
        listed.iter().any(|e| e["path"] == "maintel/track_target.py"),
        "{available}"
    );

    // scriptsStream: B waiting (behind A), then current, then finished; whole state each time.
    let scripts: Vec<&Json> = got
        .iter()
        .filter(|(s, _)| s == "scriptsStream")
        .map(|(_, p)| p)
        .collect();
    let at = |pred: &dyn Fn(&Json) -> bool| scripts.iter().position(|p| pred(p));
    let waiting = at(&|p| indices(p, "waiting_scripts") == [b] && indices(p, "current_scripts") == [a])
        .expect("B waiting while A runs");
    let current = at(&|p| indices(p, "current_scripts") == [b]).expect("B current");
    let done = at(&|p| indices(p, "finished_scripts").first() == Some(&b)).expect("B finished");
    assert!(
        waiting < current && current < done,
        "order: {waiting} {current} {done}"
    );
    for p in &scripts {
        assert_eq!(
            keys(p),
            ["current_scripts", "finished_scripts", "waiting_scripts"].into()
        );
        for list in ["current_scripts", "waiting_scripts", "finished_scripts"] {
            for s in p[list].as_array().unwrap() {
                assert_eq!(keys(s), SCRIPT_FIELDS.iter().copied().collect(), "{s}");
            }
        }
    }
    let last = scripts[done];
    let finished_b = &last["finished_scripts"][0];
    assert_eq!(finished_b["path"], "maintel/track_target.py");
    assert_eq!(finished_b["type"], "standard");
    assert_eq!(finished_b["process_state"], "DONE");
    assert_eq!(finished_b["script_state"], "DONE");
    assert_eq!(finished_b["expected_duration"], 0.5);
    assert_eq!(finished_b["classname"], "maintel.track_target.py");
    // A while running: its metadata and state events, from its own Script instance.
    assert!(
        scripts.iter().any(|p| {
            let s = &p["current_scripts"][0];
            s["index"] == a && s["expected_duration"] == 5.0 && s["script_state"] == "RUNNING"
        }),
        "A never shown running with its expected duration: {scripts:?}"
    );

    // ScriptHeartbeats: A (current, heard from) and B (waiting: the
    // simulator starts a Script only when it runs, so none heard yet).
    let beats: Vec<&Json> = got
        .iter()
        .filter(|(s, _)| s == "stream")
        .map(|(_, p)| &p["script_heartbeat"])
        .collect();
    for h in &beats {
        assert_eq!(
            keys(h),
            ["last_heartbeat_timestamp", "lost", "salindex"].into(),
            "{h}"
        );
    }
    let of = |i: u64| beats.iter().filter(move |h| h["salindex"] == i);
    let a_beat = of(a)
        .next_back()
        .unwrap_or_else(|| panic!("no heartbeat report of A ({a}): {beats:?}"));
    assert_eq!(a_beat["lost"], 0, "{a_beat}");
    assert!(
        a_beat["last_heartbeat_timestamp"].as_f64().unwrap() > 0.0,
        "{a_beat}"
    );
    let b_waiting = of(b).next().expect("a heartbeat report of B while waiting");
    assert_eq!(b_waiting["last_heartbeat_timestamp"], -1.0);
    assert!(b_waiting["lost"].as_u64().unwrap() >= 1, "{b_waiting}");

    // More scripts than the finished list holds: capped, newest first,
    // and the scripts that left it are gone.
    for _ in 0..FINISHED + 1 {
        let ack = sim
            .command(&queue, "add", add(0.0), Duration::from_secs(10))
            .await
            .unwrap();
        let done = ack.final_ack().await;
        added.push(done.result.parse::<u64>().unwrap());
    }
    let newest: Vec<u64> = added.iter().rev().take(FINISHED).copied().collect();
    let end = Instant::now() + Duration::from_secs(30);
    let last_scripts = loop {
        assert!(Instant::now() < end, "the finished list never showed {newest:?}");
        let (s, p) = pseudo(&panel.json().await);
        if s == "scriptsStream" && indices(&p, "finished_scripts") == newest {
            break p;
        }
        if s == "scriptsStream" {
            assert!(indices(&p, "finished_scripts").len() <= FINISHED, "{p}");
        }
    };
    assert!(indices(&last_scripts, "current_scripts").is_empty());
    assert!(indices(&last_scripts, "waiting_scripts").is_empty());

    // A client that opens the panel now gets the last state of each stream at once.
    let mut late = Love::browser(&system).await;
    let mut first = join_panel(&mut late).await;
    let end = Instant::now() + Duration::from_secs(10);
    while first.iter().filter(|m| pseudo(m).0 != "stream").count() < 3 {
        assert!(Instant::now() < end, "no last values: {first:?}");
        first.push(late.json().await);
    }
    let last_of = |stream: &str| {
        first
            .iter()
            .map(pseudo)
            .find(|(s, _)| s == stream)
            .map(|(_, p)| p)
            .unwrap_or_else(|| panic!("no last {stream}"))
    };
    // The late value is a state the live panel also reaches, at or after
    // the one it last saw: the Scripts' own events (descriptions, final
    // states) may still be filling in the list, so later messages can follow.
    let late_scripts = last_of("scriptsStream");
    let mut live = last_scripts;
    while live != late_scripts {
        let (s, p) = pseudo(&panel.json().await);
        if s == "scriptsStream" {
            live = p;
        }
    }
    assert_eq!(last_of("stateStream"), json!({"enabled": true, "running": true}));
    assert_eq!(last_of("availableScriptsStream"), *available);

    // Four keys per queue, not per script: the derived streams, which
    // expire once no ingest derives them any more.
    for key in [
        event_stream("ScriptQueueState:1", "stateStream"),
        event_stream("ScriptQueueState:1", "scriptsStream"),
        event_stream("ScriptQueueState:1", "availableScriptsStream"),
        event_stream("ScriptHeartbeats:1", "stream"),
    ] {
        use meridian_store::Store;
        assert!(store.len(&key).await.unwrap() > 0, "{key}");
        let ttl = store.ttl(&key).await.unwrap();
        assert!(
            ttl.is_some_and(|t| t <= meridian_manager::love::script_queue::DERIVED_TTL),
            "{key}: TTL {ttl:?}"
        );
    }
    system.stop().await;
}

/// The store stream of event `topic` of the instance `csc` (`ScriptQueue:2`).
fn event_stream(csc: &str, topic: &str) -> String {
    let topic =
        meridian_proto::TopicId::new(csc.parse().unwrap(), meridian_proto::Category::Event, topic).unwrap();
    meridian_proto::keys::stream(&topic)
}

/// One store entry of a ScriptQueue event as ingest writes it (with `seq`).
async fn store_queue_event(store: &dyn meridian_store::Store, seq: u64, current: u32) {
    let f = json!({"enabled": true, "running": true, "currentSalIndex": current, "length": 0,
        "salIndices": [], "pastLength": 0, "pastSalIndices": []});
    let now = meridian_proto::unix_now(std::time::SystemTime::now());
    let sample = meridian_proto::StoredSample {
        seq: Some(seq),
        source_ts: now,
        ingest_ts: now,
        salindex: None,
        upto: None,
        fields: f.to_string(),
    };
    store
        .append(&[meridian_store::Append {
            key: event_stream("ScriptQueue:2", "queue"),
            maxlen: 100,
            fields: sample.into_fields(),
        }])
        .await
        .unwrap();
}

/// Several ingest managers share one Redis: exactly one derives (a script's
/// heartbeat is reported once per period, not once per ingest), and when
/// it dies another takes over and goes on counting where it stopped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_ingest_derives_and_another_takes_over_when_it_dies() {
    use meridian_manager::love::script_queue::{self, DeriveConfig};
    use meridian_store::Store;
    let redis = RedisServer::start().unwrap();
    let store: Arc<dyn Store> = Arc::new(RedisStore::connect(&redis.url()).await.unwrap());
    store
        .hash_set(
            meridian_proto::keys::CATALOG,
            &[("ScriptQueue:2/event/queue".into(), String::new())],
            None,
        )
        .await
        .unwrap();
    // Script 200000 is current and never heard from: lost counts up every report.
    store_queue_event(store.as_ref(), 1, 200_000).await;
    let config = DeriveConfig {
        finished_scripts: 10,
        ttl: script_queue::DERIVED_TTL,
    };
    let (stop_a, stop_b) = (
        tokio_util::sync::CancellationToken::new(),
        tokio_util::sync::CancellationToken::new(),
    );
    let a = tokio::spawn(script_queue::run(store.clone(), config.clone(), stop_a.clone()));
    let b = tokio::spawn(script_queue::run(store.clone(), config, stop_b.clone()));
    let key = event_stream("ScriptHeartbeats:2", "stream");
    let reports = |store: Arc<dyn Store>| {
        let key = key.clone();
        async move {
            store
                .last(&key, 1000)
                .await
                .unwrap()
                .into_iter()
                .map(|e| {
                    let sample = meridian_proto::StoredSample::from_fields(&e.fields).unwrap();
                    let v: Json = serde_json::from_str(&sample.fields).unwrap();
                    (e.id.ms, v["script_heartbeat"]["lost"].as_u64().unwrap())
                })
                .collect::<Vec<_>>()
        }
    };
    let enough = wait_for("four heartbeat reports", Duration::from_secs(30), || {
        let store = store.clone();
        async move { Some(reports(store).await).filter(|r| r.len() >= 4) }
    })
    .await
    .unwrap();
    // One deriver: one count, 1, 2, 3, … (two would each count: 1, 1, 2, 2, …).
    assert_eq!(enough[0].1, 1, "{enough:?}");
    for pair in enough.windows(2) {
        assert_eq!(pair[1].1, pair[0].1 + 1, "{enough:?}");
    }
    // Both die in turn without releasing the lock (killed processes): the
    // one holding it first is replaced by the other or by a third; each
    // taking over rebuilds from the streams and counts on.
    let c_stop = tokio_util::sync::CancellationToken::new();
    let mut c = None;
    for (i, task) in [a, b].into_iter().enumerate() {
        task.abort();
        let _ = task.await;
        if i == 1 {
            c = Some(tokio::spawn(script_queue::run(
                store.clone(),
                DeriveConfig {
                    finished_scripts: 10,
                    ttl: script_queue::DERIVED_TTL,
                },
                c_stop.clone(),
            )));
        }
        let n = reports(store.clone()).await.len();
        wait_for("reports after an ingest died", Duration::from_secs(30), || {
            let store = store.clone();
            async move { Some(reports(store).await).filter(|r| r.len() >= n + 2) }
        })
        .await
        .unwrap();
    }
    let all = reports(store.clone()).await;
    for pair in all.windows(2) {
        assert_eq!(
            pair[1].1,
            pair[0].1 + 1,
            "counting went on across takeovers: {all:?}"
        );
    }
    c_stop.cancel();
    if let Some(c) = c {
        c.await.unwrap();
    }
    // A deriver that stops cleanly releases the lock.
    assert!(store
        .lock(
            meridian_proto::keys::DERIVER_LOCK,
            "probe",
            Duration::from_secs(1)
        )
        .await
        .unwrap());
}

/// `meridian manager --role ingest` keeps deriving now that the deriver runs
/// beside the ingest instead of inside it: the manager takes the deriver's
/// lock, and on shutdown stops the deriver, which releases it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ingest_manager_runs_the_deriver_beside_its_ingest() {
    use meridian_manager::{Manager, Role};
    use meridian_proto::keys::DERIVER_LOCK as LOCK;
    use meridian_store::Store;
    let redis = RedisServer::start().unwrap();
    let mut config = test_config();
    config.store.backend = meridian_config::StoreBackend::Redis;
    config.store.redis_url = redis.url();
    let manager = Manager::bind(&config, Role::Ingest).await.unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn(manager.run(stop.clone()));
    let store = RedisStore::connect(&redis.url()).await.unwrap();
    wait_for("the deriver's lock taken", Duration::from_secs(10), || async {
        store.exists(LOCK).await.unwrap().then_some(())
    })
    .await
    .unwrap();
    stop.cancel();
    task.await.unwrap().unwrap();
    assert!(
        !store.exists(LOCK).await.unwrap(),
        "the lock is released on shutdown"
    );
}
