//! The night-like load of `bench all`: the simulators of a night at the
//! summit, each behind its own producer process, an ingest process, a
//! frontend process and a private `redis-server`, with browsers subscribed
//! to everything, measured for a fixed window.
//!
//! Every role is a process of its own (this binary started with the role's
//! subcommand, as a deployment runs it), so CPU (`/proc/<pid>/stat`) and
//! RSS (`/proc/<pid>/status`) are per role. The browsers run in this
//! process, which does nothing else while measuring: its CPU is theirs.
//! Lag per hop comes from the timestamps every native sample carries
//! (`source_ts`, `ingest_ts`, `frontend_ts`) and the browser's clock on
//! receipt, recorded into bounded histograms ([`LagHistogram`]). Stored
//! rates come from the ingest's `/metrics`
//! (`meridian_ingest_samples_stored_total`), delivered rates from the
//! browsers' counts.

use super::clients::hops;
use super::measure::{own_cpu, process_cpu, process_rss, LagHistogram, Percentiles};
use super::progress::Say;
use super::redis_server::{free_port, require_tools, RedisServer};
use super::sleep_unless;
use anyhow::{bail, Context};
use futures_util::{SinkExt, StreamExt};
use meridian_proto::unix_now;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

/// The simulated CSCs of the night, one producer process each: M1M3's
/// 50 Hz telemetry is most of the load; the mount, the dome, a
/// ScriptQueue running Scripts and the Test CSC add the rest and the events.
pub const NIGHT: &[&str] = &["MTM1M3:0", "MTMount:0", "ATDome:0", "ScriptQueue:1", "Test:1"];

/// What each browser subscribes to, one wildcard request per CSC name
/// (every index, category and topic, including topics declared later):
/// the night's CSCs, the Scripts the ScriptQueue runs, and the pseudo-CSCs
/// the ingest derives from the queue.
const WATCHED: &[&str] = &[
    "MTM1M3",
    "MTMount",
    "ATDome",
    "ScriptQueue",
    "Script",
    "Test",
    "ScriptQueueState",
    "ScriptHeartbeats",
];

/// The pseudo-CSCs the ingest derives from a ScriptQueue's events: their
/// events reach the browsers but are not in the ingest's stored counter.
const DERIVED: &[&str] = &["ScriptQueueState", "ScriptHeartbeats"];

/// The frontend's default read token (`frontend.tokens`).
const TOKEN: &str = "dev-token";

/// Longest wait for a role to answer `/readyz` with 200, and for the browsers to connect.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// What each sample object of a batch frame starts with.
const SAMPLE_START: &str = r#"{"type":"sample","csc":"#;

#[derive(Clone, Debug)]
pub struct NightArgs {
    /// Data flows this long (every role started, browsers subscribed) before the window opens.
    pub warmup: Duration,
    /// The measurement window.
    pub window: Duration,
    /// Browsers, each subscribed to everything.
    pub browsers: usize,
}

/// One role's share of the machine over the window.
#[derive(Clone, Debug)]
pub struct RoleFigures {
    pub role: String,
    /// CPU over the window, in cores (1.0 = one core busy all the time).
    pub cores: f64,
    /// Resident memory at the end of the window and its largest value
    /// sampled each second, bytes.
    pub rss_end: u64,
    pub rss_max: u64,
}

/// Lag per hop of one category: end to end, source → ingest, ingest →
/// frontend read, frontend read → browser.
#[derive(Clone, Copy, Debug, Default)]
pub struct Hops {
    pub end_to_end: Percentiles,
    pub source_ingest: Percentiles,
    pub ingest_frontend: Percentiles,
    pub frontend_browser: Percentiles,
}

/// Everything the night-like run measured.
#[derive(Clone, Debug)]
pub struct NightResults {
    pub cscs: Vec<String>,
    pub browsers: usize,
    pub wall: Duration,
    /// Per second, written to Redis by the ingest (each event once).
    pub stored_telemetry: f64,
    pub stored_events: f64,
    /// Per second, summed over every browser.
    pub delivered_telemetry: f64,
    pub delivered_events: f64,
    /// Events of the pseudo-CSCs the ingest derives (ScriptQueueState,
    /// ScriptHeartbeats), per second over every browser: not in the stored counter.
    pub delivered_derived: f64,
    pub telemetry: Hops,
    pub events: Hops,
    pub roles: Vec<RoleFigures>,
    /// Browsers closed by the server or whose connection failed, and lost-event notices received.
    pub closed: u64,
    pub lost_notices: u64,
}

impl NightResults {
    /// Delivered ÷ (stored × browsers): the share of what was stored that
    /// each browser received (telemetry is conflated per tick by design, so
    /// it may be a little under 1; every event should arrive).
    pub fn delivered_ratio(&self, telemetry: bool) -> Option<f64> {
        let (delivered, stored) = match telemetry {
            true => (self.delivered_telemetry, self.stored_telemetry),
            false => (self.delivered_events, self.stored_events),
        };
        super::report::ratio(delivered, stored * self.browsers as f64)
    }

    /// Sum of the roles' cores except the browsers'.
    pub fn system_cores(&self) -> f64 {
        self.roles
            .iter()
            .filter(|r| !r.role.starts_with("browsers"))
            .map(|r| r.cores)
            .sum()
    }
}

/// A role running as a process of this binary; killed when dropped.
struct RoleProcess {
    role: String,
    child: Child,
    metrics: SocketAddr,
    log: PathBuf,
}

impl RoleProcess {
    fn spawn(role: &str, args: &[&str], dir: &Path) -> anyhow::Result<RoleProcess> {
        let exe = std::env::current_exe().context("locating the meridian binary")?;
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

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Fails, with the end of its log, if the process has exited.
    fn check_alive(&mut self) -> anyhow::Result<()> {
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

    async fn wait_ready(&mut self, shutdown: &CancellationToken) -> anyhow::Result<()> {
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

fn free_udp_port() -> anyhow::Result<u16> {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").context("finding a free UDP port")?;
    Ok(socket.local_addr()?.port())
}

/// `GET path` over HTTP/1.0 on the loopback: the status and the body.
async fn http_get(addr: SocketAddr, path: &str) -> anyhow::Result<(u16, String)> {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        stream
            .write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
            .await?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await?;
        anyhow::Ok(String::from_utf8_lossy(&raw).into_owned())
    };
    let text = tokio::time::timeout(Duration::from_secs(5), exchange)
        .await
        .with_context(|| format!("GET http://{addr}{path}: no answer within 5 s"))??;
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("GET http://{addr}{path}: not an HTTP response"))?;
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b).to_string();
    Ok((status, body))
}

/// The sum of every series of metric `name` (any labels) in a Prometheus
/// text page whose labels include `label` (`key="value"`), if given.
pub fn metric_sum(page: &str, name: &str, label: Option<&str>) -> f64 {
    page.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let rest = l.strip_prefix(name)?;
            let (labels, value) = match rest.strip_prefix('{') {
                Some(r) => r.split_once('}')?,
                None if rest.starts_with(' ') => ("", rest),
                None => return None,
            };
            if let Some(want) = label {
                if !labels.split(',').any(|kv| kv.trim() == want) {
                    return None;
                }
            }
            value.split_whitespace().next()?.parse::<f64>().ok()
        })
        .sum()
}

/// The browsers' shared counters.
#[derive(Default)]
struct Tally {
    telemetry: AtomicU64,
    events: AtomicU64,
    derived: AtomicU64,
    closed: AtomicU64,
    lost: AtomicU64,
    subscribed: AtomicU64,
    connected: AtomicU64,
}

/// One sample of a batch frame: its category and its four lags, seconds.
#[derive(Debug, PartialEq)]
pub struct Timed {
    pub event: bool,
    /// Of a pseudo-CSC the ingest derives ([`DERIVED`]).
    pub derived: bool,
    /// End to end, source → ingest, ingest → frontend, frontend → browser.
    pub lags: [f64; 4],
}

/// Every sample of a native batch frame received at `now` (Unix seconds),
/// with its category and lags. JSON strings escape their quotes, so the
/// sample's opening keys cannot occur inside a field's value.
pub fn scan_samples(frame: &str, now: f64, out: &mut Vec<Timed>) {
    let mut rest = frame;
    while let Some(at) = rest.find(SAMPLE_START) {
        rest = &rest[at + SAMPLE_START.len()..];
        let derived = DERIVED.iter().any(|d| {
            rest.strip_prefix('"')
                .is_some_and(|r| r.starts_with(&format!("{d}\"")))
        });
        let Some(cat_at) = rest.find(r#""category":""#) else {
            return;
        };
        let event = rest[cat_at + 12..].starts_with("event\"");
        let Some(ts_at) = rest.find(r#""source_ts":"#) else {
            return;
        };
        let after = &rest[ts_at + 12..];
        let Some((lags, after)) = hops(after, now) else {
            continue;
        };
        rest = after;
        out.push(Timed { event, derived, lags });
    }
}

/// Lag histograms of one browser: telemetry's four hops, then events'.
type Hists = [LagHistogram; 8];

/// One browser: connect, subscribe to every CSC of [`WATCHED`], count
/// every sample, and record the lags while `recording`; returns its
/// histograms when `stop` fires.
async fn browser(
    url: String,
    tally: Arc<Tally>,
    recording: Arc<AtomicBool>,
    stop: CancellationToken,
) -> Hists {
    let mut hists: Hists = Default::default();
    let connected = tokio::select! {
        c = tokio_tungstenite::connect_async(url.as_str()) => c,
        _ = stop.cancelled() => return hists,
    };
    let Ok((ws, _)) = connected else {
        tally.closed.fetch_add(1, Ordering::Relaxed);
        return hists;
    };
    tally.connected.fetch_add(1, Ordering::Relaxed);
    let (mut sink, mut incoming) = ws.split();
    for csc in WATCHED {
        let request = format!(r#"{{"op":"subscribe","csc":"{csc}"}}"#);
        if sink.feed(Message::Text(request.into())).await.is_err() {
            tally.closed.fetch_add(1, Ordering::Relaxed);
            return hists;
        }
    }
    if sink.flush().await.is_err() {
        tally.closed.fetch_add(1, Ordering::Relaxed);
        return hists;
    }
    let mut timed = Vec::new();
    loop {
        let message = tokio::select! {
            m = incoming.next() => m,
            _ = stop.cancelled() => break,
        };
        let text = match message {
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(Message::Close(_))) | Some(Err(_)) | None => {
                tally.closed.fetch_add(1, Ordering::Relaxed);
                break;
            }
            Some(Ok(_)) => continue,
        };
        let text = text.as_str();
        if text.starts_with(r#"{"type":"batch""#) {
            timed.clear();
            scan_samples(text, unix_now(SystemTime::now()), &mut timed);
            let events = timed.iter().filter(|t| t.event && !t.derived).count() as u64;
            let derived = timed.iter().filter(|t| t.derived).count() as u64;
            tally.events.fetch_add(events, Ordering::Relaxed);
            tally.derived.fetch_add(derived, Ordering::Relaxed);
            tally
                .telemetry
                .fetch_add(timed.len() as u64 - events - derived, Ordering::Relaxed);
            if text.contains(r#""lost":[{"#) {
                tally.lost.fetch_add(1, Ordering::Relaxed);
            }
            if recording.load(Ordering::Relaxed) {
                for t in &timed {
                    let base = if t.event { 4 } else { 0 };
                    for (k, lag) in t.lags.iter().enumerate() {
                        hists[base + k].record(*lag);
                    }
                }
            }
        } else if text.starts_with(r#"{"type":"subscribed""#) {
            tally.subscribed.fetch_add(1, Ordering::Relaxed);
        }
    }
    hists
}

/// What is read at the start and the end of the window.
struct Snapshot {
    at: Instant,
    telemetry: u64,
    events: u64,
    derived: u64,
    stored_telemetry: f64,
    stored_events: f64,
    cpu: Vec<Duration>,
}

/// Starts the night (Redis, ingest, frontend, a producer per CSC of
/// [`NIGHT`], `args.browsers` browsers), measures for `args.window`, and
/// stops it all.
pub async fn measure(
    args: &NightArgs,
    say: &Say,
    shutdown: CancellationToken,
) -> anyhow::Result<NightResults> {
    if args.browsers == 0 || args.window.is_zero() {
        bail!("the night needs at least one browser and a measurement window");
    }
    require_tools()?;
    let redis = tokio::task::block_in_place(RedisServer::start)?;
    let dir = redis.dir().to_path_buf();
    let ingest_addr = format!("127.0.0.1:{}", free_udp_port()?);
    let frontend_addr = format!("127.0.0.1:{}", free_port()?);
    let url = redis.url();
    say.step(&format!(
        "night: redis-server {} (pid {}); starting ingest, frontend and {} producers (logs in {})",
        redis.version,
        redis.pid(),
        NIGHT.len(),
        dir.display()
    ));
    let mut roles = vec![
        RoleProcess::spawn(
            "ingest",
            &[
                "manager",
                "--role",
                "ingest",
                "--redis",
                &url,
                "--ingest-listen",
                &ingest_addr,
            ],
            &dir,
        )?,
        RoleProcess::spawn(
            "frontend",
            &[
                "manager",
                "--role",
                "frontend",
                "--redis",
                &url,
                "--frontend-listen",
                &frontend_addr,
            ],
            &dir,
        )?,
    ];
    for csc in NIGHT {
        roles.push(RoleProcess::spawn(
            &format!("producer {csc}"),
            &["producer", "--csc", csc, "--ingest", &ingest_addr],
            &dir,
        )?);
    }
    for role in roles.iter_mut() {
        role.wait_ready(&shutdown).await?;
    }

    let tally = Arc::new(Tally::default());
    let recording = Arc::new(AtomicBool::new(false));
    let stop = CancellationToken::new();
    let _stop_on_exit = stop.clone().drop_guard();
    let ws_url = format!("ws://{frontend_addr}/ws?token={TOKEN}");
    let browsers: Vec<_> = (0..args.browsers)
        .map(|_| {
            tokio::spawn(browser(
                ws_url.clone(),
                tally.clone(),
                recording.clone(),
                stop.clone(),
            ))
        })
        .collect();
    let deadline = Instant::now() + START_TIMEOUT;
    let want = (args.browsers * WATCHED.len()) as u64;
    while tally.subscribed.load(Ordering::Relaxed) < want {
        if tally.closed.load(Ordering::Relaxed) > 0 {
            bail!("a night browser could not connect or subscribe to {ws_url}");
        }
        if Instant::now() > deadline {
            bail!(
                "the night's browsers got {} of {want} subscription replies within {START_TIMEOUT:?}",
                tally.subscribed.load(Ordering::Relaxed)
            );
        }
        sleep_unless(Duration::from_millis(50), &shutdown).await?;
    }

    let pids: Vec<u32> = std::iter::once(redis.pid())
        .chain(roles.iter().map(RoleProcess::pid))
        .collect();
    let ingest_metrics = roles[0].metrics;
    let snapshot = |pids: Vec<u32>| {
        let tally = tally.clone();
        async move {
            let page = http_get(ingest_metrics, "/metrics").await?.1;
            let stored = |category: &str| {
                metric_sum(
                    &page,
                    "meridian_ingest_samples_stored_total",
                    Some(&format!("category=\"{category}\"")),
                )
            };
            let mut cpu: Vec<Duration> = pids.iter().map(|&p| process_cpu(p)).collect();
            cpu.push(own_cpu());
            anyhow::Ok(Snapshot {
                at: Instant::now(),
                telemetry: tally.telemetry.load(Ordering::Relaxed),
                events: tally.events.load(Ordering::Relaxed),
                derived: tally.derived.load(Ordering::Relaxed),
                stored_telemetry: stored("telemetry"),
                stored_events: stored("event"),
                cpu,
            })
        }
    };
    // Warm-up, then the window; a tick a second with what is flowing.
    let warm_until = Instant::now() + args.warmup;
    let mut last = (Instant::now(), 0u64);
    let tick = |phase: &str, last: &mut (Instant, u64)| {
        let n = tally.telemetry.load(Ordering::Relaxed) + tally.events.load(Ordering::Relaxed);
        let secs = last.0.elapsed().as_secs_f64().max(1e-3);
        say.tick(&format!(
            "night, {} browsers: {phase}: {:.0} samples/s delivered",
            args.browsers,
            (n - last.1) as f64 / secs
        ));
        *last = (Instant::now(), n);
    };
    while Instant::now() < warm_until {
        sleep_unless(Duration::from_secs(1), &shutdown).await?;
        tick("warm-up", &mut last);
    }
    for role in roles.iter_mut() {
        role.check_alive()?;
    }
    recording.store(true, Ordering::Relaxed);
    let start = snapshot(pids.clone()).await?;
    let mut rss_max = vec![0u64; pids.len() + 1];
    let sample_rss = |rss_max: &mut Vec<u64>| {
        for (i, &pid) in pids.iter().chain([std::process::id()].iter()).enumerate() {
            rss_max[i] = rss_max[i].max(process_rss(pid));
        }
    };
    while start.at.elapsed() + Duration::from_secs(1) < args.window {
        sleep_unless(Duration::from_secs(1), &shutdown).await?;
        sample_rss(&mut rss_max);
        tick(
            &format!(
                "{:.0}/{:.0} s",
                start.at.elapsed().as_secs_f64(),
                args.window.as_secs_f64()
            ),
            &mut last,
        );
    }
    sleep_unless(args.window.saturating_sub(start.at.elapsed()), &shutdown).await?;
    let end = snapshot(pids.clone()).await?;
    recording.store(false, Ordering::Relaxed);
    sample_rss(&mut rss_max);
    say.end_ticks();
    for role in roles.iter_mut() {
        role.check_alive()?;
    }
    let rss_end: Vec<u64> = pids
        .iter()
        .chain([std::process::id()].iter())
        .map(|&p| process_rss(p))
        .collect();

    stop.cancel();
    let mut merged: Hists = Default::default();
    for b in browsers {
        let hists = b.await.context("a night browser panicked")?;
        for (m, h) in merged.iter_mut().zip(hists.iter()) {
            m.merge(h);
        }
    }
    drop(roles);

    let wall = end.at - start.at;
    let secs = wall.as_secs_f64();
    let mut names = vec!["redis-server".to_string(), "ingest".into(), "frontend".into()];
    names.extend(NIGHT.iter().map(|c| format!("producer {c}")));
    names.push(format!("browsers ({}, in the bench process)", args.browsers));
    let role_figures = names
        .into_iter()
        .enumerate()
        .map(|(i, role)| RoleFigures {
            role,
            cores: end.cpu[i].saturating_sub(start.cpu[i]).as_secs_f64() / secs,
            rss_end: rss_end[i],
            rss_max: rss_max[i].max(rss_end[i]),
        })
        .collect();
    let hops = |h: &[LagHistogram]| Hops {
        end_to_end: h[0].percentiles(),
        source_ingest: h[1].percentiles(),
        ingest_frontend: h[2].percentiles(),
        frontend_browser: h[3].percentiles(),
    };
    Ok(NightResults {
        cscs: NIGHT.iter().map(|c| c.to_string()).collect(),
        browsers: args.browsers,
        wall,
        stored_telemetry: (end.stored_telemetry - start.stored_telemetry) / secs,
        stored_events: (end.stored_events - start.stored_events) / secs,
        delivered_telemetry: (end.telemetry - start.telemetry) as f64 / secs,
        delivered_events: (end.events - start.events) as f64 / secs,
        delivered_derived: (end.derived - start.derived) as f64 / secs,
        telemetry: hops(&merged[..4]),
        events: hops(&merged[4..]),
        roles: role_figures,
        closed: tally.closed.load(Ordering::Relaxed),
        lost_notices: tally.lost.load(Ordering::Relaxed),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use meridian_proto::{Category, CscId, StreamId, TopicId};

    #[test]
    fn samples_are_told_apart_by_category_and_timed_per_hop() {
        let event = TopicId::new(CscId::new("Test", 1).unwrap(), Category::Event, "scalars").unwrap();
        let tel = TopicId::new(CscId::new("MTM1M3", 0).unwrap(), Category::Telemetry, "gyroData").unwrap();
        // A field value that looks like a sample's keys stays inside its (escaped) string.
        let a = meridian_proto::browser::sample_message(
            &event,
            StreamId::new(1, 0),
            10.0,
            10.5,
            11.0,
            r#"{"string0":"\"category\":\"telemetry\",\"source_ts\":1"}"#,
        );
        let b = meridian_proto::browser::sample_message(&tel, StreamId::new(2, 0), 20.0, 20.25, 20.5, "{}");
        let frame = meridian_proto::browser::batch_frame([a.as_str(), b.as_str()].into_iter(), &[]);
        let mut out = Vec::new();
        scan_samples(&frame, 21.0, &mut out);
        let derived_topic = TopicId::new(
            CscId::new("ScriptQueueState", 1).unwrap(),
            Category::Event,
            "stream",
        )
        .unwrap();
        let c =
            meridian_proto::browser::sample_message(&derived_topic, StreamId::new(3, 0), 1.0, 1.0, 1.0, "{}");
        let frame = meridian_proto::browser::batch_frame([c.as_str()].into_iter(), &[]);
        let mut derived = Vec::new();
        scan_samples(&frame, 2.0, &mut derived);
        assert!(derived[0].derived && derived[0].event);
        assert_eq!(
            out,
            [
                Timed {
                    event: true,
                    derived: false,
                    lags: [11.0, 0.5, 0.5, 10.0]
                },
                Timed {
                    event: false,
                    derived: false,
                    lags: [1.0, 0.25, 0.25, 0.5]
                }
            ]
        );
    }

    #[test]
    fn metric_series_are_summed_by_label() {
        let page = "# HELP meridian_ingest_samples_stored_total Samples written.\n\
                    # TYPE meridian_ingest_samples_stored_total counter\n\
                    meridian_ingest_samples_stored_total{category=\"telemetry\"} 1200\n\
                    meridian_ingest_samples_stored_total{category=\"event\"} 34\n\
                    meridian_ingest_samples_stored_total_other 5\n\
                    meridian_ingest_producers 5\n";
        let name = "meridian_ingest_samples_stored_total";
        assert_eq!(metric_sum(page, name, Some("category=\"event\"")), 34.0);
        assert_eq!(metric_sum(page, name, None), 1234.0);
        assert_eq!(metric_sum(page, "meridian_ingest_producers", None), 5.0);
        assert_eq!(metric_sum(page, "meridian_missing", None), 0.0);
    }
}
