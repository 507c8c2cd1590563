//! How a browser's WebSocket is opened, whatever protocol it speaks (the
//! native one here, the replaced system's from [`crate::love`]): small
//! buffers, and every connection counted so the frontend's drain waits for it.
//! A leaf, so the server and the sessions it mounts share it without
//! importing each other.

use axum::extract::ws::{WebSocket, WebSocketUpgrade};
use axum::response::Response;
use tokio_util::task::TaskTracker;

/// Small buffers: an idle browser costs a few KiB, not the default ~150 KiB.
pub fn small(ws: WebSocketUpgrade) -> WebSocketUpgrade {
    ws.read_buffer_size(4 * 1024)
        .write_buffer_size(0)
        // Requests over MAX_CLIENT_MESSAGE_LEN get a clear error; far larger
        // ones are cut off by the WebSocket layer before they are buffered.
        .max_message_size(4 * meridian_proto::browser::MAX_CLIENT_MESSAGE_LEN)
}

/// Upgrades to a WebSocket served by `serve` inside the connection's
/// `span`, counted in `connections` (the frontend's drain waits for them).
pub fn upgrade<F, Fut>(
    ws: WebSocketUpgrade,
    connections: &TaskTracker,
    span: tracing::Span,
    serve: F,
) -> Response
where
    F: FnOnce(WebSocket) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let guard = connections.token();
    ws.on_upgrade(move |socket| {
        let served = async move {
            let _guard = guard;
            serve(socket).await
        };
        tracing::Instrument::instrument(served, span)
    })
}
