//! Which web pages may open a WebSocket to this frontend: a browser sends
//! the page's origin in `Origin` on every upgrade, and a page of another
//! site must not read telemetry just because its visitor can reach this
//! address. Checked on every upgrade (native `/ws` and the compatibility
//! endpoint) before any token is looked at.
//!
//! Allowed: no `Origin` at all (producers, tools and tests are not
//! browsers; they still need a token), the frontend's own origin (an
//! `Origin` whose `host[:port]` equals the request's `Host`, any scheme: a
//! page this frontend served under the address the browser used), and
//! every entry of `frontend.allowed_origins` (`"*"`: any). Everything else
//! is answered 403 with a reason naming the key.

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use meridian_config::frontend::origin_listed;
use std::sync::Arc;

/// The origins a frontend accepts besides its own (`frontend.allowed_origins`).
#[derive(Debug, Clone, Default)]
pub struct AllowedOrigins(pub Arc<Vec<String>>);

impl AllowedOrigins {
    /// Whether an upgrade with these headers may proceed.
    pub fn allows(&self, headers: &HeaderMap) -> bool {
        let Some(origin) = headers.get(header::ORIGIN) else {
            return true;
        };
        let Ok(origin) = origin.to_str() else {
            return false;
        };
        if origin_listed(&self.0, origin) {
            return true;
        }
        let authority = origin
            .strip_prefix("http://")
            .or_else(|| origin.strip_prefix("https://"))
            .map(|rest| rest.trim_end_matches('/'));
        let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
        matches!((authority, host), (Some(a), Some(h)) if a.eq_ignore_ascii_case(h))
    }
}

/// Middleware: refuses a WebSocket upgrade from a page of a foreign origin
/// with 403; every other request passes.
pub async fn check(State(allowed): State<AllowedOrigins>, request: Request, next: Next) -> Response {
    let upgrade = request
        .headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    if upgrade && !allowed.allows(request.headers()) {
        tracing::info!(
            origin = ?request.headers().get(header::ORIGIN),
            "WebSocket upgrade refused: origin not allowed"
        );
        return (
            StatusCode::FORBIDDEN,
            "origin not allowed: a page of another origin may not open a WebSocket here \
             (add it to frontend.allowed_origins)",
        )
            .into_response();
    }
    next.run(request).await
}
