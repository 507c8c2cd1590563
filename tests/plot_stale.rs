//! Plot backfill (a field over a time window, decimated on the server with
//! min/max per bucket, then live with no gap or overlap) and staleness
//! notices (a telemetry topic silent for `frontend.stale_periods` periods
//! of its declared rate), as a browser sees them.

use meridian_proto::{keys, unix_now, Category, StoredSample, TopicId};
use meridian_store::{memory::MemoryStore, redis::RedisStore, Append, Store};
use meridian_testkit::browser::Browser;
use meridian_testkit::redis_server::RedisServer;
use meridian_testkit::system::{test_config, System};
use serde_json::Value;
use std::sync::Arc;
use std::time::SystemTime;

fn topic() -> TopicId {
    TopicId::new("Test:1".parse().unwrap(), Category::Telemetry, "scalars").unwrap()
}

/// Declares the topic at `rate_hz`, as a producer's handshake would.
async fn declare(store: &dyn Store, rate_hz: f64) {
    store
        .hash_set(
            keys::CATALOG,
            &[(topic().catalog_field(), rate_hz.to_string())],
            None,
        )
        .await
        .unwrap();
}

/// Stores one sample published at `src` with `fields`, as an ingest manager would.
async fn store_sample(store: &dyn Store, src: f64, fields: &str) -> String {
    let ids = store
        .append(&[Append {
            key: keys::stream(&topic()),
            maxlen: 100_000,
            fields: StoredSample {
                seq: None,
                source_ts: src,
                ingest_ts: src,
                salindex: None,
                upto: None,
                fields: fields.to_string(),
            }
            .into_fields(),
        }])
        .await
        .unwrap();
    ids[0].to_string()
}

fn numbers(v: &Value) -> Vec<Option<f64>> {
    v.as_array().unwrap().iter().map(Value::as_f64).collect()
}

#[tokio::test]
async fn a_plot_backfill_keeps_spikes_and_continues_live_without_gap_or_overlap() {
    let redis = RedisServer::start().unwrap();
    let store: Arc<dyn Store> = Arc::new(RedisStore::connect(&redis.url()).await.unwrap());
    let system = System::start_with(store.clone(), test_config()).await.unwrap();
    declare(&*store, 100.0).await;
    // 1000 samples over 10 s of source time; one spike at sample 500.
    let t0 = unix_now(SystemTime::now()).floor();
    let mut last = String::new();
    for i in 0..1000 {
        let x = if i == 500 { 1e6 } else { f64::from(i) };
        let fields = format!(r#"{{"x":{x},"a":[{i},{}],"flag":{}}}"#, -i, i % 2 == 0);
        // Mid-step times: no sample sits on a bucket edge.
        last = store_sample(&*store, t0 + f64::from(i) * 0.01 + 0.005, &fields).await;
    }
    let mut browser = Browser::connect(&system.ws_url()).await.unwrap();
    browser
        .send_json(&serde_json::json!({
            "op": "plot", "csc": "Test", "salindex": 1, "category": "telemetry", "topic": "scalars",
            "fields": ["x", "a[1]"], "since": t0, "until": t0 + 10.0, "points": 100, "id": 7
        }))
        .await
        .unwrap();
    let plot = browser.next_of("plot").await.unwrap();
    assert_eq!(plot["id"], 7);
    assert_eq!(plot["complete"], true);
    let t = plot["t"].as_array().unwrap();
    assert_eq!(t.len(), 100, "one bucket per 0.1 s, each with 10 samples");
    let (min, max) = (plot["min"].as_array().unwrap(), plot["max"].as_array().unwrap());
    // Bucket 50 holds samples 500..509: the spike survives as its max.
    assert_eq!(numbers(&max[50]), [Some(1e6), Some(-500.0)]);
    assert_eq!(numbers(&min[50]), [Some(501.0), Some(-509.0)]);
    assert_eq!(numbers(&min[0]), [Some(0.0), Some(-9.0)]);
    assert_eq!(plot["last_id"], last.as_str(), "the newest entry of the window");

    // Live from the plot's last id: the next sample, once, and nothing older.
    let after = plot["last_id"].as_str().unwrap().to_string();
    browser
        .subscribe_after("Test:1", "telemetry", "scalars", &after)
        .await
        .unwrap();
    browser.next_of("subscribed").await.unwrap();
    let next = store_sample(&*store, t0 + 10.5, r#"{"x":-1,"a":[0,0],"flag":false}"#).await;
    let sample = browser.next_sample().await.unwrap();
    assert_eq!(
        sample["id"],
        next.as_str(),
        "no overlap with the backfill, no gap"
    );
    system.stop().await;
}

#[tokio::test]
async fn a_bad_plot_request_names_the_field_and_keeps_the_connection() {
    let system = System::start_with(Arc::new(MemoryStore::new()), test_config())
        .await
        .unwrap();
    let mut browser = Browser::connect(&system.ws_url()).await.unwrap();
    let request = |extra: Value| {
        let mut r = serde_json::json!({
            "op": "plot", "csc": "Test", "salindex": 1, "category": "telemetry", "topic": "scalars",
            "fields": ["x"], "since": 1.0, "until": 2.0
        });
        r.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        r
    };
    for (extra, expected) in [
        (serde_json::json!({"points": 1_000_000}), "MAX_POINTS"),
        (serde_json::json!({"fields": []}), "MAX_FIELDS"),
        (serde_json::json!({"since": 5.0}), "since"),
        (serde_json::json!({"fields": ["x;y"]}), "fields"),
    ] {
        browser.send_json(&request(extra)).await.unwrap();
        let error = browser.next_of("error").await.unwrap();
        assert!(error["message"].as_str().unwrap().contains(expected), "{error}");
        assert_eq!(error["fatal"], false);
    }
    system.stop().await;
}

#[tokio::test]
async fn a_silent_topic_is_reported_stale_and_fresh_again_when_samples_resume() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let mut config = test_config();
    config.frontend.stale_periods = 2;
    config.frontend.stale_min_ms = 200;
    let system = System::start_with(store.clone(), config).await.unwrap();
    // Declared at 10 Hz: stale after max(2 × 100 ms, 200 ms) of silence.
    declare(&*store, 10.0).await;
    let first = store_sample(&*store, unix_now(SystemTime::now()), r#"{"x":1}"#).await;
    let mut browser = Browser::connect(&system.ws_url()).await.unwrap();
    browser.subscribe("Test:1", "telemetry", "scalars").await.unwrap();
    assert_eq!(browser.next_sample().await.unwrap()["id"], first.as_str());
    // Nothing more is stored: the browser is told (the catalog's rate is
    // learnt within a second, then 200 ms of silence).
    let stale = browser.next_of("stale").await.unwrap();
    assert_eq!(stale["stale"], true, "{stale}");
    assert_eq!(stale["topic"]["topic"], "scalars");
    assert_eq!(stale["period_s"], 0.1);
    assert!(stale["since"].as_f64().is_some());
    // A new sample clears it, and arrives.
    let second = store_sample(&*store, unix_now(SystemTime::now()), r#"{"x":2}"#).await;
    let fresh = browser.next_of("stale").await.unwrap();
    assert_eq!(fresh["stale"], false, "{fresh}");
    assert_eq!(browser.next_sample().await.unwrap()["id"], second.as_str());
    system.stop().await;
}
