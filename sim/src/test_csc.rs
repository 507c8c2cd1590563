//! The `Test` CSC: a small device with the observatory's `Test` interface
//! shape (scalars and arrays of each basic type), publishing telemetry at a
//! fixed rate and an event when its value changes. Unit and end-to-end tests
//! use it because every value it publishes is predictable: `int0` counts
//! telemetry ticks from 1.

use crate::csc::{SimCsc, STANDARD_COMMANDS};
use meridian_proto::{Category, CscId, FieldSchema, Fields, TopicSchema, Value, ValueKind};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Array length of the `arrays` topics, as in the interface definition.
pub const ARRAY_LEN: usize = 5;

/// Telemetry rate of a simulated Test CSC unless told otherwise, in Hz.
pub const DEFAULT_RATE_HZ: f64 = 20.0;

/// Every how many telemetry ticks the `scalars` event is published.
pub const EVENT_EVERY_TICKS: u64 = 10;

/// Commands of the Test CSC besides the standard ones.
pub const COMMANDS: &[&str] = &["setScalars", "setArrays", "fault", "wait"];

fn field(name: &str, kind: ValueKind, count: Option<u32>, units: &str) -> FieldSchema {
    FieldSchema {
        name: name.into(),
        kind,
        count,
        units: units.into(),
    }
}

/// The topics the Test CSC declares.
pub fn schemas(telemetry_rate_hz: f32) -> Vec<TopicSchema> {
    let scalars = vec![
        field("boolean0", ValueKind::Bool, None, "unitless"),
        field("int0", ValueKind::Int, None, "unitless"),
        field("double0", ValueKind::Float, None, "unitless"),
        field("string0", ValueKind::Str, None, "unitless"),
    ];
    let arrays = vec![
        field("int0", ValueKind::Int, Some(ARRAY_LEN as u32), "unitless"),
        field("double0", ValueKind::Float, Some(ARRAY_LEN as u32), "unitless"),
    ];
    let topic = |name: &str, category, rate_hz, fields: &Vec<FieldSchema>| TopicSchema {
        name: name.into(),
        category,
        rate_hz,
        fields: fields.clone(),
    };
    vec![
        topic("scalars", Category::Telemetry, Some(telemetry_rate_hz), &scalars),
        topic("arrays", Category::Telemetry, Some(telemetry_rate_hz), &arrays),
        topic("scalars", Category::Event, None, &scalars),
        topic(
            "heartbeat",
            Category::Event,
            None,
            &vec![field("heartbeat", ValueKind::Bool, None, "unitless")],
        ),
        topic(
            "summaryState",
            Category::Event,
            None,
            &vec![field("summaryState", ValueKind::Int, None, "unitless")],
        ),
        topic(
            "logLevel",
            Category::Event,
            None,
            &vec![field("level", ValueKind::Int, None, "unitless")],
        ),
    ]
}

/// The values of tick `n`: `int0 = n`, `double0 = n / 10`.
pub fn scalars(n: u64) -> Fields {
    vec![
        ("boolean0".into(), Value::Bool(n % 2 == 0)),
        ("int0".into(), Value::Int(n as i64)),
        ("double0".into(), Value::Float(n as f64 / 10.0)),
        ("string0".into(), Value::Str(format!("tick {n}"))),
    ]
}

fn arrays(n: u64) -> Fields {
    vec![
        (
            "int0".into(),
            Value::Ints((0..ARRAY_LEN as i64).map(|i| n as i64 + i).collect()),
        ),
        (
            "double0".into(),
            Value::Floats((0..ARRAY_LEN).map(|i| (n as f64 + i as f64).sin()).collect()),
        ),
    ]
}

/// Whether `command` is one the Test CSC knows.
pub fn has_command(command: &str) -> bool {
    STANDARD_COMMANDS.contains(&command) || COMMANDS.contains(&command)
}

/// Runs the Test CSC until `shutdown`: telemetry at `rate_hz`, the
/// `scalars` event every [`EVENT_EVERY_TICKS`] ticks, a heartbeat each second.
pub async fn run(csc: Arc<SimCsc>, rate_hz: f64, shutdown: CancellationToken) {
    let id: &CscId = &csc.id;
    tracing::info!(csc = %id, rate_hz, "simulated CSC started");
    csc.event(
        "summaryState",
        vec![("summaryState".into(), Value::Int(csc.summary_state() as i64))],
    )
    .await;
    csc.event("logLevel", vec![("level".into(), Value::Int(20))])
        .await;
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate_hz.max(0.001)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut heartbeat = tokio::time::interval(Duration::from_secs(1));
    let mut n = 0u64;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tick.tick() => {
                n += 1;
                csc.telemetry("scalars", scalars(n));
                csc.telemetry("arrays", arrays(n));
                if n % EVENT_EVERY_TICKS == 0 {
                    csc.event("scalars", scalars(n)).await;
                }
            }
            _ = heartbeat.tick() => {
                csc.event("heartbeat", vec![("heartbeat".into(), Value::Bool(true))]).await;
            }
        }
    }
    tracing::info!(csc = %id, "simulated CSC stopped");
}
