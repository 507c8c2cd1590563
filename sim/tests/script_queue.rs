//! The ScriptQueue runs Scripts one after another, each a new `Script`
//! instance with a new SAL index that walks its states in order and ends.
//! This is the load that grew the replaced system's Redis all night, so it
//! must be simulated faithfully: a Script that never ends, or states out of
//! order, would hide what Meridian must handle.

use meridian_proto::{Csc, CscId, Value};
use meridian_sim::cscs::script_queue::script_state;
use meridian_sim::{AckState, Middleware, SimMiddleware, SimOptions};
use std::collections::BTreeMap;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const SCRIPTS: usize = 100;

fn int(fields: &[(String, Value)], name: &str) -> Option<i64> {
    fields.iter().find(|(k, _)| k == name).and_then(|(_, v)| match v {
        Value::Int(i) => Some(*i),
        _ => None,
    })
}

#[tokio::test]
async fn a_hundred_scripts_each_walk_their_states_in_order_and_end() {
    let sim = SimMiddleware::new();
    let stop = CancellationToken::new();
    let queue: CscId = "ScriptQueue:1".parse().unwrap();
    let options = SimOptions {
        start_enabled: true,
        ..SimOptions::default()
    };
    sim.start_with(&queue, options, stop.clone()).unwrap();
    let mut scripts = sim.subscribe_all_indices(&Csc::new("Script").unwrap()).unwrap();

    let mut indices = Vec::new();
    for i in 0..SCRIPTS {
        let fail = i % 10 == 9;
        let params = vec![
            ("isStandard".into(), Value::Bool(true)),
            ("path".into(), Value::Str("sleep.py".into())),
            (
                "config".into(),
                Value::Str(format!("duration: 0.05\nfail: {fail}")),
            ),
            ("location".into(), Value::Int(2)),
            ("locationSalIndex".into(), Value::Int(0)),
            ("logLevel".into(), Value::Int(20)),
            ("block".into(), Value::Str(String::new())),
            ("blockSize".into(), Value::Int(0)),
            ("startBlock".into(), Value::Bool(false)),
            ("executionId".into(), Value::Str(String::new())),
        ];
        let ack = sim
            .command(&queue, "add", params, Duration::from_secs(10))
            .await
            .unwrap()
            .final_ack()
            .await;
        assert_eq!(ack.state, AckState::Complete, "{ack:?}");
        indices.push(ack.result.parse::<u32>().expect("add returns the Script's index"));
    }
    let mut sorted = indices.clone();
    sorted.dedup();
    assert_eq!(sorted.len(), SCRIPTS, "every run gets a new index");
    assert!(indices.iter().all(|i| *i >= 100_000), "{indices:?}");

    // Collect each Script's `state` events until every one has ended.
    let mut states: BTreeMap<u32, Vec<i64>> = BTreeMap::new();
    let ended = |s: &BTreeMap<u32, Vec<i64>>| {
        s.values()
            .filter(|v| matches!(v.last(), Some(&script_state::DONE | &script_state::FAILED)))
            .count()
    };
    while ended(&states) < SCRIPTS {
        let event = tokio::time::timeout(Duration::from_secs(30), scripts.events.recv())
            .await
            .expect("Scripts stopped progressing")
            .expect("feed open");
        if event.topic == "state" {
            states
                .entry(event.salindex)
                .or_default()
                .push(int(&event.fields, "state").unwrap());
        }
    }
    for (n, index) in indices.iter().enumerate() {
        let mut walk = states[index].clone();
        walk.dedup();
        let end = if n % 10 == 9 {
            script_state::FAILED
        } else {
            script_state::DONE
        };
        assert_eq!(
            walk,
            [
                script_state::UNCONFIGURED,
                script_state::CONFIGURED,
                script_state::RUNNING,
                end
            ],
            "Script {index}"
        );
    }
    // Ended Scripts are gone from the middleware: only the queue runs.
    assert_eq!(sim.running(), [queue.clone()]);
    stop.cancel();
    sim.stopped().await;
}
