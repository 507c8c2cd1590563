//! The hub: one reader per frontend manager for every watched stream, and
//! one batch per tick for every set of browsers watching the same topics.
//!
//! The hub does the I/O and the timing; what goes to whom is decided by the
//! fan-out core (`Fanout`, in `fanout.rs`), which it holds under its lock.
//! Browsers subscribe through the hub. The first subscriber of a stream
//! makes the hub fetch its last entry and start reading after it; each
//! entry read is decoded once ([`Delivered`]) into the stream's window of
//! the current tick (events in order, the newest telemetry per topic).
//! When the last subscriber leaves, the stream is no longer read. A stream
//! subscribed while the reader waits in `XREAD BLOCK` is picked up when
//! that read returns (at most `frontend.read_block_ms`).
//!
//! Every `frontend.tick_ms` the hub closes the tick: browsers with the
//! same live streams share a feed, and each feed gets one batch built
//! from its streams' windows, queued (an `Arc`) to all its browsers and
//! encoded once. A thousand browsers on the same dashboard cost one batch
//! per tick, not a thousand deliveries per sample.
//!
//! A subscription starts personal: the last value (or, for recovery,
//! every entry after a stream id) is read from the store into the
//! browser's own queue, paced by its reading, until it reaches the hub's
//! cursor. The browser then joins the stream's live feed at the first tick
//! close at which the reader has reached the replay's last id, with that
//! window's entries after it as personal extras: one ordered sequence with
//! no gap and no repeat.
//!
//! Wildcards (every topic of a CSC, every index) are resolved with the
//! catalog producers' handshakes fill ([`meridian_proto::keys::CATALOG`]),
//! and re-resolved every [`CATALOG_REFRESH`] so topics that appear later
//! are added.

use super::fanout::{CatchUp, Fanout, Staleness};
use super::inbox::Inbox;
use super::sample::Delivered;
use super::stats::HubStats;
use meridian_config::FrontendConfig;
use meridian_proto::browser::gap_notice;
use meridian_proto::{keys, Category, Csc, CscId, StreamId, TopicId};
use meridian_store::{Store, StoreError};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

pub use super::fanout::ClientId;

/// How often wildcard subscriptions are re-resolved against the catalog.
pub const CATALOG_REFRESH: Duration = Duration::from_secs(1);

/// Entries scanned to find the last value of one instance of an aggregated CSC.
const INSTANCE_SCAN: usize = 1000;

/// Events one stream may hold in the current tick's window, in units of
/// `frontend.read_count`: past it the reader waits for the tick to close
/// (the hub's memory stays bounded when it reads a backlog).
const WINDOW_READS: usize = 8;

/// What a browser subscribes to; `None` matches everything.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Selector {
    pub csc: Option<Csc>,
    pub salindex: Option<u32>,
    pub category: Option<Category>,
    pub topic: Option<String>,
}

impl Selector {
    /// The one topic this selector names, if it names every part.
    pub fn exact(&self) -> Option<TopicId> {
        let csc = CscId {
            csc: self.csc.clone()?,
            salindex: self.salindex?,
        };
        TopicId::new(csc, self.category?, self.topic.as_deref()?).ok()
    }

    fn matches(&self, csc: &Csc, index: Option<u32>, category: Category, topic: &str) -> bool {
        self.csc.as_ref().is_none_or(|c| c == csc)
            && self.category.is_none_or(|c| c == category)
            && self.topic.as_deref().is_none_or(|t| t == topic)
            && match (self.salindex, index) {
                (Some(want), Some(have)) => want == have,
                _ => true,
            }
    }
}

/// Where a subscription starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// The newest stored value first, then live samples.
    Last,
    /// Every entry after this id (recovery after a reconnect), then live.
    After(StreamId),
}

/// Why a subscription failed; the message is for the browser.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    #[error("{0}")]
    Store(#[from] StoreError),
    /// Nothing in the catalog matches: no producer declared such a topic.
    #[error("unknown topic: no producer has declared {0}")]
    Unknown(String),
    /// The browser's subscription bound (`frontend.max_subscriptions`).
    #[error("too many subscriptions: the limit is frontend.max_subscriptions = {0}")]
    TooMany(usize),
}

/// The fan-out core and what only the hub needs: each browser's wildcard
/// selectors, re-resolved as the catalog grows.
struct State {
    core: Fanout,
    wildcards: HashMap<ClientId, HashSet<Selector>>,
}

/// Handle to the hub; cheap to clone.
#[derive(Clone)]
pub struct Hub {
    store: Arc<dyn Store>,
    state: Arc<Mutex<State>>,
    stats: Arc<HubStats>,
    /// Set while store reads fail.
    failing: Arc<std::sync::atomic::AtomicBool>,
    max_subscriptions: usize,
    max_replay: usize,
    /// Entries per store read (`frontend.read_count`), also the replay chunk.
    read_count: usize,
    /// Signalled when a tick closes (a reader holding a full window may go on).
    ticked: Arc<tokio::sync::Notify>,
}

impl Hub {
    /// Starts the hub's reader, tick and catalog loops on a thread of their
    /// own; they stop at `shutdown`. Fails only if the thread cannot start.
    pub fn start(
        store: Arc<dyn Store>,
        config: &FrontendConfig,
        shutdown: CancellationToken,
    ) -> std::io::Result<Hub> {
        let stats = Arc::<HubStats>::default();
        let staleness = Staleness {
            periods: f64::from(config.stale_periods),
            min: Duration::from_millis(config.stale_min_ms),
        };
        let core = Fanout::new(
            stats.clone(),
            config.read_count.saturating_mul(WINDOW_READS),
            staleness,
        );
        let hub = Hub {
            store,
            state: Arc::new(Mutex::new(State {
                core,
                wildcards: HashMap::new(),
            })),
            stats,
            failing: Arc::default(),
            max_subscriptions: config.max_subscriptions,
            max_replay: config.max_replay,
            read_count: config.read_count,
            ticked: Arc::default(),
        };
        let block = Duration::from_millis(config.read_block_ms);
        let tick = Duration::from_millis(config.tick_ms);
        let loops = {
            let hub = hub.clone();
            async move {
                tokio::join!(
                    hub.clone().read_loop(block, shutdown.clone()),
                    hub.clone().tick_loop(tick, shutdown.clone()),
                    hub.catalog_loop(shutdown),
                );
            }
        };
        // The reader and the tick get a thread of their own: on the
        // connections' runtime, a burst of a thousand frame writes would
        // queue ahead of them and delay every browser's data by as much.
        // The thread is named after the one starting it (plus `-hub`), so
        // CPU accounting by thread name counts it with its frontend.
        let parent = std::thread::current().name().unwrap_or("frontend").to_string();
        let name = format!("{}-hub", parent.chars().take(11).collect::<String>());
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        std::thread::Builder::new()
            .name(name)
            .spawn(move || runtime.block_on(loops))?;
        Ok(hub)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn stats(&self) -> Arc<HubStats> {
        self.stats.clone()
    }

    /// Whether the last store read succeeded (for `/readyz`).
    pub fn store_ok(&self) -> bool {
        !self.failing.load(Ordering::Relaxed)
    }

    /// Registers a browser whose samples go to `inbox`.
    pub fn register(&self, inbox: Arc<Inbox>) -> ClientId {
        self.lock().core.register(inbox)
    }

    /// Every registered browser's inbox (to tell them all something).
    pub fn inboxes(&self) -> Vec<(ClientId, Arc<Inbox>)> {
        self.lock().core.inboxes()
    }

    pub fn clients(&self) -> usize {
        self.lock().core.clients()
    }

    /// Number of streams being read: one per watched topic, whatever the number of browsers.
    pub fn watched_streams(&self) -> usize {
        self.lock().core.watched_streams()
    }

    /// Subscribes `client` to every topic `selector` names, starting at
    /// `start`. `confirm` is called with the topics (and whether the
    /// selector waits for topics not declared yet) before any sample of
    /// them is queued, so the browser's confirmation comes first. Each
    /// topic's samples then arrive in stream order, no gap, no repeat.
    ///
    /// A wildcard, or an exact topic of a CSC no producer has declared yet
    /// (a dashboard open before its producers), is kept and attached when
    /// its topics appear; an exact topic that a declared CSC does not have
    /// is an error ([`HubError::Unknown`]), since waiting would hide a typo.
    pub async fn subscribe(
        &self,
        client: ClientId,
        selector: &Selector,
        start: Start,
        confirm: impl FnOnce(&[TopicId], bool),
    ) -> Result<Vec<TopicId>, HubError> {
        let catalog = self.store.hash_get(keys::CATALOG).await?;
        let topics = resolve(&catalog, selector);
        let exact = selector.exact();
        let waiting = match &exact {
            Some(topic) if topics.is_empty() => {
                if declares(&catalog, topic) {
                    return Err(HubError::Unknown(topic.to_string()));
                }
                true
            }
            Some(_) => false,
            None => true,
        };
        {
            let mut state = self.lock();
            let Some(streams) = state.core.subscriptions(client) else {
                return Ok(Vec::new());
            };
            let wildcards = state.wildcards.entry(client).or_default();
            if streams + topics.len() > self.max_subscriptions || wildcards.len() >= self.max_subscriptions {
                return Err(HubError::TooMany(self.max_subscriptions));
            }
            if waiting {
                wildcards.insert(selector.clone());
            }
        }
        let ids: Vec<TopicId> = topics.iter().map(|(t, _)| t.clone()).collect();
        confirm(&ids, waiting && exact.is_some());
        for (topic, filter) in &topics {
            self.attach(client, topic, *filter, start, false).await?;
        }
        if waiting {
            // A topic declared between the catalog read above and the
            // selector's registration may have been seen by the catalog
            // loop before it could match this selector: look once more.
            let again = self.store.hash_get(keys::CATALOG).await?;
            for (topic, filter) in resolve(&again, selector) {
                self.attach(client, &topic, filter, Start::Last, true).await?;
            }
        }
        Ok(ids)
    }

    /// Stops sending what `selector` names to `client`.
    pub async fn unsubscribe(&self, client: ClientId, selector: &Selector) -> Result<Vec<TopicId>, HubError> {
        let catalog = self.store.hash_get(keys::CATALOG).await?;
        let topics = resolve(&catalog, selector);
        let mut state = self.lock();
        if let Some(wildcards) = state.wildcards.get_mut(&client) {
            wildcards.remove(selector);
        }
        for (topic, filter) in &topics {
            state.core.unsubscribe(client, &keys::stream(topic), *filter);
        }
        Ok(topics.into_iter().map(|(t, _)| t).collect())
    }

    /// Forgets a browser and all its subscriptions.
    pub fn disconnect(&self, client: ClientId) {
        let mut state = self.lock();
        state.wildcards.remove(&client);
        state.core.disconnect(client);
    }

    /// Adds one stream subscription: what `start` asks for is replayed
    /// into the browser's own queue, then it joins the stream's live feed.
    /// `only_new`: do nothing if the browser already has this stream
    /// (checked atomically, so two paths attaching a newly declared topic
    /// at once deliver its last value once). A stream the browser already
    /// receives live gets nothing more (no repeat).
    async fn attach(
        &self,
        client: ClientId,
        topic: &TopicId,
        filter: Option<u32>,
        start: Start,
        only_new: bool,
    ) -> Result<(), HubError> {
        let key = keys::stream(topic);
        let watched = self.lock().core.is_watched(&key);
        let tail = if watched {
            Vec::new()
        } else {
            self.store.last(&key, 1).await?
        };
        let attached = self
            .lock()
            .core
            .attach(client, topic, filter, only_new, tail.last(), Instant::now());
        let Some(super::fanout::Attached { inbox, cursor, last }) = attached else {
            return Ok(());
        };
        let pos = match start {
            Start::After(after) => {
                let oldest = self.store.range(&key, StreamId::ZERO, None, 1).await?;
                // The entry right after `after` is gone if the oldest kept one is newer than it could be.
                if let Some(first) = oldest.first() {
                    if after != StreamId::ZERO && first.id > after.next(after.ms) {
                        inbox.control(gap_notice(topic, after, first.id));
                    }
                }
                after
            }
            Start::Last => {
                let newest = match (filter, last) {
                    (None, last) => last,
                    // One instance of an aggregated CSC: its newest entry among the stream's last ones.
                    (Some(i), _) => self.store.last(&key, INSTANCE_SCAN).await.map(|entries| {
                        entries
                            .iter()
                            .rev()
                            .filter(|e| e.id <= cursor)
                            .filter_map(|e| Delivered::from_entry(topic, e))
                            .find(|d| d.topic.csc.salindex == i)
                            .map(Arc::new)
                    })?,
                };
                if let Some(newest) = newest {
                    inbox.deliver(&newest);
                }
                cursor
            }
        };
        self.catch_up(client, topic, filter, pos, &inbox).await
    }

    /// Replays the stored entries after `pos` into the browser's queue,
    /// paced by its reading (a replay never overflows it, however long),
    /// until it reaches what the hub has read; then the browser joins the
    /// live feed at the next tick close. Entries already trimmed by
    /// retention, or beyond `frontend.max_replay`, are reported in a `gap`
    /// notice.
    async fn catch_up(
        &self,
        client: ClientId,
        topic: &TopicId,
        filter: Option<u32>,
        mut pos: StreamId,
        inbox: &Inbox,
    ) -> Result<(), HubError> {
        let key = keys::stream(topic);
        let keep = |d: &Delivered| filter.is_none_or(|i| d.topic.csc.salindex == i);
        let chunk = self.read_count.min(inbox.limits().events / 2).max(1);
        let mut replayed = 0usize;
        loop {
            let reached = self.lock().core.catch_up(client, &key, filter, pos);
            if reached != CatchUp::Behind {
                return Ok(()); // joining the live feed, or the browser left or unsubscribed
            }
            if replayed >= self.max_replay {
                // Too far behind: skip to the newest entry, saying what was skipped.
                let newest = self.store.last(&key, 1).await?;
                if let Some(newest) = newest.last().filter(|e| e.id > pos) {
                    inbox.control(gap_notice(topic, pos, newest.id));
                    pos = newest.id;
                }
                replayed = 0;
                continue;
            }
            let entries = self.store.range(&key, pos, None, chunk).await?;
            let Some(last) = entries.last() else {
                // Nothing stored after `pos` (trimmed or deleted): go live from the hub's cursor.
                let cursor = self.lock().core.cursor(&key);
                if let Some(cursor) = cursor.filter(|c| *c > pos) {
                    inbox.control(gap_notice(topic, pos, cursor));
                    pos = cursor;
                }
                continue;
            };
            pos = last.id;
            replayed += entries.len();
            for sample in entries
                .iter()
                .filter_map(|e| Delivered::from_entry(topic, e))
                .filter(|d| keep(d))
            {
                if !inbox.push_replay(Arc::new(sample)).await {
                    return Ok(()); // the browser left
                }
            }
        }
    }

    /// History of one topic: the last `count` entries, or those since `since` (Unix seconds), oldest first.
    pub async fn history(
        &self,
        topic: &TopicId,
        count: Option<usize>,
        since: Option<f64>,
    ) -> Result<(Vec<Arc<Delivered>>, bool), HubError> {
        let key = keys::stream(topic);
        let limit = count.unwrap_or(self.max_replay).min(self.max_replay);
        let filter = topic.csc.is_aggregated().then_some(topic.csc.salindex);
        let entries = match since {
            Some(since) => self.store.range(&key, just_before(since), None, limit).await?,
            None => self.store.last(&key, limit).await?,
        };
        // Complete unless frontend.max_replay cut the request short.
        let complete = match (count, since) {
            (Some(n), None) => n <= self.max_replay,
            _ => entries.len() < limit,
        };
        let samples = entries
            .iter()
            .filter_map(|e| Delivered::from_entry(topic, e))
            .filter(|d| filter.is_none_or(|i| d.topic.csc.salindex == i))
            .map(Arc::new)
            .collect();
        Ok((samples, complete))
    }

    /// A plot's backfill (see [`super::plot`]): reads `topic` from `since`
    /// to `until` in chunks (at most `frontend.max_replay` entries) into
    /// min/max buckets. Returns the buckets, the id of the newest entry
    /// covered (to continue live with `after`), and whether the window was
    /// read to its end.
    pub async fn plot(
        &self,
        topic: &TopicId,
        mut buckets: super::plot::Buckets,
        since: f64,
        until: f64,
    ) -> Result<(super::plot::Buckets, Option<StreamId>, bool), HubError> {
        let key = keys::stream(topic);
        let filter = topic.csc.is_aggregated().then_some(topic.csc.salindex);
        let mut pos = just_before(since);
        let end = StreamId::new((until * 1000.0).max(0.0) as u64, u64::MAX);
        let (mut read, mut last) = (0usize, None);
        loop {
            let chunk = self.read_count.max(64).min(self.max_replay - read);
            let entries = self.store.range(&key, pos, Some(end), chunk).await?;
            for d in entries.iter().filter_map(|e| Delivered::from_entry(topic, e)) {
                if filter.is_none_or(|i| d.topic.csc.salindex == i) {
                    buckets.add(d.source_ts, &d.fields);
                }
            }
            read += entries.len();
            match entries.last() {
                Some(e) => {
                    pos = e.id;
                    last = Some(e.id);
                }
                None => return Ok((buckets, last, true)),
            }
            if entries.len() < chunk {
                return Ok((buckets, last, true));
            }
            if read >= self.max_replay {
                return Ok((buckets, last, false));
            }
        }
    }

    /// Attaches waiting selectors to topics that appeared in the catalog
    /// since the last look (`known`); cheap when nothing changed.
    async fn refresh_wildcards(&self, known: &mut HashSet<String>) {
        let Ok(catalog) = self.store.hash_get(keys::CATALOG).await else {
            return;
        };
        self.learn_periods(&catalog);
        let fresh: Vec<(String, String)> = catalog.into_iter().filter(|(f, _)| !known.contains(f)).collect();
        if fresh.is_empty() {
            return;
        }
        known.extend(fresh.iter().map(|(f, _)| f.clone()));
        let wanted: Vec<(ClientId, Selector)> = {
            let state = self.lock();
            state
                .wildcards
                .iter()
                .flat_map(|(id, selectors)| selectors.iter().map(|s| (*id, s.clone())))
                .collect()
        };
        for (client, selector) in wanted {
            for (topic, filter) in resolve(&fresh, &selector) {
                let _ = self.attach(client, &topic, filter, Start::Last, true).await;
            }
        }
    }

    /// Re-resolves waiting selectors every [`CATALOG_REFRESH`] until `shutdown`.
    async fn catalog_loop(self, shutdown: CancellationToken) {
        let mut known = HashSet::new();
        let mut ticker = tokio::time::interval(CATALOG_REFRESH);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = ticker.tick() => self.refresh_wildcards(&mut known).await,
            }
        }
    }

    async fn read_loop(self, block: Duration, shutdown: CancellationToken) {
        let mut reader = None;
        let mut failing = false;
        let mut retry = Duration::from_millis(50);
        while !shutdown.is_cancelled() {
            let result = async {
                if reader.is_none() {
                    reader = Some(self.store.reader().await?);
                }
                let cursors = self.lock().core.cursors();
                match reader.as_mut() {
                    Some(r) => r.read(&cursors, self.read_count, block).await,
                    None => Ok(Vec::new()),
                }
            };
            let streams = tokio::select! {
                _ = shutdown.cancelled() => break,
                r = result => r,
            };
            match streams {
                Ok(streams) => {
                    if failing {
                        tracing::warn!("store reads resumed");
                        failing = false;
                        self.failing.store(false, Ordering::Relaxed);
                        retry = Duration::from_millis(50);
                    }
                    let full = self.lock().core.read(streams, Instant::now());
                    if full {
                        // A window is full: let the tick close before reading more.
                        let ticked = self.ticked.notified();
                        tokio::select! {
                            _ = shutdown.cancelled() => break,
                            _ = ticked => {}
                        }
                    }
                }
                Err(e) => {
                    if !failing {
                        tracing::warn!(error = %e, "store read failed; browsers get no new data until it recovers");
                        failing = true;
                        self.failing.store(true, Ordering::Relaxed);
                    }
                    reader = None;
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(retry) => {}
                    }
                    retry = (retry * 2).min(Duration::from_secs(2));
                }
            }
        }
    }

    /// Closes a tick every `tick` (on a fixed schedule) until `shutdown`.
    async fn tick_loop(self, tick: Duration, shutdown: CancellationToken) {
        let mut ticker = tokio::time::interval(tick);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = ticker.tick() => {
                    self.lock().core.close_tick();
                    self.ticked.notify_waiters();
                    self.lock().core.check_stale(Instant::now());
                }
            }
        }
    }

    /// Learns the declared period of every watched telemetry topic from the catalog.
    fn learn_periods(&self, catalog: &[(String, String)]) {
        self.lock().core.learn_periods(catalog);
    }
}

/// The last stream id before Unix time `since` (seconds): reading after it
/// starts with the first entry stored at or after `since`.
fn just_before(since: f64) -> StreamId {
    let ms = (since * 1000.0).max(0.0) as u64;
    StreamId::new(ms.saturating_sub(1), u64::MAX)
}

/// The topics of `catalog` (fields of [`keys::CATALOG`]) that `selector`
/// names, each with its instance filter (for aggregated CSCs, whose one
/// stream holds every instance), sorted.
fn resolve(catalog: &[(String, String)], selector: &Selector) -> Vec<(TopicId, Option<u32>)> {
    let mut out = Vec::new();
    for (field, _rate) in catalog {
        let Some((csc, index, category, topic)) = TopicId::from_catalog_field(field) else {
            continue;
        };
        if !selector.matches(&csc, index, category, &topic) {
            continue;
        }
        let (salindex, filter) = match index {
            Some(i) => (i, None),
            None => (selector.salindex.unwrap_or(0), selector.salindex),
        };
        if let Ok(id) = TopicId::new(CscId { csc, salindex }, category, &topic) {
            out.push((id, filter));
        }
    }
    out.sort();
    out
}

/// Whether some producer declared `topic`'s CSC instance (so a topic it
/// lacks is a mistake, not something to wait for).
fn declares(catalog: &[(String, String)], topic: &TopicId) -> bool {
    catalog
        .iter()
        .filter_map(|(f, _)| TopicId::from_catalog_field(f))
        .any(|(csc, index, _, _)| csc == topic.csc.csc && index.is_none_or(|i| i == topic.csc.salindex))
}
