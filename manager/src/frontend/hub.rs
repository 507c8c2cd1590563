//! The hub: one reader per frontend manager for every watched stream, and
//! one batch per tick for every set of browsers watching the same topics.
//!
//! Browsers subscribe through the hub. The first subscriber of a stream
//! makes the hub fetch its last entry and start reading after it; each
//! entry read is decoded once ([`Delivered`]) into the stream's window of
//! the current tick (events in order, the newest telemetry per topic).
//! When the last subscriber leaves, the stream is no longer read. A stream
//! subscribed while the reader waits in `XREAD BLOCK` is picked up when
//! that read returns (at most `frontend.read_block_ms`).
//!
//! Every `frontend.tick_ms` the hub closes the tick: browsers with the
//! same live streams share a feed, and each feed gets one [`Tick`] built
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

use super::inbox::Inbox;
use super::sample::{Delivered, Tick};
use crate::store::{Entry, Store, StoreError};
use meridian_config::FrontendConfig;
use meridian_proto::{keys, Category, Csc, CscId, StreamId, TopicId};
use std::collections::{BTreeSet, HashMap, HashSet};
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

/// Events one stream may hold in the current tick's window, in units of
/// `frontend.read_count`: past it the reader waits for the tick to close
/// (the hub's memory stays bounded when it reads a backlog).
const WINDOW_READS: usize = 8;

/// A browser's live streams (stream key and instance filter): browsers
/// with the same set share one feed and one tick.
type LiveSet = BTreeSet<(Arc<str>, Option<u32>)>;

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
    /// The stream key, shared by live sets.
    key: Arc<str>,
    /// The topic (instance 0 for an aggregated CSC, whose stream holds every instance).
    topic: TopicId,
    cursor: StreamId,
    /// The newest entry read (of any instance).
    last: Option<Arc<Delivered>>,
    /// Subscribers and the instances they want (`None`: all), live or catching up.
    subscribers: HashMap<ClientId, HashSet<Option<u32>>>,
    /// Entries read since the last tick closed: events in order, the newest telemetry per topic.
    window: Vec<Arc<Delivered>>,
    /// The declared period of a telemetry topic (from the catalog), in seconds.
    period: Option<f64>,
    /// When the last entry was read (or the stream first watched).
    seen: std::time::Instant,
    /// Whether subscribers were told it is stale.
    stale: bool,
}

struct Client {
    inbox: Arc<Inbox>,
    /// Wildcard selectors, re-resolved as the catalog grows.
    wildcards: HashSet<Selector>,
    /// Streams (and instance filters) it subscribed to.
    streams: HashSet<(String, Option<u32>)>,
    /// Those it receives through its feed's ticks (the others are catching
    /// up, or were lost and wait for a subscription with `after`).
    live: LiveSet,
}

/// Browsers with the same live set.
struct Feed {
    /// Tells ticks of different feeds apart (a browser's queue may hold both after a change).
    id: u64,
    members: HashSet<ClientId>,
}

/// A browser whose catch-up reached `pos`: it joins the stream's feed at
/// the first tick close at which the hub's reader has reached `pos`.
struct Join {
    client: ClientId,
    key: Arc<str>,
    filter: Option<u32>,
    pos: StreamId,
}

#[derive(Default)]
struct State {
    watched: HashMap<String, Watched>,
    clients: HashMap<ClientId, Client>,
    next_client: ClientId,
    /// Browsers by live set, with the feed's id.
    feeds: HashMap<LiveSet, Feed>,
    next_feed: u64,
    joins: Vec<Join>,
}

impl State {
    /// Changes a browser's live set, moving it to the feed of its new set.
    fn set_live(&mut self, client: ClientId, change: impl FnOnce(&mut LiveSet)) {
        let Some(c) = self.clients.get_mut(&client) else {
            return;
        };
        let before = c.live.clone();
        change(&mut c.live);
        if c.live == before {
            return;
        }
        if let Some(feed) = self.feeds.get_mut(&before) {
            feed.members.remove(&client);
            if feed.members.is_empty() {
                self.feeds.remove(&before);
            }
        }
        if !c.live.is_empty() {
            let next = &mut self.next_feed;
            let feed = self.feeds.entry(c.live.clone()).or_insert_with(|| {
                *next += 1;
                Feed {
                    id: *next,
                    members: HashSet::new(),
                }
            });
            feed.members.insert(client);
        }
    }
}

/// Counters of the hub's work (the read counter proves one read per stream).
#[derive(Debug, Default)]
pub struct HubStats {
    /// Entries read from the store by the shared reader.
    pub entries_read: AtomicU64,
    /// Samples handed to browsers (each sample of a shared tick counts once per browser).
    pub deliveries: AtomicU64,
    /// Ticks built: one per feed (set of browsers with the same live topics) per tick with data.
    pub ticks_built: AtomicU64,
    /// Ticks a browser that fell behind skipped: newer ticks it had queued carried all their topics.
    pub ticks_skipped: AtomicU64,
    /// Ticks a browser that fell behind took into its own queue (conflated, events kept).
    pub ticks_folded: AtomicU64,
    /// The most bytes any one browser's inbox has held (its bound is
    /// `frontend.client_bytes`).
    pub inbox_bytes_max: std::sync::atomic::AtomicUsize,
    /// Events dropped for browsers whose inbox was full (each was told).
    pub events_lost: AtomicU64,
    /// Store → frontend hop of live samples: the shared reader's read time
    /// minus the ingest time (seconds).
    pub store_to_frontend: meridian_proto::metrics::Histogram,
    /// Frontend → browser hop: from a data frame's oldest sample being read
    /// to the browser's socket taking the frame (seconds), per frame.
    pub frontend_to_browser: meridian_proto::metrics::Histogram,
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
    /// Periods of silence after which a telemetry topic is stale (`frontend.stale_periods`).
    stale_periods: f64,
    /// The shortest silence reported as stale (`frontend.stale_min_ms`).
    stale_min: Duration,
}

impl Hub {
    /// Starts the hub's reader, tick and catalog loops on a thread of their
    /// own; they stop at `shutdown`. Fails only if the thread cannot start.
    pub fn start(
        store: Arc<dyn Store>,
        config: &FrontendConfig,
        shutdown: CancellationToken,
    ) -> std::io::Result<Hub> {
        let hub = Hub {
            store,
            state: Arc::default(),
            stats: Arc::default(),
            failing: Arc::default(),
            max_subscriptions: config.max_subscriptions,
            max_replay: config.max_replay,
            read_count: config.read_count,
            ticked: Arc::default(),
            stale_periods: f64::from(config.stale_periods),
            stale_min: Duration::from_millis(config.stale_min_ms),
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
        let mut state = self.lock();
        state.next_client += 1;
        let id = state.next_client;
        state.clients.insert(
            id,
            Client {
                inbox,
                wildcards: HashSet::new(),
                streams: HashSet::new(),
                live: LiveSet::new(),
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
        if let Some(c) = state.clients.get_mut(&client) {
            c.wildcards.remove(selector);
        }
        for (topic, filter) in &topics {
            let key = keys::stream(topic);
            if let Some(c) = state.clients.get_mut(&client) {
                c.streams.remove(&(key.clone(), *filter));
            }
            state.set_live(client, |live| {
                live.remove(&(Arc::from(key.as_str()), *filter));
            });
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
        state.set_live(client, LiveSet::clear);
        if let Some(c) = state.clients.remove(&client) {
            c.inbox.close();
        }
        state.watched.retain(|_, w| {
            w.subscribers.remove(&client);
            !w.subscribers.is_empty()
        });
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
        let watched = self.lock().watched.contains_key(&key);
        let tail = if watched {
            Vec::new()
        } else {
            self.store.last(&key, 1).await?
        };
        let (inbox, cursor, last) = {
            let mut state = self.lock();
            let State {
                watched,
                clients,
                joins,
                ..
            } = &mut *state;
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
            let entry = (w.key.clone(), filter);
            let joining = joins
                .iter()
                .any(|j| j.client == client && j.key == entry.0 && j.filter == filter);
            if c.live.contains(&entry) || joining {
                return Ok(());
            }
            w.subscribers.entry(client).or_default().insert(filter);
            if w.stale {
                c.inbox.control(stale_notice(w, true));
            }
            // Subscribing again ends a suspension after a loss.
            c.inbox.unsuspend(&key);
            (c.inbox.clone(), w.cursor, w.last.clone())
        };
        let pos = match start {
            Start::After(after) => {
                let oldest = self.store.range(&key, StreamId::ZERO, None, 1).await?;
                // The entry right after `after` is gone if the oldest kept one is newer than it could be.
                if let Some(first) = oldest.first() {
                    if after != StreamId::ZERO && first.id > after.next(after.ms) {
                        inbox.control(super::client::gap_notice(topic, after, first.id));
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

    /// Creates the watched stream of `topic` if nobody reads it yet, its
    /// reader starting after `cursor` (with `last` as its newest value).
    fn watch<'a>(
        watched: &'a mut HashMap<String, Watched>,
        topic: &TopicId,
        cursor: StreamId,
        last: Option<&Entry>,
    ) -> &'a mut Watched {
        let key = keys::stream(topic);
        watched.entry(key.clone()).or_insert_with(|| Watched {
            key: key.into(),
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
            window: Vec::new(),
            period: None,
            seen: std::time::Instant::now(),
            stale: false,
        })
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
            {
                let mut state = self.lock();
                let State {
                    watched,
                    clients,
                    joins,
                    ..
                } = &mut *state;
                let (Some(c), Some(w)) = (clients.get(&client), watched.get(&key)) else {
                    return Ok(()); // the browser left, or unsubscribed
                };
                if !c.streams.contains(&(key.clone(), filter)) {
                    return Ok(());
                }
                if pos >= w.cursor {
                    joins.push(Join {
                        client,
                        key: w.key.clone(),
                        filter,
                        pos,
                    });
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
                .clients
                .iter()
                .flat_map(|(id, c)| c.wildcards.iter().map(|s| (*id, s.clone())))
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
                    if self.dispatch(streams) {
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

    /// Puts each entry read into its stream's window of the current tick,
    /// decoded once. True if a window is full (the reader should wait).
    fn dispatch(&self, streams: Vec<crate::store::StreamEntries>) -> bool {
        let mut read = 0u64;
        let mut full = false;
        let mut fresh = Vec::new();
        let limit = self.read_count.saturating_mul(WINDOW_READS);
        let mut state = self.lock();
        for stream in streams {
            let Some(w) = state.watched.get_mut(&stream.key) else {
                continue;
            };
            // Telemetry is conflated to the newest value per topic per tick:
            // of a read's entries (several when the reader is behind), only
            // the newest is decoded, so catching up costs one per read.
            let telemetry = w.topic.category == Category::Telemetry;
            let newest = stream.entries.last().map(|e| e.id);
            if newest.is_some_and(|n| n > w.cursor) {
                w.seen = std::time::Instant::now();
                if w.stale {
                    w.stale = false;
                    fresh.push(w.key.clone());
                }
            }
            for entry in &stream.entries {
                if entry.id <= w.cursor {
                    continue;
                }
                read += 1;
                w.cursor = entry.id;
                if telemetry && !w.topic.csc.is_aggregated() && Some(entry.id) != newest {
                    continue;
                }
                let Some(sample) = Delivered::from_entry(&w.topic, entry).map(Arc::new) else {
                    continue;
                };
                self.stats
                    .store_to_frontend
                    .observe(sample.read_ts - sample.ingest_ts);
                let slot = telemetry
                    .then(|| w.window.iter_mut().find(|s| s.topic_key == sample.topic_key))
                    .flatten();
                match slot {
                    Some(slot) => *slot = sample.clone(),
                    None => w.window.push(sample.clone()),
                }
                w.last = Some(sample);
            }
            full |= w.window.len() >= limit;
        }
        for key in fresh {
            notify_subscribers(&state, &key, false);
        }
        drop(state);
        self.stats.entries_read.fetch_add(read, Ordering::Relaxed);
        full
    }

    /// Closes a tick every `tick` (on a fixed schedule) until `shutdown`.
    async fn tick_loop(self, tick: Duration, shutdown: CancellationToken) {
        let mut ticker = tokio::time::interval(tick);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = ticker.tick() => {
                    self.close_tick();
                    self.ticked.notify_waiters();
                    self.check_stale();
                }
            }
        }
    }

    /// Tells subscribers of telemetry topics that went silent for
    /// `frontend.stale_periods` periods of their declared rate.
    fn check_stale(&self) {
        let mut state = self.lock();
        let mut stale = Vec::new();
        for w in state.watched.values_mut() {
            let Some(period) = w.period.filter(|_| !w.stale && !w.topic.csc.is_aggregated()) else {
                continue;
            };
            let limit = Duration::from_secs_f64(period * self.stale_periods).max(self.stale_min);
            if w.seen.elapsed() > limit {
                w.stale = true;
                stale.push(w.key.clone());
            }
        }
        for key in stale {
            notify_subscribers(&state, &key, true);
        }
    }

    /// Learns the declared period of every watched telemetry topic from the catalog.
    fn learn_periods(&self, catalog: &[(String, String)]) {
        let rates: HashMap<&str, f64> = catalog
            .iter()
            .filter_map(|(f, r)| Some((f.as_str(), r.parse::<f64>().ok().filter(|r| *r > 0.0)?)))
            .collect();
        let mut state = self.lock();
        for w in state.watched.values_mut() {
            if w.topic.category == Category::Telemetry {
                w.period = rates.get(w.topic.catalog_field().as_str()).map(|r| 1.0 / r);
            }
        }
    }

    /// Builds one [`Tick`] per feed from its streams' windows and queues it
    /// to every browser of the feed; then moves browsers that lost events
    /// out of those streams' feeds, and browsers whose catch-up is done in.
    fn close_tick(&self) {
        let mut state = self.lock();
        let windows: HashMap<Arc<str>, Vec<Arc<Delivered>>> = state
            .watched
            .values_mut()
            .filter(|w| !w.window.is_empty())
            .map(|w| (w.key.clone(), std::mem::take(&mut w.window)))
            .collect();
        if windows.is_empty() && state.joins.is_empty() {
            return;
        }
        let (mut deliveries, mut built) = (0u64, 0u64);
        let mut losses: Vec<(ClientId, Vec<Arc<str>>)> = Vec::new();
        for (live, feed) in &state.feeds {
            let mut samples = Vec::new();
            let mut telemetry = Vec::new();
            // Which of the feed's streams this tick updates, while it holds
            // one telemetry sample per stream (else a browser behind cannot skip it).
            let mut bits = vec![0u64; live.len().div_ceil(64)];
            let mut skippable = true;
            for (i, (key, filter)) in live.iter().enumerate() {
                let Some(window) = windows.get(key) else {
                    continue;
                };
                let before = telemetry.len();
                for s in window
                    .iter()
                    .filter(|s| filter.is_none_or(|i| s.topic.csc.salindex == i))
                {
                    match s.topic.category {
                        Category::Event => samples.push(s.clone()),
                        Category::Telemetry => telemetry.push(s.clone()),
                    }
                }
                skippable &= telemetry.len() - before <= 1;
                if telemetry.len() > before {
                    bits[i / 64] |= 1 << (i % 64);
                }
            }
            if samples.is_empty() && telemetry.is_empty() {
                continue;
            }
            let cover = (skippable && samples.is_empty()).then_some((feed.id, bits));
            samples.extend(telemetry);
            let tick = Arc::new(Tick::covering(samples, cover));
            built += 1;
            for client in &feed.members {
                if let Some(c) = state.clients.get(client) {
                    deliveries += tick.samples.len() as u64;
                    let lost = c.inbox.push_tick(&tick);
                    if !lost.is_empty() {
                        losses.push((*client, lost));
                    }
                }
            }
        }
        for (client, keys) in losses {
            state.set_live(client, |live| live.retain(|(key, _)| !keys.contains(key)));
        }
        for join in std::mem::take(&mut state.joins) {
            let Some(c) = state.clients.get(&join.client) else {
                continue;
            };
            let entry = (join.key.clone(), join.filter);
            if c.live.contains(&entry) || !c.streams.contains(&(join.key.to_string(), join.filter)) {
                continue; // joined already, or unsubscribed meanwhile
            }
            // A replay may have read the store beyond the hub's reader: wait
            // until the reader has passed it too, or the entries in between
            // would come once more in a later tick. Until then every entry
            // read is one the replay sent.
            if state.watched.get(&*join.key).is_some_and(|w| w.cursor < join.pos) {
                state.joins.push(join);
                continue;
            }
            // This window's entries after the catch-up's last one go
            // personally; from the next tick the feed carries the stream.
            let extras = windows
                .get(&join.key)
                .into_iter()
                .flatten()
                .filter(|s| s.id > join.pos && join.filter.is_none_or(|i| s.topic.csc.salindex == i));
            for sample in extras {
                c.inbox.deliver(sample);
                deliveries += 1;
            }
            if !c.inbox.is_suspended(&join.key) {
                state.set_live(join.client, |live| {
                    live.insert(entry);
                });
            }
        }
        drop(state);
        self.stats.deliveries.fetch_add(deliveries, Ordering::Relaxed);
        self.stats.ticks_built.fetch_add(built, Ordering::Relaxed);
    }
}

/// The last stream id before Unix time `since` (seconds): reading after it
/// starts with the first entry stored at or after `since`.
fn just_before(since: f64) -> StreamId {
    let ms = (since * 1000.0).max(0.0) as u64;
    StreamId::new(ms.saturating_sub(1), u64::MAX)
}

/// `{"type":"stale",…}` for a watched stream.
fn stale_notice(w: &Watched, stale: bool) -> String {
    meridian_proto::browser::ServerMessage::Stale {
        topic: meridian_proto::browser::TopicRef::from(&w.topic),
        stale,
        since: if stale {
            w.last.as_ref().map(|l| l.source_ts)
        } else {
            None
        },
        period_s: if stale { w.period } else { None },
    }
    .to_json()
}

/// Tells every subscriber of stream `key` that it went stale or fresh.
fn notify_subscribers(state: &State, key: &str, stale: bool) {
    let Some(w) = state.watched.get(key) else { return };
    let notice = stale_notice(w, stale);
    for client in w.subscribers.keys() {
        if let Some(c) = state.clients.get(client) {
            c.inbox.control(notice.as_str());
        }
    }
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
