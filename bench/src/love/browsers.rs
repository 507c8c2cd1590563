//! The browsers of `love`, a process of their own (`meridian-bench
//! love-clients`, hidden) so that their CPU is their own: N LOVE browsers
//! (subscribe per stream, one data message per sample per group). Its line
//! protocol on stdin/stdout: it prints `ready <subscribed> <failed>` once
//! every client has every subscription confirmed, then answers `stat` with
//! `stat <messages> <closed> <errors>`, `begin` (start recording lags) with
//! a `stat`, `end` with a `stat` and `lags <count> <p50 µs> <p99 µs> <max
//! µs> <dropped>`; `quit` ends it.

use super::args::CLIENT_TIMEOUT;
use super::messages::{producer_snd, subscribe_request};
use crate::load_generator::{commands, serve, Recorder};
use crate::measure::Percentiles;
use clap::Args;
use futures_util::{SinkExt, StreamExt};
use meridian_proto::unix_now;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio::sync::{mpsc, Semaphore};
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

/// What marks a data message (confirmations and heartbeats carry no trace).
const DATA_MARKER: &str = "\"tracing\"";

/// What a subscription confirmation says (LOVE's exact string).
const SUBSCRIBED: &str = "Successfully subscribed to ";

/// Clients that connect and subscribe at the same time.
const CONNECT_CONCURRENCY: usize = 64;

/// Most lag values kept per run (about 8 MB); later ones are counted as dropped.
const MAX_LAG_VALUES: usize = 1_000_000;

/// The load generator's own flags (started by `meridian-bench love`).
#[derive(Args, Debug, Clone)]
pub struct ClientsArgs {
    /// WebSocket URL to connect to (with `?token=`).
    #[arg(long)]
    pub(super) url: String,
    /// Clients to connect.
    #[arg(long)]
    pub(super) clients: usize,
    /// Clients that record the lag of every message.
    #[arg(long)]
    pub(super) lag_clients: usize,
    /// Groups to subscribe to, `telemetry-CSC-INDEX-stream`, comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub(super) subscribe: Vec<String>,
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
    fn lag_line_reports_percentiles_in_microseconds() {
        let line = lag_line((1..=100).map(|ms| ms * 1000).collect(), 3);
        assert_eq!(line, "lags 100 51000 99000 100000 3");
        assert_eq!(lag_line(Vec::new(), 0), "lags 0 0 0 0 0");
    }
}
