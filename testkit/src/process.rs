//! Roles of the `meridian` binary in processes of their own, each with its
//! metrics listener on a free port and its log in a file: what the
//! cross-process tests start, scrape, kill and restart, and what the
//! benchmark's night runs.

use crate::http::Request;
use anyhow::Context;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};

/// Distinguishes the log files of processes of one test binary.
static NEXT_LOG: AtomicU64 = AtomicU64::new(0);

/// A free TCP port on the loopback interface (the OS may hand it to someone
/// else before we bind it; tests bind it at once).
pub fn free_tcp_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free TCP port")
}

/// A free UDP port on the loopback interface (QUIC).
pub fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .expect("a free UDP port")
}

/// One `meridian` process; killed when dropped.
pub struct Process {
    child: Child,
    /// Its `--metrics-listen` address (`/metrics`, `/healthz`, `/readyz`).
    pub metrics: SocketAddr,
    /// The file its standard error (the log) goes to.
    pub log: PathBuf,
    /// Its binary and command line, to start it again.
    binary: PathBuf,
    args: Vec<String>,
    envs: Vec<(String, String)>,
}

impl Process {
    /// Starts `meridian <args…> --metrics-listen 127.0.0.1:<free port>` with
    /// `RUST_LOG=info` (or the value in `envs`), logging to a temporary file.
    pub fn start(binary: &str, args: &[&str], envs: &[(&str, &str)]) -> anyhow::Result<Process> {
        let log = std::env::temp_dir().join(format!(
            "meridian-test-{}-{}.log",
            std::process::id(),
            NEXT_LOG.fetch_add(1, Ordering::Relaxed)
        ));
        Process::start_logging_to(Path::new(binary), args, envs, log)
    }

    /// [`Process::start`] with its log in `log` (removed with the process).
    pub fn start_logging_to(
        binary: &Path,
        args: &[&str],
        envs: &[(&str, &str)],
        log: PathBuf,
    ) -> anyhow::Result<Process> {
        let metrics: SocketAddr = ([127, 0, 0, 1], free_tcp_port()).into();
        Ok(Process {
            child: spawn(binary, args, envs, metrics, &log)?,
            metrics,
            log,
            binary: binary.to_path_buf(),
            args: args.iter().map(|a| a.to_string()).collect(),
            envs: envs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL: no drain, no goodbye (a crash, an OOM kill).
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM: the role drains and exits.
    pub fn terminate(&mut self) -> anyhow::Result<()> {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()?;
        anyhow::ensure!(status.success(), "kill -TERM failed");
        Ok(())
    }

    /// SIGSTOP / SIGCONT: the process is frozen (a paused pod, a machine
    /// swapping): its sockets stay open but nothing is read or sent.
    pub fn signal(&self, signal: &str) -> anyhow::Result<()> {
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .stderr(Stdio::null())
            .status()?;
        anyhow::ensure!(status.success(), "kill -{signal} failed");
        Ok(())
    }

    /// The exit status, if it has exited.
    pub fn try_wait(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Kills it (if running) and starts it again with the same command line
    /// and metrics port, appending to the same log.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.kill9();
        let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        let envs: Vec<(&str, &str)> = self.envs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        self.child = spawn(&self.binary, &args, &envs, self.metrics, &self.log)?;
        Ok(())
    }

    /// `GET /metrics`, parsed.
    pub async fn scrape(&self) -> anyhow::Result<Metrics> {
        let response = Request::get("/metrics").send(self.metrics).await?;
        anyhow::ensure!(response.status == 200, "/metrics answered {}", response.status);
        Ok(Metrics(response.text()))
    }

    /// `GET /readyz`: the status and the body.
    pub async fn readyz(&self) -> anyhow::Result<(u16, String)> {
        let response = Request::get("/readyz").send(self.metrics).await?;
        Ok((response.status, response.text()))
    }

    /// Resident memory now, in bytes, from `/proc/<pid>/status`.
    pub fn rss_bytes(&self) -> Option<u64> {
        rss_of(self.child.id())
    }

    /// The log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        // A stopped process cannot die of SIGKILL until continued.
        let _ = self.signal("CONT");
        self.kill9();
        if !std::thread::panicking() {
            let _ = std::fs::remove_file(&self.log);
        }
    }
}

fn spawn(
    binary: &Path,
    args: &[&str],
    envs: &[(&str, &str)],
    metrics: SocketAddr,
    log: &Path,
) -> anyhow::Result<Child> {
    let stderr = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("log file {}", log.display()))?;
    let mut command = Command::new(binary);
    command
        .args(args)
        .args(["--metrics-listen", &metrics.to_string()])
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr);
    for (k, v) in envs {
        command.env(k, v);
    }
    command
        .spawn()
        .with_context(|| format!("start {} {args:?}", binary.display()))
}

/// Resident memory of process `pid`, in bytes.
pub fn rss_of(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// A scraped `/metrics` page.
#[derive(Debug, Clone)]
pub struct Metrics(pub String);

impl Metrics {
    /// The value of the series `series` exactly as written before the value
    /// (`name` or `name{label="value"}`), if present.
    pub fn get(&self, series: &str) -> Option<f64> {
        self.0.lines().find_map(|line| {
            let rest = line.strip_prefix(series)?.strip_prefix(' ')?;
            rest.trim().parse().ok()
        })
    }

    /// Like [`Metrics::get`], failing with the page in the message.
    pub fn value(&self, series: &str) -> anyhow::Result<f64> {
        self.get(series)
            .with_context(|| format!("no series {series} in:\n{}", self.0))
    }
}
