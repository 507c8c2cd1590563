//! Data messages of the replaced system's producers, written to the store
//! the way the ingest manager writes its producers' samples, so native and
//! compatibility browsers receive them alike and sites can move one producer
//! at a time.
//!
//! `{"category","data":[{"csc","salindex","data":{stream: payload}}],"producer_snd"}`:
//! a payload is a dict of fields (telemetry) or a list of them (events);
//! each field is `{"value","dataType","units"}`. Per stream, the entry has
//! the ingest manager's fields: `src` (`producer_snd`), `ing` (now), `f`
//! (the plain values as a JSON object) and, for an aggregated CSC, `salindex`
//! (a [`StoredSample`] without `seq`);
//! streams are trimmed like ingest's (`store.*_maxlen`). Each new topic is
//! added to the catalog and its field types and units to the schemas.
//!
//! Payloads without field wrappers (the pseudo-CSCs its producers build,
//! e.g. `ScriptQueueState`) are stored and passed on as they came. The
//! `Heartbeat` pseudo-CSC is not stored as such: a report of a heartbeat
//! received (`lost` 0) becomes that CSC's `heartbeat` event, so its
//! heartbeat looks the same whichever producer serves it.
//!
//! A message is checked whole before anything is written (its structure
//! and limits by `meridian_proto::love`, its names here): an error names
//! the field and the limit, and nothing of that message is stored.

use super::encode::{Schemas, Shape};
use meridian_proto::love::{DataMessage, HeartbeatReport};
use meridian_proto::{keys, unix_now, Category, CscId, FieldSchema, StoredSample, TopicId, ValueKind};
use meridian_store::{Append, Store};
use serde_json::{Map, Value as Json};
use std::collections::hash_map::DefaultHasher;
use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

/// The catalog's topics as this process knows them, shared by every
/// producer connection: a new topic is admitted only while the catalog holds
/// fewer than `frontend.love_max_topics`, counted across connections (a
/// reconnecting producer starts from the same count) and from what the
/// catalog already held when the first producer published.
pub struct TopicBudget {
    max: usize,
    /// Filled from the stored catalog once, before the first topic is admitted.
    seeded: tokio::sync::OnceCell<()>,
    known: Mutex<HashSet<String>>,
}

impl TopicBudget {
    pub fn new(max: usize) -> TopicBudget {
        TopicBudget {
            max,
            seeded: tokio::sync::OnceCell::new(),
            known: Mutex::default(),
        }
    }

    /// Admits the catalog fields `fields` (those already known cost nothing),
    /// all or none.
    async fn admit(&self, store: &dyn Store, fields: &[&str]) -> Result<(), String> {
        self.seeded
            .get_or_try_init(|| async {
                let catalog = store.hash_get(keys::CATALOG).await?;
                let mut known = self.known.lock().unwrap_or_else(|p| p.into_inner());
                known.extend(catalog.into_iter().map(|(field, _)| field));
                Ok::<(), meridian_store::StoreError>(())
            })
            .await
            .map_err(|e| format!("{e} (nothing stored; send it again)"))?;
        let mut known = self.known.lock().unwrap_or_else(|p| p.into_inner());
        let new: HashSet<&str> = fields.iter().copied().filter(|f| !known.contains(*f)).collect();
        if known.len() + new.len() > self.max {
            return Err(format!(
                "data: {} new topics would take the catalog past frontend.love_max_topics = {} \
                 (it holds {}, counted across every producer connection)",
                new.len(),
                self.max,
                known.len()
            ));
        }
        known.extend(new.into_iter().map(String::from));
        Ok(())
    }
}

/// Retention of the streams written, as ingest's.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    pub telemetry: usize,
    pub event: usize,
}

/// One producer connection's writer.
pub struct Publisher {
    store: Arc<dyn Store>,
    schemas: Arc<Schemas>,
    retention: Retention,
    budget: Arc<TopicBudget>,
    /// Catalog fields listed by this connection (at most the budget's), with the schema written for each.
    listed: HashMap<String, String>,
    /// Digest of the last event written per stream and instance: the
    /// producers re-send their last events on every reconnect.
    last_events: HashMap<(String, u32), u64>,
}

/// What one message writes.
#[derive(Default)]
struct Batch {
    appends: Vec<Append>,
    /// (topic, catalog field, schema JSON, shape) of the topics written.
    topics: Vec<(TopicId, String, String, Shape)>,
    /// Events written once: (append index, stream key and instance, digest).
    events: Vec<(usize, (String, u32), u64)>,
}

impl Publisher {
    pub fn new(
        store: Arc<dyn Store>,
        schemas: Arc<Schemas>,
        retention: Retention,
        budget: Arc<TopicBudget>,
    ) -> Publisher {
        Publisher {
            store,
            schemas,
            retention,
            budget,
            listed: HashMap::new(),
            last_events: HashMap::new(),
        }
    }

    /// Checks and stores one data message; returns how many entries it wrote.
    pub async fn publish(&mut self, message: &DataMessage) -> Result<usize, String> {
        let now = unix_now(SystemTime::now());
        let mut batch = self.read(message, now)?;
        // Events its producers re-send after a reconnect are written once.
        let mut skip = vec![false; batch.appends.len()];
        for (i, key, digest) in &batch.events {
            let last = match self.last_events.get(key) {
                Some(last) => Some(*last),
                // First of this stream on this connection: compare with what is stored.
                None if !keys::is_aggregated(&key.0) => {
                    let stored = self
                        .store
                        .last(&key.0, 1)
                        .await
                        .map_err(|e| format!("{e} (nothing stored; send it again)"))?;
                    stored
                        .first()
                        .and_then(|e| StoredSample::from_fields(&e.fields).ok())
                        .map(|s| entry_digest(Some(&s.source_ts.to_string()), Some(&s.fields)))
                }
                None => None,
            };
            skip[*i] = last == Some(*digest);
        }
        let fresh: Vec<(String, String)> = batch
            .topics
            .iter()
            .filter(|(_, field, json, _)| self.listed.get(field) != Some(json))
            .map(|(_, field, json, _)| (field.clone(), json.clone()))
            .collect();
        if !fresh.is_empty() {
            let fields: Vec<&str> = fresh.iter().map(|(f, _)| f.as_str()).collect();
            self.budget.admit(&*self.store, &fields).await?;
            let unavailable = |e: meridian_store::StoreError| format!("{e} (nothing stored; send it again)");
            self.store
                .hash_set(keys::SCHEMAS, &fresh, None)
                .await
                .map_err(unavailable)?;
            let catalog: Vec<(String, String)> =
                fresh.iter().map(|(f, _)| (f.clone(), String::new())).collect();
            self.store
                .hash_set(keys::CATALOG, &catalog, None)
                .await
                .map_err(unavailable)?;
            for (topic, field, json, shape) in batch.topics.drain(..) {
                if fresh.iter().any(|(f, _)| *f == field) {
                    self.schemas.put(&topic, shape);
                    self.listed.insert(field, json);
                }
            }
        }
        let appends: Vec<Append> = batch
            .appends
            .into_iter()
            .zip(&skip)
            .filter(|(_, skip)| !**skip)
            .map(|(a, _)| a)
            .collect();
        if !appends.is_empty() {
            self.store
                .append(&appends)
                .await
                .map_err(|e| format!("{e} (nothing stored; send it again)"))?;
        }
        for (_, key, digest) in batch.events {
            self.last_events.insert(key, digest);
        }
        Ok(appends.len())
    }

    /// Checks a message's names and lays out what it writes.
    fn read(&self, message: &DataMessage, now: f64) -> Result<Batch, String> {
        let category = message.category;
        let source = message.producer_snd.unwrap_or(now);
        let mut batch = Batch::default();
        for (i, entry) in message.entries.iter().enumerate() {
            for (stream, payload) in &entry.streams {
                let at = format!("data[{i}].data.{stream}");
                if entry.csc.as_str() == "Heartbeat" && category == Category::Event {
                    self.heartbeat(&mut batch, payload, now)
                        .map_err(|e| format!("{at}: {e}"))?;
                    continue;
                }
                let id = CscId {
                    csc: entry.csc.clone(),
                    salindex: entry.salindex,
                };
                let topic = TopicId::new(id, category, stream).map_err(|e| format!("{at}: {e}"))?;
                let (samples, list) = DataMessage::samples(&at, payload)?;
                for fields in samples {
                    let (f, shape, schema) = convert(fields, list);
                    // Events carrying the middleware's stamps are unique: the
                    // same one again is the producer's reconnect burst.
                    let stamped = f.contains("\"private_sndStamp\"") || f.contains("\"private_seqNum\"");
                    let once = (category == Category::Event && stamped).then(|| entry_digest(None, Some(&f)));
                    self.push(&mut batch, &topic, source, now, f, (shape, schema), once);
                }
            }
        }
        Ok(batch)
    }

    /// Lays out one entry of `topic`; `once`: the digest that makes an
    /// event a repeat of the last one written (then it is not written).
    #[allow(clippy::too_many_arguments)]
    fn push(
        &self,
        batch: &mut Batch,
        topic: &TopicId,
        source: f64,
        now: f64,
        f: String,
        shape: (Shape, String),
        once: Option<u64>,
    ) {
        let maxlen = match topic.category {
            Category::Telemetry => self.retention.telemetry,
            Category::Event => self.retention.event,
        };
        let sample = StoredSample {
            seq: None,
            source_ts: source,
            ingest_ts: now,
            salindex: topic.csc.is_aggregated().then_some(topic.csc.salindex),
            upto: None,
            fields: f,
        };
        if let Some(digest) = once {
            let key = (keys::stream(topic), topic.csc.salindex);
            batch.events.push((batch.appends.len(), key, digest));
        }
        batch.appends.push(Append {
            key: keys::stream(topic),
            maxlen,
            fields: sample.into_fields(),
        });
        let field = topic.catalog_field();
        if !batch.topics.iter().any(|(_, f, _, _)| *f == field) {
            batch.topics.push((topic.clone(), field, shape.1, shape.0));
        }
    }

    /// A `Heartbeat` report: `{csc, salindex, lost, last_heartbeat_timestamp, …}`.
    fn heartbeat(&self, batch: &mut Batch, report: &Json, now: f64) -> Result<(), String> {
        let HeartbeatReport {
            csc,
            salindex,
            lost,
            last,
        } = HeartbeatReport::parse(report)?;
        if lost > 0 || last <= 0.0 {
            // Losses are counted from the heartbeats that arrive, not reported.
            return Ok(());
        }
        let topic = TopicId::new(
            CscId { csc, salindex },
            Category::Event,
            super::group::HEARTBEAT_TOPIC,
        )
        .map_err(|e| e.to_string())?;
        let src = last.to_string();
        let key = keys::stream(&topic);
        let same = |a: &Append| {
            a.key == key
                && a.fields
                    .iter()
                    .any(|(k, v)| k == meridian_proto::stored::SOURCE_TS && *v == src)
        };
        if batch.appends.iter().any(same) {
            return Ok(());
        }
        let schema = vec![FieldSchema {
            name: super::group::HEARTBEAT_TOPIC.into(),
            kind: ValueKind::Bool,
            count: None,
            units: "unitless".into(),
        }];
        let json = serde_json::to_string(&schema).unwrap_or_default();
        // Reports repeat a heartbeat until the next one: the same time stamp is one heartbeat.
        let f = r#"{"heartbeat":true}"#.to_string();
        let once = entry_digest(Some(&src), Some(&f));
        self.push(
            batch,
            &topic,
            last,
            now,
            f,
            (Shape::from_fields(&schema), json),
            Some(once),
        );
        Ok(())
    }
}

/// The plain fields of one sample (a JSON object), its shape and the
/// schema JSON to record: wrapped fields lose their wrappers, anything
/// else is kept as it came.
fn convert(fields: &Map<String, Json>, list: bool) -> (String, Shape, String) {
    let wrapped = !fields.is_empty()
        && fields
            .values()
            .all(|v| v.as_object().is_some_and(|w| w.contains_key("value")));
    if !wrapped {
        let f = serde_json::to_string(fields).unwrap_or_else(|_| "{}".into());
        let shape = Shape::Raw { list };
        return (f, shape, format!(r#"{{"raw":true,"list":{list}}}"#));
    }
    let mut plain = Map::with_capacity(fields.len());
    let mut schema = Vec::with_capacity(fields.len());
    for (name, wrapper) in fields {
        let value = wrapper.get("value").cloned().unwrap_or(Json::Null);
        let declared = wrapper.get("dataType").and_then(Json::as_str).unwrap_or("");
        let (kind, array) = kind_of(declared, &value);
        let units = wrapper
            .get("units")
            .and_then(Json::as_str)
            .unwrap_or("")
            .to_string();
        let count = match (&value, array) {
            (Json::Array(items), _) => Some(items.len() as u32),
            (_, true) => Some(0),
            _ => None,
        };
        schema.push(FieldSchema {
            name: name.clone(),
            kind,
            count,
            units,
        });
        plain.insert(name.clone(), value);
    }
    let f = serde_json::to_string(&plain).unwrap_or_else(|_| "{}".into());
    let json = serde_json::to_string(&schema).unwrap_or_default();
    (f, Shape::from_fields(&schema), json)
}

/// The kind of a field from its declared `dataType` (`Int`, `Float`,
/// `String`, `Boolean`, `Array<…>`), or from its value when that says nothing.
fn kind_of(declared: &str, value: &Json) -> (ValueKind, bool) {
    let (inner, array) = match declared.strip_prefix("Array<").and_then(|d| d.strip_suffix('>')) {
        Some(inner) => (inner, true),
        None => (declared, false),
    };
    let kind = match inner {
        "Int" => Some(ValueKind::Int),
        "Float" => Some(ValueKind::Float),
        "String" => Some(ValueKind::Str),
        "Boolean" | "Bool" => Some(ValueKind::Bool),
        _ => None,
    };
    match kind {
        Some(kind) => (kind, array),
        None => {
            let probe = match value {
                Json::Array(items) => items.first().unwrap_or(&Json::Null),
                v => v,
            };
            let kind = match probe {
                Json::Bool(_) => ValueKind::Bool,
                Json::Number(n) if n.is_f64() => ValueKind::Float,
                Json::Number(_) => ValueKind::Int,
                Json::String(_) => ValueKind::Str,
                _ => ValueKind::Float,
            };
            (kind, value.is_array())
        }
    }
}

/// What makes two event entries the same: the fields, and for heartbeats
/// (whose fields never change) the source time.
fn entry_digest(src: Option<&str>, f: Option<&str>) -> u64 {
    let mut h = DefaultHasher::new();
    let heartbeat = f == Some(r#"{"heartbeat":true}"#);
    (heartbeat.then_some(src).flatten(), f).hash(&mut h);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrapped_fields_lose_their_wrappers_and_keep_types_and_units() {
        let fields = serde_json::json!({
            "azimuth": {"value": 12.5, "dataType": "Float", "units": "deg"},
            "forces": {"value": [1, 2], "dataType": "Array<Float>", "units": "N"},
            "ok": {"value": true, "dataType": "Int", "units": "unitless"}
        });
        let (f, shape, json) = convert(fields.as_object().unwrap(), true);
        assert_eq!(f, r#"{"azimuth":12.5,"forces":[1,2],"ok":true}"#);
        let Shape::Fields(types) = shape else {
            panic!("{json}")
        };
        assert_eq!(types["forces"], ("Array<Float>".to_string(), "N".to_string()));
        assert_eq!(types["ok"].0, "Int");
        let raw = serde_json::json!({"enabled": true, "running": false});
        let (f, shape, _) = convert(raw.as_object().unwrap(), false);
        assert_eq!(
            (f.as_str(), shape),
            (r#"{"enabled":true,"running":false}"#, Shape::Raw { list: false })
        );
    }
}
