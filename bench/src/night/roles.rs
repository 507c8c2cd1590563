//! A role of the night as a process of the `meridian` binary, with its
//! own metrics port and log file; killed when dropped.

use super::scrape::http_get;
use super::START_TIMEOUT;
use crate::redis_tools::free_port;
use crate::shutdown::sleep_unless;
use anyhow::{bail, Context};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// A role running as a process of this binary; killed when dropped.
pub(super) struct RoleProcess {
    pub(super) role: String,
    pub(super) child: Child,
    pub(super) metrics: SocketAddr,
    pub(super) log: PathBuf,
}

impl RoleProcess {
    /// Starts `meridian` (the binary at `exe`) with `args`, its metrics on a
    /// free port, its log in `dir`.
    pub(super) fn spawn(exe: &Path, role: &str, args: &[&str], dir: &Path) -> anyhow::Result<RoleProcess> {
        let metrics: SocketAddr = ([127, 0, 0, 1], free_port()?).into();
        let log = dir.join(format!("{}.log", role.replace([' ', ':'], "-")));
        let file = std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let child = Command::new(exe)
            .args(args)
            .args(["--metrics-listen", &metrics.to_string()])
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .with_context(|| format!("starting the {role} process"))?;
        Ok(RoleProcess {
            role: role.to_string(),
            child,
            metrics,
            log,
        })
    }

    pub(super) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Fails, with the end of its log, if the process has exited.
    pub(super) fn check_alive(&mut self) -> anyhow::Result<()> {
        if let Ok(Some(status)) = self.child.try_wait() {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(5).collect();
            bail!(
                "the {} process exited ({status}); the end of {}:\n{}",
                self.role,
                self.log.display(),
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
        Ok(())
    }

    pub(super) async fn wait_ready(&mut self, shutdown: &CancellationToken) -> anyhow::Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            self.check_alive()?;
            if let Ok((200, _)) = http_get(self.metrics, "/readyz").await {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "the {} process was not ready within {START_TIMEOUT:?} (see {})",
                    self.role,
                    self.log.display()
                );
            }
            sleep_unless(Duration::from_millis(100), shutdown).await?;
        }
    }
}

impl Drop for RoleProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(super) fn free_udp_port() -> anyhow::Result<u16> {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").context("finding a free UDP port")?;
    Ok(socket.local_addr()?.port())
}
