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

/// What a browser asks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum ClientRequest {
    /// Start receiving a topic; the last stored sample comes first if there is one.
    Subscribe(TopicRef),
    /// Stop receiving a topic.
    Unsubscribe(TopicRef),
}

/// Why a browser's message was refused. The connection closes after the
/// error reply, so a client that sends garbage learns why.
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

/// Replies and notices to a browser (samples are written by [`sample_message`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage {
    Subscribed(TopicRef),
    Unsubscribed(TopicRef),
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

/// The JSON text of one sample for browsers:
/// `{"type":"sample","csc":…,"salindex":…,"category":…,"topic":…,"id":…,"source_ts":…,"ingest_ts":…,"fields":{…}}`.
/// `fields_json` is the JSON object stored at ingest.
pub fn sample_message(
    topic: &TopicId,
    id: StreamId,
    source_ts: f64,
    ingest_ts: f64,
    fields_json: &str,
) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(160 + fields_json.len());
    out.push_str(r#"{"type":"sample","csc":"#);
    // Names are checked ASCII identifiers (see topic.rs), safe to write unescaped.
    let _ = write!(
        out,
        r#""{}","salindex":{},"category":"{}","topic":"{}","id":"{}","source_ts":{},"ingest_ts":{},"fields":"#,
        topic.csc.csc,
        topic.csc.salindex,
        topic.category,
        topic.topic,
        id,
        json_f64(source_ts),
        json_f64(ingest_ts),
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
        assert!(matches!(r, ClientRequest::Subscribe(ref t) if t.topic == "scalars"));
        let err =
            ClientRequest::parse(r#"{"op":"subscribe","csc":"Test","salindex":1,"category":"telemetry"}"#)
                .unwrap_err();
        assert!(err.to_string().contains("topic"), "{err}");
        let err = ClientRequest::parse(&"x".repeat(MAX_CLIENT_MESSAGE_LEN + 1)).unwrap_err();
        assert!(err.to_string().contains("MAX_CLIENT_MESSAGE_LEN"), "{err}");
        assert!(ClientRequest::parse("\u{0}garbage").is_err());
    }

    #[test]
    fn sample_messages_are_valid_json() {
        let topic: TopicId = TopicId::new("Test:1".parse().unwrap(), Category::Telemetry, "scalars").unwrap();
        let text = sample_message(&topic, StreamId::new(5, 1), 1.5, f64::NAN, r#"{"a":[1,2]}"#);
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["id"], "5-1");
        assert_eq!(v["fields"]["a"][1], 2);
        assert_eq!(v["ingest_ts"], serde_json::Value::Null);
        assert_eq!(v["csc"], "Test");
    }
}
