//! Phase 2 of `ingest`: the store writer alone, [`RedisStore::append`] of
//! ingest-shaped entries with one or more pipelines in flight, without QUIC:
//! the ceiling of the ingest's writer.

use super::args::IngestArgs;
use super::results::WriterRun;
use crate::measure::{micros_per, own_cpu};
use crate::redis_tools::RedisServer;
use anyhow::Context;
use meridian_proto::{keys, Category, CscId, StoredSample, TopicId};
use meridian_store::redis::RedisStore;
use meridian_store::{Append, Store};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// An entry as the ingest writes it for a sample of `payload` bytes.
fn ingest_shaped_fields(seq: u64, payload: usize) -> Vec<(String, String)> {
    let ts = meridian_proto::unix_now(std::time::SystemTime::now());
    StoredSample {
        seq: Some(seq),
        source_ts: ts,
        ingest_ts: ts,
        salindex: None,
        upto: None,
        fields: format!(r#"{{"v":"{}"}}"#, "x".repeat(payload.saturating_sub(8))),
    }
    .into_fields()
}

/// The stream of telemetry topic `name` of CSC instance `csc:index`, as the
/// ingest keys it (`proto::keys`, the keyspace's one home).
pub(super) fn telemetry_key(csc: &str, index: u32, name: &str) -> anyhow::Result<String> {
    let topic = TopicId::new(CscId::new(csc, index)?, Category::Telemetry, name)?;
    Ok(keys::stream(&topic))
}

/// Entries per second [`RedisStore::append`] reaches with `in_flight`
/// pipelines of `batch_max` ingest-shaped entries at a time: the ceiling
/// of a store writer that keeps that many pipelines outstanding.
pub(super) async fn writer_alone(
    redis: &RedisServer,
    payload: usize,
    args: &IngestArgs,
    batch_max: usize,
    in_flight: usize,
) -> anyhow::Result<WriterRun> {
    let store = RedisStore::connect(&redis.url())
        .await
        .context("connecting to the bench Redis")?;
    let batch: Arc<Vec<Append>> = Arc::new(
        (0..batch_max)
            .map(|i| {
                Ok(Append {
                    key: telemetry_key("Writer", i as u32 % args.producers, &format!("payload{payload}"))?,
                    maxlen: args.maxlen,
                    fields: ingest_shaped_fields(i as u64 + 1, payload),
                })
            })
            .collect::<anyhow::Result<_>>()?,
    );
    let run_for = Duration::from_secs_f64(args.writer_s);
    let cpu0 = own_cpu();
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..in_flight {
        let (store, batch) = (store.clone(), batch.clone());
        tasks.spawn(async move {
            let mut written = 0u64;
            while started.elapsed() < run_for {
                store.append(&batch).await?;
                written += batch.len() as u64;
            }
            anyhow::Ok(written)
        });
    }
    let mut written = 0;
    while let Some(done) = tasks.join_next().await {
        written += done??;
    }
    Ok(WriterRun {
        in_flight,
        rate: written as f64 / started.elapsed().as_secs_f64(),
        cpu_us: micros_per(own_cpu().saturating_sub(cpu0), written),
    })
}
