//! The frontend's promises to browsers, over real WebSockets and a real
//! Redis: every event reaches every watching browser exactly once and in
//! order, read from the store once however many watch; a browser that was
//! away recovers what it missed by stream id; a browser that stops reading
//! costs bounded memory, does not slow the others, and is told what it lost.
//! An operator would notice a failure as a missing or doubled event in the
//! log, a stalled page, or a frontend running out of memory.

use meridian_proto::{keys, Category, StoredSample, StreamId, TopicId};
use meridian_store::redis::RedisStore;
use meridian_store::Store;
use meridian_testkit::browser::Browser;
use meridian_testkit::manual_csc::ManualCsc;
use meridian_testkit::redis_server::RedisServer;
use meridian_testkit::system::{test_config, System};
use meridian_testkit::wait_for;
use serde_json::Value;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

const CSC: &str = "Test:2";

/// A system on a fresh Redis with a producer fed by a [`ManualCsc`].
async fn system_with(
    configure: impl FnOnce(&mut meridian_config::Config),
) -> (RedisServer, System, Arc<ManualCsc>, Arc<dyn Store>) {
    let redis = RedisServer::start().unwrap();
    let store: Arc<dyn Store> = Arc::new(RedisStore::connect(&redis.url()).await.unwrap());
    let mut config = test_config();
    configure(&mut config);
    let mut system = System::start_with(store.clone(), config).await.unwrap();
    let csc = ManualCsc::new(CSC, 100_000);
    system.spawn_producer(csc.clone(), |c| c.producer.csc = CSC.into());
    (redis, system, csc, store)
}

fn key() -> String {
    keys::stream(&TopicId::new(CSC.parse().unwrap(), Category::Event, "scalars").unwrap())
}

/// Waits until the store holds `n` events of the topic.
async fn stored(store: &Arc<dyn Store>, n: usize) {
    wait_for(&format!("{n} events stored"), Duration::from_secs(60), || {
        let store = store.clone();
        async move { (store.len(&key()).await.ok()? >= n).then_some(()) }
    })
    .await
    .unwrap();
}

/// `int0` of an event sample.
fn n(sample: &Value) -> i64 {
    sample["fields"]["int0"]
        .as_i64()
        .unwrap_or_else(|| panic!("no int0: {sample}"))
}

/// Reads event samples of the topic until one with `int0 == last`, recording
/// each value and the last id seen; a loss notice or error fails.
async fn read_until(browser: &mut Browser, last: i64, got: &mut Vec<i64>, last_id: &mut String) {
    while got.last() != Some(&last) {
        let s = browser.next_sample().await.unwrap();
        if s["topic"] == "scalars" && s["category"] == "event" {
            got.push(n(&s));
            *last_id = s["id"].as_str().unwrap().to_string();
        }
    }
}

/// 200 browsers on one topic each receive every event exactly once, in
/// order (starting with the stored last value), and the frontend reads
/// each entry from the store once, not once per browser.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_browsers_get_every_event_once_in_order_from_one_read() {
    const BROWSERS: usize = 200;
    const EVENTS: i64 = 300;
    let (_redis, system, csc, store) = system_with(|_| {}).await;
    csc.publish(0).await;
    stored(&store, 1).await;

    let mut browsers = Vec::new();
    for _ in 0..BROWSERS {
        let mut b = Browser::connect(&system.ws_url()).await.unwrap();
        b.subscribe(CSC, "event", "scalars").await.unwrap();
        let reply = b.next_of("subscribed").await.unwrap();
        assert_eq!(reply["topics"][0]["topic"], "scalars", "{reply}");
        browsers.push(b);
    }
    let readers: Vec<_> = browsers
        .into_iter()
        .map(|mut b| {
            tokio::spawn(async move {
                let (mut got, mut id) = (Vec::new(), String::new());
                read_until(&mut b, EVENTS, &mut got, &mut id).await;
                got
            })
        })
        .collect();
    let read_before = system.frontend_stats.entries_read.load(Ordering::Relaxed);
    for i in 1..=EVENTS {
        csc.publish(i).await;
    }
    let expected: Vec<i64> = (0..=EVENTS).collect();
    for reader in readers {
        assert_eq!(
            reader.await.unwrap(),
            expected,
            "every event once, in order, last value first"
        );
    }
    let read = system.frontend_stats.entries_read.load(Ordering::Relaxed) - read_before;
    assert_eq!(
        read, EVENTS as u64,
        "each entry read from the store once for {BROWSERS} browsers"
    );
    system.stop().await;
}

/// A browser that loses its connection for 5 s while events flow
/// reconnects with the last id it saw and ends with the complete sequence.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_away_for_five_seconds_recovers_everything_by_stream_id() {
    const RATE: u64 = 200;
    const EVENTS: i64 = 1600;
    let (_redis, system, csc, store) = system_with(|_| {}).await;
    let publisher = tokio::spawn({
        let csc = csc.clone();
        async move {
            let mut tick = tokio::time::interval(Duration::from_millis(1000 / RATE));
            for i in 1..=EVENTS {
                tick.tick().await;
                csc.publish(i).await;
            }
        }
    });
    stored(&store, 1).await;
    let mut browser = Browser::connect(&system.ws_url()).await.unwrap();
    browser.subscribe(CSC, "event", "scalars").await.unwrap();
    let first = browser.next_sample().await.unwrap();
    let mut got = vec![n(&first)];
    let mut last_id = first["id"].as_str().unwrap().to_string();
    let seen = got[0] + 100;
    read_until(&mut browser, seen, &mut got, &mut last_id).await;
    drop(browser);

    // Away while 5 s of events (at RATE per second) are stored.
    let away_until = (seen as usize) + 5 * RATE as usize;
    stored(&store, away_until).await;
    let mut back = Browser::connect(&system.ws_url()).await.unwrap();
    back.subscribe_after(CSC, "event", "scalars", &last_id)
        .await
        .unwrap();
    read_until(&mut back, EVENTS, &mut got, &mut last_id).await;
    publisher.await.unwrap();
    let expected: Vec<i64> = (got[0]..=EVENTS).collect();
    assert_eq!(got, expected, "nothing missed or doubled across the 5 s away");
    system.stop().await;
}

/// A browser that stops reading: the frontend holds at most
/// `frontend.client_bytes` for it, a second browser keeps getting every
/// event, and when the first resumes it is told which topic lost data from
/// which id, and recovers the rest from the store in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_that_stops_reading_costs_bounded_memory_and_is_told_what_it_lost() {
    // 20 MB of events: more than the stalled browser's socket buffers (a
    // few MB) plus its inbox bound can hold.
    const EVENTS: i64 = 5000;
    const PAD: usize = 4096;
    const CLIENT_BYTES: usize = 8 * 1024 * 1024;
    let (_redis, system, csc, store) = system_with(|c| {
        // Bursts of one store read (read_count entries of ~8 KB) fit a healthy browser's bound.
        c.frontend.read_count = 32;
        c.frontend.client_queue = 4096;
        c.frontend.client_bytes = CLIENT_BYTES;
        c.frontend.slow_timeout_ms = 600_000;
    })
    .await;
    csc.publish(0).await;
    stored(&store, 1).await;

    // A browser with a tiny receive buffer, so the server's socket fills soon.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(system.frontend_addr).await.unwrap();
    let stream = tokio_tungstenite::MaybeTlsStream::Plain(stream);
    let (ws, _) = tokio_tungstenite::client_async(system.ws_url(), stream)
        .await
        .unwrap();
    let mut stalled = Browser::from_stream(ws).await.unwrap();
    stalled.subscribe(CSC, "event", "scalars").await.unwrap();
    assert_eq!(n(&stalled.next_sample().await.unwrap()), 0);

    let mut healthy = Browser::connect(&system.ws_url()).await.unwrap();
    healthy.subscribe(CSC, "event", "scalars").await.unwrap();
    let healthy_reader = tokio::spawn(async move {
        let (mut got, mut id) = (Vec::new(), String::new());
        read_until(&mut healthy, EVENTS, &mut got, &mut id).await;
        got
    });

    // The stalled browser reads nothing while every event is published, at
    // 2,000/s (16 MB/s): a pace a browser that reads keeps up with.
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    for i in 1..=EVENTS {
        if i % 2 == 1 {
            tick.tick().await;
        }
        csc.publish_padded(i, PAD).await;
    }
    assert_eq!(
        healthy_reader.await.unwrap(),
        (0..=EVENTS).collect::<Vec<_>>(),
        "the healthy browser is unaffected"
    );
    wait_for(
        "the stalled browser's inbox to overflow",
        Duration::from_secs(30),
        || async { (system.frontend_stats.events_lost.load(Ordering::Relaxed) > 0).then_some(()) },
    )
    .await
    .unwrap();
    let held = system.frontend_stats.inbox_bytes_max.load(Ordering::Relaxed);
    assert!(
        held <= CLIENT_BYTES,
        "the frontend held {held} bytes for one browser, over its bound {CLIENT_BYTES}"
    );

    // Resume: samples up to the loss, then the notice naming where to recover from.
    let mut got = vec![0];
    let mut last_id = String::new();
    let lost = loop {
        let v = stalled.next_json().await.unwrap();
        match v["type"].as_str() {
            Some("sample") if v["topic"] == "scalars" => {
                got.push(n(&v));
                last_id = v["id"].as_str().unwrap().to_string();
            }
            Some("lost") => break v,
            _ => {}
        }
    };
    assert_eq!(lost["topic"], "scalars", "{lost}");
    assert!(
        got.len() < (EVENTS + 1) as usize,
        "a stalled browser cannot have received everything"
    );
    let from: StreamId = lost["from_id"].as_str().unwrap().parse().unwrap();
    let received: StreamId = last_id.parse().unwrap();
    assert!(
        from > received,
        "the first lost id {from} follows the last received {received}"
    );
    stalled
        .subscribe_after(CSC, "event", "scalars", &last_id)
        .await
        .unwrap();

    read_until(&mut stalled, EVENTS, &mut got, &mut last_id).await;
    assert_eq!(
        got,
        (0..=EVENTS).collect::<Vec<_>>(),
        "after recovery the sequence is complete, in order"
    );
    system.stop().await;
}

/// A frontend added next to a busy one (an autoscaler scaling out) gets
/// browsers: the busy one asks its excess browsers to reconnect, with a
/// hint first, and stops once the two are even, instead of the new one
/// staying idle while long-lived connections pile on the old.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browsers_spread_to_a_frontend_added_later() {
    const BROWSERS: usize = 10;
    let fast = |c: &mut meridian_config::Config| {
        c.frontend.load_interval_ms = 100;
        c.frontend.rebalance_factor = 1.25;
    };
    let (_redis, system, csc, store) = system_with(fast).await;
    csc.publish(0).await;
    stored(&store, 1).await;
    let mut browsers = Vec::new();
    for _ in 0..BROWSERS {
        let mut b = Browser::connect(&system.ws_url()).await.unwrap();
        b.subscribe(CSC, "event", "scalars").await.unwrap();
        b.next_sample().await.unwrap();
        browsers.push(b);
    }

    // The new frontend, on the same store.
    let mut config = test_config();
    fast(&mut config);
    let added = meridian_manager::frontend::Frontend::bind(&config, store.clone())
        .await
        .unwrap();
    let added_url = format!(
        "ws://{}/ws?token={}",
        added.local_addr(),
        meridian_testkit::system::TOKEN
    );
    let stop_added = tokio_util::sync::CancellationToken::new();
    let added_task = tokio::spawn(added.run(stop_added.clone()));

    // Each browser follows the old frontend until told to move, then goes to the new one.
    let followers: Vec<_> = browsers
        .into_iter()
        .map(|mut b| {
            let added_url = added_url.clone();
            tokio::spawn(async move {
                let mut hinted = false;
                loop {
                    match tokio::time::timeout(Duration::from_secs(3), b.next()).await {
                        // Not moved within 3 s of quiet: it stays.
                        Err(_) => return None,
                        Ok(Ok(meridian_testkit::browser::Received::Json(v))) if v["type"] == "reconnect" => {
                            hinted = true
                        }
                        Ok(Ok(meridian_testkit::browser::Received::Json(_))) => {}
                        Ok(Ok(meridian_testkit::browser::Received::Closed { code, reason })) => {
                            assert_eq!(code, 1001, "{reason}");
                            assert!(hinted, "a reconnect hint comes before the close");
                            assert!(reason.contains("rebalancing"), "{reason}");
                            // The balancer in front sends the reconnection to the new frontend.
                            return Some(Browser::connect(&added_url).await.unwrap());
                        }
                        Ok(Err(e)) => panic!("{e}"),
                    }
                }
            })
        })
        .collect();
    let mut moved = Vec::new();
    for f in followers {
        if let Some(browser) = f.await.unwrap() {
            moved.push(browser);
        }
    }
    assert!(
        (3..=7).contains(&moved.len()),
        "about half of {BROWSERS} browsers move to the added frontend, not none and not all: {}",
        moved.len()
    );
    stop_added.cancel();
    added_task.await.unwrap().unwrap();
    system.stop().await;
}

/// A browser away for longer than retention keeps is told exactly what it
/// cannot get back: a `gap` from its last id to the oldest entry still
/// stored, then everything from there, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_away_beyond_retention_is_told_of_the_gap() {
    const EVENTS: i64 = 2000;
    const KEEP: usize = 200;
    let (_redis, system, csc, store) = system_with(|c| c.store.event_maxlen = KEEP).await;
    csc.publish(1).await;
    stored(&store, 1).await;
    let mut browser = Browser::connect(&system.ws_url()).await.unwrap();
    browser.subscribe(CSC, "event", "scalars").await.unwrap();
    let first = browser.next_sample().await.unwrap();
    assert_eq!(n(&first), 1);
    let last_id = first["id"].as_str().unwrap().to_string();
    drop(browser);

    for i in 2..=EVENTS {
        csc.publish(i).await;
    }
    // Wait until the last event is stored (retention keeps the stream near KEEP entries).
    wait_for("the last event stored", Duration::from_secs(60), || {
        let store = store.clone();
        async move {
            let last = store.last(&key(), 1).await.ok()?;
            let v: Value =
                serde_json::from_str(&StoredSample::from_fields(&last.first()?.fields).ok()?.fields).ok()?;
            (v["int0"] == EVENTS).then_some(())
        }
    })
    .await
    .unwrap();
    let oldest = store.range(&key(), StreamId::ZERO, None, 1).await.unwrap()[0].clone();
    let oldest_n = serde_json::from_str::<Value>(&StoredSample::from_fields(&oldest.fields).unwrap().fields)
        .unwrap()["int0"]
        .as_i64()
        .unwrap();
    assert!(
        oldest_n > 2,
        "retention trimmed the stream (oldest kept: {oldest_n})"
    );

    let mut back = Browser::connect(&system.ws_url()).await.unwrap();
    back.subscribe_after(CSC, "event", "scalars", &last_id)
        .await
        .unwrap();
    let gap = back.next_of("gap").await.unwrap();
    assert_eq!(gap["after"], last_id.as_str(), "{gap}");
    assert_eq!(gap["resumed"], oldest.id.to_string().as_str(), "{gap}");
    let (mut got, mut id) = (Vec::new(), String::new());
    read_until(&mut back, EVENTS, &mut got, &mut id).await;
    assert_eq!(
        got,
        (oldest_n..=EVENTS).collect::<Vec<_>>(),
        "everything still stored, in order"
    );
    system.stop().await;
}
