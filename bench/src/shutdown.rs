//! Stopping a bench: the first SIGINT or SIGTERM cancels a token that
//! every bench checks between its steps (and while it waits), so it stops
//! its servers and load generators on the way out; a second signal exits at once.

use anyhow::bail;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// A token cancelled by the first SIGINT or SIGTERM; a second one exits at once.
pub fn on_signals() -> CancellationToken {
    let token = CancellationToken::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).ok();
        let mut signals = 0;
        loop {
            match term.as_mut() {
                Some(term) => tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                },
                None => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
            signals += 1;
            if signals == 1 {
                eprintln!("meridian-bench: interrupted; stopping (signal again to quit at once)");
                cancel.cancel();
            } else {
                std::process::exit(130);
            }
        }
    });
    token
}

/// Fails if the run was interrupted (Ctrl-C), so a bench stops between steps.
pub fn interrupted(shutdown: &CancellationToken) -> anyhow::Result<()> {
    if shutdown.is_cancelled() {
        bail!("interrupted");
    }
    Ok(())
}

/// Sleeps `d`, or fails if the run is interrupted meanwhile.
pub async fn sleep_unless(d: Duration, shutdown: &CancellationToken) -> anyhow::Result<()> {
    tokio::select! {
        _ = tokio::time::sleep(d) => Ok(()),
        _ = shutdown.cancelled() => bail!("interrupted"),
    }
}
