//! Simulated telemetry keeps its rates: over a measured window each topic
//! publishes within 2 % of its nominal rate, on a fixed schedule that does
//! not drift with the time spent publishing. A simulator that drifts would
//! make every rate and lag figure measured with it wrong.
//!
//! Alone in its test binary so no other test competes for the CPU.

use meridian_proto::CscId;
use meridian_sim::{SimMiddleware, SimOptions};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_topic_publishes_at_its_rate_without_drift() {
    let sim = SimMiddleware::new();
    let stop = CancellationToken::new();
    let ids: Vec<CscId> = ["MTM1M3:0", "MTMount:0", "ATDome:0"]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
    for id in &ids {
        sim.start_with(id, SimOptions::default(), stop.clone()).unwrap();
    }
    let count = |sim: &SimMiddleware| -> Vec<(String, f64, u64)> {
        let mut out = Vec::new();
        for id in &ids {
            let csc = sim.csc(id).unwrap();
            for t in &csc.interface.telemetry {
                let rate = f64::from(t.rate_hz.unwrap());
                out.push((
                    format!("{id} {}", t.name),
                    rate,
                    csc.latest_telemetry().generation(&t.name),
                ));
            }
        }
        out
    };
    // Let every schedule publish its first sample, then measure two windows.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut windows = Vec::new();
    for _ in 0..2 {
        let (t0, c0) = (Instant::now(), count(&sim));
        tokio::time::sleep(Duration::from_secs(4)).await;
        let (t1, c1) = (Instant::now(), count(&sim));
        windows.push(((t1 - t0).as_secs_f64(), c0, c1));
    }
    for (elapsed, c0, c1) in &windows {
        for ((name, rate, n0), (_, _, n1)) in c0.iter().zip(c1) {
            let expected = rate * elapsed;
            let got = (n1 - n0) as f64;
            // 2 % of the expected count, and never less than the one sample
            // a window boundary can add or remove.
            let tolerance = (expected * 0.02).max(1.0);
            assert!(
                (got - expected).abs() <= tolerance,
                "{name}: {got} samples in {elapsed:.3} s, expected {expected:.1} at {rate} Hz"
            );
        }
    }
    stop.cancel();
    sim.stopped().await;
}
