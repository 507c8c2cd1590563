//! A browser's inbox: what waits between the hub and the browser's socket.
//!
//! The hub delivers without ever waiting. Telemetry is conflated: a topic
//! holds only its newest sample until the next frame. Events queue in
//! order up to `frontend.client_queue` events and `frontend.client_bytes`
//! bytes; past that, new events are dropped for this browser only, the
//! next frame tells it which topics lost data from which stream id, and
//! nothing more of those topics is queued until it subscribes to them again
//! with the last id it has (`after`), which replays the rest from the store
//! in order. Telemetry that does not fit in the byte bound is skipped (a
//! newer value follows). A browser that keeps losing events for
//! `frontend.slow_timeout_ms` is disconnected with a reason. Replies (a few
//! per request) have their own small bound; a browser that floods requests
//! without reading the replies is disconnected too. Memory per connection
//! is bounded whatever the browser does.
//!
//! While a topic is being recovered from a stream id, its live samples are
//! held (within the same bounds) and released after the replayed ones, so
//! the browser sees one ordered sequence with no gap and no repeat.

use super::sample::Delivered;
use meridian_proto::{StreamId, TopicId};
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// Replies and notices queued per browser.
pub const CONTROL_QUEUE: usize = 256;

/// The bounds of one inbox.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub events: usize,
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

/// What one frame carries.
#[derive(Debug, Default)]
pub struct Drained {
    pub control: Vec<Box<str>>,
    /// Events in arrival order, then the newest telemetry of each topic.
    pub samples: Vec<Arc<Delivered>>,
    /// Topics that lost events, with the first lost id.
    pub lost: Vec<(TopicId, StreamId)>,
}

#[derive(Default)]
struct Queue {
    control: VecDeque<Box<str>>,
    events: VecDeque<Arc<Delivered>>,
    /// The newest sample of each telemetry topic, by [`Delivered::topic_key`].
    telemetry: HashMap<Arc<str>, Arc<Delivered>>,
    /// Live samples held while their topic is replayed, per stream key.
    held: HashMap<String, Vec<Arc<Delivered>>>,
    lost: HashMap<TopicId, StreamId>,
    /// Streams whose live events are not queued after a loss, until the
    /// browser subscribes again (with `after`, which replays from the store).
    suspended: HashSet<String>,
    /// Streams being replayed from the store to this browser: their live
    /// events wait (the replay reaches them), and do not count as lost.
    replaying: HashSet<String>,
    /// Per stream, the id a replay reached: live samples up to it are repeats.
    floor: HashMap<String, StreamId>,
    /// Set when the browser has left: replays waiting for room give up.
    closed: bool,
    /// Streams whose held samples overflowed during a replay.
    held_overflow: HashSet<String>,
    bytes: usize,
    lost_this_frame: bool,
    losing_since: Option<Instant>,
    kick: Option<Kick>,
}

pub struct Inbox {
    queue: Mutex<Queue>,
    ready: Notify,
    /// Signalled when a frame took samples out (a paced replay may go on).
    room: Notify,
    limits: Limits,
    /// Whether the browser understands `reconnect` hints (the native protocol does).
    hints: bool,
    stats: Arc<super::hub::HubStats>,
}

impl Inbox {
    /// An inbox for a browser; `hints` if its protocol has the `reconnect` message.
    pub fn new(limits: Limits, hints: bool, stats: Arc<super::hub::HubStats>) -> Arc<Inbox> {
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
            self.control(super::balance::reconnect_message(reason, after));
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

    /// Queues a sample without waiting; see the module doc for what a full inbox does.
    pub fn deliver(&self, sample: &Arc<Delivered>) {
        let mut q = self.lock();
        let key = &*sample.key;
        if let Some(floor) = q.floor.get(key) {
            if sample.id <= *floor {
                return; // already sent by the replay
            }
            q.floor.remove(key);
        }
        if let Some(held) = q.held.get_mut(key) {
            if held.len() < self.limits.events {
                held.push(sample.clone());
            } else if sample.topic.category == meridian_proto::Category::Event {
                // The replay outlasts the bound: report the loss as for a full queue.
                q.lost.entry(sample.topic.clone()).or_insert(sample.id);
                q.held_overflow.insert(key.to_string());
            }
            return;
        }
        self.enqueue(&mut q, sample.clone());
        drop(q);
        self.ready.notify_one();
    }

    fn enqueue(&self, q: &mut Queue, sample: Arc<Delivered>) {
        let size = sample.size();
        match sample.topic.category {
            meridian_proto::Category::Telemetry => {
                if q.replaying.contains(&*sample.key) {
                    // A recovery replay of this stream will reach this entry.
                    return;
                }
                let replaced = q.telemetry.get(&sample.topic_key).map_or(0, |old| old.size());
                if q.bytes - replaced + size > self.limits.bytes {
                    // Full of events: this value is skipped; a newer one follows.
                    return;
                }
                q.telemetry.insert(sample.topic_key.clone(), sample);
                q.bytes = q.bytes - replaced + size;
                self.stats.inbox_bytes_max.fetch_max(q.bytes, Ordering::Relaxed);
            }
            meridian_proto::Category::Event => {
                let key = &*sample.key;
                if q.replaying.contains(key) {
                    // A recovery replay of this stream will reach this entry.
                    return;
                }
                let lost_before = q.suspended.contains(key);
                if lost_before || q.events.len() >= self.limits.events || q.bytes + size > self.limits.bytes {
                    if !lost_before {
                        // Reported once, from the first lost id; the browser
                        // recovers everything from there when it subscribes again.
                        q.lost.entry(sample.topic.clone()).or_insert(sample.id);
                        q.suspended.insert(key.to_string());
                    }
                    self.stats.events_lost.fetch_add(1, Ordering::Relaxed);
                    q.lost_this_frame = true;
                    let since = *q.losing_since.get_or_insert_with(Instant::now);
                    if since.elapsed() > self.limits.slow_timeout {
                        q.kick.get_or_insert(Kick::TooSlow);
                        self.ready.notify_one();
                    }
                    return;
                }
                q.bytes += size;
                q.events.push_back(sample);
                self.stats.inbox_bytes_max.fetch_max(q.bytes, Ordering::Relaxed);
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

    /// Stops queueing live events of stream `key` (a replay is catching up).
    pub fn suspend(&self, key: &str) {
        let mut q = self.lock();
        q.suspended.remove(key);
        q.replaying.insert(key.to_string());
    }

    /// Queues live samples of `key` again, those after `floor` (where the replay stopped).
    pub fn resume(&self, key: &str, floor: StreamId) {
        let mut q = self.lock();
        q.replaying.remove(key);
        q.floor.insert(key.to_string(), floor);
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
                let fits = q.events.len() < self.limits.events && q.bytes + size <= self.limits.bytes;
                // An empty inbox takes any one sample, however large, so a replay always progresses.
                if fits || (q.events.is_empty() && q.telemetry.is_empty()) {
                    q.bytes += size;
                    self.stats.inbox_bytes_max.fetch_max(q.bytes, Ordering::Relaxed);
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

    /// Holds live samples of stream `key` until [`Inbox::release`].
    pub fn hold(&self, key: &str) {
        self.lock().held.entry(key.to_string()).or_default();
    }

    /// Queues `replayed` (in order), then the live samples held since
    /// [`Inbox::hold`] that are newer than the last replayed one.
    pub fn release(&self, key: &str, replayed: Vec<Arc<Delivered>>) {
        let mut q = self.lock();
        let held = q.held.remove(key).unwrap_or_default();
        // Subscribing again (to the newest value) ends a suspension after a loss.
        q.suspended.remove(key);
        if q.held_overflow.remove(key) {
            q.suspended.insert(key.to_string());
        }
        let last = replayed.last().map(|s| s.id);
        for sample in replayed {
            self.enqueue(&mut q, sample);
        }
        for sample in held.into_iter().filter(|s| last.is_none_or(|l| s.id > l)) {
            self.enqueue(&mut q, sample);
        }
        drop(q);
        self.ready.notify_one();
    }

    /// Waits until something is queued (or a kick is due).
    pub async fn ready(&self) {
        self.ready.notified().await
    }

    /// Whether the browser must be disconnected, and why.
    pub fn kick(&self) -> Option<Kick> {
        self.lock().kick.clone()
    }

    /// Takes what the next frame carries, at most about `max_bytes` of samples.
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
        // A topic's loss notice follows its last queued event, so the browser
        // recovers from exactly the last id it received.
        let Queue { lost, events, .. } = &mut *q;
        let pending: HashSet<&str> = events.iter().map(|e| &*e.key).collect();
        lost.retain(|topic, from| {
            if pending.contains(topic.stream_key().as_str()) {
                return true;
            }
            out.lost.push((topic.clone(), *from));
            false
        });
        if !q.lost_this_frame {
            q.losing_since = None;
        }
        q.lost_this_frame = false;
        let more = !q.events.is_empty() || !q.telemetry.is_empty();
        drop(q);
        self.room.notify_waiters();
        if more {
            self.ready.notify_one();
        }
        out
    }

    /// Bytes held now.
    pub fn bytes(&self) -> usize {
        self.lock().bytes
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

    /// Waits for the next tick boundary (at once if it has passed).
    pub async fn wait(&mut self) {
        let due = self.next.max(tokio::time::Instant::now());
        tokio::time::sleep_until(due).await;
        self.next = due + self.tick;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Entry;
    use meridian_proto::Category;

    fn sample(category: Category, topic: &str, id: u64) -> Arc<Delivered> {
        let topic = TopicId::new("Test:1".parse().unwrap(), category, topic).unwrap();
        let entry = Entry {
            id: StreamId::new(id, 0),
            fields: vec![
                ("src".into(), "1.0".into()),
                ("ing".into(), "1.0".into()),
                ("f".into(), format!("{{\"n\":{id}}}")),
            ],
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
    fn held_samples_follow_the_replay_without_repeats() {
        let inbox = Inbox::new(limits(100), true, Arc::default());
        let key = sample(Category::Event, "e", 1).topic.stream_key();
        inbox.hold(&key);
        inbox.deliver(&sample(Category::Event, "e", 4));
        inbox.deliver(&sample(Category::Event, "e", 5));
        assert!(inbox.drain(usize::MAX).samples.is_empty());
        let replay = (2..=4).map(|id| sample(Category::Event, "e", id)).collect();
        inbox.release(&key, replay);
        let ids: Vec<u64> = inbox.drain(usize::MAX).samples.iter().map(|s| s.id.ms).collect();
        assert_eq!(ids, [2, 3, 4, 5]);
    }
}
