//! The LOVE producers of `love` (in the bench process): one WebSocket per
//! MTM1M3 instance on the server's producer endpoint, a message per topic
//! each period while the bench says so, reconnecting like LOVE's producers.

use super::args::CLIENT_TIMEOUT;
use super::messages::{Topic, CSC};
use anyhow::Context;
use futures_util::{SinkExt, StreamExt};
use meridian_proto::unix_now;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

/// A dropped producer reconnects after this long (LOVE's clients retry every 3 s).
const RECONNECT: Duration = Duration::from_secs(3);

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

pub(super) async fn connect(url: &str) -> anyhow::Result<Socket> {
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
