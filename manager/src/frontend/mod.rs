//! The frontend role: streams subscribed topics to browsers over WebSocket.
//!
//! Each frontend manager reads each watched stream from the store once,
//! however many browsers watch it ([`hub`]), encodes each sample's message
//! once and hands the same bytes to every subscriber. A stream is read only
//! while at least one browser watches it.
//!
//! Endpoints: `GET /ws?token=…` (native protocol, `docs/protocol.md`),
//! `GET /` (a minimal live page) and `GET /healthz`.
//!
//! Bounds: each browser has a queue of `frontend.client_queue` messages.
//! When it is full the browser is too slow for its subscriptions: it is
//! disconnected with close code [`CLOSE_LAGGED`] and a reason, instead of
//! silently losing messages or growing memory.

mod client;
pub mod hub;

use crate::store::Store;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use meridian_config::Config;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// A small live page at `/` so a newcomer sees data flow; the dashboard replaces it.
const PAGE: &str = include_str!("page.html");

/// WebSocket close code: the client fell behind its queue bound; reconnect.
pub const CLOSE_LAGGED: u16 = 4001;
/// WebSocket close code: the client sent a malformed request; the reason says which.
pub const CLOSE_BAD_REQUEST: u16 = 4002;
/// WebSocket close code: the server is shutting down; reconnect elsewhere.
pub const CLOSE_GOING_AWAY: u16 = 1001;

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
}

struct AppState {
    hub: hub::Hub,
    tokens: Vec<String>,
    client_queue: usize,
    shutdown: CancellationToken,
}

/// A bound frontend; [`Frontend::run`] serves it.
pub struct Frontend {
    listener: tokio::net::TcpListener,
    config: Config,
    store: Arc<dyn Store>,
}

impl Frontend {
    /// Binds `frontend.listen` (port 0 picks a free port).
    pub async fn bind(config: &Config, store: Arc<dyn Store>) -> Result<Frontend, FrontendError> {
        let addr = config.frontend.listen;
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| FrontendError::Bind { addr, source })?;
        Ok(Frontend {
            listener,
            config: config.clone(),
            store,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().unwrap_or(self.config.frontend.listen)
    }

    /// Serves browsers until `shutdown`, then closes their sockets with
    /// "going away" so they reconnect elsewhere.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), FrontendError> {
        let hub = hub::Hub::start(self.store.clone(), &self.config.frontend, shutdown.clone());
        let state = Arc::new(AppState {
            hub,
            tokens: self.config.frontend.tokens.clone(),
            client_queue: self.config.frontend.client_queue,
            shutdown: shutdown.clone(),
        });
        let app = Router::new()
            .route("/", get(|| async { axum::response::Html(PAGE) }))
            .route("/ws", get(ws_upgrade))
            .route("/healthz", get(|| async { "ok" }))
            .with_state(state);
        tracing::info!(addr = %self.local_addr(), "frontend listening (HTTP, WebSocket /ws)");
        axum::serve(
            self.listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
        .map_err(FrontendError::Serve)?;
        tracing::info!("frontend stopped");
        Ok(())
    }
}

#[derive(serde::Deserialize)]
struct WsQuery {
    token: Option<String>,
}

async fn ws_upgrade(
    State(state): State<Arc<AppState>>,
    axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<SocketAddr>,
    Query(query): Query<WsQuery>,
    ws: WebSocketUpgrade,
) -> Response {
    match query.token.as_deref() {
        None => {
            return (
                StatusCode::UNAUTHORIZED,
                "missing token: connect to /ws?token=<token>",
            )
                .into_response()
        }
        Some(t) if !state.tokens.iter().any(|known| known == t) => {
            return (
                StatusCode::UNAUTHORIZED,
                "token not accepted by this frontend (frontend.tokens)",
            )
                .into_response()
        }
        Some(_) => {}
    }
    // Small buffers: an idle browser costs a few KiB, not the default ~150 KiB.
    ws.read_buffer_size(4 * 1024)
        .write_buffer_size(0)
        // Requests over MAX_CLIENT_MESSAGE_LEN get a clear error from `client`; far larger ones
        // are cut off by the WebSocket layer before they are buffered.
        .max_message_size(4 * meridian_proto::browser::MAX_CLIENT_MESSAGE_LEN)
        .on_upgrade(move |socket| {
            let span = tracing::info_span!("browser", %peer);
            tracing::Instrument::instrument(
                client::serve(
                    socket,
                    state.hub.clone(),
                    state.client_queue,
                    state.shutdown.clone(),
                ),
                span,
            )
        })
}
