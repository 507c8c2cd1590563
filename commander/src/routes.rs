//! The HTTP routes: one table, [`ROUTES`], builds the router and is what
//! the OpenAPI document (`commander/openapi.json`, served at
//! `/openapi.json`) is checked against, so the two cannot drift apart.

use crate::audit::{AuditQuery, MAX_PAGE};
use crate::error::RequestError;
use crate::error::MAX_BODY_BYTES;
use crate::observer::CommanderObserver;
use crate::relay::{self, Event, Progress, Submission};
use crate::request::Dialect;
use crate::state::AppState;
use axum::body::{Body, Bytes};
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{ConnectInfo, DefaultBodyLimit, Query, State};
use axum::http::{header, HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{on, MethodFilter, MethodRouter};
use axum::{Json, Router};
use meridian_proto::StreamId;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::mpsc;
use tracing::Instrument;

/// The OpenAPI 3 document of this API, checked in beside the crate.
pub const OPENAPI_JSON: &str = include_str!("../openapi.json");

/// What a route does; every variant has exactly one handler (see [`router`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// The replaced system's command route.
    LoveCommand,
    /// The native command route, streaming acknowledgements.
    Command,
    /// Audit entries by time range.
    Audit,
    /// This API's OpenAPI document.
    OpenApi,
    /// The process is up.
    Healthz,
    /// Middleware and store are reachable.
    Readyz,
    /// Counters in Prometheus text.
    Metrics,
}

/// One served route.
#[derive(Debug, Clone, Copy)]
pub struct Route {
    /// `"GET"` or `"POST"`.
    pub method: &'static str,
    pub path: &'static str,
    pub endpoint: Endpoint,
}

/// Every route the commander serves, and nothing else.
pub const ROUTES: &[Route] = &[
    Route {
        method: "POST",
        path: "/cmd/",
        endpoint: Endpoint::LoveCommand,
    },
    Route {
        method: "POST",
        path: "/v1/commands",
        endpoint: Endpoint::Command,
    },
    Route {
        method: "GET",
        path: "/v1/audit",
        endpoint: Endpoint::Audit,
    },
    Route {
        method: "GET",
        path: "/openapi.json",
        endpoint: Endpoint::OpenApi,
    },
    Route {
        method: "GET",
        path: "/healthz",
        endpoint: Endpoint::Healthz,
    },
    Route {
        method: "GET",
        path: "/readyz",
        endpoint: Endpoint::Readyz,
    },
    Route {
        method: "GET",
        path: "/metrics",
        endpoint: Endpoint::Metrics,
    },
];

/// The router of [`ROUTES`]; anything else is a JSON 404 or 405.
pub fn router(state: Arc<AppState>) -> Router {
    let mut paths: Vec<(&str, MethodRouter<Arc<AppState>>)> = Vec::new();
    for route in ROUTES {
        // The table holds only methods that parse.
        let method: Method = route.method.parse().unwrap_or(Method::GET);
        let filter = MethodFilter::try_from(method).unwrap_or(MethodFilter::GET);
        let handler: MethodRouter<Arc<AppState>> = match route.endpoint {
            Endpoint::LoveCommand => on(filter, love_command),
            Endpoint::Command => on(filter, command),
            Endpoint::Audit => on(filter, audit),
            Endpoint::OpenApi => on(filter, openapi),
            Endpoint::Healthz => on(filter, healthz),
            Endpoint::Readyz => on(filter, readyz),
            Endpoint::Metrics => on(filter, metrics),
        };
        match paths.iter().position(|(p, _)| *p == route.path) {
            Some(i) => {
                let (path, existing) = paths.swap_remove(i);
                paths.push((path, existing.merge(handler)));
            }
            None => paths.push((route.path, handler)),
        }
    }
    let mut router = Router::new();
    for (path, handler) in paths {
        router = router.route(path, handler);
    }
    router
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn_with_state(state.clone(), cors))
        .with_state(state)
}

/// Lets pages of another origin (the dashboard, served by a frontend
/// manager) call this API: answers CORS preflights and marks responses
/// readable by the origins of `frontend.allowed_origins` (the same list the
/// frontend checks WebSocket upgrades against; `"*"` any). With that list
/// empty (the default), any origin: credentials are a bearer token the page
/// must already hold, never a cookie the browser would attach by itself.
/// A request of an origin not listed is still answered, without CORS
/// headers, so its page cannot read the answer.
async fn cors(
    State(state): State<Arc<AppState>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let allow = if state.allowed_origins.is_empty() {
        Some(header::HeaderValue::from_static("*"))
    } else {
        request
            .headers()
            .get(header::ORIGIN)
            .filter(|o| {
                o.to_str()
                    .is_ok_and(|o| meridian_config::frontend::origin_listed(&state.allowed_origins, o))
            })
            .cloned()
    };
    let preflight = request.method() == Method::OPTIONS
        && request
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    let mut response = if preflight {
        StatusCode::NO_CONTENT.into_response()
    } else {
        next.run(request).await
    };
    let h = response.headers_mut();
    if !state.allowed_origins.is_empty() {
        h.insert(header::VARY, header::HeaderValue::from_static("Origin"));
    }
    let Some(allow) = allow else {
        return response;
    };
    h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, allow);
    h.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        header::HeaderValue::from_static("Retry-After"),
    );
    if preflight {
        h.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            header::HeaderValue::from_static("GET, POST"),
        );
        h.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            header::HeaderValue::from_static("Authorization, Content-Type"),
        );
        h.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            header::HeaderValue::from_static("600"),
        );
    }
    response
}

async fn not_found(method: Method, uri: Uri) -> RequestError {
    RequestError::NotFound(format!("no route {method} {}; see /openapi.json", uri.path()))
}

async fn method_not_allowed(method: Method, uri: Uri) -> RequestError {
    let allowed: Vec<&str> = ROUTES
        .iter()
        .filter(|r| r.path == uri.path())
        .map(|r| r.method)
        .collect();
    RequestError::MethodNotAllowed(format!(
        "{} does not accept {method}; it accepts {}",
        uri.path(),
        allowed.join(", ")
    ))
}

fn body_or_error(body: Result<Bytes, BytesRejection>) -> Result<Bytes, RequestError> {
    body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            RequestError::PayloadTooLarge
        } else {
            RequestError::BadRequest {
                field: None,
                message: "the request body could not be read".into(),
            }
        }
    })
}

/// Starts [`relay::process`] as a tracked task in its request span.
fn submit(
    state: &Arc<AppState>,
    dialect: Dialect,
    route: &'static str,
    peer: SocketAddr,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> mpsc::Receiver<Event> {
    let submission = Submission {
        dialect,
        route,
        peer: peer.ip(),
        headers,
        body: body_or_error(body),
        arrived: Instant::now(),
    };
    let span = tracing::info_span!(
        "request",
        route,
        peer = %peer.ip(),
        token = tracing::field::Empty,
        csc = tracing::field::Empty,
        command = tracing::field::Empty,
    );
    // A handful of acknowledgements per command: never full for long.
    let (tx, rx) = mpsc::channel(16);
    state
        .commands
        .spawn(relay::process(state.clone(), submission, tx).instrument(span));
    rx
}

/// `POST /cmd/`: the replaced system's route. Waits for the final
/// acknowledgement: `200 {"ack": result}`, or an error with `ack` saying why.
async fn love_command(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let mut events = submit(&state, Dialect::Love, "/cmd/", peer, headers, body);
    while let Some(event) = events.recv().await {
        match event {
            Event::Rejected(error) => return error.into_love_response(),
            Event::Progress(Progress::Complete { result, .. }) => {
                return Json(serde_json::json!({ "ack": result })).into_response()
            }
            Event::Progress(Progress::Failed { reason, .. }) => {
                return RequestError::Refused(reason).into_love_response()
            }
            Event::Progress(Progress::Timeout { reason, .. }) => {
                return RequestError::Timeout(reason).into_love_response()
            }
            Event::Progress(Progress::Sent { .. } | Progress::InProgress { .. }) => {}
        }
    }
    // The task ended without an outcome: it panicked (and logged why).
    RequestError::Unavailable("the command's outcome is unknown: check the CSC".into()).into_love_response()
}

/// `POST /v1/commands`: refusals as a JSON error; once sent, `200` with one
/// JSON line per acknowledgement (`application/x-ndjson`), the last final.
async fn command(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let mut events = submit(&state, Dialect::Native, "/v1/commands", peer, headers, body);
    let first = match events.recv().await {
        Some(Event::Progress(progress)) => progress,
        Some(Event::Rejected(error)) => return error.into_response(),
        None => {
            return RequestError::Unavailable("the command's outcome is unknown: check the CSC".into())
                .into_response()
        }
    };
    let lines = futures_util::stream::unfold((Some(first), events), |(next, mut events)| async move {
        let progress = match next {
            Some(progress) => progress,
            None => match events.recv().await {
                Some(Event::Progress(progress)) => progress,
                // Nothing is rejected after the first event; the stream ends.
                Some(Event::Rejected(_)) | None => return None,
            },
        };
        let mut line = serde_json::to_vec(&progress).unwrap_or_default();
        line.push(b'\n');
        Some((
            Ok::<_, std::convert::Infallible>(Bytes::from(line)),
            (None, events),
        ))
    });
    (
        [
            (header::CONTENT_TYPE, "application/x-ndjson"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        Body::from_stream(lines),
    )
        .into_response()
}

/// `GET /v1/audit?since=&until=&after=&limit=`: entries by the time they
/// were written (Unix ms, inclusive), oldest first; any known token.
async fn audit(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Json<serde_json::Value>, RequestError> {
    let span =
        tracing::info_span!("request", route = "/v1/audit", peer = %peer.ip(), token = tracing::field::Empty);
    async move {
        let caller = state
            .authenticate(peer.ip(), &headers)
            .map_err(|(reason, error)| {
                state.refusals.record(reason, Instant::now());
                error
            })?;
        tracing::Span::current().record("token", caller.name.as_str());
        state.take_rate(&caller)?;
        let Query(pairs) = query.map_err(|e| RequestError::BadRequest {
            field: None,
            message: format!("the query string could not be read: {}", e.body_text()),
        })?;
        let query = audit_query(&pairs)?;
        let entries = state.audit.read(&query).await.map_err(|e| {
            tracing::warn!(error = %e, "audit log unreadable");
            RequestError::Unavailable("the audit log is unavailable; retry later".into())
        })?;
        let next = (entries.len() == query.limit)
            .then(|| entries.last().map(|e| e.id.clone()))
            .flatten();
        Ok(Json(serde_json::json!({ "entries": entries, "next": next })))
    }
    .instrument(span)
    .await
}

fn audit_query(pairs: &[(String, String)]) -> Result<AuditQuery, RequestError> {
    let mut query = AuditQuery {
        since_ms: None,
        until_ms: None,
        after: None,
        limit: 100,
    };
    for (key, value) in pairs {
        let ms = || {
            value
                .parse::<u64>()
                .map_err(|_| RequestError::field(key.clone(), "expected Unix time in milliseconds"))
        };
        match key.as_str() {
            "since" => query.since_ms = Some(ms()?),
            "until" => query.until_ms = Some(ms()?),
            "after" => {
                query.after = Some(
                    value
                        .parse::<StreamId>()
                        .map_err(|_| RequestError::field("after", "expected an entry id <ms>-<seq>"))?,
                )
            }
            "limit" => {
                query.limit = value
                    .parse::<usize>()
                    .ok()
                    .filter(|l| (1..=MAX_PAGE).contains(l))
                    .ok_or_else(|| {
                        RequestError::field("limit", format!("expected an integer from 1 to {MAX_PAGE}"))
                    })?
            }
            other => {
                return Err(RequestError::field(
                    other.to_string(),
                    "unknown parameter; expected since, until, after, limit",
                ))
            }
        }
    }
    Ok(query)
}

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI_JSON).into_response()
}

/// The commander's counters in Prometheus text.
async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    use meridian_proto::metrics::{Exposition, Observe, CONTENT_TYPE};
    let mut page = Exposition::new();
    CommanderObserver { state }.metrics(&mut page);
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], page.finish()).into_response()
}

async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok" }))
}

/// `200` when commands can be sent and audited, `503` saying which is not.
async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    let middleware = state.middleware.ready().await;
    let store = state.audit.reachable().await.map_err(|e| {
        tracing::warn!(error = %e, "readiness: the audit store is unreachable");
        "unavailable".to_string()
    });
    let ready = middleware.is_ok() && store.is_ok();
    let describe = |r: Result<(), String>| r.err().unwrap_or_else(|| "ok".into());
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = serde_json::json!({
        "status": if ready { "ready" } else { "not_ready" },
        "middleware": describe(middleware),
        "store": describe(store),
    });
    (status, Json(body)).into_response()
}
