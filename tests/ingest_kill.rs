//! The ingest manager is killed (SIGKILL, no goodbye) in the middle of a
//! stream of 10,000 events and started again: every event arrives in Redis
//! exactly once, in order. The producer must notice, keep its spool, replay
//! what was not acknowledged, and the store must not write the replayed
//! events that the dead ingest had already written. An operator would see a
//! failure as missing or doubled events after an ingest pod restart.

use meridian_config::Config;
use meridian_producer::ProducerStats;
use meridian_quic::tls::ServerTrust;
use meridian_store::redis::RedisStore;
use meridian_testkit::manual_csc::{stored_event_values, ManualCsc};
use meridian_testkit::redis_server::RedisServer;
use meridian_testkit::wait_for;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const EVENTS: i64 = 10_000;

struct Ingest(Child);

impl Ingest {
    fn start(redis: &str, port: u16) -> Ingest {
        let child = Command::new(env!("CARGO_BIN_EXE_meridian"))
            .args(["manager", "--role", "ingest", "--redis", redis])
            .args(["--ingest-listen", &format!("127.0.0.1:{port}")])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start meridian manager");
        Ingest(child)
    }

    fn kill(&mut self) {
        // SIGKILL: the process gets no chance to drain or say goodbye.
        self.0.kill().expect("kill");
        self.0.wait().expect("reap");
    }
}

impl Drop for Ingest {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_events_survive_an_ingest_killed_mid_stream() {
    let redis = RedisServer::start().unwrap();
    let port = free_udp_port();
    let mut ingest = Ingest::start(&redis.url(), port);

    let csc = ManualCsc::new("Test:5", 1024);
    let mut config = Config::default();
    config.producer.csc = "Test:5".into();
    config.producer.ingest = vec![format!("127.0.0.1:{port}")];
    let stats = Arc::new(ProducerStats::default());
    let stop = CancellationToken::new();
    // The restarted ingest makes a new development certificate: accept it.
    let producer = tokio::spawn({
        let (csc, stats, stop) = (csc.clone(), stats.clone(), stop.clone());
        async move { meridian_producer::run(&config, csc, ServerTrust::InsecureAnyCertificate, stats, stop).await }
    });
    let publisher = tokio::spawn({
        let csc = csc.clone();
        async move {
            let mut tick = tokio::time::interval(Duration::from_millis(5));
            for n in 1..=EVENTS {
                if n % 10 == 1 {
                    tick.tick().await;
                }
                csc.publish(n).await;
            }
        }
    });
    let acked = |at_least: u64| {
        let stats = stats.clone();
        async move { (ProducerStats::get(&stats.events_acked_seq) >= at_least).then_some(()) }
    };
    wait_for("3000 events stored", Duration::from_secs(60), || acked(3000))
        .await
        .unwrap();
    ingest.kill();
    let at_kill = ProducerStats::get(&stats.events_acked_seq);
    let _ingest = Ingest::start(&redis.url(), port);

    publisher.await.unwrap();
    wait_for("all events stored", Duration::from_secs(60), || {
        acked(EVENTS as u64)
    })
    .await
    .unwrap();
    assert!(
        ProducerStats::get(&stats.connections) >= 2,
        "the producer reconnected"
    );

    let store = RedisStore::connect(&redis.url()).await.unwrap();
    let stored = stored_event_values(&store, "Test:5").await;
    let expected: Vec<i64> = (1..=EVENTS).collect();
    assert_eq!(
        stored.len(),
        expected.len(),
        "each event once (killed after {at_kill} acknowledged)"
    );
    assert_eq!(stored, expected, "in order, none missing, none repeated");
    stop.cancel();
    producer.await.unwrap().unwrap();
}
