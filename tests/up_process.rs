//! `meridian up` as a newcomer runs it, as a real process: it prints where
//! to connect, data reaches a WebSocket client through those URLs, and
//! Ctrl-C (SIGINT) or SIGTERM stops it cleanly. If this fails, the README's
//! first command is broken.

use meridian_testkit::browser::Browser;
use meridian_testkit::http::Request;
use meridian_testkit::redis_server::RedisServer;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

/// A config with every endpoint on a free loopback port.
fn config_file(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("up.toml");
    std::fs::write(
        &path,
        "[ingest]\nlisten = \"127.0.0.1:0\"\n[frontend]\nlisten = \"127.0.0.1:0\"\n[commander]\nlisten = \"127.0.0.1:0\"\n",
    )
    .unwrap();
    path
}

struct Up {
    child: Child,
    lines: Vec<String>,
}

impl Drop for Up {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `meridian up` and reads its banner up to "Press Ctrl-C".
fn start(extra: &[&str]) -> (Up, tempdir::TempDir) {
    let dir = tempdir::TempDir::new();
    let mut child = Command::new(env!("CARGO_BIN_EXE_meridian"))
        .arg("up")
        .arg("--config")
        .arg(config_file(&dir.0))
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut reader = BufReader::new(stdout);
    let mut lines = Vec::new();
    loop {
        let mut line = String::new();
        // A read that returns 0 means the process exited before its banner.
        assert!(
            reader.read_line(&mut line).unwrap() > 0,
            "up exited early; printed {lines:?}"
        );
        let done = line.contains("Press Ctrl-C");
        lines.push(line.trim_end().to_string());
        if done {
            break;
        }
    }
    // Keep draining stdout so the process never blocks on a full pipe.
    std::thread::spawn(move || {
        let mut rest = String::new();
        let _ = std::io::Read::read_to_string(&mut reader, &mut rest);
        rest
    });
    (Up { child, lines }, dir)
}

fn url_after(lines: &[String], label: &str) -> String {
    lines
        .iter()
        .find_map(|l| l.trim().strip_prefix(label).map(|u| u.trim().to_string()))
        .unwrap_or_else(|| panic!("no {label} line in {lines:?}"))
}

async fn data_flows_and_it_stops_cleanly(extra: &[&str], signal: &str) {
    let (mut up, _dir) = start(extra);
    for label in ["browser:", "websocket:", "commander:"] {
        url_after(&up.lines, label);
    }
    let ws = url_after(&up.lines, "websocket:");
    assert!(
        ws.contains("?token="),
        "the websocket URL carries a development token: {ws}"
    );
    let mut browser = Browser::connect(&ws).await.unwrap();
    browser.subscribe("Test:1", "telemetry", "scalars").await.unwrap();
    let sample = browser.next_sample().await.unwrap();
    assert!(sample["fields"]["int0"].as_i64().unwrap() > 0, "{sample}");

    // The printed development token can send a command to the printed URL.
    let commander = url_after(&up.lines, "commander:");
    let commands = url_after(&up.lines, "commands:");
    let token = commands
        .split("Bearer ")
        .nth(1)
        .and_then(|rest| rest.split('`').next())
        .unwrap_or_else(|| panic!("no token in {commands:?}"));
    let rest = commander.strip_prefix("http://").unwrap();
    let (addr, path) = rest.split_once('/').unwrap();
    let body =
        serde_json::json!({"csc": "Test", "salindex": 1, "cmd": "cmd_setLogLevel", "params": {"level": 20}});
    let response = Request::post_json(&format!("/{path}"), &body)
        .bearer(token)
        .send(addr.parse().unwrap())
        .await
        .unwrap();
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.json().unwrap(), serde_json::json!({"ack": "Done"}));

    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(up.child.id().to_string())
        .status()
        .unwrap();
    assert!(status.success());
    let exit = up.child.wait().unwrap();
    assert!(
        exit.success(),
        "meridian up must exit cleanly on SIG{signal}, got {exit}"
    );
}

/// A newcomer's terminal shows stdout and stderr interleaved. The banner is
/// the last thing `up` prints until the operator stops it: no line follows
/// it while producers connect and a browser watches, and the routine line
/// of every producer, simulated CSC and browser that connects is not shown
/// at the default log level (it would bury the banner).
#[tokio::test]
async fn the_banner_is_the_last_line_until_up_is_stopped() {
    let dir = tempdir::TempDir::new();
    // One pipe for both streams, through the shell, so their order is the terminal's.
    let mut child = Command::new("sh")
        .arg("-c")
        .arg("exec \"$0\" up --csc Test:1 --csc ATDome:0 --config \"$1\" 2>&1")
        .arg(env!("CARGO_BIN_EXE_meridian"))
        .arg(config_file(&dir.0))
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut reader = BufReader::new(child.stdout.take().unwrap());
    let mut before = Vec::new();
    loop {
        let mut line = String::new();
        assert!(
            reader.read_line(&mut line).unwrap() > 0,
            "up exited early; printed {before:?}"
        );
        let done = line.contains("Press Ctrl-C");
        before.push(line.trim_end().to_string());
        if done {
            break;
        }
    }
    // The rest, read as it comes, until the process closes its output.
    let rest = std::thread::spawn(move || {
        let mut rest = String::new();
        let _ = std::io::Read::read_to_string(&mut reader, &mut rest);
        rest
    });
    // Data flows to a browser, whose connection is one of the routine lines.
    let mut browser = Browser::connect(&url_after(&before, "websocket:")).await.unwrap();
    browser.subscribe("Test:1", "telemetry", "scalars").await.unwrap();
    browser.next_sample().await.unwrap();
    let status = Command::new("kill")
        .arg("-INT")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(status.success());
    assert!(child.wait().unwrap().success());
    let after: Vec<String> = rest.join().unwrap().lines().map(str::to_string).collect();
    let first = after.first().map(String::as_str).unwrap_or_default();
    assert!(
        first.contains("shutting down"),
        "nothing follows the banner until Ctrl-C, but the next line was {first:?}; after the banner:\n{}",
        after.join("\n")
    );
    for line in before.iter().chain(&after) {
        for routine in [
            "producer connected",
            "connected to ingest",
            "producer started",
            "simulated CSC started",
            "browser connected",
        ] {
            assert!(
                !line.contains(routine),
                "a routine line at the default level: {line}"
            );
        }
    }
}

#[tokio::test]
async fn up_prints_its_endpoints_serves_data_and_stops_on_ctrl_c() {
    data_flows_and_it_stops_cleanly(&[], "INT").await;
}

#[tokio::test]
async fn up_with_redis_serves_data_and_stops_on_sigterm() {
    let redis = RedisServer::start().unwrap();
    data_flows_and_it_stops_cleanly(&["--redis", &redis.url()], "TERM").await;
}

#[test]
fn every_subcommand_describes_its_flags() {
    for sub in ["up", "producer", "manager", "commander", "sim"] {
        let out = Command::new(env!("CARGO_BIN_EXE_meridian"))
            .args([sub, "--help"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{sub} --help failed");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("--config <FILE>"), "{sub}: {text}");
        for line in text.lines().filter(|l| l.trim_start().starts_with("--")) {
            // clap puts the description on the flag's line: none may be bare.
            assert!(
                line.trim().split("  ").filter(|p| !p.is_empty()).count() >= 2,
                "{sub}: undocumented flag: {line}"
            );
        }
    }
}

/// The operator's binary runs roles only: the benchmarks are `meridian-bench`.
#[test]
fn the_meridian_binary_has_no_bench() {
    let out = Command::new(env!("CARGO_BIN_EXE_meridian"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!text.contains("bench"), "{text}");
    for hidden in ["bench", "fanout-clients", "love-clients"] {
        let out = Command::new(env!("CARGO_BIN_EXE_meridian"))
            .arg(hidden)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "meridian {hidden} must be refused");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("unrecognized subcommand"), "{err}");
    }
}

#[test]
fn a_bad_config_is_refused_naming_the_key() {
    let dir = tempdir::TempDir::new();
    let path = dir.0.join("bad.toml");
    std::fs::write(&path, "[frontend]\nclient_queue = 3\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_meridian"))
        .args(["up", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("frontend.client_queue"), "{err}");
}

/// A role that fails while `up` runs stops the whole process, with a
/// non-zero exit status and a last line naming the role, instead of leaving
/// the rest running as if all were well until Ctrl-C. Here the producer
/// fails: the ingest requires producers' client certificates (`tls.ca`)
/// and refuses the one `up`'s producer presents (it names the ingest, not
/// the CSC). A user would notice the failure as a `meridian up` that keeps
/// running, printing its URLs, with no data behind them.
#[test]
fn up_stops_and_names_a_role_that_fails() {
    let dir = tempdir::TempDir::new();
    let pki = pki::Pki::new(&dir.0);
    let path = config_file(&dir.0);
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push_str(&format!(
        "[tls]\ncert = {:?}\nkey = {:?}\nca = {:?}\n",
        pki.cert, pki.key, pki.ca
    ));
    std::fs::write(&path, text).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_meridian"))
        .args(["up", "--csc", "Test:1", "--config"])
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut text);
        text
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let exit = loop {
        if let Some(exit) = child.try_wait().unwrap() {
            break Some(exit);
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let err = reader.join().unwrap();
    let exit = exit
        .unwrap_or_else(|| panic!("up still running 30 s after its producer was refused; stderr:\n{err}"));
    assert!(
        exit.code().is_some_and(|c| c != 0),
        "up exits with a failure status, got {exit}; stderr:\n{err}"
    );
    let last = err.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("meridian: producer Test:1") && last.contains("refused"),
        "the last line names the failed role and why: {last:?}; stderr:\n{err}"
    );
}

mod pki {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    use std::path::{Path, PathBuf};

    /// A CA and an ingest certificate it signs (for the name
    /// `meridian-ingest`, not for any CSC), as PEM files in `dir`.
    pub struct Pki {
        pub ca: PathBuf,
        pub cert: PathBuf,
        pub key: PathBuf,
    }

    impl Pki {
        pub fn new(dir: &Path) -> Pki {
            let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
            let key = KeyPair::generate().unwrap();
            let cert = CertificateParams::new(vec!["meridian-ingest".to_string()])
                .unwrap()
                .signed_by(&key, &ca)
                .unwrap();
            let pki = Pki {
                ca: dir.join("ca.pem"),
                cert: dir.join("ingest.pem"),
                key: dir.join("ingest.key"),
            };
            std::fs::write(&pki.ca, ca.pem()).unwrap();
            std::fs::write(&pki.cert, cert.pem()).unwrap();
            std::fs::write(&pki.key, key.serialize_pem()).unwrap();
            pki
        }
    }
}

mod tempdir {
    /// A directory removed at the end of the test.
    pub struct TempDir(pub std::path::PathBuf);
    impl TempDir {
        pub fn new() -> TempDir {
            static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
            let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let dir = std::env::temp_dir().join(format!("meridian-up-{}-{n}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }
    }
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// `meridian sim --list` tells what the default night simulates and what load it makes.
#[test]
fn sim_list_prints_the_cscs_topics_and_rates() {
    let out = Command::new(env!("CARGO_BIN_EXE_meridian"))
        .args(["sim", "--list"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    for csc in [
        "MTM1M3:0",
        "MTMount:0",
        "ATDome:0",
        "ScriptQueue:1",
        "ScriptQueue:2",
        "ScriptQueue:3",
    ] {
        assert!(text.contains(csc), "{csc} missing: {text}");
    }
    let force = text
        .lines()
        .find(|l| l.contains("forceActuatorData"))
        .expect("M1M3 forces listed");
    assert!(force.contains("50.0 Hz"), "{force}");
    assert!(text.lines().any(|l| l.starts_with("total telemetry:")), "{text}");
}
