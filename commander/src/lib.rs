//! The commander: an HTTP API that relays operators' commands to CSCs,
//! returns or streams their acknowledgements, and keeps an audit log of
//! every request.
//!
//! It reaches CSCs only through the [`meridian_sim::Middleware`] boundary
//! (which also gives each command's schema, checked before anything is
//! sent) and keeps its audit log in the [`meridian_store::Store`]
//! (Redis streams, or the in-memory store in `meridian up`). It must not
//! know about producers, ingest or browsers' WebSocket sessions.
//!
//! Routes (the OpenAPI document `commander/openapi.json`, served at
//! `GET /openapi.json`, describes each; a test keeps it equal to
//! [`routes::ROUTES`]):
//! - `POST /cmd/` — the replaced system's: `{"csc", "salindex", "cmd":
//!   "cmd_<name>", "params", "identity"}` → `200 {"ack": "<result>"}`;
//!   every failure is JSON `{"ack": reason, "error": code, "field"?}` with
//!   400/401/403/404/409/429/503/504.
//! - `POST /v1/commands` — native: `{"csc", "salindex", "command",
//!   "params", "identity"}` → `200` and one JSON line per acknowledgement
//!   (`sent`, `in_progress`, then `complete` / `failed` / `timeout`).
//! - `GET /v1/audit?since=&until=&after=&limit=` — audit entries.
//! - `GET /healthz`, `GET /readyz`, `GET /metrics` (Prometheus), `GET /openapi.json`.
//!
//! Every route but the last four needs `Authorization: Bearer <token>`
//! (or `Token <token>`) from `commander.tokens`, is rate limited per token
//! (and, for failed authentications, per client address, checked before
//! the token is compared),
//! and runs in a tracing span with the peer, token name, CSC and command.
//!
//! Layout, each module using only those below it (the crate root binds and
//! runs the server):
//! - [`routes`]: the route table, the router and the handlers.
//! - [`observer`]: [`CommanderObserver`], the counters as Prometheus families, and readiness.
//! - [`relay`]: one command request from arrival to audit entry (checks, send, acknowledgements, timeout).
//! - [`params`]: parameters checked against the command's schema.
//! - [`request`]: the two request bodies, read into one request.
//! - [`state`]: [`AppState`], what every request shares, and its counters.
//! - [`audit`]: audit entries in the store: write, read by time.
//! - [`auth`]: tokens and their scopes.
//! - [`refusal`]: requests refused without a valid token: counted, logged and audited sampled.
//! - [`rate`]: the token buckets, per token and per client address.
//! - [`error`]: [`RequestError`], every failure as a status and a JSON body; [`MAX_BODY_BYTES`].

pub mod audit;
pub mod auth;
pub mod error;
pub mod observer;
pub mod params;
pub mod rate;
pub mod refusal;
pub mod relay;
pub mod request;
pub mod routes;
pub mod state;

pub use error::{RequestError, MAX_BODY_BYTES};
pub use observer::CommanderObserver;
pub use state::{AppState, CommanderStats};

use meridian_config::Config;
use meridian_sim::Middleware;
use meridian_store::Store;
use std::future::IntoFuture;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How long a shutdown waits for open requests and commands in flight to
/// finish (and be audited) before closing them.
pub const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(10);

/// Why the commander could not start or serve.
#[derive(Debug, thiserror::Error)]
pub enum CommanderError {
    /// The listen address could not be bound: is another process using `commander.listen`?
    #[error("cannot listen on {addr} (commander.listen): {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    /// The server stopped on an I/O error: restart it.
    #[error("commander server failed: {0}")]
    Serve(std::io::Error),
}

/// A bound commander; [`Commander::run`] serves it.
pub struct Commander {
    listener: tokio::net::TcpListener,
    state: Arc<AppState>,
}

impl Commander {
    /// Binds `commander.listen` (port 0 picks a free port). Commands go to
    /// `middleware`; the audit log goes to `store`.
    pub async fn bind(
        config: &Config,
        middleware: Arc<dyn Middleware>,
        store: Arc<dyn Store>,
    ) -> Result<Commander, CommanderError> {
        let addr = config.commander.listen;
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| CommanderError::Bind { addr, source })?;
        let tokens = auth::Tokens::from_config(&config.commander);
        if tokens.is_empty() {
            tracing::warn!("commander.tokens is empty: every command will be refused (401)");
        }
        Ok(Commander {
            listener,
            state: Arc::new(AppState {
                middleware,
                config: config.commander.clone(),
                tokens,
                limiter: rate::RateLimiter::default(),
                addresses: rate::AddressLimiter::default(),
                refusals: refusal::Refusals::default(),
                audit: audit::AuditLog::new(
                    store,
                    config.commander.audit_maxlen,
                    std::time::Duration::from_secs(u64::from(config.commander.audit_retention_days) * 86_400),
                ),
                commands: TaskTracker::new(),
                stats: CommanderStats::default(),
                allowed_origins: config.frontend.allowed_origins.clone(),
            }),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().unwrap_or(([0, 0, 0, 0], 0).into())
    }

    /// What the process's metrics listener serves for this commander.
    pub fn observer(&self) -> Arc<CommanderObserver> {
        Arc::new(CommanderObserver {
            state: self.state.clone(),
        })
    }

    /// Serves until `shutdown`; then stops accepting, lets open requests and
    /// commands in flight finish and be audited, for at most
    /// [`SHUTDOWN_DEADLINE`].
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), CommanderError> {
        let addr = self.listener.local_addr().map_err(CommanderError::Serve)?;
        tracing::info!(%addr, "commander listening (HTTP)");
        let app = routes::router(self.state.clone());
        let serve = axum::serve(
            self.listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(shutdown.clone().cancelled_owned())
        .into_future();
        let deadline = async {
            shutdown.cancelled().await;
            tokio::time::Instant::now() + SHUTDOWN_DEADLINE
        };
        tokio::pin!(serve);
        let deadline = tokio::select! {
            served = &mut serve => {
                served.map_err(CommanderError::Serve)?;
                tokio::time::Instant::now() + SHUTDOWN_DEADLINE
            }
            at = deadline => {
                match tokio::time::timeout_at(at, &mut serve).await {
                    Ok(served) => served.map_err(CommanderError::Serve)?,
                    Err(_) => tracing::warn!("requests still open at the shutdown deadline: closed"),
                }
                at
            }
        };
        let commands = &self.state.commands;
        commands.close();
        if tokio::time::timeout_at(deadline, commands.wait()).await.is_err() {
            tracing::error!(
                in_flight = commands.len(),
                "commands still in flight at the shutdown deadline: their outcome is not audited"
            );
        }
        tracing::info!("commander stopped");
        Ok(())
    }
}
