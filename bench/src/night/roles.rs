//! A role of the night as a process of the `meridian` binary (the test
//! harness's [`Process`]), with its own metrics port and log file; killed
//! when dropped.

use crate::shutdown::sleep_unless;
use anyhow::{bail, Context};
use meridian_testkit::process::Process;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

pub(super) use meridian_testkit::process::free_udp_port;

/// Longest wait for a role to answer `/readyz` with 200, and for the browsers to connect.
pub(super) const START_TIMEOUT: Duration = Duration::from_secs(60);

/// How long one `/readyz` may take to answer.
const READYZ_TIMEOUT: Duration = Duration::from_secs(5);

/// A role running as a process of the `meridian` binary; killed when dropped.
pub(super) struct RoleProcess {
    pub(super) role: String,
    process: Process,
    pub(super) metrics: SocketAddr,
}

impl RoleProcess {
    /// Starts `meridian` (the binary at `exe`) with `args`, its metrics on a
    /// free port, its log in `dir`.
    pub(super) fn spawn(exe: &Path, role: &str, args: &[&str], dir: &Path) -> anyhow::Result<RoleProcess> {
        let log = dir.join(format!("{}.log", role.replace([' ', ':'], "-")));
        let rust_log = std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into());
        let process = Process::start_logging_to(exe, args, &[("RUST_LOG", &rust_log)], log)
            .with_context(|| format!("starting the {role} process"))?;
        Ok(RoleProcess {
            role: role.to_string(),
            metrics: process.metrics,
            process,
        })
    }

    pub(super) fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// Fails, with the end of its log, if the process has exited.
    pub(super) fn check_alive(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.process.try_wait() {
            let log = self.process.log_text();
            let tail: Vec<&str> = log.lines().rev().take(5).collect();
            bail!(
                "the {} process exited ({status}); the end of {}:\n{}",
                self.role,
                self.process.log.display(),
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
        Ok(())
    }

    pub(super) async fn wait_ready(&mut self, shutdown: &CancellationToken) -> anyhow::Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            self.check_alive()?;
            if let Ok(Ok((200, _))) = tokio::time::timeout(READYZ_TIMEOUT, self.process.readyz()).await {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "the {} process was not ready within {START_TIMEOUT:?} (see {})",
                    self.role,
                    self.process.log.display()
                );
            }
            sleep_unless(Duration::from_millis(100), shutdown).await?;
        }
    }
}
