//! The fan-out bench's browsers (`meridian-bench fanout-clients`, hidden),
//! a process of their own: N WebSocket clients of the native protocol that
//! connect, subscribe when told, count every sample and, for the first
//! `--lag-clients`, time it; the bench reads their counters over the line
//! protocol of [`crate::load_generator`].

use super::frames::{binary_batch_len, time_binary_samples, time_samples, SAMPLE_MARKER};
use crate::load_generator::{commands, serve, Recorder};
use crate::measure::Percentiles;
use anyhow::Context;
use clap::Args;
use futures_util::{SinkExt, StreamExt};
use meridian_proto::{unix_now, Category, CscId, TopicId};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio::sync::{mpsc, Semaphore};
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

/// Clients the load generator connects (handshake and subscriptions) at once.
const CONNECT_CONCURRENCY: usize = 128;

/// The load generator's own flags (`meridian-bench fanout-clients`, started by `meridian-bench fanout`).
#[derive(Args, Debug, Clone)]
pub struct ClientsArgs {
    /// WebSocket URL to connect to.
    #[arg(long)]
    pub(super) url: String,
    /// Clients to connect.
    #[arg(long)]
    pub(super) clients: usize,
    /// Clients that record the lag of every sample.
    #[arg(long)]
    pub(super) lag_clients: usize,
    /// Topics to subscribe to, `CSC:INDEX/topic` (telemetry), comma-separated; none for the bare server.
    #[arg(long, value_delimiter = ',')]
    pub(super) subscribe: Vec<String>,
}

/// The load generator's counters, shared by its clients.
#[derive(Default)]
struct ClientTally {
    samples: AtomicU64,
    frames: AtomicU64,
    bytes: AtomicU64,
    closed: AtomicU64,
    errors: AtomicU64,
}

/// Lags recorded by the lag clients, seconds: total and the three hops.
#[derive(Default)]
struct Lags {
    recording: AtomicBool,
    values: Mutex<Vec<[f64; 4]>>,
}

/// Connects the clients, reports `ready`, then answers the bench's commands on stdin.
pub async fn run_clients(args: ClientsArgs, shutdown: CancellationToken) -> anyhow::Result<()> {
    let requests: Arc<Vec<String>> = Arc::new(
        args.subscribe
            .iter()
            .map(|s| subscribe_request(s))
            .collect::<anyhow::Result<_>>()?,
    );
    let tally = Arc::new(ClientTally::default());
    let lags = Arc::new(Lags::default());
    let gate = Arc::new(Semaphore::new(CONNECT_CONCURRENCY));
    let (go, go_rx) = tokio::sync::watch::channel(false);
    let (ready_tx, mut ready_rx) = mpsc::unbounded_channel::<Step>();
    for i in 0..args.clients {
        tokio::spawn(client(
            args.url.clone(),
            requests.clone(),
            (i < args.lag_clients).then(|| lags.clone()),
            tally.clone(),
            gate.clone(),
            go_rx.clone(),
            ready_tx.clone(),
        ));
    }
    drop(ready_tx);
    let mut commands = commands();
    // Connected (idle, nothing subscribed), then, when asked, subscribed.
    let (connected, failed) = count_steps(&mut ready_rx, args.clients, Step::Connected).await;
    println!("connected {connected} {failed}");
    match commands.recv().await.as_deref() {
        Some("subscribe") => {}
        _ => return Ok(()),
    }
    let _ = go.send(true);
    let (ok, failed_now) = count_steps(&mut ready_rx, connected, Step::Subscribed).await;
    println!("ready {ok} {}", failed + failed_now);

    let recording = Recording {
        tally: &tally,
        lags: &lags,
    };
    serve(&mut commands, &recording, "bench fanout-clients", &shutdown).await;
    Ok(())
}

/// The load generator's answers: its counters and the lags recorded.
struct Recording<'a> {
    tally: &'a ClientTally,
    lags: &'a Lags,
}

impl Recorder for Recording<'_> {
    fn stat(&self) -> String {
        let tally = self.tally;
        format!(
            "stat {} {} {} {} {}",
            tally.samples.load(Ordering::Relaxed),
            tally.frames.load(Ordering::Relaxed),
            tally.bytes.load(Ordering::Relaxed),
            tally.closed.load(Ordering::Relaxed),
            tally.errors.load(Ordering::Relaxed),
        )
    }

    fn begin(&self) {
        self.lags.values.lock().unwrap_or_else(|p| p.into_inner()).clear();
        self.lags.recording.store(true, Ordering::Relaxed);
    }

    fn stop(&self) {
        self.lags.recording.store(false, Ordering::Relaxed);
    }

    fn lags(&self) -> String {
        let values = std::mem::take(&mut *self.lags.values.lock().unwrap_or_else(|p| p.into_inner()));
        lag_line(&values)
    }
}

/// How far a client got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Connected,
    Subscribed,
    Failed,
}

/// Waits for `expected` clients to report `step` or failure; (reached, failed).
async fn count_steps(
    steps: &mut mpsc::UnboundedReceiver<Step>,
    expected: usize,
    step: Step,
) -> (usize, usize) {
    let (mut ok, mut failed) = (0, 0);
    while ok + failed < expected {
        match steps.recv().await {
            Some(s) if s == step => ok += 1,
            Some(Step::Failed) => failed += 1,
            Some(_) => {}
            None => break,
        }
    }
    (ok, failed)
}

/// The native protocol's subscribe request for `CSC:INDEX/topic` (telemetry).
pub(super) fn subscribe_request(spec: &str) -> anyhow::Result<String> {
    let (csc, topic) = spec
        .split_once('/')
        .context("--subscribe: expected CSC:INDEX/topic")?;
    let id: CscId = csc.parse().with_context(|| format!("--subscribe: {csc}"))?;
    let topic = TopicId::new(id, Category::Telemetry, topic)?;
    Ok(format!(
        r#"{{"op":"subscribe","csc":"{}","salindex":{},"category":"telemetry","topic":"{}"}}"#,
        topic.csc.csc, topic.csc.salindex, topic.topic
    ))
}

fn lag_line(values: &[[f64; 4]]) -> String {
    let mut out = format!("lags {}", values.len());
    for k in 0..4 {
        let series = values
            .iter()
            .map(|v| Duration::from_secs_f64(v[k].max(0.0)))
            .collect();
        let p = Percentiles::of(series);
        for d in [p.p50, p.p99, p.max] {
            out.push_str(&format!(" {}", d.as_micros()));
        }
    }
    out
}

/// One browser: connect, wait for the go, subscribe, say when every
/// subscription is confirmed, then count (and, for a lag client, time)
/// every sample.
async fn client(
    url: String,
    requests: Arc<Vec<String>>,
    lags: Option<Arc<Lags>>,
    tally: Arc<ClientTally>,
    gate: Arc<Semaphore>,
    mut go: tokio::sync::watch::Receiver<bool>,
    ready: mpsc::UnboundedSender<Step>,
) {
    static FIRST_ERROR: std::sync::Once = std::sync::Once::new();
    let report = |what: String| FIRST_ERROR.call_once(|| eprintln!("bench fanout-clients: {what}"));
    let fail = || {
        let _ = ready.send(Step::Failed);
    };
    let Ok(permit) = gate.clone().acquire_owned().await else {
        return fail();
    };
    let config =
        tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default().read_buffer_size(16 * 1024);
    let connected = tokio::time::timeout(
        Duration::from_secs(30),
        tokio_tungstenite::connect_async_with_config(url.as_str(), Some(config), true),
    )
    .await;
    drop(permit);
    let ws = match connected {
        Ok(Ok((ws, _))) => ws,
        Ok(Err(e)) => {
            report(format!("connecting to {url}: {e}"));
            return fail();
        }
        Err(_) => {
            report(format!("connecting to {url}: no answer within 30 s"));
            return fail();
        }
    };
    let _ = ready.send(Step::Connected);
    if go.wait_for(|go| *go).await.is_err() {
        return;
    }
    let Ok(permit) = gate.acquire_owned().await else {
        return fail();
    };
    let (mut sink, mut incoming) = ws.split();
    for request in requests.iter() {
        if sink.feed(Message::Text(request.as_str().into())).await.is_err() {
            return fail();
        }
    }
    if sink.flush().await.is_err() {
        return fail();
    }
    let mut permit = Some(permit);
    let mut subscribed = 0;
    if requests.is_empty() {
        permit = None;
        let _ = ready.send(Step::Subscribed);
    }
    let mut local = Vec::new();
    while let Some(message) = incoming.next().await {
        let text = match message {
            Ok(Message::Text(text)) => text,
            Ok(Message::Binary(frame)) => {
                // Binary frames are only batches (docs/protocol.md).
                tally.frames.fetch_add(1, Ordering::Relaxed);
                tally.bytes.fetch_add(frame.len() as u64, Ordering::Relaxed);
                let count = match &lags {
                    Some(lags) if lags.recording.load(Ordering::Relaxed) => {
                        local.clear();
                        time_binary_samples(&frame, unix_now(SystemTime::now()), &mut local);
                        lags.values
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .extend_from_slice(&local);
                        local.len()
                    }
                    _ => binary_batch_len(&frame).unwrap_or(0),
                };
                tally.samples.fetch_add(count as u64, Ordering::Relaxed);
                continue;
            }
            Ok(Message::Close(frame)) => {
                tally.closed.fetch_add(1, Ordering::Relaxed);
                report(format!("the server closed a client: {frame:?}"));
                break;
            }
            Ok(_) => continue,
            Err(e) => {
                tally.closed.fetch_add(1, Ordering::Relaxed);
                report(format!("a client's connection failed: {e}"));
                break;
            }
        };
        let text = text.as_str();
        if text.starts_with(r#"{"type":"batch""#) {
            tally.frames.fetch_add(1, Ordering::Relaxed);
            tally.bytes.fetch_add(text.len() as u64, Ordering::Relaxed);
            let count = match &lags {
                Some(lags) if lags.recording.load(Ordering::Relaxed) => {
                    local.clear();
                    time_samples(text, unix_now(SystemTime::now()), &mut local);
                    lags.values
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .extend_from_slice(&local);
                    local.len()
                }
                _ => text.matches(SAMPLE_MARKER).count(),
            };
            tally.samples.fetch_add(count as u64, Ordering::Relaxed);
        } else if text.starts_with(r#"{"type":"subscribed""#) {
            subscribed += 1;
            if subscribed == requests.len() && permit.take().is_some() {
                let _ = ready.send(Step::Subscribed);
            }
        } else if text.starts_with(r#"{"type":"error""#) {
            tally.errors.fetch_add(1, Ordering::Relaxed);
            report(format!("the server answered: {text}"));
        }
    }
    if permit.is_some() {
        fail();
    }
    drop(sink);
}
