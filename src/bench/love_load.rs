//! The load of `meridian bench love`, the same for both servers: the
//! replaced system's producer messages (M1M3 telemetry, LOVE's field
//! wrappers) and its browsers (subscribe per stream, one data message per
//! sample per group).
//!
//! The browsers run as a second process (`meridian bench love-clients`,
//! hidden) so that their CPU is their own. Its line protocol on
//! stdin/stdout: it prints `ready <subscribed> <failed>` once every client
//! has every subscription confirmed, then answers `stat` with `stat
//! <messages> <closed> <errors>`, `begin` (start recording lags) with a
//! `stat`, `end` with a `stat` and `lags <count> <p50 µs> <p99 µs> <max µs>
//! <dropped>`; `quit` ends it.
//!
//! Lag is producer → browser: every producer message carries its send time
//! in `producer_snd` (Unix seconds, UTC), which both servers pass through
//! unchanged into the `tracing` object of what they send to browsers
//! (LOVE's SHOW_TRACE_TIMESTAMPS, on by default there; Meridian's
//! compatibility endpoint always).

use super::clients::{commands, serve, Recorder};
use super::fanout::fast_topics;
use super::measure::Percentiles;
use anyhow::{bail, Context};
use clap::Args;
use futures_util::{SinkExt, StreamExt};
use meridian_proto::{unix_now, TopicSchema, ValueKind};
use serde_json::Value as Json;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio::sync::{mpsc, Semaphore};
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

/// The CSC whose telemetry the producers publish.
pub const CSC: &str = "MTM1M3";

/// What marks a data message (confirmations and heartbeats carry no trace).
const DATA_MARKER: &str = "\"tracing\"";

/// The send time inside a data message's `tracing` object.
const SND_MARKER: &str = "\"producer_snd\":";

/// What a subscription confirmation says (LOVE's exact string).
const SUBSCRIBED: &str = "Successfully subscribed to ";

/// Clients that connect and subscribe at the same time.
const CONNECT_CONCURRENCY: usize = 64;

/// Most lag values kept per run (about 8 MB); later ones are counted as dropped.
const MAX_LAG_VALUES: usize = 1_000_000;

/// A dropped producer reconnects after this long (LOVE's clients retry every 3 s).
const RECONNECT: Duration = Duration::from_secs(3);

/// Longest wait for one client's connection, and for its subscriptions.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(60);

/// One telemetry stream the producers publish and every client subscribes to.
#[derive(Debug, Clone)]
pub struct Topic {
    pub salindex: u32,
    pub stream: String,
    /// The stream's payload as LOVE's producers send it: every field
    /// `{"value","dataType","units"}`, the simulator's values.
    pub payload: String,
}

impl Topic {
    /// LOVE's group name of the stream, as a browser subscribes to it.
    pub fn group(&self) -> String {
        format!("telemetry-{CSC}-{}-{}", self.salindex, self.stream)
    }

    /// A producer data message with this stream's payload, sent at `snd` (Unix seconds).
    pub fn message(&self, snd: f64) -> String {
        format!(
            r#"{{"category":"telemetry","data":[{{"csc":"{CSC}","salindex":{},"data":{{"{}":{}}}}}],"producer_snd":{snd:.6}}}"#,
            self.salindex, self.stream, self.payload
        )
    }
}

/// The topics of a run: those `bench fanout` publishes ([`fast_topics`]),
/// each with its payload as a LOVE producer sends it.
pub fn plan(count: usize) -> anyhow::Result<Vec<Topic>> {
    fast_topics(count)?
        .into_iter()
        .map(|(schema, salindex, fields)| {
            let values: Json = serde_json::from_str(&meridian_proto::value::fields_to_json(&fields))?;
            Ok(Topic {
                salindex,
                stream: schema.name.clone(),
                payload: wrap(&schema, &values),
            })
        })
        .collect()
}

/// LOVE's producer payload of one sample: each field of `schema` as
/// `{"value","dataType","units"}` (booleans are `Int` there).
pub fn wrap(schema: &TopicSchema, values: &Json) -> String {
    let mut out = serde_json::Map::new();
    for field in &schema.fields {
        let scalar = match field.kind {
            ValueKind::Float => "Float",
            ValueKind::Int | ValueKind::Bool => "Int",
            _ => "String",
        };
        let data_type = match field.count {
            Some(_) => format!("Array<{scalar}>"),
            None => scalar.to_string(),
        };
        let value = values.get(&field.name).cloned().unwrap_or(Json::Null);
        out.insert(
            field.name.clone(),
            serde_json::json!({"value": value, "dataType": data_type, "units": field.units}),
        );
    }
    Json::Object(out).to_string()
}

/// A browser's subscribe request for `group` (`telemetry-CSC-INDEX-stream`),
/// `salindex` as a string, as LOVE's frontend sends it.
pub fn subscribe_request(group: &str) -> anyhow::Result<String> {
    let mut parts = group.splitn(4, '-');
    let (Some(category), Some(csc), Some(salindex), Some(stream)) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        bail!("--subscribe: {group:?} is not category-csc-salindex-stream");
    };
    Ok(serde_json::json!({
        "option": "subscribe", "category": category, "csc": csc, "salindex": salindex, "stream": stream
    })
    .to_string())
}

/// `producer_snd` of a data message (`"producer_snd":` then a number,
/// with or without a space after the colon, as Python's json writes it).
pub fn producer_snd(message: &str) -> Option<f64> {
    let at = message.find(SND_MARKER)? + SND_MARKER.len();
    let rest = message[at..].trim_start();
    let end = rest
        .find(|c: char| !(c.is_ascii_digit() || matches!(c, '.' | '-' | '+' | 'e' | 'E')))
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

// ---------------------------------------------------------------------
// Producers (in the bench process).
// ---------------------------------------------------------------------

/// The producers' shared switch and counter.
#[derive(Default)]
pub struct Flow {
    /// Producers publish while set; between runs they stay quiet.
    pub sending: AtomicBool,
    /// Messages written to the server's socket, over every producer.
    pub sent: AtomicU64,
    /// Producer connections the server dropped (each reconnects).
    pub closed: AtomicU64,
}

/// One LOVE producer connection per MTM1M3 instance of `topics`, each
/// sending one message per topic every `1 / rate_hz` s while `flow.sending`
/// (phases spread over the period). Returns once every producer is connected.
pub async fn start_producers(
    url: &str,
    topics: &[Topic],
    rate_hz: f64,
    flow: Arc<Flow>,
    stop: CancellationToken,
) -> anyhow::Result<usize> {
    let mut instances: Vec<u32> = topics.iter().map(|t| t.salindex).collect();
    instances.dedup();
    let period = Duration::from_secs_f64(1.0 / rate_hz);
    for (k, &salindex) in instances.iter().enumerate() {
        let mine: Vec<Topic> = topics
            .iter()
            .filter(|t| t.salindex == salindex)
            .cloned()
            .collect();
        let ws = connect(url)
            .await
            .with_context(|| format!("producer {CSC}:{salindex}"))?;
        let phase = period.mul_f64(k as f64 / instances.len() as f64);
        let producer = Producer {
            url: url.to_string(),
            topics: mine,
            period,
            flow: flow.clone(),
            stop: stop.clone(),
        };
        tokio::spawn(producer.run(ws, phase));
    }
    Ok(instances.len())
}

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(url: &str) -> anyhow::Result<Socket> {
    let (ws, _) = tokio::time::timeout(CLIENT_TIMEOUT, tokio_tungstenite::connect_async(url))
        .await
        .with_context(|| format!("no answer from {url} within {CLIENT_TIMEOUT:?}"))?
        .with_context(|| format!("connecting to {url}"))?;
    Ok(ws)
}

/// One producer connection, reconnecting like LOVE's producers when the server drops it.
struct Producer {
    url: String,
    topics: Vec<Topic>,
    period: Duration,
    flow: Arc<Flow>,
    stop: CancellationToken,
}

impl Producer {
    async fn run(self, mut ws: Socket, phase: Duration) {
        let mut start = tokio::time::Instant::now() + phase;
        loop {
            self.publish(ws, start).await;
            if self.stop.is_cancelled() {
                return;
            }
            self.flow.closed.fetch_add(1, Ordering::Relaxed);
            eprintln!("bench love: a producer's connection failed; reconnecting in {RECONNECT:?}");
            ws = loop {
                tokio::select! {
                    _ = self.stop.cancelled() => return,
                    _ = tokio::time::sleep(RECONNECT) => {}
                }
                match connect(&self.url).await {
                    Ok(ws) => break ws,
                    Err(e) => eprintln!("bench love: producer: {e:#}"),
                }
            };
            start = tokio::time::Instant::now();
        }
    }

    /// Publishes on `ws` from `start` until the connection fails or the bench stops.
    async fn publish(&self, ws: Socket, start: tokio::time::Instant) {
        let (mut sink, mut incoming) = ws.split();
        // What the server answers (Meridian: errors naming the field): the first one is shown.
        let replies = tokio::spawn(async move {
            while let Some(Ok(message)) = incoming.next().await {
                if let Message::Text(text) = message {
                    static FIRST: std::sync::Once = std::sync::Once::new();
                    FIRST.call_once(|| eprintln!("bench love: a producer got an answer: {}", text.as_str()));
                }
            }
        });
        let mut ticker = tokio::time::interval_at(start, self.period);
        // A server that reads slowly gets fewer messages, not a burst afterwards.
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tokio::select! {
                _ = self.stop.cancelled() => break,
                _ = ticker.tick() => {}
            }
            if !self.flow.sending.load(Ordering::Relaxed) {
                continue;
            }
            let snd = unix_now(SystemTime::now());
            let mut ok = true;
            for topic in &self.topics {
                if sink.feed(Message::Text(topic.message(snd).into())).await.is_err() {
                    ok = false;
                    break;
                }
            }
            let flushed = tokio::select! {
                r = sink.flush() => r.is_ok(),
                _ = self.stop.cancelled() => break,
            };
            if !ok || !flushed {
                break;
            }
            self.flow
                .sent
                .fetch_add(self.topics.len() as u64, Ordering::Relaxed);
        }
        if self.stop.is_cancelled() {
            let _ = tokio::time::timeout(Duration::from_secs(1), sink.close()).await;
        }
        replies.abort();
    }
}

// ---------------------------------------------------------------------
// The browsers (`meridian bench love-clients`, a second process).
// ---------------------------------------------------------------------

/// The load generator's own flags (started by `bench love`).
#[derive(Args, Debug, Clone)]
pub struct ClientsArgs {
    /// WebSocket URL to connect to (with `?token=`).
    #[arg(long)]
    url: String,
    /// Clients to connect.
    #[arg(long)]
    clients: usize,
    /// Clients that record the lag of every message.
    #[arg(long)]
    lag_clients: usize,
    /// Groups to subscribe to, `telemetry-CSC-INDEX-stream`, comma-separated.
    #[arg(long, value_delimiter = ',')]
    subscribe: Vec<String>,
}

#[derive(Default)]
struct Tally {
    messages: AtomicU64,
    closed: AtomicU64,
    errors: AtomicU64,
}

#[derive(Default)]
struct Lags {
    recording: AtomicBool,
    /// Microseconds, producer → client.
    values: Mutex<Vec<u64>>,
    dropped: AtomicU64,
}

impl Lags {
    fn record(&self, lag_us: u64) {
        let mut values = self.values.lock().unwrap_or_else(|p| p.into_inner());
        if values.len() < MAX_LAG_VALUES {
            values.push(lag_us);
        } else {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Connects and subscribes the clients, says `ready`, then answers commands on stdin.
pub async fn run_clients(args: ClientsArgs, shutdown: CancellationToken) -> anyhow::Result<()> {
    let requests: Arc<Vec<String>> = Arc::new(
        args.subscribe
            .iter()
            .map(|g| subscribe_request(g))
            .collect::<anyhow::Result<_>>()?,
    );
    let tally = Arc::new(Tally::default());
    let lags = Arc::new(Lags::default());
    let gate = Arc::new(Semaphore::new(CONNECT_CONCURRENCY));
    let (ready_tx, mut ready_rx) = mpsc::unbounded_channel::<bool>();
    for i in 0..args.clients {
        tokio::spawn(client(
            args.url.clone(),
            requests.clone(),
            (i < args.lag_clients).then(|| lags.clone()),
            tally.clone(),
            gate.clone(),
            ready_tx.clone(),
        ));
    }
    drop(ready_tx);
    let mut commands = commands();
    let (mut ok, mut failed) = (0, 0);
    while ok + failed < args.clients {
        match ready_rx.recv().await {
            Some(true) => ok += 1,
            Some(false) => failed += 1,
            None => break,
        }
    }
    println!("ready {ok} {failed}");
    let recording = Recording {
        tally: &tally,
        lags: &lags,
    };
    serve(&mut commands, &recording, "bench love-clients", &shutdown).await;
    Ok(())
}

/// The load generator's answers: its counters and the lags recorded.
struct Recording<'a> {
    tally: &'a Tally,
    lags: &'a Lags,
}

impl Recorder for Recording<'_> {
    fn stat(&self) -> String {
        let t = self.tally;
        format!(
            "stat {} {} {}",
            t.messages.load(Ordering::Relaxed),
            t.closed.load(Ordering::Relaxed),
            t.errors.load(Ordering::Relaxed)
        )
    }

    fn begin(&self) {
        self.lags.values.lock().unwrap_or_else(|p| p.into_inner()).clear();
        self.lags.dropped.store(0, Ordering::Relaxed);
        self.lags.recording.store(true, Ordering::Relaxed);
    }

    fn stop(&self) {
        self.lags.recording.store(false, Ordering::Relaxed);
    }

    fn lags(&self) -> String {
        let values = std::mem::take(&mut *self.lags.values.lock().unwrap_or_else(|p| p.into_inner()));
        lag_line(values, self.lags.dropped.load(Ordering::Relaxed))
    }
}

/// `lags <count> <p50> <p99> <max> <dropped>`, microseconds.
pub fn lag_line(values: Vec<u64>, dropped: u64) -> String {
    let p = Percentiles::of(values.into_iter().map(Duration::from_micros).collect());
    format!(
        "lags {} {} {} {} {dropped}",
        p.count,
        p.p50.as_micros(),
        p.p99.as_micros(),
        p.max.as_micros()
    )
}

/// One browser: connect, subscribe to every group, say when every
/// subscription is confirmed (or that it failed), then count (and, for a
/// lag client, time) every data message.
async fn client(
    url: String,
    requests: Arc<Vec<String>>,
    lags: Option<Arc<Lags>>,
    tally: Arc<Tally>,
    gate: Arc<Semaphore>,
    ready: mpsc::UnboundedSender<bool>,
) {
    static FIRST_ERROR: std::sync::Once = std::sync::Once::new();
    let report = |what: String| FIRST_ERROR.call_once(|| eprintln!("bench love-clients: {what}"));
    let Ok(permit) = gate.acquire_owned().await else {
        let _ = ready.send(false);
        return;
    };
    let config =
        tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default().read_buffer_size(16 * 1024);
    let connected = tokio::time::timeout(
        CLIENT_TIMEOUT,
        tokio_tungstenite::connect_async_with_config(url.as_str(), Some(config), true),
    )
    .await;
    let ws = match connected {
        Ok(Ok((ws, _))) => ws,
        Ok(Err(e)) => {
            report(format!("connecting to {url}: {e}"));
            let _ = ready.send(false);
            return;
        }
        Err(_) => {
            report(format!(
                "connecting to {url}: no answer within {CLIENT_TIMEOUT:?}"
            ));
            let _ = ready.send(false);
            return;
        }
    };
    let (mut sink, mut incoming) = ws.split();
    for request in requests.iter() {
        if sink.feed(Message::Text(request.as_str().into())).await.is_err() {
            let _ = ready.send(false);
            return;
        }
    }
    if sink.flush().await.is_err() {
        let _ = ready.send(false);
        return;
    }
    let mut permit = Some(permit);
    let mut confirmed = 0;
    if requests.is_empty() {
        permit = None;
        let _ = ready.send(true);
    }
    let deadline = tokio::time::Instant::now() + CLIENT_TIMEOUT;
    loop {
        let message = if permit.is_some() {
            match tokio::time::timeout_at(deadline, incoming.next()).await {
                Ok(m) => m,
                Err(_) => {
                    report(format!(
                        "{confirmed} of {} subscriptions confirmed within {CLIENT_TIMEOUT:?}",
                        requests.len()
                    ));
                    break;
                }
            }
        } else {
            incoming.next().await
        };
        let text = match message {
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(Message::Close(frame))) => {
                tally.closed.fetch_add(1, Ordering::Relaxed);
                report(format!("the server closed a client: {frame:?}"));
                break;
            }
            Some(Ok(_)) => continue,
            Some(Err(e)) => {
                tally.closed.fetch_add(1, Ordering::Relaxed);
                report(format!("a client's connection failed: {e}"));
                break;
            }
            None => {
                tally.closed.fetch_add(1, Ordering::Relaxed);
                break;
            }
        };
        let text = text.as_str();
        if text.contains(DATA_MARKER) {
            tally.messages.fetch_add(1, Ordering::Relaxed);
            if let Some(lags) = lags.as_ref().filter(|l| l.recording.load(Ordering::Relaxed)) {
                if let Some(snd) = producer_snd(text) {
                    let lag = (unix_now(SystemTime::now()) - snd).max(0.0);
                    lags.record((lag * 1e6) as u64);
                }
            }
        } else if text.contains(SUBSCRIBED) {
            confirmed += 1;
            if confirmed == requests.len() && permit.take().is_some() {
                let _ = ready.send(true);
            }
        } else if text.contains("\"error\"") || text.contains("Error") {
            tally.errors.fetch_add(1, Ordering::Relaxed);
            report(format!("the server answered: {text}"));
        }
    }
    if permit.is_some() {
        let _ = ready.send(false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn producer_messages_carry_wrapped_m1m3_fields_and_the_send_time() {
        let topics = plan(12).unwrap();
        assert_eq!(topics.len(), 12);
        let t = &topics[0];
        let message: Json = serde_json::from_str(&t.message(1700000000.25)).unwrap();
        assert_eq!(message["category"], "telemetry");
        assert_eq!(message["producer_snd"], 1700000000.25);
        let entry = &message["data"][0];
        assert_eq!(entry["csc"], CSC);
        assert_eq!(entry["salindex"], t.salindex);
        let fields = entry["data"][&t.stream].as_object().unwrap();
        assert!(!fields.is_empty());
        for (name, field) in fields {
            let data_type = field["dataType"].as_str().unwrap();
            assert!(
                ["Float", "Int", "String"].contains(&data_type) || data_type.starts_with("Array<"),
                "{name}: {data_type}"
            );
            assert!(
                field.get("value").is_some() && field["units"].is_string(),
                "{name}"
            );
        }
        // More topics than one instance has spread over instances 1, 2, …
        let instances: std::collections::BTreeSet<u32> =
            plan(60).unwrap().iter().map(|t| t.salindex).collect();
        assert!(instances.len() > 1 && instances.contains(&1));
    }

    #[test]
    fn subscribe_requests_are_loves_with_a_string_salindex() {
        let request: Json =
            serde_json::from_str(&subscribe_request("telemetry-MTM1M3-2-forceActuatorData").unwrap())
                .unwrap();
        assert_eq!(
            request,
            serde_json::json!({"option":"subscribe","category":"telemetry","csc":"MTM1M3","salindex":"2","stream":"forceActuatorData"})
        );
        assert!(subscribe_request("telemetry-MTM1M3").is_err());
        let t = &plan(1).unwrap()[0];
        assert_eq!(t.group(), format!("telemetry-MTM1M3-1-{}", t.stream));
    }

    #[test]
    fn send_time_is_read_as_either_server_writes_it() {
        // Meridian's compact JSON and Python's json.dumps (a space after the colon).
        let rust = r#"{"category":"telemetry","data":[],"subscription":"s","tracing":{"producer_snd":1700000000.125,"manager_rcv_from_producer":1}}"#;
        let python = r#"{"category": "telemetry", "tracing": {"producer_snd": 1700000000.5, "x": 2}}"#;
        assert_eq!(producer_snd(rust), Some(1700000000.125));
        assert_eq!(producer_snd(python), Some(1700000000.5));
        assert_eq!(producer_snd(r#"{"data":"Successfully subscribed to x"}"#), None);
        assert_eq!(producer_snd(r#"{"tracing":{"producer_snd":null}}"#), None);
    }

    #[test]
    fn lag_line_reports_percentiles_in_microseconds() {
        let line = lag_line((1..=100).map(|ms| ms * 1000).collect(), 3);
        assert_eq!(line, "lags 100 51000 99000 100000 3");
        assert_eq!(lag_line(Vec::new(), 0), "lags 0 0 0 0 0");
    }
}
