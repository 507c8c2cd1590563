//! What the benchmarks measure besides counts: CPU time from `/proc` (per
//! process and per named thread, so one process can hold both the system
//! under test and its load generator) and latency percentiles.

use anyhow::Context;
use std::time::Duration;

/// Clock ticks per second of `utime`/`stime` in `/proc/*/stat`. Linux has
/// reported 100 (`USER_HZ`) on every architecture for decades; reading
/// `sysconf` would need libc for no gain.
const TICKS_PER_SECOND: f64 = 100.0;

/// User + system CPU time of one process or thread, from its `stat` file.
fn stat_cpu(path: &str) -> Option<(String, Duration)> {
    parse_stat(&std::fs::read_to_string(path).ok()?)
}

/// The command name and user + system CPU time in a `/proc/*/stat` line.
pub fn parse_stat(text: &str) -> Option<(String, Duration)> {
    // `pid (comm) state ...`: comm may hold spaces and parentheses, so split
    // at the last ')'. utime and stime are fields 14 and 15 (1-based), i.e.
    // the 12th and 13th after the comm.
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let comm = text.get(open + 1..close)?.to_string();
    let mut rest = text.get(close + 1..)?.split_whitespace().skip(11);
    let utime: u64 = rest.next()?.parse().ok()?;
    let stime: u64 = rest.next()?.parse().ok()?;
    Some((
        comm,
        Duration::from_secs_f64((utime + stime) as f64 / TICKS_PER_SECOND),
    ))
}

/// Resident memory of process `pid` in bytes (`VmRSS` of `/proc/<pid>/status`), 0 if it is gone.
pub fn process_rss(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| parse_status_rss(&s))
        .unwrap_or(0)
}

/// `VmRSS` in bytes from the text of a `/proc/<pid>/status` file.
pub fn parse_status_rss(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .map(|kib| kib * 1024)
}

/// CPU time used so far by process `pid` (all its threads, live and exited).
pub fn process_cpu(pid: u32) -> Duration {
    stat_cpu(&format!("/proc/{pid}/stat")).map_or(Duration::ZERO, |(_, t)| t)
}

/// CPU time used so far by this process.
pub fn own_cpu() -> Duration {
    process_cpu(std::process::id())
}

/// CPU time used so far by the live threads of this process whose name
/// starts with `prefix` (thread names are cut to 15 bytes by Linux).
pub fn threads_cpu(prefix: &str) -> Duration {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return Duration::ZERO;
    };
    tasks
        .flatten()
        .filter_map(|task| stat_cpu(&format!("{}/stat", task.path().display())))
        .filter(|(comm, _)| comm.starts_with(prefix))
        .map(|(_, t)| t)
        .sum()
}

/// CPU time of the parties of one measurement, taken at one instant.
#[derive(Clone, Copy, Debug, Default)]
pub struct CpuSnapshot {
    /// This whole process.
    pub process: Duration,
    /// The load generator's threads inside this process.
    pub load: Duration,
    /// The Redis server.
    pub redis: Duration,
}

impl CpuSnapshot {
    pub fn take(load_thread_prefix: &str, redis_pid: u32) -> CpuSnapshot {
        CpuSnapshot {
            process: own_cpu(),
            load: threads_cpu(load_thread_prefix),
            redis: process_cpu(redis_pid),
        }
    }

    /// CPU used from `earlier` to `self`.
    pub fn since(&self, earlier: &CpuSnapshot) -> CpuSnapshot {
        CpuSnapshot {
            process: self.process.saturating_sub(earlier.process),
            load: self.load.saturating_sub(earlier.load),
            redis: self.redis.saturating_sub(earlier.redis),
        }
    }

    /// The process's CPU minus its load generator's: the system under test.
    pub fn under_test(&self) -> Duration {
        self.process.saturating_sub(self.load)
    }
}

/// Latency percentiles of one run, from every recorded value (runs are
/// short enough to keep them all and sort, which is exact).
#[derive(Clone, Copy, Debug, Default)]
pub struct Percentiles {
    pub count: usize,
    pub p50: Duration,
    pub p99: Duration,
    pub max: Duration,
}

impl Percentiles {
    pub fn of(mut values: Vec<Duration>) -> Percentiles {
        if values.is_empty() {
            return Percentiles::default();
        }
        values.sort_unstable();
        let at = |q: f64| values[((values.len() - 1) as f64 * q).round() as usize];
        Percentiles {
            count: values.len(),
            p50: at(0.50),
            p99: at(0.99),
            max: values[values.len() - 1],
        }
    }
}

/// Microseconds of `cpu` per item, for "CPU per sample" columns.
pub fn micros_per(cpu: Duration, items: u64) -> f64 {
    if items == 0 {
        return f64::NAN;
    }
    cpu.as_secs_f64() * 1e6 / items as f64
}

/// `cpu` as a percentage of one core over `wall`.
pub fn core_percent(cpu: Duration, wall: Duration) -> f64 {
    if wall.is_zero() {
        return f64::NAN;
    }
    cpu.as_secs_f64() * 100.0 / wall.as_secs_f64()
}

/// Latencies of a long run in bounded memory: logarithmic buckets 1%
/// wide from 1 µs to about 1,000 s (about 2,100 counters whatever the
/// number of values), so a night-long run's percentiles cost no more memory
/// than a second's. Percentiles are the upper edge of their bucket (at most
/// 1% high); the maximum is exact.
#[derive(Clone, Debug)]
pub struct LagHistogram {
    counts: Vec<u64>,
    count: u64,
    max: f64,
}

impl Default for LagHistogram {
    fn default() -> Self {
        LagHistogram::new()
    }
}

impl LagHistogram {
    /// Smallest value told apart from zero, seconds.
    const FLOOR_S: f64 = 1e-6;
    /// Growth factor from one bucket to the next.
    const STEP: f64 = 1.01;
    /// Buckets from `FLOOR_S` to about 1,000 s; anything longer lands in the last.
    const BUCKETS: usize = 2100;

    pub fn new() -> LagHistogram {
        LagHistogram {
            counts: vec![0; Self::BUCKETS],
            count: 0,
            max: 0.0,
        }
    }

    /// Records one lag in seconds; negative lags (clock steps between
    /// hosts) count as zero, NaN is ignored.
    pub fn record(&mut self, secs: f64) {
        if secs.is_nan() {
            return;
        }
        let secs = secs.max(0.0);
        let bucket = if secs <= Self::FLOOR_S {
            0
        } else {
            ((secs / Self::FLOOR_S).ln() / Self::STEP.ln()).ceil() as usize
        };
        self.counts[bucket.min(Self::BUCKETS - 1)] += 1;
        self.count += 1;
        self.max = self.max.max(secs);
    }

    pub fn merge(&mut self, other: &LagHistogram) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.count += other.count;
        self.max = self.max.max(other.max);
    }

    /// The value at quantile `q` (0..=1), as its bucket's upper edge, capped at the maximum.
    fn at(&self, q: f64) -> Duration {
        let rank = ((self.count - 1) as f64 * q).round() as u64 + 1;
        let mut seen = 0;
        for (i, n) in self.counts.iter().enumerate() {
            seen += n;
            if seen >= rank {
                let edge = Self::FLOOR_S * Self::STEP.powi(i as i32);
                return Duration::from_secs_f64(edge.min(self.max));
            }
        }
        Duration::from_secs_f64(self.max)
    }

    pub fn percentiles(&self) -> Percentiles {
        if self.count == 0 {
            return Percentiles::default();
        }
        Percentiles {
            count: self.count as usize,
            p50: self.at(0.50),
            p99: self.at(0.99),
            max: Duration::from_secs_f64(self.max),
        }
    }
}

/// A tokio runtime whose threads carry `name`, so their CPU can be told apart.
pub struct NamedRuntime(Option<tokio::runtime::Runtime>);

impl NamedRuntime {
    pub fn new(name: &str, threads: usize) -> anyhow::Result<NamedRuntime> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name(name)
            .enable_all()
            .build()
            .with_context(|| format!("starting the {name} runtime"))?;
        Ok(NamedRuntime(Some(rt)))
    }

    pub fn handle(&self) -> &tokio::runtime::Handle {
        self.0.as_ref().expect("present until dropped").handle()
    }
}

impl Drop for NamedRuntime {
    fn drop(&mut self) {
        // Dropping a runtime inside another one panics; this does not wait.
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_a_known_set() {
        let values = (1..=100).map(Duration::from_millis).collect();
        let p = Percentiles::of(values);
        assert_eq!(p.count, 100);
        assert_eq!(p.p50, Duration::from_millis(51));
        assert_eq!(p.p99, Duration::from_millis(99));
        assert_eq!(p.max, Duration::from_millis(100));
        assert_eq!(Percentiles::of(Vec::new()).count, 0);
    }

    #[test]
    fn the_histogram_is_within_one_percent_and_its_max_exact() {
        let mut h = LagHistogram::new();
        for ms in 1..=1000 {
            h.record(ms as f64 / 1e3);
        }
        h.record(-0.5);
        let p = h.percentiles();
        assert_eq!(p.count, 1001);
        let near = |d: Duration, want: f64| (d.as_secs_f64() - want).abs() <= want * 0.011;
        assert!(near(p.p50, 0.500), "p50 {:?}", p.p50);
        assert!(near(p.p99, 0.990), "p99 {:?}", p.p99);
        assert_eq!(p.max, Duration::from_secs(1));
        let mut other = LagHistogram::new();
        other.record(2000.0);
        h.merge(&other);
        assert_eq!(h.percentiles().max, Duration::from_secs(2000));
        assert_eq!(LagHistogram::new().percentiles().count, 0);
    }

    #[test]
    fn stat_and_status_lines_are_read() {
        let stat = "4242 (tokio (rt) w) S 1 4242 4242 0 -1 4194560 300 0 0 0 250 50 0 0 20 0 9 0 100 0 0";
        let (comm, cpu) = parse_stat(stat).unwrap();
        assert_eq!(comm, "tokio (rt) w");
        assert_eq!(cpu, Duration::from_secs(3));
        assert!(parse_stat("4242 (x) S 1").is_none());
        let status = "Name:\tredis-server\nVmPeak:\t  9000 kB\nVmRSS:\t    1234 kB\nThreads:\t5\n";
        assert_eq!(parse_status_rss(status), Some(1234 * 1024));
        assert_eq!(parse_status_rss("Name: x\n"), None);
    }

    #[test]
    fn own_cpu_time_is_readable() {
        let t0 = own_cpu();
        let mut x = 0u64;
        for i in 0..50_000_000u64 {
            x = x.wrapping_add(i ^ (x >> 3));
        }
        assert!(x != 1);
        assert!(own_cpu() >= t0);
        assert!(stat_cpu("/proc/self/stat").is_some());
    }
}
