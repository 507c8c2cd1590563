//! A stranger without a token flooding the commander: after a few failed
//! attempts its address is refused with 429 and `Retry-After` before any
//! token is compared, the refusals are counted in `/metrics` by reason and
//! audited only sampled, so an operator's accepted command stays in the
//! audit log (here a real Redis, trimmed to a small `audit_maxlen`).
//!
//! A user would notice a failure here as a night's commands missing from
//! the review after someone hammered the port, or a commander busy
//! comparing tokens for a stranger.

use meridian_commander::Commander;
use meridian_config::Config;
use meridian_sim::{SimMiddleware, SimOptions};
use meridian_store::{redis::RedisStore, Store};
use meridian_testkit::http::Request;
use meridian_testkit::redis_server::RedisServer;
use serde_json::json;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// Failed requests of each kind in the flood.
const FLOOD: usize = 400;

const CONFIG: &str = r#"
[commander]
listen = "127.0.0.1:0"
audit_maxlen = 20
address_rate_limit_per_s = 0.01
address_rate_limit_burst = 5
tokens = [
  { name = "ops", token = "ops-secret-1", cscs = ["*"], rate_limit_per_s = 1000.0, rate_limit_burst = 1000 },
]
"#;

async fn start() -> (RedisServer, SocketAddr, CancellationToken, SimMiddleware) {
    let redis = RedisServer::start().unwrap();
    let store: Arc<dyn Store> = Arc::new(RedisStore::connect(&redis.url()).await.unwrap());
    let config = Config::from_toml_str(CONFIG).unwrap();
    let sim = SimMiddleware::with_options(SimOptions::default(), None);
    let stop = CancellationToken::new();
    sim.start(&"Test:1".parse().unwrap(), stop.clone()).unwrap();
    let commander = Commander::bind(&config, Arc::new(sim.clone()), store)
        .await
        .unwrap();
    let addr = commander.local_addr();
    tokio::spawn(commander.run(stop.clone()));
    (redis, addr, stop, sim)
}

fn love(token: Option<&str>) -> Request {
    let body = json!({"csc": "Test", "salindex": 1, "cmd": "cmd_setLogLevel", "params": {"level": 20}});
    let request = Request::post_json("/cmd/", &body);
    match token {
        Some(token) => request.header("Authorization", token),
        None => request,
    }
}

/// The value of `meridian_commander_refused_total{reason}` in `page`.
fn refused(page: &str, reason: &str) -> u64 {
    let prefix = format!("meridian_commander_refused_total{{reason=\"{reason}\"}} ");
    page.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no {prefix} in {page}"))
        .parse()
        .unwrap()
}

#[tokio::test]
async fn a_flood_without_a_token_is_refused_per_address_and_cannot_push_accepted_commands_out_of_the_audit() {
    let (redis, addr, stop, _sim) = start().await;
    let r = love(Some("Bearer ops-secret-1")).send(addr).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text());

    // The flood: no token, unknown tokens, malformed headers, in turn.
    let mut statuses = Vec::new();
    for i in 0..FLOOD {
        for token in [
            None,
            Some(format!("Bearer guess-{i}")),
            Some("Basic x".to_string()),
        ] {
            let r = love(token.as_deref()).send(addr).await.unwrap();
            statuses.push(r.status);
            if r.status == 429 {
                let retry: u64 = r.header("retry-after").expect("Retry-After").parse().unwrap();
                assert!((1..=100).contains(&retry), "Retry-After {retry}");
                assert_eq!(r.json().unwrap()["error"], "rate_limited");
            }
        }
    }
    // The first attempts are compared (401), then the address is refused.
    assert!(statuses[..5].iter().all(|s| *s == 401), "{:?}", &statuses[..10]);
    assert!(statuses[5..].iter().all(|s| *s == 429), "{:?}", &statuses[..10]);

    // Counted by reason.
    let page = Request::get("/metrics").send(addr).await.unwrap().text();
    let limited = refused(&page, "address_rate_limited");
    let failed =
        refused(&page, "no_token") + refused(&page, "unknown_token") + refused(&page, "malformed_token");
    assert_eq!((failed, limited), (5, 3 * FLOOD as u64 - 5), "{page}");

    // The accepted command is still in the audit, and the refusals are
    // only sampled there. (Read from Redis: this address is refused until
    // its bucket refills, a valid token or not, as its token is not compared.)
    let entries = read_audit(&redis).await;
    let complete: Vec<_> = entries.iter().filter(|e| e["outcome"] == "complete").collect();
    assert_eq!(complete.len(), 1, "{entries:#?}");
    assert_eq!(complete[0]["token"], "ops");
    // At most one per reason in the sampling interval.
    let reasons = meridian_commander::refusal::Refusal::ALL.len();
    assert!(
        entries.len() <= 1 + reasons,
        "{} entries: {entries:#?}",
        entries.len()
    );
    stop.cancel();
}

/// Every audit entry in the store's stream, read as an operator's redis-cli would.
async fn read_audit(redis: &RedisServer) -> Vec<serde_json::Value> {
    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let reply: Vec<(String, Vec<String>)> = redis::cmd("XRANGE")
        .arg(meridian_proto::keys::AUDIT)
        .arg("-")
        .arg("+")
        .query_async(&mut conn)
        .await
        .unwrap();
    reply
        .into_iter()
        .flat_map(|(_, fields)| {
            fields
                .chunks(2)
                .map(|pair| serde_json::from_str(&pair[1]).unwrap())
                .collect::<Vec<_>>()
        })
        .collect()
}

#[tokio::test]
async fn an_address_that_failed_too_often_gets_429_with_retry_after_before_its_token_is_compared() {
    let (_redis, addr, stop, _sim) = start().await;
    for i in 0..5 {
        let r = love(Some(&format!("Bearer guess-{i}"))).send(addr).await.unwrap();
        assert_eq!(r.status, 401, "{}", r.text());
    }
    // Even a valid token now waits: it is not compared (100 s per attempt).
    for route in ["/cmd/", "/v1/audit"] {
        let request = match route {
            "/cmd/" => love(Some("Bearer ops-secret-1")),
            _ => Request::get(route).bearer("ops-secret-1"),
        };
        let r = request.send(addr).await.unwrap();
        assert_eq!(r.status, 429, "{route}: {}", r.text());
        let retry: u64 = r.header("retry-after").expect("Retry-After").parse().unwrap();
        assert!((90..=100).contains(&retry), "{route}: Retry-After {retry}");
        assert_eq!(r.json().unwrap()["error"], "rate_limited");
    }
    let page = Request::get("/metrics").send(addr).await.unwrap().text();
    assert_eq!(refused(&page, "unknown_token"), 5, "{page}");
    assert_eq!(refused(&page, "address_rate_limited"), 2, "{page}");
    stop.cancel();
}
