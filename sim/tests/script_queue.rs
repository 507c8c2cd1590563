//! The ScriptQueue runs Scripts one after another, each a new `Script`
//! instance with a new SAL index (queue index × 100000 + n) that publishes
//! its lifecycle in order — description, states, metadata, log messages,
//! checkpoints — and ends. This is the load that grew the replaced system's
//! Redis all night, so it must be simulated faithfully: a Script that never
//! ends, events out of order, or an index reused or outside its queue's
//! range would hide what Meridian must handle (and what an operator's
//! script panel shows).

use meridian_proto::{Csc, CscId, Fields, Value};
use meridian_sim::cscs::script_queue::{process_state, script_state, CHECKPOINTS};
use meridian_sim::{AckState, CscFeed, Middleware, Published, SimMiddleware, SimOptions};
use std::collections::{BTreeMap, HashSet};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const SCRIPTS: usize = 100;

/// Run time each test Script is configured with, seconds.
const DURATION_S: f64 = 0.05;

/// How long the Scripts may go without publishing anything before the test fails.
const STALL: Duration = Duration::from_secs(30);

/// The Script's SAL index range of each ScriptQueue index (the
/// observatory's `SCRIPT_INDEX_MULT`).
const INDEX_MULT: u32 = 100_000;

fn field<'a>(event: &'a Published, name: &str) -> &'a Value {
    event
        .fields
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v)
        .unwrap_or_else(|| panic!("{} of Script {} has no field {name}", event.topic, event.salindex))
}

fn int(event: &Published, name: &str) -> i64 {
    match field(event, name) {
        Value::Int(i) => *i,
        other => panic!(
            "{}.{name} of {} is not an int: {other:?}",
            event.topic, event.salindex
        ),
    }
}

fn text<'a>(event: &'a Published, name: &str) -> &'a str {
    match field(event, name) {
        Value::Str(s) => s,
        other => panic!(
            "{}.{name} of {} is not a string: {other:?}",
            event.topic, event.salindex
        ),
    }
}

fn state_name(state: i64) -> String {
    match state {
        script_state::UNCONFIGURED => "UNCONFIGURED".into(),
        script_state::CONFIGURED => "CONFIGURED".into(),
        script_state::RUNNING => "RUNNING".into(),
        script_state::DONE => "DONE".into(),
        script_state::FAILED => "FAILED".into(),
        other => format!("state {other}"),
    }
}

/// One Script event, reduced to what places it in the lifecycle.
fn lifecycle_step(event: &Published) -> String {
    match event.topic.as_str() {
        "state" => {
            let mut step = format!("state {}", state_name(int(event, "state")));
            let checkpoint = text(event, "lastCheckpoint");
            if !checkpoint.is_empty() {
                step += &format!(" at {checkpoint} ({} passed)", int(event, "numCheckpoints"));
            }
            if !text(event, "reason").is_empty() {
                step += " with a reason";
            }
            step
        }
        "logMessage" => {
            let level = match int(event, "level") {
                20 => "INFO".to_string(),
                40 => "ERROR".to_string(),
                other => other.to_string(),
            };
            format!("logMessage {level} from {}", text(event, "name"))
        }
        "metadata" => match field(event, "duration") {
            Value::Float(d) => format!("metadata duration {d}"),
            other => panic!(
                "metadata.duration of {} is not a float: {other:?}",
                event.salindex
            ),
        },
        other => other.to_string(),
    }
}

/// The events a simulated Script publishes, in the order its lifecycle
/// defines: loaded (description, UNCONFIGURED, first heartbeat), configured
/// (metadata, CONFIGURED), running (RUNNING, a log line), each checkpoint
/// (RUNNING at it, a log line), then the end (DONE, or an ERROR log and
/// FAILED with a reason). Nothing after the end.
fn lifecycle(index: u32, fail: bool) -> Vec<String> {
    let log = |level: &str| format!("logMessage {level} from Script:{index}");
    let mut steps = vec![
        "description".to_string(),
        "state UNCONFIGURED".into(),
        "heartbeat".into(),
        format!("metadata duration {DURATION_S}"),
        "state CONFIGURED".into(),
        "state RUNNING".into(),
        log("INFO"),
    ];
    for k in 1..=CHECKPOINTS {
        steps.push(format!("state RUNNING at step{k} ({k} passed)"));
        steps.push(log("INFO"));
    }
    if fail {
        steps.push(log("ERROR"));
        steps.push("state FAILED with a reason".into());
    } else {
        steps.push("state DONE".into());
    }
    steps
}

/// Parameters of `add` for a sleep Script of [`DURATION_S`] that fails if `fail`.
fn add_params(fail: bool) -> Fields {
    vec![
        ("isStandard".into(), Value::Bool(true)),
        ("path".into(), Value::Str("sleep.py".into())),
        (
            "config".into(),
            Value::Str(format!("duration: {DURATION_S}\nfail: {fail}")),
        ),
        ("location".into(), Value::Int(2)),
        ("locationSalIndex".into(), Value::Int(0)),
        ("logLevel".into(), Value::Int(20)),
        ("block".into(), Value::Str(String::new())),
        ("blockSize".into(), Value::Int(0)),
        ("startBlock".into(), Value::Bool(false)),
        ("executionId".into(), Value::Str(String::new())),
    ]
}

/// Adds a Script to `queue`; its SAL index, from the acknowledgement.
async fn add(sim: &SimMiddleware, queue: &CscId, fail: bool) -> u32 {
    let ack = sim
        .command(queue, "add", add_params(fail), Duration::from_secs(10))
        .await
        .unwrap()
        .final_ack()
        .await;
    assert_eq!(ack.state, AckState::Complete, "add to {queue}: {ack:?}");
    ack.result
        .parse()
        .unwrap_or_else(|_| panic!("add to {queue} returns the Script's index, got {:?}", ack.result))
}

fn ended(event: &Published) -> bool {
    event.topic == "state" && matches!(int(event, "state"), script_state::DONE | script_state::FAILED)
}

/// Every Script event of a wildcard `feed`, grouped by Script, until
/// `scripts` Scripts have ended.
async fn until_ended(mut feed: CscFeed, scripts: usize) -> BTreeMap<u32, Vec<Published>> {
    let mut events: BTreeMap<u32, Vec<Published>> = BTreeMap::new();
    let mut done = 0;
    while done < scripts {
        let event = tokio::time::timeout(STALL, feed.events.recv())
            .await
            .unwrap_or_else(|_| panic!("Scripts stopped progressing: {done} of {scripts} ended"))
            .expect("the Script feed stays open");
        done += usize::from(ended(&event));
        events.entry(event.salindex).or_default().push(event);
    }
    events
}

/// Each Script of `runs` (index, configured to fail) published exactly its
/// lifecycle, in order and in time order; no other Script published.
fn check_lifecycles(runs: &[(u32, bool)], events: &BTreeMap<u32, Vec<Published>>) {
    let started: HashSet<u32> = runs.iter().map(|(i, _)| *i).collect();
    let strangers: Vec<&u32> = events.keys().filter(|i| !started.contains(i)).collect();
    assert!(
        strangers.is_empty(),
        "events of Scripts never added: {strangers:?}"
    );
    for (index, fail) in runs {
        let got = events
            .get(index)
            .unwrap_or_else(|| panic!("Script {index} published nothing"));
        let steps: Vec<String> = got.iter().map(lifecycle_step).collect();
        assert_eq!(steps, lifecycle(*index, *fail), "Script {index} (fail: {fail})");
        assert!(
            got.windows(2).all(|w| w[0].source_ts <= w[1].source_ts),
            "Script {index}: event timestamps go backwards"
        );
    }
}

#[tokio::test]
async fn a_hundred_scripts_each_publish_their_lifecycle_in_order_and_end() {
    let sim = SimMiddleware::new();
    let stop = CancellationToken::new();
    let queue: CscId = "ScriptQueue:1".parse().unwrap();
    let options = SimOptions {
        start_enabled: true,
        ..SimOptions::default()
    };
    sim.start_with(&queue, options, stop.clone()).unwrap();
    // Read both feeds while Scripts are added, so neither fills up.
    let scripts = sim.subscribe_all_indices(&Csc::new("Script").unwrap()).unwrap();
    let scripts = tokio::spawn(until_ended(scripts, SCRIPTS));
    let mut queue_feed = sim.subscribe(&queue).unwrap();
    let queue_events = tokio::spawn(async move {
        let mut script_events: BTreeMap<i64, Vec<(i64, i64)>> = BTreeMap::new();
        loop {
            let event = tokio::time::timeout(STALL, queue_feed.events.recv())
                .await
                .expect("the queue stopped publishing before every Script was past")
                .expect("the queue feed stays open");
            match event.topic.as_str() {
                "script" => script_events
                    .entry(int(&event, "scriptSalIndex"))
                    .or_default()
                    .push((int(&event, "processState"), int(&event, "scriptState"))),
                "queue" if int(&event, "pastLength") == SCRIPTS as i64 => {
                    return (script_events, event);
                }
                _ => {}
            }
        }
    });

    let mut runs = Vec::new();
    for i in 0..SCRIPTS {
        let fail = i % 10 == 9;
        runs.push((add(&sim, &queue, fail).await, fail));
    }
    let indices: Vec<u32> = runs.iter().map(|(i, _)| *i).collect();
    let distinct: HashSet<u32> = indices.iter().copied().collect();
    assert_eq!(distinct.len(), SCRIPTS, "every run gets a new index: {indices:?}");
    assert!(
        indices.iter().all(|i| (INDEX_MULT..2 * INDEX_MULT).contains(i)),
        "ScriptQueue:1 runs Scripts 100000..199999: {indices:?}"
    );

    check_lifecycles(&runs, &scripts.await.unwrap());

    // The queue reports each Script's process and script state in order,
    // and ends with all of them past, newest first, and nothing current.
    let (script_events, last_queue) = queue_events.await.unwrap();
    for (index, fail) in &runs {
        let end = if *fail {
            script_state::FAILED
        } else {
            script_state::DONE
        };
        assert_eq!(
            script_events.get(&i64::from(*index)).map(Vec::as_slice),
            Some(
                &[
                    (process_state::LOADING, script_state::UNCONFIGURED),
                    (process_state::CONFIGURED, script_state::CONFIGURED),
                    (process_state::RUNNING, script_state::RUNNING),
                    (process_state::DONE, end),
                ][..]
            ),
            "ScriptQueue `script` events of Script {index}"
        );
    }
    assert_eq!(int(&last_queue, "currentSalIndex"), 0, "{last_queue:?}");
    assert_eq!(int(&last_queue, "length"), 0, "{last_queue:?}");
    let Value::Ints(past) = field(&last_queue, "pastSalIndices") else {
        panic!("queue.pastSalIndices is not an int array: {last_queue:?}");
    };
    let newest_first: Vec<i64> = indices.iter().rev().map(|i| i64::from(*i)).collect();
    assert_eq!(past[..SCRIPTS], newest_first[..], "queue.pastSalIndices");

    // Ended Scripts are gone from the middleware: only the queue runs.
    assert_eq!(sim.running(), vec![queue]);
    stop.cancel();
    sim.stopped().await;
}

/// The observatory runs ScriptQueue:1, :2 and :3 at once; each numbers its
/// Scripts in its own range, so their Scripts never share an index.
#[tokio::test]
async fn queues_2_and_3_run_scripts_in_their_own_index_ranges() {
    let sim = SimMiddleware::new();
    let stop = CancellationToken::new();
    let options = SimOptions {
        start_enabled: true,
        ..SimOptions::default()
    };
    let queues: Vec<CscId> = ["ScriptQueue:2", "ScriptQueue:3"]
        .iter()
        .map(|q| q.parse().unwrap())
        .collect();
    for queue in &queues {
        sim.start_with(queue, options, stop.clone()).unwrap();
    }
    let feed = sim.subscribe_all_indices(&Csc::new("Script").unwrap()).unwrap();
    const PER_QUEUE: usize = 3;
    let scripts = tokio::spawn(until_ended(feed, PER_QUEUE * queues.len()));

    let mut runs = Vec::new();
    for n in 0..PER_QUEUE {
        for queue in &queues {
            let fail = n == PER_QUEUE - 1;
            let index = add(&sim, queue, fail).await;
            let range = queue.salindex * INDEX_MULT..(queue.salindex + 1) * INDEX_MULT;
            assert!(
                range.contains(&index),
                "{queue} must number its Scripts in {range:?}, gave {index}"
            );
            assert_eq!(
                index,
                range.start + n as u32,
                "{queue}: Script n = {n} is queue index × 100000 + n"
            );
            runs.push((index, fail));
        }
    }
    check_lifecycles(&runs, &scripts.await.unwrap());
    assert_eq!(sim.running(), queues);
    stop.cancel();
    sim.stopped().await;
}
