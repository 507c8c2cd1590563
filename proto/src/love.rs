//! The messages browsers and producers of the replaced system (LOVE) send
//! to the compatibility endpoint (`shared/reference/love-research.md` §2,
//! §3.2; summary in `docs/protocol.md`), decoded without I/O so any text is
//! tested (and fuzzed) alone: it gives a [`Message`] or an error naming the
//! field or the limit, never a panic, and nothing it allocates grows beyond
//! the message's own size.
//!
//! - `{"option":"subscribe"|"unsubscribe","category","csc","salindex","stream"}`
//!   → [`Message::Subscription`], with the [`Group`] it names;
//! - `{"action":"get_time_data","request_time"}` → [`Message::Time`];
//! - `{"heartbeat":<component>,"timestamp"}` → [`Message::Heartbeat`];
//! - anything else from a producer is a data message,
//!   `{"category","data":[{"csc","salindex","data":{stream: payload}}],"producer_snd"}`
//!   → [`Message::Data`], checked whole: its payloads with
//!   [`DataMessage::samples`] and, for the `Heartbeat` pseudo-CSC,
//!   [`HeartbeatReport::parse`].
//!
//! Python's `json` (the replaced producers) writes bare `NaN` and
//! `Infinity`; they read as `null` ([`without_non_finite`]).

use crate::browser::MAX_CLIENT_MESSAGE_LEN;
use crate::topic::{Category, Csc, CscId, TopicId};
use serde_json::{Map, Value as Json};

/// Largest message a producer may send, in bytes (its largest topics,
/// wrapped, are under 100 KiB); larger ones get an error naming this limit.
pub const MAX_PRODUCER_MESSAGE_LEN: usize = 512 * 1024;

/// Most CSC entries in one data message (its producers send one).
pub const MAX_ENTRIES: usize = 64;

/// Most streams of one CSC entry.
pub const MAX_STREAMS: usize = 256;

/// Most samples of one stream in one message (events come one at a time).
pub const MAX_SAMPLES: usize = 256;

/// What one text message asks.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    Subscription(Subscription),
    /// `get_time_data`, with the `request_time` to echo (`null` if absent).
    Time {
        request_time: Json,
    },
    /// A component says it is alive (`timestamp`: Unix seconds, if given).
    Heartbeat {
        component: String,
        timestamp: Option<f64>,
    },
    /// A producer's data message.
    Data(DataMessage),
}

/// A subscribe or unsubscribe request.
#[derive(Debug, Clone, PartialEq)]
pub struct Subscription {
    pub subscribe: bool,
    /// The group's name as the client wrote it (the confirmation repeats it).
    pub name: String,
    pub group: Group,
}

/// A group, as the replaced system names it (`category-csc-salindex-stream`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Group {
    /// `cat-csc-idx-stream`.
    Stream(TopicId),
    /// `cat-csc-idx-all`.
    Csc(CscId, Category),
    /// `cat-all-all-all`.
    All(Category),
    /// `event-Heartbeat-0-stream`: every CSC's heartbeat, as its producers reported it.
    Heartbeat,
    /// `heartbeat-manager-0-stream`.
    Manager,
    /// Any other name (e.g. `cmd-…`, `initial_state-…`): confirmed, never fed.
    Inert(String),
}

/// A producer's data message, checked: every entry names a valid CSC
/// instance and carries an object of streams, within the limits.
#[derive(Debug, Clone, PartialEq)]
pub struct DataMessage {
    pub category: Category,
    /// When the producer sent it (Unix seconds), if it says.
    pub producer_snd: Option<f64>,
    pub entries: Vec<DataEntry>,
}

/// One CSC instance's streams in a data message.
#[derive(Debug, Clone, PartialEq)]
pub struct DataEntry {
    pub csc: Csc,
    pub salindex: u32,
    /// `(stream, payload)` in the message's order; see [`DataMessage::samples`].
    pub streams: Vec<(String, Json)>,
}

/// The samples of one stream's payload, each a JSON object of fields.
pub type Samples<'a> = Vec<&'a Map<String, Json>>;

/// A `Heartbeat` report: `{csc, salindex, lost, last_heartbeat_timestamp, …}`.
#[derive(Debug, Clone, PartialEq)]
pub struct HeartbeatReport {
    pub csc: Csc,
    pub salindex: u32,
    pub lost: u64,
    pub last: f64,
}

/// Decodes one text message; `producer`: the connection may publish
/// (it gave the producer password), which also raises the size limit.
pub fn parse(text: &str, producer: bool) -> Result<Message, String> {
    let (limit, name) = match producer {
        true => (MAX_PRODUCER_MESSAGE_LEN, "MAX_PRODUCER_MESSAGE_LEN"),
        false => (MAX_CLIENT_MESSAGE_LEN, "MAX_CLIENT_MESSAGE_LEN"),
    };
    if text.len() > limit {
        return Err(format!(
            "message is {} bytes, the limit is {name} = {limit}",
            text.len()
        ));
    }
    let value: Json = match serde_json::from_str(text) {
        Ok(value) => value,
        Err(e) => serde_json::from_str(&without_non_finite(text)).map_err(|_| format!("not JSON: {e}"))?,
    };
    let Json::Object(message) = value else {
        return Err("a message must be a JSON object".into());
    };
    if message.contains_key("option") {
        return subscription(&message).map(Message::Subscription);
    }
    if let Some(action) = message.get("action") {
        return match action.as_str() {
            Some("get_time_data") => Ok(Message::Time {
                request_time: message.get("request_time").cloned().unwrap_or(Json::Null),
            }),
            _ => Err(format!(
                "action: {action} is unknown (the one action is \"get_time_data\")"
            )),
        };
    }
    if let Some(component) = message.get("heartbeat") {
        let component = component.as_str().ok_or("heartbeat: must be a component name")?;
        let timestamp = match message.get("timestamp") {
            None | Some(Json::Null) => None,
            Some(t) => Some(t.as_f64().ok_or("timestamp: must be a number (Unix seconds)")?),
        };
        return Ok(Message::Heartbeat {
            component: component.to_string(),
            timestamp,
        });
    }
    match producer {
        true => DataMessage::parse(message).map(Message::Data),
        false => Err("data messages are accepted only from producers (connected with ?password=)".into()),
    }
}

fn text<'a>(request: &'a Map<String, Json>, field: &str) -> Result<&'a str, String> {
    match request.get(field) {
        Some(Json::String(s)) => Ok(s),
        Some(_) => Err(format!("{field}: must be a string")),
        None => Err(format!("{field}: missing")),
    }
}

/// A name part: `all`, or letters, digits and `_` (at most 64 bytes).
fn name_part(request: &Map<String, Json>, field: &str) -> Result<String, String> {
    let value = text(request, field)?;
    if value != "all" {
        Csc::new(value).map_err(|e| format!("{field}: {}", e.to_string().replace("CSC name", "name")))?;
    }
    Ok(value.to_string())
}

/// Reads `{"option","category","csc","salindex","stream"}`; `salindex` is a
/// number or a string (the replaced client sends `"0"`), or `"all"`.
fn subscription(request: &Map<String, Json>) -> Result<Subscription, String> {
    let subscribe = match text(request, "option")? {
        "subscribe" => true,
        "unsubscribe" => false,
        other => {
            return Err(format!(
                "option: {other:?} is neither \"subscribe\" nor \"unsubscribe\""
            ))
        }
    };
    let category = name_part(request, "category")?;
    let csc = name_part(request, "csc")?;
    let stream = name_part(request, "stream")?;
    let (index_text, index) = match request.get("salindex") {
        Some(Json::Number(n)) => {
            let i = n
                .as_u64()
                .and_then(|i| u32::try_from(i).ok())
                .ok_or_else(|| format!("salindex: {n} is not an index (0 to {})", u32::MAX))?;
            (i.to_string(), Some(i))
        }
        Some(Json::String(s)) if s == "all" => (s.clone(), None),
        Some(Json::String(s)) => match s.parse::<u32>() {
            Ok(i) if i.to_string() == *s => (s.clone(), Some(i)),
            _ => return Err(format!("salindex: {s:?} is neither an index nor \"all\"")),
        },
        Some(_) => return Err("salindex: must be a number or a string".into()),
        None => return Err("salindex: missing".into()),
    };
    let name = format!("{category}-{csc}-{index_text}-{stream}");
    let all = |s: &str| s == "all";
    let group = match (category.parse::<Category>(), index) {
        (Ok(c), None) if all(&csc) && all(&stream) => Group::All(c),
        (Ok(Category::Event), Some(0)) if csc == "Heartbeat" && stream == "stream" => Group::Heartbeat,
        (Ok(c), Some(i)) if !all(&csc) => {
            let id = CscId::new(&csc, i).map_err(|e| format!("csc: {e}"))?;
            match all(&stream) {
                true => Group::Csc(id, c),
                false => Group::Stream(TopicId::new(id, c, &stream).map_err(|e| format!("stream: {e}"))?),
            }
        }
        (Err(_), Some(0)) if category == "heartbeat" && csc == "manager" && stream == "stream" => {
            Group::Manager
        }
        _ => Group::Inert(name.clone()),
    };
    Ok(Subscription {
        subscribe,
        name,
        group,
    })
}

/// A SAL index: a number, or a string of one (its clients send `"0"`).
fn index(value: Option<&Json>) -> Result<u32, String> {
    match value {
        Some(Json::Number(n)) => n
            .as_u64()
            .and_then(|i| u32::try_from(i).ok())
            .ok_or_else(|| format!("{n} is not an index (0 to {})", u32::MAX)),
        Some(Json::String(s)) => s.parse().map_err(|_| format!("{s:?} is not an index")),
        Some(_) => Err("must be a number".into()),
        None => Err("missing".into()),
    }
}

impl DataMessage {
    /// Checks `{"category","data":[{"csc","salindex","data":{…}}],"producer_snd"}`
    /// (not the payloads: see [`DataMessage::samples`]); takes the payloads
    /// over without copying them.
    pub fn parse(mut message: Map<String, Json>) -> Result<DataMessage, String> {
        let category = match message.get("category") {
            Some(Json::String(c)) if c == "event" => Category::Event,
            Some(Json::String(c)) if c == "telemetry" => Category::Telemetry,
            Some(Json::String(c)) => {
                return Err(format!(
                    "category: {c:?} cannot be published (only \"event\" and \"telemetry\")"
                ))
            }
            Some(_) => return Err("category: must be a string".into()),
            None => return Err("category: missing".into()),
        };
        let producer_snd = match message.get("producer_snd") {
            None | Some(Json::Null) => None,
            Some(v) => Some(
                v.as_f64()
                    .filter(|t| t.is_finite())
                    .ok_or("producer_snd: must be a number (Unix seconds)")?,
            ),
        };
        let items = match message.remove("data") {
            Some(Json::Array(items)) => items,
            Some(_) => return Err("data: must be a list of {csc, salindex, data}".into()),
            None => return Err("data: missing".into()),
        };
        if items.len() > MAX_ENTRIES {
            return Err(format!(
                "data: {} entries, the limit is MAX_ENTRIES = {MAX_ENTRIES}",
                items.len()
            ));
        }
        let mut entries = Vec::with_capacity(items.len());
        for (i, item) in items.into_iter().enumerate() {
            let at = format!("data[{i}]");
            let Json::Object(mut item) = item else {
                return Err(format!("{at}: must be an object"));
            };
            let csc = match item.get("csc") {
                Some(Json::String(c)) => Csc::new(c.as_str()).map_err(|e| format!("{at}.csc: {e}"))?,
                _ => return Err(format!("{at}.csc: missing or not a string")),
            };
            let salindex = index(item.get("salindex")).map_err(|e| format!("{at}.salindex: {e}"))?;
            let streams = match item.remove("data") {
                Some(Json::Object(streams)) => streams,
                _ => return Err(format!("{at}.data: missing or not an object {{stream: payload}}")),
            };
            if streams.len() > MAX_STREAMS {
                return Err(format!(
                    "{at}.data: {} streams, the limit is MAX_STREAMS = {MAX_STREAMS}",
                    streams.len()
                ));
            }
            entries.push(DataEntry {
                csc,
                salindex,
                streams: streams.into_iter().collect(),
            });
        }
        Ok(DataMessage {
            category,
            producer_snd,
            entries,
        })
    }

    /// The samples of one stream's payload: a dict of fields (telemetry),
    /// or a list of them (events; `true`). `at` names it in errors.
    pub fn samples<'a>(at: &str, payload: &'a Json) -> Result<(Samples<'a>, bool), String> {
        match payload {
            Json::Object(fields) => Ok((vec![fields], false)),
            Json::Array(items) => {
                if items.len() > MAX_SAMPLES {
                    return Err(format!(
                        "{at}: {} samples, the limit is MAX_SAMPLES = {MAX_SAMPLES}",
                        items.len()
                    ));
                }
                let samples = items
                    .iter()
                    .enumerate()
                    .map(|(j, s)| {
                        s.as_object()
                            .ok_or(format!("{at}[{j}]: must be an object of fields"))
                    })
                    .collect::<Result<Vec<_>, String>>()?;
                Ok((samples, true))
            }
            _ => Err(format!("{at}: must be an object of fields or a list of them")),
        }
    }
}

impl HeartbeatReport {
    /// Reads the payload of a `Heartbeat` stream.
    pub fn parse(report: &Json) -> Result<HeartbeatReport, String> {
        let report = report
            .as_object()
            .ok_or("must be an object {csc, salindex, lost, …}")?;
        let csc = match report.get("csc") {
            Some(Json::String(c)) => Csc::new(c.as_str()).map_err(|e| format!("csc: {e}"))?,
            _ => return Err("csc: missing or not a string".into()),
        };
        let salindex = index(report.get("salindex")).map_err(|e| format!("salindex: {e}"))?;
        let lost = report
            .get("lost")
            .and_then(Json::as_u64)
            .ok_or("lost: missing or not a count")?;
        let last = report
            .get("last_heartbeat_timestamp")
            .and_then(Json::as_f64)
            .ok_or("last_heartbeat_timestamp: missing or not a number")?;
        Ok(HeartbeatReport {
            csc,
            salindex,
            lost,
            last,
        })
    }
}

/// Replaces the bare `NaN`, `Infinity` and `-Infinity` the replaced
/// system's producers (Python's `json`) write with `null`, outside strings.
pub fn without_non_finite(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut in_string = false;
    let mut escaped = false;
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        if in_string {
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => in_string = false,
                _ => {}
            }
            out.push(c);
            rest = &rest[c.len_utf8()..];
            continue;
        }
        if c == '"' {
            in_string = true;
        }
        let token = ["-Infinity", "Infinity", "NaN"]
            .into_iter()
            .find(|t| rest.starts_with(t));
        match token {
            Some(token) => {
                out.push_str("null");
                rest = &rest[token.len()..];
            }
            None => {
                out.push(c);
                rest = &rest[c.len_utf8()..];
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(json: serde_json::Value) -> Result<Subscription, String> {
        match parse(&json.to_string(), false)? {
            Message::Subscription(s) => Ok(s),
            other => panic!("not a subscription: {other:?}"),
        }
    }

    #[test]
    fn group_names_map_to_groups() {
        let s = request(serde_json::json!({"option":"subscribe","category":"event","csc":"ATDome","salindex":"0","stream":"summaryState"})).unwrap();
        assert_eq!(s.name, "event-ATDome-0-summaryState");
        assert!(matches!(s.group, Group::Stream(_)));
        let all = request(serde_json::json!({"option":"unsubscribe","category":"telemetry","csc":"all","salindex":"all","stream":"all"})).unwrap();
        assert_eq!(
            (all.subscribe, all.group),
            (false, Group::All(Category::Telemetry))
        );
        let manager = request(serde_json::json!({"option":"subscribe","category":"heartbeat","csc":"manager","salindex":0,"stream":"stream"})).unwrap();
        assert_eq!(manager.group, Group::Manager);
        let inert = request(serde_json::json!({"option":"subscribe","category":"cmd","csc":"ATDome","salindex":1,"stream":"all"})).unwrap();
        assert_eq!(inert.group, Group::Inert("cmd-ATDome-1-all".into()));
        for (bad, field) in [
            (
                serde_json::json!({"option":"subscribe","category":"event","csc":"A","salindex":"01","stream":"s"}),
                "salindex:",
            ),
            (
                serde_json::json!({"option":"subscribe","category":"event","csc":"A-b","salindex":1,"stream":"s"}),
                "csc:",
            ),
            (
                serde_json::json!({"option":"join","category":"event","csc":"A","salindex":1,"stream":"s"}),
                "option:",
            ),
            (
                serde_json::json!({"option":"subscribe","category":"event","csc":"A","salindex":1}),
                "stream: missing",
            ),
        ] {
            let e = request(bad).unwrap_err();
            assert!(e.starts_with(field), "{e}");
        }
    }

    #[test]
    fn messages_are_classified_and_errors_name_the_field_or_limit() {
        let big = format!(r#"{{"x":"{}"}}"#, "a".repeat(MAX_CLIENT_MESSAGE_LEN));
        assert!(parse(&big, false).unwrap_err().contains("MAX_CLIENT_MESSAGE_LEN"));
        assert!(parse("{nope", false).unwrap_err().starts_with("not JSON"));
        assert!(parse("[1]", false).unwrap_err().contains("JSON object"));
        assert!(parse(r#"{"category":"event","data":[]}"#, false)
            .unwrap_err()
            .contains("?password="));
        assert_eq!(
            parse(r#"{"action":"get_time_data","request_time":1}"#, false),
            Ok(Message::Time {
                request_time: serde_json::json!(1)
            })
        );
        assert_eq!(
            parse(r#"{"heartbeat":"Producer"}"#, true),
            Ok(Message::Heartbeat {
                component: "Producer".into(),
                timestamp: None
            })
        );
        let Ok(Message::Data(data)) = parse(
            r#"{"category":"event","data":[{"csc":"ATDome","salindex":"1","data":{"s":[{"x":{"value":NaN}}]}}],"producer_snd":NaN}"#,
            true,
        ) else {
            panic!("not data")
        };
        assert_eq!(data.producer_snd, None);
        assert_eq!(data.entries[0].salindex, 1);
        let (samples, list) = DataMessage::samples("s", &data.entries[0].streams[0].1).unwrap();
        assert!(list);
        assert_eq!(samples[0]["x"]["value"], Json::Null);
        assert!(parse(r#"{"category":"cmd","data":[]}"#, true)
            .unwrap_err()
            .starts_with("category:"));
        let many = format!(
            r#"{{"category":"event","data":[{}]}}"#,
            vec!["{}"; MAX_ENTRIES + 1].join(",")
        );
        assert!(parse(&many, true).unwrap_err().contains("MAX_ENTRIES"));
    }

    #[test]
    fn heartbeat_reports_name_their_fields() {
        let ok = serde_json::json!({"csc":"ATDome","salindex":0,"lost":0,"last_heartbeat_timestamp":5.5});
        assert_eq!(HeartbeatReport::parse(&ok).unwrap().last, 5.5);
        let bad = serde_json::json!({"csc":"ATDome","salindex":0,"lost":-1,"last_heartbeat_timestamp":5.5});
        assert!(HeartbeatReport::parse(&bad).unwrap_err().starts_with("lost:"));
    }

    #[test]
    fn python_non_finite_numbers_become_null_outside_strings() {
        assert_eq!(
            without_non_finite(r#"{"a":NaN,"b":[-Infinity,Infinity],"s":"NaN \" Infinity"}"#),
            r#"{"a":null,"b":[null,null],"s":"NaN \" Infinity"}"#
        );
    }
}
