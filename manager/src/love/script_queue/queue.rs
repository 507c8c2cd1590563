//! The state of one ScriptQueue as the replaced system's producer keeps
//! it, fed by the ScriptQueue's and its Scripts' events and read out as the
//! pseudo-CSC payloads its browser client shows (`love-research.md` §5.2).
//! No I/O and no clock: the caller passes times in, so it is tested alone.
//!
//! Rules kept from the replaced producer:
//! - every `queue` event replaces the waiting, current and finished lists
//!   (finished truncated to the configured size, 10 by default) and drops
//!   every script not in one of them;
//! - a `script` event creates or updates its script; Script events
//!   (`state`, `metadata`, `description`, `checkpoints`, `logLevel`,
//!   `heartbeat`) update a script already known, or one of this queue's
//!   (index `n` × 100000 + …), since the ScriptQueue's and the Scripts'
//!   events reach the store through different producers, in no set order;
//! - the whole state goes out on every change: `stateStream` after a
//!   `queue` event, `scriptsStream` after a `queue`, `script` or Script
//!   event, `availableScriptsStream` after `availableScripts` or
//!   `configSchema`;
//! - every [`HEARTBEAT_PERIOD_S`], one heartbeat report per current and
//!   waiting script, counting one more `lost` while its last heartbeat is
//!   older than [`SCRIPT_HEARTBEAT_INTERVAL_S`] plus that period.
//!
//! Where Meridian differs on purpose: the early Script events above; an empty name in `availableScripts`
//! (what splitting `""` on `:` gives) is not listed as a script, and an
//! unknown state number is named `UNKNOWN` instead of failing.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value as Json};
use std::collections::HashMap;

/// How often the replaced producer reports the heartbeats of the scripts
/// in the queue, seconds.
pub const HEARTBEAT_PERIOD_S: f64 = 2.0;

/// How often a Script publishes its heartbeat (salobj's `BaseScript`), seconds.
pub const SCRIPT_HEARTBEAT_INTERVAL_S: f64 = 5.0;

/// Most scripts one queue's state remembers. A queue lists at most 400
/// waiting scripts (the `queue` event's arrays), one current and the
/// finished ones; `script` events about scripts no `queue` event has listed
/// yet are the rest. Beyond the bound, scripts in no list are dropped
/// before the next `queue` event would drop them.
pub const MAX_SCRIPTS: usize = 1024;

/// Most scripts listed as available (each carries its configuration schema).
pub const MAX_AVAILABLE: usize = 4096;

/// Queue `n` numbers its Scripts from `n` × this (the ScriptQueue's `SCRIPT_INDEX_MULT`).
pub const SCRIPT_INDEX_MULT: u64 = 100_000;

/// `logging.INFO`, a script's log level until it reports one.
const DEFAULT_LOG_LEVEL: i64 = 20;

/// One event of the ScriptQueue or of one of its Scripts, as stored.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    /// ScriptQueue `queue`.
    Queue {
        enabled: bool,
        running: bool,
        current: u32,
        waiting: Vec<u32>,
        past: Vec<u32>,
    },
    /// ScriptQueue `script`: one script as the queue sees it.
    Script(ScriptReport),
    /// ScriptQueue `availableScripts`: colon-separated paths.
    Available { standard: String, external: String },
    /// ScriptQueue `configSchema` of one available script.
    ConfigSchema {
        standard: bool,
        path: String,
        schema: String,
    },
    /// A Script's own event (`salindex` is the Script's index).
    Own { salindex: u32, event: ScriptEvent },
}

/// ScriptQueue `script`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ScriptReport {
    pub salindex: u32,
    pub standard: bool,
    pub path: String,
    pub process_state: i64,
    pub script_state: i64,
    pub timestamp_configure_end: f64,
    pub timestamp_configure_start: f64,
    pub timestamp_process_end: f64,
    pub timestamp_process_start: f64,
    pub timestamp_run_start: f64,
}

/// The events of a Script the state follows.
#[derive(Debug, Clone, PartialEq)]
pub enum ScriptEvent {
    State {
        state: i64,
        last_checkpoint: String,
    },
    /// A heartbeat, received at `at` (Unix seconds).
    Heartbeat {
        at: f64,
    },
    Metadata {
        duration: f64,
    },
    Description {
        description: String,
        classname: String,
        remotes: String,
    },
    Checkpoints {
        pause: String,
        stop: String,
    },
    LogLevel {
        level: i64,
    },
}

impl Input {
    /// Reads an event of ScriptQueue topic `topic` (fields as stored: a JSON
    /// object). `None` for a topic the state does not follow or fields it
    /// cannot read.
    pub fn from_queue(topic: &str, fields: &Map<String, Json>) -> Option<Input> {
        let int = |name: &str| fields.get(name).and_then(Json::as_i64).unwrap_or(0);
        let float = |name: &str| fields.get(name).and_then(Json::as_f64).unwrap_or(0.0);
        let text = |name: &str| fields.get(name).and_then(Json::as_str).unwrap_or("").to_string();
        let flag = |name: &str| match fields.get(name) {
            Some(Json::Bool(b)) => *b,
            Some(v) => v.as_i64().is_some_and(|i| i != 0),
            None => false,
        };
        let indices = |name: &str, len: &str| -> Vec<u32> {
            let len = usize::try_from(int(len)).unwrap_or(0);
            fields
                .get(name)
                .and_then(Json::as_array)
                .map(|items| {
                    items
                        .iter()
                        .take(len)
                        .filter_map(|i| i.as_u64().and_then(|i| u32::try_from(i).ok()))
                        .collect()
                })
                .unwrap_or_default()
        };
        Some(match topic {
            "queue" => Input::Queue {
                enabled: flag("enabled"),
                running: flag("running"),
                current: u32::try_from(int("currentSalIndex")).unwrap_or(0),
                waiting: indices("salIndices", "length"),
                past: indices("pastSalIndices", "pastLength"),
            },
            "script" => Input::Script(ScriptReport {
                salindex: u32::try_from(int("scriptSalIndex")).ok()?,
                standard: flag("isStandard"),
                path: text("path"),
                process_state: int("processState"),
                script_state: int("scriptState"),
                timestamp_configure_end: float("timestampConfigureEnd"),
                timestamp_configure_start: float("timestampConfigureStart"),
                timestamp_process_end: float("timestampProcessEnd"),
                timestamp_process_start: float("timestampProcessStart"),
                timestamp_run_start: float("timestampRunStart"),
            }),
            "availableScripts" => Input::Available {
                standard: text("standard"),
                external: text("external"),
            },
            "configSchema" => Input::ConfigSchema {
                standard: flag("isStandard"),
                path: text("path"),
                schema: text("configSchema"),
            },
            _ => return None,
        })
    }

    /// Reads an event of Script topic `topic` from instance `salindex`,
    /// received at `at` (Unix seconds).
    pub fn from_script(topic: &str, salindex: u32, at: f64, fields: &Map<String, Json>) -> Option<Input> {
        let int = |name: &str| fields.get(name).and_then(Json::as_i64).unwrap_or(0);
        let text = |name: &str| fields.get(name).and_then(Json::as_str).unwrap_or("").to_string();
        let event = match topic {
            "state" => ScriptEvent::State {
                state: int("state"),
                last_checkpoint: text("lastCheckpoint"),
            },
            "heartbeat" => ScriptEvent::Heartbeat { at },
            "metadata" => ScriptEvent::Metadata {
                duration: fields.get("duration").and_then(Json::as_f64).unwrap_or(0.0),
            },
            "description" => ScriptEvent::Description {
                description: text("description"),
                classname: text("classname"),
                remotes: text("remotes"),
            },
            "checkpoints" => ScriptEvent::Checkpoints {
                pause: text("pause"),
                stop: text("stop"),
            },
            "logLevel" => ScriptEvent::LogLevel { level: int("level") },
            _ => return None,
        };
        Some(Input::Own { salindex, event })
    }
}

/// ScriptQueue topics the state follows.
pub const QUEUE_TOPICS: &[&str] = &["queue", "script", "availableScripts", "configSchema"];

/// Script topics the state follows.
pub const SCRIPT_TOPICS: &[&str] = &[
    "state",
    "heartbeat",
    "metadata",
    "description",
    "checkpoints",
    "logLevel",
];

/// One script as the replaced client reads it (its producer's field names
/// and order; `remote` and `setup` are its internal fields, sent as well).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Script {
    pub remote: Option<Json>,
    pub setup: bool,
    pub index: u32,
    pub path: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub process_state: String,
    pub script_state: String,
    #[serde(rename = "timestampConfigureEnd")]
    pub timestamp_configure_end: f64,
    #[serde(rename = "timestampConfigureStart")]
    pub timestamp_configure_start: f64,
    #[serde(rename = "timestampProcessEnd")]
    pub timestamp_process_end: f64,
    #[serde(rename = "timestampProcessStart")]
    pub timestamp_process_start: f64,
    #[serde(rename = "timestampRunStart")]
    pub timestamp_run_start: f64,
    pub expected_duration: f64,
    pub last_checkpoint: String,
    pub description: String,
    pub classname: String,
    pub remotes: String,
    pub last_heartbeat_timestamp: f64,
    pub lost_heartbeats: u32,
    pub pause_checkpoints: String,
    pub stop_checkpoints: String,
    pub log_level: i64,
}

impl Script {
    /// A script known only by its index.
    fn empty(index: u32) -> Script {
        let unknown = || "UNKNOWN".to_string();
        Script {
            remote: None,
            setup: true,
            index,
            path: unknown(),
            kind: unknown(),
            process_state: unknown(),
            script_state: unknown(),
            timestamp_configure_end: 0.0,
            timestamp_configure_start: 0.0,
            timestamp_process_end: 0.0,
            timestamp_process_start: 0.0,
            timestamp_run_start: 0.0,
            expected_duration: 0.0,
            last_checkpoint: String::new(),
            description: String::new(),
            classname: String::new(),
            remotes: String::new(),
            last_heartbeat_timestamp: 0.0,
            lost_heartbeats: 0,
            pause_checkpoints: String::new(),
            stop_checkpoints: String::new(),
            log_level: DEFAULT_LOG_LEVEL,
        }
    }
}

/// The name of a ScriptQueue `processState` (`ScriptProcessState`, from 1).
pub fn process_state_name(state: i64) -> &'static str {
    const NAMES: &[&str] = &[
        "LOADING",
        "CONFIGURED",
        "RUNNING",
        "DONE",
        "LOADFAILED",
        "CONFIGUREFAILED",
        "TERMINATED",
    ];
    name(NAMES, state)
}

/// The name of a Script `state` (`ScriptState`, from 1).
pub fn script_state_name(state: i64) -> &'static str {
    const NAMES: &[&str] = &[
        "UNCONFIGURED",
        "CONFIGURED",
        "RUNNING",
        "PAUSED",
        "ENDING",
        "STOPPING",
        "FAILING",
        "DONE",
        "STOPPED",
        "FAILED",
        "CONFIGURE_FAILED",
    ];
    name(NAMES, state)
}

fn name(names: &[&'static str], value: i64) -> &'static str {
    usize::try_from(value - 1)
        .ok()
        .and_then(|i| names.get(i))
        .copied()
        .unwrap_or("UNKNOWN")
}

/// Which pseudo-CSC streams an input changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Changed {
    pub state: bool,
    pub scripts: bool,
    pub available: bool,
}

impl Changed {
    pub fn any(self) -> bool {
        self.state || self.scripts || self.available
    }

    pub fn or(self, other: Changed) -> Changed {
        Changed {
            state: self.state || other.state,
            scripts: self.scripts || other.scripts,
            available: self.available || other.available,
        }
    }
}

/// A script's heartbeat as reported.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Heartbeat {
    pub lost: u32,
    /// When its last heartbeat arrived (Unix seconds), -1 before the first.
    pub last: f64,
}

impl Default for Heartbeat {
    fn default() -> Self {
        Heartbeat { lost: 0, last: -1.0 }
    }
}

/// One ScriptQueue's state.
#[derive(Debug, Clone)]
pub struct QueueState {
    /// The queue's SAL index.
    pub index: u32,
    finished_size: usize,
    enabled: bool,
    running: bool,
    current: Vec<u32>,
    waiting: Vec<u32>,
    finished: Vec<u32>,
    scripts: HashMap<u32, Script>,
    heartbeats: HashMap<u32, Heartbeat>,
    /// Available scripts in the order first seen: standard, then external.
    standard: Vec<(String, String)>,
    external: Vec<(String, String)>,
}

impl QueueState {
    /// An empty state of queue `index` keeping `finished_size` finished scripts.
    pub fn new(index: u32, finished_size: usize) -> QueueState {
        QueueState {
            index,
            finished_size,
            enabled: false,
            running: false,
            current: Vec::new(),
            waiting: Vec::new(),
            finished: Vec::new(),
            scripts: HashMap::new(),
            heartbeats: HashMap::new(),
            standard: Vec::new(),
            external: Vec::new(),
        }
    }

    /// Applies one event; says which streams must go out again.
    pub fn apply(&mut self, input: &Input) -> Changed {
        match input {
            Input::Queue {
                enabled,
                running,
                current,
                waiting,
                past,
            } => {
                self.enabled = *enabled;
                self.running = *running;
                self.current = if *current > 0 { vec![*current] } else { Vec::new() };
                self.waiting = waiting.clone();
                self.finished = past.iter().take(self.finished_size).copied().collect();
                let listed = self.listed();
                self.scripts.retain(|i, _| listed.contains(i));
                self.heartbeats.retain(|i, _| listed.contains(i));
                for i in listed {
                    self.scripts.entry(i).or_insert_with(|| Script::empty(i));
                    self.heartbeats.entry(i).or_default();
                }
                Changed {
                    state: true,
                    scripts: true,
                    available: false,
                }
            }
            Input::Script(report) => {
                if !self.scripts.contains_key(&report.salindex) && self.scripts.len() >= MAX_SCRIPTS {
                    let listed = self.listed();
                    self.scripts.retain(|i, _| listed.contains(i));
                    if self.scripts.len() >= MAX_SCRIPTS {
                        return Changed::default();
                    }
                }
                let s = self
                    .scripts
                    .entry(report.salindex)
                    .or_insert_with(|| Script::empty(report.salindex));
                s.kind = if report.standard { "standard" } else { "external" }.into();
                s.path = report.path.clone();
                s.process_state = process_state_name(report.process_state).into();
                s.script_state = script_state_name(report.script_state).into();
                s.timestamp_configure_end = report.timestamp_configure_end;
                s.timestamp_configure_start = report.timestamp_configure_start;
                s.timestamp_process_end = report.timestamp_process_end;
                s.timestamp_process_start = report.timestamp_process_start;
                s.timestamp_run_start = report.timestamp_run_start;
                scripts_changed()
            }
            Input::Available { standard, external } => {
                for (list, paths) in [(&mut self.standard, standard), (&mut self.external, external)] {
                    for path in paths.split(':').filter(|p| !p.is_empty()) {
                        if list.len() < MAX_AVAILABLE && !list.iter().any(|(p, _)| p == path) {
                            list.push((path.to_string(), String::new()));
                        }
                    }
                }
                available_changed()
            }
            Input::ConfigSchema {
                standard,
                path,
                schema,
            } => {
                let list = if *standard {
                    &mut self.standard
                } else {
                    &mut self.external
                };
                let schema = if schema.is_empty() {
                    "# empty schema"
                } else {
                    schema
                };
                match list.iter().position(|(p, _)| p == path) {
                    Some(i) => list[i].1 = schema.to_string(),
                    None if list.len() < MAX_AVAILABLE => list.push((path.clone(), schema.to_string())),
                    None => return Changed::default(),
                }
                available_changed()
            }
            Input::Own { salindex, event } => {
                // Each producer's events reach the store on their own: a
                // Script's first events may be stored before the queue's
                // event that lists it. They are kept if the Script is one
                // of this queue's; the next `queue` event decides.
                let ours = self.owns(*salindex);
                if let ScriptEvent::Heartbeat { at } = event {
                    let room = self.heartbeats.len() < MAX_SCRIPTS;
                    match self.heartbeats.get_mut(salindex) {
                        Some(h) => h.last = *at,
                        None if ours && room => {
                            self.heartbeats
                                .insert(*salindex, Heartbeat { lost: 0, last: *at });
                        }
                        None => {}
                    }
                    return Changed::default();
                }
                if ours && !self.scripts.contains_key(salindex) && self.scripts.len() < MAX_SCRIPTS {
                    self.scripts.insert(*salindex, Script::empty(*salindex));
                }
                let Some(s) = self.scripts.get_mut(salindex) else {
                    return Changed::default();
                };
                match event {
                    ScriptEvent::State {
                        state,
                        last_checkpoint,
                    } => {
                        s.script_state = script_state_name(*state).into();
                        s.last_checkpoint = last_checkpoint.clone();
                    }
                    ScriptEvent::Metadata { duration } => s.expected_duration = *duration,
                    ScriptEvent::Description {
                        description,
                        classname,
                        remotes,
                    } => {
                        s.description = description.clone();
                        s.classname = classname.clone();
                        s.remotes = remotes.clone();
                    }
                    ScriptEvent::Checkpoints { pause, stop } => {
                        s.pause_checkpoints = pause.clone();
                        s.stop_checkpoints = stop.clone();
                    }
                    ScriptEvent::LogLevel { level } => s.log_level = *level,
                    ScriptEvent::Heartbeat { .. } => {}
                }
                // A script in no list is not shown: nothing to send again.
                let shown = [&self.current, &self.waiting, &self.finished]
                    .iter()
                    .any(|list| list.contains(salindex));
                if shown {
                    scripts_changed()
                } else {
                    Changed::default()
                }
            }
        }
    }

    /// Whether Script `salindex` is one this queue runs: queue `n` numbers
    /// its Scripts `n` × [`SCRIPT_INDEX_MULT`] + 0…99999.
    fn owns(&self, salindex: u32) -> bool {
        u64::from(salindex) / SCRIPT_INDEX_MULT == u64::from(self.index)
    }

    /// Every script in the waiting, current or finished list.
    fn listed(&self) -> std::collections::HashSet<u32> {
        self.waiting
            .iter()
            .chain(&self.current)
            .chain(&self.finished)
            .copied()
            .collect()
    }

    /// How many scripts the state remembers (bounded by [`MAX_SCRIPTS`] and the lists).
    pub fn scripts_known(&self) -> usize {
        self.scripts.len()
    }

    /// The heartbeat reports due now (`now` in Unix seconds): one per
    /// current and waiting script, in that order, each counting one more
    /// lost heartbeat if its last is too old.
    pub fn heartbeat_tick(&mut self, now: f64) -> Vec<(u32, Heartbeat)> {
        let due: Vec<u32> = self.current.iter().chain(&self.waiting).copied().collect();
        due.into_iter()
            .map(|i| {
                let h = self.heartbeats.entry(i).or_default();
                if h.last < now - SCRIPT_HEARTBEAT_INTERVAL_S - HEARTBEAT_PERIOD_S {
                    h.lost = h.lost.saturating_add(1);
                } else {
                    h.lost = 0;
                }
                (i, *h)
            })
            .collect()
    }

    /// `stateStream`: `{"enabled","running"}`.
    pub fn state_json(&self) -> String {
        serde_json::json!({"enabled": self.enabled, "running": self.running}).to_string()
    }

    /// `scriptsStream`: `{"current_scripts","waiting_scripts","finished_scripts"}`.
    pub fn scripts_json(&self) -> String {
        let list = |indices: &[u32]| -> Vec<&Script> {
            indices.iter().filter_map(|i| self.scripts.get(i)).collect()
        };
        #[derive(Serialize)]
        struct Scripts<'a> {
            current_scripts: Vec<&'a Script>,
            waiting_scripts: Vec<&'a Script>,
            finished_scripts: Vec<&'a Script>,
        }
        serde_json::to_string(&Scripts {
            current_scripts: list(&self.current),
            waiting_scripts: list(&self.waiting),
            finished_scripts: list(&self.finished),
        })
        .unwrap_or_else(|_| "{}".into())
    }

    /// `availableScriptsStream`: `{"available_scripts":[{"type","path","configSchema"}]}`.
    pub fn available_json(&self) -> String {
        let entries: Vec<Json> = [("standard", &self.standard), ("external", &self.external)]
            .into_iter()
            .flat_map(|(kind, list)| {
                list.iter()
                    .map(move |(path, schema)| serde_json::json!({"type": kind, "path": path, "configSchema": schema}))
            })
            .collect();
        serde_json::json!({ "available_scripts": entries }).to_string()
    }

    /// `ScriptHeartbeats` `stream`: `{"script_heartbeat":{"salindex","lost","last_heartbeat_timestamp"}}`.
    pub fn heartbeat_json(salindex: u32, h: Heartbeat) -> String {
        let last = serde_json::Number::from_f64(h.last).map_or(Json::Null, Json::Number);
        serde_json::json!({"script_heartbeat": {"salindex": salindex, "lost": h.lost, "last_heartbeat_timestamp": last}})
            .to_string()
    }

    /// Takes back what this state last sent (after a restart): the three
    /// stream payloads, each if stored. Unreadable parts are left empty.
    pub fn restore(&mut self, state: Option<&str>, scripts: Option<&str>, available: Option<&str>) {
        if let Some(v) = state.and_then(|s| serde_json::from_str::<Json>(s).ok()) {
            self.enabled = v.get("enabled").and_then(Json::as_bool).unwrap_or(false);
            self.running = v.get("running").and_then(Json::as_bool).unwrap_or(false);
        }
        #[derive(Deserialize)]
        struct Scripts {
            current_scripts: Vec<Script>,
            waiting_scripts: Vec<Script>,
            finished_scripts: Vec<Script>,
        }
        if let Some(s) = scripts.and_then(|s| serde_json::from_str::<Scripts>(s).ok()) {
            let mut take = |list: Vec<Script>| -> Vec<u32> {
                list.into_iter()
                    .take(MAX_SCRIPTS)
                    .map(|script| {
                        let i = script.index;
                        self.heartbeats.entry(i).or_default();
                        self.scripts.insert(i, script);
                        i
                    })
                    .collect()
            };
            self.current = take(s.current_scripts);
            self.waiting = take(s.waiting_scripts);
            self.finished = take(s.finished_scripts);
            self.finished.truncate(self.finished_size);
            let listed = self.listed();
            self.scripts.retain(|i, _| listed.contains(i));
            self.heartbeats.retain(|i, _| listed.contains(i));
        }
        if let Some(v) = available.and_then(|s| serde_json::from_str::<Json>(s).ok()) {
            for entry in v["available_scripts"].as_array().into_iter().flatten() {
                let path = entry["path"].as_str().unwrap_or("").to_string();
                let schema = entry["configSchema"].as_str().unwrap_or("").to_string();
                let list = match entry["type"].as_str() {
                    Some("external") => &mut self.external,
                    _ => &mut self.standard,
                };
                if !path.is_empty() && list.len() < MAX_AVAILABLE && !list.iter().any(|(p, _)| *p == path) {
                    list.push((path, schema));
                }
            }
        }
    }

    /// Takes back a script's heartbeat report (after a restart).
    pub fn restore_heartbeat(&mut self, salindex: u32, h: Heartbeat) {
        if let Some(known) = self.heartbeats.get_mut(&salindex) {
            *known = h;
        }
    }
}

fn scripts_changed() -> Changed {
    Changed {
        scripts: true,
        ..Changed::default()
    }
}

fn available_changed() -> Changed {
    Changed {
        available: true,
        ..Changed::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queue(current: u32, waiting: &[u32], past: &[u32]) -> Input {
        Input::Queue {
            enabled: true,
            running: true,
            current,
            waiting: waiting.to_vec(),
            past: past.to_vec(),
        }
    }

    fn scripts(q: &QueueState) -> Json {
        serde_json::from_str(&q.scripts_json()).unwrap()
    }

    fn indices(v: &Json, list: &str) -> Vec<u64> {
        v[list]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["index"].as_u64().unwrap())
            .collect()
    }

    #[test]
    fn a_script_goes_waiting_current_finished_with_its_details() {
        let mut q = QueueState::new(1, 10);
        assert_eq!(
            q.apply(&queue(0, &[100_000], &[])),
            Changed {
                state: true,
                scripts: true,
                available: false
            }
        );
        let v = scripts(&q);
        assert_eq!(indices(&v, "waiting_scripts"), [100_000]);
        assert_eq!(v["waiting_scripts"][0]["path"], "UNKNOWN");
        assert_eq!(v["waiting_scripts"][0]["log_level"], 20);
        q.apply(&Input::Script(ScriptReport {
            salindex: 100_000,
            standard: true,
            path: "sleep.py".into(),
            process_state: 3,
            script_state: 3,
            timestamp_run_start: 12.5,
            ..ScriptReport::default()
        }));
        q.apply(&queue(100_000, &[], &[]));
        q.apply(&Input::Own {
            salindex: 100_000,
            event: ScriptEvent::State {
                state: 3,
                last_checkpoint: "step1".into(),
            },
        });
        let v = scripts(&q);
        let current = &v["current_scripts"][0];
        assert_eq!(
            (
                current["type"].as_str(),
                current["path"].as_str(),
                current["process_state"].as_str()
            ),
            (Some("standard"), Some("sleep.py"), Some("RUNNING"))
        );
        assert_eq!(current["script_state"], "RUNNING");
        assert_eq!(current["last_checkpoint"], "step1");
        assert_eq!(current["timestampRunStart"], 12.5);
        q.apply(&Input::Own {
            salindex: 100_000,
            event: ScriptEvent::State {
                state: 8,
                last_checkpoint: String::new(),
            },
        });
        q.apply(&queue(0, &[], &[100_000]));
        let v = scripts(&q);
        assert_eq!(indices(&v, "finished_scripts"), [100_000]);
        assert_eq!(v["finished_scripts"][0]["script_state"], "DONE");
        assert!(indices(&v, "current_scripts").is_empty());
        assert_eq!(q.state_json(), r#"{"enabled":true,"running":true}"#);
    }

    #[test]
    fn the_finished_list_is_truncated_and_scripts_in_no_list_are_dropped() {
        let mut q = QueueState::new(1, 3);
        let past: Vec<u32> = (0..8).rev().map(|i| 100_000 + i).collect();
        for i in &past {
            q.apply(&Input::Script(ScriptReport {
                salindex: *i,
                ..ScriptReport::default()
            }));
        }
        assert_eq!(q.scripts_known(), 8);
        q.apply(&queue(0, &[], &past));
        assert_eq!(
            indices(&scripts(&q), "finished_scripts"),
            [100_007, 100_006, 100_005]
        );
        assert_eq!(q.scripts_known(), 3);
        // An event of another queue's script changes nothing.
        let other = Input::Own {
            salindex: 200_000,
            event: ScriptEvent::LogLevel { level: 10 },
        };
        assert_eq!(q.apply(&other), Changed::default());
        // One of this queue's, stored before the `queue` event listing it, is kept until the next one.
        let early = Input::Own {
            salindex: 100_008,
            event: ScriptEvent::Metadata { duration: 3.0 },
        };
        assert_eq!(q.apply(&early), Changed::default(), "not shown yet");
        q.apply(&Input::Own {
            salindex: 100_008,
            event: ScriptEvent::Heartbeat { at: 5.0 },
        });
        q.apply(&queue(100_008, &[], &past));
        let v = scripts(&q);
        assert_eq!(v["current_scripts"][0]["expected_duration"], 3.0);
        assert_eq!(
            q.heartbeat_tick(6.0)[0],
            (100_008, Heartbeat { lost: 0, last: 5.0 })
        );
        q.apply(&queue(0, &[], &past));
        assert_eq!(q.scripts_known(), 3);
    }

    #[test]
    fn heartbeats_count_losses_per_current_and_waiting_script() {
        let mut q = QueueState::new(2, 10);
        q.apply(&queue(200_000, &[200_001], &[199_999]));
        q.apply(&Input::Own {
            salindex: 200_000,
            event: ScriptEvent::Heartbeat { at: 100.0 },
        });
        // Current first, then waiting; finished ones get none.
        let beats = q.heartbeat_tick(101.0);
        assert_eq!(
            beats.iter().map(|(i, _)| *i).collect::<Vec<_>>(),
            [200_000, 200_001]
        );
        assert_eq!(beats[0].1, Heartbeat { lost: 0, last: 100.0 });
        assert_eq!(beats[1].1, Heartbeat { lost: 1, last: -1.0 });
        // 7 s (interval + period) without one: lost, counted on every tick.
        let beats = q.heartbeat_tick(107.5);
        assert_eq!(beats[0].1.lost, 1);
        assert_eq!(q.heartbeat_tick(109.5)[0].1.lost, 2);
        q.apply(&Input::Own {
            salindex: 200_000,
            event: ScriptEvent::Heartbeat { at: 110.0 },
        });
        assert_eq!(q.heartbeat_tick(111.0)[0].1.lost, 0);
        let v: Json = serde_json::from_str(&QueueState::heartbeat_json(
            200_000,
            Heartbeat { lost: 3, last: -1.0 },
        ))
        .unwrap();
        assert_eq!(
            v,
            serde_json::json!({"script_heartbeat": {"salindex": 200_000, "lost": 3, "last_heartbeat_timestamp": -1.0}})
        );
    }

    #[test]
    fn available_scripts_keep_their_first_order_and_get_schemas() {
        let mut q = QueueState::new(1, 10);
        q.apply(&Input::Available {
            standard: "b.py:a.py".into(),
            external: "".into(),
        });
        q.apply(&Input::Available {
            standard: "a.py:c.py".into(),
            external: "x.py".into(),
        });
        q.apply(&Input::ConfigSchema {
            standard: true,
            path: "a.py".into(),
            schema: "type: object".into(),
        });
        let v: Json = serde_json::from_str(&q.available_json()).unwrap();
        let listed: Vec<(String, String, String)> = v["available_scripts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                (
                    e["type"].as_str().unwrap().into(),
                    e["path"].as_str().unwrap().into(),
                    e["configSchema"].as_str().unwrap().into(),
                )
            })
            .collect();
        let s = |a: &str, b: &str, c: &str| (a.to_string(), b.to_string(), c.to_string());
        assert_eq!(
            listed,
            [
                s("standard", "b.py", ""),
                s("standard", "a.py", "type: object"),
                s("standard", "c.py", ""),
                s("external", "x.py", "")
            ]
        );
    }

    #[test]
    fn what_was_sent_is_taken_back_after_a_restart() {
        let mut q = QueueState::new(1, 10);
        q.apply(&queue(100_001, &[100_002], &[100_000]));
        q.apply(&Input::Own {
            salindex: 100_001,
            event: ScriptEvent::Metadata { duration: 30.0 },
        });
        q.apply(&Input::Available {
            standard: "a.py".into(),
            external: String::new(),
        });
        let mut back = QueueState::new(1, 10);
        back.restore(
            Some(&q.state_json()),
            Some(&q.scripts_json()),
            Some(&q.available_json()),
        );
        assert_eq!(back.state_json(), q.state_json());
        assert_eq!(back.scripts_json(), q.scripts_json());
        assert_eq!(back.available_json(), q.available_json());
        back.restore_heartbeat(100_001, Heartbeat { lost: 2, last: 50.0 });
        assert_eq!(back.heartbeat_tick(51.0)[0].1, Heartbeat { lost: 0, last: 50.0 });
    }

    #[test]
    fn stored_fields_are_read_as_the_interface_names_them() {
        let fields = serde_json::json!({
            "enabled": true, "running": false, "currentSalIndex": 100_003, "length": 2,
            "salIndices": [100_004, 100_005, 0, 0], "pastLength": 1, "pastSalIndices": [100_002, 0, 0, 0]
        });
        assert_eq!(
            Input::from_queue("queue", fields.as_object().unwrap()),
            Some(Input::Queue {
                enabled: true,
                running: false,
                current: 100_003,
                waiting: vec![100_004, 100_005],
                past: vec![100_002]
            })
        );
        let fields = serde_json::json!({"state": 10, "reason": "x", "lastCheckpoint": "end"});
        assert_eq!(
            Input::from_script("state", 7, 1.0, fields.as_object().unwrap()),
            Some(Input::Own {
                salindex: 7,
                event: ScriptEvent::State {
                    state: 10,
                    last_checkpoint: "end".into()
                }
            })
        );
        assert_eq!(script_state_name(11), "CONFIGURE_FAILED");
        assert_eq!(process_state_name(0), "UNKNOWN");
        assert_eq!(Input::from_queue("nextVisit", &Map::new()), None);
    }
}
