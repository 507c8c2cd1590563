//! The replaced system's message shapes, each encoded once per sample and
//! flavour and shared by every connection that sends it.
//!
//! Every field is wrapped as `{"value","dataType","units"}`; an event is a
//! one-element list of such fields, telemetry a bare dict
//! (`love-research.md` §2.3). Types and units come from the schemas
//! producers declare at their handshake ([`keys::SCHEMAS`]), cached here;
//! a topic without one gets types inferred from its values and no units.
//! The middleware's private time stamps the replaced client plots against
//! (`private_sndStamp`, `private_rcvStamp`, TAI Unix seconds) are added when
//! the sample does not carry them. Non-finite floats are stored as `null`,
//! so no bare `NaN` or `Infinity` ever leaves.

use crate::frontend::sample::Delivered;
use meridian_proto::{keys, unix_now, Category, CscId, FieldSchema, TopicId, ValueKind};
use meridian_store::Store;
use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::Value as Json;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime};

/// Most consecutive lost heartbeats a CSC may have before the replaced
/// client shows it as lost (what its producers send).
pub const MAX_LOST_HEARTBEATS: u32 = 5;

/// How often the replaced system's producers report a CSC heartbeat: a
/// heartbeat is counted lost for every such period without one.
pub const HEARTBEAT_PERIOD_S: f64 = 2.0;

/// Schemas are re-read this often anyway (a producer restarted with a new interface).
const SCHEMA_REFRESH: Duration = Duration::from_secs(300);

/// Which of a sample's encodings (see [`Delivered::love_json`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavour {
    /// Group `cat-csc-idx-stream`: data keyed by the stream.
    Stream,
    /// Group `cat-csc-idx-all`: data keyed by the CSC's name (the replaced system's quirk).
    Csc,
    /// Group `cat-all-all-all`: data keyed by the stream.
    All,
    /// Group `event-Heartbeat-0-stream`: a CSC's heartbeat as its producers report it.
    Heartbeat,
    /// The same heartbeat report on group `event-all-all-all`.
    HeartbeatAll,
}

/// Slot of the wrapped fields, shared by the stream flavours.
const PAYLOAD_SLOT: usize = 0;

impl Flavour {
    fn slot(self) -> usize {
        match self {
            Flavour::Stream => 1,
            Flavour::Csc => 2,
            Flavour::All => 3,
            Flavour::Heartbeat => 4,
            Flavour::HeartbeatAll => 5,
        }
    }
}

/// How a topic's fields are described to the replaced client.
#[derive(Debug, Clone, PartialEq)]
pub enum Shape {
    /// Field name → `(dataType, units)`.
    Fields(HashMap<String, (String, String)>),
    /// Sent by one of the replaced system's producers without field
    /// wrappers (its pseudo-CSCs, e.g. `ScriptQueueState`): passed on as
    /// received, in a list if it came in one.
    Raw { list: bool },
}

impl Shape {
    /// Reads a value of the [`keys::SCHEMAS`] hash.
    pub fn parse(json: &str) -> Option<Shape> {
        if let Ok(fields) = serde_json::from_str::<Vec<FieldSchema>>(json) {
            return Some(Shape::from_fields(&fields));
        }
        let raw: Json = serde_json::from_str(json).ok()?;
        match raw.get("raw") {
            Some(Json::Bool(true)) => Some(Shape::Raw {
                list: raw.get("list").and_then(Json::as_bool).unwrap_or(false),
            }),
            _ => None,
        }
    }

    pub fn from_fields(fields: &[FieldSchema]) -> Shape {
        Shape::Fields(
            fields
                .iter()
                .map(|f| {
                    let data_type = data_type(f.kind, f.count.is_some());
                    (f.name.clone(), (data_type, f.units.clone()))
                })
                .collect(),
        )
    }
}

/// The replaced system's `dataType` of a field: `Int`, `Float`, `String`
/// or `Array<…>`; booleans are `Int`, as its producers report them.
pub fn data_type(kind: ValueKind, array: bool) -> String {
    let scalar = match kind {
        ValueKind::Bool | ValueKind::Int => "Int",
        ValueKind::Float => "Float",
        ValueKind::Str => "String",
    };
    match array {
        true => format!("Array<{scalar}>"),
        false => scalar.to_string(),
    }
}

/// `dataType` of a value whose topic has no schema, as the replaced producers infer it.
fn inferred_type(value: &Json) -> String {
    match value {
        Json::Bool(_) => "Int".into(),
        Json::Number(n) if n.is_f64() => "Float".into(),
        Json::Number(_) => "Int".into(),
        Json::String(_) => "String".into(),
        Json::Array(items) => format!("Array<{}>", items.first().map_or("None".into(), inferred_type)),
        Json::Null | Json::Object(_) => "None".into(),
    }
}

/// The field schemas of every topic, from [`keys::SCHEMAS`], cached in
/// process and keyed like the catalog (an aggregated CSC's topics under
/// index 0). Looking up a known topic takes a read lock and no allocation;
/// a topic the store has no schema for is remembered as such until the
/// next refresh.
pub struct Schemas {
    store: Arc<dyn Store>,
    known: RwLock<HashMap<TopicId, Option<Arc<Shape>>>>,
    /// When the hash was last read.
    loaded: std::sync::Mutex<Option<Instant>>,
    /// One reader of the hash at a time.
    loading: tokio::sync::Mutex<()>,
}

/// The catalog's name of a topic: index 0 for every instance of an aggregated CSC.
fn base(t: &TopicId) -> std::borrow::Cow<'_, TopicId> {
    match t.csc.is_aggregated() && t.csc.salindex != 0 {
        true => std::borrow::Cow::Owned(TopicId {
            csc: CscId {
                csc: t.csc.csc.clone(),
                salindex: 0,
            },
            ..t.clone()
        }),
        false => std::borrow::Cow::Borrowed(t),
    }
}

impl Schemas {
    pub fn new(store: Arc<dyn Store>) -> Schemas {
        Schemas {
            store,
            known: RwLock::default(),
            loaded: std::sync::Mutex::new(None),
            loading: tokio::sync::Mutex::new(()),
        }
    }

    /// The shape of topic `t`, if known.
    pub fn get(&self, t: &TopicId) -> Option<Arc<Shape>> {
        let known = self.known.read().unwrap_or_else(|p| p.into_inner());
        known.get(base(t).as_ref()).cloned().flatten()
    }

    /// Records a shape this process has just written.
    pub fn put(&self, t: &TopicId, shape: Shape) {
        let mut known = self.known.write().unwrap_or_else(|p| p.into_inner());
        known.insert(base(t).into_owned(), Some(Arc::new(shape)));
    }

    /// Whether the hash must be read for `topics`: one is not known either
    /// way, or the cache is older than [`SCHEMA_REFRESH`].
    fn due<'a>(&self, topics: impl Iterator<Item = &'a TopicId>) -> bool {
        let stale = self
            .loaded
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_none_or(|at| at.elapsed() >= SCHEMA_REFRESH);
        let known = self.known.read().unwrap_or_else(|p| p.into_inner());
        stale || topics.into_iter().any(|t| !known.contains_key(base(t).as_ref()))
    }

    /// Makes sure the shapes of `topics` are cached as far as the store has them.
    pub async fn ensure(&self, topics: &[&TopicId]) {
        if !self.due(topics.iter().copied()) {
            return;
        }
        let _loading = self.loading.lock().await;
        if !self.due(topics.iter().copied()) {
            return;
        }
        let hash = match self.store.hash_get(keys::SCHEMAS).await {
            Ok(hash) => hash,
            Err(e) => {
                tracing::debug!(error = %e, "field schemas unreadable; types are inferred meanwhile");
                return;
            }
        };
        let mut fresh: HashMap<TopicId, Option<Arc<Shape>>> = HashMap::with_capacity(hash.len());
        for (field, json) in hash {
            let Some((csc, index, category, topic)) = TopicId::from_catalog_field(&field) else {
                continue;
            };
            let id = CscId {
                csc,
                salindex: index.unwrap_or(0),
            };
            if let (Ok(t), Some(shape)) = (TopicId::new(id, category, &topic), Shape::parse(&json)) {
                fresh.insert(t, Some(Arc::new(shape)));
            }
        }
        for t in topics {
            fresh.entry(base(t).into_owned()).or_insert(None);
        }
        *self.known.write().unwrap_or_else(|p| p.into_inner()) = fresh;
        *self.loaded.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
    }
}

/// A JSON object's members in their stored order.
#[derive(Default)]
struct Ordered(Vec<(String, Json)>);

impl<'de> Deserialize<'de> for Ordered {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Ordered, D::Error> {
        struct Members;
        impl<'de> Visitor<'de> for Members {
            type Value = Ordered;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Ordered, A::Error> {
                let mut out = Vec::with_capacity(map.size_hint().unwrap_or(8));
                while let Some(member) = map.next_entry()? {
                    out.push(member);
                }
                Ok(Ordered(out))
            }
        }
        d.deserialize_map(Members)
    }
}

/// A finite number as JSON, anything else as `null`.
pub fn num(x: f64) -> String {
    match serde_json::Number::from_f64(x) {
        Some(n) => n.to_string(),
        None => "null".into(),
    }
}

fn json_str(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

/// The wrapped fields of `d`: a one-element list for an event, a dict for telemetry.
fn payload(d: &Delivered, shape: Option<&Shape>, tai_utc: f64) -> String {
    let types = match shape {
        Some(Shape::Raw { list: true }) => return format!("[{}]", d.fields),
        Some(Shape::Raw { list: false }) => return d.fields.to_string(),
        Some(Shape::Fields(types)) => Some(types),
        None => None,
    };
    let fields: Ordered = serde_json::from_str(&d.fields).unwrap_or_default();
    let mut out = String::with_capacity(d.fields.len() * 2 + 256);
    out.push_str(if d.topic.category == Category::Event {
        "[{"
    } else {
        "{"
    });
    let mut stamps = (true, true);
    for (i, (name, value)) in fields.0.iter().enumerate() {
        let (data_type, units) = match types.and_then(|t| t.get(name)) {
            Some((t, u)) => (t.clone(), u.as_str()),
            None => (inferred_type(value), ""),
        };
        if i > 0 {
            out.push(',');
        }
        let _ = write!(
            out,
            r#"{}:{{"value":{},"dataType":"{}","units":{}}}"#,
            json_str(name),
            value,
            data_type,
            json_str(units)
        );
        match name.as_str() {
            "private_sndStamp" => stamps.0 = false,
            "private_rcvStamp" => stamps.1 = false,
            _ => {}
        }
    }
    let mut stamp = |name: &str, at: f64| {
        if out.len() > 2 {
            out.push(',');
        }
        let _ = write!(
            out,
            r#""{name}":{{"value":{},"dataType":"Float","units":"second"}}"#,
            num(at + tai_utc)
        );
    };
    if stamps.0 {
        stamp("private_sndStamp", d.source_ts);
    }
    if stamps.1 {
        stamp("private_rcvStamp", d.ingest_ts);
    }
    out.push_str(if d.topic.category == Category::Event {
        "}]"
    } else {
        "}"
    });
    out
}

/// The per-hop time stamps the replaced system adds (`producer_snd` in
/// UTC, the manager's in TAI, as it does), from the sample's source,
/// ingest and read times.
fn tracing_json(source: f64, ingest: f64, read: f64, tai_utc: f64) -> String {
    let now = unix_now(SystemTime::now()) + tai_utc;
    format!(
        r#"{{"producer_snd":{},"manager_rcv_from_producer":{},"manager_snd_to_group":{},"manager_rcv_from_group":{},"manager_snd_to_client":{}}}"#,
        num(source),
        num(ingest + tai_utc),
        num(ingest + tai_utc),
        num(read + tai_utc),
        num(now)
    )
}

/// `{"category","data":[{"csc","salindex","data":…}],"subscription","tracing"}`.
fn envelope(
    category: &str,
    csc: &str,
    salindex: u32,
    data: &str,
    subscription: &str,
    tracing: &str,
) -> String {
    format!(
        r#"{{"category":"{category}","data":[{{"csc":{},"salindex":{salindex},"data":{data}}}],"subscription":{},"tracing":{tracing}}}"#,
        json_str(csc),
        json_str(subscription)
    )
}

/// The data message of `d` in `flavour` (not the heartbeat flavours),
/// encoded once and shared; `shape` describes its fields (asked only
/// when it is encoded).
pub fn data_message(
    d: &Delivered,
    flavour: Flavour,
    shape: impl FnOnce() -> Option<Arc<Shape>>,
    tai_utc: f64,
) -> axum::extract::ws::Utf8Bytes {
    d.love_json(flavour.slot(), |d| {
        let payload = d.love_json(PAYLOAD_SLOT, |d| payload(d, shape().as_deref(), tai_utc));
        let t = &d.topic;
        let (category, csc, index, topic) =
            (t.category.as_str(), t.csc.csc.as_str(), t.csc.salindex, &t.topic);
        let (data, subscription) = match flavour {
            Flavour::Csc => (
                format!("{{{}:{{{}:{}}}}}", json_str(csc), json_str(topic), &*payload),
                format!("{category}-{csc}-{index}-all"),
            ),
            Flavour::All => (
                format!("{{{}:{}}}", json_str(topic), &*payload),
                format!("{category}-all-all-all"),
            ),
            _ => (
                format!("{{{}:{}}}", json_str(topic), &*payload),
                format!("{category}-{csc}-{index}-{topic}"),
            ),
        };
        let tracing = tracing_json(d.source_ts, d.ingest_ts, d.read_ts, tai_utc);
        envelope(category, csc, index, &data, &subscription, &tracing)
    })
}

/// A CSC heartbeat report as the replaced system's producers send it:
/// `{"csc":"Heartbeat","salindex":0,"data":{"stream":{csc, salindex, lost,
/// last_heartbeat_timestamp, max_lost_heartbeats}}}` (not a list).
pub fn heartbeat_message(csc: &CscId, lost: u32, last: f64, all: bool, tai_utc: f64) -> String {
    let data = format!(
        r#"{{"stream":{{"csc":{},"salindex":{},"lost":{lost},"last_heartbeat_timestamp":{},"max_lost_heartbeats":{MAX_LOST_HEARTBEATS}}}}}"#,
        json_str(csc.csc.as_str()),
        csc.salindex,
        num(last)
    );
    let subscription = if all {
        "event-all-all-all"
    } else {
        "event-Heartbeat-0-stream"
    };
    let now = unix_now(SystemTime::now());
    let tracing = tracing_json(last, now, now, tai_utc);
    envelope("event", "Heartbeat", 0, &data, subscription, &tracing)
}

/// The report of a fresh heartbeat event (none lost), encoded once and shared.
pub fn heartbeat_report(d: &Delivered, all: bool, tai_utc: f64) -> axum::extract::ws::Utf8Bytes {
    let flavour = if all {
        Flavour::HeartbeatAll
    } else {
        Flavour::Heartbeat
    };
    d.love_json(flavour.slot(), |d| {
        let data = format!(
            r#"{{"stream":{{"csc":{},"salindex":{},"lost":0,"last_heartbeat_timestamp":{},"max_lost_heartbeats":{MAX_LOST_HEARTBEATS}}}}}"#,
            json_str(d.topic.csc.csc.as_str()),
            d.topic.csc.salindex,
            num(d.source_ts)
        );
        let subscription = if all { "event-all-all-all" } else { "event-Heartbeat-0-stream" };
        let tracing = tracing_json(d.source_ts, d.ingest_ts, d.read_ts, tai_utc);
        envelope("event", "Heartbeat", 0, &data, subscription, &tracing)
    })
}

/// `{"data":"Successfully subscribed to <group>"}` (or `unsubscribed`):
/// the replaced client matches these strings, so they are kept exactly.
pub fn confirmation(subscribed: bool, group: &str) -> String {
    let verb = if subscribed { "subscribed" } else { "unsubscribed" };
    serde_json::json!({ "data": format!("Successfully {verb} to {group}") }).to_string()
}

/// An error reply. The replaced protocol has none: `data` carries the text
/// too (its client reads any message without `category` as a
/// confirmation, and no group name appears in it), `error` says it is one.
pub fn error(message: &str) -> String {
    serde_json::json!({ "data": format!("Error: {message}"), "error": message }).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use meridian_proto::{StoredSample, StreamId};
    use meridian_store::Entry;

    fn sample(category: Category, fields: &str) -> Delivered {
        let topic = TopicId::new("ATDome:0".parse().unwrap(), category, "position").unwrap();
        let entry = Entry {
            id: StreamId::new(5, 0),
            fields: StoredSample {
                seq: None,
                source_ts: 100.5,
                ingest_ts: 101.0,
                salindex: None,
                upto: None,
                fields: fields.into(),
            }
            .into_fields(),
        };
        Delivered::from_entry(&topic, &entry).unwrap()
    }

    #[test]
    fn fields_are_wrapped_with_type_and_units_in_their_order() {
        let shape = Shape::from_fields(&[
            FieldSchema {
                name: "b".into(),
                kind: ValueKind::Float,
                count: None,
                units: "deg".into(),
            },
            FieldSchema {
                name: "a".into(),
                kind: ValueKind::Bool,
                count: Some(2),
                units: "unitless".into(),
            },
        ]);
        let d = sample(Category::Telemetry, r#"{"b":1.5,"a":[true,false],"n":null}"#);
        let v: Json = serde_json::from_str(&payload(&d, Some(&shape), 37.0)).unwrap();
        assert_eq!(
            v["b"],
            serde_json::json!({"value": 1.5, "dataType": "Float", "units": "deg"})
        );
        assert_eq!(v["a"]["dataType"], "Array<Int>");
        assert_eq!(
            v["n"],
            serde_json::json!({"value": null, "dataType": "None", "units": ""})
        );
        assert_eq!(v["private_sndStamp"]["value"], 137.5);
        assert_eq!(v["private_rcvStamp"]["value"], 138.0);
        let text = payload(&d, Some(&shape), 37.0);
        assert!(
            text.find("\"b\"").unwrap() < text.find("\"a\"").unwrap(),
            "{text}"
        );
    }

    #[test]
    fn an_event_is_a_one_element_list_and_raw_payloads_pass_through() {
        let d = sample(Category::Event, r#"{"x":1}"#);
        let v: Json = serde_json::from_str(&payload(&d, None, 0.0)).unwrap();
        assert_eq!(v[0]["x"]["dataType"], "Int");
        let raw = sample(Category::Event, r#"{"enabled":true}"#);
        assert_eq!(
            payload(&raw, Some(&Shape::Raw { list: false }), 0.0),
            r#"{"enabled":true}"#
        );
    }

    #[test]
    fn the_csc_wide_flavour_is_keyed_by_the_csc_name() {
        let d = sample(Category::Telemetry, r#"{"x":1.0}"#);
        let v: Json = serde_json::from_str(&data_message(&d, Flavour::Csc, || None, 37.0)).unwrap();
        assert_eq!(v["subscription"], "telemetry-ATDome-0-all");
        assert!(v["data"][0]["data"]["ATDome"]["position"]["x"].is_object(), "{v}");
        let v: Json = serde_json::from_str(&data_message(&d, Flavour::All, || None, 37.0)).unwrap();
        assert_eq!(v["subscription"], "telemetry-all-all-all");
        assert!(v["data"][0]["data"]["position"]["x"].is_object(), "{v}");
        assert_eq!(v["tracing"]["producer_snd"], 100.5);
    }

    #[test]
    fn schemas_hash_values_parse() {
        let json = r#"[{"name":"x","kind":"float","count":null,"units":"m"}]"#;
        assert_eq!(
            Shape::parse(json),
            Some(Shape::Fields(
                [("x".to_string(), ("Float".to_string(), "m".to_string()))].into()
            ))
        );
        assert_eq!(
            Shape::parse(r#"{"raw":true,"list":true}"#),
            Some(Shape::Raw { list: true })
        );
        assert_eq!(Shape::parse("nonsense"), None);
    }
}
