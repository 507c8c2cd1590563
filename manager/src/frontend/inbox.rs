//! A browser's inbox: what waits between the hub and the browser's socket.
//!
//! Live data arrives as shared [`Tick`]s: the fan-out core builds one per
//! tick for all browsers with the same live topics, and each inbox queues the same
//! `Arc`. Everything particular to one browser is personal: replies and
//! notices, replayed samples (last value on subscribe, recovery after a
//! stream id), and what a lost tick leaves behind. The connection sends
//! the personal part first, then the queued ticks in order.
//!
//! A browser that falls behind holds at most [`TICKS_QUEUED`] ticks (and
//! `frontend.client_bytes`, the bytes of queued ticks counted in full):
//! past that, the oldest tick is skipped if newer queued ones carry every
//! topic it holds, or else folded into the personal queue: the newest value
//! of each telemetry topic, every event in order (up to
//! `frontend.client_queue` events). So it sees data a few ticks old, not
//! seconds of backlog. An event that does not fit is lost: the browser gets
//! a loss notice with the first lost stream id, the queued ticks are folded
//! too (nothing of that topic follows the notice), and the hub stops
//! sending the topic until the browser subscribes to it again with the last
//! id it has (`after`), which replays the rest from the store, paced by the
//! browser's reading so it cannot overflow again. A browser that keeps
//! losing events for `frontend.slow_timeout_ms` is disconnected with
//! a reason. Replies have their own small bound; a browser that floods
//! requests without reading the replies is disconnected too. Memory per
//! connection is bounded whatever the browser does.

use super::sample::{Delivered, Tick};
use super::stats::HubStats;
use meridian_proto::{StreamId, TopicId};
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// Replies and notices queued per browser.
pub const CONTROL_QUEUE: usize = 256;

/// Shared ticks a browser may have queued before the oldest is skipped (if
/// newer ones carry all its topics) or folded into its own queue (newest
/// telemetry per topic, every event in order): a browser that falls behind
/// sees data at most this many ticks old, not seconds of backlog.
pub const TICKS_QUEUED: usize = 3;

/// The bounds of one inbox.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Personal events queued, and shared ticks queued.
    pub events: usize,
    /// Bytes of personal samples and shared ticks together.
    pub bytes: usize,
    pub slow_timeout: Duration,
}

/// Why a browser must be disconnected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kick {
    /// It kept losing events for longer than the slow timeout.
    TooSlow,
    /// It sent requests faster than it read the replies.
    TooManyRequests,
    /// The frontend asked it to reconnect elsewhere (drain or rebalance); the reason says which.
    Moved(String),
}

/// What one send carries, in this order.
#[derive(Debug, Default)]
pub struct Drained {
    pub control: Vec<Box<str>>,
    /// Personal samples: events in arrival order, then the newest telemetry of each topic.
    pub samples: Vec<Arc<Delivered>>,
    /// Topics that lost events, with the first lost id.
    pub lost: Vec<(TopicId, StreamId)>,
    /// Shared ticks, oldest first (none while personal samples remain: they come first).
    pub ticks: Vec<Arc<Tick>>,
}

#[derive(Default)]
struct Queue {
    control: VecDeque<Box<str>>,
    events: VecDeque<Arc<Delivered>>,
    /// The newest personal sample of each telemetry topic, by [`Delivered::topic_key`].
    telemetry: HashMap<Arc<str>, Arc<Delivered>>,
    ticks: VecDeque<Arc<Tick>>,
    /// Bytes of the queued ticks.
    tick_bytes: usize,
    lost: HashMap<TopicId, StreamId>,
    /// Streams whose events are not queued after a loss, until the browser
    /// subscribes again (with `after`, which replays from the store).
    suspended: HashSet<Arc<str>>,
    /// Set when the browser has left: replays waiting for room give up.
    closed: bool,
    /// Bytes of personal samples.
    bytes: usize,
    lost_this_frame: bool,
    losing_since: Option<Instant>,
    kick: Option<Kick>,
}

pub struct Inbox {
    queue: Mutex<Queue>,
    ready: Notify,
    /// Signalled when a send took samples out (a paced replay may go on).
    room: Notify,
    limits: Limits,
    /// Whether the browser understands `reconnect` hints (the native protocol does).
    hints: bool,
    stats: Arc<HubStats>,
}

impl Inbox {
    /// An inbox for a browser; `hints` if its protocol has the `reconnect` message.
    pub fn new(limits: Limits, hints: bool, stats: Arc<HubStats>) -> Arc<Inbox> {
        Arc::new(Inbox {
            queue: Mutex::default(),
            ready: Notify::new(),
            room: Notify::new(),
            limits,
            hints,
            stats,
        })
    }

    /// Asks the browser to reconnect (to any frontend): a `reconnect` hint
    /// now, where its protocol has one, and the connection closed with
    /// 1001 after `after`. Spreading `after` over browsers keeps them from
    /// arriving at the other managers at once.
    pub fn leave(self: &Arc<Self>, reason: &str, after: Duration) {
        if self.hints {
            self.control(meridian_proto::browser::reconnect_notice(reason, after));
        }
        let (inbox, reason) = (self.clone(), reason.to_string());
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            inbox.lock().kick.get_or_insert(Kick::Moved(reason));
            inbox.ready.notify_one();
        });
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn note_bytes(&self, q: &Queue) {
        self.stats
            .inbox_bytes_max
            .fetch_max(q.bytes + q.tick_bytes, Ordering::Relaxed);
    }

    /// Queues a personal sample without waiting; see the module doc for what a full inbox does.
    pub fn deliver(&self, sample: &Arc<Delivered>) {
        let mut q = self.lock();
        self.enqueue(&mut q, sample.clone());
        drop(q);
        self.ready.notify_one();
    }

    fn enqueue(&self, q: &mut Queue, sample: Arc<Delivered>) {
        let size = sample.size();
        match sample.topic.category {
            meridian_proto::Category::Telemetry => {
                let replaced = q.telemetry.get(&sample.topic_key).map_or(0, |old| old.size());
                if q.bytes + q.tick_bytes - replaced + size > self.limits.bytes {
                    // Full of events: this value is skipped; a newer one follows.
                    return;
                }
                q.telemetry.insert(sample.topic_key.clone(), sample);
                q.bytes = q.bytes - replaced + size;
                self.note_bytes(q);
            }
            meridian_proto::Category::Event => {
                let lost_before = q.suspended.contains(&sample.key);
                if lost_before
                    || q.events.len() >= self.limits.events
                    || q.bytes + q.tick_bytes + size > self.limits.bytes
                {
                    if !lost_before {
                        self.lose(q, &sample);
                    }
                    self.stats.events_lost.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                q.bytes += size;
                q.events.push_back(sample);
                self.note_bytes(q);
            }
        }
    }

    /// Records the first lost event of a topic: reported once, from that
    /// id; the browser recovers everything from there when it subscribes again.
    fn lose(&self, q: &mut Queue, sample: &Delivered) {
        q.lost.entry(sample.topic.clone()).or_insert(sample.id);
        q.suspended.insert(sample.key.clone());
        q.lost_this_frame = true;
        let since = *q.losing_since.get_or_insert_with(Instant::now);
        if since.elapsed() > self.limits.slow_timeout {
            q.kick.get_or_insert(Kick::TooSlow);
            self.ready.notify_one();
        }
    }

    /// Queues a shared tick. Past [`TICKS_QUEUED`] ticks or the byte
    /// bound, the oldest are skipped or folded into the browser's own
    /// queue (module doc). Returns the streams that lost events: the hub
    /// must stop sending them until the browser subscribes to them again.
    pub fn push_tick(&self, tick: &Arc<Tick>) -> Vec<Arc<str>> {
        let mut q = self.lock();
        if q.closed {
            return Vec::new();
        }
        q.tick_bytes += tick.size;
        q.ticks.push_back(tick.clone());
        let mut lost = Vec::new();
        // An empty queue takes any one tick, however large, so a browser that reads always progresses.
        while q.ticks.len() > TICKS_QUEUED
            || (q.ticks.len() > 1 && q.bytes + q.tick_bytes > self.limits.bytes)
        {
            let Some(oldest) = q.ticks.pop_front() else { break };
            q.tick_bytes -= oldest.size;
            if oldest.superseded_by(q.ticks.iter()) {
                self.stats.ticks_skipped.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            self.fold(&mut q, &oldest, &mut lost);
            if !lost.is_empty() {
                // Later ticks hold events after the lost ones: they go the same
                // way, so nothing of a lost topic follows its loss notice.
                while let Some(tick) = q.ticks.pop_front() {
                    q.tick_bytes -= tick.size;
                    self.fold(&mut q, &tick, &mut lost);
                }
            }
        }
        self.note_bytes(&q);
        drop(q);
        self.ready.notify_one();
        lost
    }

    /// Moves a tick's samples into the browser's own queue, in order;
    /// events that do not fit are lost (their streams added to `lost`).
    fn fold(&self, q: &mut Queue, tick: &Tick, lost: &mut Vec<Arc<str>>) {
        self.stats.ticks_folded.fetch_add(1, Ordering::Relaxed);
        for sample in &tick.samples {
            let suspended = q.suspended.contains(&sample.key);
            self.enqueue(q, sample.clone());
            if !suspended && q.suspended.contains(&sample.key) {
                lost.push(sample.key.clone());
            }
        }
    }

    /// Queues a reply or notice.
    pub fn control(&self, message: impl Into<Box<str>>) {
        let mut q = self.lock();
        if q.control.len() >= CONTROL_QUEUE {
            q.kick.get_or_insert(Kick::TooManyRequests);
        } else {
            q.control.push_back(message.into());
        }
        drop(q);
        self.ready.notify_one();
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Ends the suspension of stream `key` after a loss: the browser subscribed to it again.
    pub fn unsuspend(&self, key: &str) {
        self.lock().suspended.remove(key);
    }

    /// Whether events of stream `key` were lost and not yet asked for again.
    pub fn is_suspended(&self, key: &str) -> bool {
        self.lock().suspended.contains(key)
    }

    /// Queues a replayed sample, waiting while the inbox is full (a replay
    /// is paced by the browser, it never overflows). False if the browser left.
    pub async fn push_replay(&self, sample: Arc<Delivered>) -> bool {
        loop {
            let room = self.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            {
                let mut q = self.lock();
                if q.closed {
                    return false;
                }
                let size = sample.size();
                let fits =
                    q.events.len() < self.limits.events && q.bytes + q.tick_bytes + size <= self.limits.bytes;
                // An empty inbox takes any one sample, however large, so a replay always progresses.
                if fits || (q.events.is_empty() && q.telemetry.is_empty()) {
                    q.bytes += size;
                    self.note_bytes(&q);
                    q.events.push_back(sample);
                    drop(q);
                    self.ready.notify_one();
                    return true;
                }
            }
            room.await;
        }
    }

    /// Marks the browser as gone.
    pub fn close(&self) {
        self.lock().closed = true;
        self.room.notify_waiters();
    }

    /// Waits until something is queued (or a kick is due).
    pub async fn ready(&self) {
        self.ready.notified().await
    }

    /// Whether the browser must be disconnected, and why.
    pub fn kick(&self) -> Option<Kick> {
        self.lock().kick.clone()
    }

    /// Takes what the next send carries, at most about `max_bytes` of personal samples.
    pub fn drain(&self, max_bytes: usize) -> Drained {
        let mut q = self.lock();
        let mut out = Drained {
            control: q.control.drain(..).collect(),
            ..Drained::default()
        };
        let mut bytes = 0;
        while bytes < max_bytes {
            let Some(event) = q.events.pop_front() else { break };
            bytes += event.size();
            q.bytes -= event.size();
            out.samples.push(event);
        }
        if bytes < max_bytes {
            let telemetry: Vec<_> = q.telemetry.drain().map(|(_, s)| s).collect();
            for sample in telemetry {
                q.bytes -= sample.size();
                out.samples.push(sample);
            }
        }
        // Ticks go after every personal sample: a topic's replay, and what
        // a lost tick left of it, come before its next live samples.
        if q.events.is_empty() && q.telemetry.is_empty() {
            out.ticks = q.ticks.drain(..).collect();
            q.tick_bytes = 0;
        }
        // A topic's loss notice follows its last queued event, so the browser
        // recovers from exactly the last id it received.
        let Queue { lost, events, .. } = &mut *q;
        let pending: HashSet<&str> = events.iter().map(|e| &*e.key).collect();
        lost.retain(|topic, from| {
            if pending.contains(meridian_proto::keys::stream(topic).as_str()) {
                return true;
            }
            out.lost.push((topic.clone(), *from));
            false
        });
        if !q.lost_this_frame {
            q.losing_since = None;
        }
        q.lost_this_frame = false;
        let more = !q.events.is_empty() || !q.telemetry.is_empty() || !q.ticks.is_empty();
        drop(q);
        self.room.notify_waiters();
        if more {
            self.ready.notify_one();
        }
        out
    }

    /// Bytes held now (personal samples and queued ticks).
    pub fn bytes(&self) -> usize {
        let q = self.lock();
        q.bytes + q.tick_bytes
    }
}

/// When a connection may send its next frame: ticks on a fixed schedule
/// (not `tick` after the last send ended, which would drift to fewer than
/// 1000 / tick_ms frames a second), never two closer than one tick on average.
pub struct FrameClock {
    next: tokio::time::Instant,
    tick: Duration,
}

impl FrameClock {
    pub fn new(tick: Duration) -> FrameClock {
        FrameClock {
            next: tokio::time::Instant::now(),
            tick,
        }
    }

    /// Waits for the next tick boundary. Within half a tick of it (the
    /// hub's shared ticks wake browsers on its own schedule) the frame goes
    /// at once, without a timer: the average stays one frame per tick.
    pub async fn wait(&mut self) {
        let now = tokio::time::Instant::now();
        if self.next > now + self.tick / 2 {
            tokio::time::sleep_until(self.next).await;
        }
        self.next = self.next.max(now) + self.tick;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frontend::sample::Tick;
    use meridian_proto::{Category, StoredSample};
    use meridian_store::Entry;

    fn sample(category: Category, topic: &str, id: u64) -> Arc<Delivered> {
        let topic = TopicId::new("Test:1".parse().unwrap(), category, topic).unwrap();
        let entry = Entry {
            id: StreamId::new(id, 0),
            fields: StoredSample {
                seq: None,
                source_ts: 1.0,
                ingest_ts: 1.0,
                salindex: None,
                upto: None,
                fields: format!("{{\"n\":{id}}}"),
            }
            .into_fields(),
        };
        Arc::new(Delivered::from_entry(&topic, &entry).unwrap())
    }

    fn limits(events: usize) -> Limits {
        Limits {
            events,
            bytes: usize::MAX,
            slow_timeout: Duration::from_secs(3600),
        }
    }

    #[test]
    fn telemetry_is_conflated_and_events_are_all_kept_in_order() {
        let inbox = Inbox::new(limits(100), true, Arc::default());
        for id in 1..=5 {
            inbox.deliver(&sample(Category::Telemetry, "t", id));
            inbox.deliver(&sample(Category::Event, "e", id));
        }
        let out = inbox.drain(usize::MAX);
        let ids: Vec<(Category, u64)> = out.samples.iter().map(|s| (s.topic.category, s.id.ms)).collect();
        assert_eq!(
            ids,
            [
                (Category::Event, 1),
                (Category::Event, 2),
                (Category::Event, 3),
                (Category::Event, 4),
                (Category::Event, 5),
                (Category::Telemetry, 5)
            ]
        );
        assert_eq!(inbox.bytes(), 0);
    }

    #[test]
    fn a_full_inbox_reports_the_first_lost_event_of_each_topic() {
        let inbox = Inbox::new(limits(2), true, Arc::default());
        for id in 1..=5 {
            inbox.deliver(&sample(Category::Event, "e", id));
        }
        let out = inbox.drain(usize::MAX);
        assert_eq!(out.samples.len(), 2);
        assert_eq!(out.lost.len(), 1);
        assert_eq!(out.lost[0].1, StreamId::new(3, 0));
        // Told once: the next frame has nothing lost.
        assert!(inbox.drain(usize::MAX).lost.is_empty());
    }

    #[test]
    fn a_client_losing_events_for_too_long_is_kicked() {
        let inbox = Inbox::new(
            Limits {
                events: 1,
                bytes: usize::MAX,
                slow_timeout: Duration::ZERO,
            },
            true,
            Arc::default(),
        );
        inbox.deliver(&sample(Category::Event, "e", 1));
        inbox.deliver(&sample(Category::Event, "e", 2));
        inbox.deliver(&sample(Category::Event, "e", 3));
        assert_eq!(inbox.kick(), Some(Kick::TooSlow));
    }

    #[test]
    fn shared_ticks_follow_personal_samples_and_are_not_copied() {
        let inbox = Inbox::new(limits(100), true, Arc::default());
        let tick = Arc::new(Tick::new(vec![sample(Category::Event, "e", 3)]));
        assert!(inbox.push_tick(&tick).is_empty());
        inbox.deliver(&sample(Category::Event, "r", 1));
        let out = inbox.drain(usize::MAX);
        assert_eq!(out.samples.len(), 1);
        assert_eq!(out.ticks.len(), 1);
        assert!(Arc::ptr_eq(&out.ticks[0], &tick));
        assert_eq!(inbox.bytes(), 0);
    }

    #[test]
    fn ticks_wait_while_personal_samples_remain() {
        let inbox = Inbox::new(limits(100), true, Arc::default());
        for id in 1..=3 {
            inbox.deliver(&sample(Category::Event, "r", id));
        }
        inbox.push_tick(&Arc::new(Tick::new(vec![sample(Category::Event, "r", 4)])));
        // A send cut short by its byte budget leaves the tick for later, so
        // the stream's replay still comes before its live samples.
        let first = inbox.drain(1);
        assert_eq!(first.samples.len(), 1);
        assert!(first.ticks.is_empty());
        let rest = inbox.drain(usize::MAX);
        assert_eq!(rest.samples.len(), 2);
        assert_eq!(rest.ticks.len(), 1);
    }

    fn covered(id: u64) -> Arc<Tick> {
        Arc::new(Tick::covering(
            vec![sample(Category::Telemetry, "t", id)],
            Some((1, vec![1])),
        ))
    }

    #[test]
    fn a_browser_behind_skips_ticks_whose_topics_newer_ones_carry() {
        let stats = Arc::new(HubStats::default());
        let inbox = Inbox::new(limits(100), true, stats.clone());
        for id in 1..=5 {
            assert!(inbox.push_tick(&covered(id)).is_empty());
        }
        let out = inbox.drain(usize::MAX);
        assert!(
            out.samples.is_empty(),
            "nothing folded: the skipped ticks were redundant"
        );
        let ids: Vec<u64> = out.ticks.iter().map(|t| t.samples[0].id.ms).collect();
        assert_eq!(ids, [3, 4, 5], "at most TICKS_QUEUED ticks old");
        assert_eq!(stats.ticks_skipped.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn a_browser_behind_gets_the_oldest_ticks_folded_in_order() {
        let inbox = Inbox::new(limits(100), true, Arc::default());
        for id in 1..=5 {
            let tick = Tick::new(vec![
                sample(Category::Event, "e", id),
                sample(Category::Telemetry, "t", id),
            ]);
            assert!(inbox.push_tick(&Arc::new(tick)).is_empty());
        }
        let out = inbox.drain(usize::MAX);
        let sent: Vec<(Category, u64)> = out
            .samples
            .iter()
            .chain(out.ticks.iter().flat_map(|t| t.samples.iter()))
            .map(|s| (s.topic.category, s.id.ms))
            .collect();
        let events: Vec<u64> = sent
            .iter()
            .filter(|s| s.0 == Category::Event)
            .map(|s| s.1)
            .collect();
        let telemetry: Vec<u64> = sent
            .iter()
            .filter(|s| s.0 == Category::Telemetry)
            .map(|s| s.1)
            .collect();
        assert_eq!(events, [1, 2, 3, 4, 5], "every event, in order");
        assert_eq!(telemetry, [2, 3, 4, 5], "telemetry conflated, in order");
        assert_eq!(out.ticks.len(), TICKS_QUEUED);
    }

    #[test]
    fn a_fold_that_overflows_reports_the_loss_and_nothing_of_that_topic_follows() {
        let inbox = Inbox::new(limits(1), true, Arc::default());
        let tick = |id| Arc::new(Tick::new(vec![sample(Category::Event, "e", id)]));
        for id in 1..=4 {
            assert!(inbox.push_tick(&tick(id)).is_empty());
        }
        let lost = inbox.push_tick(&tick(5));
        assert_eq!(lost.len(), 1, "the event stream is reported once");
        assert!(inbox.is_suspended(&lost[0]));
        let out = inbox.drain(usize::MAX);
        let ids: Vec<u64> = out.samples.iter().map(|s| s.id.ms).collect();
        assert_eq!(ids, [1]);
        assert!(out.ticks.is_empty(), "later ticks of the lost topic are not sent");
        assert_eq!(out.lost.len(), 1);
        assert_eq!(out.lost[0].1, StreamId::new(2, 0));
        // Nothing more of that stream is queued until it is asked for again.
        inbox.deliver(&sample(Category::Event, "e", 6));
        assert!(inbox.drain(usize::MAX).samples.is_empty());
        inbox.unsuspend(&lost[0]);
        inbox.deliver(&sample(Category::Event, "e", 7));
        assert_eq!(inbox.drain(usize::MAX).samples.len(), 1);
    }

    #[test]
    fn a_tick_queue_of_telemetry_only_overflows_without_loss() {
        let inbox = Inbox::new(limits(1), true, Arc::default());
        for id in 1..=6 {
            let tick = Arc::new(Tick::new(vec![sample(Category::Telemetry, "t", id)]));
            assert!(inbox.push_tick(&tick).is_empty());
        }
        let out = inbox.drain(usize::MAX);
        let ids: Vec<u64> = out
            .samples
            .iter()
            .chain(out.ticks.iter().flat_map(|t| t.samples.iter()))
            .map(|s| s.id.ms)
            .collect();
        assert_eq!(ids, [3, 4, 5, 6], "the newest values, in order");
        assert!(out.lost.is_empty());
        assert_eq!(inbox.kick(), None);
    }
}
