//! A CSC whose events the test itself publishes, through the same
//! `Middleware` boundary the producer uses for real ones: tests count
//! exactly what went in and compare it with what reached Redis.

use async_trait::async_trait;
use meridian_proto::{Category, Csc, CscId, Fields, Value};
use meridian_sim::interface::Interface;
use meridian_sim::{CommandAcks, CscFeed, LatestTelemetry, Middleware, MiddlewareError, Published};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;

/// The publishing side: `publish(n)` sends the `scalars` event with `int0 = n`.
pub struct ManualCsc {
    id: CscId,
    /// Serves every index of `id.csc` (to a producer with `all_indices`), not the one instance `id`.
    all_indices: bool,
    /// The interface whose topics the feed declares.
    interface: &'static str,
    tx: mpsc::Sender<Published>,
    rx: Mutex<Option<mpsc::Receiver<Published>>>,
}

impl ManualCsc {
    /// One instance `csc` with the Test interface, fed by the test; its feed holds `capacity` events.
    pub fn new(csc: &str, capacity: usize) -> Arc<ManualCsc> {
        Self::build(csc.parse().expect("csc"), false, "Test", capacity)
    }

    /// Every index of `csc` (e.g. the Scripts a ScriptQueue starts), with
    /// that CSC's own interface, fed by the test through [`ManualCsc::publish_event`].
    pub fn all_indices(csc: &'static str, capacity: usize) -> Arc<ManualCsc> {
        let id = CscId::new(csc, 0).expect("csc");
        Self::build(id, true, csc, capacity)
    }

    fn build(id: CscId, all_indices: bool, interface: &'static str, capacity: usize) -> Arc<ManualCsc> {
        let (tx, rx) = mpsc::channel(capacity);
        Arc::new(ManualCsc {
            id,
            all_indices,
            interface,
            tx,
            rx: Mutex::new(Some(rx)),
        })
    }

    /// The feed of the CSC the producer asked for, once; `None` for any other.
    fn feed(&self, wanted: bool) -> Option<CscFeed> {
        if !wanted {
            return None;
        }
        let events = self.rx.lock().unwrap().take()?;
        Some(CscFeed {
            schemas: Interface::builtin(self.interface)
                .expect("builtin interface")
                .topics(),
            events,
            telemetry: Arc::new(LatestTelemetry::default()),
        })
    }

    /// Publishes event `topic` of instance `salindex` with `fields`; waits while the producer is behind.
    pub async fn publish_event(&self, salindex: u32, topic: &str, fields: Fields) {
        let event = Published {
            salindex,
            topic: topic.into(),
            category: Category::Event,
            source_ts: meridian_proto::unix_now(std::time::SystemTime::now()),
            fields,
        };
        self.tx
            .send(event)
            .await
            .expect("the producer stopped reading its CSC");
    }

    /// Publishes event `scalars` with `int0 = n`; waits while the producer is behind.
    pub async fn publish(&self, n: i64) {
        self.publish_padded(n, 0).await
    }

    /// Publishes event `scalars` with `int0 = n` and a `string0` of about
    /// `pad` more bytes (to fill buffers with fewer events).
    pub async fn publish_padded(&self, n: i64, pad: usize) {
        let fields: Fields = vec![
            ("int0".into(), Value::Int(n)),
            (
                "string0".into(),
                Value::Str(format!("event {n}{}", ".".repeat(pad))),
            ),
        ];
        self.publish_event(self.id.salindex, "scalars", fields).await
    }
}

#[async_trait]
impl Middleware for ManualCsc {
    fn subscribe(&self, csc: &CscId) -> Result<CscFeed, MiddlewareError> {
        self.feed(!self.all_indices && *csc == self.id)
            .ok_or_else(|| MiddlewareError::UnknownCsc(csc.clone()))
    }

    fn subscribe_all_indices(&self, csc: &Csc) -> Result<CscFeed, MiddlewareError> {
        self.feed(self.all_indices && *csc == self.id.csc).ok_or_else(|| {
            MiddlewareError::UnknownCsc(CscId {
                csc: csc.clone(),
                salindex: 0,
            })
        })
    }

    async fn command(
        &self,
        csc: &CscId,
        _: &str,
        _: Fields,
        _: Duration,
    ) -> Result<CommandAcks, MiddlewareError> {
        Err(MiddlewareError::UnknownCsc(csc.clone()))
    }

    fn command_schema(
        &self,
        csc: &CscId,
        _: &str,
    ) -> Result<meridian_sim::interface::CommandSchema, MiddlewareError> {
        Err(MiddlewareError::UnknownCsc(csc.clone()))
    }

    async fn ready(&self) -> Result<(), String> {
        Ok(())
    }
}

/// The `int0` values of the `scalars` events stored for `csc`, in stream order.
pub async fn stored_event_values(store: &dyn meridian_store::Store, csc: &str) -> Vec<i64> {
    let topic =
        meridian_proto::TopicId::new(csc.parse().expect("csc"), Category::Event, "scalars").expect("topic");
    let key = meridian_proto::keys::stream(&topic);
    let mut out = Vec::new();
    let mut after = meridian_proto::StreamId::ZERO;
    loop {
        let entries = store
            .range(&key, after, None, 10_000)
            .await
            .expect("store readable");
        let Some(last) = entries.last() else { break };
        after = last.id;
        for e in &entries {
            let stored = meridian_proto::StoredSample::from_fields(&e.fields).expect("a stored sample");
            let fields: serde_json::Value = serde_json::from_str(&stored.fields).expect("json");
            out.push(fields["int0"].as_i64().expect("int0"));
        }
    }
    out
}
