//! The frontend role: streams subscribed topics to browsers over WebSocket.
//!
//! Each frontend manager reads each watched stream from the store once,
//! however many browsers watch it ([`hub`]), decodes each entry once and
//! hands the same `Arc` to every subscriber's inbox; each protocol encodes
//! it once. A stream is read only while at least one browser watches it.
//!
//! Endpoints: `GET /ws` (native protocol, `docs/protocol.md`),
//! `GET /manager/…/ws/subscription/` (the replaced system's protocol, for
//! its unchanged browser client and producers, mounted from [`crate::love`]),
//! `GET /` (the dashboard, [`dashboard`]), `GET /healthz`, `GET /readyz` and
//! `GET /metrics` (Prometheus; unless `frontend.browser_metrics = false`, then
//! only on `metrics.listen`). WebSocket upgrades from pages of other origins
//! are refused ([`origin`]).
//!
//! Bounds (see [`inbox`]): telemetry is conflated to one value per topic
//! per browser; events queue up to `frontend.client_queue` /
//! `frontend.client_bytes`, past which that browser is told what it lost
//! and from which id to recover; a browser that stays too slow for
//! `frontend.slow_timeout_ms` is disconnected with a reason.
//!
//! Scaling out ([`balance`]): each manager publishes its load in the store;
//! one above its share asks some browsers to reconnect (to any manager), and
//! on shutdown a manager drains: every browser is told to reconnect
//! elsewhere, then, after `frontend.drain_grace_ms`, closed with 1001.
//!
//! Layout, in the one direction dependencies go (each uses only those below it):
//! - `client`: a native-protocol connection (session; the LOVE session,
//!   [`crate::love`], sits beside it and uses what is below); `balance`: load
//!   publishing, rebalancing hints and drain; `websocket`: how a browser's
//!   WebSocket is opened, for every protocol.
//! - [`hub`]: the shared reader, subscriptions, replay and history (the I/O).
//! - `fanout`: the fan-out core: who gets which samples each tick (no I/O).
//! - `inbox`: one browser's bounded queue.
//! - `sample`: a stored entry decoded once; `stats`: the counters; `edge`:
//!   close codes and the drain signal.
//! - [`dashboard`]: the built dashboard at `/` and its `/dashboard-config.json`.
//! - [`origin`]: which pages may open a WebSocket (`frontend.allowed_origins`).

mod balance;
pub(crate) mod client;
pub mod dashboard;
mod edge;
mod fanout;
pub mod hub;
pub(crate) mod inbox;
pub mod origin;
mod plot;
pub(crate) mod sample;
mod stats;
pub(crate) mod websocket;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use futures_util::StreamExt;
use meridian_config::Config;
use meridian_proto::browser::{ClientRequest, FrameFormat, Scope};
use meridian_proto::metrics::{Exposition, Observe, ReadyCheck};
use meridian_store::Store;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use websocket::{small, upgrade};

pub use edge::{
    Edge, AUTH_FAILURE_BURST, AUTH_FAILURE_PER_S, CLOSE_BAD_REQUEST, CLOSE_GOING_AWAY, CLOSE_LAGGED,
    CLOSE_UNAUTHORIZED,
};
pub use stats::HubStats;

/// How long a browser that connected without a token in its URL has to send `{"op":"auth"}`.
pub const AUTH_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the frontend role could not start.
#[derive(Debug, thiserror::Error)]
pub enum FrontendError {
    /// The listen address could not be bound: is another process using `frontend.listen`?
    #[error("cannot listen on {addr} (frontend.listen): {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("frontend server failed: {0}")]
    Serve(std::io::Error),
    /// The hub's thread could not start (the process is out of threads or memory).
    #[error("cannot start the frontend's hub thread: {0}")]
    Hub(std::io::Error),
}

/// Tokens and the scope each grants.
struct Auth {
    read: Vec<String>,
    command: Vec<String>,
}

impl Auth {
    fn scope(&self, token: &str) -> Option<Scope> {
        if self.command.iter().any(|t| t == token) {
            Some(Scope::Command)
        } else if self.read.iter().any(|t| t == token) {
            Some(Scope::Read)
        } else {
            None
        }
    }
}

struct AppState {
    hub: hub::Hub,
    auth: Auth,
    settings: Arc<client::Settings>,
    edge: Edge,
    /// Every browser connection, so a drain can wait for them.
    connections: TaskTracker,
}

/// A bound frontend; [`Frontend::run`] serves it.
pub struct Frontend {
    listener: tokio::net::TcpListener,
    config: Config,
    store: Arc<dyn Store>,
    /// Stops the hub's thread when the frontend stops or is dropped unrun.
    hub_stop: tokio_util::sync::DropGuard,
    hub: hub::Hub,
}

impl Frontend {
    /// Binds `frontend.listen` (port 0 picks a free port).
    pub async fn bind(config: &Config, store: Arc<dyn Store>) -> Result<Frontend, FrontendError> {
        let addr = config.frontend.listen;
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| FrontendError::Bind { addr, source })?;
        let hub_stop = CancellationToken::new();
        let hub =
            hub::Hub::start(store.clone(), &config.frontend, hub_stop.clone()).map_err(FrontendError::Hub)?;
        Ok(Frontend {
            listener,
            config: config.clone(),
            store,
            hub_stop: hub_stop.drop_guard(),
            hub,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().unwrap_or(self.config.frontend.listen)
    }

    /// The hub (subscriptions, watched streams), for tests and metrics.
    pub fn hub(&self) -> hub::Hub {
        self.hub.clone()
    }

    /// The hub's counters (entries read from the store, deliveries), for tests and metrics.
    pub fn stats(&self) -> Arc<HubStats> {
        self.hub.stats()
    }

    /// What the process's metrics listener serves for this frontend (the
    /// same as its own `/metrics` and `/readyz`).
    pub fn observer(&self) -> Arc<FrontendObserver> {
        Arc::new(FrontendObserver {
            hub: self.hub.clone(),
        })
    }

    /// Serves browsers until `shutdown`, then drains: every browser is told
    /// to reconnect elsewhere and, after `frontend.drain_grace_ms`, closed.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), FrontendError> {
        let fc = &self.config.frontend;
        let server = balance::server_id(self.local_addr());
        let edge = Edge::new();
        let state = Arc::new(AppState {
            hub: self.hub.clone(),
            auth: Auth {
                read: fc.tokens.clone(),
                command: fc.command_tokens.clone(),
            },
            settings: Arc::new(client::Settings {
                limits: inbox::Limits {
                    events: fc.client_queue,
                    bytes: fc.client_bytes,
                    slow_timeout: Duration::from_millis(fc.slow_timeout_ms),
                },
                tick: Duration::from_millis(fc.tick_ms),
                tai_utc: fc.tai_utc_offset_s,
                server: server.clone(),
            }),
            edge: edge.clone(),
            connections: TaskTracker::new(),
        });
        let tokens: Vec<String> = fc.tokens.iter().chain(&fc.command_tokens).cloned().collect();
        let balancer = balance::Balancer::new(self.store.clone(), self.hub.clone(), fc, server.clone());
        let balance_task = tokio::spawn(balancer.clone().run(shutdown.clone()));
        let mut routes = Router::new()
            .route("/ws", get(ws_upgrade))
            .route("/healthz", get(|| async { "ok" }))
            .route("/readyz", get(readyz));
        if fc.browser_metrics {
            routes = routes.route("/metrics", get(metrics));
        }
        let app = routes
            .with_state(state.clone())
            .merge(crate::love::router(
                &self.config,
                self.store.clone(),
                self.hub.clone(),
                edge.clone(),
                state.connections.clone(),
            ))
            .merge(dashboard::router(dashboard::Dashboard::new(
                fc.dashboard_dir.clone(),
                fc.commander_url.clone(),
                self.store.clone(),
                tokens,
            )))
            .layer(axum::middleware::from_fn_with_state(
                origin::AllowedOrigins(Arc::new(fc.allowed_origins.clone())),
                origin::check,
            ));
        tracing::info!(addr = %self.local_addr(), %server, "frontend listening (HTTP, WebSocket /ws)");
        axum::serve(
            self.listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(shutdown.clone().cancelled_owned())
        .await
        .map_err(FrontendError::Serve)?;

        // Drain: no new browsers now; tell the ones here to move, give them
        // the grace period, then close whoever is left.
        let grace = Duration::from_millis(fc.drain_grace_ms);
        let clients = balancer.drain(grace).await;
        state.connections.close();
        if tokio::time::timeout(grace, state.connections.wait())
            .await
            .is_err()
        {
            tracing::info!("drain grace period over; closing the browsers still connected");
        }
        edge.closing.cancel();
        state.connections.wait().await;
        drop(self.hub_stop);
        let _ = balance_task.await;
        tracing::info!(clients, "frontend stopped");
        Ok(())
    }
}

/// `GET /metrics`: the frontend's counters in Prometheus text.
async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    use meridian_proto::metrics::CONTENT_TYPE;
    let mut page = Exposition::new();
    FrontendObserver {
        hub: state.hub.clone(),
    }
    .metrics(&mut page);
    ([(axum::http::header::CONTENT_TYPE, CONTENT_TYPE)], page.finish()).into_response()
}

async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    match state.hub.store_ok() {
        true => (StatusCode::OK, "ready").into_response(),
        false => (StatusCode::SERVICE_UNAVAILABLE, "store unreachable").into_response(),
    }
}

/// The frontend role as the process's metrics listener sees it: the hub's
/// counters, and ready while its store reads succeed.
pub struct FrontendObserver {
    hub: hub::Hub,
}

impl Observe for FrontendObserver {
    fn role(&self) -> &'static str {
        "frontend"
    }

    fn metrics(&self, page: &mut Exposition) {
        use std::sync::atomic::Ordering::Relaxed;
        let stats = self.hub.stats();
        page.gauge(
            "meridian_frontend_clients",
            "Browsers connected.",
            self.hub.clients() as f64,
        )
        .gauge(
            "meridian_frontend_watched_streams",
            "Store streams read (one per watched topic, whatever the number of browsers).",
            self.hub.watched_streams() as f64,
        )
        .counter(
            "meridian_frontend_entries_read_total",
            "Stream entries read from the store.",
            stats.entries_read.load(Relaxed),
        )
        .counter(
            "meridian_frontend_deliveries_total",
            "Samples handed to browsers' queues.",
            stats.deliveries.load(Relaxed),
        )
        .counter(
            "meridian_frontend_ticks_built_total",
            "Batches built: one per tick per set of browsers with the same live topics, shared by all of them.",
            stats.ticks_built.load(Relaxed),
        )
        .counter(
            "meridian_frontend_ticks_skipped_total",
            "Batches a browser that fell behind skipped because newer ones it had queued carried all their topics.",
            stats.ticks_skipped.load(Relaxed),
        )
        .counter(
            "meridian_frontend_ticks_folded_total",
            "Batches a browser that fell behind took into its own queue (telemetry conflated, events kept).",
            stats.ticks_folded.load(Relaxed),
        )
        .counter(
            "meridian_frontend_events_lost_total",
            "Events not sent to browsers whose queue was full (each browser was told).",
            stats.events_lost.load(Relaxed),
        )
        .gauge(
            "meridian_frontend_inbox_bytes_max",
            "Most bytes one browser's queue has held (bound: frontend.client_bytes).",
            stats.inbox_bytes_max.load(Relaxed) as f64,
        )
        .histograms(
            "meridian_frontend_hop_lag_seconds",
            "Lag of one hop: store_to_frontend = read by this frontend minus stored by the ingest (per live \
             sample); frontend_to_browser = from a data frame's oldest sample being read to the browser's socket \
             taking the frame (per frame).",
            "hop",
            &[
                ("store_to_frontend", &stats.store_to_frontend),
                ("frontend_to_browser", &stats.frontend_to_browser),
            ],
        )
        .gauge(
            "meridian_frontend_store_up",
            "1 while store reads succeed.",
            f64::from(u8::from(self.hub.store_ok())),
        );
    }

    fn ready(&self) -> ReadyCheck<'_> {
        let ok = self.hub.store_ok();
        Box::pin(async move {
            match ok {
                true => Ok(()),
                false => Err("store unreachable".to_string()),
            }
        })
    }
}

#[derive(serde::Deserialize)]
struct WsQuery {
    token: Option<String>,
    /// `json` (default) or `msgpack`: how the native protocol's data frames are encoded.
    format: Option<String>,
}

async fn ws_upgrade(
    State(state): State<Arc<AppState>>,
    axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<SocketAddr>,
    Query(query): Query<WsQuery>,
    ws: WebSocketUpgrade,
) -> Response {
    let span = tracing::info_span!("browser", %peer, protocol = "native");
    let connections = state.connections.clone();
    upgrade(small(ws), &connections, span, move |socket| async move {
        let format = match query.format.as_deref().map(str::parse::<FrameFormat>).transpose() {
            Ok(format) => format.unwrap_or_default(),
            Err(reason) => return client::refuse(socket, CLOSE_BAD_REQUEST, &reason).await,
        };
        if let Err(reason) = state.edge.may_try(peer.ip()) {
            tracing::info!("browser refused: too many wrong tokens from its address");
            return client::refuse(socket, CLOSE_UNAUTHORIZED, &reason).await;
        }
        let Some((socket, scope)) = authenticate(socket, query.token, &state.auth, &state.edge, peer).await
        else {
            return;
        };
        let settings = state.settings.clone();
        client::serve(
            socket,
            state.hub.clone(),
            scope,
            format,
            settings,
            state.edge.clone(),
        )
        .await
    })
}

/// The scope of a connection's token, from its URL or, failing that, its
/// first message (`{"op":"auth","token":…}`); a missing or wrong token is
/// refused with [`CLOSE_UNAUTHORIZED`] and a reason.
async fn authenticate(
    mut socket: WebSocket,
    url_token: Option<String>,
    auth: &Auth,
    edge: &Edge,
    peer: SocketAddr,
) -> Option<(WebSocket, Scope)> {
    let token = match url_token {
        Some(t) => t,
        None => match tokio::time::timeout(AUTH_TIMEOUT, first_text(&mut socket)).await {
            Ok(Some(text)) => match ClientRequest::parse(&text) {
                Ok(ClientRequest::Auth { token }) => token,
                _ => {
                    let reason = "missing token: connect to /ws?token=<token> or send {\"op\":\"auth\",\"token\":…} first";
                    client::refuse(socket, CLOSE_UNAUTHORIZED, reason).await;
                    return None;
                }
            },
            Ok(None) => return None,
            Err(_) => {
                client::refuse(
                    socket,
                    CLOSE_UNAUTHORIZED,
                    "missing token: no auth message within 10 s",
                )
                .await;
                return None;
            }
        },
    };
    match auth.scope(&token) {
        Some(scope) => Some((socket, scope)),
        None => {
            edge.failed(peer.ip());
            tracing::info!("browser refused: token not accepted");
            client::refuse(
                socket,
                CLOSE_UNAUTHORIZED,
                "token not accepted by this frontend (frontend.tokens)",
            )
            .await;
            None
        }
    }
}

async fn first_text(socket: &mut WebSocket) -> Option<String> {
    loop {
        match socket.next().await? {
            Ok(Message::Text(t)) => return Some(t.to_string()),
            Ok(Message::Ping(_) | Message::Pong(_)) => continue,
            Ok(Message::Binary(_)) => return Some(String::new()),
            _ => return None,
        }
    }
}
