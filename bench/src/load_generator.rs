//! A load generator: the browsers of a bench, in a process of their own so
//! that their CPU is not the server's. On the bench's side, the process and
//! its line protocol ([`LoadGenerator`], [`field`]); on the generator's side,
//! its stdin ([`commands`]) and the answers ([`serve`], [`Recorder`]).
//!
//! `fanout` and `love` each start their own generator (`meridian-bench
//! fanout-clients`, `love-clients`) with their own flags and counters; the
//! process handling and the way lines are read and checked is the same, so it
//! lives here once.

use anyhow::{bail, Context};
use std::io::{BufRead, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// A load generator process (`meridian-bench …-clients`): its stdin takes
/// one command a line, its stdout answers one line each, starting with a word
/// that says what the line is. It is killed on drop if still running, so a
/// failed run never leaves it behind.
pub struct LoadGenerator {
    child: Child,
    stdin: ChildStdin,
    lines: mpsc::UnboundedReceiver<String>,
}

impl LoadGenerator {
    /// Starts `command` with piped stdin and stdout (stderr inherited, so its
    /// errors show); `what` names it in the error if it cannot start.
    pub fn spawn(mut command: Command, what: &str) -> anyhow::Result<LoadGenerator> {
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting the load generator ({what})"))?;
        let stdin = child.stdin.take().context("load generator stdin")?;
        let stdout = child.stdout.take().context("load generator stdout")?;
        // A thread, not a task: the pipe is blocking, and an unbounded
        // channel is fine because the generator writes one line per command.
        let (tx, lines) = mpsc::unbounded_channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(LoadGenerator { child, stdin, lines })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The next line, which must start with `word`, split at whitespace.
    pub async fn expect(
        &mut self,
        word: &str,
        timeout: Duration,
        shutdown: &CancellationToken,
    ) -> anyhow::Result<Vec<String>> {
        let line = tokio::select! {
            line = tokio::time::timeout(timeout, self.lines.recv()) => line
                .with_context(|| format!("the load generator did not answer `{word}` within {timeout:?}"))?
                .context("the load generator exited (see its errors above)")?,
            _ = shutdown.cancelled() => bail!("interrupted"),
        };
        let parts: Vec<String> = line.split_whitespace().map(str::to_string).collect();
        if parts.first().map(String::as_str) != Some(word) {
            bail!("the load generator said {line:?}, expected `{word} …`");
        }
        Ok(parts)
    }

    /// Writes `command` as one line.
    pub fn send(&mut self, command: &str) -> anyhow::Result<()> {
        writeln!(self.stdin, "{command}")
            .and_then(|()| self.stdin.flush())
            .context("writing to the load generator")
    }

    /// Sends `command` and reads its answer, a `stat …` line.
    pub async fn ask(
        &mut self,
        command: &str,
        timeout: Duration,
        shutdown: &CancellationToken,
    ) -> anyhow::Result<Vec<String>> {
        self.send(command)?;
        self.expect("stat", timeout, shutdown).await
    }

    /// Asks the load generator to exit (its connections close with it) and
    /// waits for it (at most 10 s, then it is killed on drop).
    pub async fn quit(mut self) {
        let _ = self.send("quit");
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for LoadGenerator {
    fn drop(&mut self) {
        reap(&mut self.child);
    }
}

/// Kills `child` if it is still running and waits for it, so it leaves no zombie.
pub fn reap(child: &mut Child) {
    if let Ok(None) = child.try_wait() {
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// Field `i` of a load generator's line split by [`LoadGenerator::expect`].
pub fn field<T: std::str::FromStr>(parts: &[String], i: usize) -> anyhow::Result<T> {
    parts
        .get(i)
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("field {i} of the load generator's line {parts:?}"))
}

/// The load generator's side: the lines of this process's stdin (the bench's
/// commands), read by a thread; the channel closes when stdin does.
pub fn commands() -> mpsc::UnboundedReceiver<String> {
    let (tx, commands) = mpsc::unbounded_channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    commands
}

/// What a load generator's counters and lag recorder answer the bench with.
pub trait Recorder {
    /// The `stat …` line.
    fn stat(&self) -> String;
    /// Forgets what was recorded and starts recording lags.
    fn begin(&self);
    /// Stops recording lags.
    fn stop(&self);
    /// The `lags …` line of what was recorded (taken, so it is freed).
    fn lags(&self) -> String;
}

/// The load generator's side of the protocol: answers `stat`, `begin` (then
/// a `stat` line) and `end` (a `stat` line, then the `lags` line) until
/// `quit`, the end of stdin or `shutdown`. `who` names it in complaints.
pub async fn serve(
    commands: &mut mpsc::UnboundedReceiver<String>,
    recorder: &impl Recorder,
    who: &str,
    shutdown: &CancellationToken,
) {
    loop {
        let command = tokio::select! {
            c = commands.recv() => c,
            _ = shutdown.cancelled() => None,
        };
        match command.as_deref() {
            Some("stat") => println!("{}", recorder.stat()),
            Some("begin") => {
                recorder.begin();
                println!("{}", recorder.stat());
            }
            Some("end") => {
                recorder.stop();
                println!("{}", recorder.stat());
                println!("{}", recorder.lags());
            }
            Some("quit") | None => break,
            Some(other) => eprintln!("{who}: unknown command {other:?}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_names_the_line_it_could_not_read() {
        let parts: Vec<String> = ["stat", "7", "x"].map(str::to_string).into();
        assert_eq!(field::<u64>(&parts, 1).unwrap(), 7);
        let err = field::<u64>(&parts, 2).unwrap_err().to_string();
        assert!(err.contains("field 2"), "{err}");
        assert!(field::<u64>(&parts, 9).is_err());
    }
}
