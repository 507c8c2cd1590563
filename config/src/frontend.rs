//! `[frontend]`: the manager that serves browsers over HTTP and WebSocket.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::validate::Problems;

/// `[frontend]`: read by the frontend role.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct FrontendConfig {
    /// TCP address of the HTTP and WebSocket server, `"ip:port"`. Default
    /// `"0.0.0.0:8080"`: every interface, since browsers run elsewhere.
    /// Port 0 picks a free port (tests).
    pub listen: SocketAddr,

    /// Read-only tokens a browser may present; any one of them is accepted.
    /// At least one, each non-empty without whitespace. Default
    /// `["dev-token"]`, which is public knowledge: replace it anywhere
    /// reachable from outside a development machine. Errors never echo a
    /// token.
    pub tokens: Vec<String>,

    /// Tokens that may also send commands (the dashboard enables its
    /// command panel for them); each non-empty without whitespace. Default
    /// empty. The commander decides what a command may do: give the same
    /// token an entry in `commander.tokens` with its scopes (`meridian up`
    /// makes its development token both).
    pub command_tokens: Vec<String>,

    /// This is a development run: a standalone frontend (`meridian manager
    /// --role frontend|all`) may start with the public `dev-token` among
    /// `frontend.tokens` (the default). Default false: such a frontend
    /// refuses to start, naming this key, since anyone who knows its address
    /// could read its telemetry. `meridian up` is always a development run;
    /// the global flag `--dev` sets this too.
    pub dev_tokens: bool,

    /// Origins (`scheme://host[:port]`, as browsers send them in `Origin`,
    /// e.g. `"https://dashboard.example.org"`) whose pages may open a
    /// WebSocket to this frontend (`/ws` and the compatibility endpoint), in
    /// addition to the frontend's own origin; `"*"` allows every origin.
    /// The own origin is decided by the request: an `Origin` whose
    /// `host[:port]` equals the request's `Host` header (any scheme), i.e. a
    /// page this frontend served under the address the browser used. Any
    /// other `Origin` is refused with 403 and a reason before the upgrade.
    /// Requests without `Origin` (producers, tools, tests: not browsers) are
    /// allowed; they still need a token. The commander's CORS uses
    /// `commander.allowed_origins`, the same rule. Default empty: the own
    /// origin only.
    pub allowed_origins: Vec<String>,

    /// Serve `/metrics` on the browser port too (`frontend.listen`), where it
    /// needs no token. Default true, for compatibility; deployments set it
    /// false and scrape `metrics.listen`, the process's own metrics port,
    /// which is kept off the browsers' network.
    pub browser_metrics: bool,

    /// Events queued per browser, 16 to 1000000. Default 4096. Telemetry
    /// never queues beyond one value per topic (newer values replace older
    /// ones). When a browser reads slower than events arrive and this
    /// queue is full, new events are dropped for it and it is told which
    /// topics lost data from which stream id, so it can recover them; the
    /// slow client pays, no one else.
    pub client_queue: usize,

    /// Bytes queued per browser (events and conflated telemetry), 65536 to
    /// 1073741824. Default 8388608 (8 MiB): the memory bound of one
    /// connection, whatever the client does.
    pub client_bytes: usize,

    /// A browser that keeps losing events for this long is disconnected
    /// with a reason, in milliseconds, 100 to 600000. Default 10000.
    pub slow_timeout_ms: u64,

    /// Each browser receives at most one data frame per tick, carrying all
    /// new samples of its topics, in milliseconds, 1 to 1000. Default 20
    /// (50 frames/s, the fastest CSC rate, M1M3's 50 Hz, so its plots keep
    /// every sample): fewer, larger writes let one core serve a thousand
    /// browsers. Telemetry faster than this is conflated to the newest
    /// value per topic per frame.
    pub tick_ms: u64,

    /// Most topics one browser may subscribe to, 1 to 100000. Default
    /// 10000.
    pub max_subscriptions: usize,

    /// Most entries replayed to a browser recovering from a stream id or
    /// asking for history, per topic, 1 to 1000000. Default 100000; older
    /// data is reported as missed.
    pub max_replay: usize,

    /// TAI − UTC in seconds (leap seconds), for the time the server tells
    /// browsers, 0 to 100. Default 37 (since 2017).
    pub tai_utc_offset_s: u32,

    /// On shutdown, browsers are told to reconnect elsewhere and given this
    /// long to leave before their sockets close, in milliseconds, 0 to
    /// 60000. Default 2000.
    pub drain_grace_ms: u64,

    /// How often this manager publishes its load in the store and checks
    /// its share of the browsers, in milliseconds, 100 to 60000. Default 2000.
    pub load_interval_ms: u64,

    /// A manager with more than this factor times the average number of
    /// browsers per manager asks its excess browsers to reconnect (after a
    /// random delay), so new managers get load, 1.0 to 100.0. Default 1.25.
    pub rebalance_factor: f64,

    /// How long the shared store reader blocks waiting for new entries
    /// (`XREAD BLOCK`), in milliseconds, 1 to 10000. Default 100: bounds
    /// how late the reader notices a new subscription or shutdown; new
    /// data wakes it at once either way.
    pub read_block_ms: u64,

    /// Most entries read per stream in one read (`XREAD COUNT`), 1 to
    /// 100000. Default 256: keeps one busy stream from delaying the others
    /// in the same read.
    pub read_count: usize,

    /// Shared password the replaced system's producers present on the
    /// compatibility endpoint (`/manager/ws/subscription/?password=…`) to
    /// publish into the store, so sites can move one producer at a time.
    /// Non-empty without whitespace. No default: such producers are
    /// refused (browsers with a token are unaffected). Errors never echo it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub love_password: Option<String>,

    /// How often the compatibility endpoint sends its manager heartbeat
    /// (`heartbeat-manager-0-stream`) and re-checks CSC heartbeats, in
    /// milliseconds, 100 to 3000. Default 2000: the replaced browser client
    /// resubscribes everything when that timestamp has not changed for 3 s,
    /// so a 3 s period would make it flap.
    pub love_heartbeat_ms: u64,

    /// Most topics the catalog may hold for the compatibility endpoint's
    /// producers to add one, 1 to 1,000,000. Counted across every
    /// `?password=` connection of the process, starting from what the
    /// catalog already held (native topics included), so a producer that
    /// reconnects cannot grow it without end; a message with a topic past it
    /// is refused whole with an error naming this key. Default 20000
    /// (ts_xml defines about 2,300 telemetry and event topics per instance of
    /// every component).
    pub love_max_topics: usize,

    /// URL the compatibility endpoint probes (HTTP GET, `http://host:port/path`)
    /// to report the commander's heartbeat in the manager heartbeat, e.g.
    /// `"http://127.0.0.1:8081/healthz"`. No default: no `Commander` entry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub love_commander_url: Option<String>,

    /// A telemetry topic is reported stale to its browsers when no sample
    /// arrived for this many periods of its declared rate (and at least
    /// `stale_min_ms`), 1 to 1000. Default 5. Browsers then grey its values
    /// instead of showing them as current; a new sample clears it.
    pub stale_periods: u32,

    /// The shortest silence reported as stale, in milliseconds, 100 to
    /// 3600000. Default 1000: keeps a 50 Hz topic from flapping on the
    /// jitter of one read.
    pub stale_min_ms: u64,

    /// Directory of the built dashboard (`web/dist`, made by `npm run build`
    /// in `web/`), served at `/`. Read from disk on each request, so a
    /// rebuilt dashboard needs no restart and the binary needs no Node.js
    /// to compile. A relative path is relative to the working directory.
    /// Default `"web/dist"` (running from a checkout). Missing: `/` serves a
    /// page saying how to build it.
    pub dashboard_dir: PathBuf,

    /// Base URL of the commander's HTTP API as browsers reach it, e.g.
    /// `"http://commander.example.org:8081"`; the dashboard sends commands
    /// there (it learns it from `/dashboard-config.json`). No default: the
    /// dashboard's command panel stays disabled. `meridian up` sets it to
    /// its own commander.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub commander_url: Option<String>,
}

/// The public token of development runs, the default of `frontend.tokens`.
pub const DEV_TOKEN: &str = "dev-token";

/// Whether `origin` is one of `allowed` (`"*"` matches any), compared
/// without a trailing `/` and ignoring ASCII case.
pub fn origin_listed(allowed: &[String], origin: &str) -> bool {
    let origin = origin.trim_end_matches('/');
    allowed
        .iter()
        .any(|a| a == "*" || a.trim_end_matches('/').eq_ignore_ascii_case(origin))
}

/// Checks one entry of an `allowed_origins` list at `key`.
pub(crate) fn check_origin(key: String, origin: &str, problems: &mut Problems) {
    let ok = origin == "*"
        || ["http://", "https://"].iter().any(|scheme| {
            origin
                .strip_prefix(scheme)
                .is_some_and(|rest| !rest.is_empty() && !rest.trim_end_matches('/').contains('/'))
        }) && !origin.chars().any(char::is_whitespace);
    if !ok {
        problems.push(
            key,
            "\"*\" or an origin like \"https://host[:port]\" without a path",
            origin.to_string(),
        );
    }
}

impl FrontendConfig {
    /// Why a standalone frontend may not start with these tokens: the
    /// public [`DEV_TOKEN`] is among them and this is not a development run.
    pub fn refuse_dev_token(&self) -> Option<String> {
        (!self.dev_tokens && self.tokens.iter().any(|t| t == DEV_TOKEN)).then(|| {
            format!(
                "frontend.tokens: the public development token {DEV_TOKEN:?} is accepted (it is the default); \
                 set your own frontend.tokens, or set frontend.dev_tokens = true (or pass --dev) for a development run"
            )
        })
    }

    pub(crate) fn check(&self, problems: &mut Problems) {
        for (i, origin) in self.allowed_origins.iter().enumerate() {
            check_origin(format!("frontend.allowed_origins[{i}]"), origin, problems);
        }
        if self.tokens.is_empty() {
            problems.push(
                "frontend.tokens",
                "at least one token (an empty list would lock every browser out)",
                "an empty list",
            );
        }
        for (i, token) in self.tokens.iter().enumerate() {
            let key = format!("frontend.tokens[{i}]");
            if token.is_empty() {
                problems.push(key, "a non-empty token without whitespace", "\"\"");
            } else if token.chars().any(char::is_whitespace) {
                problems.push(
                    key,
                    "a non-empty token without whitespace",
                    "a token containing whitespace",
                );
            }
        }
        for (i, token) in self.command_tokens.iter().enumerate() {
            if token.is_empty() || token.chars().any(char::is_whitespace) {
                problems.push(
                    format!("frontend.command_tokens[{i}]"),
                    "a non-empty token without whitespace",
                    "an empty token or one containing whitespace",
                );
            }
        }
        problems.in_range("frontend.client_queue", self.client_queue, 16..=1_000_000);
        problems.in_range("frontend.client_bytes", self.client_bytes, 65_536..=1_073_741_824);
        problems.in_range("frontend.slow_timeout_ms", self.slow_timeout_ms, 100..=600_000);
        problems.in_range("frontend.tick_ms", self.tick_ms, 1..=1000);
        problems.in_range("frontend.max_subscriptions", self.max_subscriptions, 1..=100_000);
        problems.in_range("frontend.max_replay", self.max_replay, 1..=1_000_000);
        problems.in_range("frontend.stale_periods", self.stale_periods, 1..=1000);
        problems.in_range("frontend.stale_min_ms", self.stale_min_ms, 100..=3_600_000);
        problems.in_range("frontend.tai_utc_offset_s", self.tai_utc_offset_s, 0..=100);
        problems.in_range("frontend.drain_grace_ms", self.drain_grace_ms, 0..=60_000);
        problems.in_range("frontend.load_interval_ms", self.load_interval_ms, 100..=60_000);
        if !(1.0..=100.0).contains(&self.rebalance_factor) {
            problems.push(
                "frontend.rebalance_factor",
                "a number from 1.0 to 100.0",
                self.rebalance_factor.to_string(),
            );
        }
        problems.in_range("frontend.read_block_ms", self.read_block_ms, 1..=10_000);
        problems.in_range("frontend.read_count", self.read_count, 1..=100_000);
        if let Some(password) = &self.love_password {
            if password.is_empty() || password.chars().any(char::is_whitespace) {
                problems.push(
                    "frontend.love_password",
                    "a non-empty password without whitespace",
                    "an empty password or one containing whitespace",
                );
            }
        }
        problems.in_range("frontend.love_heartbeat_ms", self.love_heartbeat_ms, 100..=3000);
        problems.in_range("frontend.love_max_topics", self.love_max_topics, 1..=1_000_000);
        if let Some(url) = &self.love_commander_url {
            if http_host_port(url).is_none() {
                problems.push(
                    "frontend.love_commander_url",
                    "an http://host:port/path URL",
                    url.clone(),
                );
            }
        }
        if let Some(url) = &self.commander_url {
            let rest = url
                .strip_prefix("http://")
                .or_else(|| url.strip_prefix("https://"));
            if rest.is_none_or(|r| r.is_empty() || r.chars().any(char::is_whitespace)) {
                problems.push(
                    "frontend.commander_url",
                    "an http:// or https:// URL without whitespace",
                    url.clone(),
                );
            }
        }
        if (16..=1_000_000).contains(&self.client_queue) && self.client_queue < self.read_count {
            // One read hands up to read_count entries of a stream to every
            // browser at once: a smaller queue loses events on every burst.
            problems.push(
                "frontend.client_queue",
                format!("at least frontend.read_count ({})", self.read_count),
                self.client_queue.to_string(),
            );
        }
    }
}

impl Default for FrontendConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from((Ipv4Addr::UNSPECIFIED, 8080)),
            tokens: vec![DEV_TOKEN.to_string()],
            command_tokens: Vec::new(),
            dev_tokens: false,
            allowed_origins: Vec::new(),
            browser_metrics: true,
            client_queue: 4096,
            client_bytes: 8 * 1024 * 1024,
            slow_timeout_ms: 10_000,
            tick_ms: 20,
            max_subscriptions: 10_000,
            max_replay: 100_000,
            tai_utc_offset_s: 37,
            drain_grace_ms: 2000,
            load_interval_ms: 2000,
            rebalance_factor: 1.25,
            read_block_ms: 100,
            read_count: 256,
            love_password: None,
            love_heartbeat_ms: 2000,
            love_max_topics: 20_000,
            love_commander_url: None,
            stale_periods: 5,
            stale_min_ms: 1000,
            dashboard_dir: PathBuf::from("web/dist"),
            commander_url: None,
        }
    }
}

/// The `host:port` and path of an `http://host:port/path` URL (the port is
/// required; the path defaults to `/`), or `None` if `url` is not one.
pub fn http_host_port(url: &str) -> Option<(&str, &str)> {
    let rest = url.strip_prefix("http://")?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let (host, port) = authority.rsplit_once(':')?;
    if host.is_empty() || port.parse::<u16>().is_err() || path.chars().any(char::is_whitespace) {
        return None;
    }
    Some((authority, path))
}
