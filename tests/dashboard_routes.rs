//! The frontend serves the dashboard: its built files from
//! `frontend.dashboard_dir`, a page saying how to build it when that
//! directory is empty, nothing outside the directory, and
//! `/dashboard-config.json` with the commander's URL and every declared
//! topic. An operator would notice a failure as a blank page at `/`, a
//! dashboard that lists no CSC, or a command panel that stays disabled.

use meridian_store::memory::MemoryStore;
use meridian_testkit::http::Request;
use meridian_testkit::system::{test_config, System};
use meridian_testkit::wait_for;
use std::sync::Arc;
use std::time::Duration;

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("meridian-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("assets")).unwrap();
    dir
}

#[tokio::test]
async fn serves_the_build_its_config_and_nothing_else() {
    let dir = temp_dir("dashboard-built");
    std::fs::write(dir.join("index.html"), "<!doctype html><title>dash</title>").unwrap();
    std::fs::write(dir.join("assets/index-abc.js"), "console.log(1)").unwrap();
    std::fs::write(dir.parent().unwrap().join("meridian-secret.txt"), "secret").unwrap();
    let mut config = test_config();
    config.frontend.dashboard_dir = dir.clone();
    config.frontend.commander_url = Some("http://commander.example:8081".into());
    let mut system = System::start_with(Arc::new(MemoryStore::new()), config)
        .await
        .unwrap();
    system.start_producer("Test:1", 1.0).unwrap();
    let addr = system.frontend_addr;

    let index = Request::get("/").send(addr).await.unwrap();
    assert_eq!(index.status, 200);
    assert_eq!(index.text(), "<!doctype html><title>dash</title>");
    assert_eq!(index.header("cache-control"), Some("no-cache"));

    let js = Request::get("/assets/index-abc.js").send(addr).await.unwrap();
    assert_eq!(js.status, 200);
    assert_eq!(js.header("content-type"), Some("text/javascript; charset=utf-8"));
    for path in [
        "/assets/..%2F..%2Fmeridian-secret.txt",
        "/assets/.hidden",
        "/assets/nope.js",
        "/assets/../index.html",
    ] {
        let r = Request::get(path).send(addr).await.unwrap();
        assert_ne!(r.text(), "secret", "{path} escaped the directory");
        assert!(
            r.status == 404 || r.text().contains("dash"),
            "{path}: {}",
            r.status
        );
    }

    // Topics appear once the producer has declared them.
    let topics = wait_for(
        "the Test CSC's topics in the dashboard config",
        Duration::from_secs(10),
        || async {
            let config = Request::get("/dashboard-config.json")
                .bearer(meridian_testkit::system::TOKEN)
                .send(addr)
                .await
                .ok()?
                .json()
                .ok()?;
            let topics = config["topics"].as_array()?.clone();
            assert_eq!(config["commander_url"], "http://commander.example:8081");
            topics
                .iter()
                .any(|t| t["topic"] == "scalars" && t["category"] == "telemetry")
                .then_some(topics)
        },
    )
    .await
    .unwrap();
    let scalars = topics
        .iter()
        .find(|t| t["topic"] == "scalars" && t["category"] == "telemetry")
        .unwrap();
    assert_eq!(scalars["csc"], "Test");
    assert_eq!(scalars["salindex"], 1);
    assert!(scalars["rate_hz"].as_f64().unwrap() > 0.0, "{scalars}");
    let heartbeat = topics.iter().find(|t| t["topic"] == "heartbeat").unwrap();
    assert_eq!(
        heartbeat["rate_hz"],
        serde_json::Value::Null,
        "events have no rate"
    );
    system.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn says_how_to_build_the_dashboard_when_it_is_missing() {
    let dir = temp_dir("dashboard-missing");
    let mut config = test_config();
    config.frontend.dashboard_dir = dir.join("dist");
    let system = System::start_with(Arc::new(MemoryStore::new()), config)
        .await
        .unwrap();
    let page = Request::get("/").send(system.frontend_addr).await.unwrap();
    assert_eq!(page.status, 200);
    let text = page.text();
    assert!(
        text.contains("npm run build") && text.contains("scripts/up"),
        "{text}"
    );
    assert!(
        text.contains(&dir.join("dist").display().to_string()),
        "names the directory: {text}"
    );
    let config = Request::get("/dashboard-config.json")
        .bearer(meridian_testkit::system::TOKEN)
        .send(system.frontend_addr)
        .await
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(config["commander_url"], serde_json::Value::Null);
    system.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}
