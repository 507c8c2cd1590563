//! `meridian-bench all`: every benchmark in one run, on this machine, with
//! its baseline measured in the same run, written as one markdown report
//! (docs/performance.md, "The report: meridian-bench all").
//!
//! Sections, in order: the Redis baseline and the ingest path (`ingest`,
//! shortened), the fan-out at 100 and 1,000 clients against a bare
//! broadcast (`fanout`), the night-like load with every role in its own
//! process ([`crate::night`]), and the LOVE comparison (`love`, run as a
//! subprocess; reported as not run, with the reason, when it cannot run). A
//! status line on stderr says where the run is; the report goes to stdout
//! and to `--out`. `--quick` is a short smoke run; docs/performance.md says
//! how long each takes.

use crate::binaries;
use crate::fanout::{self, FanoutArgs};
use crate::ingest::{self, IngestArgs};
use crate::night::{self, NightArgs};
use crate::progress::{Say, Status};
use crate::report::{self, LoveResults, Machine, Report};
use anyhow::Context;
use clap::Args;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio_util::sync::CancellationToken;

#[derive(Args, Debug, Clone)]
pub struct AllArgs {
    /// Where to write the markdown report (it is printed too).
    #[arg(long, default_value = "target/bench-report.md", value_name = "FILE")]
    out: PathBuf,
    /// A smoke run of a minute or two: shorter windows, one payload size, 100 clients only.
    #[arg(long)]
    quick: bool,
    /// Leave out the LOVE comparison (it needs Python and the replaced system's packages).
    #[arg(long)]
    no_love: bool,
    /// The `meridian` binary whose roles the night and LOVE sections run (default: the one next to meridian-bench).
    #[arg(long, value_name = "PATH")]
    meridian: Option<PathBuf>,
}

/// How long each section runs, and with which flags, for a full or a quick run.
struct Plan {
    ingest: Vec<&'static str>,
    /// One `meridian-bench fanout` run per entry: JSON frames at 100 and 1,000
    /// clients, then binary frames, then a control room's load.
    fanout: Vec<Vec<&'static str>>,
    night: NightArgs,
    love_clients: &'static str,
    /// Estimated durations, for the status line: ingest, fan-out, night, LOVE.
    estimates: [Duration; 4],
}

impl Plan {
    /// A bench's flags as one would type them.
    fn flags(line: &'static str) -> Vec<&'static str> {
        line.split_whitespace().collect()
    }

    fn new(quick: bool) -> Plan {
        let s = Duration::from_secs;
        if quick {
            Plan {
                ingest: Self::flags("--payload 200 --duration-s 2 --baseline-s 1 --writer-s 0.5"),
                fanout: vec![Self::flags("--clients 100 --duration-s 2 --memory-clients 0")],
                night: NightArgs {
                    warmup: s(3),
                    window: s(10),
                    browsers: 5,
                    meridian: None,
                },
                love_clients: "100",
                estimates: [s(10), s(15), s(15), s(45)],
            }
        } else {
            Plan {
                ingest: Self::flags("--payload 200,4096 --duration-s 3 --baseline-s 2 --writer-s 1"),
                fanout: vec![
                    Self::flags("--clients 100,1000 --duration-s 5 --memory-clients 1000"),
                    Self::flags("--clients 1000 --duration-s 5 --memory-clients 0 --format msgpack"),
                    Self::flags(
                        "--clients 1000 --topics 10 --duration-s 5 --memory-clients 0 --format msgpack",
                    ),
                ],
                night: NightArgs {
                    warmup: s(10),
                    window: s(60),
                    browsers: 20,
                    meridian: None,
                },
                love_clients: "100,1000",
                estimates: [s(30), s(190), s(80), s(180)],
            }
        }
    }
}

pub async fn run(args: AllArgs, shutdown: CancellationToken) -> anyhow::Result<()> {
    let mut plan = Plan::new(args.quick);
    plan.night.meridian = args.meridian.clone();
    let names = ["Redis + ingest", "fan-out", "night", "LOVE"];
    let status = Status::new(
        names
            .iter()
            .zip(plan.estimates)
            .map(|(n, e)| (n.to_string(), e))
            .collect(),
    );
    let load_start = report::parse_loadavg(&std::fs::read_to_string("/proc/loadavg").unwrap_or_default());
    let date = report::iso_utc(
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    );
    // The elapsed time keeps moving on the status line between steps.
    let refresher = {
        let status = status.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(1));
            loop {
                every.tick().await;
                status.refresh();
            }
        })
    };
    let refresher = AbortOnDrop(refresher);

    let mut summary = report::summary_table();
    let measured = measure(&args, &plan, &status, &mut summary, shutdown).await;
    // The status line goes before anything else is printed, error or report.
    drop(refresher);
    status.finish();
    let sections = measured?;
    let report = Report {
        machine: machine(),
        date,
        commit: git_commit(),
        command: std::env::args().collect::<Vec<_>>().join(" "),
        load_start,
        load_end: report::parse_loadavg(&std::fs::read_to_string("/proc/loadavg").unwrap_or_default()),
        wall: status.elapsed(),
        summary,
        sections,
    };
    let text = report.markdown();
    if let Some(dir) = args.out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(&args.out, &text).with_context(|| format!("writing {}", args.out.display()))?;
    println!("{text}");
    eprintln!(
        "bench all: done in {}; report written to {}",
        crate::progress::clock(report.wall),
        args.out.display()
    );
    Ok(())
}

/// The flags as `bench {bench}` would parse them from `flags` (the defaults
/// for the rest): `meridian-bench all` keeps each section's settings as the same flags
/// a reader can pass to that bench alone.
fn from_flags<A: clap::Args>(bench: &'static str, flags: &[&str]) -> anyhow::Result<A> {
    let argv = std::iter::once(bench).chain(flags.iter().copied());
    let matches = A::augment_args(clap::Command::new(bench))
        .try_get_matches_from(argv)
        .with_context(|| format!("bench {bench} flags"))?;
    A::from_arg_matches(&matches).with_context(|| format!("bench {bench} flags"))
}

/// Runs the sections in order; their report sections (the summary rows go to `summary`).
async fn measure(
    args: &AllArgs,
    plan: &Plan,
    status: &Arc<Status>,
    summary: &mut report::Table,
    shutdown: CancellationToken,
) -> anyhow::Result<Vec<report::Section>> {
    let say = Say::Status(status.clone());
    let mut sections = Vec::new();
    status.section(0);
    let ingest_args = from_flags::<IngestArgs>("ingest", &plan.ingest)?;
    let results = ingest::measure(&ingest_args, &say, shutdown.clone())
        .await
        .context("the ingest section")?;
    sections.extend(report::ingest_sections(&results, summary));

    status.section(1);
    for flags in &plan.fanout {
        let fanout_args = from_flags::<FanoutArgs>("fanout", flags)?;
        let results = fanout::measure_all(&fanout_args, &say, shutdown.clone())
            .await
            .context("the fan-out section")?;
        sections.push(report::fanout_section(&results, summary));
    }

    status.section(2);
    let results = night::measure(&plan.night, &say, shutdown.clone())
        .await
        .context("the night-like load")?;
    sections.push(report::night_section(&results, summary));

    status.section(3);
    let love = if args.no_love {
        Err("left out with --no-love".to_string())
    } else {
        run_love(plan.love_clients, args.meridian.as_deref(), status, &shutdown).await
    };
    sections.push(report::love_section(
        love.as_ref().map_err(String::as_str),
        summary,
    ));
    Ok(sections)
}

/// Aborts a background task when dropped (the status line's refresher).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Runs `meridian-bench love --clients … --json <file>` and reads its
/// rows; its stderr feeds the status line. The reason as text if it could
/// not run: the report then says "not run (reason)".
async fn run_love(
    clients: &str,
    meridian: Option<&Path>,
    status: &Arc<Status>,
    shutdown: &CancellationToken,
) -> Result<LoveResults, String> {
    let exe = binaries::bench().map_err(|e| format!("{e:#}"))?;
    let json = std::env::temp_dir().join(format!("meridian-bench-love-{}.json", std::process::id()));
    let _ = std::fs::remove_file(&json);
    let mut love = Command::new(exe);
    love.args(["love", "--clients", clients, "--json"]).arg(&json);
    if let Some(meridian) = meridian {
        love.arg("--meridian").arg(meridian);
    }
    let mut child = love
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start `meridian-bench love`: {e}"))?;
    let stderr = child.stderr.take();
    let reader = {
        let status = status.clone();
        std::thread::spawn(move || {
            // Kept to explain a failure: the last lines it printed.
            let mut last = std::collections::VecDeque::new();
            if let Some(stderr) = stderr {
                for line in std::io::BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    let line = line.trim_start_matches('\r').trim().to_string();
                    if line.is_empty() {
                        continue;
                    }
                    status.tick(&format!("bench love: {line}"));
                    if last.len() == 5 {
                        last.pop_front();
                    }
                    last.push_back(line);
                }
            }
            last
        })
    };
    let exit = loop {
        if shutdown.is_cancelled() {
            let _ = child.kill();
            let _ = child.wait();
            return Err("interrupted".into());
        }
        match child.try_wait() {
            Ok(Some(exit)) => break exit,
            Ok(None) => tokio::time::sleep(Duration::from_millis(200)).await,
            Err(e) => return Err(format!("waiting for `meridian-bench love`: {e}")),
        }
    };
    let last: Vec<String> = reader.join().unwrap_or_default().into();
    if !exit.success() {
        let said = last.join(" / ");
        return Err(format!("`meridian-bench love` failed ({exit}): {said}"));
    }
    let text =
        std::fs::read_to_string(&json).map_err(|e| format!("bench love wrote no {}: {e}", json.display()))?;
    let _ = std::fs::remove_file(&json);
    report::parse_love(&text).map_err(|e| format!("{e:#}"))
}

/// The CPU model, cores, memory and kernel, from /proc.
fn machine() -> Machine {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let cpu = read("/proc/cpuinfo")
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|v| v.split_once(':'))
        .map_or("unknown CPU".to_string(), |(_, v)| v.trim().to_string());
    let memory_bytes = read("/proc/meminfo")
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .map_or(0, |kib| kib * 1024);
    Machine {
        cpu,
        cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
        memory_bytes,
        kernel: read("/proc/sys/kernel/osrelease").trim().to_string(),
    }
}

/// The commit this binary's working tree is at (`-dirty` with uncommitted
/// changes), or `unknown` outside a git checkout.
fn git_commit() -> String {
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .stderr(Stdio::null())
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    match git(&["rev-parse", "--short", "HEAD"]) {
        Some(commit) => {
            let dirty =
                git(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
            format!("{commit}{}", if dirty { "-dirty" } else { "" })
        }
        None => "unknown".into(),
    }
}
