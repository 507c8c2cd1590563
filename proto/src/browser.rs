//! JSON messages of the native WebSocket protocol (`/ws`), documented in
//! `docs/protocol.md`.
//!
//! Requests are small JSON objects with an `op`; replies and data carry a
//! `type`. Sample messages are written by splicing the fields JSON stored at
//! ingest ([`sample_message`]), so a frontend encodes each sample once however
//! many browsers receive it.

use crate::stream_id::StreamId;
use crate::topic::{Category, CscId, TopicId};
use serde::{Deserialize, Serialize};

/// Largest request a browser may send, in bytes; requests are a few hundred bytes.
pub const MAX_CLIENT_MESSAGE_LEN: usize = 64 * 1024;

/// A topic as a browser names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicRef {
    pub csc: String,
    pub salindex: u32,
    pub category: Category,
    pub topic: String,
}

impl TopicRef {
    pub fn to_topic_id(&self) -> Result<TopicId, crate::NameError> {
        TopicId::new(CscId::new(&self.csc, self.salindex)?, self.category, &self.topic)
    }
}

impl From<&TopicId> for TopicRef {
    fn from(t: &TopicId) -> Self {
        TopicRef {
            csc: t.csc.csc.to_string(),
            salindex: t.csc.salindex,
            category: t.category,
            topic: t.topic.clone(),
        }
    }
}

/// What a browser subscribes to: `csc` is required; a missing `salindex`,
/// `category` or `topic` means "all" (every index, both categories, every topic).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SelectorRef {
    pub csc: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub salindex: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<Category>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
    /// Recover: every entry after this stream id, then live samples.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
}

/// What a browser asks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum ClientRequest {
    /// The token, as the first message, when the URL carries none.
    Auth { token: String },
    /// Start receiving topics; the last stored sample of each comes first
    /// (or, with `after`, every entry after that id).
    Subscribe(SelectorRef),
    /// Stop receiving topics.
    Unsubscribe(SelectorRef),
    /// Past samples of one topic: the `last` N, or those `since` a Unix time.
    History {
        #[serde(flatten)]
        topic: TopicRef,
        #[serde(default)]
        last: Option<usize>,
        #[serde(default)]
        since: Option<f64>,
    },
    /// A plot's backfill: `fields` of one topic from `since` to `until`
    /// (Unix seconds; default now), decimated on the server to at most
    /// `points` buckets with the min and max of each, so spikes survive.
    /// An array element is named `field[i]`. The reply's `last_id` is the
    /// newest entry covered: subscribe with it as `after` to continue live
    /// with no gap and no overlap.
    Plot {
        #[serde(flatten)]
        topic: TopicRef,
        fields: Vec<String>,
        since: f64,
        #[serde(default)]
        until: Option<f64>,
        #[serde(default)]
        points: Option<usize>,
        /// Echoed in the reply, to match replies to requests.
        #[serde(default)]
        id: Option<u64>,
    },
    /// The server's UTC and TAI, echoing `request_time`.
    Time {
        #[serde(default)]
        request_time: Option<f64>,
    },
}

/// Why a browser's message was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("message is {len} bytes, the limit is MAX_CLIENT_MESSAGE_LEN = {max}")]
    TooLarge { len: usize, max: usize },
    #[error("message is not a valid request: {0}")]
    Malformed(String),
    #[error("binary frames are not accepted on this endpoint; send JSON text")]
    Binary,
}

impl ClientRequest {
    pub fn parse(text: &str) -> Result<ClientRequest, RequestError> {
        if text.len() > MAX_CLIENT_MESSAGE_LEN {
            return Err(RequestError::TooLarge {
                len: text.len(),
                max: MAX_CLIENT_MESSAGE_LEN,
            });
        }
        serde_json::from_str(text).map_err(|e| RequestError::Malformed(e.to_string()))
    }
}

/// What a token allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// Watch only.
    Read,
    /// Watch and send commands.
    Command,
}

/// How a connection's data frames are encoded, chosen by `?format=` in
/// its URL. Replies and notices are JSON text either way.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FrameFormat {
    /// Batch frames as JSON text (the default).
    #[default]
    Json,
    /// Batch frames as binary MessagePack frames of the same shape
    /// ([`crate::msgpack`]): about half the bytes for float telemetry.
    Msgpack,
}

impl FrameFormat {
    /// The name `?format=` takes.
    pub fn name(self) -> &'static str {
        match self {
            FrameFormat::Json => "json",
            FrameFormat::Msgpack => "msgpack",
        }
    }
}

impl std::str::FromStr for FrameFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<FrameFormat, String> {
        match s {
            "json" => Ok(FrameFormat::Json),
            "msgpack" => Ok(FrameFormat::Msgpack),
            other => Err(format!(
                "format: unknown frame format {other:?}; use \"json\" or \"msgpack\""
            )),
        }
    }
}

/// Replies and notices to a browser (samples travel in batch frames, see [`batch_frame`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage {
    /// First message of a connection.
    Welcome {
        scope: Scope,
        tick_ms: u64,
        server: String,
        /// How this connection's batch frames are encoded.
        #[serde(default)]
        format: FrameFormat,
    },
    /// The topics a subscription covers now; `waiting`: the topic (or more
    /// topics of a wildcard) will be added when its producer declares it.
    Subscribed {
        topics: Vec<TopicRef>,
        waiting: bool,
    },
    Unsubscribed {
        topics: Vec<TopicRef>,
    },
    /// Data between `after` and `resumed` (a stream id) is no longer stored: it was missed.
    Gap {
        topic: TopicRef,
        after: String,
        resumed: String,
    },
    /// UTC and TAI as Unix seconds; `tai_utc` is TAI − UTC (leap seconds).
    Time {
        utc: f64,
        tai: f64,
        tai_utc: u32,
        request_time: Option<f64>,
    },
    /// Reconnect (to any frontend) after `after_ms`, and recover with each topic's last id.
    Reconnect {
        reason: String,
        after_ms: u64,
    },
    /// A subscribed telemetry topic went silent for `frontend.stale_periods`
    /// periods of its declared rate (`stale: true`, with the source time of
    /// its last sample), or samples resumed (`stale: false`).
    Stale {
        topic: TopicRef,
        stale: bool,
        #[serde(skip_serializing_if = "Option::is_none")]
        since: Option<f64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        period_s: Option<f64>,
    },
    /// The answer to a `plot` request: bucket start times `t`, and per
    /// bucket the min and max of each field (`null` where a bucket has no
    /// number for it).
    Plot {
        topic: TopicRef,
        fields: Vec<String>,
        t: Vec<f64>,
        min: Vec<Vec<Option<f64>>>,
        max: Vec<Vec<Option<f64>>>,
        last_id: Option<String>,
        /// False when `frontend.max_replay` entries were read before `until`.
        complete: bool,
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
    },
    /// A request failed. `fatal` says the server is closing the connection.
    Error {
        message: String,
        fatal: bool,
    },
}

impl ServerMessage {
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// The `gap` notice: entries of `topic` after `after` up to `resumed` are no
/// longer stored (trimmed by retention, or past `frontend.max_replay`), so a
/// recovering browser knows what it missed. Here, not in one frontend module,
/// because the hub's replay and every session send it.
pub fn gap_notice(topic: &TopicId, after: StreamId, resumed: StreamId) -> String {
    ServerMessage::Gap {
        topic: TopicRef::from(topic),
        after: after.to_string(),
        resumed: resumed.to_string(),
    }
    .to_json()
}

/// The `reconnect` hint: the server closes the connection after `after`
/// (drain or rebalancing); the browser reconnects to any frontend and
/// recovers each topic from its last id.
pub fn reconnect_notice(reason: &str, after: std::time::Duration) -> String {
    ServerMessage::Reconnect {
        reason: reason.to_string(),
        after_ms: after.as_millis() as u64,
    }
    .to_json()
}

/// The `stale` notice of a telemetry topic: silent for longer than its
/// declared period allows (`stale`, with the source time `since` of its
/// last sample and the declared `period_s`), or samples resumed (`!stale`:
/// `since` and `period_s` are left out).
pub fn stale_notice(topic: &TopicId, stale: bool, since: Option<f64>, period_s: Option<f64>) -> String {
    ServerMessage::Stale {
        topic: TopicRef::from(topic),
        stale,
        since: since.filter(|_| stale),
        period_s: period_s.filter(|_| stale),
    }
    .to_json()
}

/// The JSON text of a data frame: `{"type":"batch","samples":[…],"lost":[…]}`.
/// `samples` are sample objects ([`sample_message`]) spliced as they are;
/// `lost` names each topic whose events were dropped for this slow browser,
/// with the first lost id to recover from.
pub fn batch_frame<'a>(samples: impl Iterator<Item = &'a str>, lost: &[(TopicId, StreamId)]) -> String {
    let mut out = String::with_capacity(4096);
    out.push_str(r#"{"type":"batch","samples":["#);
    for (i, s) in samples.enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(s);
    }
    out.push_str(r#"],"lost":["#);
    for (i, (topic, from)) in lost.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let t = TopicRef::from(topic);
        let _ = std::fmt::Write::write_fmt(
            &mut out,
            format_args!(
                r#"{{"csc":"{}","salindex":{},"category":"{}","topic":"{}","from_id":"{}"}}"#,
                t.csc, t.salindex, t.category, t.topic, from
            ),
        );
    }
    out.push_str("]}");
    out
}

/// The JSON text of one sample for browsers:
/// `{"type":"sample","csc":…,"salindex":…,"category":…,"topic":…,"id":…,"source_ts":…,"ingest_ts":…,"frontend_ts":…,"fields":{…}}`.
/// `fields_json` is the JSON object stored at ingest; the three times
/// (CSC, ingest, frontend; Unix seconds) give the lag of each hop.
pub fn sample_message(
    topic: &TopicId,
    id: StreamId,
    source_ts: f64,
    ingest_ts: f64,
    frontend_ts: f64,
    fields_json: &str,
) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(160 + fields_json.len());
    out.push_str(r#"{"type":"sample","csc":"#);
    // Names are checked ASCII identifiers (see topic.rs), safe to write unescaped.
    let _ = write!(
        out,
        r#""{}","salindex":{},"category":"{}","topic":"{}","id":"{}","source_ts":{},"ingest_ts":{},"frontend_ts":{},"fields":"#,
        topic.csc.csc,
        topic.csc.salindex,
        topic.category,
        topic.topic,
        id,
        json_f64(source_ts),
        json_f64(ingest_ts),
        json_f64(frontend_ts),
    );
    out.push_str(fields_json);
    out.push('}');
    out
}

fn json_f64(v: f64) -> String {
    if v.is_finite() {
        format!("{v}")
    } else {
        "null".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_parse_and_errors_name_the_field() {
        let r = ClientRequest::parse(
            r#"{"op":"subscribe","csc":"Test","salindex":1,"category":"telemetry","topic":"scalars"}"#,
        )
        .unwrap();
        assert!(matches!(r, ClientRequest::Subscribe(ref t) if t.topic.as_deref() == Some("scalars")));
        let all = ClientRequest::parse(r#"{"op":"subscribe","csc":"MTM1M3","after":"5-0"}"#).unwrap();
        assert!(matches!(all, ClientRequest::Subscribe(ref t) if t.topic.is_none() && t.after.is_some()));
        let err =
            ClientRequest::parse(r#"{"op":"subscribe","salindex":1,"category":"telemetry"}"#).unwrap_err();
        assert!(err.to_string().contains("csc"), "{err}");
        let err = ClientRequest::parse(r#"{"op":"subscribe","csc":"Test","topik":"x"}"#).unwrap_err();
        assert!(err.to_string().contains("topik"), "{err}");
        let err = ClientRequest::parse(&"x".repeat(MAX_CLIENT_MESSAGE_LEN + 1)).unwrap_err();
        assert!(err.to_string().contains("MAX_CLIENT_MESSAGE_LEN"), "{err}");
        assert!(ClientRequest::parse("\u{0}garbage").is_err());
    }

    #[test]
    fn notices_have_the_bytes_browsers_parse() {
        let topic = TopicId::new("MTMount:0".parse().unwrap(), Category::Event, "heartbeat").unwrap();
        let t = r#"{"csc":"MTMount","salindex":0,"category":"event","topic":"heartbeat"}"#;
        assert_eq!(
            gap_notice(&topic, StreamId::new(5, 1), StreamId::new(9, 0)),
            format!(r#"{{"type":"gap","topic":{t},"after":"5-1","resumed":"9-0"}}"#)
        );
        assert_eq!(
            reconnect_notice(
                "rebalancing: reconnect to any frontend",
                std::time::Duration::from_micros(1_500_900)
            ),
            r#"{"type":"reconnect","reason":"rebalancing: reconnect to any frontend","after_ms":1500}"#
        );
        assert_eq!(
            stale_notice(&topic, true, Some(1.5), Some(0.25)),
            format!(r#"{{"type":"stale","topic":{t},"stale":true,"since":1.5,"period_s":0.25}}"#)
        );
        assert_eq!(
            stale_notice(&topic, false, Some(1.5), Some(0.25)),
            format!(r#"{{"type":"stale","topic":{t},"stale":false}}"#)
        );
    }

    #[test]
    fn sample_messages_are_valid_json() {
        let topic: TopicId = TopicId::new("Test:1".parse().unwrap(), Category::Telemetry, "scalars").unwrap();
        let text = sample_message(&topic, StreamId::new(5, 1), 1.5, f64::NAN, 2.0, r#"{"a":[1,2]}"#);
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["id"], "5-1");
        assert_eq!(v["fields"]["a"][1], 2);
        assert_eq!(v["ingest_ts"], serde_json::Value::Null);
        assert_eq!(v["csc"], "Test");
    }
}
