//! The compatibility endpoint speaks the replaced system's protocol (LOVE
//! manager, `shared/reference/love-protocol.md` and `love-research.md`)
//! message for message, over real sockets: its unchanged browser client
//! joins groups and gets the exact confirmation strings, the data shapes
//! of each group flavour, the time, the manager and CSC heartbeats; its
//! producers publish with `?password=` into the same store native
//! browsers read.
//!
//! If this fails, an operator's existing LOVE dashboard shows nothing or
//! garbage on Meridian, or a site cannot move its producers one at a time.

use meridian_proto::{keys, Category, StoredSample, TopicId};
use meridian_store::{memory::MemoryStore, redis::RedisStore, Store};
use meridian_testkit::browser::Browser;
use meridian_testkit::love::{keys, love_url, Got, Love};
use meridian_testkit::redis_server::RedisServer;
use meridian_testkit::system::{test_config, System, TOKEN};
use meridian_testkit::wait_for;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

/// The producers' shared password in these tests.
const PASSWORD: &str = "producer-pass";

/// Telemetry rate of the simulated Test CSC, Hz.
const RATE_HZ: f64 = 20.0;

fn set<'a>(items: &[&'a str]) -> BTreeSet<&'a str> {
    items.iter().copied().collect()
}

/// Every field is `{"value","dataType","units"}`.
fn assert_wrapped(fields: &Value) {
    for (name, field) in fields
        .as_object()
        .unwrap_or_else(|| panic!("not a dict: {fields}"))
    {
        assert_eq!(
            keys(field),
            set(&["value", "dataType", "units"]),
            "field {name}: {field}"
        );
    }
}

/// A data message of one sample: `{"category","data":[{"csc","salindex","data"}],"subscription","tracing"}`.
fn assert_envelope(v: &Value, category: &str, csc: &str, salindex: u64, subscription: &str) {
    assert_eq!(
        keys(v),
        set(&["category", "data", "subscription", "tracing"]),
        "{v}"
    );
    assert_eq!(v["category"], category, "{v}");
    assert_eq!(v["subscription"], subscription, "{v}");
    let data = v["data"].as_array().unwrap();
    assert_eq!(data.len(), 1, "{v}");
    assert_eq!(keys(&data[0]), set(&["csc", "salindex", "data"]), "{v}");
    assert_eq!(data[0]["csc"], csc, "{v}");
    assert_eq!(data[0]["salindex"], salindex, "{v}");
    let tracing = set(&[
        "producer_snd",
        "manager_rcv_from_producer",
        "manager_snd_to_group",
        "manager_rcv_from_group",
        "manager_snd_to_client",
    ]);
    assert_eq!(keys(&v["tracing"]), tracing, "{v}");
    for key in tracing {
        assert!(v["tracing"][key].is_f64(), "{v}");
    }
}

async fn start(store: Arc<dyn Store>) -> System {
    let mut config = test_config();
    config.frontend.love_password = Some(PASSWORD.into());
    config.frontend.love_heartbeat_ms = 200;
    let mut system = System::start_with(store, config).await.unwrap();
    system.start_producer("Test:1", RATE_HZ).unwrap();
    system
}

/// Waits until the Test CSC's `summaryState` (published once, at start) is stored.
async fn stored_summary_state(store: &Arc<dyn Store>) {
    let key =
        keys::stream(&TopicId::new("Test:1".parse().unwrap(), Category::Event, "summaryState").unwrap());
    wait_for("summaryState in the store", Duration::from_secs(10), || {
        let (store, key) = (store.clone(), key.clone());
        async move { store.last(&key, 1).await.ok().filter(|e| !e.is_empty()) }
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn subscribe_and_unsubscribe_are_confirmed_with_the_exact_strings() {
    let system = start(Arc::new(MemoryStore::new())).await;
    // Any pool path reaches the same endpoint, with or without the trailing slash.
    let url = format!(
        "ws://{}/manager/producers/ws/subscription?token={TOKEN}",
        system.frontend_addr
    );
    let mut love = Love::connect(&url).await;
    love.subscribe("event", "ATDome", json!("0"), "summaryState")
        .await;
    assert_eq!(
        love.json().await,
        json!({"data": "Successfully subscribed to event-ATDome-0-summaryState"})
    );
    love.unsubscribe("event", "ATDome", json!("0"), "summaryState")
        .await;
    assert_eq!(
        love.json().await,
        json!({"data": "Successfully unsubscribed to event-ATDome-0-summaryState"})
    );
    love.subscribe("telemetry", "all", json!("all"), "all").await;
    assert_eq!(
        love.json().await,
        json!({"data": "Successfully subscribed to telemetry-all-all-all"})
    );
    love.unsubscribe("telemetry", "all", json!("all"), "all").await;
    let reply = love
        .until("the unsubscription", |v| v.get("category").is_none())
        .await;
    assert_eq!(
        reply,
        json!({"data": "Successfully unsubscribed to telemetry-all-all-all"})
    );
    // A number as salindex is echoed as a number; groups nothing feeds are confirmed too.
    love.subscribe("cmd", "ScriptQueue", json!(1), "stream1").await;
    assert_eq!(
        love.json().await,
        json!({"data": "Successfully subscribed to cmd-ScriptQueue-1-stream1"})
    );
    system.stop().await;
}

/// The stream flavour: an event is a one-element list of wrapped fields and
/// arrives first as the stored last value; telemetry is a bare dict.
async fn stream_messages_have_the_replaced_shapes(store: Arc<dyn Store>) {
    let system = start(store.clone()).await;
    stored_summary_state(&store).await;
    let mut love = Love::connect(&love_url(&system, &format!("token={TOKEN}"))).await;
    love.subscribe("event", "Test", json!("1"), "summaryState").await;
    assert_eq!(
        love.json().await,
        json!({"data": "Successfully subscribed to event-Test-1-summaryState"})
    );
    // The Test CSC publishes summaryState once, at start: this is the stored last value.
    let event = love.json().await;
    assert_envelope(&event, "event", "Test", 1, "event-Test-1-summaryState");
    let streams = &event["data"][0]["data"];
    assert_eq!(keys(streams), set(&["summaryState"]), "{event}");
    let samples = streams["summaryState"]
        .as_array()
        .unwrap_or_else(|| panic!("an event is a list: {event}"));
    assert_eq!(samples.len(), 1, "{event}");
    assert_wrapped(&samples[0]);
    assert_eq!(
        samples[0]["summaryState"],
        json!({"value": 5, "dataType": "Int", "units": "unitless"}),
        "a new Test CSC is in STANDBY (5): {event}"
    );
    assert_eq!(samples[0]["private_sndStamp"]["dataType"], "Float");
    assert_eq!(samples[0]["private_rcvStamp"]["units"], "second");

    love.subscribe("telemetry", "Test", json!("1"), "scalars").await;
    let telemetry = love
        .until("scalars telemetry", |v| {
            v["subscription"] == "telemetry-Test-1-scalars"
        })
        .await;
    assert_envelope(&telemetry, "telemetry", "Test", 1, "telemetry-Test-1-scalars");
    let fields = &telemetry["data"][0]["data"]["scalars"];
    assert!(fields.is_object(), "telemetry is a bare dict: {telemetry}");
    assert_wrapped(fields);
    let n = fields["int0"]["value"].as_i64().unwrap();
    assert_eq!(fields["int0"]["dataType"], "Int");
    assert_eq!(
        fields["double0"],
        json!({"value": n as f64 / 10.0, "dataType": "Float", "units": "unitless"})
    );
    assert_eq!(
        fields["string0"],
        json!({"value": format!("tick {n}"), "dataType": "String", "units": "unitless"})
    );
    // Booleans are Int, as the replaced producers report them.
    assert_eq!(fields["boolean0"]["dataType"], "Int");
    assert_eq!(fields["boolean0"]["value"], n % 2 == 0);
    system.stop().await;
}

#[tokio::test]
async fn stream_messages_have_the_replaced_shapes_on_redis() {
    let redis = RedisServer::start().unwrap();
    let store = Arc::new(RedisStore::connect(&redis.url()).await.unwrap());
    stream_messages_have_the_replaced_shapes(store).await;
}

#[tokio::test]
async fn stream_messages_have_the_replaced_shapes_in_memory() {
    stream_messages_have_the_replaced_shapes(Arc::new(MemoryStore::new())).await;
}

#[tokio::test]
async fn the_csc_wide_group_is_keyed_by_the_csc_and_the_firehose_by_stream() {
    let system = start(Arc::new(MemoryStore::new())).await;
    let mut love = Love::connect(&love_url(&system, &format!("token={TOKEN}"))).await;
    love.subscribe("telemetry", "Test", json!("1"), "all").await;
    assert_eq!(
        love.json().await,
        json!({"data": "Successfully subscribed to telemetry-Test-1-all"})
    );
    let wide = love
        .until("CSC-wide telemetry", |v| v.get("category").is_some())
        .await;
    assert_envelope(&wide, "telemetry", "Test", 1, "telemetry-Test-1-all");
    let by_csc = &wide["data"][0]["data"];
    assert_eq!(keys(by_csc), set(&["Test"]), "keyed by the CSC name: {wide}");
    let streams = keys(&by_csc["Test"]);
    assert_eq!(streams.len(), 1, "{wide}");
    assert!(streams.is_subset(&set(&["scalars", "arrays"])), "{wide}");
    love.unsubscribe("telemetry", "Test", json!("1"), "all").await;
    love.until("the unsubscription", |v| v.get("category").is_none())
        .await;

    love.subscribe("telemetry", "all", json!("all"), "all").await;
    love.until("the subscription", |v| v.get("category").is_none())
        .await;
    let all = love
        .until("firehose telemetry", |v| v.get("category").is_some())
        .await;
    assert_envelope(&all, "telemetry", "Test", 1, "telemetry-all-all-all");
    let streams = keys(&all["data"][0]["data"]);
    assert_eq!(streams.len(), 1, "{all}");
    assert!(
        streams.is_subset(&set(&["scalars", "arrays"])),
        "keyed by the stream: {all}"
    );
    assert_wrapped(&all["data"][0]["data"][*streams.first().unwrap()]);
    system.stop().await;
}

/// A group that overlaps another keeps receiving when the other is left:
/// opening and closing a dialog that watched `telemetry-all-all-all` must
/// not silence the panels watching single streams.
#[tokio::test]
async fn leaving_the_firehose_keeps_the_streams_other_groups_watch() {
    let system = start(Arc::new(MemoryStore::new())).await;
    let mut love = Love::connect(&love_url(&system, &format!("token={TOKEN}"))).await;
    love.subscribe("telemetry", "Test", json!("1"), "scalars").await;
    love.subscribe("telemetry", "all", json!("all"), "all").await;
    love.until("firehose data", |v| v["subscription"] == "telemetry-all-all-all")
        .await;
    love.unsubscribe("telemetry", "all", json!("all"), "all").await;
    love.until("the unsubscription", |v| {
        v["data"] == "Successfully unsubscribed to telemetry-all-all-all"
    })
    .await;
    let mut last = 0;
    for _ in 0..5 {
        let v = love.json().await;
        assert_eq!(
            v["subscription"], "telemetry-Test-1-scalars",
            "only the stream group is left: {v}"
        );
        let n = v["data"][0]["data"]["scalars"]["int0"]["value"].as_i64().unwrap();
        assert!(n > last, "in order, no repeats: {n} after {last}");
        last = n;
    }
    system.stop().await;
}

#[tokio::test]
async fn get_time_data_answers_every_key_and_echoes_the_request_time() {
    let system = start(Arc::new(MemoryStore::new())).await;
    let mut love = Love::connect(&love_url(&system, &format!("token={TOKEN}"))).await;
    love.send(json!({"action": "get_time_data", "request_time": 1732412345.123}))
        .await;
    let v = love.json().await;
    assert_eq!(keys(&v), set(&["time_data", "request_time"]), "{v}");
    assert_eq!(v["request_time"], 1732412345.123);
    let t = &v["time_data"];
    assert_eq!(
        keys(t),
        set(&[
            "utc",
            "tai",
            "mjd",
            "observing_day",
            "sidereal_summit",
            "sidereal_greenwich",
            "tai_to_utc"
        ]),
        "{v}"
    );
    let utc = t["utc"].as_f64().unwrap();
    assert!(
        (utc - meridian_proto::unix_now(std::time::SystemTime::now())).abs() < 5.0,
        "{v}"
    );
    assert_eq!(
        t["tai"].as_f64().unwrap() - utc,
        37.0,
        "TAI − UTC from frontend.tai_utc_offset_s"
    );
    assert_eq!(t["tai_to_utc"], -37.0);
    assert!((t["mjd"].as_f64().unwrap() - (utc / 86400.0 + 40587.0)).abs() < 1e-6);
    assert_eq!(t["observing_day"].as_str().unwrap().len(), 8, "{v}");
    for key in ["sidereal_summit", "sidereal_greenwich"] {
        assert!((0.0..24.0).contains(&t[key].as_f64().unwrap()), "{v}");
    }
    system.stop().await;
}

#[tokio::test]
async fn the_manager_heartbeat_and_csc_heartbeats_arrive() {
    let system = start(Arc::new(MemoryStore::new())).await;
    let mut love = Love::connect(&love_url(&system, &format!("token={TOKEN}"))).await;
    love.subscribe("heartbeat", "manager", json!(0), "stream").await;
    assert_eq!(
        love.json().await,
        json!({"data": "Successfully subscribed to heartbeat-manager-0-stream"})
    );
    let first = love.json().await;
    assert_eq!(
        keys(&first),
        set(&["category", "data", "subscription"]),
        "{first}"
    );
    assert_eq!(first["category"], "heartbeat");
    assert_eq!(first["subscription"], "heartbeat");
    assert_eq!(first["data"][0]["csc"], "Manager");
    assert_eq!(first["data"][0]["salindex"], 0);
    let t0 = first["data"][0]["data"]["timestamp"].as_f64().unwrap();
    let second = love.json().await;
    let t1 = second["data"][0]["data"]["timestamp"].as_f64().unwrap();
    assert!(
        t1 > t0 && t1 - t0 <= 3.0,
        "every ≤ 3 s, advancing: {t0} then {t1}"
    );
    love.unsubscribe("heartbeat", "manager", json!(0), "stream").await;
    love.until("the unsubscription", |v| v.get("category").is_none())
        .await;

    love.subscribe("event", "Heartbeat", json!("0"), "stream").await;
    love.until("the subscription", |v| {
        v["data"] == "Successfully subscribed to event-Heartbeat-0-stream"
    })
    .await;
    let beat = love
        .until("a CSC heartbeat", |v| {
            v["subscription"] == "event-Heartbeat-0-stream"
        })
        .await;
    assert_envelope(&beat, "event", "Heartbeat", 0, "event-Heartbeat-0-stream");
    let report = &beat["data"][0]["data"]["stream"];
    assert_eq!(
        keys(report),
        set(&[
            "csc",
            "salindex",
            "lost",
            "last_heartbeat_timestamp",
            "max_lost_heartbeats"
        ]),
        "{beat}"
    );
    assert_eq!(
        (report["csc"].as_str(), report["salindex"].as_u64()),
        (Some("Test"), Some(1))
    );
    assert_eq!(report["lost"], 0);
    assert_eq!(report["max_lost_heartbeats"], 5);
    system.stop().await;
}

/// A producer of the replaced system publishes with `?password=`: its
/// event reaches a compatibility browser and a native one alike, and the
/// store holds it as ingest would.
async fn a_love_producer_reaches_both_kinds_of_browser(store: Arc<dyn Store>) {
    let system = start(store.clone()).await;
    let mut browser = Love::connect(&love_url(&system, &format!("token={TOKEN}"))).await;
    browser
        .subscribe("event", "ATDome", json!("0"), "summaryState")
        .await;
    browser
        .subscribe("telemetry", "ATDome", json!("0"), "position")
        .await;
    assert_eq!(
        browser.json().await,
        json!({"data": "Successfully subscribed to event-ATDome-0-summaryState"})
    );
    assert_eq!(
        browser.json().await,
        json!({"data": "Successfully subscribed to telemetry-ATDome-0-position"})
    );
    let mut native = Browser::connect(&system.ws_url()).await.unwrap();
    native
        .subscribe("ATDome:0", "event", "summaryState")
        .await
        .unwrap();
    assert_eq!(native.next_json().await.unwrap()["type"], "subscribed");

    let mut producer = Love::connect(&love_url(&system, &format!("password={PASSWORD}"))).await;
    producer
        .send(json!({"option": "subscribe", "category": "initial_state", "csc": "ATDome", "salindex": "all", "stream": "all", "producer_snd": 1.0}))
        .await;
    assert_eq!(
        producer.json().await,
        json!({"data": "Successfully subscribed to initial_state-ATDome-all-all"})
    );
    producer.send(json!({"heartbeat": "ATDomeProducer"})).await;
    let snd = 1_732_412_345.5;
    producer
        .send(json!({
            "category": "event",
            "producer_snd": snd,
            "data": [{"csc": "ATDome", "salindex": 0, "data": {"summaryState": [{
                "summaryState": {"value": 2, "dataType": "Int", "units": "unitless"},
                "private_sndStamp": {"value": 1_732_412_382.0, "dataType": "Float", "units": "second"}
            }]}}]
        }))
        .await;
    // Python's json writes NaN bare: it arrives as null, never as NaN.
    producer
        .send_text(
            r#"{"category":"telemetry","producer_snd":1732412346.0,"data":[{"csc":"ATDome","salindex":0,"data":{"position":{
                "azimuthPosition":{"value":12.5,"dataType":"Float","units":"deg"},
                "mainDoorOpeningPercentage":{"value":NaN,"dataType":"Float","units":"%"}}}}]}"#,
        )
        .await;

    // The two topics are attached independently: their messages may come in either order.
    let (mut event, mut telemetry) = (None, None);
    while event.is_none() || telemetry.is_none() {
        let v = browser
            .until("the producer's event and telemetry", |v| {
                v["subscription"] == "event-ATDome-0-summaryState"
                    || v["subscription"] == "telemetry-ATDome-0-position"
            })
            .await;
        if v["subscription"] == "event-ATDome-0-summaryState" {
            event = Some(v);
        } else {
            telemetry = Some(v);
        }
    }
    let (event, telemetry) = (event.unwrap(), telemetry.unwrap());
    assert_envelope(&event, "event", "ATDome", 0, "event-ATDome-0-summaryState");
    let sample = &event["data"][0]["data"]["summaryState"][0];
    assert_wrapped(sample);
    assert_eq!(
        sample["summaryState"],
        json!({"value": 2, "dataType": "Int", "units": "unitless"})
    );
    assert_eq!(
        sample["private_sndStamp"]["value"], 1_732_412_382.0,
        "the producer's own stamp is kept"
    );
    assert_eq!(event["tracing"]["producer_snd"], snd);
    let fields = &telemetry["data"][0]["data"]["position"];
    assert_eq!(
        fields["azimuthPosition"],
        json!({"value": 12.5, "dataType": "Float", "units": "deg"})
    );
    assert_eq!(
        fields["mainDoorOpeningPercentage"],
        json!({"value": null, "dataType": "Float", "units": "%"})
    );

    let sample = native.next_sample().await.unwrap();
    assert_eq!(
        (sample["csc"].as_str(), sample["topic"].as_str()),
        (Some("ATDome"), Some("summaryState"))
    );
    assert_eq!(sample["fields"]["summaryState"], 2);
    assert_eq!(sample["source_ts"], snd);

    // In the store as ingest writes it: src, ing, and the plain fields.
    let key =
        keys::stream(&TopicId::new("ATDome:0".parse().unwrap(), Category::Event, "summaryState").unwrap());
    let stored = store.last(&key, 1).await.unwrap();
    let entry = stored.first().expect("stored");
    let sample = StoredSample::from_fields(&entry.fields).unwrap();
    assert_eq!(sample.source_ts.to_string(), snd.to_string());
    assert!(sample.ingest_ts > 0.0);
    let f: Value = serde_json::from_str(&sample.fields).unwrap();
    assert_eq!(f, json!({"summaryState": 2, "private_sndStamp": 1_732_412_382.0}));

    // The producer's reconnect burst re-sends its last event: stored once.
    drop(producer);
    let mut again = Love::connect(&love_url(&system, &format!("password={PASSWORD}"))).await;
    again
        .send(json!({
            "category": "event",
            "producer_snd": snd + 10.0,
            "data": [{"csc": "ATDome", "salindex": 0, "data": {"summaryState": [{
                "summaryState": {"value": 2, "dataType": "Int", "units": "unitless"},
                "private_sndStamp": {"value": 1_732_412_382.0, "dataType": "Float", "units": "second"}
            }]}}]
        }))
        .await;
    again
        .send(json!({"action": "get_time_data", "request_time": 1}))
        .await;
    assert!(
        again.json().await.get("time_data").is_some(),
        "the message before was taken"
    );
    assert_eq!(
        store.len(&key).await.unwrap(),
        1,
        "a repeated event is written once"
    );
    system.stop().await;
}

#[tokio::test]
async fn a_love_producer_reaches_both_kinds_of_browser_through_redis() {
    let redis = RedisServer::start().unwrap();
    let store = Arc::new(RedisStore::connect(&redis.url()).await.unwrap());
    a_love_producer_reaches_both_kinds_of_browser(store).await;
}

#[tokio::test]
async fn a_love_producer_reaches_both_kinds_of_browser_in_memory() {
    a_love_producer_reaches_both_kinds_of_browser(Arc::new(MemoryStore::new())).await;
}

#[tokio::test]
async fn a_wrong_token_or_password_is_refused_with_a_reason() {
    let system = start(Arc::new(MemoryStore::new())).await;
    for (query, says) in [
        ("token=wrong", "frontend.tokens"),
        ("password=wrong", "frontend.love_password"),
        ("", "missing token"),
    ] {
        let mut love = Love::connect(&love_url(&system, query)).await;
        match love.next().await {
            Got::Closed { code, reason } => {
                assert_eq!(code, 4003, "{query}: {reason}");
                assert!(reason.contains(says), "{query}: {reason}");
            }
            Got::Json(v) => panic!("{query}: expected a close, got {v}"),
        }
    }
    // A browser may not publish.
    let mut love = Love::connect(&love_url(&system, &format!("token={TOKEN}"))).await;
    love.send(json!({"category": "event", "data": []})).await;
    let reply = love.json().await;
    assert!(reply["error"].as_str().unwrap().contains("?password="), "{reply}");
    system.stop().await;
}

#[tokio::test]
async fn malformed_messages_are_answered_with_an_error_and_the_connection_kept() {
    let system = start(Arc::new(MemoryStore::new())).await;
    let mut love = Love::connect(&love_url(&system, &format!("token={TOKEN}"))).await;
    let error = |v: &Value| {
        v["error"]
            .as_str()
            .unwrap_or_else(|| panic!("not an error: {v}"))
            .to_string()
    };

    love.send_text("{not json").await;
    let v = love.json().await;
    assert!(error(&v).starts_with("not JSON"), "{v}");
    assert!(
        v["data"].as_str().unwrap().starts_with("Error: "),
        "its client reads `data`: {v}"
    );
    love.subscribe("event", "ATDome", json!("zero"), "summaryState")
        .await;
    assert!(error(&love.json().await).starts_with("salindex:"));
    love.send(json!({"option": "subscribe", "category": "event", "csc": "ATDome", "salindex": 0}))
        .await;
    assert_eq!(error(&love.json().await), "stream: missing");
    love.send_text(&format!(r#"{{"pad":"{}"}}"#, "x".repeat(70 * 1024)))
        .await;
    assert!(error(&love.json().await).contains("MAX_CLIENT_MESSAGE_LEN = 65536"));
    love.send(json!({"action": "reboot"})).await;
    assert!(error(&love.json().await).starts_with("action:"));

    // Still connected and served.
    love.send(json!({"action": "get_time_data", "request_time": 7}))
        .await;
    assert_eq!(love.json().await["request_time"], 7);

    // A producer's malformed data message names the field; nothing of it is stored.
    let mut producer = Love::connect(&love_url(&system, &format!("password={PASSWORD}"))).await;
    producer
        .send(json!({"category": "event", "data": [{"salindex": 0, "data": {"summaryState": [{}]}}]}))
        .await;
    assert_eq!(
        error(&producer.json().await),
        "data[0].csc: missing or not a string"
    );
    producer
        .send(json!({"category": "event", "data": [{"csc": "ATDome", "salindex": 0, "data": {"bad-name": {}}}]}))
        .await;
    assert!(error(&producer.json().await).starts_with("data[0].data.bad-name:"));
    producer.send(json!({"category": "cmd", "data": []})).await;
    assert!(error(&producer.json().await).starts_with("category:"));
    producer
        .send(json!({"action": "get_time_data", "request_time": 8}))
        .await;
    assert_eq!(producer.json().await["request_time"], 8);
    system.stop().await;
}

/// The components named in a manager heartbeat message.
fn heartbeat_names(v: &Value) -> Vec<String> {
    v["data"]
        .as_array()
        .unwrap_or_else(|| panic!("no heartbeat data: {v}"))
        .iter()
        .map(|e| e["csc"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// Sends a `get_time_data` and returns what `love` was sent before its
/// answer: requests are answered in order, so these are the replies to
/// everything sent before it.
async fn replies_before_time(love: &mut Love) -> Vec<Value> {
    love.send(json!({"action": "get_time_data", "request_time": 7}))
        .await;
    let mut before = Vec::new();
    loop {
        let v = love.json().await;
        if v.get("time_data").is_some() {
            return before;
        }
        before.push(v);
    }
}

async fn redis_store(redis: &RedisServer) -> Arc<dyn Store> {
    Arc::new(RedisStore::connect(&redis.url()).await.unwrap())
}

/// A browser cannot report component heartbeats: otherwise any page could
/// show a fake `Commander` or CSC as alive in every operator's dashboard.
#[tokio::test]
async fn a_browsers_heartbeat_report_never_reaches_another_browser() {
    let redis = RedisServer::start().unwrap();
    let system = start(redis_store(&redis).await).await;
    let mut watcher = Love::browser(&system).await;
    watcher
        .subscribe("heartbeat", "manager", json!(0), "stream")
        .await;
    assert_eq!(
        watcher.json().await,
        json!({"data": "Successfully subscribed to heartbeat-manager-0-stream"})
    );

    let mut faker = Love::browser(&system).await;
    faker.send(json!({"heartbeat": "Commander"})).await;
    faker
        .send(json!({"heartbeat": "FakeProducer", "timestamp": 1.0}))
        .await;
    let replies = replies_before_time(&mut faker).await;

    // Every manager heartbeat built after the reports were read lacks them.
    let after = meridian_proto::unix_now(std::time::SystemTime::now());
    let v = watcher
        .until("a manager heartbeat built after the reports", |v| {
            v["category"] == "heartbeat" && v["data"][0]["data"]["timestamp"].as_f64() > Some(after)
        })
        .await;
    assert_eq!(heartbeat_names(&v), vec!["Manager".to_string()], "{v}");
    assert_eq!(replies.len(), 2, "each report is refused: {replies:?}");
    for reply in &replies {
        let error = reply["data"].as_str().unwrap_or_default();
        assert!(
            error.starts_with("Error: heartbeat:") && error.contains("?password="),
            "{reply}"
        );
    }
    system.stop().await;
}

/// Component heartbeats expire: once producers that went away have filled
/// the table, a live producer's heartbeat is refused only until their
/// entries go stale, not until the frontend restarts.
#[tokio::test]
async fn a_full_heartbeat_table_frees_up_for_a_live_producer() {
    let redis = RedisServer::start().unwrap();
    let mut config = test_config();
    config.frontend.love_password = Some(PASSWORD.into());
    // Entries expire after 5 periods: 5 s, well past the filling below.
    config.frontend.love_heartbeat_ms = 1000;
    let system = System::start_with(redis_store(&redis).await, config)
        .await
        .unwrap();
    let mut watcher = Love::browser(&system).await;
    watcher
        .subscribe("heartbeat", "manager", json!(0), "stream")
        .await;
    assert_eq!(
        watcher.json().await,
        json!({"data": "Successfully subscribed to heartbeat-manager-0-stream"})
    );
    let producer_url = love_url(&system, &format!("password={PASSWORD}"));

    // Producers that report once and go away fill every slot.
    let mut gone = Love::connect(&producer_url).await;
    for i in 0..32 {
        gone.send(json!({"heartbeat": format!("Gone{i}")})).await;
    }
    assert_eq!(replies_before_time(&mut gone).await, Vec::<Value>::new());
    drop(gone);

    let mut live = Love::connect(&producer_url).await;
    live.send(json!({"heartbeat": "Live"})).await;
    let refused = replies_before_time(&mut live).await;
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert!(
        refused[0]["data"]
            .as_str()
            .is_some_and(|e| e.contains("MAX_COMPONENTS = 32")),
        "{refused:?}"
    );

    // The live producer keeps reporting, once per manager heartbeat seen, until taken.
    let end = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        assert!(
            std::time::Instant::now() < end,
            "the live producer's heartbeat was still refused after 30 s"
        );
        live.send(json!({"heartbeat": "Live"})).await;
        if replies_before_time(&mut live).await.is_empty() {
            break;
        }
        watcher
            .until("a manager heartbeat", |v| v["category"] == "heartbeat")
            .await;
    }
    let v = watcher
        .until("a manager heartbeat with the live producer", |v| {
            v["category"] == "heartbeat" && heartbeat_names(v).contains(&"Live".to_string())
        })
        .await;
    assert!(heartbeat_names(&v).len() <= 1 + 32, "{v}");
    system.stop().await;
}

/// The LOVE topic cap holds for the process, not per connection: a
/// producer that reconnects, or two of them, cannot grow the catalog past
/// `frontend.love_max_topics`.
#[tokio::test]
async fn two_producers_together_cannot_exceed_the_global_topic_cap() {
    let redis = RedisServer::start().unwrap();
    let store = redis_store(&redis).await;
    let mut config = test_config();
    config.frontend.love_password = Some(PASSWORD.into());
    config.frontend.love_max_topics = 4;
    let system = System::start_with(store.clone(), config).await.unwrap();
    assert!(
        store.hash_get(keys::CATALOG).await.unwrap().is_empty(),
        "no native producer runs here: the catalog starts empty"
    );
    let producer_url = love_url(&system, &format!("password={PASSWORD}"));
    let telemetry = |streams: &[&str]| {
        let data: serde_json::Map<String, Value> = streams
            .iter()
            .map(|s| {
                (
                    s.to_string(),
                    json!({"x": {"value": 1, "dataType": "Int", "units": ""}}),
                )
            })
            .collect();
        json!({"category": "telemetry", "data": [{"csc": "ATDome", "salindex": 0, "data": data}]})
    };

    let mut first = Love::connect(&producer_url).await;
    first.send(telemetry(&["s0", "s1", "s2"])).await;
    assert_eq!(replies_before_time(&mut first).await, Vec::<Value>::new());

    let mut second = Love::connect(&producer_url).await;
    second.send(telemetry(&["s3"])).await;
    second.send(telemetry(&["s4", "s5"])).await;
    let refused = replies_before_time(&mut second).await;
    assert_eq!(
        refused.len(),
        1,
        "the fourth topic fits, the fifth does not: {refused:?}"
    );
    let error = refused[0]["data"].as_str().unwrap_or_default();
    assert!(error.contains("frontend.love_max_topics = 4"), "{error}");

    // Reconnecting starts from the same count: known topics still publish, new ones do not.
    drop(first);
    let mut again = Love::connect(&producer_url).await;
    again.send(telemetry(&["s0"])).await;
    again.send(telemetry(&["s6"])).await;
    let refused = replies_before_time(&mut again).await;
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert!(refused[0]["data"]
        .as_str()
        .is_some_and(|e| e.contains("frontend.love_max_topics = 4")));
    assert_eq!(store.hash_get(keys::CATALOG).await.unwrap().len(), 4);
    system.stop().await;
}
