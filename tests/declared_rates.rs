//! A producer samples each telemetry topic at the rate the topic declares
//! (the middleware's schema), not at `producer.telemetry_rate_hz`: an
//! operator watching M1M3's 50 Hz force data must see 50 values a second,
//! not the 10 Hz default, and a 5 Hz topic must not be polled at 10 Hz.
//!
//! The CSC here publishes every topic far faster (every 2 ms) than any
//! declared rate, so every sampling tick finds a new value; the rate each
//! topic was sampled at is then measured from the source timestamps of the
//! entries that reached Redis, over about two seconds, independent of how
//! fast the test ran.

use async_trait::async_trait;
use meridian_proto::{
    keys, Category, Csc, CscId, FieldSchema, Fields, StoredSample, StreamId, TopicId, TopicSchema, Value,
    ValueKind,
};
use meridian_sim::{CommandAcks, CscFeed, LatestTelemetry, Middleware, MiddlewareError, Published};
use meridian_store::{redis::RedisStore, Store};
use meridian_testkit::redis_server::RedisServer;
use meridian_testkit::system::{test_config, System};
use meridian_testkit::wait_for;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const CSC: &str = "Test:7";

/// Topic name and declared rate, in Hz: above, near and below the default of 10 Hz.
const TOPICS: &[(&str, f32)] = &[("forces", 50.0), ("mirror", 20.0), ("weather", 5.0)];

/// Entries of the slowest topic to measure over, after the first one:
/// about two seconds of it.
const SLOWEST_SAMPLES: usize = 11;

/// A CSC publishing every telemetry topic every 2 ms, declaring [`TOPICS`]' rates.
struct FastCsc {
    id: CscId,
    telemetry: Arc<LatestTelemetry>,
}

impl FastCsc {
    fn start(stop: CancellationToken) -> Arc<FastCsc> {
        let csc = Arc::new(FastCsc {
            id: CSC.parse().unwrap(),
            telemetry: Arc::new(LatestTelemetry::default()),
        });
        let (telemetry, salindex) = (csc.telemetry.clone(), csc.id.salindex);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(2));
            for n in 0i64.. {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tick.tick() => {}
                }
                for (topic, _) in TOPICS {
                    telemetry.publish(Published {
                        salindex,
                        topic: topic.to_string(),
                        category: Category::Telemetry,
                        source_ts: meridian_proto::unix_now(std::time::SystemTime::now()),
                        fields: vec![("n".into(), Value::Int(n))],
                    });
                }
            }
        });
        csc
    }
}

#[async_trait]
impl Middleware for FastCsc {
    fn subscribe(&self, csc: &CscId) -> Result<CscFeed, MiddlewareError> {
        if *csc != self.id {
            return Err(MiddlewareError::UnknownCsc(csc.clone()));
        }
        let schemas = TOPICS
            .iter()
            .map(|&(name, hz)| TopicSchema {
                name: name.into(),
                category: Category::Telemetry,
                rate_hz: Some(hz),
                fields: vec![FieldSchema {
                    name: "n".into(),
                    kind: ValueKind::Int,
                    count: None,
                    units: "unitless".into(),
                }],
            })
            .collect();
        // No events: the sender is dropped, the feed ends at once.
        let (_, events) = tokio::sync::mpsc::channel(1);
        Ok(CscFeed {
            schemas,
            events,
            telemetry: self.telemetry.clone(),
        })
    }

    fn subscribe_all_indices(&self, csc: &Csc) -> Result<CscFeed, MiddlewareError> {
        Err(MiddlewareError::UnknownCsc(CscId {
            csc: csc.clone(),
            salindex: 0,
        }))
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

fn key(topic: &str) -> String {
    keys::stream(&TopicId::new(CSC.parse().unwrap(), Category::Telemetry, topic).unwrap())
}

/// Source timestamps of every stored entry of `topic`, oldest first.
async fn source_times(store: &dyn Store, topic: &str) -> Vec<f64> {
    let entries = store
        .range(&key(topic), StreamId::ZERO, None, 100_000)
        .await
        .unwrap();
    entries
        .iter()
        .map(|e| {
            StoredSample::from_fields(&e.fields)
                .expect("a stored sample")
                .source_ts
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_topic_is_sampled_at_its_declared_rate() {
    let redis = RedisServer::start().unwrap();
    let store = Arc::new(RedisStore::connect(&redis.url()).await.unwrap());
    let mut system = System::start_with(store.clone(), test_config()).await.unwrap();
    let csc = FastCsc::start(system.stop_token());
    let default_hz = test_config().producer.telemetry_rate_hz;
    system.spawn_producer(csc, |c| c.producer.csc = CSC.into());

    wait_for(
        "two seconds of the slowest topic stored",
        Duration::from_secs(30),
        || {
            let store = store.clone();
            async move {
                let n = store.len(&key("weather")).await.unwrap();
                (n > SLOWEST_SAMPLES).then_some(())
            }
        },
    )
    .await
    .unwrap();
    system.stop().await;

    for &(topic, declared) in TOPICS {
        let times = source_times(store.as_ref(), topic).await;
        // The first value is taken whenever the producer connected: measure from the second.
        let times = &times[1..];
        let span = times[times.len() - 1] - times[0];
        let measured = (times.len() - 1) as f64 / span;
        let ratio = measured / f64::from(declared);
        println!(
            "{topic}: declared {declared} Hz, sampled at {measured:.2} Hz ({} values over {span:.3} s; default {default_hz} Hz)",
            times.len()
        );
        assert!(
            (0.85..=1.05).contains(&ratio),
            "{topic} declares {declared} Hz but was sampled at {measured:.2} Hz (default {default_hz} Hz)"
        );
    }
}
