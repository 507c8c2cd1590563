//! A real `redis-server` for one test: its own free port (never 6379, so a
//! developer's Redis is never touched), its own temporary directory, killed
//! and cleaned up on drop. No persistence, unless started with
//! [`RedisServer::start_persistent`] to test what survives a restart.
//!
//! Synchronous on purpose (std::process, std::net), so any test can use it,
//! async or not. Each test starts its own server, so tests run in parallel.
//! The benchmarks (`meridian-bench`) start theirs with it too: its pid and
//! directory are there for them to read its CPU time and keep their logs.

use anyhow::{bail, Context};
use std::fs::{self, OpenOptions};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How long a server may take to answer PING after it was started.
const STARTUP_DEADLINE: Duration = Duration::from_secs(10);

/// Pause between two readiness probes while the server starts.
const PROBE_INTERVAL: Duration = Duration::from_millis(20);

/// How many fresh ports to try when another process takes ours between
/// choosing it and the server binding it.
const PORT_ATTEMPTS: usize = 5;

/// The port a developer's own Redis listens on: never used by tests.
const DEFAULT_REDIS_PORT: u16 = 6379;

/// Distinguishes the temporary directories of servers in one test process.
static NEXT_SERVER: AtomicU64 = AtomicU64::new(0);

/// A running `redis-server` child process.
#[derive(Debug)]
pub struct RedisServer {
    binary: PathBuf,
    port: u16,
    dir: PathBuf,
    /// Whether every write goes to an append-only file in `dir` first.
    persistent: bool,
    child: Option<Child>,
    /// `redis_version` of `INFO server`, read when the server first answered.
    version: String,
}

/// Why one attempt to start the server failed.
enum StartError {
    /// Another process holds the port: try another one.
    PortTaken,
    /// Anything else: give up.
    Failed(anyhow::Error),
}

impl RedisServer {
    /// Starts a server on a free port and waits until it answers PING.
    pub fn start() -> anyhow::Result<RedisServer> {
        RedisServer::start_with(false)
    }

    /// Like [`RedisServer::start`], but with an append-only file fsynced on
    /// every write (`--appendonly yes --appendfsync always`) in the server's
    /// temporary directory, so data acknowledged before [`RedisServer::stop`]
    /// (a kill, as in a crash) is there again after [`RedisServer::restart`].
    pub fn start_persistent() -> anyhow::Result<RedisServer> {
        RedisServer::start_with(true)
    }

    fn start_with(persistent: bool) -> anyhow::Result<RedisServer> {
        let binary = find_redis_server()?;
        let dir = std::env::temp_dir().join(format!(
            "meridian-redis-{}-{}",
            std::process::id(),
            NEXT_SERVER.fetch_add(1, Ordering::Relaxed)
        ));
        // A directory left behind by an earlier process with the same pid.
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir)
            .with_context(|| format!("creating the Redis directory {}", dir.display()))?;
        let mut server = RedisServer {
            binary,
            port: 0,
            dir,
            persistent,
            child: None,
            version: String::new(),
        };
        for _ in 0..PORT_ATTEMPTS {
            server.port = free_port()?;
            match server.spawn_and_wait() {
                Ok(()) => return Ok(server),
                Err(StartError::PortTaken) => continue,
                Err(StartError::Failed(err)) => return Err(err),
            }
        }
        bail!("redis-server found every one of {PORT_ATTEMPTS} free ports taken when binding")
    }

    /// `redis://127.0.0.1:<port>/`, for `RedisStore::connect`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's process id, while it runs (`None` after [`RedisServer::stop`]).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The server's own temporary directory (its log, its append-only file),
    /// removed on drop: a place for files that should go with it.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The server's version (`redis_version` of `INFO server`), e.g. `7.0.15`.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// Kills the server (as a crash would) and waits until it is gone.
    /// Does nothing if it is already stopped.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port and waits until it answers
    /// PING: what clients see when Redis restarts. The server comes back
    /// empty, or, if started with [`RedisServer::start_persistent`], with
    /// every write acknowledged before it stopped.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.stop();
        let deadline = Instant::now() + STARTUP_DEADLINE;
        loop {
            match self.spawn_and_wait() {
                Ok(()) => return Ok(()),
                // Our own old socket may linger briefly; the port is ours.
                Err(StartError::PortTaken) if Instant::now() < deadline => std::thread::sleep(PROBE_INTERVAL),
                Err(StartError::PortTaken) => {
                    bail!("port {} stayed taken after stopping redis-server", self.port)
                }
                Err(StartError::Failed(err)) => return Err(err),
            }
        }
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join("redis.log")
    }

    fn log(&self) -> String {
        fs::read_to_string(self.log_path()).unwrap_or_else(|e| format!("(no log: {e})"))
    }

    /// Spawns the server on `self.port` and waits until it answers PING.
    fn spawn_and_wait(&mut self) -> Result<(), StartError> {
        let failed = StartError::Failed;
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .with_context(|| format!("opening {}", self.log_path().display()))
            .map_err(failed)?;
        let log_offset = log.metadata().map(|m| m.len()).unwrap_or(0);
        let stderr = log
            .try_clone()
            .context("duplicating the log file handle")
            .map_err(failed)?;
        let child = Command::new(&self.binary)
            .arg("--port")
            .arg(self.port.to_string())
            .args(["--bind", "127.0.0.1", "--save", ""])
            .args(if self.persistent {
                ["--appendonly", "yes", "--appendfsync", "always"].as_slice()
            } else {
                ["--appendonly", "no"].as_slice()
            })
            .arg("--dir")
            .arg(&self.dir)
            .args(["--daemonize", "no"])
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(stderr))
            .spawn()
            .with_context(|| format!("starting {}", self.binary.display()))
            .map_err(failed)?;
        let pid = child.id();
        self.child = Some(child);

        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        let deadline = Instant::now() + STARTUP_DEADLINE;
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    self.child = None;
                    let log = self.log();
                    let this_run = log.get(log_offset as usize..).unwrap_or(&log);
                    if this_run.contains("Address already in use") {
                        return Err(StartError::PortTaken);
                    }
                    return Err(failed(anyhow::anyhow!(
                        "redis-server on port {} exited with {status} before answering PING; log:\n{this_run}",
                        self.port
                    )));
                }
            }
            match probe(addr) {
                Ok((server_pid, version)) if server_pid == pid => {
                    self.version = version;
                    return Ok(());
                }
                // Another process answers on the port we chose: ours cannot bind.
                Ok(_) => {
                    self.stop();
                    return Err(StartError::PortTaken);
                }
                Err(_) if Instant::now() < deadline => std::thread::sleep(PROBE_INTERVAL),
                Err(err) => {
                    self.stop();
                    return Err(failed(anyhow::anyhow!(
                        "redis-server on port {} did not answer PING within {:?} ({err}); log:\n{}",
                        self.port,
                        STARTUP_DEADLINE,
                        self.log()
                    )));
                }
            }
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// `redis-server` on PATH, or a message saying how to install it.
fn find_redis_server() -> anyhow::Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join("redis-server"))
        .find(|candidate| is_executable(candidate))
        .context("redis-server is not installed: run ./scripts/test, or apt-get install -y redis-server")
}

fn is_executable(path: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        path.metadata()
            .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            .unwrap_or(false)
    }
    #[cfg(not(unix))]
    {
        path.is_file()
    }
}

/// A port nothing listens on right now, never 6379. Another process may
/// take it before the server binds it; `start` then tries another.
pub fn free_port() -> anyhow::Result<u16> {
    loop {
        let listener = TcpListener::bind("127.0.0.1:0").context("binding 127.0.0.1:0 to find a free port")?;
        let port = listener.local_addr().context("reading the free port")?.port();
        if port != DEFAULT_REDIS_PORT {
            return Ok(port);
        }
    }
}

/// Sends PING and, once answered `+PONG`, asks which process answered
/// (`INFO server`), so a server of another test that happens to hold the
/// port is not mistaken for ours. Returns that process id and the server's version.
fn probe(addr: SocketAddr) -> std::io::Result<(u32, String)> {
    let timeout = Duration::from_millis(500);
    let mut stream = TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;

    stream.write_all(b"PING\r\n")?;
    let mut reply = Vec::new();
    read_until(&mut stream, &mut reply, |r| r.ends_with(b"\r\n"))?;
    if !reply.starts_with(b"+PONG") {
        return Err(other(format!(
            "PING answered {:?}",
            String::from_utf8_lossy(&reply)
        )));
    }

    stream.write_all(b"INFO server\r\n")?;
    let mut reply = Vec::new();
    read_until(&mut stream, &mut reply, |r| {
        bulk_string(r).is_some() || r.starts_with(b"-") && r.ends_with(b"\r\n")
    })?;
    let info = bulk_string(&reply)
        .ok_or_else(|| other(format!("INFO answered {:?}", String::from_utf8_lossy(&reply))))?;
    let info = String::from_utf8_lossy(info);
    let field = |name: &str| {
        info.lines()
            .find_map(|line| line.strip_prefix(name))
            .map(str::trim)
    };
    let pid = field("process_id:")
        .and_then(|pid| pid.parse().ok())
        .ok_or_else(|| other("INFO server has no process_id".to_string()))?;
    Ok((pid, field("redis_version:").unwrap_or("?").to_string()))
}

/// Reads into `buf` until `done(buf)`; bounded, since a reply to our two
/// commands is a few kilobytes.
fn read_until(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    done: impl Fn(&[u8]) -> bool,
) -> std::io::Result<()> {
    const MAX_REPLY: usize = 64 * 1024;
    let mut chunk = [0u8; 4096];
    while !done(buf) {
        if buf.len() > MAX_REPLY {
            return Err(other("reply longer than 64 KiB".to_string()));
        }
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Ok(())
}

/// The payload of a complete RESP bulk string `$<len>\r\n<payload>\r\n`.
fn bulk_string(reply: &[u8]) -> Option<&[u8]> {
    let rest = reply.strip_prefix(b"$")?;
    let header_end = rest.windows(2).position(|w| w == b"\r\n")?;
    let len: usize = std::str::from_utf8(&rest[..header_end]).ok()?.parse().ok()?;
    let payload = rest.get(header_end + 2..header_end + 2 + len)?;
    let tail = rest.get(header_end + 2 + len..header_end + 4 + len)?;
    (tail == b"\r\n").then_some(payload)
}

fn other(message: String) -> std::io::Error {
    std::io::Error::other(message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_server_tells_its_pid_version_and_directory() {
        let mut server = RedisServer::start().unwrap();
        let pid = server.pid().expect("a running server has a pid");
        assert!(Path::new(&format!("/proc/{pid}")).exists(), "pid {pid}");
        let (answered, version) = probe(SocketAddr::from(([127, 0, 0, 1], server.port()))).unwrap();
        assert_eq!(answered, pid);
        assert_eq!(server.version(), version);
        assert!(
            server.version().starts_with(|c: char| c.is_ascii_digit()),
            "{}",
            server.version()
        );
        let dir = server.dir().to_path_buf();
        assert!(dir.join("redis.log").is_file());
        server.stop();
        assert_eq!(server.pid(), None);
        drop(server);
        assert!(!dir.exists(), "{} is left behind", dir.display());
    }
}
