//! The commander as operators and their tools use it, over real HTTP on a
//! real socket, in front of simulated CSCs: the standard commands change
//! the CSC's state and are acknowledged; every way a request can be
//! refused gets its own status and a JSON body naming the field; every
//! request, refused or not, is in the audit log (in the in-memory store and
//! in a real Redis); the native route streams the acknowledgements in
//! order; the OpenAPI document matches the routes served.
//!
//! A user would notice a failure here as a command that silently did
//! nothing, an error they cannot act on, a command missing from the
//! night's review, or a client generated from a document that lies.

use meridian_commander::routes::OPENAPI_JSON;
use meridian_commander::Commander;
use meridian_config::Config;
use meridian_proto::{keys, CscId, Value as FieldValue};
use meridian_sim::csc::SummaryState;
use meridian_sim::{Middleware, SimMiddleware, SimOptions};
use meridian_store::{memory::MemoryStore, redis::RedisStore, Store};
use meridian_testkit::http::{Request, Response};
use meridian_testkit::redis_server::RedisServer;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio_util::sync::CancellationToken;

/// Deadline of every wait on a condition.
const DEADLINE: Duration = Duration::from_secs(10);

/// Tokens and limits of every test: `ops` may do anything (at a high rate),
/// `test2-only` may command only Test:2, `viewer` is read-only, `script` is
/// limited to a burst of 2 and then one request per 100 s. The dome's
/// `moveAzimuth` (about 2°/s) gets a timeout far shorter than a slew.
const CONFIG: &str = r#"
[commander]
listen = "127.0.0.1:0"
command_timeout_ms = 10000
tokens = [
  { name = "ops", token = "ops-secret-1", cscs = ["*"], rate_limit_per_s = 1000.0, rate_limit_burst = 1000 },
  { name = "test2-only", token = "test2-secret-2", cscs = ["Test:2"] },
  { name = "viewer", token = "viewer-secret-3" },
  { name = "script", token = "script-secret-4", cscs = ["*"], rate_limit_per_s = 0.01, rate_limit_burst = 2 },
]
[commander.timeouts_ms]
"ATDome.moveAzimuth" = 500
"#;

const SECRETS: &[&str] = &[
    "ops-secret-1",
    "test2-secret-2",
    "viewer-secret-3",
    "script-secret-4",
    "not-a-known-token-5",
];

/// A commander in front of simulated Test:1, Test:2 (STANDBY unless
/// `enabled`) and ATDome:1 (ENABLED).
struct Running {
    addr: SocketAddr,
    sim: SimMiddleware,
    store: Arc<dyn Store>,
    sim_stop: CancellationToken,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), meridian_commander::CommanderError>>,
    started_ms: u64,
}

impl Running {
    async fn start(store: Arc<dyn Store>, enabled: bool) -> Running {
        let config = Config::from_toml_str(CONFIG).unwrap();
        let options = SimOptions {
            start_enabled: enabled,
            ..SimOptions::default()
        };
        let sim = SimMiddleware::with_options(options, None);
        let sim_stop = CancellationToken::new();
        for csc in ["Test:1", "Test:2"] {
            sim.start(&csc.parse().unwrap(), sim_stop.clone()).unwrap();
        }
        let dome = SimOptions {
            start_enabled: true,
            ..options
        };
        sim.start_with(&"ATDome:1".parse().unwrap(), dome, sim_stop.clone())
            .unwrap();
        let started_ms = now_ms();
        let commander = Commander::bind(&config, Arc::new(sim.clone()), store.clone())
            .await
            .unwrap();
        let addr = commander.local_addr();
        let stop = CancellationToken::new();
        let task = tokio::spawn(commander.run(stop.clone()));
        Running {
            addr,
            sim,
            store,
            sim_stop,
            stop,
            task,
            started_ms,
        }
    }

    async fn send(&self, request: Request) -> Response {
        request.send(self.addr).await.unwrap()
    }

    /// POST /cmd/ as the replaced system's client sends it.
    async fn love(&self, token: &str, csc: &str, salindex: Value, cmd: &str, params: Value) -> Response {
        let body = json!({"csc": csc, "salindex": salindex, "cmd": cmd, "params": params, "identity": "op@control-room"});
        self.send(Request::post_json("/cmd/", &body).header("Authorization", &format!("Token {token}")))
            .await
    }

    /// Every audit entry written since the commander started.
    async fn audit(&self) -> Vec<Value> {
        let path = format!("/v1/audit?since={}&limit=1000", self.started_ms);
        let response = self.send(Request::get(&path).bearer("viewer-secret-3")).await;
        assert_eq!(response.status, 200, "{}", response.text());
        response.json().unwrap()["entries"].as_array().unwrap().clone()
    }

    fn state(&self, csc: &str) -> SummaryState {
        self.sim.csc(&csc.parse().unwrap()).unwrap().summary_state()
    }

    /// Stops the commander (it must stop cleanly) and the simulator.
    async fn stop(self) {
        self.stop.cancel();
        tokio::time::timeout(DEADLINE, self.task)
            .await
            .expect("the commander stops within the deadline")
            .unwrap()
            .unwrap();
        self.sim_stop.cancel();
        self.sim.stopped().await;
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// Status and JSON body, with the body in any failure message.
fn expect(response: &Response, status: u16) -> Value {
    assert_eq!(response.status, status, "{}", response.text());
    assert_eq!(
        response.header("content-type"),
        Some("application/json"),
        "every answer is JSON: {response:?}"
    );
    response.json().unwrap()
}

/// Waits for the CSC's `summaryState` event to report `state`.
async fn summary_state_event(feed: &mut meridian_sim::CscFeed, state: SummaryState) {
    tokio::time::timeout(DEADLINE, async {
        loop {
            let event = feed.events.recv().await.expect("the CSC publishes");
            if event.topic == "summaryState"
                && event
                    .fields
                    .iter()
                    .any(|(k, v)| k == "summaryState" && *v == FieldValue::Int(state as i64))
            {
                return;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no summaryState event {state:?}"));
}

#[tokio::test]
async fn each_standard_command_changes_the_csc_and_is_acknowledged_and_audited() {
    let running = Running::start(Arc::new(MemoryStore::new()), false).await;
    let id: CscId = "Test:1".parse().unwrap();
    let mut feed = running.sim.subscribe(&id).unwrap();
    summary_state_event(&mut feed, SummaryState::Standby).await;

    let steps = [
        ("cmd_start", json!({}), SummaryState::Disabled),
        ("cmd_enable", json!({}), SummaryState::Enabled),
        ("cmd_setLogLevel", json!({"level": 10}), SummaryState::Enabled),
        ("cmd_disable", json!({}), SummaryState::Disabled),
        ("cmd_standby", json!({}), SummaryState::Standby),
        ("cmd_exitControl", json!({}), SummaryState::Offline),
    ];
    for (cmd, params, state) in &steps {
        // salindex as the replaced browser client sends it: a string.
        let response = running
            .love("ops-secret-1", "Test", json!("1"), cmd, params.clone())
            .await;
        assert_eq!(
            expect(&response, 200),
            json!({"ack": "Done"}),
            "{cmd}: exactly the replaced system's shape"
        );
        assert_eq!(running.state("Test:1"), *state, "{cmd}");
        if *cmd == "cmd_setLogLevel" {
            // The CSC publishes its new log level.
            tokio::time::timeout(DEADLINE, async {
                loop {
                    let e = feed.events.recv().await.unwrap();
                    if e.topic == "logLevel"
                        && e.fields
                            .iter()
                            .any(|(k, v)| k == "level" && *v == FieldValue::Int(10))
                    {
                        return;
                    }
                }
            })
            .await
            .expect("logLevel event with level 10");
        } else {
            summary_state_event(&mut feed, *state).await;
        }
    }

    let entries = running.audit().await;
    assert_eq!(entries.len(), steps.len(), "{entries:#?}");
    for (entry, (cmd, params, _)) in entries.iter().zip(&steps) {
        assert_eq!(entry["outcome"], "complete", "{entry}");
        assert_eq!(entry["status"], 200);
        assert_eq!(entry["result"], "Done");
        assert_eq!(entry["token"], "ops");
        assert_eq!(entry["identity"], "op@control-room");
        assert_eq!(entry["route"], "/cmd/");
        assert_eq!(entry["peer"], "127.0.0.1");
        assert_eq!(
            (entry["csc"].as_str(), entry["salindex"].as_u64()),
            (Some("Test"), Some(1))
        );
        assert_eq!(entry["command"], cmd.strip_prefix("cmd_").unwrap());
        assert_eq!(entry["params"], *params);
        assert_eq!(entry["timeout_ms"], 10000);
        let (csc_ms, total_ms) = (
            entry["csc_ms"].as_u64().unwrap(),
            entry["duration_ms"].as_u64().unwrap(),
        );
        assert!(csc_ms <= total_ms, "{entry}");
        assert!(entry["received_unix_ms"].as_u64().unwrap() >= running.started_ms);
    }
    running.stop().await;
}

/// Sends every kind of refused request, then checks each answer and that
/// the audit log holds each one, in order, with its outcome.
async fn every_refusal_is_answered_and_audited(store: Arc<dyn Store>) -> Vec<Value> {
    let running = Running::start(store, false).await;
    let ops = "ops-secret-1";
    // What the audit log must then hold, in order: (outcome, status, token, command).
    let mut expected: Vec<(&str, u16, Option<&str>, Option<&str>)> = Vec::new();

    // Bad JSON.
    let r = running
        .send(Request::post_raw("/cmd/", b"{\"csc\": \"Test\", ".to_vec()).bearer(ops))
        .await;
    let body = expect(&r, 400);
    assert_eq!(body["error"], "bad_request");
    assert!(
        body["ack"].as_str().unwrap().starts_with("the body is not JSON"),
        "{body}"
    );
    expected.push(("refused", 400, Some("ops"), None));

    // A missing key, named as the replaced system named it.
    let r = running
        .send(
            Request::post_json("/cmd/", &json!({"csc": "Test", "cmd": "cmd_start", "params": {}}))
                .bearer(ops),
        )
        .await;
    let body = expect(&r, 400);
    assert_eq!(body["field"], "salindex");
    assert!(body["ack"]
        .as_str()
        .unwrap()
        .starts_with("Request must have JSON data with the following keys"));
    expected.push(("refused", 400, Some("ops"), Some("start")));

    // Unknown CSC.
    let r = running
        .love(ops, "MTM1M4", json!(0), "cmd_start", json!({}))
        .await;
    let body = expect(&r, 404);
    assert_eq!(
        (body["error"].as_str(), body["field"].as_str()),
        (Some("unknown_csc"), Some("csc"))
    );
    assert_eq!(body["ack"], "no CSC MTM1M4:0 is running");
    expected.push(("refused", 404, Some("ops"), Some("start")));

    // Unknown command.
    let r = running.love(ops, "Test", json!(1), "cmd_fly", json!({})).await;
    let body = expect(&r, 400);
    assert_eq!(body["field"], "cmd");
    assert_eq!(body["ack"], "cmd: Test:1 has no command fly");
    expected.push(("refused", 400, Some("ops"), Some("fly")));

    // Wrongly typed parameter, missing parameter, wrong array length.
    let r = running
        .love(
            ops,
            "Test",
            json!(1),
            "cmd_wait",
            json!({"duration": "soon", "ack": 1}),
        )
        .await;
    let body = expect(&r, 400);
    assert_eq!(body["field"], "params.duration");
    assert_eq!(body["ack"], "params.duration: expected a number, got a string");
    expected.push(("refused", 400, Some("ops"), Some("wait")));
    let r = running
        .love(ops, "Test", json!(1), "cmd_wait", json!({"ack": 1}))
        .await;
    assert_eq!(
        expect(&r, 400)["ack"],
        "params.duration: missing; expected a number"
    );
    expected.push(("refused", 400, Some("ops"), Some("wait")));
    let r = running
        .love(ops, "Test", json!(1), "cmd_setArrays", json!({"int0": [1, 2, 3]}))
        .await;
    let body = expect(&r, 400);
    assert!(body["field"].as_str().unwrap().starts_with("params."), "{body}");
    assert!(
        body["ack"].as_str().unwrap().contains("expected an array of 5"),
        "{body}"
    );
    expected.push(("refused", 400, Some("ops"), Some("setArrays")));

    // Wrong state: the CSC's own reason, passed through.
    assert_eq!(running.state("Test:1"), SummaryState::Standby);
    let r = running.love(ops, "Test", json!(1), "cmd_enable", json!({})).await;
    let body = expect(&r, 409);
    assert_eq!(body["error"], "refused");
    assert_eq!(body["ack"], "enable not allowed in state STANDBY");
    assert_eq!(running.state("Test:1"), SummaryState::Standby);
    expected.push(("failed", 409, Some("ops"), Some("enable")));

    // No token, an unknown token (never echoed), a read-only token, a
    // token for another CSC; then that token on its own CSC.
    let r = running
        .send(Request::post_json(
            "/cmd/",
            &json!({"csc": "Test", "salindex": 1, "cmd": "cmd_start", "params": {}}),
        ))
        .await;
    let body = expect(&r, 401);
    assert!(body["ack"].as_str().unwrap().contains("Authorization"), "{body}");
    assert_eq!(r.header("www-authenticate"), Some("Bearer"));
    expected.push(("refused", 401, None, Some("start")));
    let r = running
        .love("not-a-known-token-5", "Test", json!(1), "cmd_start", json!({}))
        .await;
    assert_eq!(expect(&r, 401)["ack"], "unknown token");
    assert!(!r.text().contains("not-a-known-token-5"));
    expected.push(("refused", 401, None, Some("start")));
    let r = running
        .love("viewer-secret-3", "Test", json!(1), "cmd_start", json!({}))
        .await;
    assert_eq!(
        expect(&r, 403)["ack"],
        "token \"viewer\" is read-only: it may not send commands"
    );
    expected.push(("refused", 403, Some("viewer"), Some("start")));
    let r = running
        .love("test2-secret-2", "Test", json!(1), "cmd_start", json!({}))
        .await;
    assert_eq!(
        expect(&r, 403)["ack"],
        "token \"test2-only\" may not command Test:1"
    );
    expected.push(("refused", 403, Some("test2-only"), Some("start")));
    let r = running
        .love("test2-secret-2", "Test", json!(2), "cmd_start", json!({}))
        .await;
    assert_eq!(expect(&r, 200), json!({"ack": "Done"}));
    assert_eq!(running.state("Test:2"), SummaryState::Disabled);
    expected.push(("complete", 200, Some("test2-only"), Some("start")));

    // Timeout: the dome turns at about 2°/s, its moveAzimuth times out at 500 ms.
    let r = running
        .love(
            ops,
            "ATDome",
            json!(1),
            "cmd_moveAzimuth",
            json!({"azimuth": 180.0}),
        )
        .await;
    let body = expect(&r, 504);
    assert_eq!(body["error"], "timeout");
    assert_eq!(body["ack"], "Command time out. Last ack received CMD_INPROGRESS.");
    expected.push(("timeout", 504, Some("ops"), Some("moveAzimuth")));

    // Rate limit: a burst of 2, then 429 with Retry-After (one request per 100 s).
    for _ in 0..2 {
        let r = running
            .love(
                "script-secret-4",
                "Test",
                json!(2),
                "cmd_setLogLevel",
                json!({"level": 20}),
            )
            .await;
        assert_eq!(expect(&r, 200), json!({"ack": "Done"}));
        expected.push(("complete", 200, Some("script"), Some("setLogLevel")));
    }
    let r = running
        .love(
            "script-secret-4",
            "Test",
            json!(2),
            "cmd_setLogLevel",
            json!({"level": 20}),
        )
        .await;
    let body = expect(&r, 429);
    assert_eq!(body["error"], "rate_limited");
    let retry: u64 = r.header("retry-after").expect("Retry-After").parse().unwrap();
    assert!((90..=100).contains(&retry), "Retry-After {retry}");
    expected.push(("refused", 429, Some("script"), Some("setLogLevel")));

    // Too large a body.
    let big = format!(
        "{{\"csc\":\"Test\",\"pad\":\"{}\"}}",
        "x".repeat(meridian_commander::MAX_BODY_BYTES)
    );
    let r = running
        .send(Request::post_raw("/cmd/", big.into_bytes()).bearer(ops))
        .await;
    assert_eq!(expect(&r, 413)["error"], "payload_too_large");
    expected.push(("refused", 413, Some("ops"), None));

    // The native route refuses the same way, with `message` instead of `ack`.
    let r = running
        .send(Request::post_json(
            "/v1/commands",
            &json!({"csc": "Test", "salindex": 1, "command": "wait", "params": {"duration": [1], "ack": 1}}),
        ).bearer(ops))
        .await;
    let body = expect(&r, 400);
    assert_eq!(body["field"], "params.duration");
    assert_eq!(
        body["message"],
        "params.duration: expected a number, got an array of 1"
    );
    expected.push(("refused", 400, Some("ops"), Some("wait")));

    // Not command requests (not audited): unknown route, wrong method.
    let r = running.send(Request::get("/nope").bearer(ops)).await;
    assert_eq!(expect(&r, 404)["error"], "not_found");
    let r = running.send(Request::get("/cmd/").bearer(ops)).await;
    assert_eq!(expect(&r, 405)["error"], "method_not_allowed");

    // The audit log: every request above, in order, with its outcome.
    let entries = running.audit().await;
    let got: Vec<(String, u16, Option<String>, Option<String>)> = entries
        .iter()
        .map(|e| {
            (
                e["outcome"].as_str().unwrap().to_string(),
                e["status"].as_u64().unwrap() as u16,
                e["token"].as_str().map(str::to_string),
                e["command"].as_str().map(str::to_string),
            )
        })
        .collect();
    let want: Vec<(String, u16, Option<String>, Option<String>)> = expected
        .iter()
        .map(|(o, s, t, c)| (o.to_string(), *s, t.map(str::to_string), c.map(str::to_string)))
        .collect();
    assert_eq!(got, want, "{entries:#?}");
    // Each says why, as the caller was told.
    let by_status = |status: u64| entries.iter().find(|e| e["status"] == status).unwrap();
    assert_eq!(by_status(409)["result"], "enable not allowed in state STANDBY");
    assert_eq!(by_status(404)["csc"], "MTM1M4");
    let timeout = by_status(504);
    assert_eq!(
        timeout["result"],
        "Command time out. Last ack received CMD_INPROGRESS."
    );
    assert_eq!(timeout["timeout_ms"], 500);
    assert!(timeout["csc_ms"].as_u64().unwrap() >= 500, "{timeout}");
    assert_eq!(timeout["params"], json!({"azimuth": 180.0}));
    // An unauthenticated attempt is recorded with what it tried.
    let unknown_token = entries.iter().filter(|e| e["status"] == 401).nth(1).unwrap();
    assert_eq!(unknown_token["identity"], "op@control-room");
    assert_eq!(
        unknown_token["params"],
        Value::Null,
        "no parameters recorded without a known token"
    );
    assert_eq!(
        (unknown_token["csc"].as_str(), unknown_token["salindex"].as_u64()),
        (Some("Test"), Some(1))
    );
    assert!(by_status(429)["result"].as_str().unwrap().contains("retry in"));
    // No entry holds a token, whatever was sent.
    let all = serde_json::to_string(&entries).unwrap();
    for secret in SECRETS {
        assert!(!all.contains(secret), "the audit log holds a token");
    }

    // Paging and time range.
    let page = |query: String| {
        let request = Request::get(&format!("/v1/audit?{query}")).bearer(ops);
        async move { request.send(running.addr).await.unwrap().json().unwrap() }
    };
    let first = page(format!("since={}&limit=3", running.started_ms)).await;
    assert_eq!(first["entries"].as_array().unwrap().len(), 3);
    let next = first["next"].as_str().unwrap().to_string();
    let second = page(format!("after={next}&limit=1000")).await;
    assert_eq!(second["entries"].as_array().unwrap().len(), entries.len() - 3);
    assert_eq!(second["next"], Value::Null);
    let first_ms: u64 = entries[0]["id"]
        .as_str()
        .unwrap()
        .split('-')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let upto = page(format!("since={}&until={}", running.started_ms, first_ms)).await;
    let upto = upto["entries"].as_array().unwrap();
    assert!(!upto.is_empty() && upto.len() < entries.len());
    assert!(upto
        .iter()
        .all(|e| e["id"].as_str().unwrap().starts_with(&format!("{first_ms}-"))));
    let future = page(format!("since={}", now_ms() + 60_000)).await;
    assert_eq!(future["entries"], json!([]));
    // Reading needs a token; bad parameters are named.
    let r = running.send(Request::get("/v1/audit")).await;
    expect(&r, 401);
    let r = running.send(Request::get("/v1/audit?limit=0").bearer(ops)).await;
    assert_eq!(expect(&r, 400)["field"], "limit");
    let r = running.send(Request::get("/v1/audit?from=1").bearer(ops)).await;
    assert_eq!(expect(&r, 400)["field"], "from");

    let store = running.store.clone();
    running.stop().await;
    // Nothing more was written by the reads.
    assert_eq!(store.len(keys::AUDIT).await.unwrap(), entries.len());
    entries
}

#[tokio::test]
async fn every_refusal_is_answered_and_audited_in_the_memory_store() {
    every_refusal_is_answered_and_audited(Arc::new(MemoryStore::new())).await;
}

#[tokio::test]
async fn every_refusal_is_answered_and_audited_in_redis() {
    let redis = RedisServer::start().unwrap();
    let store = Arc::new(RedisStore::connect(&redis.url()).await.unwrap());
    let entries = every_refusal_is_answered_and_audited(store).await;
    // The entries are in Redis itself, as a stream: read with a connection of
    // our own, as an operator's redis-cli would.
    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let len: usize = redis::cmd("XLEN")
        .arg(keys::AUDIT)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(len, entries.len());
    let kind: String = redis::cmd("TYPE")
        .arg(keys::AUDIT)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(kind, "stream");
}

/// Reads the whole stream of a native command.
async fn stream_lines(stream: &mut meridian_testkit::http::Streaming) -> Vec<Value> {
    let mut lines = Vec::new();
    while let Some(line) = tokio::time::timeout(DEADLINE, stream.next_line())
        .await
        .unwrap()
        .unwrap()
    {
        lines.push(serde_json::from_str(&line).unwrap());
    }
    lines
}

fn native(csc: &str, salindex: u32, command: &str, params: Value) -> Request {
    Request::post_json(
        "/v1/commands",
        &json!({"csc": csc, "salindex": salindex, "command": command, "params": params, "identity": "script@host"}),
    )
    .bearer("ops-secret-1")
}

#[tokio::test]
async fn the_native_route_streams_the_acknowledgements_in_order() {
    let running = Running::start(Arc::new(MemoryStore::new()), true).await;

    // Complete: sent, in progress, complete.
    let mut s = native("Test", 1, "wait", json!({"duration": 0.05, "ack": 1}))
        .open(running.addr)
        .await
        .unwrap();
    assert_eq!(s.status, 200);
    assert_eq!(s.header("content-type"), Some("application/x-ndjson"));
    let lines = stream_lines(&mut s).await;
    let states: Vec<&str> = lines.iter().map(|l| l["state"].as_str().unwrap()).collect();
    assert_eq!(states, ["sent", "in_progress", "complete"], "{lines:#?}");
    assert_eq!(
        lines[0],
        json!({"state": "sent", "csc": "Test:1", "command": "wait", "timeout_ms": 10000})
    );
    assert_eq!(lines[2]["result"], "Done");
    let complete_id = lines[2]["audit_id"].as_str().unwrap().to_string();

    // Live: the outcome is decided after the caller has read "in_progress"
    // (disabling the CSC aborts the wait), and still arrives on the stream.
    let mut s = native("Test", 1, "wait", json!({"duration": 600, "ack": 1}))
        .open(running.addr)
        .await
        .unwrap();
    assert_eq!(s.status, 200);
    for want in ["sent", "in_progress"] {
        let line: Value = serde_json::from_str(&s.next_line().await.unwrap().unwrap()).unwrap();
        assert_eq!(line["state"], want, "{line}");
    }
    let r = running
        .love("ops-secret-1", "Test", json!(1), "cmd_disable", json!({}))
        .await;
    assert_eq!(expect(&r, 200), json!({"ack": "Done"}));
    let rest = stream_lines(&mut s).await;
    assert_eq!(rest.len(), 1, "{rest:#?}");
    assert_eq!(rest[0]["state"], "failed");
    assert_eq!(rest[0]["reason"], "aborted: the CSC left ENABLED");

    // Refused by the CSC (wrong state): failed, with its reason.
    let mut s = native("Test", 1, "wait", json!({"duration": 1, "ack": 1}))
        .open(running.addr)
        .await
        .unwrap();
    let lines = stream_lines(&mut s).await;
    let last = lines.last().unwrap();
    assert_eq!(
        (last["state"].as_str(), last["reason"].as_str()),
        (
            Some("failed"),
            Some("wait not allowed in state DISABLED: the CSC must be ENABLED")
        )
    );

    // Timed out: the dome's slew outlasts its 500 ms timeout.
    let mut s = native("ATDome", 1, "moveAzimuth", json!({"azimuth": 200}))
        .open(running.addr)
        .await
        .unwrap();
    let lines = stream_lines(&mut s).await;
    let states: Vec<&str> = lines.iter().map(|l| l["state"].as_str().unwrap()).collect();
    assert_eq!(states, ["sent", "in_progress", "timeout"], "{lines:#?}");
    assert_eq!(
        lines[2]["reason"],
        "Command time out. Last ack received CMD_INPROGRESS."
    );
    assert!(lines[2]["elapsed_ms"].as_u64().unwrap() >= 500);

    // Each final line names its audit entry, which has the same outcome.
    let entries = running.audit().await;
    let native_entries: Vec<&Value> = entries.iter().filter(|e| e["route"] == "/v1/commands").collect();
    let outcomes: Vec<&str> = native_entries
        .iter()
        .map(|e| e["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes, ["complete", "failed", "failed", "timeout"]);
    assert!(native_entries
        .iter()
        .all(|e| e["status"] == 200 && e["identity"] == "script@host"));
    assert_eq!(native_entries[0]["id"], complete_id);
    running.stop().await;
}

#[tokio::test]
async fn served_routes_match_the_openapi_document_and_probes_report_readiness() {
    let redis = RedisServer::start().unwrap();
    let store = Arc::new(RedisStore::connect(&redis.url()).await.unwrap());
    let running = Running::start(store, true).await;

    let r = running.send(Request::get("/openapi.json")).await;
    let served = expect(&r, 200);
    let doc: Value = serde_json::from_str(OPENAPI_JSON).unwrap();
    assert_eq!(served, doc);

    // Every documented operation is routed (never the 404/405 fallbacks);
    // other methods on those paths are 405; undocumented paths are 404.
    let paths = doc["paths"].as_object().unwrap();
    for (path, item) in paths {
        let methods: Vec<String> = item
            .as_object()
            .unwrap()
            .keys()
            .map(|m| m.to_uppercase())
            .collect();
        for method in &methods {
            let mut request = Request::new(method, path);
            request.body = b"{}".to_vec();
            let r = running.send(request).await;
            let body = r.json().unwrap_or(Value::Null);
            assert!(
                !matches!(body["error"].as_str(), Some("not_found" | "method_not_allowed")),
                "{method} {path} is documented but not served: {} {body}",
                r.status
            );
        }
        for other in ["GET", "POST", "PUT", "DELETE", "PATCH"] {
            if !methods.iter().any(|m| m == other) {
                let r = running.send(Request::new(other, path)).await;
                assert_eq!(expect(&r, 405)["error"], "method_not_allowed", "{other} {path}");
            }
        }
    }
    for path in ["/", "/cmd", "/v1/command", "/v2/commands", "/audit"] {
        let r = running.send(Request::get(path)).await;
        assert_eq!(expect(&r, 404)["error"], "not_found", "{path}");
    }

    // Health and readiness, without a token.
    let r = running.send(Request::get("/healthz")).await;
    assert_eq!(expect(&r, 200), json!({"status": "ok"}));
    let r = running.send(Request::get("/readyz")).await;
    assert_eq!(
        expect(&r, 200),
        json!({"status": "ready", "middleware": "ok", "store": "ok"})
    );
    // The store gone: not ready, without its internals.
    drop(redis);
    let r = running.send(Request::get("/readyz")).await;
    assert_eq!(
        expect(&r, 503),
        json!({"status": "not_ready", "middleware": "ok", "store": "unavailable"})
    );
    // Still live, and a command still goes through (its audit entry is
    // logged instead).
    let r = running.send(Request::get("/healthz")).await;
    expect(&r, 200);
    let r = running
        .love("ops-secret-1", "Test", json!(1), "cmd_disable", json!({}))
        .await;
    assert_eq!(expect(&r, 200), json!({"ack": "Done"}));
    // The middleware gone: not ready either.
    running.sim_stop.cancel();
    running.sim.stopped().await;
    let r = running.send(Request::get("/readyz")).await;
    let body = expect(&r, 503);
    assert_eq!(body["middleware"], "the simulator has stopped");
    running.stop.cancel();
    tokio::time::timeout(DEADLINE, running.task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn a_command_in_flight_at_shutdown_is_finished_and_audited() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let running = Running::start(store.clone(), true).await;
    let mut s = native("Test", 1, "wait", json!({"duration": 600, "ack": 1}))
        .open(running.addr)
        .await
        .unwrap();
    for want in ["sent", "in_progress"] {
        let line: Value = serde_json::from_str(&s.next_line().await.unwrap().unwrap()).unwrap();
        assert_eq!(line["state"], want);
    }
    // Shutdown starts: the commander stops accepting but keeps the open
    // stream; the CSC then stops, failing the command, which ends it.
    running.stop.cancel();
    running.sim_stop.cancel();
    let rest = stream_lines(&mut s).await;
    assert_eq!(rest.len(), 1, "{rest:#?}");
    assert_eq!(rest[0]["state"], "failed");
    assert_eq!(rest[0]["reason"], "the CSC stopped");
    tokio::time::timeout(DEADLINE, running.task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    running.sim.stopped().await;
    let entries = store
        .range(keys::AUDIT, meridian_proto::StreamId::ZERO, None, 10)
        .await
        .unwrap();
    assert_eq!(entries.len(), 1);
    let entry: Value =
        serde_json::from_str(entries[0].field(meridian_proto::stored::AUDIT_ENTRY).unwrap()).unwrap();
    assert_eq!(
        (entry["outcome"].as_str(), entry["result"].as_str()),
        (Some("failed"), Some("the CSC stopped"))
    );
}

/// The `byte0` of a `scalars` event of the Test CSC, if it is one.
fn scalar_byte0(event: &meridian_sim::Published) -> Option<i64> {
    if event.topic != "scalars" {
        return None;
    }
    event.fields.iter().find_map(|(k, v)| match v {
        FieldValue::Int(i) if k == "byte0" => Some(*i),
        _ => None,
    })
}

/// A parameter outside its declared type (`byte0: -300`, SAL's byte being
/// 0 to 255) is refused with a 400 naming the field, the type and the
/// limit, on both command routes; the CSC never sees it; the refusal is in
/// the audit log (a real Redis); a good value still completes. A user would
/// notice a failure here as a value the observatory's middleware cannot
/// carry being published as if it were fine.
#[tokio::test]
async fn a_parameter_out_of_its_types_range_is_refused_naming_the_field_and_never_sent() {
    let redis = RedisServer::start().unwrap();
    let store = Arc::new(RedisStore::connect(&redis.url()).await.unwrap());
    let running = Running::start(store, true).await;
    let id: CscId = "Test:1".parse().unwrap();
    let mut feed = running.sim.subscribe(&id).unwrap();
    let scalars = |byte0: i64| {
        json!({
            "boolean0": true, "byte0": byte0, "short0": 1, "int0": 1, "long0": 1, "longLong0": 1,
            "unsignedShort0": 1, "unsignedInt0": 1, "float0": 1.5, "double0": 2.5, "string0": "s"
        })
    };
    let want = "params.byte0: -300 is out of range for byte (0 to 255)";

    // The replaced system's route: its `ack` carries the message.
    let r = running
        .love("ops-secret-1", "Test", json!(1), "cmd_setScalars", scalars(-300))
        .await;
    let body = expect(&r, 400);
    assert_eq!(
        body,
        json!({"error": "bad_request", "ack": want, "field": "params.byte0"})
    );
    // The native route: `message`.
    let r = running.send(native("Test", 1, "setScalars", scalars(-300))).await;
    let body = expect(&r, 400);
    assert_eq!(
        body,
        json!({"error": "bad_request", "message": want, "field": "params.byte0"})
    );
    let r = running
        .send(native("Test", 1, "setScalars", {
            let mut p = scalars(1);
            p["unsignedInt0"] = json!(-1);
            p
        }))
        .await;
    assert_eq!(
        expect(&r, 400)["message"],
        "params.unsignedInt0: -1 is out of range for unsigned int (0 to 4294967295)"
    );

    // A good value at the type's limit completes.
    let r = running
        .love("ops-secret-1", "Test", json!(1), "cmd_setScalars", scalars(255))
        .await;
    assert_eq!(expect(&r, 200), json!({"ack": "Done"}));

    // The CSC publishes what each command it ran set, in order: the first
    // `byte0` it reports from a command is the good one's.
    let reported = tokio::time::timeout(DEADLINE, async {
        let mut reported = Vec::new();
        loop {
            let event = feed.events.recv().await.expect("the CSC publishes");
            if let Some(byte0) = scalar_byte0(&event) {
                reported.push(byte0);
                if byte0 == 255 {
                    return reported;
                }
            }
        }
    })
    .await
    .expect("the good command's scalars event");
    assert!(
        !reported.contains(&-300),
        "a refused value reached the CSC: {reported:?}"
    );

    let entries = running.audit().await;
    let outcomes: Vec<(&str, u64, &str)> = entries
        .iter()
        .map(|e| {
            (
                e["outcome"].as_str().unwrap(),
                e["status"].as_u64().unwrap(),
                e["route"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        outcomes,
        [
            ("refused", 400, "/cmd/"),
            ("refused", 400, "/v1/commands"),
            ("refused", 400, "/v1/commands"),
            ("complete", 200, "/cmd/"),
        ],
        "{entries:#?}"
    );
    assert_eq!(entries[0]["result"], want);
    assert_eq!(entries[0]["params"]["byte0"], -300);
    running.stop().await;
}
