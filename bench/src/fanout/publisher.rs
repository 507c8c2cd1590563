//! The synthetic producers of the fan-out bench: one QUIC connection per
//! MTM1M3 instance over the real protocol, publishing every topic of the
//! instance each period while the bench says so, counting acknowledgements.

use super::args::{FanoutArgs, CSC};
use super::topics::Topic;
use crate::measure::NamedRuntime;
use anyhow::{bail, Context};
use meridian_proto::{
    unix_now, Category, Fields, Hello, IngestFrame, ProducerFrame, Sample, TopicSchema, PROTOCOL_VERSION,
};
use meridian_quic::tls::{client_config, ServerTrust};
use meridian_quic::{FramedRecv, FramedSend};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio_util::sync::CancellationToken;

/// The synthetic producers' shared switches and counters.
#[derive(Default)]
pub(super) struct Flow {
    /// Producers publish while set (between runs they keep their connections but stay quiet).
    pub(super) sending: AtomicBool,
    /// Samples the ingest has acknowledged (stored), over every producer.
    pub(super) acked: AtomicU64,
}

/// One QUIC producer per MTM1M3 instance of the plan, publishing all its
/// topics every period; the instances' phases are spread over the period
/// unless `--aligned`.
pub(super) async fn start_producers(
    rt: &NamedRuntime,
    ingest: SocketAddr,
    trust: ServerTrust,
    topics: &[Topic],
    args: &FanoutArgs,
    flow: Arc<Flow>,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let mut instances: Vec<(u32, Vec<(TopicSchema, Fields)>)> = Vec::new();
    for t in topics {
        let salindex = t.id.csc.salindex;
        match instances.last_mut() {
            Some((i, list)) if *i == salindex => list.push((t.schema.clone(), t.fields.clone())),
            _ => instances.push((salindex, vec![(t.schema.clone(), t.fields.clone())])),
        }
    }
    let period = Duration::from_secs_f64(1.0 / args.rate_hz);
    let count = instances.len() as u32;
    for (k, (salindex, list)) in instances.into_iter().enumerate() {
        let phase = if args.aligned {
            Duration::ZERO
        } else {
            period * k as u32 / count
        };
        let (trust, flow, stop) = (trust.clone(), flow.clone(), stop.clone());
        let connected = rt
            .handle()
            .spawn(async move { Publisher::connect(ingest, &trust, salindex, &list).await })
            .await??;
        rt.handle().spawn(async move {
            if let Err(e) = connected.run(period, phase, flow, stop).await {
                eprintln!("bench fanout: producer {CSC}:{salindex} failed: {e:#}");
            }
        });
    }
    Ok(())
}

/// A synthetic producer of one MTM1M3 instance over the real protocol:
/// hello with its topics' schemas, then one `Batch` of all of them per period.
struct Publisher {
    endpoint: quinn::Endpoint,
    send: FramedSend,
    recv: FramedRecv,
    samples: Vec<Sample>,
}

impl Publisher {
    async fn connect(
        ingest: SocketAddr,
        trust: &ServerTrust,
        salindex: u32,
        topics: &[(TopicSchema, Fields)],
    ) -> anyhow::Result<Publisher> {
        let mut endpoint =
            quinn::Endpoint::client((std::net::Ipv4Addr::LOCALHOST, 0).into()).context("client endpoint")?;
        endpoint.set_default_client_config(client_config(trust, &meridian_config::TlsConfig::default())?);
        let conn = tokio::time::timeout(Duration::from_secs(5), endpoint.connect(ingest, "localhost")?)
            .await
            .context("QUIC handshake timed out")?
            .context("QUIC handshake")?;
        let (send, recv) = conn.open_bi().await?;
        let (mut send, mut recv) = (FramedSend::new(send), FramedRecv::new(recv));
        let hello = ProducerFrame::Hello(Hello {
            protocol_version: PROTOCOL_VERSION,
            producer_id: (u64::from(std::process::id()) << 32) | u64::from(salindex),
            csc: CSC.into(),
            salindex,
            all_indices: false,
            topics: topics.iter().map(|(s, _)| s.clone()).collect(),
        });
        send.write_frame(&hello).await?;
        match tokio::time::timeout(Duration::from_secs(5), recv.read_frame::<IngestFrame>())
            .await
            .context("no answer to the hello")??
        {
            Some(IngestFrame::Welcome { .. }) => {}
            other => bail!("producer {CSC}:{salindex}: unexpected answer to the hello: {other:?}"),
        }
        let samples = topics
            .iter()
            .map(|(schema, fields)| Sample {
                topic: schema.name.clone(),
                category: Category::Telemetry,
                salindex: None,
                seq: 0,
                source_ts: 0.0,
                fields: fields.clone(),
            })
            .collect();
        Ok(Publisher {
            endpoint,
            send,
            recv,
            samples,
        })
    }

    /// Publishes every `period` (from `phase` on) while `flow.sending`, until `stop`.
    async fn run(
        self,
        period: Duration,
        phase: Duration,
        flow: Arc<Flow>,
        stop: CancellationToken,
    ) -> anyhow::Result<()> {
        let Publisher {
            endpoint,
            mut send,
            recv,
            mut samples,
        } = self;
        let acks = tokio::spawn(read_acks(recv, flow.clone()));
        let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + phase, period);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut seq = 0u64;
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = ticker.tick() => {}
            }
            if !flow.sending.load(Ordering::Relaxed) {
                continue;
            }
            let source_ts = unix_now(SystemTime::now());
            for sample in &mut samples {
                seq += 1;
                sample.seq = seq;
                sample.source_ts = source_ts;
            }
            let frame = ProducerFrame::Batch(std::mem::take(&mut samples));
            let written = send.write_frame(&frame).await;
            if let ProducerFrame::Batch(s) = frame {
                samples = s;
            }
            written?;
        }
        let _ = send.finish();
        acks.abort();
        endpoint.close(0u32.into(), b"bench done");
        Ok(())
    }
}

/// Counts acknowledged samples (`Ack { up_to_seq }` covers every sample up to it).
async fn read_acks(mut recv: FramedRecv, flow: Arc<Flow>) -> anyhow::Result<()> {
    let mut acked = 0;
    loop {
        match recv.read_frame::<IngestFrame>().await? {
            Some(IngestFrame::Ack { up_to_seq }) => {
                flow.acked
                    .fetch_add(up_to_seq.saturating_sub(acked), Ordering::Relaxed);
                acked = acked.max(up_to_seq);
            }
            Some(IngestFrame::Error { reason }) => bail!("the ingest refused a batch: {reason}"),
            Some(other) => bail!("unexpected frame from the ingest: {other:?}"),
            None => return Ok(()),
        }
    }
}
