//! `[sim]`: the simulated CSCs that stand in for observatory hardware.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::validate::Problems;

/// `[sim]`: read by the simulator role (and `meridian up`).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct SimConfig {
    /// CSC instances the simulator runs, each `"NAME"` or `"NAME:INDEX"`
    /// like `producer.csc`, no instance twice (two copies would interleave
    /// their samples in the same streams). Default `["Test:1"]`, the test
    /// CSC a default producer serves.
    pub cscs: Vec<String>,
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
    }
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            cscs: vec!["Test:1".to_string()],
        }
    }
}
