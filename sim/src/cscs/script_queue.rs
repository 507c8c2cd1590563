//! `ScriptQueue` and the `Script`s it runs.
//!
//! `add` queues a Script; the queue runs one at a time. Each run is a new
//! `Script` CSC whose SAL index is new for every run (from 100000 · queue
//! index upward), which walks UNCONFIGURED → CONFIGURED → RUNNING → DONE or
//! FAILED, logs messages and passes checkpoints, then exits: its instance
//! disappears from the middleware. Many short Scripts an hour is what grew
//! the replaced system's Redis without bound; here it is the load to test.
//!
//! A Script's configuration (the `config` parameter of `add`, YAML) may set
//! `duration: <seconds>` (default 2) and `fail: true`.

use crate::csc::{log_level, param_str, Behaviour, Ctx, Outcome, SimCsc};
use crate::interface::Interface;
use meridian_proto::{CscId, Fields, Value};
use std::collections::VecDeque;
use std::sync::Arc;

/// Script states (the interface's ScriptState enumeration).
pub mod script_state {
    pub const UNCONFIGURED: i64 = 1;
    pub const CONFIGURED: i64 = 2;
    pub const RUNNING: i64 = 3;
    pub const DONE: i64 = 8;
    pub const FAILED: i64 = 10;
}

/// Process states of a Script, as the queue reports them.
pub mod process_state {
    pub const LOADING: i64 = 1;
    pub const CONFIGURED: i64 = 2;
    pub const RUNNING: i64 = 3;
    pub const DONE: i64 = 4;
}

/// Default run time of a simulated Script, seconds.
pub const DEFAULT_DURATION_S: f64 = 2.0;

/// Longest queue accepted; `add` beyond it fails (the interface's arrays hold 400).
pub const MAX_QUEUE: usize = 400;

/// Checkpoints every simulated Script passes while running.
pub const CHECKPOINTS: usize = 3;

/// How often a running Script publishes its heartbeat, seconds (salobj's
/// `BaseScript` interval).
pub const SCRIPT_HEARTBEAT_S: f64 = 5.0;

struct Queued {
    index: u32,
    path: String,
    is_standard: bool,
    duration: f64,
    fail: bool,
}

struct Run {
    queued: Queued,
    csc: Arc<SimCsc>,
    started: f64,
    /// Next phase to publish: 0 loaded, 1 configured, 2 running, 3.. checkpoints, then end.
    phase: usize,
    /// When the Script publishes its next heartbeat (after the one it loads with).
    next_heartbeat: f64,
}

#[derive(Default)]
pub struct ScriptQueue {
    next_index: u32,
    queue: VecDeque<Queued>,
    past: VecDeque<u32>,
    current: Option<Run>,
    paused: bool,
    /// Time of the next automatic `add`, when `script_interval_s` is set.
    next_auto: f64,
}

fn padded(values: impl Iterator<Item = u32>, len: usize) -> Value {
    let mut v: Vec<i64> = values.take(len).map(i64::from).collect();
    v.resize(len, 0);
    Value::Ints(v)
}

/// `key: value` from a YAML-ish configuration, enough for the simulator's two keys.
fn config_value<'a>(config: &'a str, key: &str) -> Option<&'a str> {
    config.lines().find_map(|line| {
        let (k, v) = line.split_once(':')?;
        (k.trim() == key).then(|| v.trim())
    })
}

impl ScriptQueue {
    fn array_len(ctx: &Ctx, field: &str) -> usize {
        ctx.csc
            .interface
            .event("queue")
            .and_then(|t| t.fields.iter().find(|f| f.name == field))
            .and_then(|f| f.count)
            .unwrap_or(MAX_QUEUE as u32) as usize
    }

    fn publish_queue(&self, ctx: &mut Ctx) {
        let n = Self::array_len(ctx, "salIndices");
        let past_n = Self::array_len(ctx, "pastSalIndices");
        ctx.event(
            "queue",
            &[
                ("enabled", Value::Bool(true)),
                ("running", Value::Bool(!self.paused)),
                (
                    "currentSalIndex",
                    Value::Int(self.current.as_ref().map_or(0, |r| i64::from(r.queued.index))),
                ),
                ("length", Value::Int(self.queue.len() as i64)),
                ("salIndices", padded(self.queue.iter().map(|q| q.index), n)),
                ("pastLength", Value::Int(self.past.len() as i64)),
                ("pastSalIndices", padded(self.past.iter().copied(), past_n)),
            ],
        );
    }

    /// `availableScripts`: the scripts the automatic queue picks from, colon-separated.
    fn publish_available(&self, ctx: &mut Ctx) {
        ctx.event(
            "availableScripts",
            &[
                ("standard", Value::Str(AUTO_SCRIPTS.join(":"))),
                ("external", Value::Str(String::new())),
            ],
        );
    }

    fn publish_script(ctx: &mut Ctx, run: &Run, process: i64, state: i64) {
        ctx.event(
            "script",
            &[
                ("scriptSalIndex", Value::Int(i64::from(run.queued.index))),
                ("isStandard", Value::Bool(run.queued.is_standard)),
                ("path", Value::Str(run.queued.path.clone())),
                ("processState", Value::Int(process)),
                ("scriptState", Value::Int(state)),
            ],
        );
    }

    fn add(&mut self, path: &str, is_standard: bool, config: &str, ctx: &mut Ctx) -> Result<u32, String> {
        if self.queue.len() >= MAX_QUEUE {
            return Err(format!("the queue is full ({MAX_QUEUE} scripts)"));
        }
        if self.next_index == 0 {
            // Queue i numbers its Scripts i × 100000 + n, as the real one does
            // (saturating: a queue index above 42949 has no such range).
            self.next_index = 100_000u32.saturating_mul(ctx.csc.id.salindex.max(1));
        }
        let index = self.next_index;
        self.next_index = self.next_index.saturating_add(1);
        let duration = config_value(config, "duration")
            .and_then(|v| v.parse::<f64>().ok())
            .filter(|d| d.is_finite() && *d >= 0.0)
            .unwrap_or(DEFAULT_DURATION_S);
        let fail = config_value(config, "fail") == Some("true");
        self.queue.push_back(Queued {
            index,
            path: path.to_string(),
            is_standard,
            duration,
            fail,
        });
        self.publish_queue(ctx);
        Ok(index)
    }

    /// Starts the next Script if none runs: a new `Script` CSC instance.
    fn start_next(&mut self, ctx: &mut Ctx) {
        if self.current.is_some() || self.paused {
            return;
        }
        let Some(queued) = self.queue.pop_front() else {
            return;
        };
        let id = CscId {
            csc: meridian_proto::Csc::new("Script").expect("a valid name"),
            salindex: queued.index,
        };
        let interface = Interface::builtin("Script").unwrap_or_else(|| ctx.csc.interface.clone());
        let csc = ctx.registry.register_driven(id, interface);
        self.current = Some(Run {
            queued,
            csc,
            started: ctx.t,
            phase: 0,
            next_heartbeat: ctx.t + SCRIPT_HEARTBEAT_S,
        });
        self.publish_queue(ctx);
    }

    /// Publishes every phase of the running Script that is due by now.
    fn advance(&mut self, ctx: &mut Ctx) {
        if let Some(run) = self
            .current
            .as_mut()
            .filter(|r| r.phase > 0 && ctx.t >= r.next_heartbeat)
        {
            run.next_heartbeat = ctx.t + SCRIPT_HEARTBEAT_S;
            let csc = run.csc.clone();
            ctx.event_on(&csc, "heartbeat", &[("heartbeat", Value::Bool(true))]);
        }
        loop {
            let Some(run) = self.current.as_mut() else { return };
            let d = run.queued.duration;
            // Phase k is due at a fixed fraction of the run.
            let due = |k: usize| run.started + d * (k as f64) / (CHECKPOINTS as f64 + 4.0);
            if ctx.t < due(run.phase) {
                return;
            }
            let csc = run.csc.clone();
            let index = run.queued.index;
            match run.phase {
                0 => {
                    ctx.event_on(
                        &csc,
                        "description",
                        &[
                            ("classname", Value::Str(run.queued.path.replace('/', "."))),
                            (
                                "description",
                                Value::Str(format!("simulated script {}", run.queued.path)),
                            ),
                        ],
                    );
                    ctx.event_on(
                        &csc,
                        "state",
                        &[("state", Value::Int(script_state::UNCONFIGURED))],
                    );
                    ctx.event_on(&csc, "heartbeat", &[("heartbeat", Value::Bool(true))]);
                    Self::publish_script(ctx, run, process_state::LOADING, script_state::UNCONFIGURED);
                }
                1 => {
                    ctx.event_on(&csc, "metadata", &[("duration", Value::Float(d))]);
                    ctx.event_on(&csc, "state", &[("state", Value::Int(script_state::CONFIGURED))]);
                    Self::publish_script(ctx, run, process_state::CONFIGURED, script_state::CONFIGURED);
                }
                2 => {
                    ctx.event_on(&csc, "state", &[("state", Value::Int(script_state::RUNNING))]);
                    ctx.log_on(&csc, log_level::INFO, "running");
                    Self::publish_script(ctx, run, process_state::RUNNING, script_state::RUNNING);
                }
                k if k < 3 + CHECKPOINTS => {
                    let checkpoint = format!("step{}", k - 2);
                    ctx.event_on(
                        &csc,
                        "state",
                        &[
                            ("state", Value::Int(script_state::RUNNING)),
                            ("lastCheckpoint", Value::Str(checkpoint.clone())),
                            ("numCheckpoints", Value::Int((k - 2) as i64)),
                        ],
                    );
                    ctx.log_on(&csc, log_level::INFO, &format!("checkpoint {checkpoint}"));
                }
                _ => {
                    let (state, reason) = if run.queued.fail {
                        (script_state::FAILED, "failed as configured (fail: true)")
                    } else {
                        (script_state::DONE, "")
                    };
                    if run.queued.fail {
                        ctx.log_on(&csc, log_level::ERROR, reason);
                    }
                    ctx.event_on(
                        &csc,
                        "state",
                        &[
                            ("state", Value::Int(state)),
                            ("reason", Value::Str(reason.into())),
                        ],
                    );
                    Self::publish_script(ctx, run, process_state::DONE, state);
                    ctx.registry.remove(&csc.id);
                    self.current = None;
                    self.past.push_front(index);
                    self.past.truncate(MAX_QUEUE);
                    self.publish_queue(ctx);
                    self.start_next(ctx);
                    continue;
                }
            }
            run.phase += 1;
        }
    }
}

/// Scripts the automatic queue picks from (names of the observatory's standard scripts' kind).
const AUTO_SCRIPTS: &[&str] = &[
    "auxtel/take_image_latiss.py",
    "maintel/track_target.py",
    "auxtel/prepare_for/onsky.py",
    "sleep.py",
];

impl Behaviour for ScriptQueue {
    fn on_start(&mut self, ctx: &mut Ctx) {
        self.publish_available(ctx);
        self.publish_queue(ctx);
    }

    fn command(&mut self, name: &str, params: &Fields, _token: u64, ctx: &mut Ctx) -> Outcome {
        match name {
            "add" => {
                let path = param_str(params, "path").unwrap_or("script.py");
                let is_standard = params
                    .iter()
                    .any(|(k, v)| k == "isStandard" && *v == Value::Bool(true));
                let config = param_str(params, "config").unwrap_or("");
                match self.add(path, is_standard, config, ctx) {
                    Ok(index) => {
                        self.start_next(ctx);
                        Outcome::Done(index.to_string())
                    }
                    Err(reason) => Outcome::Failed(reason),
                }
            }
            "pause" => {
                self.paused = true;
                self.publish_queue(ctx);
                Outcome::Done("Done".into())
            }
            "resume" => {
                self.paused = false;
                self.start_next(ctx);
                self.publish_queue(ctx);
                Outcome::Done("Done".into())
            }
            "showAvailableScripts" => {
                self.publish_available(ctx);
                Outcome::Done("Done".into())
            }
            "showQueue" => {
                self.publish_queue(ctx);
                Outcome::Done("Done".into())
            }
            _ => Outcome::Done("Done".into()),
        }
    }

    fn step(&mut self, ctx: &mut Ctx) {
        let interval = ctx.options.script_interval_s;
        if interval > 0.0
            && ctx.csc.summary_state() == crate::csc::SummaryState::Enabled
            && ctx.t >= self.next_auto
        {
            self.next_auto = ctx.t + interval;
            let path = AUTO_SCRIPTS[(ctx.rng.next_u64() % AUTO_SCRIPTS.len() as u64) as usize];
            let duration = interval * (0.3 + 0.6 * ctx.rng.unit());
            let fail = ctx.rng.unit() < 0.1;
            let config = format!("duration: {duration:.2}\nfail: {fail}");
            if self.add(path, true, &config, ctx).is_ok() {
                self.start_next(ctx);
            }
        }
        self.advance(ctx);
    }
}
