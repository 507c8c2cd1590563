//! The manager heartbeat of the replaced protocol (`heartbeat-manager-0-stream`):
//! this manager's time, the commander's last answer (when
//! `frontend.love_commander_url` is set) and the heartbeats other
//! components report with `{"heartbeat": <name>, "timestamp": …}`. The
//! replaced client resubscribes everything when the manager's timestamp
//! stops changing, so it is sent every `frontend.love_heartbeat_ms`.

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

/// How long one probe of the commander may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Shared by every connection of a frontend.
pub struct Beacon {
    components: Mutex<BTreeMap<String, f64>>,
    commander: Option<Arc<Probe>>,
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
            components: Mutex::default(),
            commander,
        }
    }

    /// Records a component's heartbeat (`timestamp`: Unix seconds, now if absent).
    pub fn record(&self, name: &str, timestamp: Option<f64>) -> Result<(), String> {
        if name.is_empty() || name.len() > MAX_COMPONENT_NAME {
            return Err(format!(
                "heartbeat: a component name of 1 to MAX_COMPONENT_NAME = {MAX_COMPONENT_NAME} bytes"
            ));
        }
        let mut components = self.components.lock().unwrap_or_else(|p| p.into_inner());
        if !components.contains_key(name) && components.len() >= MAX_COMPONENTS {
            return Err(format!(
                "heartbeat: at most MAX_COMPONENTS = {MAX_COMPONENTS} components are relayed"
            ));
        }
        let now = unix_now(SystemTime::now());
        components.insert(
            name.to_string(),
            timestamp.filter(|t| t.is_finite()).unwrap_or(now),
        );
        Ok(())
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
        let components = self.components.lock().unwrap_or_else(|p| p.into_inner());
        sources.extend(components.iter().map(|(k, v)| (k.clone(), *v)));
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
}
