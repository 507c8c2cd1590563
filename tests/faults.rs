//! The fault suite: under night-like load (simulated M1M3, mount, dome and
//! a ScriptQueue, each behind its own producer process, and a control-room
//! browser watching M1M3), one fault at a time, while a counted CSC
//! publishes numbered events that a browser watches through a frontend in
//! another process. For every fault, the browser — recovering as the
//! protocol tells it to (reconnect, `after` = the last id it saw) — receives
//! every event produced exactly once, in order:
//!
//! - an ingest manager killed with SIGKILL and restarted;
//! - Redis killed and restarted (append-only file, as a production Redis);
//! - a frontend manager killed with SIGKILL: the browser moves to another;
//! - a producer cut off from its ingest (its network path dropped);
//! - a browser that stops reading.
//!
//! Short outages here; `MERIDIAN_LONG_TESTS=1` makes the producer's cut
//! 30 s and the browser's stall 60 s, and runs the 10-minute soak (RSS of
//! every role sampled each second, no growth after warm-up) in place of a
//! 40-second one. An operator would notice a failure as a hole or a doubled
//! line in a CSC's event log after an incident, or a role whose memory
//! creeps up over a night.

use meridian_config::Config;
use meridian_producer::ProducerStats;
use meridian_quic::tls::ServerTrust;
use meridian_testkit::browser::{Browser, Received};
use meridian_testkit::manual_csc::ManualCsc;
use meridian_testkit::process::{free_tcp_port, free_udp_port, Process};
use meridian_testkit::redis_server::RedisServer;
use meridian_testkit::udp_proxy::UdpProxy;
use meridian_testkit::wait_for;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const BIN: &str = env!("CARGO_BIN_EXE_meridian");
/// The counted CSC.
const CSC: &str = "Test:7";
/// Its events per second: a busy night's ScriptQueue and then some.
const EVENTS_PER_S: u64 = 200;
/// The simulated CSCs of the background load, one producer process each.
const NIGHT: &[&str] = &["MTM1M3:0", "MTMount:0", "ATDome:0", "ScriptQueue:1"];
const WAIT: Duration = Duration::from_secs(120);

fn long() -> bool {
    std::env::var("MERIDIAN_LONG_TESTS").is_ok_and(|v| v == "1")
}

/// Ingest, frontends and the night's producers in processes of their own;
/// the counted producer in this one, so the test knows what it published.
struct Night {
    redis: RedisServer,
    /// Its QUIC address is kept across restarts ([`Process::restart`]).
    ingest: Process,
    frontends: Vec<Process>,
    /// `ws://…/ws?token=dev-token` of each frontend.
    urls: Vec<String>,
    load: Vec<Process>,
    csc: Arc<ManualCsc>,
    stats: Arc<ProducerStats>,
    producer: JoinHandle<()>,
    stop: CancellationToken,
    /// The proxy between the counted producer and the ingest, if any.
    proxy: Option<UdpProxy>,
    watcher: JoinHandle<()>,
}

impl Night {
    /// Starts it all and waits until the counted CSC's event 0 is stored.
    async fn start(frontends: usize, through_proxy: bool) -> Night {
        let redis = RedisServer::start_persistent().unwrap();
        let ingest_addr = format!("127.0.0.1:{}", free_udp_port());
        let ingest = Process::start(
            BIN,
            &[
                "manager",
                "--role",
                "ingest",
                "--redis",
                &redis.url(),
                "--ingest-listen",
                &ingest_addr,
            ],
            &[],
        )
        .unwrap();
        let mut procs = Vec::new();
        let mut urls = Vec::new();
        for _ in 0..frontends {
            let listen = format!("127.0.0.1:{}", free_tcp_port());
            procs.push(
                Process::start(
                    BIN,
                    &[
                        "--dev",
                        "manager",
                        "--role",
                        "frontend",
                        "--redis",
                        &redis.url(),
                        "--frontend-listen",
                        &listen,
                    ],
                    &[],
                )
                .unwrap(),
            );
            urls.push(format!("ws://{listen}/ws?token=dev-token"));
        }
        let load: Vec<Process> = NIGHT
            .iter()
            .map(|csc| {
                Process::start(BIN, &["producer", "--csc", csc, "--ingest", &ingest_addr], &[]).unwrap()
            })
            .collect();
        for p in procs.iter().chain(&load).chain([&ingest]) {
            wait_for("every role ready", WAIT, || async {
                (p.readyz().await.ok()?.0 == 200).then_some(())
            })
            .await
            .unwrap();
        }

        let proxy = match through_proxy {
            true => Some(UdpProxy::start(ingest_addr.parse().unwrap()).await.unwrap()),
            false => None,
        };
        let csc = ManualCsc::new(CSC, 100_000);
        let mut config = Config::default();
        config.producer.csc = CSC.into();
        config.producer.ingest = vec![match &proxy {
            Some(p) => p.addr.to_string(),
            None => ingest_addr.clone(),
        }];
        let stats = Arc::new(ProducerStats::default());
        let stop = CancellationToken::new();
        // A restarted ingest makes a new development certificate: accept it.
        let producer = tokio::spawn({
            let (csc, stats, stop) = (csc.clone(), stats.clone(), stop.clone());
            async move {
                meridian_producer::run(&config, csc, ServerTrust::InsecureAnyCertificate, stats, stop)
                    .await
                    .unwrap()
            }
        });
        csc.publish(0).await;
        wait_for("event 0 stored", WAIT, || async {
            (ProducerStats::get(&stats.events_acked_seq) >= 1).then_some(())
        })
        .await
        .unwrap();
        // The control room: a browser watching all of M1M3 on the first frontend.
        let watcher = tokio::spawn(control_room(urls[0].clone()));
        Night {
            redis,
            ingest,
            frontends: procs,
            urls,
            load,
            csc,
            stats,
            producer,
            stop,
            proxy,
            watcher,
        }
    }

    /// Publishes events 1..=`count` at [`EVENTS_PER_S`], in the background.
    fn publish(&self, count: i64) -> JoinHandle<()> {
        self.publish_padded(count, 0)
    }

    /// Likewise, each event with `pad` more bytes.
    fn publish_padded(&self, count: i64, pad: usize) -> JoinHandle<()> {
        let csc = self.csc.clone();
        tokio::spawn(async move {
            let per_tick = (EVENTS_PER_S / 100).max(1) as i64;
            let mut tick = tokio::time::interval(Duration::from_millis(10));
            for n in 1..=count {
                if n % per_tick == 1 || per_tick == 1 {
                    tick.tick().await;
                }
                csc.publish_padded(n, pad).await;
            }
        })
    }

    /// Waits until the producer has had `n` events acknowledged as stored.
    async fn acked(&self, n: u64) {
        let stats = self.stats.clone();
        wait_for(&format!("{n} events stored"), WAIT, || async {
            (ProducerStats::get(&stats.events_acked_seq) >= n).then_some(())
        })
        .await
        .unwrap();
    }

    /// Every role's RSS now, by name (redis-server's last), and the bytes
    /// Redis's data takes (`used_memory`), if Redis answers.
    async fn rss(&self) -> (Vec<(String, Option<u64>)>, Option<u64>) {
        let redis = redis_memory(&self.redis.url()).await;
        let mut out = vec![("ingest".to_string(), self.ingest.rss_bytes())];
        for (i, f) in self.frontends.iter().enumerate() {
            out.push((format!("frontend{i}"), f.rss_bytes()));
        }
        for (csc, p) in NIGHT.iter().zip(&self.load) {
            out.push((format!("producer {csc}"), p.rss_bytes()));
        }
        let redis_rss = redis.and_then(|(pid, _)| meridian_testkit::process::rss_of(pid));
        out.push((REDIS_ROLE.to_string(), redis_rss));
        (out, redis.map(|(_, data)| data))
    }

    async fn stop(self) {
        self.stop.cancel();
        self.producer.await.unwrap();
        self.watcher.abort();
        drop(self.proxy);
        drop(self.load);
        drop(self.frontends);
        drop(self.ingest);
        drop(self.redis);
    }
}

/// A control-room browser: all of M1M3, read as fast as it comes, for as
/// long as its frontend lives (the load the frontends carry besides the
/// counted topic).
async fn control_room(url: String) {
    let Ok(mut browser) = Browser::connect(&url).await else {
        return;
    };
    if browser
        .send_json(&serde_json::json!({"op": "subscribe", "csc": "MTM1M3", "salindex": 0}))
        .await
        .is_err()
    {
        return;
    }
    while let Ok(Received::Json(_)) = browser.next().await {}
}

/// What the counted browser saw.
#[derive(Debug, Default)]
struct Seen {
    values: Vec<i64>,
    reconnects: usize,
    lost_notices: usize,
}

/// A browser on the counted CSC's event topic that recovers as the protocol
/// says, until it has seen event `last`: on a `lost` notice it subscribes
/// again after the last id it received; when its connection ends (a killed
/// frontend, a 4001 for a slow reader, no message for a while) it connects
/// again, to the next of `urls` in turn, and subscribes after that id.
/// With `stall = Some((n, d))` it stops reading for `d` after event `n`.
/// `first` is told when event 0 arrives.
async fn watch(
    urls: Vec<String>,
    last: i64,
    stall: Option<(i64, Duration)>,
    first: tokio::sync::oneshot::Sender<()>,
) -> Seen {
    let mut first = Some(first);
    let small_buffer = stall.is_some();
    let mut seen = Seen::default();
    let mut last_id: Option<String> = None;
    let mut stall = stall;
    let mut which = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(600);
    loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no end after 10 min: {seen:?}"
        );
        let url = &urls[which % urls.len()];
        let mut browser = match connect(url, small_buffer).await {
            Ok(b) => b,
            Err(_) => {
                // Down (killed, restarting): try the next one shortly.
                which += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let subscribed = match &last_id {
            Some(id) => browser.subscribe_after(CSC, "event", "scalars", id).await,
            None => browser.subscribe(CSC, "event", "scalars").await,
        };
        if subscribed.is_err() {
            continue;
        }
        loop {
            let message = match browser.next().await {
                Ok(Received::Json(v)) => v,
                // Closed (1001, 4001, a kill) or silent for too long: reconnect.
                Ok(Received::Closed { .. }) | Err(_) => break,
            };
            match message["type"].as_str() {
                Some("sample") if message["topic"] == "scalars" => {
                    let n = message["fields"]["int0"].as_i64().unwrap();
                    seen.values.push(n);
                    last_id = Some(message["id"].as_str().unwrap().to_string());
                    if let Some(first) = first.take() {
                        let _ = first.send(());
                    }
                    if n == last {
                        return seen;
                    }
                    if let Some((at, pause)) = stall {
                        if n >= at {
                            // The fault itself: this browser reads nothing for `pause`.
                            tokio::time::sleep(pause).await;
                            stall = None;
                        }
                    }
                }
                Some("lost") => {
                    seen.lost_notices += 1;
                    let id = last_id.clone().expect("a loss follows a received event");
                    if browser
                        .subscribe_after(CSC, "event", "scalars", &id)
                        .await
                        .is_err()
                    {
                        break;
                    }
                }
                Some("gap") | Some("error") => panic!("unrecoverable: {message}"),
                _ => {}
            }
        }
        seen.reconnects += 1;
        which += 1;
    }
}

/// A browser on `url`; with `small`, its socket's receive buffer is 4 KiB,
/// so a browser that stops reading soon fills the frontend's side (as a
/// browser tab in the background does, with the kernel's default buffers
/// several MB larger than that).
async fn connect(url: &str, small: bool) -> anyhow::Result<Browser> {
    if !small {
        return Browser::connect(url).await;
    }
    let addr: std::net::SocketAddr = url
        .trim_start_matches("ws://")
        .split('/')
        .next()
        .unwrap_or_default()
        .parse()?;
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.set_recv_buffer_size(4096)?;
    let stream = socket.connect(addr).await?;
    let stream = tokio_tungstenite::MaybeTlsStream::Plain(stream);
    let (ws, _) = tokio_tungstenite::client_async(url, stream).await?;
    Browser::from_stream(ws).await
}

/// Every event from 0 to `last`, once each, in order.
fn assert_exactly_once(seen: &Seen, last: i64, fault: &str) {
    let expected: Vec<i64> = (0..=last).collect();
    if seen.values != expected {
        let mut sorted = seen.values.clone();
        sorted.sort_unstable();
        let duplicates = sorted.windows(2).filter(|w| w[0] == w[1]).count();
        sorted.dedup();
        let missing = expected.len() - sorted.iter().filter(|v| (0..=last).contains(*v)).count();
        panic!(
            "{fault}: {} received for {} produced: {missing} lost, {duplicates} duplicated ({} reconnects)",
            seen.values.len(),
            expected.len(),
            seen.reconnects
        );
    }
    println!(
        "{fault}: {} events produced, {} received, 0 lost, 0 duplicated ({} reconnects, {} loss notices recovered)",
        expected.len(),
        seen.values.len(),
        seen.reconnects,
        seen.lost_notices
    );
}

/// Starts the counted browser on the first frontend (then the others) and
/// waits until it has event 0, so it watches from before the first fault.
async fn counted_browser(night: &Night, last: i64, stall: Option<(i64, Duration)>) -> JoinHandle<Seen> {
    let (first, got_first) = tokio::sync::oneshot::channel();
    let handle = tokio::spawn(watch(night.urls.clone(), last, stall, first));
    tokio::time::timeout(WAIT, got_first)
        .await
        .expect("the browser receives event 0")
        .expect("the browser receives event 0");
    handle
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ingest_killed_with_sigkill_loses_and_repeats_nothing() {
    const LAST: i64 = 3000;
    let mut night = Night::start(1, false).await;
    let browser = counted_browser(&night, LAST, None).await;
    let publisher = night.publish(LAST);
    night.acked(LAST as u64 / 3).await;
    night.ingest.kill9();
    night.ingest.restart().unwrap();
    publisher.await.unwrap();
    let seen = browser.await.unwrap();
    assert_exactly_once(&seen, LAST, "ingest kill -9");
    assert!(
        ProducerStats::get(&night.stats.connections) >= 2,
        "the producer reconnected"
    );
    // The night's producers came back too.
    for (csc, p) in NIGHT.iter().zip(&night.load) {
        let what = format!("the {csc} producer reconnected (its log: {})", p.log.display());
        wait_for(&what, WAIT, || async {
            (p.scrape()
                .await
                .ok()?
                .get("meridian_producer_connections_total")?
                >= 2.0)
                .then_some(())
        })
        .await
        .unwrap();
    }
    night.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_and_restarted_loses_and_repeats_nothing() {
    const LAST: i64 = 3000;
    let outage = Duration::from_secs(if long() { 30 } else { 5 });
    let mut night = Night::start(1, false).await;
    let browser = counted_browser(&night, LAST, None).await;
    let publisher = night.publish(LAST);
    night.acked(LAST as u64 / 3).await;
    night.redis.stop();
    // The outage: Redis is gone this long while everything keeps publishing.
    tokio::time::sleep(outage).await;
    night.redis.restart().unwrap();
    publisher.await.unwrap();
    let seen = browser.await.unwrap();
    assert_exactly_once(&seen, LAST, &format!("Redis down {outage:?}"));
    night.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frontend_killed_with_sigkill_its_browser_recovers_on_another() {
    const LAST: i64 = 3000;
    let mut night = Night::start(2, false).await;
    let browser = counted_browser(&night, LAST, None).await;
    let publisher = night.publish(LAST);
    night.acked(LAST as u64 / 3).await;
    night.frontends[0].kill9();
    publisher.await.unwrap();
    let seen = browser.await.unwrap();
    assert!(seen.reconnects >= 1, "the browser moved");
    assert_exactly_once(&seen, LAST, "frontend kill -9");
    night.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_producer_cut_off_from_its_ingest_loses_and_repeats_nothing() {
    let cut = Duration::from_secs(if long() { 30 } else { 5 });
    // Long enough to publish through the whole cut and after it.
    let last = (EVENTS_PER_S * (cut.as_secs() + 10)) as i64;
    let night = Night::start(1, true).await;
    let browser = counted_browser(&night, last, None).await;
    let publisher = night.publish(last);
    night.acked(EVENTS_PER_S).await;
    let proxy = night.proxy.as_ref().unwrap();
    proxy.set_cut(true);
    let acked_at_cut = ProducerStats::get(&night.stats.events_acked_seq);
    // The cut: nothing passes either way for this long.
    tokio::time::sleep(cut).await;
    let acked_during = ProducerStats::get(&night.stats.events_acked_seq);
    let spooled = ProducerStats::get(&night.stats.spooled);
    proxy.set_cut(false);
    assert!(proxy.dropped() > 0, "the cut dropped datagrams");
    assert!(
        acked_during <= acked_at_cut + 256,
        "nothing is acknowledged through a cut link ({acked_at_cut} -> {acked_during})"
    );
    publisher.await.unwrap();
    let seen = browser.await.unwrap();
    assert_exactly_once(
        &seen,
        last,
        &format!("producer cut off {cut:?} ({spooled} events spooled)"),
    );
    assert_eq!(ProducerStats::get(&night.stats.events_dropped), 0);
    night.stop().await;
}

/// The browser stops reading while 8 KiB events keep coming (1.6 MB/s; its
/// socket's receive buffer is small): the frontend holds at most its bounds for it,
/// tells it what it lost or closes it as too slow (4001), and it recovers
/// every event from the store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_that_stops_reading_recovers_everything() {
    let stall = Duration::from_secs(if long() { 60 } else { 15 });
    let last = (EVENTS_PER_S * (stall.as_secs() + 10)) as i64;
    let night = Night::start(1, false).await;
    let browser = counted_browser(&night, last, Some((EVENTS_PER_S as i64, stall))).await;
    let publisher = night.publish_padded(last, 8 * 1024);
    publisher.await.unwrap();
    let seen = browser.await.unwrap();
    assert!(
        seen.reconnects + seen.lost_notices > 0,
        "the stall overflows the frontend's bounds for this browser: {} events received with no loss notice or reconnect",
        seen.values.len()
    );
    assert_exactly_once(&seen, last, &format!("browser stopped reading {stall:?}"));
    night.stop().await;
}

/// The name of the store in the soak's report.
const REDIS_ROLE: &str = "redis-server";

/// RSS redis-server may add per byte its data grows: its allocator
/// (jemalloc) rounds each allocation up to a size class, up to 25 % more
/// (measured here: RSS grew 1.15 × `used_memory` while streams filled).
const REDIS_RSS_PER_DATA_BYTE: f64 = 1.25;

/// redis-server's process id (it answers on its own port, so the one asked
/// is the one measured) and the bytes its data takes (`INFO`'s
/// `used_memory`); `None` if it does not answer.
async fn redis_memory(url: &str) -> Option<(u32, u64)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = url.strip_prefix("redis://")?.trim_end_matches('/');
    let ask = async {
        let mut conn = tokio::net::TcpStream::connect(addr).await.ok()?;
        conn.write_all(b"INFO\r\n").await.ok()?;
        // One bulk string: `$<length>\r\n<text>\r\n`, a few KiB.
        let mut reply = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            let n = conn.read(&mut chunk).await.ok()?;
            if n == 0 || reply.len() > 1 << 20 {
                return None;
            }
            reply.extend_from_slice(&chunk[..n]);
            let text = String::from_utf8_lossy(&reply);
            let (head, body) = text.strip_prefix('$')?.split_once("\r\n")?;
            if body.len() >= head.parse::<usize>().ok()? {
                return Some(body.to_string());
            }
        }
    };
    let info = tokio::time::timeout(Duration::from_secs(2), ask).await.ok()??;
    let field = |name: &str| {
        info.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .and_then(|v| v.trim().parse::<u64>().ok())
    };
    Some((u32::try_from(field("process_id")?).ok()?, field("used_memory")?))
}

/// Least-squares slope of `samples` (seconds, bytes), in bytes per second.
fn slope(samples: &[(f64, f64)]) -> f64 {
    let n = samples.len() as f64;
    let (mx, my) = (
        samples.iter().map(|s| s.0).sum::<f64>() / n,
        samples.iter().map(|s| s.1).sum::<f64>() / n,
    );
    let cov: f64 = samples.iter().map(|(x, y)| (x - mx) * (y - my)).sum();
    let var: f64 = samples.iter().map(|(x, _)| (x - mx) * (x - mx)).sum();
    cov / var
}

/// Night-like load for 10 minutes (45 s without `MERIDIAN_LONG_TESTS=1`),
/// the counted CSC publishing throughout and a browser receiving it: the RSS
/// of every role is sampled each second and, after a warm-up (2 min; 15 s
/// in the short run), must show no growth trend: the least-squares slope,
/// extrapolated over the measured window, stays under 5 % of the role's
/// mean RSS plus 2 MiB of allocator noise (4 MiB in the short run, where
/// the ingest still grows its buffers: about 2 MiB in its first minute,
/// then +72 KiB/min over the next eight). redis-server may also grow with
/// its data (`used_memory`, times [`REDIS_RSS_PER_DATA_BYTE`]) over the
/// window: its streams fill up to their retention (`store.*_maxlen`),
/// which bounds them, and only growth beyond the data it holds is a leak.
/// Every event still arrives exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_soak_at_night_load_shows_no_memory_growth() {
    let (run, warm_up, noise_mib) = match long() {
        true => (Duration::from_secs(600), Duration::from_secs(120), 2.0),
        false => (Duration::from_secs(45), Duration::from_secs(15), 4.0),
    };
    let last = (EVENTS_PER_S * run.as_secs()) as i64;
    let night = Night::start(1, false).await;
    let browser = counted_browser(&night, last, None).await;
    let publisher = night.publish(last);
    let started = tokio::time::Instant::now();
    let roles = night.rss().await.0;
    let mut samples: Vec<Vec<(f64, f64)>> = vec![Vec::new(); roles.len()];
    let mut redis_data: Vec<(f64, f64)> = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    while !publisher.is_finished() {
        tick.tick().await;
        let t = started.elapsed();
        if t < warm_up {
            continue;
        }
        let (rss, data) = night.rss().await;
        for (i, (_, rss)) in rss.into_iter().enumerate() {
            if let Some(rss) = rss {
                samples[i].push((t.as_secs_f64(), rss as f64));
            }
        }
        if let Some(data) = data {
            redis_data.push((t.as_secs_f64(), data as f64));
        }
    }
    publisher.await.unwrap();
    let seen = browser.await.unwrap();
    assert_exactly_once(&seen, last, &format!("soak {run:?}"));
    let mut problems = Vec::new();
    assert!(
        redis_data.len() >= 10,
        "redis: only {} used_memory samples",
        redis_data.len()
    );
    let data_window = redis_data.last().unwrap().0 - redis_data[0].0;
    let data_growth = (slope(&redis_data) * data_window).max(0.0);
    println!(
        "soak {REDIS_ROLE} data (used_memory): slope {:+.1} KiB/min over {data_window:.0} s (growth {:+.2} MiB)",
        slope(&redis_data) * 60.0 / 1024.0,
        data_growth / 1048576.0
    );
    for ((role, _), points) in roles.iter().zip(&samples) {
        assert!(points.len() >= 10, "{role}: only {} RSS samples", points.len());
        let window = points.last().unwrap().0 - points[0].0;
        let mean = points.iter().map(|p| p.1).sum::<f64>() / points.len() as f64;
        let s = slope(points);
        let growth = s * window;
        let data = match role == REDIS_ROLE {
            true => REDIS_RSS_PER_DATA_BYTE * data_growth,
            false => 0.0,
        };
        let allowed = 0.05 * mean + noise_mib * 1024.0 * 1024.0 + data;
        println!(
            "soak {role}: mean RSS {:.1} MiB, slope {:+.1} KiB/min over {window:.0} s (growth {:+.2} MiB, allowed {:.2} MiB)",
            mean / 1048576.0,
            s * 60.0 / 1024.0,
            growth / 1048576.0,
            allowed / 1048576.0
        );
        if growth > allowed {
            problems.push(format!("{role} grew {:.2} MiB", growth / 1048576.0));
        }
    }
    assert!(
        problems.is_empty(),
        "memory grows under steady load: {problems:?}"
    );
    night.stop().await;
}
