//! Meridian scaled out as the observatory runs it: two ingest managers and
//! two frontend managers, each its own `meridian` process, on one Redis.
//! Producers reach the ingest of their pool (MTM1M3 and ScriptQueue on a
//! dedicated ingest, every other CSC on the shared one, as `producer.pools`
//! says), 100 browsers are spread over both frontends, and one frontend is
//! drained with SIGTERM mid-stream: every browser ends on the other one,
//! having seen every event of every CSC exactly once, in order, whichever
//! ingest wrote it. An operator would notice a failure as CSCs missing from
//! a pool's manager, or as a gap or a doubled line in the event log of the
//! browsers that were moved during a rollout.

use meridian_config::Config;
use meridian_producer::ProducerStats;
use meridian_quic::tls::ServerTrust;
use meridian_store::redis::RedisStore;
use meridian_store::Store;
use meridian_testkit::browser::{Browser, Received};
use meridian_testkit::http::Request;
use meridian_testkit::manual_csc::ManualCsc;
use meridian_testkit::redis_server::RedisServer;
use meridian_testkit::wait_for;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

/// CSCs on the dedicated ingest (their pools) and on the shared one.
const DEDICATED: &[&str] = &["MTM1M3:0", "ScriptQueue:1"];
const SHARED: &[&str] = &["ATDome:0", "Test:1"];
const BROWSERS: usize = 100;
/// Events each CSC publishes after event 0 (which every browser gets first).
const EVENTS: i64 = 450;

/// A `meridian` process whose stderr (JSON log lines) the test reads.
struct Process {
    child: Child,
    log: Arc<Mutex<Vec<String>>>,
}

impl Process {
    fn start(args: &[&str]) -> Process {
        let mut child = Command::new(env!("CARGO_BIN_EXE_meridian"))
            .args(["--log-format", "json"])
            .args(args)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start meridian");
        let log = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().unwrap();
        let lines = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                lines.lock().unwrap().push(line);
            }
        });
        Process { child, log }
    }

    /// The CSCs of the producers this (ingest) process accepted, from its
    /// `producer connected` log lines.
    fn producers(&self) -> Vec<String> {
        let mut cscs: Vec<String> = self
            .log
            .lock()
            .unwrap()
            .iter()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["fields"]["message"] == "producer connected")
            .map(|v| v["span"]["csc"].as_str().unwrap_or("?").to_string())
            .collect();
        cscs.sort();
        cscs.dedup();
        cscs
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port(udp: bool) -> u16 {
    if udp {
        std::net::UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    } else {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }
}

/// A frontend process on a free port, with `config` (rebalancing off, so
/// only the drain moves browsers and the test knows where each one is).
struct Frontend {
    process: Process,
    addr: SocketAddr,
}

impl Frontend {
    fn start(redis: &str, config: &Path) -> Frontend {
        let addr: SocketAddr = ([127, 0, 0, 1], free_port(false)).into();
        let process = Process::start(&[
            "--dev",
            "manager",
            "--role",
            "frontend",
            "--config",
            config.to_str().unwrap(),
            "--redis",
            redis,
            "--frontend-listen",
            &addr.to_string(),
        ]);
        Frontend { process, addr }
    }

    fn url(&self) -> String {
        format!("ws://{}/ws?token=dev-token", self.addr)
    }

    /// Browsers connected now, from the frontend's `/metrics`.
    async fn clients(&self) -> Option<u64> {
        let page = Request::get("/metrics").send(self.addr).await.ok()?.text();
        page.lines()
            .find_map(|l| l.strip_prefix("meridian_frontend_clients "))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .map(|v| v as u64)
    }
}

/// What one browser saw: per CSC, the `int0` of every event; and where it
/// ended, still connected (so the frontends can count it).
struct Seen {
    values: BTreeMap<String, Vec<i64>>,
    moves: usize,
    last_url: String,
    browser: Option<Browser>,
}

/// Subscribes to the `scalars` event of every CSC on `first`; when that
/// frontend closes (1001, after a `reconnect` hint), recovers each topic on
/// `second` from the last id it saw; returns once every CSC's last event
/// arrived.
async fn watch(first: String, second: String, ready: Arc<Semaphore>, moved: Arc<Semaphore>) -> Seen {
    let cscs: Vec<&str> = DEDICATED.iter().chain(SHARED).copied().collect();
    let mut seen = Seen {
        values: cscs.iter().map(|c| (c.to_string(), Vec::new())).collect(),
        moves: 0,
        last_url: first.clone(),
        browser: None,
    };
    let mut last_id: BTreeMap<String, String> = BTreeMap::new();
    let mut url = first;
    let mut hinted = false;
    loop {
        let mut browser = Browser::connect(&url).await.unwrap();
        for csc in &cscs {
            match last_id.get(*csc) {
                Some(id) => browser
                    .subscribe_after(csc, "event", "scalars", id)
                    .await
                    .unwrap(),
                None => browser.subscribe(csc, "event", "scalars").await.unwrap(),
            }
        }
        let mut subscribed = 0;
        loop {
            match browser.next().await.unwrap() {
                Received::Json(v) if v["type"] == "subscribed" && seen.moves == 0 => {
                    subscribed += 1;
                    if subscribed == cscs.len() {
                        ready.add_permits(1);
                    }
                }
                Received::Json(v) if v["type"] == "sample" => {
                    let csc = format!("{}:{}", v["csc"].as_str().unwrap(), v["salindex"]);
                    seen.values
                        .get_mut(&csc)
                        .unwrap()
                        .push(v["fields"]["int0"].as_i64().unwrap());
                    last_id.insert(csc, v["id"].as_str().unwrap().to_string());
                    if seen.values.values().all(|v| v.last() == Some(&EVENTS)) {
                        seen.last_url = url;
                        seen.browser = Some(browser);
                        return seen;
                    }
                }
                Received::Json(v) if v["type"] == "reconnect" => hinted = true,
                Received::Json(v) if v["type"] == "lost" || v["type"] == "error" || v["type"] == "gap" => {
                    panic!("{v}")
                }
                Received::Json(_) => {}
                Received::Closed { code, reason } => {
                    assert_eq!(code, 1001, "a draining frontend closes with 1001: {reason}");
                    assert!(hinted, "told to reconnect before the close");
                    break;
                }
            }
        }
        assert_eq!(seen.moves, 0, "moved twice");
        seen.moves += 1;
        moved.add_permits(1);
        url = second.clone();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_ingest_and_two_frontend_processes_share_the_load_and_a_drained_frontend_loses_nothing() {
    let redis = RedisServer::start().unwrap();
    let store: Arc<dyn Store> = Arc::new(RedisStore::connect(&redis.url()).await.unwrap());

    // Two ingest processes: `dedicated` for the pools, `shared` for the rest.
    let (dedicated_port, shared_port) = (free_port(true), free_port(true));
    let ingest = |port: u16| {
        Process::start(&[
            "manager",
            "--role",
            "ingest",
            "--redis",
            &redis.url(),
            "--ingest-listen",
            &format!("127.0.0.1:{port}"),
        ])
    };
    let dedicated = ingest(dedicated_port);
    let shared = ingest(shared_port);

    // The site's producer configuration: the pools, as in deploy/.
    let producer_config = Config::from_toml_str(&format!(
        r#"
        [producer]
        ingest = ["127.0.0.1:{shared_port}"]
        [producer.pools]
        MTM1M3 = ["127.0.0.1:{dedicated_port}"]
        ScriptQueue = ["127.0.0.1:{dedicated_port}"]
        "#
    ))
    .unwrap();
    let stop = CancellationToken::new();
    let mut cscs = Vec::new();
    let mut producers = Vec::new();
    for csc in DEDICATED.iter().chain(SHARED) {
        let manual = ManualCsc::new(csc, 100_000);
        let mut config = producer_config.clone();
        config.producer.csc = csc.to_string();
        let stats = Arc::new(ProducerStats::default());
        let (m, s, st) = (manual.clone(), stats.clone(), stop.clone());
        // Each ingest makes its own development certificate.
        producers.push(tokio::spawn(async move {
            meridian_producer::run(&config, m, ServerTrust::InsecureAnyCertificate, s, st).await
        }));
        cscs.push((csc.to_string(), manual, stats));
    }
    // Event 0 of every CSC stored: the value each browser gets on subscribing.
    for (_, manual, _) in &cscs {
        manual.publish(0).await;
    }
    for (csc, _, stats) in &cscs {
        wait_for(
            &format!("{csc}'s event 0 stored"),
            Duration::from_secs(60),
            || {
                let stats = stats.clone();
                async move { (ProducerStats::get(&stats.events_acked_seq) >= 1).then_some(()) }
            },
        )
        .await
        .unwrap();
    }
    // Each producer went to the ingest of its pool, and only there.
    let on = |p: &Process, want: &[&str]| {
        let want: Vec<String> = want.iter().map(|s| s.to_string()).collect();
        let got = p.producers();
        async move { (got == want).then_some(()) }
    };
    wait_for(
        "the pools' producers on the dedicated ingest",
        Duration::from_secs(10),
        || on(&dedicated, DEDICATED),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}: it has {:?}", dedicated.producers()));
    wait_for(
        "the other producers on the shared ingest",
        Duration::from_secs(10),
        || on(&shared, SHARED),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}: it has {:?}", shared.producers()));

    // Two frontends; rebalancing off, so only the drain moves browsers.
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("many_managers");
    std::fs::create_dir_all(&dir).unwrap();
    let frontend_config = dir.join("frontend.toml");
    std::fs::write(
        &frontend_config,
        "[frontend]\nrebalance_factor = 100.0\ndrain_grace_ms = 2000\nread_block_ms = 50\n",
    )
    .unwrap();
    let mut draining = Frontend::start(&redis.url(), &frontend_config);
    let staying = Frontend::start(&redis.url(), &frontend_config);
    for f in [&draining, &staying] {
        wait_for(
            "a frontend process to accept browsers",
            Duration::from_secs(30),
            || {
                let url = f.url();
                async move { Browser::connect(&url).await.ok().map(|_| ()) }
            },
        )
        .await
        .unwrap();
    }

    // 100 browsers, every other one on each frontend, all subscribed.
    let ready = Arc::new(Semaphore::new(0));
    let moved = Arc::new(Semaphore::new(0));
    let watchers: Vec<_> = (0..BROWSERS)
        .map(|i| {
            let (first, second) = match i % 2 {
                0 => (draining.url(), staying.url()),
                _ => (staying.url(), draining.url()),
            };
            tokio::spawn(watch(first, second, ready.clone(), moved.clone()))
        })
        .collect();
    let _all = tokio::time::timeout(Duration::from_secs(60), ready.acquire_many(BROWSERS as u32))
        .await
        .expect("every browser subscribed within 60 s")
        .unwrap();
    let half = BROWSERS as u64 / 2;
    for f in [&draining, &staying] {
        wait_for(
            "each frontend to count its half",
            Duration::from_secs(10),
            || async { (f.clients().await? == half).then_some(()) },
        )
        .await
        .unwrap();
    }

    // Every CSC publishes; SIGTERM to one frontend once a third is stored.
    // Events keep coming while its browsers are told to leave and move; the
    // last third waits until all of them moved, so each one has events to
    // recover from the other frontend however fast or slow this machine is.
    let (moved_all, gate) = tokio::sync::watch::channel(false);
    let publishers: Vec<_> = cscs
        .iter()
        .map(|(_, manual, _)| {
            let (manual, mut gate) = (manual.clone(), gate.clone());
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_millis(4));
                for n in 1..=EVENTS {
                    if n == 2 * EVENTS / 3 + 1 {
                        gate.wait_for(|open| *open).await.unwrap();
                    }
                    tick.tick().await;
                    manual.publish(n).await;
                }
            })
        })
        .collect();
    let key = meridian_proto::keys::stream(
        &meridian_proto::TopicId::new(
            "Test:1".parse().unwrap(),
            meridian_proto::Category::Event,
            "scalars",
        )
        .unwrap(),
    );
    wait_for("a third of the events stored", Duration::from_secs(60), || {
        let (store, key) = (store.clone(), key.clone());
        async move { (store.len(&key).await.ok()? > EVENTS as usize / 3).then_some(()) }
    })
    .await
    .unwrap();
    let pid = draining.process.child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let _all = tokio::time::timeout(Duration::from_secs(60), moved.acquire_many(half as u32))
        .await
        .expect("the drained frontend's browsers moved within 60 s")
        .unwrap();
    moved_all.send(true).unwrap();

    let mut moves = 0;
    let mut connected = Vec::new();
    for w in watchers {
        let mut seen = w.await.unwrap();
        connected.extend(seen.browser.take());
        for (csc, values) in &seen.values {
            assert_eq!(
                values,
                &(0..=EVENTS).collect::<Vec<_>>(),
                "{csc}: every event once, in order, across the move"
            );
        }
        assert_eq!(
            seen.last_url,
            staying.url(),
            "every browser ends on the frontend that stays"
        );
        moves += seen.moves;
    }
    assert_eq!(
        moves,
        BROWSERS / 2,
        "exactly the drained frontend's browsers moved"
    );
    for p in publishers {
        p.await.unwrap();
    }
    let status = wait_for("the drained frontend to exit", Duration::from_secs(10), || {
        let status = draining.process.child.try_wait().unwrap();
        async move { status }
    })
    .await
    .unwrap();
    assert!(status.success(), "a drained frontend exits cleanly: {status}");
    wait_for(
        "the staying frontend to count every browser",
        Duration::from_secs(10),
        || async { (staying.clients().await? == BROWSERS as u64).then_some(()) },
    )
    .await
    .unwrap();
    drop(connected);

    // Nothing moved between ingest managers on the way.
    assert_eq!(dedicated.producers(), DEDICATED);
    assert_eq!(shared.producers(), SHARED);
    for (csc, _, stats) in &cscs {
        assert_eq!(ProducerStats::get(&stats.connections), 1, "{csc} connected once");
    }
    stop.cancel();
    for p in producers {
        p.await.unwrap().unwrap();
    }
}
