//! The manager heartbeat of the replaced protocol (`heartbeat-manager-0-stream`):
//! this manager's time, the commander's last answer (when
//! `frontend.love_commander_url` is set) and the heartbeats other
//! components report with `{"heartbeat": <name>, "timestamp": …}`. The
//! replaced client resubscribes everything when the manager's timestamp
//! stops changing, so it is sent every `frontend.love_heartbeat_ms`.
//!
//! Only producers (`?password=`) report component heartbeats (the endpoint
//! refuses a browser's), never as `Manager` or `Commander`, and a component
//! not heard from for [`COMPONENT_EXPIRY_PERIODS`] periods is dropped
//! ([`Components`]), so a full table frees up for the producers still running.

use meridian_proto::unix_now;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Most components whose heartbeats are relayed.
pub const MAX_COMPONENTS: usize = 32;

/// Longest component name accepted.
pub const MAX_COMPONENT_NAME: usize = 64;

/// Periods of `frontend.love_heartbeat_ms` after which a component that
/// stopped reporting is dropped (10 s by default): its producers report
/// every 2 to 3 s, so a live one is never dropped, and a table filled by
/// components gone away frees up within seconds.
pub const COMPONENT_EXPIRY_PERIODS: u32 = 5;

/// Names of this manager's own entries, which no component may report.
const RESERVED_NAMES: [&str; 2] = ["Manager", "Commander"];

/// How long one probe of the commander may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Shared by every connection of a frontend.
pub struct Beacon {
    components: Mutex<Components>,
    commander: Option<Arc<Probe>>,
}

/// The components' heartbeats, at most [`MAX_COMPONENTS`]; no I/O and no
/// clock (`now`: Unix seconds, passed in), so expiry is tested alone.
pub struct Components {
    /// Name → (reported timestamp, when it was heard, Unix seconds).
    heard: BTreeMap<String, (f64, f64)>,
    /// Seconds after which a component not heard from again is dropped.
    expiry: f64,
}

impl Components {
    pub fn new(expiry: Duration) -> Components {
        Components {
            heard: BTreeMap::new(),
            expiry: expiry.as_secs_f64(),
        }
    }

    /// Records a heartbeat of `name` (`timestamp`: Unix seconds, `now` if absent).
    pub fn record(&mut self, name: &str, timestamp: Option<f64>, now: f64) -> Result<(), String> {
        if name.is_empty() || name.len() > MAX_COMPONENT_NAME {
            return Err(format!(
                "heartbeat: a component name of 1 to MAX_COMPONENT_NAME = {MAX_COMPONENT_NAME} bytes"
            ));
        }
        if RESERVED_NAMES.contains(&name) {
            return Err(format!(
                "heartbeat: \"{name}\" is this manager's own entry; report under another name"
            ));
        }
        self.expire(now);
        if !self.heard.contains_key(name) && self.heard.len() >= MAX_COMPONENTS {
            return Err(format!(
                "heartbeat: at most MAX_COMPONENTS = {MAX_COMPONENTS} components are relayed; \
                 one not heard from for {COMPONENT_EXPIRY_PERIODS} heartbeat periods is dropped"
            ));
        }
        let timestamp = timestamp.filter(|t| t.is_finite()).unwrap_or(now);
        self.heard.insert(name.to_string(), (timestamp, now));
        Ok(())
    }

    /// The components heard from within the expiry, with their reported timestamps.
    pub fn current(&mut self, now: f64) -> Vec<(String, f64)> {
        self.expire(now);
        self.heard.iter().map(|(k, (t, _))| (k.clone(), *t)).collect()
    }

    fn expire(&mut self, now: f64) {
        let expiry = self.expiry;
        self.heard.retain(|_, (_, heard)| now - *heard < expiry);
    }
}

/// Asks the commander, at most once per period, whether it answers.
struct Probe {
    authority: String,
    path: String,
    every: Duration,
    running: AtomicBool,
    /// When the last probe started, and when the commander last answered (Unix seconds).
    state: Mutex<(Option<Instant>, Option<f64>)>,
}

impl Beacon {
    /// `commander`: an `http://host:port/path` URL (checked by the config), probed every `every`.
    pub fn new(commander: Option<&str>, every: Duration) -> Beacon {
        let commander =
            commander
                .and_then(meridian_config::frontend::http_host_port)
                .map(|(authority, path)| {
                    Arc::new(Probe {
                        authority: authority.to_string(),
                        path: path.to_string(),
                        every,
                        running: AtomicBool::new(false),
                        state: Mutex::new((None, None)),
                    })
                });
        Beacon {
            components: Mutex::new(Components::new(every * COMPONENT_EXPIRY_PERIODS)),
            commander,
        }
    }

    /// Records a component's heartbeat (`timestamp`: Unix seconds, now if absent).
    pub fn record(&self, name: &str, timestamp: Option<f64>) -> Result<(), String> {
        let now = unix_now(SystemTime::now());
        let mut components = self.components.lock().unwrap_or_else(|p| p.into_inner());
        components.record(name, timestamp, now)
    }

    /// The heartbeat message, now; starts a commander probe if one is due.
    pub fn message(&self) -> String {
        let now = unix_now(SystemTime::now());
        let mut sources = vec![("Manager".to_string(), now)];
        if let Some(probe) = &self.commander {
            if let Some(answered) = probe.poke() {
                sources.push(("Commander".to_string(), answered));
            }
        }
        let mut components = self.components.lock().unwrap_or_else(|p| p.into_inner());
        sources.extend(components.current(now));
        let data: Vec<serde_json::Value> = sources
            .into_iter()
            .map(|(csc, timestamp)| serde_json::json!({"csc": csc, "salindex": 0, "data": {"timestamp": timestamp}}))
            .collect();
        serde_json::json!({"category": "heartbeat", "data": data, "subscription": "heartbeat"}).to_string()
    }
}

impl Probe {
    /// When the commander last answered; probes it again if due.
    fn poke(self: &Arc<Self>) -> Option<f64> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let due = state.0.is_none_or(|at| at.elapsed() >= self.every);
        if due && !self.running.swap(true, Ordering::AcqRel) {
            state.0 = Some(Instant::now());
            let probe = self.clone();
            tokio::spawn(async move {
                if probe.answers().await {
                    probe.state.lock().unwrap_or_else(|p| p.into_inner()).1 =
                        Some(unix_now(SystemTime::now()));
                }
                probe.running.store(false, Ordering::Release);
            });
        }
        state.1
    }

    /// One `GET`: whether the commander answers `200` within [`PROBE_TIMEOUT`].
    async fn answers(&self) -> bool {
        let attempt = async {
            let mut stream = tokio::net::TcpStream::connect(&self.authority).await.ok()?;
            let request = format!(
                "GET {} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
                self.path, self.authority
            );
            stream.write_all(request.as_bytes()).await.ok()?;
            let mut head = [0u8; 16];
            let mut read = 0;
            while read < 12 {
                match stream.read(&mut head[read..]).await.ok()? {
                    0 => break,
                    n => read += n,
                }
            }
            let status = std::str::from_utf8(&head[..read]).ok()?;
            Some(status.starts_with("HTTP/1.1 200") || status.starts_with("HTTP/1.0 200"))
        };
        matches!(tokio::time::timeout(PROBE_TIMEOUT, attempt).await, Ok(Some(true)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_manager_comes_first_then_components() {
        let beacon = Beacon::new(None, Duration::from_secs(2));
        beacon.record("Producer", Some(12.0)).unwrap();
        let v: serde_json::Value = serde_json::from_str(&beacon.message()).unwrap();
        assert_eq!(v["category"], "heartbeat");
        assert_eq!(v["subscription"], "heartbeat");
        assert_eq!(v["data"][0]["csc"], "Manager");
        assert!(v["data"][0]["data"]["timestamp"].as_f64().unwrap() > 1e9);
        assert_eq!(
            v["data"][1],
            serde_json::json!({"csc":"Producer","salindex":0,"data":{"timestamp":12.0}})
        );
        assert!(beacon.record("", None).is_err());
    }

    #[test]
    fn no_component_reports_as_the_manager_or_the_commander() {
        let mut c = Components::new(Duration::from_secs(10));
        for name in ["Manager", "Commander"] {
            let e = c.record(name, None, 100.0).unwrap_err();
            assert!(e.contains(name), "{e}");
        }
        assert!(c.current(100.0).is_empty());
    }

    #[test]
    fn components_not_heard_from_expire_and_a_full_table_frees_up() {
        let mut c = Components::new(Duration::from_secs(10));
        for i in 0..MAX_COMPONENTS {
            c.record(&format!("Filler{i}"), Some(1.0), 100.0).unwrap();
        }
        let full = c.record("Late", None, 105.0).unwrap_err();
        assert!(full.contains("MAX_COMPONENTS = 32"), "{full}");
        // One keeps reporting; the others go stale after the expiry.
        c.record("Filler0", Some(2.0), 105.0).unwrap();
        assert_eq!(c.current(109.9).len(), MAX_COMPONENTS);
        assert_eq!(c.current(110.0), vec![("Filler0".to_string(), 2.0)]);
        c.record("Late", None, 110.0).unwrap();
        assert_eq!(c.current(110.0).len(), 2);
        assert!(c.current(115.0).iter().all(|(k, _)| k == "Late"));
        assert!(c.current(120.0).is_empty());
    }
}
