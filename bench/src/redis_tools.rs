//! The stock Redis tools the benches run against their private server
//! (the test harness's [`RedisServer`]): `redis-cli` for what the benches
//! read back, `redis-benchmark` for the baseline they compare with.
//!
//! The server itself is the harness's, as in the tests: a free port (never
//! 6379), persistence off, killed and its directory removed on drop, error
//! paths included, so the baseline and the system under test hit the same,
//! otherwise idle Redis.

use anyhow::{bail, Context};
pub use meridian_testkit::redis_server::{free_port, RedisServer};
use std::process::{Command, Stdio};

/// The tools the bench runs, and where they come from on Debian/Ubuntu.
const TOOLS: [&str; 3] = ["redis-server", "redis-cli", "redis-benchmark"];
const INSTALL_HINT: &str = "apt-get install -y redis-server redis-tools";

/// Fails with the install command if a tool is missing from `PATH`.
pub fn require_tools() -> anyhow::Result<()> {
    let missing: Vec<&str> = TOOLS
        .into_iter()
        .filter(|tool| {
            Command::new(tool)
                .arg("--version")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_err()
        })
        .collect();
    if !missing.is_empty() {
        bail!(
            "{} not found on PATH; the bench needs them: {INSTALL_HINT}",
            missing.join(", ")
        );
    }
    Ok(())
}

/// Starts a private server and waits until it answers (blocking, so on a
/// runtime thread that may block).
pub fn start_server() -> anyhow::Result<RedisServer> {
    tokio::task::block_in_place(RedisServer::start)
}

/// The server's process id, whose CPU time the benches read; 0 (no
/// process, no CPU time) if it was stopped, which the benches never do.
pub fn pid(server: &RedisServer) -> u32 {
    server.pid().unwrap_or(0)
}

/// Runs one `redis-cli` command against `server`; its raw output.
pub fn cli(server: &RedisServer, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &server.port().to_string()])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .context("running redis-cli")?;
    if !out.status.success() {
        bail!(
            "redis-cli {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if let Some(err) = text.strip_prefix("ERR").or_else(|| text.strip_prefix("(error)")) {
        bail!("redis-cli {}: ERR{}", args.join(" "), err.trim_end());
    }
    Ok(text)
}

/// Empties the server between phases, so one phase's memory does not
/// slow the next.
pub fn flush(server: &RedisServer) -> anyhow::Result<()> {
    cli(server, &["FLUSHALL"])?;
    Ok(())
}

/// Entries ever appended to stream `key` (XINFO STREAM's `entries-added`,
/// Redis >= 7.0): unlike XLEN it does not shrink when `MAXLEN ~` trims, so
/// it checks "acknowledged ⇒ stored" at the production retention.
pub fn entries_added(server: &RedisServer, key: &str) -> anyhow::Result<u64> {
    let text = cli(server, &["XINFO", "STREAM", key])?;
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        if line.trim() == "entries-added" {
            let value = lines.next().unwrap_or("").trim();
            return value
                .parse()
                .with_context(|| format!("XINFO STREAM {key}: entries-added = {value:?}"));
        }
    }
    bail!("XINFO STREAM {key} has no entries-added (Redis >= 7.0 is needed)")
}

/// `redis-benchmark -P 64 -r <streams> XADD bench:__rand_int__ MAXLEN ~
/// <maxlen> * f <payload>` with `requests` requests: its requests per second.
pub fn benchmark_xadd(
    server: &RedisServer,
    payload: usize,
    maxlen: usize,
    streams: u32,
    requests: u64,
) -> anyhow::Result<f64> {
    let value = "x".repeat(payload);
    let (port, streams, requests, maxlen) = (
        server.port().to_string(),
        streams.to_string(),
        requests.to_string(),
        maxlen.to_string(),
    );
    let out = Command::new("redis-benchmark")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-P",
            "64",
            "-r",
            &streams,
            "-n",
            &requests,
        ])
        .args([
            "-q",
            "--csv",
            "XADD",
            "bench:__rand_int__",
            "MAXLEN",
            "~",
            &maxlen,
            "*",
            "f",
        ])
        .arg(&value)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running redis-benchmark ({INSTALL_HINT})"))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "redis-benchmark failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    parse_benchmark_csv(&stdout)
        .with_context(|| format!("cannot read redis-benchmark's output: {:?}", abbreviate(&stdout)))
}

/// The `rps` column of `redis-benchmark --csv`:
/// `"test","rps",...` then `"XADD ...","612345.67",...`.
fn parse_benchmark_csv(text: &str) -> anyhow::Result<f64> {
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let header = lines.next().context("no header line")?;
    let column = header
        .split(',')
        .position(|c| c.trim_matches('"') == "rps")
        .context("no rps column")?;
    let row = lines.next().context("no result line")?;
    // The test name holds only the command and its arguments (no commas or
    // quotes: the payload is 'x's), so a plain split is exact.
    let field = row.split(',').nth(column).context("short result line")?;
    let rps: f64 = field.trim_matches('"').parse().context("rps is not a number")?;
    Ok(rps)
}

fn abbreviate(text: &str) -> String {
    let text = text.trim();
    if text.len() <= 300 {
        return text.to_string();
    }
    let mut cut = 300;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}…", &text[..cut])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_rps_column() {
        let out = "\"test\",\"rps\",\"avg_latency_ms\",\"min_latency_ms\"\n\
                   \"XADD bench:__rand_int__ MAXLEN ~ 10000 * f xxxx\",\"612345.67\",\"4.1\",\"0.9\"\n";
        assert_eq!(parse_benchmark_csv(out).unwrap(), 612345.67);
        assert!(parse_benchmark_csv("").is_err());
    }
}
