//! Origins and tokens: a web page of another site cannot open a WebSocket
//! to a frontend (native `/ws` nor the compatibility endpoint), the
//! dashboard's configuration needs a token, and a standalone frontend or
//! commander will not start with the public development token unless told
//! it is a development run. An operator would notice a failure as a page
//! they merely visited reading their telemetry, or as a frontend reachable
//! with `dev-token` from anywhere.

use meridian_store::memory::MemoryStore;
use meridian_testkit::http::Request;
use meridian_testkit::system::{test_config, System, TOKEN};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Error as WsError;

/// The HTTP status of a WebSocket upgrade to `url` with `origin` (if any):
/// 101 when it was accepted.
async fn upgrade_status(url: &str, origin: Option<&str>) -> u16 {
    let mut request = url.into_client_request().unwrap();
    if let Some(origin) = origin {
        request
            .headers_mut()
            .insert("Origin", HeaderValue::from_str(origin).unwrap());
    }
    match tokio_tungstenite::connect_async(request).await {
        Ok((_socket, response)) => response.status().as_u16(),
        Err(WsError::Http(response)) => {
            if response.status() == 403 {
                let body =
                    String::from_utf8_lossy(response.body().as_deref().unwrap_or_default()).to_string();
                assert!(
                    body.contains("frontend.allowed_origins"),
                    "the refusal names the key: {body:?}"
                );
            }
            response.status().as_u16()
        }
        Err(e) => panic!("{url}: {e}"),
    }
}

#[tokio::test]
async fn websocket_upgrades_from_foreign_origins_are_refused() {
    let mut config = test_config();
    config.frontend.allowed_origins = vec!["https://dashboard.example.org".to_string()];
    let system = System::start_with(Arc::new(MemoryStore::new()), config)
        .await
        .unwrap();
    let addr = system.frontend_addr;
    let own = format!("http://{addr}");
    for url in [
        format!("ws://{addr}/ws?token={TOKEN}"),
        format!("ws://{addr}/manager/ws/subscription/?token={TOKEN}"),
    ] {
        assert_eq!(
            upgrade_status(&url, Some("https://evil.example")).await,
            403,
            "{url}: foreign origin"
        );
        assert_eq!(
            upgrade_status(&url, Some("http://localhost:1")).await,
            403,
            "{url}: another port of the same host"
        );
        assert_eq!(upgrade_status(&url, Some(&own)).await, 101, "{url}: own origin");
        assert_eq!(
            upgrade_status(&url, Some("https://dashboard.example.org")).await,
            101,
            "{url}: listed origin"
        );
        assert_eq!(
            upgrade_status(&url, None).await,
            101,
            "{url}: no Origin (not a browser)"
        );
    }
    system.stop().await;
}

#[tokio::test]
async fn the_dashboard_config_needs_a_token() {
    let system = System::start_with(Arc::new(MemoryStore::new()), test_config())
        .await
        .unwrap();
    let addr = system.frontend_addr;
    let none = Request::get("/dashboard-config.json").send(addr).await.unwrap();
    assert_eq!(none.status, 401, "{}", none.text());
    assert!(none.text().contains("token"), "{}", none.text());
    let wrong = Request::get("/dashboard-config.json?token=dev-token")
        .send(addr)
        .await
        .unwrap();
    assert_eq!(wrong.status, 401, "{}", wrong.text());
    let query = Request::get(&format!("/dashboard-config.json?token={TOKEN}"))
        .send(addr)
        .await
        .unwrap();
    assert_eq!(query.status, 200, "{}", query.text());
    let bearer = Request::get("/dashboard-config.json")
        .bearer(TOKEN)
        .send(addr)
        .await
        .unwrap();
    assert_eq!(bearer.status, 200, "{}", bearer.text());
    system.stop().await;
}

/// Runs `meridian args…` until it exits or `deadline`; returns its exit
/// code and stderr, or `None` (after killing it) if it was still running.
fn run_until_exit(args: &[&str], deadline: Duration) -> Option<(i32, String)> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_meridian"))
        .args(args)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let end = Instant::now() + deadline;
    while Instant::now() < end {
        if let Some(status) = child.try_wait().unwrap() {
            let mut stderr = String::new();
            std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
            return Some((status.code().unwrap_or(-1), stderr));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

#[test]
fn standalone_frontend_and_commander_refuse_the_public_token_unless_a_development_run() {
    let frontend = [
        "manager",
        "--role",
        "frontend",
        "--frontend-listen",
        "127.0.0.1:0",
    ];
    let (code, stderr) =
        run_until_exit(&frontend, Duration::from_secs(10)).expect("a frontend with dev-token must not start");
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("frontend.tokens") && stderr.contains("frontend.dev_tokens"),
        "{stderr}"
    );

    let commander = ["commander", "--listen", "127.0.0.1:0", "--csc", "Test:1"];
    let (code, stderr) = run_until_exit(&commander, Duration::from_secs(10))
        .expect("a commander without tokens must not start");
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("commander.tokens") && stderr.contains("commander.dev_tokens"),
        "{stderr}"
    );
}

#[tokio::test]
async fn told_it_is_a_development_run_a_standalone_frontend_and_commander_start() {
    use meridian_testkit::process::{free_tcp_port, Process};
    let bin = env!("CARGO_BIN_EXE_meridian");
    let (frontend, commander) = (free_tcp_port(), free_tcp_port());
    let (f, c) = (format!("127.0.0.1:{frontend}"), format!("127.0.0.1:{commander}"));
    let _frontend = Process::start(
        bin,
        &["--dev", "manager", "--role", "frontend", "--frontend-listen", &f],
        &[],
    )
    .unwrap();
    let _commander = Process::start(
        bin,
        &["--dev", "commander", "--listen", &c, "--csc", "Test:1"],
        &[],
    )
    .unwrap();
    for addr in [f, c] {
        let addr: std::net::SocketAddr = addr.parse().unwrap();
        meridian_testkit::wait_for("/healthz of a --dev role", Duration::from_secs(20), || async {
            (Request::get("/healthz").send(addr).await.ok()?.status == 200).then_some(())
        })
        .await
        .unwrap();
    }
}

/// The commander's CORS answers only the origins of `frontend.allowed_origins`
/// (the dashboard's), so a page of another site cannot read its answers.
#[tokio::test]
async fn the_commanders_cors_follows_the_allowed_origins() {
    use meridian_commander::Commander;
    use meridian_sim::SimMiddleware;
    let mut config = test_config();
    config.frontend.allowed_origins = vec!["https://dashboard.example.org".to_string()];
    let store: Arc<dyn meridian_store::Store> = Arc::new(MemoryStore::new());
    let commander = Commander::bind(
        &config,
        Arc::new(SimMiddleware::with_options(Default::default(), None)),
        store,
    )
    .await
    .unwrap();
    let addr = commander.local_addr();
    let stop = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn(commander.run(stop.clone()));
    let ask = |origin: &'static str| async move {
        let preflight = Request::new("OPTIONS", "/cmd/")
            .header("Origin", origin)
            .header("Access-Control-Request-Method", "POST")
            .send(addr)
            .await
            .unwrap();
        let get = Request::get("/healthz")
            .header("Origin", origin)
            .send(addr)
            .await
            .unwrap();
        (
            preflight
                .header("access-control-allow-origin")
                .map(str::to_string),
            get.header("access-control-allow-origin").map(str::to_string),
        )
    };
    let listed = "https://dashboard.example.org";
    assert_eq!(
        ask(listed).await,
        (Some(listed.to_string()), Some(listed.to_string()))
    );
    assert_eq!(ask("https://evil.example").await, (None, None));
    stop.cancel();
    task.await.unwrap().unwrap();
}
