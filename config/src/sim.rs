//! `[sim]`: the simulated CSCs that stand in for observatory hardware.

use std::collections::BTreeSet;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::validate::Problems;

/// `[sim]`: read by the simulator role (`meridian sim`, and the CSCs that
/// `meridian up`, a standalone producer or commander simulate).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct SimConfig {
    /// CSC instances the simulator runs, each `"NAME"` or `"NAME:INDEX"`
    /// like `producer.csc`, no instance twice (two copies would interleave
    /// their samples in the same streams). Default: a night-like set —
    /// `MTM1M3:0`, `MTMount:0`, `ATDome:0`, `ScriptQueue:1`, `ScriptQueue:2`,
    /// `ScriptQueue:3`, `Test:1`. The summit runs three ScriptQueues (Main,
    /// Aux, OCS), each numbering its Scripts from index × 100000, so a night
    /// has three interleaved streams of new Script indices.
    pub cscs: Vec<String>,
    /// Multiplies every simulated telemetry rate, for stress tests: 2.0
    /// publishes M1M3's 50 Hz topics at 100 Hz. Greater than 0, at most
    /// 1000. Default 1.0 (the real rates).
    pub rate_multiplier: f64,
    /// Seed of every simulated value, so a run can be reproduced exactly.
    /// Default 1.
    pub seed: u64,
    /// Start CSCs in ENABLED, as in a night in progress (motions and
    /// Scripts run at once); false starts them in STANDBY, as after a
    /// restart. Default true.
    pub start_enabled: bool,
    /// A ScriptQueue adds a simulated Script by itself every this many
    /// seconds, 0 to 86400; 0 adds Scripts only when commanded (`add`).
    /// Default 20: a night runs many short Scripts.
    pub script_interval_s: f64,
    /// Directory of the site's XML interface definitions (one folder per
    /// CSC, plus SALGenerics.xml). Unset: the interfaces built into
    /// Meridian. Default unset.
    pub interfaces: Option<PathBuf>,
}

impl SimConfig {
    pub(crate) fn check(&self, problems: &mut Problems) {
        let mut seen = BTreeSet::new();
        for (i, csc) in self.cscs.iter().enumerate() {
            let key = format!("sim.cscs[{i}]");
            if let Some(parsed) = problems.csc(&key, csc) {
                if !seen.insert(parsed) {
                    problems.push(key, "each CSC instance once", format!("{csc:?} again"));
                }
            }
        }
        if !(self.rate_multiplier > 0.0 && self.rate_multiplier <= 1000.0) {
            problems.push(
                "sim.rate_multiplier",
                "a number greater than 0 and at most 1000",
                self.rate_multiplier.to_string(),
            );
        }
        if !(0.0..=86_400.0).contains(&self.script_interval_s) {
            problems.push(
                "sim.script_interval_s",
                "a number of seconds from 0 to 86400",
                self.script_interval_s.to_string(),
            );
        }
        if self.interfaces.as_ref().is_some_and(|p| p.as_os_str().is_empty()) {
            problems.push("sim.interfaces", "a directory path", "an empty string");
        }
    }
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            cscs: [
                "MTM1M3:0",
                "MTMount:0",
                "ATDome:0",
                "ScriptQueue:1",
                "ScriptQueue:2",
                "ScriptQueue:3",
                "Test:1",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect(),
            rate_multiplier: 1.0,
            seed: 1,
            start_enabled: true,
            script_interval_s: 20.0,
            interfaces: None,
        }
    }
}
