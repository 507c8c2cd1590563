//! A sample published by a CSC reaches a browser with its fields intact,
//! through a producer, QUIC, the ingest manager, the store and the frontend
//! manager — on Redis and on the embedded in-memory store.
//!
//! If this fails, an operator's browser shows nothing, or wrong values.

use meridian_proto::{keys, Category, TopicId};
use meridian_store::{memory::MemoryStore, redis::RedisStore, Store};
use meridian_testkit::browser::Browser;
use meridian_testkit::redis_server::RedisServer;
use meridian_testkit::system::System;
use meridian_testkit::wait_for;
use serde_json::Value;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Telemetry rate of the simulated Test CSC in these tests, Hz.
const RATE_HZ: f64 = 200.0;

/// Checks one Test CSC `scalars` sample against the values the simulator
/// derives from its tick counter, so a corrupted field cannot pass.
fn assert_scalars_intact(sample: &Value) {
    let f = &sample["fields"];
    let n = f["int0"]
        .as_i64()
        .unwrap_or_else(|| panic!("int0 missing: {sample}"));
    assert_eq!(f["double0"].as_f64(), Some(n as f64 / 10.0), "{sample}");
    assert_eq!(
        f["string0"].as_str(),
        Some(format!("tick {n}").as_str()),
        "{sample}"
    );
    assert_eq!(f["boolean0"].as_bool(), Some(n % 2 == 0), "{sample}");
    assert!(
        sample["source_ts"].as_f64().unwrap() <= sample["ingest_ts"].as_f64().unwrap() + 0.001,
        "{sample}"
    );
}

async fn sample_reaches_a_browser(store: Arc<dyn Store>, label: &str) {
    let system = System::start(store, &["Test:1"], RATE_HZ).await.unwrap();
    let mut browser = Browser::connect(&system.ws_url()).await.unwrap();
    browser.subscribe("Test:1", "telemetry", "scalars").await.unwrap();
    browser.subscribe("Test:1", "telemetry", "arrays").await.unwrap();

    let first = browser.next_json().await.unwrap();
    assert_eq!(first["type"], "subscribed", "{first}");
    // Confirmed at once: with its topic, or waiting for the producer's handshake.
    assert!(
        first["topics"][0]["topic"] == "scalars" || first["waiting"] == true,
        "{first}"
    );

    let start = Instant::now();
    let mut last_id: Option<(u64, u64)> = None;
    let mut last_n = 0;
    let (mut scalars, mut arrays) = (0u32, 0u32);
    // Telemetry reaches a browser conflated to one value per topic per frame
    // (`frontend.tick_ms`), so it sees fewer than the 200 Hz published.
    while scalars < 60 || arrays < 10 {
        let sample = browser.next_sample().await.unwrap();
        assert_eq!(sample["csc"], "Test");
        assert_eq!(sample["salindex"], 1);
        assert_eq!(sample["category"], "telemetry");
        match sample["topic"].as_str() {
            Some("scalars") => {
                assert_scalars_intact(&sample);
                let n = sample["fields"]["int0"].as_i64().unwrap();
                assert!(n > last_n, "samples out of order: {n} after {last_n}");
                last_n = n;
                let id = sample["id"].as_str().unwrap();
                let (ms, seq) = id.split_once('-').unwrap();
                let id = (ms.parse().unwrap(), seq.parse().unwrap());
                assert!(Some(id) > last_id, "stream ids must increase");
                last_id = Some(id);
                scalars += 1;
            }
            Some("arrays") => {
                let ints = sample["fields"]["int0"].as_array().unwrap();
                assert_eq!(ints.len(), 5, "{sample}");
                let base = ints[0].as_i64().unwrap();
                for (i, v) in ints.iter().enumerate() {
                    assert_eq!(v.as_i64(), Some(base + i as i64), "{sample}");
                }
                arrays += 1;
            }
            other => panic!("unexpected topic {other:?}"),
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    let mut stored = 0;
    for topic in ["scalars", "arrays"] {
        let key = keys::stream(&TopicId::new("Test:1".parse().unwrap(), Category::Telemetry, topic).unwrap());
        stored += system.store.len(&key).await.unwrap();
    }
    println!(
        "{label}: {stored} samples through QUIC into the store since start; {} reached the browser \
         (conflated to one per topic per frame) in {elapsed:.2} s ({:.0} samples/s)",
        scalars + arrays,
        (scalars + arrays) as f64 / elapsed
    );
    system.stop().await;
}

#[tokio::test]
async fn a_sample_reaches_a_browser_through_quic_and_redis() {
    let redis = RedisServer::start().unwrap();
    let store = Arc::new(RedisStore::connect(&redis.url()).await.unwrap());
    sample_reaches_a_browser(store, "redis").await;
}

#[tokio::test]
async fn a_sample_reaches_a_browser_through_quic_and_the_memory_store() {
    sample_reaches_a_browser(Arc::new(MemoryStore::new()), "memory").await;
}

/// A browser that opens mid-night sees each topic's current value at once,
/// not a blank until the next change: for an event published once (the
/// state at start), the last stored value is the first message after the
/// subscription is confirmed.
async fn a_late_subscriber_gets_the_last_value_first(store: Arc<dyn Store>) {
    let system = System::start(store.clone(), &["Test:1"], RATE_HZ).await.unwrap();
    let key =
        keys::stream(&TopicId::new("Test:1".parse().unwrap(), Category::Event, "summaryState").unwrap());
    let stored = wait_for("summaryState in the store", Duration::from_secs(10), || {
        let store = store.clone();
        let key = key.clone();
        async move { store.last(&key, 1).await.ok().and_then(|v| v.into_iter().next()) }
    })
    .await
    .unwrap();

    let mut browser = Browser::connect(&system.ws_url()).await.unwrap();
    browser
        .subscribe("Test:1", "event", "summaryState")
        .await
        .unwrap();
    let reply = browser.next_json().await.unwrap();
    assert_eq!(reply["type"], "subscribed", "{reply}");
    let last = browser.next_json().await.unwrap();
    assert_eq!(last["type"], "sample", "{last}");
    assert_eq!(
        last["id"],
        stored.id.to_string(),
        "the first sample must be the stored last value"
    );
    assert_eq!(
        last["fields"]["summaryState"], 5,
        "a new Test CSC is in STANDBY (5)"
    );

    // A second browser joining the now-watched stream gets the same value first.
    let mut second = Browser::connect(&system.ws_url()).await.unwrap();
    second.subscribe("Test:1", "event", "summaryState").await.unwrap();
    assert_eq!(second.next_json().await.unwrap()["type"], "subscribed");
    let again = second.next_json().await.unwrap();
    assert_eq!(again["id"], stored.id.to_string(), "{again}");
    system.stop().await;
}

#[tokio::test]
async fn a_late_subscriber_gets_the_last_value_first_on_redis() {
    let redis = RedisServer::start().unwrap();
    a_late_subscriber_gets_the_last_value_first(Arc::new(RedisStore::connect(&redis.url()).await.unwrap()))
        .await;
}

#[tokio::test]
async fn a_late_subscriber_gets_the_last_value_first_in_memory() {
    a_late_subscriber_gets_the_last_value_first(Arc::new(MemoryStore::new())).await;
}

/// A browser opened before a CSC's producer connects (a dashboard left open
/// across a restart) subscribes to the whole CSC; its topics arrive as soon
/// as the producer declares them, without the browser doing anything.
#[tokio::test]
async fn a_csc_subscribed_before_its_producer_exists_flows_when_it_connects() {
    let system = System::start(Arc::new(MemoryStore::new()), &[], RATE_HZ)
        .await
        .unwrap();
    let mut browser = Browser::connect(&system.ws_url()).await.unwrap();
    browser
        .send_text(r#"{"op":"subscribe","csc":"Test","salindex":7}"#)
        .await
        .unwrap();
    let reply = browser.next_json().await.unwrap();
    assert_eq!(reply["type"], "subscribed", "{reply}");
    assert_eq!(
        reply["topics"].as_array().map(Vec::len),
        Some(0),
        "nothing declared yet: {reply}"
    );
    let mut system = system;
    system.start_producer("Test:7", RATE_HZ).unwrap();
    let sample = loop {
        let s = browser.next_sample().await.unwrap();
        if s["topic"] == "scalars" && s["category"] == "telemetry" {
            break s;
        }
    };
    assert_eq!(sample["salindex"], 7);
    assert_scalars_intact(&sample);
    system.stop().await;
}

/// The observatory clock in the browser comes from the server: a time
/// request is answered with UTC and TAI 37 s apart, echoing the request time.
#[tokio::test]
async fn a_time_request_is_answered_with_utc_and_tai() {
    let system = System::start(Arc::new(MemoryStore::new()), &[], RATE_HZ)
        .await
        .unwrap();
    let mut browser = Browser::connect(&system.ws_url()).await.unwrap();
    browser
        .send_text(r#"{"op":"time","request_time":123.5}"#)
        .await
        .unwrap();
    let time = browser.next_of("time").await.unwrap();
    let (utc, tai) = (time["utc"].as_f64().unwrap(), time["tai"].as_f64().unwrap());
    assert!((tai - utc - 37.0).abs() < 1e-6, "{time}");
    assert_eq!(time["tai_utc"], 37);
    assert_eq!(time["request_time"], 123.5);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!((utc - now).abs() < 5.0, "{time}");
    system.stop().await;
}

/// A plot opened mid-night asks for the recent past of a topic: it gets the
/// last N stored samples, oldest first, matching what the store holds.
#[tokio::test]
async fn history_returns_the_last_samples_oldest_first() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let system = System::start(store.clone(), &["Test:1"], RATE_HZ).await.unwrap();
    let key = keys::stream(&TopicId::new("Test:1".parse().unwrap(), Category::Telemetry, "scalars").unwrap());
    wait_for("50 samples stored", Duration::from_secs(10), || {
        let (store, key) = (store.clone(), key.clone());
        async move { (store.len(&key).await.ok()? >= 50).then_some(()) }
    })
    .await
    .unwrap();
    let mut browser = Browser::connect(&system.ws_url()).await.unwrap();
    browser
        .send_text(r#"{"op":"history","csc":"Test","salindex":1,"category":"telemetry","topic":"scalars","last":20}"#)
        .await
        .unwrap();
    let history = browser.next_of("history").await.unwrap();
    let samples = history["samples"].as_array().unwrap();
    assert_eq!(samples.len(), 20, "{history}");
    assert_eq!(history["complete"], true);
    let ids: Vec<meridian_proto::StreamId> = samples
        .iter()
        .map(|s| s["id"].as_str().unwrap().parse().unwrap())
        .collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "oldest first: {ids:?}");
    for s in samples {
        assert_scalars_intact(s);
    }
    // They are what the store holds, up to the newest at the time of the request.
    let stored = store
        .range(&key, meridian_proto::StreamId::ZERO, Some(ids[19]), 100_000)
        .await
        .unwrap();
    let tail: Vec<_> = stored[stored.len() - 20..].iter().map(|e| e.id).collect();
    assert_eq!(ids, tail);
    system.stop().await;
}

/// `{"csc":"Test"}` covers every index and both categories; unsubscribing
/// stops the samples and the frontend stops reading the streams.
#[tokio::test]
async fn a_csc_wildcard_covers_every_index_and_unsubscribe_stops_reading() {
    let system = System::start(Arc::new(MemoryStore::new()), &["Test:1", "Test:2"], RATE_HZ)
        .await
        .unwrap();
    let mut browser = Browser::connect(&system.ws_url()).await.unwrap();
    browser
        .send_text(r#"{"op":"subscribe","csc":"Test"}"#)
        .await
        .unwrap();
    let mut seen = std::collections::HashSet::new();
    while !(seen.contains(&(1, "telemetry".to_string()))
        && seen.contains(&(2, "telemetry".to_string()))
        && seen.contains(&(1, "event".to_string()))
        && seen.contains(&(2, "event".to_string())))
    {
        let s = browser.next_sample().await.unwrap();
        seen.insert((
            s["salindex"].as_u64().unwrap(),
            s["category"].as_str().unwrap().to_string(),
        ));
    }
    browser
        .send_text(r#"{"op":"unsubscribe","csc":"Test"}"#)
        .await
        .unwrap();
    let reply = browser.next_of("unsubscribed").await.unwrap();
    assert!(reply["topics"].as_array().unwrap().len() >= 4, "{reply}");
    // Samples already framed may still arrive; after that, none.
    let quiet = async {
        loop {
            match tokio::time::timeout(Duration::from_millis(500), browser.next_json()).await {
                Err(_) => return,
                Ok(v) => assert_ne!(v.unwrap()["type"], "error"),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), quiet)
        .await
        .expect("samples kept coming after unsubscribe");
    let hub = system.hub.clone();
    wait_for(
        "no stream read once nobody watches",
        Duration::from_secs(10),
        || {
            let hub = hub.clone();
            async move { (hub.watched_streams() == 0).then_some(()) }
        },
    )
    .await
    .unwrap();
    system.stop().await;
}

/// Operators' Prometheus scrapes the frontend: `/metrics` shows the browsers
/// connected, the streams read, and what was read and delivered, and
/// `/readyz` says the store is reachable.
#[tokio::test]
async fn the_frontend_serves_its_counters_as_prometheus_metrics() {
    use meridian_testkit::http::Request;
    let system = System::start(Arc::new(MemoryStore::new()), &["Test:1"], RATE_HZ)
        .await
        .unwrap();
    let mut browser = Browser::connect(&system.ws_url()).await.unwrap();
    browser.subscribe("Test:1", "telemetry", "scalars").await.unwrap();
    // The last stored value, then two read live by the frontend's reader.
    for _ in 0..3 {
        browser.next_sample().await.unwrap();
    }
    let page = Request::get("/metrics").send(system.frontend_addr).await.unwrap();
    assert_eq!(page.status, 200);
    assert!(page
        .header("content-type")
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));
    let text = page.text();
    let value = |name: &str| -> f64 {
        let line = text
            .lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("{name} missing:\n{text}"));
        line.rsplit(' ').next().unwrap().parse().unwrap()
    };
    assert_eq!(value("meridian_frontend_clients"), 1.0);
    assert_eq!(value("meridian_frontend_watched_streams"), 1.0);
    assert!(value("meridian_frontend_entries_read_total") >= 1.0);
    assert!(value("meridian_frontend_deliveries_total") >= 1.0);
    assert_eq!(value("meridian_frontend_store_up"), 1.0);
    assert!(
        text.contains("# TYPE meridian_frontend_deliveries_total counter"),
        "{text}"
    );
    let ready = Request::get("/readyz").send(system.frontend_addr).await.unwrap();
    assert_eq!(ready.status, 200);
    system.stop().await;
}
