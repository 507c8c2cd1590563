//! Phase 1 of `ingest`: the baseline, `redis-benchmark` XADD pipelined on
//! the same private server, sized by a short calibration run.

use super::args::IngestArgs;
use super::results::Baseline;
use crate::measure::{micros_per, process_cpu};
use crate::redis_tools::{self, RedisServer};
use crate::shutdown::interrupted;
use tokio_util::sync::CancellationToken;

/// Requests of the redis-benchmark run that sizes the real one.
const CALIBRATION_REQUESTS: u64 = 30_000;

/// redis-benchmark's rate for `payload` over `streams` streams, with `-n`
/// chosen from a short calibration run so the measured run takes about
/// `--baseline-s`.
pub(super) fn baseline(
    redis: &RedisServer,
    payload: usize,
    streams: u32,
    args: &IngestArgs,
    shutdown: &CancellationToken,
) -> anyhow::Result<Baseline> {
    tokio::task::block_in_place(|| {
        let rough = redis_tools::benchmark_xadd(redis, payload, args.maxlen, streams, CALIBRATION_REQUESTS)?;
        redis_tools::flush(redis)?;
        interrupted(shutdown)?;
        let requests = ((rough * args.baseline_s) as u64).max(CALIBRATION_REQUESTS);
        let before = process_cpu(redis_tools::pid(redis));
        let rps = redis_tools::benchmark_xadd(redis, payload, args.maxlen, streams, requests)?;
        let redis_cpu = process_cpu(redis_tools::pid(redis)).saturating_sub(before);
        redis_tools::flush(redis)?;
        Ok(Baseline {
            rps,
            requests,
            redis_cpu_us: micros_per(redis_cpu, requests),
        })
    })
}
