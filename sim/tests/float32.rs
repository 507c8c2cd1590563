//! Simulated fields keep the site's float widths: where the interface says
//! `float` the value is a 32-bit float, where it says `double` a 64-bit one.
//! Through the path a sample takes to a browser (fields as stored JSON,
//! then proto's MessagePack encoder for binary frames) a `float` becomes a
//! 4-byte float and a `double` stays 8 bytes.
//!
//! A user would notice a failure as binary frames larger than the
//! observatory's would be (every `float` written in 8 bytes), and as
//! simulated values more precise than the real CSC's.

use meridian_proto::msgpack::{self, Value as Packed};
use meridian_proto::value::fields_to_json;
use meridian_proto::{Category, CscId, Fields, TopicSchema, Value};
use meridian_sim::interface::{Interface, Part};
use meridian_sim::signal::fields_for;
use meridian_sim::{Middleware, Published, SimMiddleware, SimOptions};
use std::collections::HashMap;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const DEADLINE: Duration = Duration::from_secs(20);

/// The fields as a browser asking for binary frames gets them: stored JSON
/// transcoded to MessagePack by proto, then decoded as a map.
fn as_browser_gets_them(fields: &Fields) -> Packed {
    let mut out = Vec::new();
    msgpack::transcode_json(&fields_to_json(fields), &mut out).expect("stored JSON transcodes");
    msgpack::decode(&out).expect("valid MessagePack")
}

fn value<'a>(fields: &'a Fields, name: &str) -> &'a Value {
    &fields
        .iter()
        .find(|(k, _)| k == name)
        .unwrap_or_else(|| panic!("no field {name}: {fields:?}"))
        .1
}

/// Each number of a float field, scalar or array.
fn floats(v: &Value) -> Vec<f64> {
    match v {
        Value::Float(x) => vec![*x],
        Value::Floats(xs) => xs.clone(),
        other => panic!("not a float field: {other:?}"),
    }
}

/// Each number of an encoded field, as the MessagePack type it was written in.
fn packed(v: &Packed) -> Vec<Packed> {
    match v {
        Packed::Array(items) => items.clone(),
        other => vec![other.clone()],
    }
}

/// `float` field `name`: every value is f32-exact and written as a 4-byte float.
fn assert_32_bit(fields: &Fields, encoded: &Packed, name: &str) {
    let values = floats(value(fields, name));
    let written = packed(encoded.get(name).expect("encoded field"));
    assert_eq!(values.len(), written.len());
    for (v, w) in values.iter().zip(&written) {
        assert_eq!(*v, *v as f32 as f64, "{name} = {v} is not a 32-bit float");
        assert_eq!(
            *w,
            Packed::F32(*v as f32),
            "{name} = {v} is not written in 4 bytes"
        );
    }
}

/// `double` field `name`: written as an 8-byte float with its whole value.
fn assert_64_bit(fields: &Fields, encoded: &Packed, name: &str) {
    let values = floats(value(fields, name));
    let written = packed(encoded.get(name).expect("encoded field"));
    for (v, w) in values.iter().zip(&written) {
        assert_eq!(*w, Packed::F64(*v), "{name} = {v} is not written in 8 bytes");
    }
}

async fn started() -> (SimMiddleware, CscId, CancellationToken) {
    let options = SimOptions {
        start_enabled: true,
        ..SimOptions::default()
    };
    let sim = SimMiddleware::with_options(options, None);
    let stop = CancellationToken::new();
    let id: CscId = "Test:1".parse().unwrap();
    sim.start(&id, stop.clone()).unwrap();
    (sim, id, stop)
}

/// The interface marks `float` and `double` apart, for topics and for generics.
#[test]
fn the_interface_keeps_which_floats_are_32_bit() {
    let test = Interface::builtin("Test").expect("builtin Test");
    for part in [Part::Telemetry, Part::Event] {
        for topic in ["scalars", "arrays"] {
            assert!(
                test.float32.contains(part, topic, "float0"),
                "{part:?} {topic}.float0"
            );
            assert!(
                !test.float32.contains(part, topic, "double0"),
                "{part:?} {topic}.double0"
            );
        }
    }
    assert!(test.float32.contains(Part::Command, "setScalars", "float0"));
    assert!(!test.float32.contains(Part::Command, "wait", "duration"));
    let m1m3 = Interface::builtin("MTM1M3").expect("builtin MTM1M3");
    assert!(m1m3
        .float32
        .contains(Part::Telemetry, "forceActuatorData", "zForce"));
    assert!(!m1m3
        .float32
        .contains(Part::Telemetry, "forceActuatorData", "timestamp"));
    // A generic event merged in: logMessage's timestamp is a double.
    assert!(test.event("logMessage").is_some());
    assert_eq!(test.float32.of(Part::Event, "logMessage"), None);
}

/// Telemetry: the random `float0` values (scalar and array) are 32-bit, the
/// random `double0` array keeps 64 bits.
#[tokio::test]
async fn simulated_float_telemetry_is_32_bit_and_double_64() {
    let (sim, id, stop) = started().await;
    let feed = sim.subscribe(&id).unwrap();
    let mut seen = HashMap::new();
    let mut latest: HashMap<String, Published> = HashMap::new();
    tokio::time::timeout(DEADLINE, async {
        while !(latest.contains_key("scalars") && latest.contains_key("arrays")) {
            let mut changed = Vec::new();
            feed.telemetry.changed_since(&mut seen, &mut changed);
            if changed.is_empty() {
                feed.telemetry.wait_changed().await;
            }
            latest.extend(changed.into_iter().map(|p| (p.topic.clone(), p)));
        }
    })
    .await
    .expect("Test:1 publishes scalars and arrays telemetry");

    let scalars = &latest["scalars"].fields;
    assert_32_bit(scalars, &as_browser_gets_them(scalars), "float0");
    let arrays = &latest["arrays"].fields;
    let encoded = as_browser_gets_them(arrays);
    assert_32_bit(arrays, &encoded, "float0");
    // Random waves: a double that happened to be f32-exact would prove nothing.
    let doubles = floats(value(arrays, "double0"));
    assert!(
        doubles.iter().all(|d| *d != *d as f32 as f64),
        "double0 {doubles:?} lost precision"
    );
    assert_64_bit(arrays, &encoded, "double0");
    stop.cancel();
    sim.stopped().await;
}

/// Events: a command's parameters published as the `scalars` event; 0.1 as
/// a `float` is the f32 nearest 0.1, as a `double` it stays 0.1.
#[tokio::test]
async fn a_simulated_float_event_field_is_32_bit_and_a_double_64() {
    let (sim, id, stop) = started().await;
    let mut feed = sim.subscribe(&id).unwrap();
    // Every parameter is required: zeros, but 0.1 for the two floats.
    let interface = Interface::builtin("Test").expect("builtin Test");
    let schema = interface.command("setScalars").expect("setScalars");
    let params = fields_for(
        &TopicSchema {
            name: schema.name.clone(),
            category: Category::Event,
            rate_hz: None,
            fields: schema.params.clone(),
        },
        &[("float0", Value::Float(0.1)), ("double0", Value::Float(0.1))],
    );
    let mut acks = sim.command(&id, "setScalars", params, DEADLINE).await.unwrap();
    while let Some(ack) = acks.next().await {
        assert_ne!(ack.state, meridian_sim::AckState::Failed, "{ack:?}");
    }
    let event = tokio::time::timeout(DEADLINE, async {
        loop {
            let e = feed.events.recv().await.expect("feed open");
            if e.topic == "scalars" && *value(&e.fields, "double0") == Value::Float(0.1) {
                return e;
            }
        }
    })
    .await
    .expect("the scalars event of setScalars");
    assert_eq!(*value(&event.fields, "float0"), Value::Float(0.1_f32 as f64));
    let encoded = as_browser_gets_them(&event.fields);
    assert_32_bit(&event.fields, &encoded, "float0");
    assert_64_bit(&event.fields, &encoded, "double0");
    stop.cancel();
    sim.stopped().await;
}
