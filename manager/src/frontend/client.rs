//! One browser connection on the native protocol.

use super::hub::Hub;
use super::{CLOSE_BAD_REQUEST, CLOSE_GOING_AWAY, CLOSE_LAGGED};
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures_util::{SinkExt, StreamExt};
use meridian_proto::browser::{ClientRequest, RequestError, ServerMessage, TopicRef};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Serves one browser until it leaves, misbehaves, lags or the server stops.
pub async fn serve(socket: WebSocket, hub: Hub, queue_len: usize, shutdown: CancellationToken) {
    let (queue, mut outgoing) = mpsc::channel::<Utf8Bytes>(queue_len);
    let lagged = CancellationToken::new();
    let client = hub.register(queue.clone(), lagged.clone());
    let (mut sink, mut incoming) = socket.split();
    tracing::info!("browser connected");
    let close = loop {
        tokio::select! {
            _ = shutdown.cancelled() => break Some((CLOSE_GOING_AWAY, "server shutting down: reconnect".to_string())),
            _ = lagged.cancelled() => {
                tracing::warn!(queue = queue_len, "browser too slow for its subscriptions: disconnecting");
                break Some((CLOSE_LAGGED, format!(
                    "client queue full (frontend.client_queue = {queue_len} messages): reconnect and subscribe to less"
                )));
            }
            Some(message) = outgoing.recv() => {
                if sink.send(Message::Text(message)).await.is_err() {
                    break None;
                }
            }
            request = incoming.next() => {
                let text = match request {
                    Some(Ok(Message::Text(text))) => text,
                    Some(Ok(Message::Binary(_))) => break Some(bad_request(&mut sink, RequestError::Binary).await),
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                    Some(Ok(Message::Close(_))) | None => break None,
                    Some(Err(e)) => {
                        tracing::info!(error = %e, "browser connection failed");
                        break None;
                    }
                };
                let request = match ClientRequest::parse(&text) {
                    Ok(request) => request,
                    Err(e) => break Some(bad_request(&mut sink, e).await),
                };
                if let Some(reply) = handle(&hub, client, request).await {
                    if queue.try_send(Utf8Bytes::from(reply.to_json())).is_err() {
                        lagged.cancel();
                    }
                }
            }
        }
    };
    hub.disconnect(client);
    if let Some((code, reason)) = close {
        let _ = sink
            .send(Message::Close(Some(CloseFrame {
                code,
                reason: reason.into(),
            })))
            .await;
    }
    tracing::info!("browser disconnected");
}

/// Carries out a request; returns the reply to queue, if the hub has not queued it already.
async fn handle(hub: &Hub, client: u64, request: ClientRequest) -> Option<ServerMessage> {
    let (subscribe, topic) = match request {
        ClientRequest::Subscribe(topic) => (true, topic),
        ClientRequest::Unsubscribe(topic) => (false, topic),
    };
    let id = match topic.to_topic_id() {
        Ok(id) => id,
        Err(e) => {
            return Some(ServerMessage::Error {
                message: e.to_string(),
                fatal: false,
            })
        }
    };
    if !subscribe {
        hub.unsubscribe(client, &id);
        return Some(ServerMessage::Unsubscribed(topic));
    }
    let reply = Utf8Bytes::from(ServerMessage::Subscribed(TopicRef::from(&id)).to_json());
    match hub.subscribe(client, &id, reply).await {
        Ok(()) => None,
        Err(e) => Some(ServerMessage::Error {
            message: format!("subscribe to {id} failed: {e}"),
            fatal: false,
        }),
    }
}

/// Tells the browser why its message was refused; the caller closes the connection.
async fn bad_request(
    sink: &mut futures_util::stream::SplitSink<WebSocket, Message>,
    error: RequestError,
) -> (u16, String) {
    tracing::info!(%error, "closing browser connection: bad request");
    let message = ServerMessage::Error {
        message: error.to_string(),
        fatal: true,
    };
    let _ = sink.send(Message::Text(message.to_json().into())).await;
    // Close reasons are limited to 123 bytes by the WebSocket protocol.
    let reason: String = error.to_string().chars().take(40).collect();
    (CLOSE_BAD_REQUEST, reason)
}
