//! The control-room dashboard at `/`: the files `npm run build` writes to
//! `web/dist`, served from `frontend.dashboard_dir`, and what the page
//! needs to know about its surroundings.
//!
//! Served from a directory rather than compiled in, so building the Rust
//! binary needs no Node.js, a rebuilt dashboard needs no restart, and a
//! site can serve its own build. When the directory has no `index.html`,
//! `/` answers with a page saying how to build it.
//!
//! Routes:
//! - `GET /` — `index.html` (or the build instructions).
//! - `GET /assets/{file}` — the build's hashed scripts and styles (cached for a year: a new build has new names).
//! - `GET /dashboard-config.json` — `{"commander_url", "topics": [{csc, salindex, category, topic, rate_hz}]}`:
//!   where to send commands (`frontend.commander_url`) and every topic producers declared (the store's
//!   catalog), so the page knows which CSCs exist before any sample arrives. Needs a token of
//!   `frontend.tokens` or `frontend.command_tokens`, as `?token=` or `Authorization: Bearer`
//!   (the page sends the one it was opened with); without one it is refused with 401.
//!
//! This module must not read streams or speak WebSocket: the page does that through `/ws`.

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use meridian_proto::{keys, TopicId};
use meridian_store::Store;
use std::path::PathBuf;
use std::sync::Arc;

/// Largest file served from the dashboard directory. The build is well under
/// 1 MiB; this bounds what a misconfigured directory can make one request cost.
pub const MAX_ASSET_BYTES: u64 = 16 * 1024 * 1024;

/// What `/` answers when the dashboard is not built.
const NOT_BUILT: &str = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Meridian — dashboard not built</title>
<style>body{font:15px/1.5 system-ui,sans-serif;max-width:46em;margin:3em auto;padding:0 1em}code{background:#eee;padding:0 .3em}</style>
</head><body>
<h1>Meridian is running, but its dashboard is not built</h1>
<p>This frontend serves the dashboard from <code>{DIR}</code>, which has no <code>index.html</code>.
Build it (Node.js 20 and npm are needed once):</p>
<pre><code>cd web &amp;&amp; npm ci &amp;&amp; npm run build</code></pre>
<p>or start everything with <code>./scripts/up</code>, which builds it when needed. Then reload this page.
A frontend started elsewhere than the repository's root needs <code>frontend.dashboard_dir</code> set to that directory.</p>
<p>The WebSocket API is at <code>/ws</code> (see <code>docs/protocol.md</code>); it works without the dashboard.</p>
</body></html>
"#;

/// Where the dashboard's files are and what to tell the page.
pub struct Dashboard {
    dir: PathBuf,
    commander_url: Option<String>,
    store: Arc<dyn Store>,
    /// Tokens that may read `/dashboard-config.json` (read and command tokens).
    tokens: Vec<String>,
}

impl Dashboard {
    pub fn new(
        dir: PathBuf,
        commander_url: Option<String>,
        store: Arc<dyn Store>,
        tokens: Vec<String>,
    ) -> Arc<Dashboard> {
        Arc::new(Dashboard {
            dir,
            commander_url,
            store,
            tokens,
        })
    }
}

/// The dashboard's routes, to merge into the frontend's router.
pub fn router(dashboard: Arc<Dashboard>) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/index.html", get(index))
        .route("/assets/{file}", get(asset))
        .route("/dashboard-config.json", get(config))
        .with_state(dashboard)
}

async fn index(State(d): State<Arc<Dashboard>>) -> Response {
    match read(d.dir.join("index.html")).await {
        Ok(bytes) => (
            [
                (header::CONTENT_TYPE, "text/html; charset=utf-8"),
                // The page names its hashed assets: always fetch the newest build's.
                (header::CACHE_CONTROL, "no-cache"),
            ],
            bytes,
        )
            .into_response(),
        Err(_) => {
            let page = NOT_BUILT.replace("{DIR}", &html_escape(&d.dir.display().to_string()));
            ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], page).into_response()
        }
    }
}

async fn asset(State(d): State<Arc<Dashboard>>, Path(file): Path<String>) -> Response {
    // Only names the build writes: no separators, no `..`, nothing hidden.
    let plain = !file.is_empty()
        && !file.starts_with('.')
        && file
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'));
    if !plain {
        return (StatusCode::NOT_FOUND, "no such asset").into_response();
    }
    match read(d.dir.join("assets").join(&file)).await {
        Ok(bytes) => (
            [
                (header::CONTENT_TYPE, content_type(&file)),
                (header::CACHE_CONTROL, "public, max-age=31536000, immutable"),
            ],
            bytes,
        )
            .into_response(),
        Err(_) => (StatusCode::NOT_FOUND, "no such asset").into_response(),
    }
}

#[derive(serde::Serialize)]
struct DashboardConfig<'a> {
    commander_url: Option<&'a str>,
    topics: Vec<DeclaredTopic>,
}

#[derive(serde::Serialize)]
struct DeclaredTopic {
    csc: String,
    /// `None`: every instance of an aggregated CSC.
    salindex: Option<u32>,
    category: &'static str,
    topic: String,
    rate_hz: Option<f64>,
}

#[derive(serde::Deserialize)]
struct TokenQuery {
    token: Option<String>,
}

async fn config(
    State(d): State<Arc<Dashboard>>,
    axum::extract::Query(query): axum::extract::Query<TokenQuery>,
    headers: axum::http::HeaderMap,
) -> Response {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let token = query.token.as_deref().or(bearer);
    if !token.is_some_and(|t| d.tokens.iter().any(|known| known == t)) {
        let reason = match token {
            None => "missing token: send ?token=<token> or Authorization: Bearer <token> (frontend.tokens)",
            Some(_) => "token not accepted by this frontend (frontend.tokens)",
        };
        return (StatusCode::UNAUTHORIZED, reason).into_response();
    }
    let catalog = match d.store.hash_get(keys::CATALOG).await {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!("dashboard config: cannot read the catalog: {e}");
            return (StatusCode::SERVICE_UNAVAILABLE, "store unreachable").into_response();
        }
    };
    let mut topics: Vec<DeclaredTopic> = catalog
        .iter()
        .filter_map(|(field, rate)| {
            let (csc, salindex, category, topic) = TopicId::from_catalog_field(field)?;
            Some(DeclaredTopic {
                csc: csc.as_str().to_string(),
                salindex,
                category: category.as_str(),
                topic,
                rate_hz: rate.parse().ok(),
            })
        })
        .collect();
    topics.sort_by(|a, b| {
        (&a.csc, a.salindex, a.category, &a.topic).cmp(&(&b.csc, b.salindex, b.category, &b.topic))
    });
    let body = DashboardConfig {
        commander_url: d.commander_url.as_deref(),
        topics,
    };
    ([(header::CACHE_CONTROL, "no-cache")], axum::Json(body)).into_response()
}

/// Reads a file off the async runtime's threads, refusing directories and anything over [`MAX_ASSET_BYTES`].
async fn read(path: PathBuf) -> std::io::Result<Vec<u8>> {
    tokio::task::spawn_blocking(move || {
        let meta = std::fs::metadata(&path)?;
        if !meta.is_file() || meta.len() > MAX_ASSET_BYTES {
            return Err(std::io::Error::other("not a servable file"));
        }
        std::fs::read(&path)
    })
    .await
    .map_err(std::io::Error::other)?
}

fn content_type(file: &str) -> &'static str {
    match file.rsplit('.').next().unwrap_or("") {
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "html" => "text/html; charset=utf-8",
        "json" | "map" => "application/json",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "woff2" => "font/woff2",
        _ => "application/octet-stream",
    }
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}
