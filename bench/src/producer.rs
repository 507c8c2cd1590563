//! A synthetic producer: one QUIC connection, one stream, batches of one
//! telemetry topic sent as fast as the ingest acknowledges them.
//!
//! It speaks the real protocol (hello, welcome, `Batch` frames, `Ack {
//! up_to_seq }`) with the real client TLS configuration, but skips the
//! sampler and the spool so that the ingest, not the producer, is what is
//! measured. A bounded window of unacknowledged frames stands in for the
//! producer's spool: it keeps the ingest busy without queueing without end.

use anyhow::{bail, Context};
use meridian_proto::{
    encode_frame, Category, FieldSchema, Hello, IngestFrame, ProducerFrame, Sample, TopicSchema, Value,
    ValueKind, PROTOCOL_VERSION,
};
use meridian_quic::tls::{client_config, ServerTrust};
use meridian_quic::{FramedRecv, FramedSend};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

/// The CSC name of every synthetic producer; producer `i` is `Bench:i`.
pub const CSC: &str = "Bench";

/// How long the handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// What every producer of one run sends.
#[derive(Clone, Debug)]
pub struct Load {
    /// Bytes of the stored `f` field of a sample (its fields as JSON).
    pub payload: usize,
    /// Samples per `Batch` frame.
    pub batch: usize,
    /// Frames sent but not yet acknowledged, at most.
    pub window: usize,
}

impl Load {
    /// The topic every producer declares: one string field sized so that
    /// its JSON form `{"v":"…"}`, what the ingest stores, is `payload` bytes.
    pub fn topic(&self) -> TopicSchema {
        TopicSchema {
            name: self.topic_name(),
            category: Category::Telemetry,
            rate_hz: None,
            fields: vec![FieldSchema {
                name: "v".into(),
                kind: ValueKind::Str,
                count: None,
                units: String::new(),
            }],
        }
    }

    pub fn topic_name(&self) -> String {
        format!("payload{}", self.payload)
    }

    fn sample(&self) -> Sample {
        const JSON_OVERHEAD: usize = r#"{"v":""}"#.len();
        Sample {
            topic: self.topic_name(),
            category: Category::Telemetry,
            salindex: None,
            seq: 0,
            source_ts: 0.0,
            fields: vec![(
                "v".into(),
                Value::Str("x".repeat(self.payload.saturating_sub(JSON_OVERHEAD))),
            )],
        }
    }
}

/// Counters shared by every producer of a run; read while they run.
#[derive(Default)]
pub struct Tally {
    /// Samples written to QUIC streams.
    pub sent: AtomicU64,
    /// Samples acknowledged (stored) by the ingest.
    pub acked: AtomicU64,
    /// Frames acknowledged.
    pub acked_frames: AtomicU64,
    /// Nanoseconds spent encoding frames (bincode), to show it is not the limit.
    pub encode_nanos: AtomicU64,
    /// Bytes of encoded frames.
    pub bytes: AtomicU64,
}

/// One batch in flight: its last seq, sample count and when it was written.
type InFlight = Arc<Mutex<VecDeque<(u64, u64, Instant)>>>;

/// A connected producer, past the handshake.
pub struct Producer {
    endpoint: quinn::Endpoint,
    conn: quinn::Connection,
    send: FramedSend,
    recv: FramedRecv,
    load: Load,
}

/// What one producer saw, once its stream has ended.
pub struct Outcome {
    /// Per acknowledged batch: when the ack arrived and how long after the write started.
    pub latencies: Vec<(Instant, Duration)>,
}

impl Producer {
    /// Opens its own client endpoint (as a separate producer process
    /// would), connects to `ingest`, and says hello as `Bench:index`.
    pub async fn connect(
        ingest: SocketAddr,
        trust: &ServerTrust,
        index: u32,
        load: &Load,
    ) -> anyhow::Result<Producer> {
        let mut endpoint =
            quinn::Endpoint::client((std::net::Ipv4Addr::LOCALHOST, 0).into()).context("client endpoint")?;
        // No client certificate: the bench ingest has no `tls.ca`, so it checks none.
        endpoint.set_default_client_config(client_config(trust, &meridian_config::TlsConfig::default())?);
        let conn = tokio::time::timeout(HANDSHAKE_TIMEOUT, endpoint.connect(ingest, "localhost")?)
            .await
            .context("QUIC handshake timed out")?
            .context("QUIC handshake")?;
        let (send, recv) = conn.open_bi().await?;
        let (mut send, mut recv) = (FramedSend::new(send), FramedRecv::new(recv));
        let hello = ProducerFrame::Hello(Hello {
            protocol_version: PROTOCOL_VERSION,
            // Distinct per producer and per run, as a real producer's random id.
            producer_id: (u64::from(std::process::id()) << 32) | u64::from(index),
            csc: CSC.into(),
            salindex: index,
            all_indices: false,
            topics: vec![load.topic()],
        });
        send.write_frame(&hello).await?;
        match tokio::time::timeout(HANDSHAKE_TIMEOUT, recv.read_frame::<IngestFrame>())
            .await
            .context("no answer to the hello")??
        {
            Some(IngestFrame::Welcome { .. }) => {}
            other => bail!("producer {CSC}:{index}: unexpected answer to the hello: {other:?}"),
        }
        Ok(Producer {
            endpoint,
            conn,
            send,
            recv,
            load: load.clone(),
        })
    }

    /// Sends batches until `stop`, then finishes the stream and reads
    /// acknowledgements until the ingest ends its side (every batch
    /// acknowledged), or `drain` has passed.
    pub async fn run(
        self,
        tally: Arc<Tally>,
        stop: CancellationToken,
        drain: Duration,
    ) -> anyhow::Result<Outcome> {
        let Producer {
            endpoint,
            conn,
            mut send,
            recv,
            load,
        } = self;
        let window = Arc::new(Semaphore::new(load.window.max(1)));
        let in_flight: InFlight = Arc::default();
        let acks = tokio::spawn(read_acks(recv, in_flight.clone(), window.clone(), tally.clone()));
        let mut samples = vec![load.sample(); load.batch.max(1)];
        let mut seq = 0u64;
        let mut buf = Vec::new();
        let sending: anyhow::Result<()> = async {
            loop {
                let permit = tokio::select! {
                    _ = stop.cancelled() => break,
                    permit = window.acquire() => permit?,
                };
                permit.forget();
                let started = Instant::now();
                let source_ts = meridian_proto::unix_now(std::time::SystemTime::now());
                for sample in &mut samples {
                    seq += 1;
                    sample.seq = seq;
                    sample.source_ts = source_ts;
                }
                let frame = ProducerFrame::Batch(std::mem::take(&mut samples));
                buf.clear();
                encode_frame(&frame, &mut buf)?;
                if let ProducerFrame::Batch(s) = frame {
                    samples = s;
                }
                tally
                    .encode_nanos
                    .fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
                let n = samples.len() as u64;
                in_flight
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push_back((seq, n, started));
                send.write_encoded(&buf).await?;
                tally.sent.fetch_add(n, Ordering::Relaxed);
                tally.bytes.fetch_add(buf.len() as u64, Ordering::Relaxed);
            }
            Ok(())
        }
        .await;
        let _ = send.finish();
        let outcome = tokio::time::timeout(drain, acks).await;
        conn.close(0u32.into(), b"bench done");
        let _ = tokio::time::timeout(Duration::from_secs(2), endpoint.wait_idle()).await;
        sending?;
        match outcome {
            Ok(joined) => Ok(Outcome {
                latencies: joined.context("ack reader panicked")??,
            }),
            Err(_) => bail!("not every batch was acknowledged within {drain:?} after the run"),
        }
    }
}

/// Reads acknowledgements until the ingest ends the stream; frees window
/// slots and records each batch's latency.
async fn read_acks(
    mut recv: FramedRecv,
    in_flight: InFlight,
    window: Arc<Semaphore>,
    tally: Arc<Tally>,
) -> anyhow::Result<Vec<(Instant, Duration)>> {
    let mut latencies = Vec::new();
    loop {
        match recv.read_frame::<IngestFrame>().await? {
            Some(IngestFrame::Ack { up_to_seq }) => {
                let now = Instant::now();
                let mut in_flight = in_flight.lock().unwrap_or_else(|p| p.into_inner());
                while let Some(&(last, n, started)) = in_flight.front() {
                    if last > up_to_seq {
                        break;
                    }
                    in_flight.pop_front();
                    latencies.push((now, now - started));
                    tally.acked.fetch_add(n, Ordering::Relaxed);
                    tally.acked_frames.fetch_add(1, Ordering::Relaxed);
                    window.add_permits(1);
                }
            }
            Some(IngestFrame::Error { reason }) => bail!("the ingest refused a batch: {reason}"),
            Some(other) => bail!("unexpected frame from the ingest: {other:?}"),
            None => return Ok(latencies),
        }
    }
}
