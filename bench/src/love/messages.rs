//! The messages of `love`'s load, the same for both servers: the replaced
//! system's producer messages (M1M3 telemetry, LOVE's field wrappers), its
//! browsers' subscribe requests, and the send time both servers pass
//! through to the browsers.
//!
//! Lag is producer → browser: every producer message carries its send time
//! in `producer_snd` (Unix seconds, UTC), which both servers pass through
//! unchanged into the `tracing` object of what they send to browsers
//! (LOVE's SHOW_TRACE_TIMESTAMPS, on by default there; Meridian's
//! compatibility endpoint always).

use crate::fanout::fast_topics;
use anyhow::bail;
use meridian_proto::{TopicSchema, ValueKind};
use serde_json::Value as Json;

/// The CSC whose telemetry the producers publish.
pub const CSC: &str = "MTM1M3";

/// The send time inside a data message's `tracing` object.
const SND_MARKER: &str = "\"producer_snd\":";

/// One telemetry stream the producers publish and every client subscribes to.
#[derive(Debug, Clone)]
pub struct Topic {
    pub salindex: u32,
    pub stream: String,
    /// The stream's payload as LOVE's producers send it: every field
    /// `{"value","dataType","units"}`, the simulator's values.
    pub payload: String,
}

impl Topic {
    /// LOVE's group name of the stream, as a browser subscribes to it.
    pub fn group(&self) -> String {
        format!("telemetry-{CSC}-{}-{}", self.salindex, self.stream)
    }

    /// A producer data message with this stream's payload, sent at `snd` (Unix seconds).
    pub fn message(&self, snd: f64) -> String {
        format!(
            r#"{{"category":"telemetry","data":[{{"csc":"{CSC}","salindex":{},"data":{{"{}":{}}}}}],"producer_snd":{snd:.6}}}"#,
            self.salindex, self.stream, self.payload
        )
    }
}

/// The topics of a run: those `meridian-bench fanout` publishes ([`fast_topics`]),
/// each with its payload as a LOVE producer sends it.
pub fn plan(count: usize) -> anyhow::Result<Vec<Topic>> {
    fast_topics(count)?
        .into_iter()
        .map(|(schema, salindex, fields)| {
            let values: Json = serde_json::from_str(&meridian_proto::value::fields_to_json(&fields))?;
            Ok(Topic {
                salindex,
                stream: schema.name.clone(),
                payload: wrap(&schema, &values),
            })
        })
        .collect()
}

/// LOVE's producer payload of one sample: each field of `schema` as
/// `{"value","dataType","units"}` (booleans are `Int` there).
pub fn wrap(schema: &TopicSchema, values: &Json) -> String {
    let mut out = serde_json::Map::new();
    for field in &schema.fields {
        let scalar = match field.kind {
            ValueKind::Float => "Float",
            ValueKind::Int | ValueKind::Bool => "Int",
            _ => "String",
        };
        let data_type = match field.count {
            Some(_) => format!("Array<{scalar}>"),
            None => scalar.to_string(),
        };
        let value = values.get(&field.name).cloned().unwrap_or(Json::Null);
        out.insert(
            field.name.clone(),
            serde_json::json!({"value": value, "dataType": data_type, "units": field.units}),
        );
    }
    Json::Object(out).to_string()
}

/// A browser's subscribe request for `group` (`telemetry-CSC-INDEX-stream`),
/// `salindex` as a string, as LOVE's frontend sends it.
pub fn subscribe_request(group: &str) -> anyhow::Result<String> {
    let mut parts = group.splitn(4, '-');
    let (Some(category), Some(csc), Some(salindex), Some(stream)) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        bail!("--subscribe: {group:?} is not category-csc-salindex-stream");
    };
    Ok(serde_json::json!({
        "option": "subscribe", "category": category, "csc": csc, "salindex": salindex, "stream": stream
    })
    .to_string())
}

/// `producer_snd` of a data message (`"producer_snd":` then a number,
/// with or without a space after the colon, as Python's json writes it).
pub fn producer_snd(message: &str) -> Option<f64> {
    let at = message.find(SND_MARKER)? + SND_MARKER.len();
    let rest = message[at..].trim_start();
    let end = rest
        .find(|c: char| !(c.is_ascii_digit() || matches!(c, '.' | '-' | '+' | 'e' | 'E')))
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn producer_messages_carry_wrapped_m1m3_fields_and_the_send_time() {
        let topics = plan(12).unwrap();
        assert_eq!(topics.len(), 12);
        let t = &topics[0];
        let message: Json = serde_json::from_str(&t.message(1700000000.25)).unwrap();
        assert_eq!(message["category"], "telemetry");
        assert_eq!(message["producer_snd"], 1700000000.25);
        let entry = &message["data"][0];
        assert_eq!(entry["csc"], CSC);
        assert_eq!(entry["salindex"], t.salindex);
        let fields = entry["data"][&t.stream].as_object().unwrap();
        assert!(!fields.is_empty());
        for (name, field) in fields {
            let data_type = field["dataType"].as_str().unwrap();
            assert!(
                ["Float", "Int", "String"].contains(&data_type) || data_type.starts_with("Array<"),
                "{name}: {data_type}"
            );
            assert!(
                field.get("value").is_some() && field["units"].is_string(),
                "{name}"
            );
        }
        // More topics than one instance has spread over instances 1, 2, …
        let instances: std::collections::BTreeSet<u32> =
            plan(60).unwrap().iter().map(|t| t.salindex).collect();
        assert!(instances.len() > 1 && instances.contains(&1));
    }

    #[test]
    fn subscribe_requests_are_loves_with_a_string_salindex() {
        let request: Json =
            serde_json::from_str(&subscribe_request("telemetry-MTM1M3-2-forceActuatorData").unwrap())
                .unwrap();
        assert_eq!(
            request,
            serde_json::json!({"option":"subscribe","category":"telemetry","csc":"MTM1M3","salindex":"2","stream":"forceActuatorData"})
        );
        assert!(subscribe_request("telemetry-MTM1M3").is_err());
        let t = &plan(1).unwrap()[0];
        assert_eq!(t.group(), format!("telemetry-MTM1M3-1-{}", t.stream));
    }

    #[test]
    fn send_time_is_read_as_either_server_writes_it() {
        // Meridian's compact JSON and Python's json.dumps (a space after the colon).
        let rust = r#"{"category":"telemetry","data":[],"subscription":"s","tracing":{"producer_snd":1700000000.125,"manager_rcv_from_producer":1}}"#;
        let python = r#"{"category": "telemetry", "tracing": {"producer_snd": 1700000000.5, "x": 2}}"#;
        assert_eq!(producer_snd(rust), Some(1700000000.125));
        assert_eq!(producer_snd(python), Some(1700000000.5));
        assert_eq!(producer_snd(r#"{"data":"Successfully subscribed to x"}"#), None);
        assert_eq!(producer_snd(r#"{"tracing":{"producer_snd":null}}"#), None);
    }
}
