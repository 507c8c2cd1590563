//! The replaced system's groups (`category-csc-salindex-stream`) and how a
//! connection routes each sample to the groups it joined.
//!
//! A group is one of three data flavours (a stream, every stream of a CSC
//! instance, every stream of a category), the heartbeat reports, the
//! manager heartbeat, or a group the replaced manager never fed (it
//! confirms any name): those are confirmed and stay silent here too.
//!
//! Groups overlap (a stream and its CSC's `…-all`): the hub delivers a
//! sample once per connection, and the connection sends it once per group
//! that matches. A group joined later still gets the topic's last value
//! once, without repeating it to the others: per topic the connection
//! remembers the last stream id it sent, and per group which topics it
//! still awaits.

use super::encode::{HEARTBEAT_PERIOD_S, MAX_LOST_HEARTBEATS};
use crate::frontend::hub::{Selector, Start};
use crate::frontend::sample::Delivered;
use meridian_proto::{Category, CscId, StreamId, TopicId};
use std::collections::{HashMap, HashSet};

/// Topics whose last sent id a connection remembers before forgetting them
/// all (at worst, a later overlapping group repeats one last value).
const LAST_SENT_BOUND: usize = 65_536;

/// A group, as the replaced system names it (decoded in `meridian_proto::love`).
pub use meridian_proto::love::{Group as GroupKey, Subscription};

/// What the hub must deliver for a group.
pub trait Select {
    /// The hub's selector for this group, if it reads anything.
    fn selector(&self) -> Option<Selector>;
}

impl Select for GroupKey {
    fn selector(&self) -> Option<Selector> {
        match self {
            GroupKey::Stream(t) => Some(Selector {
                csc: Some(t.csc.csc.clone()),
                salindex: Some(t.csc.salindex),
                category: Some(t.category),
                topic: Some(t.topic.clone()),
            }),
            GroupKey::Csc(csc, category) => Some(Selector {
                csc: Some(csc.csc.clone()),
                salindex: Some(csc.salindex),
                category: Some(*category),
                topic: None,
            }),
            GroupKey::All(category) => Some(Selector {
                csc: None,
                salindex: None,
                category: Some(*category),
                topic: None,
            }),
            GroupKey::Heartbeat => Some(Selector {
                csc: None,
                salindex: None,
                category: Some(Category::Event),
                topic: Some(HEARTBEAT_TOPIC.into()),
            }),
            GroupKey::Manager | GroupKey::Inert(_) => None,
        }
    }
}

/// The event every CSC publishes about once a second.
pub const HEARTBEAT_TOPIC: &str = "heartbeat";

/// Whether `sel` names topic `t` (of its instance).
pub fn selects(sel: &Selector, t: &TopicId) -> bool {
    sel.csc.as_ref().is_none_or(|c| *c == t.csc.csc)
        && sel.salindex.is_none_or(|i| i == t.csc.salindex)
        && sel.category.is_none_or(|c| c == t.category)
        && sel.topic.as_deref().is_none_or(|n| n == t.topic)
}

fn is_heartbeat(t: &TopicId) -> bool {
    t.category == Category::Event && t.topic == HEARTBEAT_TOPIC && !t.csc.is_aggregated()
}

/// What to send for one sample to one group.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Delivery {
    Stream,
    Csc,
    All,
    /// The heartbeat report (to `event-Heartbeat-0-stream`, or `event-all-all-all` if `all`),
    /// with the heartbeats lost since this one (0: it is fresh, the shared encoding serves).
    Heartbeat {
        all: bool,
        lost: u32,
    },
}

/// A joined group: the topics whose last value it still awaits.
#[derive(Debug, Default)]
struct Group {
    awaiting: HashSet<TopicId>,
}

/// The last heartbeat seen of a CSC instance.
#[derive(Debug, Clone, Copy)]
struct Beat {
    /// When it was ingested (what losses are counted from), and its source time.
    ingested: f64,
    source: f64,
    lost: u32,
}

/// A connection's groups and what it has sent.
#[derive(Debug, Default)]
pub struct Session {
    streams: HashMap<TopicId, Group>,
    cscs: HashMap<CscId, [Option<Group>; 2]>,
    all: [Option<Group>; 2],
    heartbeat: Option<Group>,
    pub manager: bool,
    inert: HashSet<String>,
    last_sent: HashMap<TopicId, StreamId>,
    beats: HashMap<CscId, Beat>,
}

fn slot(category: Category) -> usize {
    match category {
        Category::Telemetry => 0,
        Category::Event => 1,
    }
}

impl Session {
    /// Number of groups joined.
    pub fn len(&self) -> usize {
        self.streams.len()
            + self.cscs.values().flatten().flatten().count()
            + self.all.iter().flatten().count()
            + usize::from(self.heartbeat.is_some())
            + usize::from(self.manager)
            + self.inert.len()
    }

    pub fn contains(&self, key: &GroupKey) -> bool {
        match key {
            GroupKey::Stream(t) => self.streams.contains_key(t),
            GroupKey::Csc(c, cat) => self.cscs.get(c).is_some_and(|g| g[slot(*cat)].is_some()),
            GroupKey::All(cat) => self.all[slot(*cat)].is_some(),
            GroupKey::Heartbeat => self.heartbeat.is_some(),
            GroupKey::Manager => self.manager,
            GroupKey::Inert(name) => self.inert.contains(name),
        }
    }

    fn group(&mut self, key: &GroupKey) -> Option<&mut Group> {
        match key {
            GroupKey::Stream(t) => Some(self.streams.entry(t.clone()).or_default()),
            GroupKey::Csc(c, cat) => {
                Some(self.cscs.entry(c.clone()).or_default()[slot(*cat)].get_or_insert_with(Group::default))
            }
            GroupKey::All(cat) => Some(self.all[slot(*cat)].get_or_insert_with(Group::default)),
            GroupKey::Heartbeat => Some(self.heartbeat.get_or_insert_with(Group::default)),
            GroupKey::Manager => {
                self.manager = true;
                None
            }
            GroupKey::Inert(name) => {
                self.inert.insert(name.clone());
                None
            }
        }
    }

    /// Joins `key` (again); of `topics`, those this connection already
    /// receives are due to this group once (their last value follows).
    pub fn join(&mut self, key: &GroupKey, topics: &[TopicId]) {
        let due: Vec<TopicId> = topics
            .iter()
            .filter(|t| self.last_sent.contains_key(*t))
            .cloned()
            .collect();
        if let Some(group) = self.group(key) {
            group.awaiting.extend(due);
        }
    }

    /// Leaves `key`; false if it was not joined.
    pub fn leave(&mut self, key: &GroupKey) -> bool {
        match key {
            GroupKey::Stream(t) => self.streams.remove(t).is_some(),
            GroupKey::Csc(c, cat) => {
                let Some(groups) = self.cscs.get_mut(c) else {
                    return false;
                };
                let left = groups[slot(*cat)].take().is_some();
                if groups.iter().all(Option::is_none) {
                    self.cscs.remove(c);
                }
                left
            }
            GroupKey::All(cat) => self.all[slot(*cat)].take().is_some(),
            GroupKey::Heartbeat => self.heartbeat.take().is_some(),
            GroupKey::Manager => std::mem::take(&mut self.manager),
            GroupKey::Inert(name) => self.inert.remove(name),
        }
    }

    /// The selectors of every group that reads from the hub.
    fn selectors(&self) -> Vec<Selector> {
        let mut keys: Vec<GroupKey> = self.streams.keys().cloned().map(GroupKey::Stream).collect();
        for (csc, groups) in &self.cscs {
            for (i, category) in [Category::Telemetry, Category::Event].into_iter().enumerate() {
                if groups[i].is_some() {
                    keys.push(GroupKey::Csc(csc.clone(), category));
                }
            }
        }
        for (i, category) in [Category::Telemetry, Category::Event].into_iter().enumerate() {
            if self.all[i].is_some() {
                keys.push(GroupKey::All(category));
            }
        }
        if self.heartbeat.is_some() {
            keys.push(GroupKey::Heartbeat);
        }
        keys.iter().filter_map(GroupKey::selector).collect()
    }

    /// Whether, after a group with selector `removed` left, another group
    /// still needs topic `t` from the hub (the hub dropped the stream for
    /// this connection, so it must be attached again).
    pub fn still_needed(&self, t: &TopicId, removed: &Selector) -> bool {
        // All instances of an aggregated CSC come only with the category-wide
        // groups, whose heartbeat and data flavours skip nothing the other needs.
        if t.csc.is_aggregated() && removed.salindex.is_none() {
            return false;
        }
        self.selectors()
            .iter()
            .any(|s| selects(s, t) && (!t.csc.is_aggregated() || s.salindex == removed.salindex))
    }

    /// Where to attach `t` again so nothing is missed or repeated: after
    /// the last id sent. Instances of an aggregated CSC share a stream, so
    /// they restart from its last value.
    pub fn resume_from(&self, t: &TopicId) -> Start {
        match self.last_sent.get(t) {
            Some(id) if !t.csc.is_aggregated() => Start::After(*id),
            _ => Start::Last,
        }
    }

    /// Forgets what was sent of topics no group receives any more.
    pub fn prune(&mut self) {
        let selectors = self.selectors();
        self.last_sent
            .retain(|t, _| selectors.iter().any(|s| selects(s, t)));
        if !selectors
            .iter()
            .any(|s| s.topic.as_deref().is_none_or(|n| n == HEARTBEAT_TOPIC))
        {
            self.beats.clear();
        }
    }

    /// The messages `sample` makes for this connection's groups, each at
    /// most once: a group gets a sample newer than the last one sent of its
    /// topic, or the last value it awaits since it joined. `now`: Unix seconds.
    pub fn route(&mut self, sample: &Delivered, now: f64) -> Vec<Delivery> {
        let t = &sample.topic;
        let fresh = self.last_sent.get(t).is_none_or(|last| sample.id > *last);
        let mut out = Vec::new();
        let mut offer = |group: Option<&mut Group>, delivery: Delivery| {
            if let Some(group) = group {
                if group.awaiting.remove(t) || fresh {
                    out.push(delivery);
                }
            }
        };
        let heartbeat = is_heartbeat(t);
        let lost = if heartbeat && (self.heartbeat.is_some() || self.all[1].is_some()) {
            // A stale heartbeat (the last value of a CSC gone quiet) counts its losses.
            let lost = ((now - sample.ingest_ts) / HEARTBEAT_PERIOD_S).floor().max(0.0) as u32;
            let lost = lost.min(MAX_LOST_HEARTBEATS + 1);
            let beat = Beat {
                ingested: sample.ingest_ts,
                source: sample.source_ts,
                lost,
            };
            let newer = self.beats.get(&t.csc).is_none_or(|b| b.ingested <= beat.ingested);
            if newer {
                self.beats.insert(t.csc.clone(), beat);
            }
            lost
        } else {
            0
        };
        // The replaced producers never send heartbeat events as such: only
        // their reports, and none for an aggregated CSC (Scripts).
        let heartbeat_event = t.category == Category::Event && t.topic == HEARTBEAT_TOPIC;
        offer(self.streams.get_mut(t), Delivery::Stream);
        if !heartbeat_event {
            let csc = self
                .cscs
                .get_mut(&t.csc)
                .and_then(|g| g[slot(t.category)].as_mut());
            offer(csc, Delivery::Csc);
        }
        let all = self.all[slot(t.category)].as_mut();
        match (heartbeat, heartbeat_event) {
            (true, _) => offer(all, Delivery::Heartbeat { all: true, lost }),
            (false, true) => {}
            (false, false) => offer(all, Delivery::All),
        }
        if heartbeat {
            offer(self.heartbeat.as_mut(), Delivery::Heartbeat { all: false, lost });
        }
        if fresh {
            if self.last_sent.len() >= LAST_SENT_BOUND {
                self.last_sent.clear();
            }
            self.last_sent.insert(t.clone(), sample.id);
        }
        out
    }

    /// CSCs whose heartbeat has been missing for another period since the
    /// last report: (instance, heartbeats lost, last heartbeat's source time,
    /// to `event-Heartbeat-0-stream`, to `event-all-all-all`). Reports stop
    /// once a CSC counts more than [`MAX_LOST_HEARTBEATS`] (its client shows it lost).
    pub fn lost_heartbeats(&mut self, now: f64) -> Vec<(CscId, u32, f64, bool, bool)> {
        let (to_group, to_all) = (self.heartbeat.is_some(), self.all[1].is_some());
        if !to_group && !to_all {
            return Vec::new();
        }
        let mut out = Vec::new();
        for (csc, beat) in &mut self.beats {
            let lost = ((now - beat.ingested) / HEARTBEAT_PERIOD_S).floor().max(0.0) as u32;
            let lost = lost.min(MAX_LOST_HEARTBEATS + 1);
            if lost > beat.lost {
                beat.lost = lost;
                out.push((csc.clone(), lost, beat.source, to_group, to_all));
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use meridian_store::Entry;
    use std::sync::Arc;

    fn request(json: serde_json::Value) -> Result<Subscription, String> {
        match meridian_proto::love::parse(&json.to_string(), false)? {
            meridian_proto::love::Message::Subscription(s) => Ok(s),
            other => panic!("not a subscription: {other:?}"),
        }
    }

    fn sample(topic: &str, category: Category, id: u64, ingest: f64) -> Arc<Delivered> {
        let topic = TopicId::new("ATDome:0".parse().unwrap(), category, topic).unwrap();
        let entry = Entry {
            id: StreamId::new(id, 0),
            fields: meridian_proto::StoredSample {
                seq: None,
                source_ts: ingest,
                ingest_ts: ingest,
                salindex: None,
                upto: None,
                fields: "{}".into(),
            }
            .into_fields(),
        };
        Arc::new(Delivered::from_entry(&topic, &entry).unwrap())
    }

    #[test]
    fn group_names_map_to_flavours() {
        let s = request(serde_json::json!({"option":"subscribe","category":"event","csc":"ATDome","salindex":"0","stream":"summaryState"})).unwrap();
        assert_eq!(s.name, "event-ATDome-0-summaryState");
        assert!(matches!(s.group, GroupKey::Stream(_)));
        let s = request(serde_json::json!({"option":"unsubscribe","category":"telemetry","csc":"all","salindex":"all","stream":"all"})).unwrap();
        assert_eq!(s.group, GroupKey::All(Category::Telemetry));
        assert!(!s.subscribe);
        let s = request(serde_json::json!({"option":"subscribe","category":"heartbeat","csc":"manager","salindex":0,"stream":"stream"})).unwrap();
        assert_eq!(
            (s.name.as_str(), s.group),
            ("heartbeat-manager-0-stream", GroupKey::Manager)
        );
        let s = request(serde_json::json!({"option":"subscribe","category":"initial_state","csc":"ATDome","salindex":"all","stream":"all"})).unwrap();
        assert!(matches!(s.group, GroupKey::Inert(_)));
        let s = request(serde_json::json!({"option":"subscribe","category":"event","csc":"Heartbeat","salindex":"0","stream":"stream"})).unwrap();
        assert_eq!(s.group, GroupKey::Heartbeat);
    }

    #[test]
    fn bad_requests_name_the_field() {
        let e = request(serde_json::json!({"option":"subscribe","category":"event","csc":"ATDome","salindex":"x","stream":"a"})).unwrap_err();
        assert!(e.starts_with("salindex:"), "{e}");
        let e = request(serde_json::json!({"option":"subscribe","category":"event","csc":"AT-Dome","salindex":0,"stream":"a"})).unwrap_err();
        assert!(e.starts_with("csc:"), "{e}");
        let e =
            request(serde_json::json!({"option":"subscribe","category":"event","csc":"ATDome","salindex":0}))
                .unwrap_err();
        assert_eq!(e, "stream: missing");
        let e = request(
            serde_json::json!({"option":"join","category":"event","csc":"ATDome","salindex":0,"stream":"a"}),
        )
        .unwrap_err();
        assert!(e.starts_with("option:"), "{e}");
    }

    #[test]
    fn overlapping_groups_each_get_a_sample_once_and_a_late_group_gets_the_last_value() {
        let mut s = Session::default();
        let state = sample("summaryState", Category::Event, 5, 100.0);
        s.join(&GroupKey::All(Category::Event), &[]);
        assert_eq!(s.route(&state, 100.0), [Delivery::All]);
        // A stream group joined later awaits the last value, which the hub replays.
        s.join(
            &GroupKey::Stream(state.topic.clone()),
            std::slice::from_ref(&state.topic),
        );
        assert_eq!(s.route(&state, 100.0), [Delivery::Stream]);
        assert_eq!(s.route(&state, 100.0), []);
        let next = sample("summaryState", Category::Event, 6, 100.0);
        assert_eq!(s.route(&next, 100.0), [Delivery::Stream, Delivery::All]);
        s.join(
            &GroupKey::Csc("ATDome:0".parse().unwrap(), Category::Event),
            std::slice::from_ref(&next.topic),
        );
        assert_eq!(s.route(&next, 100.0), [Delivery::Csc]);
    }

    #[test]
    fn heartbeats_are_reported_and_their_losses_counted() {
        let mut s = Session::default();
        s.join(&GroupKey::Heartbeat, &[]);
        let beat = sample(HEARTBEAT_TOPIC, Category::Event, 1, 100.0);
        assert_eq!(
            s.route(&beat, 100.5),
            [Delivery::Heartbeat { all: false, lost: 0 }]
        );
        assert!(s.lost_heartbeats(101.0).is_empty());
        let lost = s.lost_heartbeats(104.1);
        assert_eq!(lost.len(), 1);
        assert_eq!(lost[0].1, 2);
        assert!(s.lost_heartbeats(104.2).is_empty(), "reported once per period");
        assert_eq!(s.lost_heartbeats(1000.0)[0].1, MAX_LOST_HEARTBEATS + 1);
        assert!(s.lost_heartbeats(2000.0).is_empty());
    }

    #[test]
    fn a_group_left_leaves_topics_other_groups_still_need() {
        let mut s = Session::default();
        let t = TopicId::new("ATDome:0".parse().unwrap(), Category::Event, "summaryState").unwrap();
        s.join(&GroupKey::Stream(t.clone()), &[]);
        s.join(&GroupKey::All(Category::Event), &[]);
        let all = GroupKey::All(Category::Event).selector().unwrap();
        assert!(s.leave(&GroupKey::All(Category::Event)));
        assert!(s.still_needed(&t, &all));
        let other = TopicId::new("ATDome:0".parse().unwrap(), Category::Event, "azimuth").unwrap();
        assert!(!s.still_needed(&other, &all));
        assert_eq!(s.resume_from(&t), Start::Last);
    }
}
