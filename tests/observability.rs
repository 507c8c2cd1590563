//! Every role, each in its own process with `--metrics-listen`, serves
//! `/metrics`, `/healthz` and `/readyz` on that port, and the numbers move
//! with the traffic: producer → ingest → Redis → frontend, plus a commander.
//! Readiness follows what a role needs (the ingest its store, a producer its
//! ingest), and the JSON log of a producer connection carries its peer and
//! CSC. An operator would notice a failure as a pod Kubernetes never marks
//! ready (or never restarts), a dashboard that stays flat while data flows,
//! or log lines that cannot be traced to a device.

use meridian_testkit::http::Request;
use meridian_testkit::process::{free_tcp_port, free_udp_port, Metrics, Process};
use meridian_testkit::redis_server::RedisServer;
use meridian_testkit::wait_for;
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_meridian");
const WAIT: Duration = Duration::from_secs(60);

/// Waits until `process`'s `/metrics` satisfies `check`, and returns that page.
async fn scrape_until(process: &Process, what: &str, check: impl Fn(&Metrics) -> bool) -> Metrics {
    wait_for(what, WAIT, || async {
        let page = process.scrape().await.ok()?;
        check(&page).then_some(page)
    })
    .await
    .unwrap()
}

async fn ready_is(process: &Process, what: &str, status: u16) -> String {
    wait_for(what, WAIT, || async {
        let (s, body) = process.readyz().await.ok()?;
        (s == status).then_some(body)
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_role_serves_metrics_and_readiness_that_follow_the_traffic() {
    let mut redis = RedisServer::start().unwrap();
    let quic = free_udp_port();
    let ingest_listen = format!("127.0.0.1:{quic}");
    let mut ingest = Process::start(
        BIN,
        &[
            "--log-format",
            "json",
            "manager",
            "--role",
            "ingest",
            "--redis",
            &redis.url(),
            "--ingest-listen",
            &ingest_listen,
        ],
        &[],
    )
    .unwrap();
    ready_is(&ingest, "the ingest ready", 200).await;
    let health = Request::get("/healthz").send(ingest.metrics).await.unwrap();
    assert_eq!((health.status, health.text().as_str()), (200, "ok"));

    let producer = Process::start(
        BIN,
        &[
            "producer",
            "--csc",
            "Test:1",
            "--ingest",
            &ingest_listen,
            "--rate",
            "20",
        ],
        &[],
    )
    .unwrap();
    ready_is(&producer, "the producer connected, so ready", 200).await;

    // The ingest counts the producer and the samples it stores, with their lag.
    let first = scrape_until(&ingest, "the ingest storing telemetry", |m| {
        m.get("meridian_ingest_producers") == Some(1.0)
            && m.get("meridian_ingest_samples_stored_total{category=\"telemetry\"}")
                .is_some_and(|v| v > 0.0)
    })
    .await;
    let stored = |m: &Metrics| {
        m.value("meridian_ingest_samples_stored_total{category=\"telemetry\"}")
            .unwrap()
    };
    let second = scrape_until(&ingest, "the ingest's counters to move", |m| {
        stored(m) > stored(&first)
    })
    .await;
    assert!(
        second
            .value("meridian_ingest_lag_seconds_count{category=\"telemetry\"}")
            .unwrap()
            > 0.0
    );
    assert!(second.value("meridian_ingest_store_write_seconds_count").unwrap() > 0.0);
    assert_eq!(second.value("meridian_ingest_store_up").unwrap(), 1.0);
    assert!(second.value("process_resident_memory_bytes").unwrap() > 1e6);
    assert!(
        second
            .0
            .contains("meridian_ingest_lag_seconds_bucket{category=\"telemetry\",le=\"+Inf\"}"),
        "a Prometheus histogram:\n{}",
        second.0
    );

    // The producer counts what it sends, and it grows.
    let sent = |m: &Metrics| m.value("meridian_producer_samples_sent_total").unwrap();
    let p1 = scrape_until(&producer, "the producer sending", |m| sent(m) > 0.0).await;
    let p2 = scrape_until(&producer, "the producer's counters to move", |m| {
        sent(m) > sent(&p1)
    })
    .await;
    assert_eq!(p2.value("meridian_producer_connected").unwrap(), 1.0);
    assert!(
        p2.value("meridian_producer_lag_seconds_count{category=\"telemetry\"}")
            .unwrap()
            > 0.0
    );

    // The frontend on its metrics port, with a browser watching.
    let web = free_tcp_port();
    let frontend_listen = format!("127.0.0.1:{web}");
    let frontend = Process::start(
        BIN,
        &[
            "--dev",
            "manager",
            "--role",
            "frontend",
            "--redis",
            &redis.url(),
            "--frontend-listen",
            &frontend_listen,
        ],
        &[],
    )
    .unwrap();
    ready_is(&frontend, "the frontend ready", 200).await;
    let mut browser =
        meridian_testkit::browser::Browser::connect(&format!("ws://{frontend_listen}/ws?token=dev-token"))
            .await
            .unwrap();
    browser.subscribe("Test:1", "telemetry", "scalars").await.unwrap();
    browser.next_sample().await.unwrap();
    // Live samples (not only the last value) time both of the frontend's hops.
    let f = scrape_until(
        &frontend,
        "the frontend counting its browser and timing both hops",
        |m| {
            m.get("meridian_frontend_clients") == Some(1.0)
                && m.get("meridian_frontend_deliveries_total")
                    .is_some_and(|v| v > 0.0)
                && m.get(r#"meridian_frontend_hop_lag_seconds_count{hop="store_to_frontend"}"#)
                    .is_some_and(|v| v > 0.0)
                && m.get(r#"meridian_frontend_hop_lag_seconds_count{hop="frontend_to_browser"}"#)
                    .is_some_and(|v| v > 0.0)
        },
    )
    .await;
    assert!(f.value("meridian_frontend_entries_read_total").unwrap() > 0.0);

    // The commander: its own port and the metrics port count a refused request.
    let api = free_tcp_port();
    let commander = Process::start(
        BIN,
        &[
            "--dev",
            "commander",
            "--redis",
            &redis.url(),
            "--listen",
            &format!("127.0.0.1:{api}"),
        ],
        &[],
    )
    .unwrap();
    ready_is(&commander, "the commander ready", 200).await;
    let refused = Request::post_json(
        "/cmd/",
        &serde_json::json!({"csc": "Test", "salindex": 1, "cmd": "cmd_start"}),
    )
    .send(([127, 0, 0, 1], api).into())
    .await
    .unwrap();
    assert_eq!(refused.status, 401, "no token: {}", refused.text());
    let c = scrape_until(&commander, "the commander counting the refusal", |m| {
        m.get("meridian_commander_requests_total{outcome=\"refused\"}") == Some(1.0)
    })
    .await;
    assert!(c.0.contains("meridian_commander_csc_seconds_count 0"), "{}", c.0);
    let own = Request::get("/metrics")
        .send(([127, 0, 0, 1], api).into())
        .await
        .unwrap();
    assert!(own
        .text()
        .contains("meridian_commander_requests_total{outcome=\"refused\"} 1"));

    // Redis stops: the ingest is no longer ready and says why; it comes back.
    redis.stop();
    let why = ready_is(&ingest, "the ingest not ready without its store", 503).await;
    assert!(why.contains("ingest: store"), "{why}");
    redis.restart().unwrap();
    ready_is(&ingest, "the ingest ready again", 200).await;

    // The ingest dies: the producer is no longer ready, and says why.
    ingest.kill9();
    let why = ready_is(&producer, "the producer not ready without an ingest", 503).await;
    assert!(why.contains("producer: not connected"), "{why}");

    // The ingest's JSON log: the connection's span names its peer and CSC.
    let log = ingest.log_text();
    let connected = log
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|l| l["fields"]["message"] == "producer connected")
        .unwrap_or_else(|| panic!("no 'producer connected' line in:\n{log}"));
    let span = &connected["span"];
    assert_eq!(span["name"], "producer", "{connected}");
    assert_eq!(span["csc"], "Test:1", "{connected}");
    assert!(
        span["peer"].as_str().is_some_and(|p| p.starts_with("127.0.0.1:")),
        "{connected}"
    );
}
