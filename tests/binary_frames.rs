//! Binary frames (`/ws?format=msgpack`): a browser that asks for MessagePack
//! data frames gets exactly the samples a JSON browser gets, with the same
//! values, in fewer bytes; an unknown format is refused with a reason.

use meridian_proto::{keys, Category, StoredSample, TopicId};
use meridian_store::{redis::RedisStore, Append, Store};
use meridian_testkit::browser::{Browser, Received};
use meridian_testkit::redis_server::RedisServer;
use meridian_testkit::system::{test_config, System};
use serde_json::Value;
use std::sync::Arc;

const EVENTS: usize = 300;

fn topic() -> TopicId {
    TopicId::new(
        "MTM1M3:1".parse().unwrap(),
        Category::Event,
        "forceActuatorWarning",
    )
    .unwrap()
}

/// Fields like a real M1M3 event: 156 forces that were 32-bit floats at the
/// CSC (printed in full by JSON), 64-bit values, integers beyond 2^53,
/// text, flags, null: the exact values (stored as their JSON text).
fn fields(i: usize) -> Value {
    let forces: Vec<f64> = (0..156)
        .map(|a| f64::from((i * 156 + a) as f32 * 0.731 - 50.0))
        .collect();
    serde_json::json!({
        "xForce": forces,
        "timestamp": 1764638000.0 + i as f64 / 3.0,
        "mode": i as i64 - 150,
        "big": 9_007_199_254_740_993_i64 + i as i64,
        "message": format!("actuator {i} \"ok\" é"),
        "flags": [true, false],
        "nothing": null,
    })
}

/// Every sample of `topic` a browser receives until it has `n`, as (id, fields).
async fn collect(browser: &mut Browser, n: usize) -> Vec<(String, Value)> {
    let mut got = Vec::new();
    while got.len() < n {
        let s = browser.next_sample().await.unwrap();
        got.push((s["id"].as_str().unwrap().to_owned(), s["fields"].clone()));
    }
    got
}

/// `got` is `want`; the first difference is named (the values are long).
fn same(got: &[(String, Value)], want: &[(String, Value)], who: &str) {
    assert_eq!(got.len(), want.len(), "{who}: sample count");
    for (i, ((gid, g), (wid, w))) in got.iter().zip(want).enumerate() {
        assert_eq!(gid, wid, "{who}: id of sample {i}");
        for (key, wv) in w.as_object().unwrap() {
            if let (Some(ga), Some(wa)) = (g[key].as_array(), wv.as_array()) {
                for (j, (a, b)) in ga.iter().zip(wa).enumerate() {
                    assert_eq!(
                        a,
                        b,
                        "{who}: {key}[{j}] of sample {i} ({gid}): {:?} vs {:?}",
                        a.as_f64().map(f64::to_bits),
                        b.as_f64().map(f64::to_bits)
                    );
                }
            }
            assert_eq!(&g[key], wv, "{who}: field {key} of sample {i} ({gid})");
        }
        assert_eq!(
            g.as_object().unwrap().len(),
            w.as_object().unwrap().len(),
            "{who}: fields of sample {i}"
        );
    }
}

#[tokio::test]
async fn a_msgpack_browser_gets_the_json_browser_s_samples_in_fewer_bytes() {
    let redis = RedisServer::start().unwrap();
    let store: Arc<dyn Store> = Arc::new(RedisStore::connect(&redis.url()).await.unwrap());
    let system = System::start_with(store.clone(), test_config()).await.unwrap();
    store
        .hash_set(keys::CATALOG, &[(topic().catalog_field(), "0".into())], None)
        .await
        .unwrap();

    let mut json = Browser::connect(&system.ws_url()).await.unwrap();
    let mut binary = Browser::connect(&format!("{}&format=msgpack", system.ws_url()))
        .await
        .unwrap();
    assert_eq!(json.welcome["format"], "json");
    assert_eq!(binary.welcome["format"], "msgpack");
    for b in [&mut json, &mut binary] {
        b.subscribe("MTM1M3:1", "event", "forceActuatorWarning")
            .await
            .unwrap();
        let sub = b.next_of("subscribed").await.unwrap();
        assert_eq!(sub["topics"].as_array().unwrap().len(), 1, "{sub}");
    }
    let mut sent = Vec::new();
    for i in 0..EVENTS {
        let ids = store
            .append(&[Append {
                key: keys::stream(&topic()),
                maxlen: 100_000,
                fields: StoredSample {
                    seq: None,
                    source_ts: 1764638000.5,
                    ingest_ts: 1764638000.6,
                    salindex: None,
                    upto: None,
                    fields: fields(i).to_string(),
                }
                .into_fields(),
            }])
            .await
            .unwrap();
        sent.push((ids[0].to_string(), fields(i)));
    }
    let from_json = collect(&mut json, EVENTS).await;
    let from_binary = collect(&mut binary, EVENTS).await;
    // Every event, in order, with the values stored. MessagePack carries
    // the exact values; the JSON text is compared as serde_json reads it
    // (its default float parser can be one unit in the last place off,
    // on the text as stored as well as on the text received).
    same(&from_binary, &sent, "msgpack");
    let as_read: Vec<(String, Value)> = sent
        .iter()
        .map(|(id, v)| (id.clone(), serde_json::from_str(&v.to_string()).unwrap()))
        .collect();
    same(&from_json, &as_read, "json");
    // Same samples, far fewer bytes (floats of 32-bit origin take 5 bytes, not ~18).
    let ratio = binary.batch_bytes as f64 / json.batch_bytes as f64;
    println!(
        "batch bytes for {EVENTS} events: json {} msgpack {} ({ratio:.2})",
        json.batch_bytes, binary.batch_bytes
    );
    assert!(ratio < 0.5, "msgpack frames are {ratio:.2} of the JSON ones");
    system.stop().await;
}

#[tokio::test]
async fn an_unknown_frame_format_is_refused_naming_the_parameter() {
    let redis = RedisServer::start().unwrap();
    let store: Arc<dyn Store> = Arc::new(RedisStore::connect(&redis.url()).await.unwrap());
    let system = System::start_with(store, test_config()).await.unwrap();
    let mut b = Browser::connect_raw(&format!("{}&format=xml", system.ws_url()))
        .await
        .unwrap();
    let error = b.next_json().await.unwrap();
    assert_eq!(error["type"], "error");
    assert_eq!(error["fatal"], true);
    let message = error["message"].as_str().unwrap();
    assert!(
        message.contains("format") && message.contains("msgpack"),
        "{message}"
    );
    match b.next().await.unwrap() {
        Received::Closed { code, reason } => {
            assert_eq!(code, 4002);
            assert!(reason.contains("format"), "{reason}");
        }
        other => panic!("expected a close, got {other:?}"),
    }
    system.stop().await;
}
