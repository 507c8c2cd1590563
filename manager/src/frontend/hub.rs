//! The hub: one reader per frontend manager for every watched stream.
//!
//! Browsers subscribe through the hub. The first subscriber of a stream
//! makes the hub fetch its last entry and start reading after it; each
//! entry read is decoded once ([`Delivered`]) and the same `Arc` goes to
//! every subscriber's [`Inbox`]. When the last subscriber leaves, the
//! stream is no longer read. A stream subscribed while the reader waits in
//! `XREAD BLOCK` is picked up when that read returns (at most
//! `frontend.read_block_ms`).
//!
//! Replays (the last value on subscribe, recovery after a stream id) are
//! read from the store up to the hub's cursor while the browser's live
//! samples of that stream are held, then released after the replay: one
//! ordered sequence with no gap and no repeat.
//!
//! Wildcards (every topic of a CSC, every index) are resolved with the
//! catalog producers' handshakes fill ([`meridian_proto::CATALOG_KEY`]),
//! and re-resolved every [`CATALOG_REFRESH`] so topics that appear later
//! are added.

use super::inbox::Inbox;
use super::sample::Delivered;
use crate::store::{Entry, Store, StoreError};
use meridian_config::FrontendConfig;
use meridian_proto::{Category, Csc, CscId, StreamId, TopicId, CATALOG_KEY};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Identifies one browser connection inside the hub.
pub type ClientId = u64;

/// How often wildcard subscriptions are re-resolved against the catalog.
pub const CATALOG_REFRESH: Duration = Duration::from_secs(1);

/// Entries scanned to find the last value of one instance of an aggregated CSC.
const INSTANCE_SCAN: usize = 1000;

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

/// A subscribed stream, with the instance filter of each subscriber.
struct Watched {
    /// The topic (instance 0 for an aggregated CSC, whose stream holds every instance).
    topic: TopicId,
    cursor: StreamId,
    /// The newest entry read (of any instance).
    last: Option<Arc<Delivered>>,
    /// Subscribers and the instances they want (`None`: all).
    subscribers: HashMap<ClientId, HashSet<Option<u32>>>,
}

struct Client {
    inbox: Arc<Inbox>,
    /// Wildcard selectors, re-resolved as the catalog grows.
    wildcards: HashSet<Selector>,
    /// Streams (and instance filters) it receives.
    streams: HashSet<(String, Option<u32>)>,
}

#[derive(Default)]
struct State {
    watched: HashMap<String, Watched>,
    clients: HashMap<ClientId, Client>,
    next_client: ClientId,
}

/// Counters of the hub's work (the read counter proves one read per stream).
#[derive(Debug, Default)]
pub struct HubStats {
    /// Entries read from the store by the shared reader.
    pub entries_read: AtomicU64,
    /// Samples handed to browsers' inboxes.
    pub deliveries: AtomicU64,
    /// The most bytes any one browser's inbox has held (its bound is
    /// `frontend.client_bytes`).
    pub inbox_bytes_max: std::sync::atomic::AtomicUsize,
    /// Events dropped for browsers whose inbox was full (each was told).
    pub events_lost: AtomicU64,
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
}

impl Hub {
    /// Starts the hub's reader task; it stops at `shutdown`.
    pub fn start(store: Arc<dyn Store>, config: &FrontendConfig, shutdown: CancellationToken) -> Hub {
        let hub = Hub {
            store,
            state: Arc::default(),
            stats: Arc::default(),
            failing: Arc::default(),
            max_subscriptions: config.max_subscriptions,
            max_replay: config.max_replay,
            read_count: config.read_count,
        };
        let block = Duration::from_millis(config.read_block_ms);
        tokio::spawn(hub.clone().read_loop(block, shutdown.clone()));
        tokio::spawn(hub.clone().catalog_loop(shutdown));
        hub
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
        let mut state = self.lock();
        state.next_client += 1;
        let id = state.next_client;
        state.clients.insert(
            id,
            Client {
                inbox,
                wildcards: HashSet::new(),
                streams: HashSet::new(),
            },
        );
        id
    }

    /// Every registered browser's inbox (to tell them all something).
    pub fn inboxes(&self) -> Vec<(ClientId, Arc<Inbox>)> {
        self.lock()
            .clients
            .iter()
            .map(|(id, c)| (*id, c.inbox.clone()))
            .collect()
    }

    pub fn clients(&self) -> usize {
        self.lock().clients.len()
    }

    /// Number of streams being read: one per watched topic, whatever the number of browsers.
    pub fn watched_streams(&self) -> usize {
        self.lock().watched.len()
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
        let catalog = self.store.hash_get(CATALOG_KEY).await?;
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
            let Some(c) = state.clients.get_mut(&client) else {
                return Ok(Vec::new());
            };
            if c.streams.len() + topics.len() > self.max_subscriptions
                || c.wildcards.len() >= self.max_subscriptions
            {
                return Err(HubError::TooMany(self.max_subscriptions));
            }
            if waiting {
                c.wildcards.insert(selector.clone());
            }
        }
        let ids: Vec<TopicId> = topics.iter().map(|(t, _)| t.clone()).collect();
        confirm(&ids, waiting && exact.is_some());
        for (topic, filter) in &topics {
            self.attach(client, topic, *filter, start).await?;
        }
        if waiting {
            // A topic declared between the catalog read above and the
            // selector's registration may have been seen by the catalog
            // loop before it could match this selector: look once more.
            let again = self.store.hash_get(CATALOG_KEY).await?;
            for (topic, filter) in resolve(&again, selector) {
                self.attach_last(client, &topic, filter, true).await?;
            }
        }
        Ok(ids)
    }

    /// Stops sending what `selector` names to `client`.
    pub async fn unsubscribe(&self, client: ClientId, selector: &Selector) -> Result<Vec<TopicId>, HubError> {
        let catalog = self.store.hash_get(CATALOG_KEY).await?;
        let topics = resolve(&catalog, selector);
        let mut state = self.lock();
        if let Some(c) = state.clients.get_mut(&client) {
            c.wildcards.remove(selector);
        }
        for (topic, filter) in &topics {
            let key = topic.stream_key();
            if let Some(c) = state.clients.get_mut(&client) {
                c.streams.remove(&(key.clone(), *filter));
            }
            if let Some(w) = state.watched.get_mut(&key) {
                if let Some(filters) = w.subscribers.get_mut(&client) {
                    filters.remove(filter);
                    if filters.is_empty() {
                        w.subscribers.remove(&client);
                    }
                }
                if w.subscribers.is_empty() {
                    state.watched.remove(&key);
                }
            }
        }
        Ok(topics.into_iter().map(|(t, _)| t).collect())
    }

    /// Forgets a browser and all its subscriptions.
    pub fn disconnect(&self, client: ClientId) {
        let mut state = self.lock();
        if let Some(c) = state.clients.remove(&client) {
            c.inbox.close();
        }
        state.watched.retain(|_, w| {
            w.subscribers.remove(&client);
            !w.subscribers.is_empty()
        });
    }

    /// Adds one stream subscription and replays what `start` asks for.
    async fn attach(
        &self,
        client: ClientId,
        topic: &TopicId,
        filter: Option<u32>,
        start: Start,
    ) -> Result<(), HubError> {
        match start {
            Start::Last => self.attach_last(client, topic, filter, false).await,
            Start::After(after) => self.attach_after(client, topic, filter, after).await,
        }
    }

    /// Creates the watched stream of `topic` if nobody reads it yet, its
    /// reader starting after `cursor` (with `last` as its newest value).
    fn watch<'a>(
        watched: &'a mut HashMap<String, Watched>,
        topic: &TopicId,
        cursor: StreamId,
        last: Option<&Entry>,
    ) -> &'a mut Watched {
        watched.entry(topic.stream_key()).or_insert_with(|| Watched {
            // An aggregated CSC's one stream holds every instance: index 0 stands for all.
            topic: if topic.csc.is_aggregated() {
                TopicId {
                    csc: CscId {
                        csc: topic.csc.csc.clone(),
                        salindex: 0,
                    },
                    ..topic.clone()
                }
            } else {
                topic.clone()
            },
            cursor,
            last: last.and_then(|e| Delivered::from_entry(topic, e)).map(Arc::new),
            subscribers: HashMap::new(),
        })
    }

    /// Subscribes with the newest stored value first. Live samples that
    /// arrive while that value is fetched are held and released after it.
    /// `only_new`: do nothing if the browser already receives this stream
    /// (checked atomically, so two paths attaching a newly declared topic
    /// at once deliver its last value once).
    async fn attach_last(
        &self,
        client: ClientId,
        topic: &TopicId,
        filter: Option<u32>,
        only_new: bool,
    ) -> Result<(), HubError> {
        let key = topic.stream_key();
        let watched = self.lock().watched.contains_key(&key);
        let tail = if watched {
            Vec::new()
        } else {
            self.store.last(&key, 1).await?
        };
        let (inbox, cursor, last) = {
            let mut state = self.lock();
            let State { watched, clients, .. } = &mut *state;
            let Some(c) = clients.get_mut(&client) else {
                return Ok(());
            };
            if !c.streams.insert((key.clone(), filter)) && only_new {
                return Ok(());
            }
            let w = Self::watch(
                watched,
                topic,
                tail.last().map_or(StreamId::ZERO, |e| e.id),
                tail.last(),
            );
            c.inbox.hold(&key);
            w.subscribers.entry(client).or_default().insert(filter);
            (c.inbox.clone(), w.cursor, w.last.clone())
        };
        let newest = match (filter, last) {
            (None, Some(last)) => Ok(Some(last)),
            (None, None) => self.store.last(&key, 1).await.map(|entries| {
                entries
                    .iter()
                    .filter(|e| e.id <= cursor)
                    .find_map(|e| Delivered::from_entry(topic, e))
                    .map(Arc::new)
            }),
            // One instance of an aggregated CSC: its newest entry among the stream's last ones.
            (Some(i), _) => self.store.last(&key, INSTANCE_SCAN).await.map(|entries| {
                entries
                    .iter()
                    .rev()
                    .filter(|e| e.id <= cursor)
                    .filter_map(|e| Delivered::from_entry(topic, e))
                    .find(|d| d.topic.csc.salindex == i)
                    .map(Arc::new)
            }),
        };
        match newest {
            Ok(newest) => {
                inbox.release(&key, newest.into_iter().collect());
                Ok(())
            }
            Err(e) => {
                inbox.release(&key, Vec::new());
                Err(e.into())
            }
        }
    }

    /// Subscribes from stream id `after` (recovery): replays the stored
    /// entries after it, paced by the browser's inbox (a replay never
    /// overflows it, however long), then switches to live samples at the
    /// point the replay reached, with no gap and no repeat. Entries already
    /// trimmed by retention, or beyond `frontend.max_replay`, are reported
    /// in a `gap` notice.
    async fn attach_after(
        &self,
        client: ClientId,
        topic: &TopicId,
        filter: Option<u32>,
        after: StreamId,
    ) -> Result<(), HubError> {
        let key = topic.stream_key();
        let inbox = {
            let mut state = self.lock();
            let Some(c) = state.clients.get_mut(&client) else {
                return Ok(());
            };
            // Live samples of this stream wait for the replay to reach them.
            c.inbox.suspend(&key);
            c.inbox.clone()
        };
        let keep = |d: &Delivered| filter.is_none_or(|i| d.topic.csc.salindex == i);
        let oldest = self.store.range(&key, StreamId::ZERO, None, 1).await?;
        // The entry right after `after` is gone if the oldest kept one is newer than it could be.
        if let Some(first) = oldest.first() {
            if after != StreamId::ZERO && first.id > after.next(after.ms) {
                inbox.control(super::client::gap_notice(topic, after, first.id));
            }
        }
        let chunk = self.read_count.min(inbox.limits().events / 2).max(1);
        let mut pos = after;
        let mut replayed = 0usize;
        loop {
            // Go live once the replay has reached what the hub has dispatched.
            {
                let mut state = self.lock();
                let State { watched, clients, .. } = &mut *state;
                let Some(c) = clients.get_mut(&client) else {
                    return Ok(());
                };
                let cursor = watched.get(&key).map(|w| w.cursor);
                if cursor.is_none_or(|cursor| pos >= cursor) {
                    c.streams.insert((key.clone(), filter));
                    let w = Self::watch(watched, topic, pos, None);
                    w.subscribers.entry(client).or_default().insert(filter);
                    c.inbox.resume(&key, pos);
                    return Ok(());
                }
            }
            if replayed >= self.max_replay {
                // Too far behind: skip to the newest entry, saying what was skipped.
                let newest = self.store.last(&key, 1).await?;
                if let Some(newest) = newest.last().filter(|e| e.id > pos) {
                    inbox.control(super::client::gap_notice(topic, pos, newest.id));
                    pos = newest.id;
                }
                replayed = 0;
                continue;
            }
            let entries = self.store.range(&key, pos, None, chunk).await?;
            let Some(last) = entries.last() else {
                // Nothing stored after `pos` (trimmed or deleted): go live from the hub's cursor.
                let cursor = self.lock().watched.get(&key).map(|w| w.cursor);
                if let Some(cursor) = cursor.filter(|c| *c > pos) {
                    inbox.control(super::client::gap_notice(topic, pos, cursor));
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
        let key = topic.stream_key();
        let limit = count.unwrap_or(self.max_replay).min(self.max_replay);
        let filter = topic.csc.is_aggregated().then_some(topic.csc.salindex);
        let entries = match since {
            Some(since) => {
                let start = StreamId::new((since * 1000.0).max(0.0) as u64, 0);
                let after = StreamId::new(start.ms.saturating_sub(1), u64::MAX);
                self.store.range(&key, after, None, limit).await?
            }
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

    /// Attaches waiting selectors to topics that appeared in the catalog
    /// since the last look (`known`); cheap when nothing changed.
    async fn refresh_wildcards(&self, known: &mut HashSet<String>) {
        let Ok(catalog) = self.store.hash_get(CATALOG_KEY).await else {
            return;
        };
        let fresh: Vec<(String, String)> = catalog.into_iter().filter(|(f, _)| !known.contains(f)).collect();
        if fresh.is_empty() {
            return;
        }
        known.extend(fresh.iter().map(|(f, _)| f.clone()));
        let wanted: Vec<(ClientId, Selector)> = {
            let state = self.lock();
            state
                .clients
                .iter()
                .flat_map(|(id, c)| c.wildcards.iter().map(|s| (*id, s.clone())))
                .collect()
        };
        for (client, selector) in wanted {
            for (topic, filter) in resolve(&fresh, &selector) {
                let _ = self.attach_last(client, &topic, filter, true).await;
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
                let cursors: Vec<(String, StreamId)> = self
                    .lock()
                    .watched
                    .iter()
                    .map(|(k, w)| (k.clone(), w.cursor))
                    .collect();
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
                    self.dispatch(streams);
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

    /// Hands each entry read to its stream's subscribers, decoded once.
    fn dispatch(&self, streams: Vec<crate::store::StreamEntries>) {
        let (mut read, mut deliveries) = (0u64, 0u64);
        let mut state = self.lock();
        let State { watched, clients, .. } = &mut *state;
        for stream in streams {
            let Some(w) = watched.get_mut(&stream.key) else {
                continue;
            };
            // Telemetry is conflated to the newest value per topic in every
            // browser's inbox anyway: of a read's entries (several when the
            // reader is behind), only the newest is fanned out, so catching
            // up costs one delivery per browser, not one per entry.
            let telemetry =
                w.topic.category == meridian_proto::Category::Telemetry && !w.topic.csc.is_aggregated();
            let newest = stream.entries.last().map(|e| e.id);
            for entry in &stream.entries {
                if entry.id <= w.cursor {
                    continue;
                }
                read += 1;
                w.cursor = entry.id;
                if telemetry && Some(entry.id) != newest {
                    continue;
                }
                let Some(sample) = Delivered::from_entry(&w.topic, entry).map(Arc::new) else {
                    continue;
                };
                let instance = sample.topic.csc.salindex;
                for (client, filters) in &w.subscribers {
                    if filters.contains(&None) || filters.contains(&Some(instance)) {
                        if let Some(c) = clients.get(client) {
                            c.inbox.deliver(&sample);
                            deliveries += 1;
                        }
                    }
                }
                w.last = Some(sample);
            }
        }
        drop(state);
        self.stats.entries_read.fetch_add(read, Ordering::Relaxed);
        self.stats.deliveries.fetch_add(deliveries, Ordering::Relaxed);
    }
}

/// The topics of `catalog` (fields of [`CATALOG_KEY`]) that `selector`
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
