//! A private `redis-server` for one benchmark run, and the stock tools that
//! talk to it (`redis-cli`, `redis-benchmark`).
//!
//! The bench starts its own server rather than using a shared one so that
//! the baseline and the system under test hit the same, otherwise idle
//! Redis, with persistence off (`--save "" --appendonly no`) as in the
//! baseline figures of docs/performance.md. The server is killed and its
//! directory removed when [`RedisServer`] is dropped, error paths included.

use anyhow::{bail, Context};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The tools the bench runs, and where they come from on Debian/Ubuntu.
const TOOLS: [&str; 3] = ["redis-server", "redis-cli", "redis-benchmark"];
const INSTALL_HINT: &str = "apt-get install -y redis-server redis-tools";

/// How long a fresh server may take to answer PING.
const START_TIMEOUT: Duration = Duration::from_secs(10);

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

/// A running `redis-server` owned by this process.
pub struct RedisServer {
    child: Child,
    port: u16,
    dir: PathBuf,
    pub version: String,
}

impl RedisServer {
    /// Starts a server on a free local port (never 6379, so a developer's
    /// Redis is left alone) in a fresh temporary directory, and waits until
    /// it answers.
    pub fn start() -> anyhow::Result<RedisServer> {
        let port = free_port()?;
        let dir = std::env::temp_dir().join(format!("meridian-bench-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .arg("--dir")
            .arg(&dir)
            .arg("--logfile")
            .arg(dir.join("redis.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting redis-server ({INSTALL_HINT})"))?;
        let mut server = RedisServer {
            child,
            port,
            dir,
            version: String::new(),
        };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = server.child.try_wait()? {
                bail!(
                    "redis-server exited at start ({status}); see {}",
                    server.dir.join("redis.log").display()
                );
            }
            if server.cli(&["PING"]).map(|r| r.trim() == "PONG").unwrap_or(false) {
                break;
            }
            if Instant::now() > deadline {
                bail!("redis-server on port {port} did not answer PING within {START_TIMEOUT:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let info = server.cli(&["INFO", "server"])?;
        server.version = info
            .lines()
            .find_map(|l| l.strip_prefix("redis_version:"))
            .unwrap_or("?")
            .trim()
            .to_string();
        Ok(server)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    /// Runs one `redis-cli` command against this server; its raw output.
    pub fn cli(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
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
    pub fn flush(&self) -> anyhow::Result<()> {
        self.cli(&["FLUSHALL"])?;
        Ok(())
    }

    /// Entries ever appended to stream `key` (XINFO STREAM's
    /// `entries-added`, Redis >= 7.0): unlike XLEN it does not shrink when
    /// `MAXLEN ~` trims, so it checks "acknowledged ⇒ stored" at the
    /// production retention.
    pub fn entries_added(&self, key: &str) -> anyhow::Result<u64> {
        let text = self.cli(&["XINFO", "STREAM", key])?;
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
        &self,
        payload: usize,
        maxlen: usize,
        streams: u32,
        requests: u64,
    ) -> anyhow::Result<f64> {
        let value = "x".repeat(payload);
        let (port, streams, requests, maxlen) = (
            self.port.to_string(),
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
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A local TCP port free right now (the OS picks it; it is very unlikely to
/// be taken in the milliseconds before redis-server binds it).
pub fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(listener.local_addr()?.port())
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
