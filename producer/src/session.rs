//! One QUIC connection to an ingest manager.
//!
//! The first bidirectional stream carries the handshake and then events; a
//! second one carries telemetry. Each stream's acknowledgements come back on
//! it. Frames are written as soon as there is something to send: events in
//! batches of whatever is waiting (up to `producer.batch_max`), telemetry
//! once per sampling tick.

use crate::sampler::Sampler;
use crate::ProducerStats;
use meridian_config::Config;
use meridian_proto::{
    encode_frame, CscId, FrameBuffer, Hello, IngestFrame, ProducerFrame, Sample, TopicSchema,
    PROTOCOL_VERSION,
};
use meridian_sim::{CscFeed, Published};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// How long to wait for an ingest manager to answer the hello.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// How long, at shutdown, to wait for acknowledgements of what was sent.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a session could not start.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("no ingest address in producer.ingest")]
    NoAddress,
    #[error("{addr}: {reason}")]
    Unreachable { addr: String, reason: String },
    /// The ingest manager refused the handshake: fix the configuration, retrying will not help.
    #[error("{addr} refused the handshake: {reason}")]
    Refused { addr: String, reason: String },
}

/// How a session ended.
pub enum End {
    Shutdown,
    Lost(String),
}

pub struct Session {
    conn: quinn::Connection,
    events: quinn::SendStream,
    telemetry: quinn::SendStream,
    /// Batches sent but not yet acknowledged, per stream: (last seq, samples).
    /// Bounded by QUIC flow control, which stops writes the ingest has not read.
    unacked: [Unacked; 2],
    acks: tokio::task::JoinSet<()>,
    batch_max: usize,
}

type Unacked = Arc<std::sync::Mutex<std::collections::VecDeque<(u64, u64)>>>;

impl Session {
    /// Connects to the first ingest manager of `producer.ingest` that answers, and says hello.
    pub async fn connect(
        endpoint: &quinn::Endpoint,
        config: &Config,
        csc: &CscId,
        schemas: &[TopicSchema],
        stats: &Arc<ProducerStats>,
        shutdown: &CancellationToken,
    ) -> Result<Session, ConnectError> {
        let mut last = ConnectError::NoAddress;
        for addr in &config.producer.ingest {
            if shutdown.is_cancelled() {
                break;
            }
            match Self::connect_one(endpoint, addr, config, csc, schemas, stats).await {
                Ok(session) => return Ok(session),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    async fn connect_one(
        endpoint: &quinn::Endpoint,
        addr: &str,
        config: &Config,
        csc: &CscId,
        schemas: &[TopicSchema],
        stats: &Arc<ProducerStats>,
    ) -> Result<Session, ConnectError> {
        let unreachable = |reason: String| ConnectError::Unreachable {
            addr: addr.to_string(),
            reason,
        };
        let socket = tokio::net::lookup_host(addr)
            .await
            .map_err(|e| unreachable(e.to_string()))?
            .next()
            .ok_or_else(|| unreachable("no address for this name".into()))?;
        let connecting = endpoint
            .connect(socket, &config.tls.server_name)
            .map_err(|e| unreachable(e.to_string()))?;
        let conn = tokio::time::timeout(HANDSHAKE_TIMEOUT, connecting)
            .await
            .map_err(|_| unreachable("QUIC handshake timed out".into()))?
            .map_err(|e| unreachable(e.to_string()))?;
        let (mut events, mut recv) = conn.open_bi().await.map_err(|e| unreachable(e.to_string()))?;
        let hello = ProducerFrame::Hello(Hello {
            protocol_version: PROTOCOL_VERSION,
            csc: csc.csc.to_string(),
            salindex: csc.salindex,
            topics: schemas.to_vec(),
        });
        write(&mut events, &hello).await.map_err(unreachable)?;
        let mut frames = FrameBuffer::new();
        let answer = tokio::time::timeout(HANDSHAKE_TIMEOUT, read_frame(&mut recv, &mut frames))
            .await
            .map_err(|_| unreachable("no answer to the hello".into()))?;
        match answer {
            Ok(Some(IngestFrame::Welcome { .. })) => {}
            Ok(Some(IngestFrame::Refused { reason })) => {
                return Err(ConnectError::Refused {
                    addr: addr.to_string(),
                    reason,
                })
            }
            Ok(Some(other)) => return Err(unreachable(format!("unexpected answer to the hello: {other:?}"))),
            Ok(None) => return Err(unreachable("stream closed before the answer".into())),
            Err(reason) => return Err(unreachable(reason)),
        }
        let (telemetry, telemetry_acks) = conn.open_bi().await.map_err(|e| unreachable(e.to_string()))?;
        tracing::info!(ingest = addr, "connected to ingest");
        let mut acks = tokio::task::JoinSet::new();
        let span = tracing::Span::current();
        let unacked: [Unacked; 2] = Default::default();
        acks.spawn(
            read_acks(recv, frames, unacked[0].clone(), stats.clone(), "events").instrument(span.clone()),
        );
        acks.spawn(
            read_acks(
                telemetry_acks,
                FrameBuffer::new(),
                unacked[1].clone(),
                stats.clone(),
                "telemetry",
            )
            .instrument(span),
        );
        Ok(Session {
            conn,
            events,
            telemetry,
            unacked,
            acks,
            batch_max: config.producer.batch_max.max(1),
        })
    }

    /// Forwards the feed until shutdown or until the connection is lost.
    pub async fn run(
        mut self,
        feed: &mut CscFeed,
        sampler: &mut Sampler,
        seq: &mut u64,
        stats: &Arc<ProducerStats>,
        shutdown: &CancellationToken,
    ) -> End {
        let batch_max = self.batch_max;
        let mut tick = tokio::time::interval(sampler.tick());
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut due = Vec::new();
        let mut ack_readers = std::mem::take(&mut self.acks);
        let end = loop {
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break End::Shutdown,
                reason = self.conn.closed() => break End::Lost(reason.to_string()),
                Some(first) = feed.events.recv() => {
                    let mut batch = vec![first];
                    while batch.len() < batch_max {
                        match feed.events.try_recv() {
                            Ok(p) => batch.push(p),
                            Err(_) => break,
                        }
                    }
                    if let Err(reason) = self.send(Stream::Events, batch, seq, stats).await {
                        break End::Lost(reason);
                    }
                }
                _ = tick.tick() => {
                    sampler.sample(&feed.telemetry, Instant::now(), &mut due);
                    if !due.is_empty() {
                        if let Err(reason) = self.send(Stream::Telemetry, std::mem::take(&mut due), seq, stats).await {
                            break End::Lost(reason);
                        }
                    }
                }
                Some(_) = ack_readers.join_next() => {}
            }
        };
        if let End::Shutdown = end {
            // Finish both streams and wait (bounded) for the last acknowledgements.
            let _ = self.events.finish();
            let _ = self.telemetry.finish();
            let _ = tokio::time::timeout(DRAIN_TIMEOUT, async {
                while ack_readers.join_next().await.is_some() {}
            })
            .await;
            self.conn.close(0u32.into(), b"producer shutting down");
        }
        end
    }

    async fn send(
        &mut self,
        stream: Stream,
        batch: Vec<Published>,
        seq: &mut u64,
        stats: &ProducerStats,
    ) -> Result<(), String> {
        let samples: Vec<Sample> = batch
            .into_iter()
            .map(|p| {
                *seq += 1;
                Sample {
                    topic: p.topic,
                    category: p.category,
                    seq: *seq,
                    source_ts: p.source_ts,
                    fields: p.fields,
                }
            })
            .collect();
        let n = samples.len() as u64;
        let (send, unacked) = match stream {
            Stream::Events => (&mut self.events, &self.unacked[0]),
            Stream::Telemetry => (&mut self.telemetry, &self.unacked[1]),
        };
        unacked
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push_back((*seq, n));
        write(send, &ProducerFrame::Batch(samples)).await?;
        stats.sent.fetch_add(n, Ordering::Relaxed);
        Ok(())
    }
}

enum Stream {
    Events,
    Telemetry,
}

async fn write(send: &mut quinn::SendStream, frame: &ProducerFrame) -> Result<(), String> {
    let mut buf = Vec::new();
    encode_frame(frame, &mut buf).map_err(|e| e.to_string())?;
    send.write_all(&buf).await.map_err(|e| e.to_string())
}

async fn read_frame(
    recv: &mut quinn::RecvStream,
    frames: &mut FrameBuffer,
) -> Result<Option<IngestFrame>, String> {
    loop {
        if let Some(frame) = frames.next_frame().map_err(|e| e.to_string())? {
            return Ok(Some(frame));
        }
        match recv.read_chunk(64 * 1024, true).await {
            Ok(Some(chunk)) => frames.extend(&chunk.bytes),
            Ok(None) => return Ok(None),
            Err(e) => return Err(e.to_string()),
        }
    }
}

/// Reads acknowledgements of one stream until it ends.
async fn read_acks(
    mut recv: quinn::RecvStream,
    mut frames: FrameBuffer,
    unacked: Unacked,
    stats: Arc<ProducerStats>,
    stream: &'static str,
) {
    loop {
        match read_frame(&mut recv, &mut frames).await {
            Ok(Some(IngestFrame::Ack { up_to_seq })) => {
                tracing::trace!(stream, up_to_seq, "acknowledged");
                let mut unacked = unacked.lock().unwrap_or_else(|p| p.into_inner());
                while let Some(&(last, n)) = unacked.front() {
                    if last > up_to_seq {
                        break;
                    }
                    unacked.pop_front();
                    stats.acked.fetch_add(n, Ordering::Relaxed);
                }
            }
            Ok(Some(IngestFrame::Error { reason })) => {
                tracing::error!(stream, %reason, "ingest refused a batch");
            }
            Ok(Some(other)) => tracing::warn!(stream, frame = ?other, "unexpected frame from ingest"),
            Ok(None) | Err(_) => return,
        }
    }
}
