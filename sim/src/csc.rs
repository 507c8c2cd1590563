//! What every simulated CSC shares: the summary state machine, the generic
//! events, heartbeats, command acknowledgements, and a drift-free telemetry
//! schedule, and the [`Registry`] of the CSCs running in a process. What
//! differs between CSCs lives in a [`Behaviour`].

use crate::interface::{Interface, Part};
use crate::middleware::{Ack, AckState, CscFeed, LatestTelemetry, Published, EVENT_FEED_CAPACITY};
use crate::signal::{fields_for, Rng, TopicSignal};
use meridian_proto::{unix_now, Category, CscId, Fields, Value};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Summary states, with the numbers the observatory uses on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SummaryState {
    Disabled = 1,
    Enabled = 2,
    Fault = 3,
    Offline = 4,
    Standby = 5,
}

impl SummaryState {
    /// The state a standard command leads to from `self`, or why it is not allowed.
    pub fn after(self, command: &str) -> Result<SummaryState, String> {
        use SummaryState::*;
        match (self, command) {
            (Standby, "start") => Ok(Disabled),
            (Disabled, "enable") => Ok(Enabled),
            (Enabled, "disable") => Ok(Disabled),
            (Disabled | Fault, "standby") => Ok(Standby),
            (Standby, "exitControl") => Ok(Offline),
            (state, cmd) => Err(format!("{cmd} not allowed in state {}", state.name())),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            SummaryState::Disabled => "DISABLED",
            SummaryState::Enabled => "ENABLED",
            SummaryState::Fault => "FAULT",
            SummaryState::Offline => "OFFLINE",
            SummaryState::Standby => "STANDBY",
        }
    }
}

/// The summary-state commands every CSC accepts, in any state (the state
/// machine decides); `setLogLevel` is accepted in every state too.
pub const STATE_COMMANDS: &[&str] = &["start", "enable", "disable", "standby", "exitControl"];

/// Commands a CSC accepts in any summary state; every other command of its
/// interface needs ENABLED, as in the observatory's CSCs.
pub fn allowed_in_any_state(command: &str) -> bool {
    STATE_COMMANDS.contains(&command) || command == "setLogLevel"
}

/// Log levels, as Python's logging numbers them (the observatory's convention).
pub mod log_level {
    pub const DEBUG: i64 = 10;
    pub const INFO: i64 = 20;
    pub const WARNING: i64 = 30;
    pub const ERROR: i64 = 40;
}

/// How a simulation runs.
#[derive(Debug, Clone, Copy)]
pub struct SimOptions {
    /// Multiplies every telemetry rate of the interface (stress tests use > 1).
    pub rate_multiplier: f64,
    /// Seed of every simulated value: the same seed, the same night.
    pub seed: u64,
    /// Start CSCs in ENABLED (a night in progress) instead of STANDBY.
    pub start_enabled: bool,
    /// A ScriptQueue adds a Script every this many seconds by itself; 0: only on `add`.
    pub script_interval_s: f64,
}

impl Default for SimOptions {
    fn default() -> Self {
        SimOptions {
            rate_multiplier: 1.0,
            seed: 1,
            start_enabled: false,
            script_interval_s: 0.0,
        }
    }
}

#[derive(Default)]
struct Subscribers {
    feeds: Vec<mpsc::Sender<Published>>,
    /// Last value of each event topic: like the observatory's middleware
    /// (DDS "transient local"), a new subscriber first receives each event
    /// topic's current value, so a late producer still learns e.g. the
    /// CSC's summary state.
    last: HashMap<String, Published>,
}

/// Subscribers to every instance of one CSC name (see `subscribe_all_indices`).
pub type Wildcard = Arc<Mutex<Vec<mpsc::Sender<Published>>>>;

/// The shared handle of one running simulated CSC.
pub struct SimCsc {
    pub id: CscId,
    pub interface: Interface,
    subscribers: Mutex<Subscribers>,
    wildcard: Wildcard,
    telemetry: Arc<LatestTelemetry>,
    state: Mutex<SummaryState>,
}

impl SimCsc {
    pub fn new(id: CscId, interface: Interface, wildcard: Wildcard) -> Arc<SimCsc> {
        Arc::new(SimCsc {
            id,
            interface,
            subscribers: Mutex::new(Subscribers::default()),
            wildcard,
            telemetry: Arc::new(LatestTelemetry::default()),
            state: Mutex::new(SummaryState::Standby),
        })
    }

    /// Puts the CSC in `state` before it starts (a night already in progress).
    pub fn preset_state(&self, state: SummaryState) {
        self.set_summary_state(state);
    }

    /// A new subscriber's feed, holding the last value of each event topic.
    pub fn feed(&self) -> CscFeed {
        let (tx, rx) = mpsc::channel(EVENT_FEED_CAPACITY);
        let mut subscribers = self.subscribers.lock().unwrap_or_else(|p| p.into_inner());
        let mut last: Vec<&Published> = subscribers.last.values().collect();
        last.sort_by(|a, b| a.source_ts.total_cmp(&b.source_ts));
        for event in last {
            // A CSC has far fewer event topics than the feed's capacity.
            let _ = tx.try_send(event.clone());
        }
        subscribers.feeds.push(tx);
        drop(subscribers);
        CscFeed {
            schemas: self.interface.topics(),
            events: rx,
            telemetry: self.telemetry.clone(),
        }
    }

    /// The latest telemetry of this CSC (tests count publications with it).
    pub fn latest_telemetry(&self) -> &Arc<LatestTelemetry> {
        &self.telemetry
    }

    /// Publishes a telemetry value: it replaces the topic's latest value.
    /// Its 32-bit `float` fields are rounded to f32, as the site's would be.
    pub fn publish_telemetry(&self, topic: &str, mut fields: Fields) {
        self.interface.narrow(Part::Telemetry, topic, &mut fields);
        self.telemetry.publish(Published {
            salindex: self.id.salindex,
            topic: topic.to_string(),
            category: Category::Telemetry,
            source_ts: unix_now(SystemTime::now()),
            fields,
        });
    }

    /// Publishes event `topic` with every schema field, `set` naming the
    /// values that are not zero. Events the interface lacks are not published.
    pub async fn event(&self, topic: &str, set: &[(&str, Value)]) {
        let Some(schema) = self.interface.event(topic) else {
            tracing::debug!(csc = %self.id, topic, "not in the interface: event not published");
            return;
        };
        self.publish_event(topic, fields_for(schema, set)).await;
    }

    /// Publishes an event to every subscriber, waiting for room in their
    /// feeds: a simulated CSC slows down rather than lose an event. Its
    /// 32-bit `float` fields are rounded to f32, as the site's would be.
    pub async fn publish_event(&self, topic: &str, mut fields: Fields) {
        self.interface.narrow(Part::Event, topic, &mut fields);
        let sample = Published {
            salindex: self.id.salindex,
            topic: topic.to_string(),
            category: Category::Event,
            source_ts: unix_now(SystemTime::now()),
            fields,
        };
        let feeds: Vec<_> = {
            let mut subscribers = self.subscribers.lock().unwrap_or_else(|p| p.into_inner());
            subscribers.last.insert(sample.topic.clone(), sample.clone());
            let mut feeds = subscribers.feeds.clone();
            feeds.extend(
                self.wildcard
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .iter()
                    .cloned(),
            );
            feeds
        };
        let mut gone = false;
        for tx in &feeds {
            gone |= tx.send(sample.clone()).await.is_err();
        }
        if gone {
            self.subscribers
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .feeds
                .retain(|tx| !tx.is_closed());
            self.wildcard
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .retain(|tx| !tx.is_closed());
        }
    }

    pub fn summary_state(&self) -> SummaryState {
        *self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn set_summary_state(&self, state: SummaryState) {
        *self.state.lock().unwrap_or_else(|p| p.into_inner()) = state;
    }
}

/// A command on its way to a CSC, with where its acknowledgements go.
pub struct CommandRequest {
    pub name: String,
    pub params: Fields,
    pub acks: mpsc::Sender<Ack>,
}

/// Commands waiting for a CSC; past it the middleware answers "busy".
pub const COMMAND_QUEUE: usize = 64;

/// One CSC of a [`Registry`].
struct Running {
    csc: Arc<SimCsc>,
    /// `None` for CSCs driven by another (Scripts run by a ScriptQueue).
    commands: Option<mpsc::Sender<CommandRequest>>,
}

#[derive(Default)]
struct Cscs {
    running: HashMap<CscId, Running>,
    wildcards: HashMap<String, Wildcard>,
}

/// The CSCs running in one process, and the subscribers to every instance of
/// a CSC name; cheap to clone. The middleware routes commands and
/// subscriptions through it, and a behaviour adds the CSCs it drives (the
/// Scripts of a ScriptQueue), so it lives here, below both.
#[derive(Clone, Default)]
pub struct Registry(Arc<Mutex<Cscs>>);

impl Registry {
    fn lock(&self) -> std::sync::MutexGuard<'_, Cscs> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds `id`, in `state`, taking commands from `commands`; `None` if
    /// `id` is already running.
    pub fn add(
        &self,
        id: &CscId,
        interface: Interface,
        state: SummaryState,
        commands: mpsc::Sender<CommandRequest>,
    ) -> Option<Arc<SimCsc>> {
        let mut cscs = self.lock();
        if cscs.running.contains_key(id) {
            return None;
        }
        let wildcard = cscs.wildcards.entry(id.csc.to_string()).or_default().clone();
        let csc = SimCsc::new(id.clone(), interface, wildcard);
        csc.preset_state(state);
        cscs.running.insert(
            id.clone(),
            Running {
                csc: csc.clone(),
                commands: Some(commands),
            },
        );
        Some(csc)
    }

    /// Registers a CSC another one drives (a Script of a ScriptQueue): it
    /// publishes what its driver tells it and takes no commands of its own.
    pub fn register_driven(&self, id: CscId, interface: Interface) -> Arc<SimCsc> {
        let mut cscs = self.lock();
        let wildcard = cscs.wildcards.entry(id.csc.to_string()).or_default().clone();
        let csc = SimCsc::new(id.clone(), interface, wildcard);
        cscs.running.insert(
            id,
            Running {
                csc: csc.clone(),
                commands: None,
            },
        );
        csc
    }

    /// Forgets a CSC that ended.
    pub fn remove(&self, id: &CscId) {
        self.lock().running.remove(id);
    }

    /// A running CSC and where its commands go (`None` if another CSC drives it).
    pub fn get(&self, id: &CscId) -> Option<(Arc<SimCsc>, Option<mpsc::Sender<CommandRequest>>)> {
        self.lock()
            .running
            .get(id)
            .map(|r| (r.csc.clone(), r.commands.clone()))
    }

    /// Every running CSC instance, sorted.
    pub fn ids(&self) -> Vec<CscId> {
        let mut ids: Vec<CscId> = self.lock().running.keys().cloned().collect();
        ids.sort();
        ids
    }

    /// Sends the events of every instance of `csc` (present and future) to `feed`.
    pub fn subscribe_all_indices(&self, csc: &str, feed: mpsc::Sender<Published>) {
        self.lock()
            .wildcards
            .entry(csc.to_string())
            .or_default()
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(feed);
    }
}

/// How a CSC-specific command proceeds.
pub enum Outcome {
    /// Finished now, with this result.
    Done(String),
    /// Refused or failed, with the reason.
    Failed(String),
    /// Still running: the behaviour calls [`Ctx::complete`] with this command's token later.
    Running,
}

/// What a behaviour may do when the runtime calls it: publish events (on
/// its CSC or on CSCs it drives, like the Scripts of a ScriptQueue), log,
/// finish running commands, go to FAULT or end.
pub struct Ctx<'a> {
    pub csc: &'a Arc<SimCsc>,
    /// The CSCs of this process: a behaviour adds and removes those it drives.
    pub registry: &'a Registry,
    /// Seconds since the CSC started.
    pub t: f64,
    pub rng: &'a mut Rng,
    pub options: SimOptions,
    events: Vec<(Arc<SimCsc>, String, Fields)>,
    completed: Vec<(u64, Result<String, String>)>,
    fault: Option<(i64, String)>,
    exit: bool,
}

impl Ctx<'_> {
    /// Publishes event `topic` of this CSC (fields as in [`SimCsc::event`]).
    pub fn event(&mut self, topic: &str, set: &[(&str, Value)]) {
        let csc = self.csc.clone();
        self.event_on(&csc, topic, set);
    }

    /// Publishes event `topic` of another (driven) CSC.
    pub fn event_on(&mut self, csc: &Arc<SimCsc>, topic: &str, set: &[(&str, Value)]) {
        if let Some(schema) = csc.interface.event(topic) {
            self.events
                .push((csc.clone(), topic.to_string(), fields_for(schema, set)));
        }
    }

    /// Publishes a `logMessage` event of `csc`.
    pub fn log_on(&mut self, csc: &Arc<SimCsc>, level: i64, message: &str) {
        self.event_on(
            csc,
            "logMessage",
            &[
                ("name", Value::Str(csc.id.to_string())),
                ("level", Value::Int(level)),
                ("message", Value::Str(message.to_string())),
            ],
        );
    }

    pub fn log(&mut self, level: i64, message: &str) {
        let csc = self.csc.clone();
        self.log_on(&csc, level, message);
    }

    /// Finishes the running command `token` with a result or a failure reason.
    pub fn complete(&mut self, token: u64, result: Result<String, String>) {
        self.completed.push((token, result));
    }

    /// Sends the CSC to FAULT with an error code and report.
    pub fn fault(&mut self, code: i64, report: &str) {
        self.fault = Some((code, report.to_string()));
    }

    /// Ends this CSC (e.g. a Script that finished): it stops publishing.
    pub fn exit(&mut self) {
        self.exit = true;
    }
}

/// What makes one kind of CSC itself. Every method runs on the CSC's task;
/// none may block.
pub trait Behaviour: Send + 'static {
    /// Once, after the generic start-up events.
    fn on_start(&mut self, _ctx: &mut Ctx) {}

    /// A CSC-specific command (summary-state commands and `setLogLevel` are
    /// handled by the runtime; others arrive only in ENABLED). `token`
    /// identifies it for [`Ctx::complete`] if it returns [`Outcome::Running`].
    fn command(&mut self, name: &str, params: &Fields, token: u64, ctx: &mut Ctx) -> Outcome;

    /// Adjusts a telemetry sample before it is published; `fields` holds
    /// the generic signal of every field.
    fn telemetry(&mut self, _topic: &str, _fields: &mut Fields, _ctx: &mut Ctx) {}

    /// Called [`STEP_HZ`] times a second: motions, scripts, timers.
    fn step(&mut self, _ctx: &mut Ctx) {}

    /// Called when the CSC leaves ENABLED (disable, fault): stop motions.
    fn on_disable(&mut self, _ctx: &mut Ctx) {}
}

/// Rate of [`Behaviour::step`], Hz.
pub const STEP_HZ: f64 = 50.0;

/// One telemetry topic's fixed-rate schedule: the k-th sample is due at
/// `start + k / rate`, whatever the time spent publishing, so rates do not drift.
struct Schedule {
    topic: String,
    signal: TopicSignal,
    start: Instant,
    period: Duration,
    k: u32,
}

impl Schedule {
    fn due(&self) -> Instant {
        self.start + self.period * self.k
    }
}

/// Runs a simulated CSC until `shutdown` or until its behaviour exits.
pub async fn run(
    csc: Arc<SimCsc>,
    mut behaviour: Box<dyn Behaviour>,
    registry: Registry,
    options: SimOptions,
    mut commands: mpsc::Receiver<CommandRequest>,
    shutdown: CancellationToken,
) {
    let mut rng = Rng::new(options.seed).derive(&csc.id.to_string());
    let start = Instant::now();
    let mut schedules: Vec<Schedule> = csc
        .interface
        .telemetry
        .iter()
        .map(|t| {
            // Already multiplied by `options.rate_multiplier` (see `SimMiddleware::start_with`).
            let hz = f64::from(t.rate_hz.unwrap_or(1.0));
            Schedule {
                topic: t.name.clone(),
                signal: TopicSignal::new(t, &rng),
                start,
                period: Duration::from_secs_f64(1.0 / hz.max(1e-3)),
                k: 0,
            }
        })
        .collect();
    let step_period = Duration::from_secs_f64(1.0 / STEP_HZ);
    let (mut next_heartbeat, mut next_step) = (start, start);
    let mut running: HashMap<u64, mpsc::Sender<Ack>> = HashMap::new();
    let mut next_token = 0u64;
    let mut log_level = log_level::INFO;
    let mut error_code = 0i64;

    csc.event(
        "summaryState",
        &[("summaryState", Value::Int(csc.summary_state() as i64))],
    )
    .await;
    csc.event("logLevel", &[("level", Value::Int(log_level))]).await;
    csc.event(
        "softwareVersions",
        &[
            (
                "cscVersion",
                Value::Str(format!("meridian-sim {}", env!("CARGO_PKG_VERSION"))),
            ),
            ("xmlVersion", Value::Str("simulated".into())),
        ],
    )
    .await;
    csc.event("errorCode", &[("errorCode", Value::Int(0))]).await;
    csc.event("simulationMode", &[("mode", Value::Int(1))]).await;
    let mut ctx_state = CtxState::default();
    with_ctx(&csc, &registry, start, &mut rng, options, &mut ctx_state, |ctx| {
        behaviour.on_start(ctx)
    });
    if apply(&csc, &mut ctx_state, &mut running, &mut error_code).await {
        return;
    }
    tracing::info!(csc = %csc.id, topics = schedules.len(), "simulated CSC started");

    loop {
        let next_telemetry = schedules.iter().map(Schedule::due).min();
        let wake = [Some(next_heartbeat), Some(next_step), next_telemetry]
            .into_iter()
            .flatten()
            .min();
        let wake = wake.unwrap_or(next_step);
        tokio::select! {
            _ = shutdown.cancelled() => break,
            request = commands.recv() => {
                let Some(request) = request else { break };
                next_token += 1;
                let token = next_token;
                let _ = request.acks.try_send(Ack { state: AckState::InProgress, result: String::new() });
                let outcome = if allowed_in_any_state(&request.name) {
                    standard_command(&csc, &request, &mut log_level).await
                } else if csc.summary_state() != SummaryState::Enabled {
                    Outcome::Failed(format!(
                        "{} not allowed in state {}: the CSC must be ENABLED",
                        request.name,
                        csc.summary_state().name()
                    ))
                } else {
                    with_ctx(&csc, &registry, start, &mut rng, options, &mut ctx_state, |ctx| {
                        behaviour.command(&request.name, &request.params, token, ctx)
                    })
                };
                if matches!(outcome, Outcome::Done(_)) && csc.summary_state() != SummaryState::Enabled {
                    with_ctx(&csc, &registry, start, &mut rng, options, &mut ctx_state, |ctx| behaviour.on_disable(ctx));
                }
                match outcome {
                    Outcome::Done(result) => finish(&request.acks, Ok(result)),
                    Outcome::Failed(reason) => finish(&request.acks, Err(reason)),
                    Outcome::Running => {
                        running.insert(token, request.acks);
                    }
                }
            }
            _ = tokio::time::sleep_until(wake) => {
                let now = Instant::now();
                let unix = unix_now(SystemTime::now());
                let t = (now - start).as_secs_f64();
                for s in schedules.iter_mut().filter(|s| s.due() <= now) {
                    let mut fields = s.signal.sample(t, unix);
                    with_ctx(&csc, &registry, start, &mut rng, options, &mut ctx_state, |ctx| {
                        behaviour.telemetry(&s.topic, &mut fields, ctx)
                    });
                    csc.publish_telemetry(&s.topic, fields);
                    s.k += 1;
                    if s.due() <= now {
                        // Over a period late (overloaded box): skip, don't burst.
                        let behind = (now - s.due()).as_secs_f64() / s.period.as_secs_f64();
                        s.k += behind.ceil() as u32;
                    }
                }
                if next_heartbeat <= now {
                    csc.event("heartbeat", &[("heartbeat", Value::Bool(true))]).await;
                    next_heartbeat += Duration::from_secs(1);
                }
                if next_step <= now {
                    with_ctx(&csc, &registry, start, &mut rng, options, &mut ctx_state, |ctx| behaviour.step(ctx));
                    next_step += step_period;
                    if next_step <= now {
                        next_step = now + step_period;
                    }
                }
            }
        }
        if apply(&csc, &mut ctx_state, &mut running, &mut error_code).await {
            break;
        }
        if ctx_state.fault_applied {
            ctx_state.fault_applied = false;
            with_ctx(&csc, &registry, start, &mut rng, options, &mut ctx_state, |ctx| {
                behaviour.on_disable(ctx)
            });
        }
    }
    for (_, acks) in running.drain() {
        finish(&acks, Err("the CSC stopped".into()));
    }
    tracing::info!(csc = %csc.id, "simulated CSC stopped");
}

#[derive(Default)]
struct CtxState {
    events: Vec<(Arc<SimCsc>, String, Fields)>,
    completed: Vec<(u64, Result<String, String>)>,
    fault: Option<(i64, String)>,
    exit: bool,
    fault_applied: bool,
}

/// Calls `f` with a fresh [`Ctx`] and keeps what it asked for in `state`.
fn with_ctx<R>(
    csc: &Arc<SimCsc>,
    registry: &Registry,
    start: Instant,
    rng: &mut Rng,
    options: SimOptions,
    state: &mut CtxState,
    f: impl FnOnce(&mut Ctx) -> R,
) -> R {
    let mut ctx = Ctx {
        csc,
        registry,
        t: start.elapsed().as_secs_f64(),
        rng,
        options,
        events: std::mem::take(&mut state.events),
        completed: std::mem::take(&mut state.completed),
        fault: state.fault.take(),
        exit: state.exit,
    };
    let r = f(&mut ctx);
    state.events = ctx.events;
    state.completed = ctx.completed;
    state.fault = ctx.fault;
    state.exit = ctx.exit;
    r
}

/// Carries out what a behaviour asked; true if the CSC ends.
async fn apply(
    csc: &Arc<SimCsc>,
    state: &mut CtxState,
    running: &mut HashMap<u64, mpsc::Sender<Ack>>,
    error_code: &mut i64,
) -> bool {
    for (target, topic, fields) in state.events.drain(..) {
        target.publish_event(&topic, fields).await;
    }
    for (token, result) in state.completed.drain(..) {
        if let Some(acks) = running.remove(&token) {
            finish(&acks, result);
        }
    }
    if let Some((code, report)) = state.fault.take() {
        *error_code = code;
        csc.set_summary_state(SummaryState::Fault);
        csc.event(
            "errorCode",
            &[
                ("errorCode", Value::Int(code)),
                ("errorReport", Value::Str(report)),
            ],
        )
        .await;
        csc.event(
            "summaryState",
            &[("summaryState", Value::Int(SummaryState::Fault as i64))],
        )
        .await;
        state.fault_applied = true;
    }
    state.exit
}

fn finish(acks: &mpsc::Sender<Ack>, result: Result<String, String>) {
    let ack = match result {
        Ok(result) => Ack {
            state: AckState::Complete,
            result,
        },
        Err(reason) => Ack {
            state: AckState::Failed,
            result: reason,
        },
    };
    let _ = acks.try_send(ack);
}

/// Summary-state commands and `setLogLevel`, the same for every CSC.
async fn standard_command(csc: &SimCsc, request: &CommandRequest, log_level: &mut i64) -> Outcome {
    if request.name == "setLogLevel" {
        if let Some((_, Value::Int(level))) = request.params.iter().find(|(k, _)| k == "level") {
            *log_level = *level;
        }
        csc.event("logLevel", &[("level", Value::Int(*log_level))]).await;
        return Outcome::Done("Done".into());
    }
    let next = match csc.summary_state().after(&request.name) {
        Ok(next) => next,
        Err(reason) => return Outcome::Failed(reason),
    };
    csc.set_summary_state(next);
    if next == SummaryState::Standby {
        csc.event("errorCode", &[("errorCode", Value::Int(0))]).await;
    }
    csc.event("summaryState", &[("summaryState", Value::Int(next as i64))])
        .await;
    Outcome::Done("Done".into())
}

/// The value of parameter `name` as a float (ints are accepted).
pub fn param_f64(params: &Fields, name: &str) -> Option<f64> {
    params.iter().find(|(k, _)| k == name).and_then(|(_, v)| match v {
        Value::Float(f) => Some(*f),
        Value::Int(i) => Some(*i as f64),
        _ => None,
    })
}

/// The value of parameter `name` as a string.
pub fn param_str<'a>(params: &'a Fields, name: &str) -> Option<&'a str> {
    params.iter().find(|(k, _)| k == name).and_then(|(_, v)| match v {
        Value::Str(s) => Some(s.as_str()),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::SummaryState::{self, *};

    #[test]
    fn every_transition_of_the_summary_state_machine() {
        let states = [Disabled, Enabled, Fault, Offline, Standby];
        let allowed = [
            (Standby, "start", Disabled),
            (Disabled, "enable", Enabled),
            (Enabled, "disable", Disabled),
            (Disabled, "standby", Standby),
            (Fault, "standby", Standby),
            (Standby, "exitControl", Offline),
        ];
        for state in states {
            for command in super::STATE_COMMANDS {
                let expected = allowed
                    .iter()
                    .find(|(s, c, _)| *s == state && c == command)
                    .map(|(_, _, n)| *n);
                match (state.after(command), expected) {
                    (Ok(next), Some(want)) => assert_eq!(next, want, "{state:?} {command}"),
                    (Err(reason), None) => {
                        assert_eq!(reason, format!("{command} not allowed in state {}", state.name()))
                    }
                    (got, want) => panic!("{state:?} {command}: got {got:?}, want {want:?}"),
                }
            }
        }
        assert_eq!(SummaryState::Standby as i64, 5);
    }
}
