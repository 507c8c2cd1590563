//! The commander: an HTTP API that relays operators' commands to CSCs and
//! returns their acknowledgement.
//!
//! It reaches CSCs only through the [`meridian_sim::Middleware`] boundary and
//! knows nothing of the store or of producers.
//!
//! Routes:
//! - `POST /cmd/` — the replaced system's route: `{"csc", "salindex", "cmd": "cmd_<name>", "params"}`
//!   → `200 {"ack": "<result>"}`; errors come back as JSON `{"ack": "<reason>"}` with a 4xx/5xx status.
//! - `GET /healthz`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use meridian_config::Config;
use meridian_proto::{CscId, Value};
use meridian_sim::{AckState, Middleware, MiddlewareError};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Why the commander could not start.
#[derive(Debug, thiserror::Error)]
pub enum CommanderError {
    /// The listen address could not be bound: is another process using `commander.listen`?
    #[error("cannot listen on {addr} (commander.listen): {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("commander server failed: {0}")]
    Serve(std::io::Error),
}

/// A refused or failed command, as the HTTP status and `{"ack": reason}` body.
#[derive(Debug, thiserror::Error)]
enum CommandError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    UnknownCsc(String),
    #[error("{0}")]
    Failed(String),
    #[error("{0}")]
    Timeout(String),
}

impl IntoResponse for CommandError {
    fn into_response(self) -> Response {
        let status = match self {
            CommandError::BadRequest(_) => StatusCode::BAD_REQUEST,
            CommandError::UnknownCsc(_) => StatusCode::NOT_FOUND,
            CommandError::Failed(_) => StatusCode::CONFLICT,
            CommandError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
        };
        (status, Json(serde_json::json!({ "ack": self.to_string() }))).into_response()
    }
}

struct AppState {
    middleware: Arc<dyn Middleware>,
    timeout: Duration,
}

/// A bound commander; [`Commander::run`] serves it.
pub struct Commander {
    listener: tokio::net::TcpListener,
    state: Arc<AppState>,
}

impl Commander {
    /// Binds `commander.listen` (port 0 picks a free port).
    pub async fn bind(config: &Config, middleware: Arc<dyn Middleware>) -> Result<Commander, CommanderError> {
        let addr = config.commander.listen;
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| CommanderError::Bind { addr, source })?;
        let timeout = Duration::from_millis(config.commander.command_timeout_ms);
        Ok(Commander {
            listener,
            state: Arc::new(AppState { middleware, timeout }),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().unwrap_or(([0, 0, 0, 0], 0).into())
    }

    /// Serves until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), CommanderError> {
        let app = Router::new()
            .route("/cmd/", post(command))
            .route("/healthz", get(|| async { "ok" }))
            .with_state(self.state);
        tracing::info!(addr = %self.listener.local_addr().map_err(CommanderError::Serve)?, "commander listening (HTTP)");
        axum::serve(self.listener, app)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await
            .map_err(CommanderError::Serve)
    }
}

/// `POST /cmd/`: validates the request, sends the command, returns the final ack.
async fn command(
    State(state): State<Arc<AppState>>,
    body: axum::body::Bytes,
) -> Result<Json<serde_json::Value>, CommandError> {
    let request: serde_json::Value = serde_json::from_slice(&body)
        .map_err(|e| CommandError::BadRequest(format!("request body is not JSON: {e}")))?;
    let field = |name: &str| {
        request.get(name).ok_or_else(|| {
            CommandError::BadRequest(format!(
                "Request must have JSON data with the following keys: csc, salindex, cmd, params. Missing: {name}"
            ))
        })
    };
    let csc_name = field("csc")?
        .as_str()
        .ok_or_else(|| CommandError::BadRequest("csc: expected a string".into()))?;
    let salindex = match field("salindex")? {
        serde_json::Value::Number(n) => n.as_u64(),
        serde_json::Value::String(s) => s.parse().ok(),
        _ => None,
    }
    .and_then(|i| u32::try_from(i).ok())
    .ok_or_else(|| CommandError::BadRequest("salindex: expected a non-negative integer".into()))?;
    let cmd = field("cmd")?
        .as_str()
        .ok_or_else(|| CommandError::BadRequest("cmd: expected a string".into()))?;
    let name = cmd.strip_prefix("cmd_").unwrap_or(cmd);
    let params = match field("params")? {
        serde_json::Value::Object(map) => map
            .iter()
            .map(|(k, v)| {
                Value::from_json(v).map(|v| (k.clone(), v)).ok_or_else(|| {
                    CommandError::BadRequest(format!(
                        "params.{k}: expected a number, boolean, string or array of them"
                    ))
                })
            })
            .collect::<Result<Vec<_>, _>>()?,
        _ => return Err(CommandError::BadRequest("params: expected an object".into())),
    };
    let csc = CscId::new(csc_name, salindex).map_err(|e| CommandError::BadRequest(format!("csc: {e}")))?;
    let acks = state
        .middleware
        .command(&csc, name, params, state.timeout)
        .await
        .map_err(|e| match e {
            MiddlewareError::UnknownCsc(_) => CommandError::UnknownCsc(e.to_string()),
            MiddlewareError::BadCommand(_) => CommandError::BadRequest(e.to_string()),
            MiddlewareError::Busy(_) => CommandError::Failed(e.to_string()),
        })?;
    let ack = acks.final_ack().await;
    tracing::info!(%csc, command = name, state = ?ack.state, result = %ack.result, "command");
    match ack.state {
        AckState::Complete => Ok(Json(serde_json::json!({ "ack": ack.result }))),
        AckState::Failed => Err(CommandError::Failed(ack.result)),
        AckState::Timeout | AckState::InProgress => Err(CommandError::Timeout(format!(
            "Command time out. No ack received from component. {}",
            ack.result
        ))),
    }
}
