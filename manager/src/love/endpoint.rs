//! The replaced system's protocol (LOVE manager), at
//! `/manager[/<pool>]/ws/subscription[/]`, so its browser client works
//! unchanged and its producers can publish here while sites move them
//! over one at a time (`shared/reference/love-protocol.md`,
//! `love-research.md` §2, §3.2, §9; summary in `docs/protocol.md`).
//! [`router`] is what the frontend mounts.
//!
//! - `?token=` (any of `frontend.tokens` / `command_tokens`): a browser.
//!   It joins groups (`{"option":"subscribe"|"unsubscribe",…}`, answered
//!   with the exact confirmation strings), asks the time
//!   (`{"action":"get_time_data"}`), and receives one data message per
//!   sample per group ([`group`](super::group), [`encode`]), its manager
//!   heartbeat and CSC heartbeat reports ([`heartbeat`](super::heartbeat)).
//! - `?password=` (`frontend.love_password`): a producer; its data messages
//!   go to the store like ingest's samples ([`publish`]); its `initial_state`
//!   registrations and component heartbeats are accepted (a browser's
//!   heartbeat is refused with an error, so none can put entries in every
//!   browser's manager heartbeat). Meridian never asks producers
//!   for initial state: the last value of each topic comes from the store.
//! - Neither: closed right after the handshake with [`CLOSE_UNAUTHORIZED`]
//!   and the reason. A wrong token or password counts against the client's
//!   address ([`Edge::failed`](crate::frontend::Edge::failed)); after `AUTH_FAILURE_BURST` of them (shared
//!   with `/ws`) the address is refused the same way without comparing.
//!
//! What differs from the replaced manager: nothing is dropped silently. A
//! connection's queue is bounded like the native protocol's; this protocol
//! cannot say "you lost these events", so a browser whose events no longer
//! fit is closed with [`CLOSE_LAGGED`] and a reason (its client reconnects
//! and subscribes again, getting each topic's last value). Malformed
//! messages are answered with an error (`{"data":"Error: …","error":…}`)
//! instead of being ignored, and browsers cannot publish.
//!
//! Layout: requests run in order on a worker task, so a subscription that
//! replays from the store never stops this connection's frames; samples
//! leave from the connection's inbox once per tick (telemetry conflated),
//! each message encoded once per sample and flavour and shared.

use super::group::{Delivery, GroupKey, Select, Session, Subscription};
use super::heartbeat::Beacon;
use super::{encode, publish, script_log, time};
use crate::frontend::client::{kick_close, MAX_FRAME_BYTES};
use crate::frontend::hub::{ClientId, Hub, HubError, Start};
use crate::frontend::inbox::{FrameClock, Inbox, Limits, CONTROL_QUEUE};
use crate::frontend::sample::Delivered;
use crate::frontend::websocket::{small, upgrade};
use crate::frontend::{Edge, CLOSE_GOING_AWAY, CLOSE_LAGGED, CLOSE_UNAUTHORIZED};
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, Query, State};
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use futures_util::stream::SplitSink;
use futures_util::{SinkExt, StreamExt};
use meridian_config::Config;
use meridian_proto::love::{self, DataMessage};
use meridian_proto::{unix_now, TopicId};
use meridian_store::Store;
use serde_json::Value as Json;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};
use tokio::sync::{mpsc, Notify};
use tokio_util::task::TaskTracker;
use tracing::Instrument;

pub use meridian_proto::love::MAX_PRODUCER_MESSAGE_LEN;

/// Largest WebSocket message read on this endpoint: beyond it the
/// connection is cut by the WebSocket layer (1009) instead of answered.
pub const MAX_WS_MESSAGE_LEN: usize = 2 * MAX_PRODUCER_MESSAGE_LEN;

/// Requests read but not yet carried out; past it the connection stops
/// reading its socket until the worker catches up (the sender waits, nothing is refused).
pub const MAX_PENDING_REQUESTS: usize = 64;

/// Replies the worker queues before waiting for a frame to take them, well
/// under the inbox's [`CONTROL_QUEUE`] (the client's burst of resubscriptions every 5 min).
const REPLY_BUDGET: usize = CONTROL_QUEUE / 2;

/// Everything this endpoint needs from its frontend, shared by its connections.
pub struct LoveSettings {
    tokens: Vec<String>,
    password: Option<String>,
    limits: Limits,
    tick: Duration,
    heartbeat: Duration,
    tai_utc: f64,
    max_groups: usize,
    /// `frontend.max_replay`, which bounds a Script log's search ([`script_log`]).
    max_replay: usize,
    retention: publish::Retention,
    /// `frontend.love_max_topics`, shared by every producer connection.
    topics: Arc<publish::TopicBudget>,
    store: Arc<dyn Store>,
    schemas: Arc<encode::Schemas>,
    beacon: Beacon,
}

impl LoveSettings {
    pub fn new(config: &Config, store: Arc<dyn Store>) -> LoveSettings {
        let fc = &config.frontend;
        let heartbeat = Duration::from_millis(fc.love_heartbeat_ms);
        LoveSettings {
            tokens: fc.tokens.iter().chain(&fc.command_tokens).cloned().collect(),
            password: fc.love_password.clone(),
            limits: Limits {
                events: fc.client_queue,
                bytes: fc.client_bytes,
                slow_timeout: Duration::from_millis(fc.slow_timeout_ms),
            },
            tick: Duration::from_millis(fc.tick_ms),
            heartbeat,
            tai_utc: f64::from(fc.tai_utc_offset_s),
            max_groups: fc.max_subscriptions,
            max_replay: fc.max_replay,
            retention: publish::Retention {
                telemetry: config.store.telemetry_maxlen,
                event: config.store.event_maxlen,
            },
            topics: Arc::new(publish::TopicBudget::new(fc.love_max_topics)),
            schemas: Arc::new(encode::Schemas::new(store.clone())),
            beacon: Beacon::new(fc.love_commander_url.as_deref(), heartbeat),
            store,
        }
    }
}

/// The routes of this endpoint, for the frontend to merge into its own:
/// connections read from its `hub`, are told to close through `edge`, and
/// are counted in `connections` so its drain waits for them.
pub fn router(
    config: &Config,
    store: Arc<dyn Store>,
    hub: Hub,
    edge: Edge,
    connections: TaskTracker,
) -> Router {
    let mounted = Arc::new(Mounted {
        hub,
        settings: Arc::new(LoveSettings::new(config, store)),
        edge,
        connections,
    });
    Router::new()
        .route("/manager/ws/subscription", get(open))
        .route("/manager/ws/subscription/", get(open))
        .route("/manager/{pool}/ws/subscription", get(open))
        .route("/manager/{pool}/ws/subscription/", get(open))
        .with_state(mounted)
}

/// What [`router`]'s connections share.
struct Mounted {
    hub: Hub,
    settings: Arc<LoveSettings>,
    edge: Edge,
    connections: TaskTracker,
}

/// The URL's credentials: `?token=` for a browser, `?password=` for a producer.
#[derive(serde::Deserialize)]
struct Credentials {
    token: Option<String>,
    password: Option<String>,
}

async fn open(
    State(mounted): State<Arc<Mounted>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Query(credentials): Query<Credentials>,
    ws: WebSocketUpgrade,
) -> Response {
    let span = tracing::info_span!("browser", %peer, protocol = "love");
    // The replaced system's producers send larger messages than browsers.
    let ws = small(ws).max_message_size(MAX_WS_MESSAGE_LEN);
    let connections = mounted.connections.clone();
    upgrade(ws, &connections, span, move |socket| async move {
        let Credentials { token, password } = credentials;
        let (hub, settings, edge) = (
            mounted.hub.clone(),
            mounted.settings.clone(),
            mounted.edge.clone(),
        );
        if let Err(reason) = edge.may_try(peer.ip()) {
            return refuse(socket, reason).await;
        }
        serve(socket, peer, token, password, hub, settings, edge).await
    })
}

fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
}

/// Whether the connection may open, and whether it may publish (a producer).
fn admit(settings: &LoveSettings, token: Option<&str>, password: Option<&str>) -> Result<bool, &'static str> {
    let producer = match (password, &settings.password) {
        (Some(given), Some(ours)) => same_secret(given, ours),
        _ => false,
    };
    match token {
        Some(token) if settings.tokens.iter().any(|t| same_secret(t, token)) => Ok(producer),
        _ if producer => Ok(true),
        Some(_) => Err("token not accepted by this frontend (frontend.tokens)"),
        None => match (password, &settings.password) {
            (Some(_), Some(_)) => Err("password not accepted (frontend.love_password)"),
            (Some(_), None) => Err("producers are refused: frontend.love_password is not set"),
            (None, _) => Err("missing token: connect to /manager/ws/subscription/?token=<token>"),
        },
    }
}

/// What a connection asks, carried out in order by its worker.
#[derive(Debug)]
enum Request {
    Subscription(Subscription),
    /// `get_time_data`, with the `request_time` to echo.
    Time(Json),
    Publish(DataMessage),
}

/// Reads one text message ([`meridian_proto::love`]): a request, `None`
/// if it needed no worker (a component heartbeat), or an error for the client.
fn read(text: &str, producer: bool, settings: &LoveSettings) -> Result<Option<Request>, String> {
    Ok(match love::parse(text, producer)? {
        love::Message::Subscription(s) => Some(Request::Subscription(s)),
        love::Message::Time { request_time } => Some(Request::Time(request_time)),
        love::Message::Heartbeat { .. } if !producer => return Err(
            "heartbeat: component heartbeats are accepted only from producers (connected with ?password=)"
                .into(),
        ),
        love::Message::Heartbeat { component, timestamp } => {
            settings.beacon.record(&component, timestamp)?;
            None
        }
        love::Message::Data(message) => Some(Request::Publish(message)),
    })
}

/// Replies the worker has queued that no frame has taken yet.
#[derive(Default)]
struct Replies {
    pending: AtomicUsize,
    drained: Notify,
}

impl Replies {
    fn queued(&self) {
        self.pending.fetch_add(1, Ordering::Relaxed);
    }

    /// A frame took every queued reply.
    fn drained(&self) {
        self.pending.store(0, Ordering::Relaxed);
        self.drained.notify_waiters();
    }

    /// Waits until there is room for a few more replies.
    async fn room(&self) {
        loop {
            let drained = self.drained.notified();
            tokio::pin!(drained);
            drained.as_mut().enable();
            if self.pending.load(Ordering::Relaxed) < REPLY_BUDGET {
                return;
            }
            drained.await;
        }
    }
}

fn lock(session: &Mutex<Session>) -> MutexGuard<'_, Session> {
    session.lock().unwrap_or_else(|p| p.into_inner())
}

/// Serves one connection until it leaves, lags, or the frontend stops.
/// Closes a connection that may not open with [`CLOSE_UNAUTHORIZED`] and `reason`.
async fn refuse(mut socket: WebSocket, reason: String) {
    tracing::info!(reason, "connection refused");
    let close = socket.send(Message::Close(Some(CloseFrame {
        code: CLOSE_UNAUTHORIZED,
        reason: reason.into(),
    })));
    let _ = tokio::time::timeout(Duration::from_secs(1), close).await;
}

async fn serve(
    socket: WebSocket,
    peer: SocketAddr,
    token: Option<String>,
    password: Option<String>,
    hub: Hub,
    settings: Arc<LoveSettings>,
    edge: Edge,
) {
    let producer = match admit(&settings, token.as_deref(), password.as_deref()) {
        Ok(producer) => producer,
        Err(reason) => {
            // A wrong token or password (not a missing one) counts against the address.
            if token.is_some() || password.is_some() {
                edge.failed(peer.ip());
            }
            return refuse(socket, reason.to_string()).await;
        }
    };
    tracing::info!(producer, "connection opened");
    let inbox = Inbox::new(settings.limits, false, hub.stats());
    let session = Arc::new(Mutex::new(Session::default()));
    let client = Arc::new(AtomicU64::new(0));
    let replies = Arc::new(Replies::default());
    let (requests, pending) = mpsc::channel::<Request>(MAX_PENDING_REQUESTS);
    let worker = Worker {
        hub: hub.clone(),
        inbox: inbox.clone(),
        session: session.clone(),
        client: client.clone(),
        replies: replies.clone(),
        publisher: producer.then(|| {
            publish::Publisher::new(
                settings.store.clone(),
                settings.schemas.clone(),
                settings.retention,
                settings.topics.clone(),
            )
        }),
        settings: settings.clone(),
    };
    let worker = tokio::spawn(worker.run(pending).in_current_span());
    let (mut sink, mut incoming) = socket.split();
    let mut ticker = tokio::time::interval(settings.heartbeat);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut clock = FrameClock::new(settings.tick);
    // A request waiting for room in the worker's queue: the socket is not read meanwhile.
    let mut blocked: Option<Request> = None;
    let close = loop {
        if let Some(kick) = inbox.kick() {
            break Some(kick_close(kick));
        }
        tokio::select! {
            _ = edge.closing.cancelled() => break Some((CLOSE_GOING_AWAY, "server shutting down: reconnect".into())),
            _ = inbox.ready() => {
                clock.wait().await;
                if let Err(close) = send_pending(&mut sink, &inbox, &session, &replies, &settings).await {
                    break close;
                }
            }
            _ = ticker.tick() => {
                let frames = heartbeats(&session, &inbox, &settings);
                if let Err(close) = send(&mut sink, frames, settings.limits.slow_timeout).await {
                    break close;
                }
            }
            permit = requests.reserve(), if blocked.is_some() => match (permit, blocked.take()) {
                (Ok(permit), Some(request)) => permit.send(request),
                _ => break None,
            },
            message = incoming.next(), if blocked.is_none() => {
                let text = match message {
                    Some(Ok(Message::Text(text))) => text,
                    Some(Ok(Message::Binary(_))) => {
                        inbox.control(encode::error("binary messages are not part of this protocol: send JSON text"));
                        continue;
                    }
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                    Some(Ok(Message::Close(_))) | None => break None,
                    Some(Err(e)) => {
                        tracing::info!(error = %e, "connection failed");
                        break None;
                    }
                };
                match read(&text, producer, &settings) {
                    Ok(Some(request)) => match requests.try_send(request) {
                        Ok(()) => {}
                        Err(mpsc::error::TrySendError::Full(request)) => blocked = Some(request),
                        Err(mpsc::error::TrySendError::Closed(_)) => break None,
                    },
                    Ok(None) => {}
                    Err(e) => inbox.control(encode::error(&e)),
                }
            }
        }
    };
    worker.abort();
    let id = client.load(Ordering::Acquire);
    if id != 0 {
        hub.disconnect(id);
    }
    if let Some((code, reason)) = close {
        // A close reason is at most 123 bytes.
        let reason: String = reason.chars().take(120).collect();
        let bye = sink.send(Message::Close(Some(CloseFrame {
            code,
            reason: reason.into(),
        })));
        let _ = tokio::time::timeout(Duration::from_secs(1), bye).await;
    }
    tracing::info!("connection closed");
}

/// Writes `frames`, one WebSocket message each; a client whose socket does
/// not take them within `timeout` is closed as too slow.
async fn send(
    sink: &mut SplitSink<WebSocket, Message>,
    frames: Vec<Utf8Bytes>,
    timeout: Duration,
) -> Result<(), Option<(u16, String)>> {
    if frames.is_empty() {
        return Ok(());
    }
    let write = async {
        for frame in frames {
            sink.feed(Message::Text(frame)).await?;
        }
        sink.flush().await
    };
    match tokio::time::timeout(timeout, write).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(None),
        Err(_) => Err(Some((
            CLOSE_LAGGED,
            "too slow: messages waited longer than frontend.slow_timeout_ms".into(),
        ))),
    }
}

/// Sends what the inbox holds: replies, then one message per sample and group.
async fn send_pending(
    sink: &mut SplitSink<WebSocket, Message>,
    inbox: &Inbox,
    session: &Mutex<Session>,
    replies: &Replies,
    settings: &LoveSettings,
) -> Result<(), Option<(u16, String)>> {
    let mut out = inbox.drain(MAX_FRAME_BYTES);
    // This protocol has a message per sample, encoded per connection: shared ticks are unpacked.
    out.samples
        .extend(out.ticks.iter().flat_map(|t| t.samples.iter().cloned()));
    replies.drained();
    let mut frames = Vec::with_capacity(out.control.len() + out.samples.len());
    let mut close = None;
    for reply in out.control {
        // The hub's own notices are the native protocol's; of those only a
        // gap (data no longer stored) matters, and this protocol cannot say it.
        if reply.starts_with(r#"{"type":"#) {
            if reply.starts_with(r#"{"type":"gap""#) {
                close = Some((
                    CLOSE_LAGGED,
                    "missed data no longer stored: reconnect".to_string(),
                ));
            }
            continue;
        }
        frames.push(Utf8Bytes::from(String::from(reply)));
    }
    if !out.samples.is_empty() {
        let topics: Vec<&TopicId> = out.samples.iter().map(|s| &s.topic).collect();
        settings.schemas.ensure(&topics).await;
        let now = unix_now(SystemTime::now());
        let mut session = lock(session);
        for sample in &out.samples {
            for delivery in session.route(sample, now) {
                frames.push(encode_delivery(sample, delivery, settings));
            }
        }
    }
    if !out.lost.is_empty() {
        let reason = format!(
            "too slow: events of {} topics did not fit in this connection's queue (frontend.client_queue); reconnect",
            out.lost.len()
        );
        tracing::warn!(topics = out.lost.len(), "closing a LOVE client that lost events");
        close = Some((CLOSE_LAGGED, reason));
    }
    send(sink, frames, settings.limits.slow_timeout).await?;
    close.map_or(Ok(()), |close| Err(Some(close)))
}

fn encode_delivery(sample: &Delivered, delivery: Delivery, settings: &LoveSettings) -> Utf8Bytes {
    let tai = settings.tai_utc;
    let shape = || settings.schemas.get(&sample.topic);
    match delivery {
        Delivery::Stream => encode::data_message(sample, encode::Flavour::Stream, shape, tai),
        Delivery::Csc => encode::data_message(sample, encode::Flavour::Csc, shape, tai),
        Delivery::All => encode::data_message(sample, encode::Flavour::All, shape, tai),
        Delivery::Heartbeat { all, lost: 0 } => encode::heartbeat_report(sample, all, tai),
        Delivery::Heartbeat { all, lost } => Utf8Bytes::from(encode::heartbeat_message(
            &sample.topic.csc,
            lost,
            sample.source_ts,
            all,
            tai,
        )),
    }
}

/// Queues the manager heartbeat (if joined: behind the replies, so never
/// before its confirmation); returns reports of CSCs whose heartbeats stopped.
fn heartbeats(session: &Mutex<Session>, inbox: &Inbox, settings: &LoveSettings) -> Vec<Utf8Bytes> {
    let now = unix_now(SystemTime::now());
    let mut session = lock(session);
    let mut frames = Vec::new();
    if session.manager {
        inbox.control(settings.beacon.message());
    }
    for (csc, lost, last, to_group, to_all) in session.lost_heartbeats(now) {
        for (wanted, all) in [(to_group, false), (to_all, true)] {
            if wanted {
                let message = encode::heartbeat_message(&csc, lost, last, all, settings.tai_utc);
                frames.push(Utf8Bytes::from(message));
            }
        }
    }
    frames
}

/// Carries out one connection's requests in order.
struct Worker {
    hub: Hub,
    inbox: Arc<Inbox>,
    session: Arc<Mutex<Session>>,
    /// The hub's id for this connection, 0 until it first reads from the hub.
    client: Arc<AtomicU64>,
    replies: Arc<Replies>,
    publisher: Option<publish::Publisher>,
    settings: Arc<LoveSettings>,
}

impl Worker {
    async fn run(mut self, mut pending: mpsc::Receiver<Request>) {
        while let Some(request) = pending.recv().await {
            self.replies.room().await;
            match request {
                Request::Subscription(s) if s.subscribe => self.subscribe(s).await,
                Request::Subscription(s) => self.unsubscribe(s).await,
                Request::Time(request_time) => {
                    let utc = unix_now(SystemTime::now());
                    self.reply(time::time_message(utc, self.settings.tai_utc, &request_time));
                }
                Request::Publish(message) => {
                    if let Some(publisher) = &mut self.publisher {
                        if let Err(e) = publisher.publish(&message).await {
                            tracing::info!(error = %e, "producer message refused");
                            self.reply(encode::error(&e));
                        }
                    }
                }
            }
        }
    }

    fn reply(&self, message: String) {
        self.replies.queued();
        self.inbox.control(message);
    }

    /// The hub's id for this connection; registered on first use, so a
    /// producer that only publishes is not counted as a browser.
    fn client(&self) -> ClientId {
        match self.client.load(Ordering::Acquire) {
            0 => {
                let id = self.hub.register(self.inbox.clone());
                self.client.store(id, Ordering::Release);
                id
            }
            id => id,
        }
    }

    async fn subscribe(&mut self, s: Subscription) {
        let confirm = encode::confirmation(true, &s.name);
        {
            let session = lock(&self.session);
            if !session.contains(&s.group) && session.len() >= self.settings.max_groups {
                drop(session);
                self.reply(encode::error(&format!(
                    "too many subscriptions: the limit is frontend.max_subscriptions = {}",
                    self.settings.max_groups
                )));
                return;
            }
        }
        let Some(selector) = s.group.selector() else {
            self.reply(confirm);
            if s.group == GroupKey::Manager {
                // The first heartbeat now, the next ones every frontend.love_heartbeat_ms.
                self.reply(self.settings.beacon.message());
            }
            lock(&self.session).join(&s.group, &[]);
            return;
        };
        let client = self.client();
        let start = self.start(&s.group).await;
        let mut confirmed = false;
        let result = {
            let (session, inbox, replies, key) = (&self.session, &self.inbox, &self.replies, &s.group);
            let confirmed = &mut confirmed;
            let confirm = confirm.clone();
            // The confirmation goes first; the last value of each topic follows it.
            let on_confirm = move |topics: &[TopicId], _waiting: bool| {
                lock(session).join(key, topics);
                replies.queued();
                inbox.control(confirm);
                *confirmed = true;
            };
            self.hub.subscribe(client, &selector, start, on_confirm).await
        };
        match result {
            Ok(_) => {}
            Err(e @ HubError::Unknown(_)) => {
                // The replaced manager confirms any group; this one will stay silent, and says why.
                lock(&self.session).join(&s.group, &[]);
                self.reply(confirm);
                self.reply(encode::error(&e.to_string()));
            }
            Err(e) => {
                if confirmed {
                    tracing::warn!(error = %e, group = %s.name, "subscription incomplete");
                }
                self.reply(encode::error(&e.to_string()));
            }
        }
    }

    /// Where joining `key` starts: each topic's last value, or a Script's
    /// last log messages for its `logMessage` group ([`script_log`]).
    async fn start(&self, key: &GroupKey) -> Start {
        let GroupKey::Stream(t) = key else {
            return Start::Last;
        };
        let scan = script_log::scan_len(self.settings.max_replay);
        if !script_log::is_script_log(t) || scan == 0 {
            return Start::Last;
        }
        match self
            .settings
            .store
            .last(&meridian_proto::keys::stream(t), scan + 1)
            .await
        {
            Ok(newest) => script_log::replay_start(&newest, t.csc.salindex, scan),
            Err(e) => {
                tracing::info!(error = %e, "Script log not replayed; its last message only");
                Start::Last
            }
        }
    }

    async fn unsubscribe(&mut self, s: Subscription) {
        let left = lock(&self.session).leave(&s.group);
        self.reply(encode::confirmation(false, &s.name));
        let client = self.client.load(Ordering::Acquire);
        let Some(selector) = s.group.selector().filter(|_| left && client != 0) else {
            return;
        };
        let topics = match self.hub.unsubscribe(client, &selector).await {
            Ok(topics) => topics,
            Err(e) => {
                self.reply(encode::error(&e.to_string()));
                return;
            }
        };
        // The hub no longer sends these streams here; other groups may still
        // need some: attach them again from the last id sent.
        let again: Vec<(TopicId, Start)> = {
            let session = lock(&self.session);
            topics
                .into_iter()
                .filter(|t| session.still_needed(t, &selector))
                .map(|t| {
                    let start = session.resume_from(&t);
                    (t, start)
                })
                .collect()
        };
        for (topic, start) in again {
            let Some(exact) = GroupKey::Stream(topic).selector() else {
                continue;
            };
            if let Err(e) = self.hub.subscribe(client, &exact, start, |_, _| {}).await {
                self.reply(encode::error(&e.to_string()));
            }
        }
        lock(&self.session).prune();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(password: Option<&str>) -> LoveSettings {
        let mut config = Config::default();
        config.frontend.tokens = vec!["t".into()];
        config.frontend.love_password = password.map(String::from);
        LoveSettings::new(&config, Arc::new(meridian_store::memory::MemoryStore::new()))
    }

    #[test]
    fn tokens_admit_browsers_and_the_password_admits_producers() {
        let s = settings(Some("pw"));
        assert_eq!(admit(&s, Some("t"), None), Ok(false));
        assert_eq!(admit(&s, None, Some("pw")), Ok(true));
        assert_eq!(admit(&s, Some("t"), Some("pw")), Ok(true));
        assert!(admit(&s, Some("x"), None)
            .unwrap_err()
            .contains("frontend.tokens"));
        assert!(admit(&s, None, Some("x"))
            .unwrap_err()
            .contains("frontend.love_password"));
        assert!(admit(&s, None, None).unwrap_err().contains("missing token"));
        let closed = settings(None);
        assert!(admit(&closed, None, Some("pw")).unwrap_err().contains("not set"));
    }

    #[test]
    fn messages_are_classified_and_errors_name_the_field_or_limit() {
        let s = settings(Some("pw"));
        let big = format!(
            r#"{{"x":"{}"}}"#,
            "a".repeat(meridian_proto::browser::MAX_CLIENT_MESSAGE_LEN)
        );
        assert!(read(&big, false, &s)
            .unwrap_err()
            .contains("MAX_CLIENT_MESSAGE_LEN"));
        assert!(read("{nope", false, &s).unwrap_err().starts_with("not JSON"));
        assert!(read(r#"{"category":"event","data":[]}"#, false, &s)
            .unwrap_err()
            .contains("?password="));
        assert!(matches!(
            read(r#"{"category":"event","data":[],"producer_snd":NaN}"#, true, &s),
            Ok(Some(Request::Publish(_)))
        ));
        assert!(matches!(
            read(r#"{"action":"get_time_data","request_time":1}"#, false, &s),
            Ok(Some(Request::Time(_)))
        ));
        assert!(matches!(read(r#"{"heartbeat":"Producer"}"#, true, &s), Ok(None)));
        assert!(read(r#"{"heartbeat":"Commander"}"#, false, &s)
            .unwrap_err()
            .contains("?password="));
    }
}
