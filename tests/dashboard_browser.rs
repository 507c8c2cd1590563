//! The dashboard as an operator uses it, in headless Chromium against the
//! real system: `meridian up` on a real Redis (simulated CSCs, producers,
//! ingest, commander) and a separate frontend process serving the built
//! dashboard. The page must show every CSC's state, update a plot, send
//! commands through the commander and show the state change, and, when its
//! frontend is killed (-9) and started again, reconnect and recover with no
//! gap and no repeat in the event log (checked against the store's streams).
//! A plot opened mid-run shows the last minutes at once (server-side
//! backfill) and continues live; when a producer (a separate process) stops,
//! its plot is greyed as stale, and it comes back when the producer does.
//! What the operator reads is readable: structured event fields (the
//! ScriptQueue's lists of scripts) as JSON, never `[object Object]`, the
//! whole line a click away; event log columns (time, CSC, topic, message)
//! that don't overlap; y labels on every plot that differ from each other
//! (never `-0`); time labels whose boxes don't overlap.
//! A screenshot is saved to `target/e2e/dashboard.png`.
//!
//! The browser side is `web/e2e/dashboard.mjs` (playwright-core driving
//! Debian's `/usr/bin/chromium`); `scripts/test` builds the dashboard and
//! installs what it needs. A missing piece fails this test, saying what to run.

use meridian_proto::StreamId;
use meridian_store::redis::RedisStore;
use meridian_store::Store;
use meridian_testkit::http::Request;
use meridian_testkit::redis_server::RedisServer;
use meridian_testkit::wait_for;
use serde_json::Value;
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// The longest the browser script may stay silent (it bounds each of its own waits at 30–60 s).
const SCRIPT_SILENCE: Duration = Duration::from_secs(240);

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A child process killed when dropped.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The CSC whose producer the test stops and starts (a separate process).
const STALE_CSC: &str = "Test:7";

/// `meridian up` on `redis`, every endpoint on a free loopback port; returns
/// it, the commander's base URL and the ingest's address.
fn start_up(dir: &Path, redis: &str) -> (Process, String, String) {
    let config = dir.join("up.toml");
    std::fs::write(
        &config,
        "[ingest]\nlisten = \"127.0.0.1:0\"\n[frontend]\nlisten = \"127.0.0.1:0\"\n[commander]\nlisten = \"127.0.0.1:0\"\n",
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_meridian"))
        .args(["up", "--redis", redis, "--config"])
        .arg(&config)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start meridian up");
    let mut reader = BufReader::new(child.stdout.take().unwrap());
    let (mut commander, mut ingest) = (None, None);
    loop {
        let mut line = String::new();
        assert!(
            reader.read_line(&mut line).unwrap() > 0,
            "meridian up exited before its banner"
        );
        if let Some(url) = line.trim().strip_prefix("commander:") {
            commander = Some(url.trim().trim_end_matches("/cmd/").to_string());
        }
        if let Some(rest) = line.trim().strip_prefix("ingest:") {
            let addr = rest.trim().trim_start_matches("quic://");
            ingest = Some(addr.split_whitespace().next().unwrap_or("").to_string());
        }
        if line.contains("Press Ctrl-C") {
            break;
        }
    }
    // Keep draining its stdout so it never blocks on a full pipe.
    std::thread::spawn(move || for _ in reader.lines() {});
    (
        Process(child),
        commander.expect("up prints its commander URL"),
        ingest.expect("up prints its ingest address"),
    )
}

/// A producer process simulating its own `Test:7`, so the test can stop its
/// telemetry (the dashboard must grey its plot as stale) and start it again.
fn start_producer(ingest: &str) -> Process {
    let child = Command::new(env!("CARGO_BIN_EXE_meridian"))
        .args(["producer", "--csc", STALE_CSC, "--ingest", ingest])
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start meridian producer");
    Process(child)
}

/// A frontend manager process on `port`, serving the dashboard, sending commands to `commander`.
fn start_frontend(dir: &Path, redis: &str, port: u16, commander: &str) -> Process {
    let config = dir.join("frontend.toml");
    let dist = repo().join("web/dist");
    std::fs::write(
        &config,
        format!(
            "[frontend]\nlisten = \"127.0.0.1:{port}\"\ntokens = [\"dev-token\"]\ncommand_tokens = [\"dev-token\"]\n\
             commander_url = \"{commander}\"\ndashboard_dir = {:?}\ndrain_grace_ms = 0\n",
            dist.display().to_string()
        ),
    )
    .unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_meridian"))
        .args([
            "--dev", "manager", "--role", "frontend", "--redis", redis, "--config",
        ])
        .arg(&config)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start meridian manager --role frontend");
    Process(child)
}

async fn wait_ready(addr: SocketAddr) {
    wait_for(
        "the frontend to be ready",
        Duration::from_secs(30),
        || async move {
            let r = Request::get("/readyz").send(addr).await.ok()?;
            (r.status == 200).then_some(())
        },
    )
    .await
    .unwrap();
}

/// What is missing to run a browser here, and the command that provides it.
fn prerequisites() -> Vec<String> {
    let mut missing = Vec::new();
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    if !Path::new(&chromium).exists() {
        missing.push(format!("{chromium} (apt-get install chromium)"));
    }
    if !repo().join("web/dist/index.html").exists() {
        missing.push("web/dist (cd web && npm ci && npm run build)".into());
    }
    if !repo().join("web/node_modules/playwright-core").exists() {
        missing.push("web/node_modules (cd web && npm ci)".into());
    }
    if Command::new("node").arg("--version").output().is_err() {
        missing.push("node (Node.js 20)".into());
    }
    missing
}

/// The stream of an event topic named `CSC:index/topic` ("MTMount:0/heartbeat").
fn stream_key(topic: &str) -> String {
    let (csc, name) = topic.split_once('/').unwrap();
    let topic =
        meridian_proto::TopicId::new(csc.parse().unwrap(), meridian_proto::Category::Event, name).unwrap();
    meridian_proto::keys::stream(&topic)
}

/// The page's event ids of each topic must be exactly the store's between its first and last,
/// and some of them must have been stored while the frontend was down.
async fn check_ids(store: &dyn Store, report: &Value) -> Result<String, String> {
    let (killed, started) = (
        report["killed_ms"].as_u64().unwrap_or(0),
        report["started_ms"].as_u64().unwrap_or(0),
    );
    let mut during_outage = 0;
    let mut checked = 0;
    for (topic, ids) in report["ids"].as_object().ok_or("no ids")? {
        let page: Vec<String> = ids
            .as_array()
            .ok_or("ids is not a list")?
            .iter()
            .map(|v| v.as_str().unwrap_or("").to_string())
            .collect();
        let (Some(first), Some(last)) = (page.first(), page.last()) else {
            return Err(format!("{topic}: the page saw no event"));
        };
        let (first, last): (StreamId, StreamId) = (
            first.parse().map_err(|e| format!("{topic}: {e}"))?,
            last.parse().map_err(|e| format!("{topic}: {e}"))?,
        );
        let stored: Vec<String> = store
            .range(&stream_key(topic), StreamId::ZERO, Some(last), 100_000)
            .await
            .map_err(|e| e.to_string())?
            .into_iter()
            .filter(|e| e.id >= first)
            .map(|e| e.id.to_string())
            .collect();
        if stored != page {
            let missing: Vec<&String> = stored.iter().filter(|id| !page.contains(id)).collect();
            return Err(format!(
                "{topic}: the page's events differ from the store's: {} on the page, {} stored, missing {missing:?}",
                page.len(),
                stored.len()
            ));
        }
        during_outage += page
            .iter()
            .filter_map(|id| id.parse::<StreamId>().ok())
            .filter(|id| id.ms > killed && id.ms < started)
            .count();
        checked += page.len();
    }
    if during_outage == 0 {
        return Err("no event was stored while the frontend was down: the test proved nothing".into());
    }
    Ok(format!(
        "{checked} events match the store, {during_outage} of them stored while the frontend was down"
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_the_night_commands_and_recovers_from_a_frontend_restart() {
    let missing = prerequisites();
    assert!(
        missing.is_empty(),
        "the browser test needs: {}. ./scripts/test installs and builds them.",
        missing.join(", ")
    );
    let dir = std::env::temp_dir().join(format!("meridian-dashboard-e2e-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let redis = RedisServer::start().unwrap();
    let store = RedisStore::connect(&redis.url()).await.unwrap();
    let (_up, commander, ingest) = start_up(&dir, &redis.url());
    let mut producer = Some(start_producer(&ingest));
    wait_for("Test:7's topics in the catalog", Duration::from_secs(30), || {
        let store = &store;
        async move {
            let catalog = store.hash_get(meridian_proto::keys::CATALOG).await.ok()?;
            catalog
                .iter()
                .any(|(field, _)| field == "Test:7/telemetry/scalars")
                .then_some(())
        }
    })
    .await
    .unwrap();
    let port = free_port();
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let mut frontend = Some(start_frontend(&dir, &redis.url(), port, &commander));
    wait_ready(addr).await;

    let screenshot = repo().join("target/e2e/dashboard.png");
    let mut node = Command::new("node")
        .arg(repo().join("web/e2e/dashboard.mjs"))
        .current_dir(repo().join("web"))
        .env("DASHBOARD_URL", format!("http://{addr}/?token=dev-token"))
        .env("SCREENSHOT", &screenshot)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start node");
    let mut stdin: ChildStdin = node.stdin.take().unwrap();
    let (tx, rx) = mpsc::channel::<String>();
    let stdout = node.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut node = Process(node);
    let watched = stream_key("MTMount:0/heartbeat");

    loop {
        let line = match tokio::task::block_in_place(|| rx.recv_timeout(SCRIPT_SILENCE)) {
            Ok(line) => line,
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                panic!("the browser script said nothing for {SCRIPT_SILENCE:?}")
            }
        };
        let answer = if line == "@kill" {
            let before = store.len(&watched).await.unwrap();
            drop(frontend.take());
            // Let events happen while no frontend runs, so recovery has something to recover.
            wait_for(
                "two heartbeats stored during the outage",
                Duration::from_secs(30),
                || {
                    let (store, watched) = (&store, &watched);
                    async move { (store.len(watched).await.ok()? >= before + 2).then_some(()) }
                },
            )
            .await
            .unwrap();
            "ok".to_string()
        } else if line == "@start" {
            frontend = Some(start_frontend(&dir, &redis.url(), port, &commander));
            wait_ready(addr).await;
            "ok".to_string()
        } else if line == "@stop-producer" {
            drop(producer.take());
            "ok".to_string()
        } else if line == "@start-producer" {
            producer = Some(start_producer(&ingest));
            "ok".to_string()
        } else if let Some(json) = line.strip_prefix("@check ") {
            let report: Value = serde_json::from_str(json).unwrap();
            match check_ids(&store, &report).await {
                Ok(summary) => {
                    eprintln!("dashboard_browser: {summary}");
                    "ok".to_string()
                }
                Err(why) => format!("fail {why}"),
            }
        } else {
            eprintln!("browser: {line}");
            continue;
        };
        writeln!(stdin, "{answer}").unwrap();
    }
    let status = tokio::task::block_in_place(|| node.0.wait()).unwrap();
    assert!(
        status.success(),
        "the browser script failed ({status}); see its output above"
    );
    assert!(screenshot.exists(), "no screenshot at {}", screenshot.display());
    let _ = std::fs::remove_dir_all(&dir);
}
