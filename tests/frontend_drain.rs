//! A frontend manager process that gets SIGTERM (a Kubernetes rollout or
//! scale-down) drains: it tells every browser to reconnect elsewhere, gives
//! them its grace period, closes them with 1001, and exits cleanly. Browsers
//! that move to another frontend and recover by stream id miss no event and
//! see none twice. An operator would notice a failure as a gap or a doubled
//! line in the event log after every deployment.

use meridian_store::redis::RedisStore;
use meridian_store::Store;
use meridian_testkit::browser::{Browser, Received};
use meridian_testkit::manual_csc::ManualCsc;
use meridian_testkit::redis_server::RedisServer;
use meridian_testkit::system::{test_config, System};
use meridian_testkit::wait_for;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

const CSC: &str = "Test:3";
const BROWSERS: usize = 20;
const EVENTS: i64 = 3000;

/// A frontend manager in its own process, on a free port, with the default token.
struct FrontendProcess {
    child: Child,
    url: String,
}

impl FrontendProcess {
    fn start(redis: &str) -> FrontendProcess {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(env!("CARGO_BIN_EXE_meridian"))
            .args(["--dev", "manager", "--role", "frontend", "--redis", redis])
            .args(["--frontend-listen", &format!("127.0.0.1:{port}")])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start meridian manager");
        FrontendProcess {
            child,
            url: format!("ws://127.0.0.1:{port}/ws?token=dev-token"),
        }
    }
}

impl Drop for FrontendProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What one browser saw: the `int0` of every event, and whether it was told to move.
struct Seen {
    values: Vec<i64>,
    hinted: bool,
    moved: bool,
}

/// Watches the event on `first` until it closes, then recovers on `second`
/// from the last id it saw, until event `EVENTS`.
async fn watch(first: String, second: String) -> Seen {
    let mut seen = Seen {
        values: Vec::new(),
        hinted: false,
        moved: false,
    };
    let mut last_id: Option<String> = None;
    let mut url = first;
    loop {
        let mut browser = Browser::connect(&url).await.unwrap();
        match &last_id {
            Some(id) => browser
                .subscribe_after(CSC, "event", "scalars", id)
                .await
                .unwrap(),
            None => browser.subscribe(CSC, "event", "scalars").await.unwrap(),
        }
        loop {
            match browser.next().await.unwrap() {
                Received::Json(v) if v["type"] == "sample" => {
                    seen.values.push(v["fields"]["int0"].as_i64().unwrap());
                    last_id = Some(v["id"].as_str().unwrap().to_string());
                    if seen.values.last() == Some(&EVENTS) {
                        return seen;
                    }
                }
                Received::Json(v) if v["type"] == "reconnect" => seen.hinted = true,
                Received::Json(v) if v["type"] == "lost" || v["type"] == "error" || v["type"] == "gap" => {
                    panic!("{v}")
                }
                Received::Json(_) => {}
                Received::Closed { code, reason } => {
                    assert_eq!(code, 1001, "a draining frontend closes with 1001: {reason}");
                    break;
                }
            }
        }
        assert!(!seen.moved, "closed twice");
        seen.moved = true;
        url = second.clone();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browsers_of_a_frontend_that_gets_sigterm_move_to_another_without_a_gap() {
    let redis = RedisServer::start().unwrap();
    let store: Arc<dyn Store> = Arc::new(RedisStore::connect(&redis.url()).await.unwrap());
    // Ingest and the second frontend in this process; the draining one in its own.
    let mut system = System::start_with(store.clone(), test_config()).await.unwrap();
    let csc = ManualCsc::new(CSC, 100_000);
    system.spawn_producer(csc.clone(), |c| c.producer.csc = CSC.into());
    csc.publish(0).await;
    let mut draining = FrontendProcess::start(&redis.url());
    wait_for(
        "the frontend process to accept browsers",
        Duration::from_secs(30),
        || {
            let url = draining.url.clone();
            async move { Browser::connect(&url).await.ok().map(|_| ()) }
        },
    )
    .await
    .unwrap();

    let watchers: Vec<_> = (0..BROWSERS)
        .map(|_| tokio::spawn(watch(draining.url.clone(), system.ws_url())))
        .collect::<Vec<_>>();
    let publisher = tokio::spawn({
        let csc = csc.clone();
        async move {
            let mut tick = tokio::time::interval(Duration::from_millis(2));
            for i in 1..=EVENTS {
                tick.tick().await;
                csc.publish(i).await;
            }
        }
    });
    // SIGTERM once a third of the events are stored (browsers are mid-stream).
    let key = meridian_proto::keys::stream(
        &meridian_proto::TopicId::new(CSC.parse().unwrap(), meridian_proto::Category::Event, "scalars")
            .unwrap(),
    );
    wait_for("a third of the events stored", Duration::from_secs(60), || {
        let (store, key) = (store.clone(), key.clone());
        async move { (store.len(&key).await.ok()? > EVENTS as usize / 3).then_some(()) }
    })
    .await
    .unwrap();
    let pid = draining.child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());

    for w in watchers {
        let seen = w.await.unwrap();
        let first = seen.values[0];
        assert_eq!(
            seen.values,
            (first..=EVENTS).collect::<Vec<_>>(),
            "every event once, in order, across the move"
        );
        assert!(seen.hinted && seen.moved, "told to reconnect, then moved");
    }
    publisher.await.unwrap();
    let status = wait_for("the draining frontend to exit", Duration::from_secs(10), || {
        let status = draining.child.try_wait().unwrap();
        async move { status }
    })
    .await
    .unwrap();
    assert!(status.success(), "a drained frontend exits cleanly: {status}");
    system.stop().await;
}
