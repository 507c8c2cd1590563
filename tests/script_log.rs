//! The replaced system's current-script panel shows a Script's log: a
//! browser of the compatibility endpoint that joins
//! `event-Script-<index>-logMessage` gets that Script's last 20 log
//! messages at once (what the replaced ScriptQueue producer replays as
//! the Script's initial state), oldest first, then every new one as it is
//! published, each once, in the replaced system's shapes. Scripts publish
//! through a real producer, QUIC and ingest into a real Redis, where every
//! Script shares one `logMessage` stream; the browser talks over a real
//! WebSocket.
//!
//! If this fails, an operator who opens the panel of a running Script in
//! the existing dashboard sees an empty log until the Script says
//! something new, another Script's lines, or lines twice.

use meridian_proto::{keys, Category, CscId, Fields, TopicId, Value};
use meridian_store::redis::RedisStore;
use meridian_store::Store;
use meridian_testkit::love::Love;
use meridian_testkit::manual_csc::ManualCsc;
use meridian_testkit::redis_server::RedisServer;
use meridian_testkit::system::{test_config, System};
use meridian_testkit::wait_for;
use serde_json::{json, Value as Json};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

/// Log messages the replaced producer keeps, and replays, per Script.
const REPLAY: usize = 20;

/// Script `index` publishes a `logMessage` event saying `text`.
async fn log(scripts: &ManualCsc, index: u32, text: &str) {
    let fields: Fields = vec![
        ("name".into(), Value::Str(format!("Script:{index}"))),
        ("level".into(), Value::Int(20)),
        ("message".into(), Value::Str(text.to_string())),
        ("traceback".into(), Value::Str(String::new())),
    ];
    scripts.publish_event(index, "logMessage", fields).await;
}

/// Joins Script `index`'s log group and waits for the confirmation,
/// which must come before any of its messages.
async fn join_log(love: &mut Love, index: u32) {
    love.subscribe("event", "Script", json!(index.to_string()), "logMessage")
        .await;
    let reply = love.json().await;
    assert_eq!(
        reply,
        json!({"data": format!("Successfully subscribed to event-Script-{index}-logMessage")})
    );
}

/// The next `n` log messages of Script `index`: their texts, each
/// checked to be in the replaced system's shape.
async fn lines(love: &mut Love, index: u32, n: usize, stamps: &mut HashSet<String>) -> Vec<String> {
    let mut out = Vec::new();
    while out.len() < n {
        let m = love.json().await;
        out.push(log_line(&m, index, stamps));
    }
    out
}

/// Checks one data message of Script `index`'s log group and returns its text.
/// `stamps`: the `private_sndStamp`s seen, which the replaced client uses
/// to drop repeats, so each message must have its own.
fn log_line(m: &Json, index: u32, stamps: &mut HashSet<String>) -> String {
    assert_eq!(m["category"], "event", "{m}");
    assert_eq!(
        m["subscription"],
        format!("event-Script-{index}-logMessage"),
        "{m}"
    );
    assert!(m["tracing"].is_object(), "{m}");
    let data = m["data"].as_array().expect("data is a list");
    assert_eq!(data.len(), 1, "{m}");
    assert_eq!(data[0]["csc"], "Script", "{m}");
    assert_eq!(data[0]["salindex"], index, "{m}");
    let samples = data[0]["data"]["logMessage"]
        .as_array()
        .unwrap_or_else(|| panic!("an event is a list: {m}"));
    assert_eq!(samples.len(), 1, "{m}");
    let fields = &samples[0];
    assert_eq!(fields["message"]["dataType"], "String", "{m}");
    assert_eq!(
        fields["level"],
        json!({"value": 20, "dataType": "Int", "units": "unitless"})
    );
    assert_eq!(fields["name"]["value"], format!("Script:{index}"));
    let stamp = fields["private_sndStamp"]["value"].to_string();
    assert!(
        fields["private_sndStamp"]["value"].is_f64(),
        "no private_sndStamp: {m}"
    );
    assert!(stamps.insert(stamp), "a repeated private_sndStamp: {m}");
    fields["message"]["value"]
        .as_str()
        .expect("a message text")
        .to_string()
}

fn texts(prefix: &str, range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|i| format!("{prefix} {i}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_script_log_group_gets_the_last_twenty_messages_then_the_live_ones() {
    let redis = RedisServer::start().unwrap();
    let store = Arc::new(RedisStore::connect(&redis.url()).await.unwrap());
    let mut system = System::start_with(store.clone(), test_config()).await.unwrap();
    let scripts = ManualCsc::all_indices("Script", 1024);
    let producer = system.spawn_producer(scripts.clone(), |c| {
        c.producer.csc = "Script".into();
        c.producer.all_indices = true;
    });
    wait_for("the Script producer connected", Duration::from_secs(20), || {
        let producer = producer.clone();
        async move { (meridian_producer::ProducerStats::get(&producer.connections) > 0).then_some(()) }
    })
    .await
    .unwrap();

    // Script A logs 30 lines, B 5, interleaved, into the one shared stream.
    let (a, b, c) = (100_001, 100_002, 100_003);
    for i in 0..30 {
        log(&scripts, a, &format!("a {i}")).await;
        if i % 6 == 0 {
            log(&scripts, b, &format!("b {}", i / 6)).await;
        }
    }
    let key =
        keys::stream(&TopicId::new(CscId::new("Script", 0).unwrap(), Category::Event, "logMessage").unwrap());
    wait_for("35 log messages stored", Duration::from_secs(20), || {
        let (store, key) = (store.clone(), key.clone());
        async move { (store.len(&key).await.unwrap() >= 35).then_some(()) }
    })
    .await
    .unwrap();

    // A's panel: A's last 20 lines, oldest first, and none of B's.
    let mut stamps = HashSet::new();
    let mut panel_a = Love::browser(&system).await;
    join_log(&mut panel_a, a).await;
    assert_eq!(
        lines(&mut panel_a, a, REPLAY, &mut stamps).await,
        texts("a", 10..30)
    );
    // Then the live lines of A only, each once.
    log(&scripts, b, "b 5").await;
    log(&scripts, a, "a 30").await;
    log(&scripts, a, "a 31").await;
    assert_eq!(lines(&mut panel_a, a, 2, &mut stamps).await, texts("a", 30..32));

    // B's panel: all of B's 6 (fewer than 20), then B's next.
    let mut b_stamps = HashSet::new();
    let mut panel_b = Love::browser(&system).await;
    join_log(&mut panel_b, b).await;
    assert_eq!(lines(&mut panel_b, b, 6, &mut b_stamps).await, texts("b", 0..6));
    log(&scripts, b, "b 6").await;
    assert_eq!(lines(&mut panel_b, b, 1, &mut b_stamps).await, texts("b", 6..7));

    // The replaced client joins every group again every 5 minutes: nothing
    // already sent comes again, the next line comes next.
    join_log(&mut panel_a, a).await;
    log(&scripts, a, "a 32").await;
    assert_eq!(lines(&mut panel_a, a, 1, &mut stamps).await, texts("a", 32..33));

    // A Script that has said nothing yet: confirmed, then its first line.
    join_log(&mut panel_b, c).await;
    log(&scripts, c, "c 0").await;
    let mut c_stamps = HashSet::new();
    assert_eq!(lines(&mut panel_b, c, 1, &mut c_stamps).await, texts("c", 0..1));
    system.stop().await;
}
