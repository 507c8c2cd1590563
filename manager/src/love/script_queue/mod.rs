//! Derived streams: the replaced system's ScriptQueue pseudo-CSCs, built
//! from what Meridian producers store, so a site that moves its
//! ScriptQueue to a Meridian producer keeps the replaced browser client's
//! ScriptQueue panel and script heartbeats.
//!
//! For each ScriptQueue index `n` in the catalog, [`queue::QueueState`]
//! follows the stored `ScriptQueue:n` events (`queue`, `script`,
//! `availableScripts`, `configSchema`) and the `Script` events of its
//! scripts, and this task appends what the replaced producer would send:
//! `ScriptQueueState:n` events `stateStream`, `scriptsStream`,
//! `availableScriptsStream` (whole state on every change) and
//! `ScriptHeartbeats:n` event `stream` (every 2 s per current and waiting
//! script). They are stored like a replaced producer's pseudo-CSCs
//! (catalog, raw schema, `src`/`ing`/`f` entries), so the compatibility
//! endpoint relays them unchanged, with the last value on subscribe, and
//! native browsers can read them too.
//!
//! Where and how it runs:
//! - beside every ingest ([`ScriptQueueDeriver`], started by the manager
//!   next to its ingest role), but only one derives at a time: it holds the
//!   lock [`keys::DERIVER_LOCK`] (renewed every second, expiring after [`LOCK_TTL`]); if
//!   it dies, another takes over within that time. It reads the store with
//!   its own connection and writes small batches, never through the
//!   ingest's writer, so it adds nothing to the ingest path.
//! - on taking the lock (and after any store error) it rebuilds each
//!   queue's state from the streams: the last payload of each derived
//!   stream, then the inputs since the last one applied (each derived
//!   entry records it in the `upto` field), or the last [`REPLAY`] of each
//!   input when nothing was derived yet. Applying an event twice gives the
//!   same state, so the replay starts [`REPLAY_MARGIN_MS`] early.
//! - a queue whose latest `queue` event came from a producer of the
//!   replaced system (an entry without `seq`) is left alone: that producer
//!   sends its own pseudo-CSCs.
//!
//! Bounded: the derived streams are per queue, not per script (four keys
//! per ScriptQueue whatever the number of scripts), trimmed to
//! [`STATE_MAXLEN`] and [`HEARTBEAT_MAXLEN`] entries; a queue's state
//! holds at most [`queue::MAX_SCRIPTS`] scripts and drops the ones that
//! leave its lists; at most [`MAX_QUEUES`] queues are followed.
//!
//! Expiry: a derived stream expires [`DERIVED_TTL`] after the deriver last
//! wrote or refreshed it. The holder sets that TTL after every write and
//! refreshes it for every followed queue (an idle queue writes nothing)
//! every quarter of it, so the streams stay while any ingest derives, and
//! go away once none does (`ingest.script_queue_state = false`, or a queue
//! no longer followed); a deriver starting later rebuilds them from the
//! inputs. A queue left to a producer of the replaced system has its
//! streams' TTL removed: that producer writes them now, and its streams
//! keep no TTL, like every stream it publishes.

pub mod queue;

use meridian_proto::{keys, unix_now, Category, CscId, StoredSample, StreamId, TopicId};
use meridian_store::{Append, Entry, Store, StoreError, StreamReader};
use queue::{Changed, Heartbeat, Input, QueueState, QUEUE_TOPICS, SCRIPT_TOPICS};
use serde_json::{Map, Value as Json};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// How long the lock outlives its holder's last renewal.
pub const LOCK_TTL: Duration = Duration::from_secs(5);

/// How often the holder renews the lock (and others try to take it).
pub const LOCK_RENEW: Duration = Duration::from_secs(1);

/// How often the catalog is read for new ScriptQueues.
pub const DISCOVER: Duration = Duration::from_secs(2);

/// Most ScriptQueue indices followed (the observatory runs three).
pub const MAX_QUEUES: usize = 64;

/// Entries kept per state stream (`MAXLEN ~`): only the last matters to
/// the replaced client; the rest lets a native browser recover a gap.
pub const STATE_MAXLEN: usize = 100;

/// Entries kept in a queue's heartbeat stream (one per waiting or current
/// script every 2 s).
pub const HEARTBEAT_MAXLEN: usize = 1000;

/// Inputs replayed per stream when a queue has no derived state yet.
pub const REPLAY: usize = 1000;

/// Replayed inputs are read in pages of this many; at most
/// [`MAX_REPLAY_PAGES`] pages per stream (older ones are left).
const REPLAY_PAGE: usize = 1000;
const MAX_REPLAY_PAGES: usize = 100;

/// The replay after a restart starts this much before the last input
/// applied, in milliseconds, so inputs stored a little out of id order
/// across streams are not missed.
pub const REPLAY_MARGIN_MS: u64 = 2000;

/// Entries read per stream in one round.
const READ_COUNT: usize = 512;

/// Longest one read waits for new inputs.
const MAX_BLOCK: Duration = Duration::from_millis(500);

/// How long a derived stream outlives the deriver's last write or refresh of it.
pub const DERIVED_TTL: Duration = Duration::from_secs(86_400);

/// The replaced producer's pseudo-CSC holding a queue's state.
pub const STATE_CSC: &str = "ScriptQueueState";

/// The replaced producer's pseudo-CSC of script heartbeats.
pub const HEARTBEATS_CSC: &str = "ScriptHeartbeats";

/// What the deriver keeps.
#[derive(Debug, Clone)]
pub struct DeriveConfig {
    /// Finished scripts listed (`ingest.finished_scripts`).
    pub finished_scripts: usize,
    /// Time to live of the derived streams ([`DERIVED_TTL`]; refreshed every quarter of it).
    pub ttl: Duration,
}

impl From<&meridian_config::IngestConfig> for DeriveConfig {
    fn from(c: &meridian_config::IngestConfig) -> Self {
        DeriveConfig {
            finished_scripts: c.finished_scripts,
            ttl: DERIVED_TTL,
        }
    }
}

/// The deriver as the manager runs it: beside its ingest, with the same
/// shutdown, when `ingest.script_queue_state` asks for it.
pub struct ScriptQueueDeriver {
    store: Arc<dyn Store>,
    config: DeriveConfig,
}

impl ScriptQueueDeriver {
    /// The deriver an ingest configured by `config` runs beside it on
    /// `store`, or `None` when `ingest.script_queue_state` is off.
    pub fn new(config: &meridian_config::Config, store: Arc<dyn Store>) -> Option<ScriptQueueDeriver> {
        config.ingest.script_queue_state.then(|| ScriptQueueDeriver {
            store,
            config: DeriveConfig::from(&config.ingest),
        })
    }

    /// Derives (while this manager holds [`LOCK`]) until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        run(self.store, self.config, shutdown).await
    }
}

/// The derived topics of queue `index`: state, scripts, available scripts, heartbeats.
fn outputs(index: u32) -> [TopicId; 4] {
    let topic = |csc: &str, name: &str| {
        TopicId::new(
            CscId::new(csc, index).expect("a valid name"),
            Category::Event,
            name,
        )
        .expect("a valid name")
    };
    [
        topic(STATE_CSC, "stateStream"),
        topic(STATE_CSC, "scriptsStream"),
        topic(STATE_CSC, "availableScriptsStream"),
        topic(HEARTBEATS_CSC, "stream"),
    ]
}

/// The stream keys of queue `index`'s derived topics.
fn output_keys(index: u32) -> Vec<String> {
    outputs(index).iter().map(keys::stream).collect()
}

/// Where an input stream's entries go.
#[derive(Debug, Clone, PartialEq)]
enum Source {
    /// A topic of ScriptQueue `index`.
    Queue(u32, &'static str),
    /// A topic of every Script (one stream for all instances).
    Script(&'static str),
}

fn event_key(csc: &str, index: u32, topic: &str) -> String {
    keys::stream(
        &TopicId::new(
            CscId::new(csc, index).expect("a valid name"),
            Category::Event,
            topic,
        )
        .expect("a valid name"),
    )
}

/// The id just before `id`, so a read "after" it returns `id` too.
fn before(id: StreamId) -> StreamId {
    match (id.ms, id.seq) {
        (0, 0) => StreamId::ZERO,
        (ms, 0) => StreamId::new(ms - 1, u64::MAX),
        (ms, seq) => StreamId::new(ms, seq - 1),
    }
}

/// A random holder name for this ingest manager's lock.
fn holder() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    format!("derive-{}-{:016x}", std::process::id(), h.finish())
}

/// Derives while this ingest holds [`keys::DERIVER_LOCK`], until `shutdown`.
pub async fn run(store: Arc<dyn Store>, config: DeriveConfig, shutdown: CancellationToken) {
    let me = holder();
    let mut deriver: Option<Deriver> = None;
    let mut next_lock = Instant::now();
    loop {
        if Instant::now() >= next_lock {
            next_lock = Instant::now() + LOCK_RENEW;
            match store.lock(keys::DERIVER_LOCK, &me, LOCK_TTL).await {
                Ok(true) if deriver.is_none() => match Deriver::start(store.clone(), &config).await {
                    Ok(d) => {
                        tracing::info!(holder = %me, queues = d.queues.len(), "this ingest now derives the ScriptQueue pseudo-CSCs");
                        deriver = Some(d);
                    }
                    Err(e) => tracing::warn!(error = %e, "cannot rebuild the ScriptQueue state; retrying"),
                },
                Ok(true) => {}
                Ok(false) => {
                    if deriver.take().is_some() {
                        tracing::warn!("the ScriptQueue deriver lock was taken over; stopping here");
                    }
                }
                Err(e) => {
                    // Unable to renew: another may take over once it expires.
                    if deriver.take().is_some() {
                        tracing::warn!(error = %e, "cannot renew the ScriptQueue deriver lock; stopping until it can");
                    }
                }
            }
        }
        match deriver.as_mut() {
            Some(d) => {
                let outcome = tokio::select! {
                    _ = shutdown.cancelled() => break,
                    r = d.round(next_lock) => r,
                };
                if let Err(e) = outcome {
                    tracing::warn!(error = %e, "ScriptQueue deriver: store error; rebuilding from the streams");
                    deriver = None;
                    next_lock = Instant::now() + LOCK_RENEW;
                }
            }
            None => tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep_until(next_lock) => {}
            },
        }
    }
    if deriver.is_some() {
        let _ = store.unlock(keys::DERIVER_LOCK, &me).await;
    }
}

/// One followed queue.
struct Followed {
    state: QueueState,
    /// Its latest `queue` event came from a producer of the replaced
    /// system, which sends the pseudo-CSCs itself.
    replaced: bool,
}

/// The holder's state: every followed queue and the input cursors.
struct Deriver {
    store: Arc<dyn Store>,
    finished: usize,
    /// The derived streams' time to live, and when it is next refreshed.
    ttl: Duration,
    next_refresh: Instant,
    reader: Box<dyn StreamReader>,
    queues: BTreeMap<u32, Followed>,
    /// Input stream key → (what it feeds, last id applied).
    inputs: HashMap<String, (Source, StreamId)>,
    next_discover: Instant,
    next_heartbeat: Instant,
}

/// An input entry and where it goes.
struct Item {
    id: StreamId,
    source: Source,
    /// The entry read; `None` if no Meridian writer wrote it.
    sample: Option<StoredSample>,
}

impl Item {
    fn new(entry: Entry, source: Source) -> Item {
        Item {
            id: entry.id,
            source,
            sample: StoredSample::from_fields(&entry.fields).ok(),
        }
    }
}

impl Deriver {
    /// Takes over: rebuilds every queue in the catalog from the streams.
    async fn start(store: Arc<dyn Store>, config: &DeriveConfig) -> Result<Deriver, StoreError> {
        let reader = store.reader().await?;
        let mut d = Deriver {
            store,
            finished: config.finished_scripts,
            ttl: config.ttl,
            next_refresh: Instant::now() + config.ttl / 4,
            reader,
            queues: BTreeMap::new(),
            inputs: HashMap::new(),
            next_discover: Instant::now(),
            next_heartbeat: Instant::now() + Duration::from_secs_f64(queue::HEARTBEAT_PERIOD_S),
        };
        // Script streams are shared by every queue: each queue catches up to here.
        for topic in SCRIPT_TOPICS {
            let key = event_key("Script", 0, topic);
            let last = d.store.last(&key, 1).await?;
            let at = last.first().map_or(StreamId::ZERO, |e| e.id);
            d.inputs.insert(key, (Source::Script(topic), at));
        }
        d.discover().await?;
        Ok(d)
    }

    /// Follows ScriptQueues new in the catalog.
    async fn discover(&mut self) -> Result<(), StoreError> {
        self.next_discover = Instant::now() + DISCOVER;
        let catalog = self.store.hash_get(keys::CATALOG).await?;
        let mut found: Vec<u32> = catalog
            .iter()
            .filter_map(|(field, _)| {
                field
                    .strip_prefix("ScriptQueue:")?
                    .strip_suffix("/event/queue")?
                    .parse()
                    .ok()
            })
            .filter(|i| !self.queues.contains_key(i))
            .collect();
        found.sort_unstable();
        for index in found {
            if self.queues.len() >= MAX_QUEUES {
                tracing::warn!(
                    index,
                    limit = MAX_QUEUES,
                    "ScriptQueue not followed: MAX_QUEUES reached"
                );
                break;
            }
            self.rebuild(index).await?;
        }
        Ok(())
    }

    /// Rebuilds queue `index` from what was derived and the inputs since,
    /// and writes its state if that differs from what is stored.
    async fn rebuild(&mut self, index: u32) -> Result<(), StoreError> {
        let [state_t, scripts_t, available_t, heartbeat_t] = outputs(index);
        let mut state = QueueState::new(index, self.finished);
        let mut stored: Vec<Option<String>> = Vec::new();
        let mut upto: Option<StreamId> = None;
        for t in [&state_t, &scripts_t, &available_t] {
            let last = self.store.last(&keys::stream(t), 1).await?;
            let entry = last
                .first()
                .and_then(|e| StoredSample::from_fields(&e.fields).ok());
            // Only what this deriver wrote says how far it got.
            if let Some(u) = entry.as_ref().and_then(|e| e.upto) {
                upto = upto.max(Some(u));
            }
            stored.push(entry.map(|e| e.fields));
        }
        if upto.is_some() {
            state.restore(stored[0].as_deref(), stored[1].as_deref(), stored[2].as_deref());
            for entry in self
                .store
                .last(&keys::stream(&heartbeat_t), HEARTBEAT_MAXLEN)
                .await?
            {
                let Some(v) = StoredSample::from_fields(&entry.fields)
                    .ok()
                    .and_then(|e| serde_json::from_str::<Json>(&e.fields).ok())
                else {
                    continue;
                };
                let h = &v["script_heartbeat"];
                if let Some(i) = h["salindex"].as_u64().and_then(|i| u32::try_from(i).ok()) {
                    let lost = h["lost"]
                        .as_u64()
                        .and_then(|l| u32::try_from(l).ok())
                        .unwrap_or(0);
                    let last = h["last_heartbeat_timestamp"].as_f64().unwrap_or(-1.0);
                    state.restore_heartbeat(i, Heartbeat { lost, last });
                }
            }
        }
        let from = upto.map(|u| StreamId::new(u.ms.saturating_sub(REPLAY_MARGIN_MS), 0));
        let mut items = Vec::new();
        let mut own = Vec::new();
        for topic in QUEUE_TOPICS {
            let key = event_key("ScriptQueue", index, topic);
            let start = match from {
                Some(f) => f,
                None => replay_start(self.store.as_ref(), &key).await?,
            };
            let read = replay(
                self.store.as_ref(),
                &key,
                start,
                None,
                Source::Queue(index, topic),
            )
            .await?;
            let at = read.last().map_or(start, |i| i.id);
            items.extend(read);
            own.push((key, (Source::Queue(index, topic), at)));
        }
        let shared: Vec<(String, Source, StreamId)> = self
            .inputs
            .iter()
            .filter(|(_, (s, _))| matches!(s, Source::Script(_)))
            .map(|(k, (s, at))| (k.clone(), s.clone(), *at))
            .collect();
        for (key, source, until) in shared {
            let start = match from {
                Some(f) => f,
                None => replay_start(self.store.as_ref(), &key).await?,
            };
            if start < until {
                items.extend(replay(self.store.as_ref(), &key, start, Some(until), source).await?);
            }
        }
        items.sort_by_key(|i| i.id);
        let mut followed = Followed {
            state,
            replaced: false,
        };
        let mut last_applied = upto;
        for item in &items {
            apply(&mut followed, item);
            last_applied = last_applied.max(Some(item.id));
        }
        self.inputs.extend(own);
        register(self.store.as_ref(), index).await?;
        if !followed.replaced {
            let now = unix_now(SystemTime::now());
            let fresh = [
                followed.state.state_json(),
                followed.state.scripts_json(),
                followed.state.available_json(),
            ];
            let appends: Vec<Append> = [state_t, scripts_t, available_t]
                .iter()
                .zip(fresh)
                .zip(&stored)
                .filter(|((_, f), s)| s.as_deref() != Some(f.as_str()))
                .map(|((t, f), _)| derived(t, STATE_MAXLEN, now, now, f, last_applied))
                .collect();
            if !appends.is_empty() {
                self.store.append(&appends).await?;
            }
        }
        let ttl = (!followed.replaced).then_some(self.ttl);
        self.store.expire(&output_keys(index), ttl).await?;
        tracing::info!(
            index,
            replayed = items.len(),
            replaced_producer = followed.replaced,
            "following ScriptQueue for its pseudo-CSCs"
        );
        self.queues.insert(index, followed);
        Ok(())
    }

    /// Reads new inputs (waiting at most until the next heartbeat, lock
    /// renewal or [`MAX_BLOCK`]), applies them, and writes what changed
    /// and the heartbeats due.
    async fn round(&mut self, next_lock: Instant) -> Result<(), StoreError> {
        if Instant::now() >= self.next_discover {
            self.discover().await?;
        }
        if Instant::now() >= self.next_refresh {
            self.refresh().await?;
        }
        let wake = next_lock.min(self.next_heartbeat).min(Instant::now() + MAX_BLOCK);
        let block = wake.saturating_duration_since(Instant::now());
        let cursors: Vec<(String, StreamId)> =
            self.inputs.iter().map(|(k, (_, at))| (k.clone(), *at)).collect();
        let read = self.reader.read(&cursors, READ_COUNT, block).await?;
        let mut items = Vec::new();
        for stream in read {
            let Some((source, at)) = self.inputs.get_mut(&stream.key) else {
                continue;
            };
            for entry in stream.entries {
                *at = (*at).max(entry.id);
                items.push(Item::new(entry, source.clone()));
            }
        }
        items.sort_by_key(|i| i.id);
        let now = unix_now(SystemTime::now());
        let mut appends = Vec::new();
        let mut changes: BTreeMap<u32, (Changed, f64, StreamId)> = BTreeMap::new();
        for item in &items {
            let src = item.sample.as_ref().map_or(now, |s| s.source_ts);
            let targets: Vec<u32> = match item.source {
                Source::Queue(i, _) => vec![i],
                Source::Script(_) => self.queues.keys().copied().collect(),
            };
            for index in targets {
                let Some(q) = self.queues.get_mut(&index) else {
                    continue;
                };
                let changed = apply(q, item);
                if changed.any() && !q.replaced {
                    let c = changes.entry(index).or_insert((Changed::default(), src, item.id));
                    *c = (c.0.or(changed), src, item.id);
                }
            }
        }
        for (index, (changed, src, upto)) in changes {
            let Some(q) = self.queues.get(&index) else {
                continue;
            };
            let [state_t, scripts_t, available_t, _] = outputs(index);
            let mut push = |yes: bool, t: &TopicId, f: String| {
                if yes {
                    appends.push(derived(t, STATE_MAXLEN, src, now, f, Some(upto)));
                }
            };
            push(changed.state, &state_t, q.state.state_json());
            push(changed.scripts, &scripts_t, q.state.scripts_json());
            push(changed.available, &available_t, q.state.available_json());
        }
        if Instant::now() >= self.next_heartbeat {
            self.next_heartbeat += Duration::from_secs_f64(queue::HEARTBEAT_PERIOD_S);
            if self.next_heartbeat <= Instant::now() {
                self.next_heartbeat = Instant::now() + Duration::from_secs_f64(queue::HEARTBEAT_PERIOD_S);
            }
            for (index, q) in self.queues.iter_mut().filter(|(_, q)| !q.replaced) {
                let [.., heartbeat_t] = outputs(*index);
                for (script, h) in q.state.heartbeat_tick(now) {
                    let f = QueueState::heartbeat_json(script, h);
                    appends.push(derived(&heartbeat_t, HEARTBEAT_MAXLEN, now, now, f, None));
                }
            }
        }
        if !appends.is_empty() {
            self.store.append(&appends).await?;
            let mut written: Vec<String> = appends.into_iter().map(|a| a.key).collect();
            written.sort_unstable();
            written.dedup();
            self.store.expire(&written, Some(self.ttl)).await?;
        }
        Ok(())
    }

    /// Sets the TTL of every followed queue's derived streams again (and
    /// removes it from those a producer of the replaced system writes).
    async fn refresh(&mut self) -> Result<(), StoreError> {
        self.next_refresh = Instant::now() + self.ttl / 4;
        let (mut ours, mut theirs) = (Vec::new(), Vec::new());
        for (index, q) in &self.queues {
            match q.replaced {
                false => ours.extend(output_keys(*index)),
                true => theirs.extend(output_keys(*index)),
            }
        }
        self.store.expire(&ours, Some(self.ttl)).await?;
        self.store.expire(&theirs, None).await
    }
}

/// Where to replay `key` from when nothing was derived: its last [`REPLAY`] entries.
async fn replay_start(store: &dyn Store, key: &str) -> Result<StreamId, StoreError> {
    let last = store.last(key, REPLAY).await?;
    Ok(last.first().map_or(StreamId::ZERO, |e| before(e.id)))
}

/// Entries of `key` after `start` (up to `until`), page by page.
async fn replay(
    store: &dyn Store,
    key: &str,
    start: StreamId,
    until: Option<StreamId>,
    source: Source,
) -> Result<Vec<Item>, StoreError> {
    let mut items = Vec::new();
    let mut after = start;
    for _ in 0..MAX_REPLAY_PAGES {
        let page = store.range(key, after, until, REPLAY_PAGE).await?;
        let full = page.len() == REPLAY_PAGE;
        for entry in page {
            after = entry.id;
            items.push(Item::new(entry, source.clone()));
        }
        if !full {
            break;
        }
    }
    Ok(items)
}

/// Applies one input to a queue; what changed (nothing while a producer
/// of the replaced system serves the queue).
fn apply(q: &mut Followed, item: &Item) -> Changed {
    let Some(sample) = &item.sample else {
        return Changed::default();
    };
    let Ok(fields) = serde_json::from_str::<Map<String, Json>>(&sample.fields) else {
        return Changed::default();
    };
    // Meridian's ingest numbers every entry; the replaced system's producers do not.
    let meridian = sample.seq.is_some();
    let input = match &item.source {
        Source::Queue(_, topic) => {
            if *topic == "queue" {
                q.replaced = !meridian;
            }
            if !meridian {
                return Changed::default();
            }
            Input::from_queue(topic, &fields)
        }
        Source::Script(topic) => {
            let (index, at) = (sample.salindex, sample.ingest_ts);
            match (meridian, index) {
                (true, Some(index)) => Input::from_script(topic, index, at, &fields),
                _ => None,
            }
        }
    };
    match input {
        Some(input) if !q.replaced => q.state.apply(&input),
        _ => Changed::default(),
    }
}

/// One derived entry, as a replaced producer's pseudo-CSC is stored
/// (no `seq`), plus `upto`: the last input applied.
fn derived(t: &TopicId, maxlen: usize, src: f64, now: f64, f: String, upto: Option<StreamId>) -> Append {
    let sample = StoredSample {
        seq: None,
        source_ts: src,
        ingest_ts: now,
        salindex: None,
        upto,
        fields: f,
    };
    Append {
        key: keys::stream(t),
        maxlen,
        fields: sample.into_fields(),
    }
}

/// Lists queue `index`'s derived topics in the catalog, with the schema
/// that makes the compatibility endpoint pass their payloads on as they are.
async fn register(store: &dyn Store, index: u32) -> Result<(), StoreError> {
    let topics = outputs(index);
    let raw = r#"{"raw":true,"list":false}"#;
    let schemas: Vec<(String, String)> = topics
        .iter()
        .map(|t| (t.catalog_field(), raw.to_string()))
        .collect();
    let catalog: Vec<(String, String)> = topics
        .iter()
        .map(|t| (t.catalog_field(), String::new()))
        .collect();
    store.hash_set(keys::SCHEMAS, &schemas, None).await?;
    store.hash_set(keys::CATALOG, &catalog, None).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use meridian_store::memory::MemoryStore;

    #[test]
    fn the_id_before_is_just_before() {
        assert_eq!(before(StreamId::new(5, 3)), StreamId::new(5, 2));
        assert_eq!(before(StreamId::new(5, 0)), StreamId::new(4, u64::MAX));
        assert_eq!(before(StreamId::ZERO), StreamId::ZERO);
    }

    /// Declares ScriptQueue `index`'s `queue` event in the catalog, as its producer would.
    async fn declare_queue(store: &dyn Store, index: u32) {
        let field = format!("ScriptQueue:{index}/event/queue");
        store
            .hash_set(keys::CATALOG, &[(field, String::new())], None)
            .await
            .unwrap();
    }

    async fn event(store: &dyn Store, csc: &str, index: u32, topic: &str, f: Json, seq: bool) {
        let (csc_index, salindex) = match csc {
            "Script" => (0, Some(index)),
            _ => (index, None),
        };
        let sample = StoredSample {
            seq: seq.then_some(1),
            source_ts: 1.0,
            ingest_ts: unix_now(SystemTime::now()),
            salindex,
            upto: None,
            fields: f.to_string(),
        };
        store
            .append(&[Append {
                key: event_key(csc, csc_index, topic),
                maxlen: 1000,
                fields: sample.into_fields(),
            }])
            .await
            .unwrap();
    }

    async fn last_f(store: &dyn Store, t: &TopicId) -> Option<Json> {
        let last = store.last(&keys::stream(t), 1).await.unwrap();
        let sample = StoredSample::from_fields(&last.first()?.fields).ok()?;
        serde_json::from_str(&sample.fields).ok()
    }

    async fn wait_for(what: &str, mut check: impl AsyncFnMut() -> bool) {
        let end = Instant::now() + Duration::from_secs(20);
        while !check().await {
            assert!(Instant::now() < end, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn queue(current: u32, waiting: &[u32], past: &[u32]) -> Json {
        serde_json::json!({"enabled": true, "running": true, "currentSalIndex": current,
            "length": waiting.len(), "salIndices": waiting, "pastLength": past.len(), "pastSalIndices": past})
    }

    #[tokio::test]
    async fn a_new_deriver_takes_over_and_continues_from_what_was_derived() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        declare_queue(store.as_ref(), 1).await;
        let config = DeriveConfig {
            finished_scripts: 10,
            ttl: DERIVED_TTL,
        };
        let first_stop = CancellationToken::new();
        let first = tokio::spawn(run(store.clone(), config.clone(), first_stop.clone()));
        event(
            store.as_ref(),
            "ScriptQueue",
            1,
            "queue",
            queue(100_000, &[], &[]),
            true,
        )
        .await;
        event(
            store.as_ref(),
            "Script",
            100_000,
            "metadata",
            serde_json::json!({"duration": 9.5}),
            true,
        )
        .await;
        let [_, scripts_t, ..] = outputs(1);
        wait_for("the first deriver's scripts", async || {
            last_f(store.as_ref(), &scripts_t)
                .await
                .is_some_and(|v| v["current_scripts"][0]["expected_duration"] == 9.5)
        })
        .await;
        // It dies without releasing the lock; events keep coming meanwhile.
        first.abort();
        let _ = first.await;
        first_stop.cancel();
        event(
            store.as_ref(),
            "ScriptQueue",
            1,
            "queue",
            queue(0, &[], &[100_000]),
            true,
        )
        .await;
        let second = tokio::spawn(run(store.clone(), config, CancellationToken::new()));
        wait_for("the second deriver's scripts", async || {
            last_f(store.as_ref(), &scripts_t).await.is_some_and(|v| {
                v["finished_scripts"][0]["index"] == 100_000
                    && v["finished_scripts"][0]["expected_duration"] == 9.5
            })
        })
        .await;
        second.abort();
    }

    #[tokio::test]
    async fn derived_streams_live_while_derived_and_expire_after() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        declare_queue(store.as_ref(), 1).await;
        event(
            store.as_ref(),
            "ScriptQueue",
            1,
            "queue",
            queue(100_000, &[], &[]),
            true,
        )
        .await;
        let ttl = Duration::from_secs(2);
        let stop = CancellationToken::new();
        let config = DeriveConfig {
            finished_scripts: 10,
            ttl,
        };
        let deriver = tokio::spawn(run(store.clone(), config, stop.clone()));
        let [state_t, .., heartbeat_t] = outputs(1);
        let (state, heartbeat) = (keys::stream(&state_t), keys::stream(&heartbeat_t));
        wait_for("the state and a heartbeat report, with a TTL", async || {
            let mut ok = true;
            for key in [&state, &heartbeat] {
                ok &= store.ttl(key).await.unwrap().is_some_and(|t| t <= ttl);
            }
            ok
        })
        .await;
        // Nothing changes in the queue (the state is not written again),
        // yet the streams outlive their TTL: the deriver refreshes it.
        let until = Instant::now() + ttl * 2;
        wait_for("twice the TTL with the streams there", async || {
            assert!(
                store.exists(&state).await.unwrap(),
                "the state expired while derived"
            );
            assert_eq!(store.len(&state).await.unwrap(), 1, "the state was written again");
            Instant::now() >= until
        })
        .await;
        // No deriver: gone within the TTL.
        stop.cancel();
        deriver.await.unwrap();
        wait_for("the derived streams expire", async || {
            !store.exists(&state).await.unwrap() && !store.exists(&heartbeat).await.unwrap()
        })
        .await;
    }

    #[tokio::test]
    async fn a_queue_served_by_a_replaced_producer_is_left_alone() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        declare_queue(store.as_ref(), 3).await;
        event(
            store.as_ref(),
            "ScriptQueue",
            3,
            "queue",
            queue(300_000, &[], &[]),
            false,
        )
        .await;
        let mut d = Deriver::start(
            store.clone(),
            &DeriveConfig {
                finished_scripts: 10,
                ttl: DERIVED_TTL,
            },
        )
        .await
        .unwrap();
        assert!(d.queues[&3].replaced);
        d.next_heartbeat = Instant::now();
        d.round(Instant::now()).await.unwrap();
        for t in outputs(3) {
            assert_eq!(store.len(&keys::stream(&t)).await.unwrap(), 0, "{t}");
        }
        // A Meridian producer takes the queue over.
        event(
            store.as_ref(),
            "ScriptQueue",
            3,
            "queue",
            queue(300_001, &[], &[]),
            true,
        )
        .await;
        d.round(Instant::now() + Duration::from_millis(200))
            .await
            .unwrap();
        assert!(!d.queues[&3].replaced);
        let [state_t, scripts_t, ..] = outputs(3);
        assert_eq!(
            last_f(store.as_ref(), &state_t).await,
            Some(serde_json::json!({"enabled": true, "running": true}))
        );
        let scripts = last_f(store.as_ref(), &scripts_t).await.unwrap();
        assert_eq!(scripts["current_scripts"][0]["index"], 300_001);
    }
}
