//! A server under test in a process of its own, started fresh for one run:
//! LOVE's relay under daphne, or Meridian's frontend (`meridian manager
//! --role frontend`); its CPU and RSS are read from `/proc/<pid>`.

use super::args::RunContext;
use super::args::{Server, PASSWORD, START_TIMEOUT, TOKEN};
use crate::binaries;
use crate::load_generator::reap;
use crate::redis_tools::free_port;
use crate::shutdown::sleep_unless;
use anyhow::{bail, Context};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// A server process started for one run; killed when dropped.
pub(super) struct ServerProcess {
    pub(super) child: Child,
    pub(super) port: u16,
    pub(super) log: PathBuf,
    /// Meridian's configuration file, removed with the process.
    pub(super) config: Option<PathBuf>,
}

impl ServerProcess {
    /// Starts `server` on a free port and waits until it accepts connections.
    pub(super) async fn start(
        server: Server,
        ctx: &RunContext<'_>,
        shutdown: &CancellationToken,
    ) -> anyhow::Result<ServerProcess> {
        let port = free_port()?;
        let log = ctx.redis.dir().join(format!("{}-{port}.log", server.name()));
        let log_file = std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let mut config = None;
        let mut command = match server {
            Server::Django => {
                let mut c = Command::new(ctx.venv.join("bin/daphne"));
                c.current_dir(&ctx.args.love_dir)
                    .args(["-v", "0", "-b", "127.0.0.1", "-p", &port.to_string()])
                    .arg("lovebench.asgi:application")
                    .env("LOVEBENCH_REDIS_URL", format!("{}0", ctx.redis.url()))
                    .env("LOVEBENCH_PASSWORD", PASSWORD)
                    .env("LOVEBENCH_TOKENS", TOKEN)
                    .env("LOVEBENCH_CAPACITY", ctx.args.capacity.to_string())
                    .env("LOVEBENCH_EXPIRY", ctx.args.expiry.to_string());
                c
            }
            Server::Meridian => {
                let path = ctx.redis.dir().join(format!("meridian-{port}.toml"));
                std::fs::write(&path, meridian_config(&ctx.redis.url(), port))
                    .with_context(|| format!("writing {}", path.display()))?;
                let mut c = Command::new(binaries::meridian(ctx.args.meridian.as_deref())?);
                c.arg("--config")
                    .arg(&path)
                    .args(["manager", "--role", "frontend"])
                    .env("TOKIO_WORKER_THREADS", ctx.args.frontend_threads.to_string())
                    .env(
                        "RUST_LOG",
                        std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
                    );
                config = Some(path);
                c
            }
        };
        let child = command
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            .spawn()
            .with_context(|| format!("starting {}", server.name()))?;
        let mut process = ServerProcess {
            child,
            port,
            log,
            config,
        };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
                return Ok(process);
            }
            if process.exited() {
                bail!("{} exited at start; {}", server.name(), process.log_tail());
            }
            if Instant::now() > deadline {
                bail!(
                    "{} did not listen on port {port} within {START_TIMEOUT:?}; {}",
                    server.name(),
                    process.log_tail()
                );
            }
            sleep_unless(Duration::from_millis(50), shutdown).await?;
        }
    }

    pub(super) fn pid(&self) -> u32 {
        self.child.id()
    }

    pub(super) fn exited(&mut self) -> bool {
        !matches!(self.child.try_wait(), Ok(None))
    }

    /// The end of its log, for error messages.
    pub(super) fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(8)..].join("\n");
        format!("its log ({}) ends:\n{tail}", self.log.display())
    }

    /// SIGTERM, then SIGKILL if it has not exited within 5 s.
    pub(super) async fn stop(mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline && !self.exited() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        reap(&mut self.child);
        if let Some(path) = &self.config {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// The frontend under test: Redis store, LOVE producers admitted with the password.
fn meridian_config(redis_url: &str, port: u16) -> String {
    format!(
        "[store]\nbackend = \"redis\"\nredis_url = \"{redis_url}\"\n\n[frontend]\nlisten = \"127.0.0.1:{port}\"\n\
         tokens = [\"{TOKEN}\"]\nlove_password = \"{PASSWORD}\"\n"
    )
}

pub(super) fn rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        })
        .map_or(0.0, |kib| kib / 1024.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meridian_config_is_valid_and_admits_love_producers() {
        let text = meridian_config("redis://127.0.0.1:7000/", 4321);
        let config: meridian_config::Config = toml::from_str(&text).unwrap();
        config.validate().unwrap();
        assert_eq!(config.frontend.love_password.as_deref(), Some(PASSWORD));
        assert_eq!(config.frontend.listen.port(), 4321);
        assert_eq!(config.frontend.tokens, [TOKEN]);
    }
}
