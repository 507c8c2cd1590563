//! The fan-out core: which browser gets which samples, tick by tick.
//!
//! It holds the watched streams (cursor, the current tick's window, last
//! value, staleness), the browsers (their subscriptions and live streams),
//! the feeds (browsers with the same live streams) and the catch-ups
//! waiting to join. The hub feeds it what its reader read and calls it at
//! each tick with the time; it decides and queues into the browsers'
//! inboxes, which never block. No sockets, no tasks, no clock, no locks of
//! its own: the hub holds it under its lock and does the I/O, so every
//! decision here is tested in virtual time (tests below).
//!
//! - Reading ([`Fanout::read`]): each entry is decoded once into its
//!   stream's window: events in order, telemetry conflated to the newest
//!   value per topic per tick (of a read's entries only the newest is
//!   decoded, so catching up costs one decode per read).
//! - Closing a tick ([`Fanout::close_tick`]): one [`Tick`] per feed with
//!   data, built once and queued (an `Arc`) to each of its browsers; a
//!   browser behind skips or folds queued ticks ([`Inbox::push_tick`]), and
//!   one that lost events leaves the feeds of those streams until it
//!   subscribes again. A browser whose catch-up reached position `pos`
//!   joins the feed once the reader has passed `pos`, getting that window's
//!   entries after `pos` as personal extras: no gap, no repeat.
//! - Staleness ([`Fanout::check_stale`]): a telemetry topic silent for
//!   `frontend.stale_periods` periods (at least `frontend.stale_min_ms`) is
//!   reported to its subscribers, and again when it resumes.

use super::inbox::Inbox;
use super::sample::{Delivered, Tick};
use super::stats::HubStats;
use meridian_proto::browser::stale_notice;
use meridian_proto::{keys, Category, CscId, StreamId, TopicId};
use meridian_store::{Entry, StreamEntries};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Identifies one browser connection inside the hub.
pub type ClientId = u64;

/// A browser's live streams (stream key and instance filter): browsers
/// with the same set share one feed and one tick.
type LiveSet = BTreeSet<(Arc<str>, Option<u32>)>;

/// When a telemetry topic counts as stale: silent for `periods` of its
/// declared period, and never less than `min`.
#[derive(Debug, Clone, Copy)]
pub struct Staleness {
    /// `frontend.stale_periods`.
    pub periods: f64,
    /// `frontend.stale_min_ms`.
    pub min: Duration,
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
    seen: Instant,
    /// Whether subscribers were told it is stale.
    stale: bool,
}

impl Watched {
    fn stale_notice(&self, stale: bool) -> String {
        stale_notice(
            &self.topic,
            stale,
            self.last.as_ref().map(|l| l.source_ts),
            self.period,
        )
    }
}

struct Client {
    inbox: Arc<Inbox>,
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

/// A new subscription's starting point, as [`Fanout::attach`] found it.
pub struct Attached {
    /// The browser's inbox, for the replay.
    pub inbox: Arc<Inbox>,
    /// Where the hub's reader is in the stream.
    pub cursor: StreamId,
    /// The newest entry read of the stream (of any instance).
    pub last: Option<Arc<Delivered>>,
}

/// Where a catch-up stands ([`Fanout::catch_up`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CatchUp {
    /// The browser left or unsubscribed: stop replaying.
    Gone,
    /// The replay reached the reader: the browser joins the live feed at a tick close.
    Joining,
    /// The reader is ahead: replay more from the store.
    Behind,
}

/// The fan-out state of one frontend (module doc).
pub struct Fanout {
    watched: HashMap<String, Watched>,
    clients: HashMap<ClientId, Client>,
    next_client: ClientId,
    /// Browsers by live set, with the feed's id.
    feeds: HashMap<LiveSet, Feed>,
    next_feed: u64,
    joins: Vec<Join>,
    stats: Arc<HubStats>,
    /// Entries one stream's window may hold before the reader waits for the tick.
    window: usize,
    staleness: Staleness,
}

impl Fanout {
    /// An empty core; a stream's window holds up to `window` entries.
    pub fn new(stats: Arc<HubStats>, window: usize, staleness: Staleness) -> Fanout {
        Fanout {
            watched: HashMap::new(),
            clients: HashMap::new(),
            next_client: 0,
            feeds: HashMap::new(),
            next_feed: 0,
            joins: Vec::new(),
            stats,
            window,
            staleness,
        }
    }

    /// Registers a browser whose samples go to `inbox`.
    pub fn register(&mut self, inbox: Arc<Inbox>) -> ClientId {
        self.next_client += 1;
        let id = self.next_client;
        self.clients.insert(
            id,
            Client {
                inbox,
                streams: HashSet::new(),
                live: LiveSet::new(),
            },
        );
        id
    }

    /// Every registered browser's inbox.
    pub fn inboxes(&self) -> Vec<(ClientId, Arc<Inbox>)> {
        self.clients
            .iter()
            .map(|(id, c)| (*id, c.inbox.clone()))
            .collect()
    }

    pub fn clients(&self) -> usize {
        self.clients.len()
    }

    /// Number of streams being read.
    pub fn watched_streams(&self) -> usize {
        self.watched.len()
    }

    pub fn is_watched(&self, key: &str) -> bool {
        self.watched.contains_key(key)
    }

    /// Streams `client` subscribed to; `None` if it is not registered (it left).
    pub fn subscriptions(&self, client: ClientId) -> Option<usize> {
        self.clients.get(&client).map(|c| c.streams.len())
    }

    /// Where the reader is in stream `key`, if it is watched.
    pub fn cursor(&self, key: &str) -> Option<StreamId> {
        self.watched.get(key).map(|w| w.cursor)
    }

    /// Each watched stream and the id to read after.
    pub fn cursors(&self) -> Vec<(String, StreamId)> {
        self.watched.iter().map(|(k, w)| (k.clone(), w.cursor)).collect()
    }

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

    /// Adds stream `topic` (instances `filter`) to `client`'s subscriptions,
    /// watching the stream if nobody did (its reader starting after `tail`,
    /// the stream's newest entry, read by the caller). `None` when there is
    /// nothing to replay: the browser left, already has the stream
    /// (`only_new`), receives it live or is joining it (no repeat).
    pub fn attach(
        &mut self,
        client: ClientId,
        topic: &TopicId,
        filter: Option<u32>,
        only_new: bool,
        tail: Option<&Entry>,
        now: Instant,
    ) -> Option<Attached> {
        let key = keys::stream(topic);
        let c = self.clients.get_mut(&client)?;
        if !c.streams.insert((key.clone(), filter)) && only_new {
            return None;
        }
        let w = watch(
            &mut self.watched,
            topic,
            tail.map_or(StreamId::ZERO, |e| e.id),
            tail,
            now,
        );
        let entry = (w.key.clone(), filter);
        let joining = self
            .joins
            .iter()
            .any(|j| j.client == client && j.key == entry.0 && j.filter == filter);
        if c.live.contains(&entry) || joining {
            return None;
        }
        w.subscribers.entry(client).or_default().insert(filter);
        if w.stale {
            c.inbox.control(w.stale_notice(true));
        }
        // Subscribing again ends a suspension after a loss.
        c.inbox.unsuspend(&key);
        Some(Attached {
            inbox: c.inbox.clone(),
            cursor: w.cursor,
            last: w.last.clone(),
        })
    }

    /// A catch-up of stream `key` for `client` has replayed up to `pos`:
    /// if the reader is not ahead, the browser joins at the next tick close.
    pub fn catch_up(&mut self, client: ClientId, key: &str, filter: Option<u32>, pos: StreamId) -> CatchUp {
        let (Some(c), Some(w)) = (self.clients.get(&client), self.watched.get(key)) else {
            return CatchUp::Gone; // the browser left, or unsubscribed
        };
        if !c.streams.contains(&(key.to_string(), filter)) {
            return CatchUp::Gone;
        }
        if pos < w.cursor {
            return CatchUp::Behind;
        }
        self.joins.push(Join {
            client,
            key: w.key.clone(),
            filter,
            pos,
        });
        CatchUp::Joining
    }

    /// Removes stream `key` (instances `filter`) from `client`'s
    /// subscriptions; the stream is no longer read once nobody watches it.
    pub fn unsubscribe(&mut self, client: ClientId, key: &str, filter: Option<u32>) {
        if let Some(c) = self.clients.get_mut(&client) {
            c.streams.remove(&(key.to_string(), filter));
        }
        self.set_live(client, |live| {
            live.remove(&(Arc::from(key), filter));
        });
        if let Some(w) = self.watched.get_mut(key) {
            if let Some(filters) = w.subscribers.get_mut(&client) {
                filters.remove(&filter);
                if filters.is_empty() {
                    w.subscribers.remove(&client);
                }
            }
            if w.subscribers.is_empty() {
                self.watched.remove(key);
            }
        }
    }

    /// Forgets a browser and all its subscriptions; its inbox is closed.
    pub fn disconnect(&mut self, client: ClientId) {
        self.set_live(client, LiveSet::clear);
        if let Some(c) = self.clients.remove(&client) {
            c.inbox.close();
        }
        self.watched.retain(|_, w| {
            w.subscribers.remove(&client);
            !w.subscribers.is_empty()
        });
    }

    /// Learns the declared period of every watched telemetry topic from the
    /// catalog (field, rate in Hz).
    pub fn learn_periods(&mut self, catalog: &[(String, String)]) {
        let rates: HashMap<&str, f64> = catalog
            .iter()
            .filter_map(|(f, r)| Some((f.as_str(), r.parse::<f64>().ok().filter(|r| *r > 0.0)?)))
            .collect();
        for w in self.watched.values_mut() {
            if w.topic.category == Category::Telemetry {
                w.period = rates.get(w.topic.catalog_field().as_str()).map(|r| 1.0 / r);
            }
        }
    }

    /// Puts each entry the reader read at `now` into its stream's window of
    /// the current tick, decoded once. True if a window is full (the reader
    /// should wait for the tick to close).
    pub fn read(&mut self, streams: Vec<StreamEntries>, now: Instant) -> bool {
        let mut read = 0u64;
        let mut full = false;
        let mut fresh = Vec::new();
        for stream in streams {
            let Some(w) = self.watched.get_mut(&stream.key) else {
                continue;
            };
            // Telemetry is conflated to the newest value per topic per tick:
            // of a read's entries (several when the reader is behind), only
            // the newest is decoded, so catching up costs one per read.
            let telemetry = w.topic.category == Category::Telemetry;
            let newest = stream.entries.last().map(|e| e.id);
            if newest.is_some_and(|n| n > w.cursor) {
                w.seen = now;
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
            full |= w.window.len() >= self.window;
        }
        for key in fresh {
            self.notify_subscribers(&key, false);
        }
        self.stats.entries_read.fetch_add(read, Ordering::Relaxed);
        full
    }

    /// Tells subscribers of telemetry topics silent for longer than their
    /// [`Staleness`] allows at `now`.
    pub fn check_stale(&mut self, now: Instant) {
        let mut stale = Vec::new();
        for w in self.watched.values_mut() {
            let Some(period) = w.period.filter(|_| !w.stale && !w.topic.csc.is_aggregated()) else {
                continue;
            };
            let limit = Duration::from_secs_f64(period * self.staleness.periods).max(self.staleness.min);
            if now.saturating_duration_since(w.seen) > limit {
                w.stale = true;
                stale.push(w.key.clone());
            }
        }
        for key in stale {
            self.notify_subscribers(&key, true);
        }
    }

    /// Tells every subscriber of stream `key` that it went stale or fresh.
    fn notify_subscribers(&self, key: &str, stale: bool) {
        let Some(w) = self.watched.get(key) else { return };
        let notice = w.stale_notice(stale);
        for client in w.subscribers.keys() {
            if let Some(c) = self.clients.get(client) {
                c.inbox.control(notice.as_str());
            }
        }
    }

    /// Builds one [`Tick`] per feed from its streams' windows and queues it
    /// to every browser of the feed; then moves browsers that lost events
    /// out of those streams' feeds, and browsers whose catch-up is done in.
    pub fn close_tick(&mut self) {
        let windows: HashMap<Arc<str>, Vec<Arc<Delivered>>> = self
            .watched
            .values_mut()
            .filter(|w| !w.window.is_empty())
            .map(|w| (w.key.clone(), std::mem::take(&mut w.window)))
            .collect();
        if windows.is_empty() && self.joins.is_empty() {
            return;
        }
        let (mut deliveries, mut built) = (0u64, 0u64);
        let mut losses: Vec<(ClientId, Vec<Arc<str>>)> = Vec::new();
        for (live, feed) in &self.feeds {
            let Some(tick) = feed_tick(live, feed.id, &windows) else {
                continue;
            };
            built += 1;
            for client in &feed.members {
                if let Some(c) = self.clients.get(client) {
                    deliveries += tick.samples.len() as u64;
                    let lost = c.inbox.push_tick(&tick);
                    if !lost.is_empty() {
                        losses.push((*client, lost));
                    }
                }
            }
        }
        for (client, keys) in losses {
            self.set_live(client, |live| live.retain(|(key, _)| !keys.contains(key)));
        }
        for join in std::mem::take(&mut self.joins) {
            let Some(c) = self.clients.get(&join.client) else {
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
            if self.watched.get(&*join.key).is_some_and(|w| w.cursor < join.pos) {
                self.joins.push(join);
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
                self.set_live(join.client, |live| {
                    live.insert(entry);
                });
            }
        }
        self.stats.deliveries.fetch_add(deliveries, Ordering::Relaxed);
        self.stats.ticks_built.fetch_add(built, Ordering::Relaxed);
    }
}

/// The tick of the feed `id` with live set `live` from this tick's
/// `windows`: its events in stream order, then its telemetry; `None` if
/// none of its streams has anything new. It may be skipped by a browser
/// behind (its cover) if it holds no event and one telemetry sample per stream.
fn feed_tick(live: &LiveSet, id: u64, windows: &HashMap<Arc<str>, Vec<Arc<Delivered>>>) -> Option<Arc<Tick>> {
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
        return None;
    }
    let cover = (skippable && samples.is_empty()).then_some((id, bits));
    samples.extend(telemetry);
    Some(Arc::new(Tick::covering(samples, cover)))
}

/// The watched stream of `topic`, created if nobody reads it yet, its
/// reader starting after `cursor` (with `last` as its newest value).
fn watch<'a>(
    watched: &'a mut HashMap<String, Watched>,
    topic: &TopicId,
    cursor: StreamId,
    last: Option<&Entry>,
    now: Instant,
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
        seen: now,
        stale: false,
    })
}

#[cfg(test)]
mod tests {
    //! The core alone, in virtual time: entries are handed in as the reader
    //! would, ticks closed by hand, and each browser's inbox drained as its
    //! connection would.
    use super::*;
    use crate::frontend::inbox::{Drained, Limits, TICKS_QUEUED};

    const T0_MS: u64 = 1_000;

    fn topic(category: Category, name: &str) -> TopicId {
        TopicId::new("Test:1".parse().unwrap(), category, name).unwrap()
    }

    fn entry(id: u64) -> Entry {
        Entry {
            id: StreamId::new(id, 0),
            fields: vec![
                ("src".into(), "1.0".into()),
                ("ing".into(), "1.0".into()),
                ("f".into(), format!("{{\"n\":{id}}}")),
            ],
        }
    }

    /// What the reader read of `topic`: entries with these ids.
    fn read(topic: &TopicId, ids: impl IntoIterator<Item = u64>) -> StreamEntries {
        StreamEntries {
            key: keys::stream(topic),
            entries: ids.into_iter().map(entry).collect(),
        }
    }

    fn core(window: usize) -> Fanout {
        let staleness = Staleness {
            periods: 3.0,
            min: Duration::from_millis(100),
        };
        Fanout::new(Arc::default(), window, staleness)
    }

    fn browser(core: &mut Fanout, events: usize) -> (ClientId, Arc<Inbox>) {
        let limits = Limits {
            events,
            bytes: usize::MAX,
            slow_timeout: Duration::from_secs(3600),
        };
        let inbox = Inbox::new(limits, true, core.stats.clone());
        (core.register(inbox.clone()), inbox)
    }

    /// Subscribes `client` to `topic` from the reader's position and lets it
    /// join the live feed at a tick close (no store: nothing to replay).
    fn subscribe_live(core: &mut Fanout, client: ClientId, topic: &TopicId, now: Instant) {
        let attached = core
            .attach(client, topic, None, false, None, now)
            .expect("attached");
        let key = keys::stream(topic);
        assert_eq!(
            core.catch_up(client, &key, None, attached.cursor),
            CatchUp::Joining
        );
        core.close_tick();
    }

    /// (topic name, id) of every sample in a send, personal ones first.
    fn sent(out: &Drained) -> Vec<(String, u64)> {
        out.samples
            .iter()
            .chain(out.ticks.iter().flat_map(|t| t.samples.iter()))
            .map(|s| (s.topic.topic.clone(), s.id.ms))
            .collect()
    }

    fn names(samples: &[(&str, u64)]) -> Vec<(String, u64)> {
        samples.iter().map(|(t, id)| (t.to_string(), *id)).collect()
    }

    #[test]
    fn telemetry_is_conflated_to_the_newest_per_topic_and_events_are_all_kept_in_order() {
        let now = Instant::now();
        let mut core = core(1000);
        let (t, e) = (topic(Category::Telemetry, "t"), topic(Category::Event, "e"));
        let (client, inbox) = browser(&mut core, 100);
        subscribe_live(&mut core, client, &t, now);
        subscribe_live(&mut core, client, &e, now);
        assert!(!core.read(vec![read(&t, 1..=3), read(&e, 1..=3)], now));
        assert!(!core.read(vec![read(&t, [4]), read(&e, [4])], now));
        core.close_tick();
        let out = inbox.drain(usize::MAX);
        assert_eq!(out.ticks.len(), 1, "one batch for the tick");
        assert_eq!(
            sent(&out),
            names(&[("e", 1), ("e", 2), ("e", 3), ("e", 4), ("t", 4)]),
            "events in order, then the newest telemetry"
        );
        assert_eq!(core.stats.entries_read.load(Ordering::Relaxed), 8);
    }

    #[test]
    fn browsers_with_the_same_topics_share_one_batch_per_tick() {
        let now = Instant::now();
        let mut core = core(1000);
        let (t, e) = (topic(Category::Telemetry, "t"), topic(Category::Event, "e"));
        let (a, a_inbox) = browser(&mut core, 100);
        let (b, b_inbox) = browser(&mut core, 100);
        let (c, c_inbox) = browser(&mut core, 100);
        for client in [a, b, c] {
            subscribe_live(&mut core, client, &t, now);
        }
        subscribe_live(&mut core, c, &e, now);
        core.read(vec![read(&t, [5]), read(&e, [1])], now);
        core.close_tick();
        let (a_out, b_out, c_out) = (
            a_inbox.drain(usize::MAX),
            b_inbox.drain(usize::MAX),
            c_inbox.drain(usize::MAX),
        );
        assert!(
            Arc::ptr_eq(&a_out.ticks[0], &b_out.ticks[0]),
            "the same batch, not a copy"
        );
        assert_eq!(sent(&a_out), names(&[("t", 5)]));
        assert_eq!(sent(&c_out), names(&[("e", 1), ("t", 5)]));
        assert_eq!(core.stats.ticks_built.load(Ordering::Relaxed), 2, "one per feed");
        assert_eq!(core.stats.deliveries.load(Ordering::Relaxed), 4);
    }

    #[test]
    fn a_tick_with_nothing_new_sends_nothing() {
        let now = Instant::now();
        let mut core = core(1000);
        let t = topic(Category::Telemetry, "t");
        let (client, inbox) = browser(&mut core, 100);
        subscribe_live(&mut core, client, &t, now);
        core.read(vec![read(&t, [3])], now);
        core.close_tick();
        assert_eq!(sent(&inbox.drain(usize::MAX)), names(&[("t", 3)]));
        // Nothing read, then only entries already read: no batch.
        core.close_tick();
        core.read(vec![read(&t, [2, 3])], now);
        core.close_tick();
        let out = inbox.drain(usize::MAX);
        assert!(out.ticks.is_empty() && out.samples.is_empty() && out.control.is_empty());
        assert_eq!(core.stats.ticks_built.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn a_browser_joining_after_its_catch_up_gets_the_rest_of_the_window_once() {
        let now = Instant::now();
        let mut core = core(1000);
        let e = topic(Category::Event, "e");
        let key = keys::stream(&e);
        let (a, a_inbox) = browser(&mut core, 100);
        subscribe_live(&mut core, a, &e, now);
        core.read(vec![read(&e, [1, 2])], now);
        core.close_tick();
        // B subscribes; its replay (from the store, e1 and e2) catches up with the reader.
        let (b, b_inbox) = browser(&mut core, 100);
        let attached = core.attach(b, &e, None, false, None, now).expect("attached");
        assert_eq!(attached.cursor, StreamId::new(2, 0));
        assert_eq!(core.catch_up(b, &key, None, StreamId::new(1, 0)), CatchUp::Behind);
        assert_eq!(
            core.catch_up(b, &key, None, StreamId::new(2, 0)),
            CatchUp::Joining
        );
        // Entries read before the tick closes go to B personally, after its replay.
        core.read(vec![read(&e, [3, 4])], now);
        core.close_tick();
        assert_eq!(sent(&b_inbox.drain(usize::MAX)), names(&[("e", 3), ("e", 4)]));
        // From then on B is in A's feed: the same batch.
        core.read(vec![read(&e, [5])], now);
        core.close_tick();
        let (a_out, b_out) = (a_inbox.drain(usize::MAX), b_inbox.drain(usize::MAX));
        assert_eq!(sent(&b_out), names(&[("e", 5)]));
        assert!(Arc::ptr_eq(a_out.ticks.last().unwrap(), &b_out.ticks[0]));
    }

    #[test]
    fn a_replay_ahead_of_the_reader_joins_once_the_reader_has_passed_it() {
        let now = Instant::now();
        let mut core = core(1000);
        let e = topic(Category::Event, "e");
        let key = keys::stream(&e);
        let (a, _a_inbox) = browser(&mut core, 100);
        subscribe_live(&mut core, a, &e, now);
        core.read(vec![read(&e, [1, 2])], now);
        core.close_tick();
        // B's replay read the store up to e3, beyond the reader (at e2).
        let (b, b_inbox) = browser(&mut core, 100);
        core.attach(b, &e, None, false, None, now).expect("attached");
        assert_eq!(
            core.catch_up(b, &key, None, StreamId::new(3, 0)),
            CatchUp::Joining
        );
        core.close_tick();
        assert!(
            sent(&b_inbox.drain(usize::MAX)).is_empty(),
            "waits for the reader"
        );
        core.read(vec![read(&e, [3, 4])], now);
        core.close_tick();
        assert_eq!(
            sent(&b_inbox.drain(usize::MAX)),
            names(&[("e", 4)]),
            "e3 came with the replay: not again"
        );
        core.read(vec![read(&e, [5])], now);
        core.close_tick();
        assert_eq!(sent(&b_inbox.drain(usize::MAX)), names(&[("e", 5)]));
    }

    #[test]
    fn a_browser_behind_skips_redundant_ticks_and_folds_the_others() {
        let now = Instant::now();
        let mut core = core(1000);
        let (t, e) = (topic(Category::Telemetry, "t"), topic(Category::Event, "e"));
        let (slow_t, t_inbox) = browser(&mut core, 100);
        let (slow_e, e_inbox) = browser(&mut core, 100);
        subscribe_live(&mut core, slow_t, &t, now);
        subscribe_live(&mut core, slow_e, &e, now);
        for id in 1..=5 {
            core.read(vec![read(&t, [id]), read(&e, [id])], now);
            core.close_tick();
        }
        let t_out = t_inbox.drain(usize::MAX);
        assert!(
            t_out.samples.is_empty(),
            "telemetry-only ticks are skipped, not folded"
        );
        assert_eq!(sent(&t_out), names(&[("t", 3), ("t", 4), ("t", 5)]));
        assert_eq!(t_out.ticks.len(), TICKS_QUEUED);
        let e_out = e_inbox.drain(usize::MAX);
        assert_eq!(
            sent(&e_out),
            names(&[("e", 1), ("e", 2), ("e", 3), ("e", 4), ("e", 5)]),
            "every event, in order"
        );
        assert_eq!(core.stats.ticks_skipped.load(Ordering::Relaxed), 2);
        assert_eq!(core.stats.ticks_folded.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn a_browser_that_lost_events_leaves_the_feed_until_it_subscribes_again() {
        let now = Instant::now();
        let mut core = core(1000);
        let e = topic(Category::Event, "e");
        let (slow, slow_inbox) = browser(&mut core, 1);
        let (fast, fast_inbox) = browser(&mut core, 100);
        subscribe_live(&mut core, slow, &e, now);
        subscribe_live(&mut core, fast, &e, now);
        for id in 1..=6 {
            core.read(vec![read(&e, [id])], now);
            core.close_tick();
            assert_eq!(sent(&fast_inbox.drain(usize::MAX)), names(&[("e", id)]));
        }
        let out = slow_inbox.drain(usize::MAX);
        assert_eq!(sent(&out), names(&[("e", 1)]), "what fitted");
        assert_eq!(
            out.lost,
            [(e.clone(), StreamId::new(2, 0))],
            "told where to recover from"
        );
        assert!(slow_inbox.is_suspended(&keys::stream(&e)));
        core.read(vec![read(&e, [7])], now);
        core.close_tick();
        assert!(sent(&slow_inbox.drain(usize::MAX)).is_empty(), "out of the feed");
        assert_eq!(sent(&fast_inbox.drain(usize::MAX)), names(&[("e", 7)]));
        // Subscribing again (the hub then replays from the lost id) ends the suspension.
        core.attach(slow, &e, None, false, None, now)
            .expect("attached again");
        assert!(!slow_inbox.is_suspended(&keys::stream(&e)));
    }

    #[test]
    fn a_silent_topic_goes_stale_after_its_periods_and_fresh_with_the_next_sample() {
        let t0 = Instant::now();
        let mut core = core(1000);
        let t = topic(Category::Telemetry, "t");
        let (client, inbox) = browser(&mut core, 100);
        subscribe_live(&mut core, client, &t, t0);
        core.learn_periods(&[(t.catalog_field(), "10".into())]); // 0.1 s: stale after 0.3 s
        core.read(vec![read(&t, [T0_MS])], t0);
        core.close_tick();
        core.check_stale(t0 + Duration::from_millis(250));
        assert!(inbox.drain(usize::MAX).control.is_empty(), "not yet");
        core.check_stale(t0 + Duration::from_millis(350));
        core.check_stale(t0 + Duration::from_millis(900));
        let control = inbox.drain(usize::MAX).control;
        assert_eq!(control.len(), 1, "told once: {control:?}");
        assert!(control[0].contains(r#""stale":true"#), "{}", control[0]);
        assert!(control[0].contains(r#""period_s":0.1"#), "{}", control[0]);
        core.read(vec![read(&t, [T0_MS + 1000])], t0 + Duration::from_secs(1));
        let control = inbox.drain(usize::MAX).control;
        assert_eq!(control.len(), 1);
        assert!(control[0].contains(r#""stale":false"#), "{}", control[0]);
    }

    #[test]
    fn a_full_window_asks_the_reader_to_wait_for_the_tick() {
        let now = Instant::now();
        let mut core = core(3);
        let (t, e) = (topic(Category::Telemetry, "t"), topic(Category::Event, "e"));
        let (client, _inbox) = browser(&mut core, 100);
        subscribe_live(&mut core, client, &t, now);
        subscribe_live(&mut core, client, &e, now);
        assert!(
            !core.read(vec![read(&t, 1..=10)], now),
            "telemetry holds one per topic"
        );
        assert!(!core.read(vec![read(&e, 1..=2)], now));
        assert!(core.read(vec![read(&e, [3])], now));
        core.close_tick();
        assert!(
            !core.read(vec![read(&e, [4])], now),
            "a closed tick empties the window"
        );
    }
}
