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

use async_trait::async_trait;
use futures_util::{SinkExt, StreamExt};
use meridian_manager::store::redis::RedisStore;
use meridian_manager::store::Store;
use meridian_proto::{Category, Csc, CscId, Fields, TopicId, Value};
use meridian_sim::interface::Interface;
use meridian_sim::{CommandAcks, CscFeed, LatestTelemetry, Middleware, MiddlewareError, Published};
use meridian_tests::browser::DEADLINE;
use meridian_tests::redis_server::RedisServer;
use meridian_tests::system::{test_config, System, TOKEN};
use meridian_tests::wait_for;
use serde_json::{json, Value as Json};
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// Log messages the replaced producer keeps, and replays, per Script.
const REPLAY: usize = 20;

/// Every Script instance, as the middleware delivers them to a producer
/// subscribed to all indices; the test says what each one logs.
struct Scripts {
    tx: mpsc::Sender<Published>,
    rx: Mutex<Option<mpsc::Receiver<Published>>>,
}

impl Scripts {
    fn new() -> Arc<Scripts> {
        let (tx, rx) = mpsc::channel(1024);
        Arc::new(Scripts {
            tx,
            rx: Mutex::new(Some(rx)),
        })
    }

    /// Script `index` publishes a `logMessage` event saying `text`.
    async fn log(&self, index: u32, text: &str) {
        let fields: Fields = vec![
            ("name".into(), Value::Str(format!("Script:{index}"))),
            ("level".into(), Value::Int(20)),
            ("message".into(), Value::Str(text.to_string())),
            ("traceback".into(), Value::Str(String::new())),
        ];
        let event = Published {
            salindex: index,
            topic: "logMessage".into(),
            category: Category::Event,
            source_ts: meridian_proto::unix_now(std::time::SystemTime::now()),
            fields,
        };
        self.tx.send(event).await.expect("the producer reads its Scripts");
    }
}

#[async_trait]
impl Middleware for Scripts {
    fn subscribe(&self, csc: &CscId) -> Result<CscFeed, MiddlewareError> {
        Err(MiddlewareError::UnknownCsc(csc.clone()))
    }

    fn subscribe_all_indices(&self, csc: &Csc) -> Result<CscFeed, MiddlewareError> {
        let events = self.rx.lock().unwrap().take();
        match events {
            Some(events) if csc.as_str() == "Script" => Ok(CscFeed {
                schemas: Interface::builtin("Script").expect("Script interface").topics(),
                events,
                telemetry: Arc::new(LatestTelemetry::default()),
            }),
            _ => Err(MiddlewareError::UnknownCsc(CscId {
                csc: csc.clone(),
                salindex: 0,
            })),
        }
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

/// A browser of the compatibility endpoint, as the replaced client talks.
struct Love {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl Love {
    async fn connect(system: &System) -> Love {
        let url = format!(
            "ws://{}/manager/ws/subscription/?token={TOKEN}",
            system.frontend_addr
        );
        let (ws, _) = tokio_tungstenite::connect_async(url).await.expect("connect");
        Love { ws }
    }

    /// Joins Script `index`'s log group and waits for the confirmation,
    /// which must come before any of its messages.
    async fn join_log(&mut self, index: u32) {
        let m = json!({"option": "subscribe", "category": "event", "csc": "Script",
            "salindex": index.to_string(), "stream": "logMessage"});
        self.ws
            .send(Message::Text(m.to_string().into()))
            .await
            .expect("send");
        let reply = self.next().await;
        assert_eq!(
            reply,
            json!({"data": format!("Successfully subscribed to event-Script-{index}-logMessage")})
        );
    }

    async fn next(&mut self) -> Json {
        loop {
            let frame = tokio::time::timeout(DEADLINE, self.ws.next())
                .await
                .expect("no message within the deadline")
                .expect("connection open")
                .expect("websocket error");
            if let Message::Text(text) = frame {
                return serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"));
            }
        }
    }

    /// The next `n` log messages of Script `index`: their texts, each
    /// checked to be in the replaced system's shape.
    async fn lines(&mut self, index: u32, n: usize, stamps: &mut HashSet<String>) -> Vec<String> {
        let mut out = Vec::new();
        while out.len() < n {
            let m = self.next().await;
            out.push(log_line(&m, index, stamps));
        }
        out
    }
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
    let scripts = Scripts::new();
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
        scripts.log(a, &format!("a {i}")).await;
        if i % 6 == 0 {
            scripts.log(b, &format!("b {}", i / 6)).await;
        }
    }
    let key = TopicId::new(CscId::new("Script", 0).unwrap(), Category::Event, "logMessage")
        .unwrap()
        .stream_key();
    wait_for("35 log messages stored", Duration::from_secs(20), || {
        let (store, key) = (store.clone(), key.clone());
        async move { (store.len(&key).await.unwrap() >= 35).then_some(()) }
    })
    .await
    .unwrap();

    // A's panel: A's last 20 lines, oldest first, and none of B's.
    let mut stamps = HashSet::new();
    let mut panel_a = Love::connect(&system).await;
    panel_a.join_log(a).await;
    assert_eq!(panel_a.lines(a, REPLAY, &mut stamps).await, texts("a", 10..30));
    // Then the live lines of A only, each once.
    scripts.log(b, "b 5").await;
    scripts.log(a, "a 30").await;
    scripts.log(a, "a 31").await;
    assert_eq!(panel_a.lines(a, 2, &mut stamps).await, texts("a", 30..32));

    // B's panel: all of B's 6 (fewer than 20), then B's next.
    let mut b_stamps = HashSet::new();
    let mut panel_b = Love::connect(&system).await;
    panel_b.join_log(b).await;
    assert_eq!(panel_b.lines(b, 6, &mut b_stamps).await, texts("b", 0..6));
    scripts.log(b, "b 6").await;
    assert_eq!(panel_b.lines(b, 1, &mut b_stamps).await, texts("b", 6..7));

    // The replaced client joins every group again every 5 minutes: nothing
    // already sent comes again, the next line comes next.
    panel_a.join_log(a).await;
    scripts.log(a, "a 32").await;
    assert_eq!(panel_a.lines(a, 1, &mut stamps).await, texts("a", 32..33));

    // A Script that has said nothing yet: confirmed, then its first line.
    panel_b.join_log(c).await;
    scripts.log(c, "c 0").await;
    let mut c_stamps = HashSet::new();
    assert_eq!(panel_b.lines(c, 1, &mut c_stamps).await, texts("c", 0..1));
    system.stop().await;
}
