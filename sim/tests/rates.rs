//! Simulated telemetry and heartbeats keep their rates: over a measured
//! window each telemetry topic publishes within 2 % of its configured rate,
//! and each CSC's `heartbeat` event within 2 % of 1 Hz, on a fixed schedule
//! that does not drift with the time spent publishing. A simulator that
//! drifts would make every rate and lag figure measured with it wrong, and a
//! late heartbeat makes operators' screens call a CSC lost.
//!
//! Rates are measured from the samples themselves, not by counting over a
//! wall-clock window: between two samples `a` and `b` of one topic the rate
//! is `(number of b - number of a) / (time of b - time of a)`, with the
//! times the CSC stamped on them. A window boundary then cannot add or
//! remove a sample, so 2 % means 2 % even for a 1 Hz topic over a few
//! seconds, and a topic that publishes too often, too rarely or skips ticks
//! fails. Drift fails too: a schedule that sleeps a period after each
//! publication falls behind by the publishing time at every tick, and the
//! lag it piles up over the window lowers the measured rate.
//!
//! Alone in its test binary so no other test competes for the CPU.

use meridian_proto::CscId;
use meridian_sim::{Middleware, SimMiddleware, SimOptions};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Every CSC `meridian sim` can start: each one's heartbeat is measured, and
/// the telemetry of those that have some.
const CSCS: &[&str] = &["MTM1M3:0", "MTMount:0", "ATDome:0", "ScriptQueue:1", "Test:1"];

/// The rate every CSC's `heartbeat` event must keep (the observatory's CSCs
/// beat once a second).
const HEARTBEAT_HZ: f64 = 1.0;

/// Allowed relative error of a measured rate (the 2 %).
const TOLERANCE: f64 = 0.02;

/// Least time the measured window spans: eight periods of the slowest
/// (1 Hz) series, so either end sample may be late by tens of milliseconds
/// (a busy machine) before a correct rate looks 2 % off.
const WINDOW_S: f64 = 8.0;

/// How long a condition may take before the test fails.
const DEADLINE: Duration = Duration::from_secs(20);

/// One sample of a series: its number in the series (counting from 1) and
/// the time its CSC stamped on it, Unix seconds.
#[derive(Debug, Clone, Copy)]
struct Mark {
    n: u64,
    ts: f64,
}

/// A series whose rate is measured: a telemetry topic or a CSC's heartbeat.
struct Series {
    name: String,
    hz: f64,
    source: Source,
}

enum Source {
    Telemetry { csc: CscId, topic: String },
    Heartbeat(CscId),
}

/// Heartbeats seen so far per CSC, as the latest [`Mark`].
type Heartbeats = Arc<Mutex<HashMap<CscId, Mark>>>;

/// The latest sample of every series; `None` for a series with none yet.
fn marks(sim: &SimMiddleware, heartbeats: &Heartbeats, series: &[Series]) -> Vec<Option<Mark>> {
    let heartbeats = heartbeats.lock().unwrap().clone();
    let mut telemetry: HashMap<CscId, (HashMap<String, u64>, Vec<meridian_sim::Published>)> = HashMap::new();
    series
        .iter()
        .map(|s| match &s.source {
            Source::Heartbeat(id) => heartbeats.get(id).copied(),
            Source::Telemetry { csc, topic } => {
                // One read per CSC gives each topic's latest value together
                // with its generation (how many values it has had).
                let (generations, samples) = telemetry.entry(csc.clone()).or_insert_with(|| {
                    let (mut generations, mut samples) = (HashMap::new(), Vec::new());
                    let running = sim.csc(csc).expect("CSC still running");
                    running
                        .latest_telemetry()
                        .changed_since(&mut generations, &mut samples);
                    (generations, samples)
                });
                let sample = samples.iter().find(|p| &p.topic == topic)?;
                Some(Mark {
                    n: generations[topic],
                    ts: sample.source_ts,
                })
            }
        })
        .collect()
}

/// The latest sample of every series once each has reached sample number
/// `want(i, series)`; else which one has not, for the timeout message.
fn reached(
    series: &[Series],
    now: Vec<Option<Mark>>,
    want: impl Fn(usize, &Series) -> u64,
) -> Result<Vec<Mark>, String> {
    let mut out = Vec::new();
    for (i, (m, s)) in now.into_iter().zip(series).enumerate() {
        let want = want(i, s);
        match m {
            Some(m) if m.n >= want => out.push(m),
            m => return Err(format!("{}: sample {} of {want}", s.name, m.map_or(0, |m| m.n))),
        }
    }
    Ok(out)
}

/// Polls `check` every 10 ms until it returns `Ok`, failing after
/// [`DEADLINE`] with `what` and the last reason `check` gave.
async fn wait_for<T>(what: &str, mut check: impl FnMut() -> Result<T, String>) -> T {
    let end = tokio::time::Instant::now() + DEADLINE;
    loop {
        match check() {
            Ok(v) => return v,
            Err(why) if tokio::time::Instant::now() > end => {
                panic!("timed out after {DEADLINE:?} waiting for {what}: {why}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_topic_and_heartbeat_publishes_at_its_rate_without_drift() {
    let sim = SimMiddleware::new();
    let stop = CancellationToken::new();
    let ids: Vec<CscId> = CSCS.iter().map(|s| s.parse().unwrap()).collect();
    let heartbeats: Heartbeats = Arc::default();
    let mut series = Vec::new();
    for id in &ids {
        sim.start_with(id, SimOptions::default(), stop.clone()).unwrap();
        // Read every event as it comes (a feed left unread would slow the
        // CSC down) and keep the latest heartbeat.
        let mut feed = sim.subscribe(id).unwrap();
        let (id2, heartbeats2) = (id.clone(), heartbeats.clone());
        tokio::spawn(async move {
            while let Some(event) = feed.events.recv().await {
                if event.topic == "heartbeat" {
                    let mut seen = heartbeats2.lock().unwrap();
                    let n = seen.get(&id2).map_or(0, |m| m.n) + 1;
                    seen.insert(
                        id2.clone(),
                        Mark {
                            n,
                            ts: event.source_ts,
                        },
                    );
                }
            }
        });
        series.push(Series {
            name: format!("{id} heartbeat"),
            hz: HEARTBEAT_HZ,
            source: Source::Heartbeat(id.clone()),
        });
        for t in &sim.csc(id).unwrap().interface.telemetry {
            series.push(Series {
                name: format!("{id} {}", t.name),
                hz: f64::from(t.rate_hz.expect("the simulator declares every rate")),
                source: Source::Telemetry {
                    csc: id.clone(),
                    topic: t.name.clone(),
                },
            });
        }
    }

    // The window opens at each series' second sample (its first, at
    // start-up, may be late while every CSC starts at once) and closes once
    // every series has published the samples `WINDOW_S` seconds hold at its
    // configured rate: a series that is too slow makes the wait longer and
    // then fails below.
    let start = wait_for("a second sample of every series", || {
        reached(&series, marks(&sim, &heartbeats, &series), |_, _| 2)
    })
    .await;
    let end = wait_for("the samples of the measured window", || {
        reached(&series, marks(&sim, &heartbeats, &series), |i, s| {
            start[i].n + (s.hz * WINDOW_S).ceil() as u64
        })
    })
    .await;
    let mut failures = Vec::new();
    for ((s, a), b) in series.iter().zip(&start).zip(&end) {
        let (intervals, span) = (b.n - a.n, b.ts - a.ts);
        let rate = intervals as f64 / span;
        if (rate - s.hz).abs() > s.hz * TOLERANCE {
            failures.push(format!(
                "{}: {intervals} intervals in {span:.4} s between sample timestamps = {rate:.4} Hz, \
                 configured {} Hz (±{} %)",
                s.name,
                s.hz,
                TOLERANCE * 100.0
            ));
        }
    }
    assert!(failures.is_empty(), "rates off:\n{}", failures.join("\n"));
    stop.cancel();
    sim.stopped().await;
}
