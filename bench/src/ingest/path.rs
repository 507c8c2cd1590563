//! Phase 3 of `ingest`: the ingest path. An in-process ingest and K
//! synthetic producers (own QUIC endpoint each, on their own runtime so
//! their CPU can be told apart) for a fixed time; throughput from
//! acknowledgements, then a check that every acknowledged sample is in Redis.

use super::args::{IngestArgs, LOAD_THREADS};
use super::results::IngestRun;
use super::writer::telemetry_key;
use crate::measure::{CpuSnapshot, NamedRuntime, Percentiles};
use crate::producer::{self, Load, Producer, Tally};
use crate::redis_tools::{self, RedisServer};
use crate::shutdown::sleep_unless;
use anyhow::{bail, Context};
use meridian_config::{Config, StoreBackend};
use meridian_manager::{Manager, Role};
use meridian_quic::tls::{Identity, ServerTrust};
use meridian_store::redis::RedisStore;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// Time given to producers to reach a steady state before measuring.
const WARMUP: Duration = Duration::from_millis(500);

/// How long, after the run, the last batches may take to be acknowledged.
const DRAIN: Duration = Duration::from_secs(15);

#[allow(clippy::too_many_arguments)]
pub(super) async fn ingest_path(
    redis: &RedisServer,
    load_rt: &NamedRuntime,
    payload: usize,
    args: &IngestArgs,
    batch_max: usize,
    batch_delay_ms: u64,
    shutdown: &CancellationToken,
) -> anyhow::Result<IngestRun> {
    let mut config = Config::default();
    config.ingest.listen = (std::net::Ipv4Addr::LOCALHOST, 0).into();
    config.ingest.batch_max = batch_max;
    config.ingest.batch_delay_ms = batch_delay_ms;
    config.store.backend = StoreBackend::Redis;
    config.store.redis_url = redis.url();
    config.store.telemetry_maxlen = args.maxlen;
    // The ingest alone is measured, without the ScriptQueue deriver beside it.
    config.ingest.script_queue_state = false;
    config.validate().context("bench flags")?;

    let store = RedisStore::connect(&redis.url())
        .await
        .context("connecting to the bench Redis")?;
    let identity = Identity::self_signed("localhost")?;
    let trust = ServerTrust::Roots(identity.chain.clone());
    // Bound as every manager process binds it (the one wiring), ingest only.
    let manager = Manager::bind_with(&config, Role::Ingest, Arc::new(store), Some(identity)).await?;
    let addr = manager
        .ingest()
        .context("an ingest manager binds an ingest")?
        .local_addr();
    let stop_ingest = CancellationToken::new();
    let ingest_task = tokio::spawn(manager.run(stop_ingest.clone()));
    let result = drive_producers(redis, load_rt, addr, trust, payload, args, shutdown).await;
    stop_ingest.cancel();
    match tokio::time::timeout(Duration::from_secs(10), ingest_task).await {
        Ok(joined) => joined.context("ingest task panicked")??,
        Err(_) => bail!("the ingest did not stop within 10 s"),
    }
    result
}

async fn drive_producers(
    redis: &RedisServer,
    load_rt: &NamedRuntime,
    addr: std::net::SocketAddr,
    trust: ServerTrust,
    payload: usize,
    args: &IngestArgs,
    shutdown: &CancellationToken,
) -> anyhow::Result<IngestRun> {
    let load = Load {
        payload,
        batch: args.batch,
        window: args.window,
    };
    let producers: Vec<Producer> = {
        let (load, count) = (load.clone(), args.producers);
        load_rt
            .handle()
            .spawn(async move {
                let mut connected = Vec::new();
                for i in 0..count {
                    connected.push(Producer::connect(addr, &trust, i, &load).await?);
                }
                anyhow::Ok(connected)
            })
            .await??
    };
    let tally = Arc::new(Tally::default());
    let stop = CancellationToken::new();
    let running: Vec<_> = producers
        .into_iter()
        .map(|p| load_rt.handle().spawn(p.run(tally.clone(), stop.clone(), DRAIN)))
        .collect();
    let _stop_on_exit = stop.clone().drop_guard();

    sleep_unless(WARMUP, shutdown).await?;
    let t0 = Instant::now();
    let (acked0, cpu0, encode0) = (
        tally.acked.load(Ordering::Relaxed),
        CpuSnapshot::take(LOAD_THREADS, redis_tools::pid(redis)),
        tally.encode_nanos.load(Ordering::Relaxed),
    );
    let (sent0, bytes0) = (
        tally.sent.load(Ordering::Relaxed),
        tally.bytes.load(Ordering::Relaxed),
    );
    sleep_unless(Duration::from_secs_f64(args.duration_s), shutdown).await?;
    let t1 = Instant::now();
    let (acked1, cpu1, encode1) = (
        tally.acked.load(Ordering::Relaxed),
        CpuSnapshot::take(LOAD_THREADS, redis_tools::pid(redis)),
        tally.encode_nanos.load(Ordering::Relaxed),
    );
    let (sent1, bytes1) = (
        tally.sent.load(Ordering::Relaxed),
        tally.bytes.load(Ordering::Relaxed),
    );
    stop.cancel();

    let mut latencies = Vec::new();
    for producer in running {
        let outcome = producer.await.context("producer task panicked")??;
        latencies.extend(
            outcome
                .latencies
                .into_iter()
                .filter(|(at, _)| *at >= t0 && *at <= t1)
                .map(|(_, latency)| latency),
        );
    }
    let (sent, acked) = (
        tally.sent.load(Ordering::Relaxed),
        tally.acked.load(Ordering::Relaxed),
    );
    let mut stored = 0;
    for i in 0..args.producers {
        let key = telemetry_key(producer::CSC, i, &load.topic_name())?;
        stored += tokio::task::block_in_place(|| redis_tools::entries_added(redis, &key))?;
    }
    if stored < acked {
        bail!("{acked} samples were acknowledged but only {stored} are in Redis: acknowledged data was lost");
    }
    let wall = t1 - t0;
    let samples_in_window = acked1 - acked0;
    let sent_in_window = (sent1 - sent0).max(1);
    Ok(IngestRun {
        rate: samples_in_window as f64 / wall.as_secs_f64(),
        latency: Percentiles::of(latencies),
        cpu: cpu1.since(&cpu0),
        wall,
        samples_in_window,
        sent,
        acked,
        stored,
        encode_us: (encode1 - encode0) as f64 / 1e3 / sent_in_window as f64,
        frame_bytes: (bytes1 - bytes0) as f64 / sent_in_window as f64,
    })
}
