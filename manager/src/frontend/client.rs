//! One browser connection on the native protocol (`/ws`, `docs/protocol.md`).
//!
//! Requests are answered through the browser's [`Inbox`]; samples leave in
//! at most one batch frame per tick (`frontend.tick_ms`), so a thousand
//! browsers cost a thousand writes per tick, not one per sample each.

use super::edge::{Edge, CLOSE_BAD_REQUEST, CLOSE_GOING_AWAY, CLOSE_LAGGED};
use super::hub::{Hub, HubError, Selector, Start};
use super::inbox::{FrameClock, Inbox, Kick, Limits};
use super::plot;
use super::stats::HubStats;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures_util::{SinkExt, StreamExt};
use meridian_proto::browser::{
    ClientRequest, FrameFormat, RequestError, Scope, SelectorRef, ServerMessage, TopicRef,
};
use meridian_proto::{unix_now, Csc, StreamId, TopicId};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// Requests of one browser accepted but not yet carried out; more are refused with an error.
pub const MAX_PENDING_REQUESTS: usize = 64;

/// Largest data frame, in bytes of samples; the rest waits for the next tick.
pub const MAX_FRAME_BYTES: usize = 1024 * 1024;

/// Everything one connection needs from its frontend.
pub struct Settings {
    pub limits: Limits,
    pub tick: Duration,
    pub tai_utc: u32,
    pub server: String,
}

/// Serves one authenticated browser until it leaves, lags, or the frontend stops.
pub async fn serve(
    socket: WebSocket,
    hub: Hub,
    scope: Scope,
    format: FrameFormat,
    settings: Arc<Settings>,
    edge: Edge,
) {
    let inbox = Inbox::new(settings.limits, true, hub.stats());
    let client = hub.register(inbox.clone());
    let (mut sink, mut incoming) = socket.split();
    tracing::info!(?scope, ?format, "browser connected");
    inbox.control(
        ServerMessage::Welcome {
            scope,
            tick_ms: settings.tick.as_millis() as u64,
            server: settings.server.clone(),
            format,
        }
        .to_json(),
    );
    // Requests run in order on their own task, so a long recovery replay
    // (paced by this browser's reading) never stops its frames going out.
    let (requests, mut pending) = tokio::sync::mpsc::channel::<Box<ClientRequest>>(MAX_PENDING_REQUESTS);
    let worker = tokio::spawn({
        let (hub, inbox, settings) = (hub.clone(), inbox.clone(), settings.clone());
        async move {
            while let Some(request) = pending.recv().await {
                handle(&hub, client, &inbox, &settings, *request).await;
            }
        }
    });
    let mut clock = FrameClock::new(settings.tick);
    let close = loop {
        if let Some(kick) = inbox.kick() {
            break Some(kick_close(kick));
        }
        tokio::select! {
            _ = edge.closing.cancelled() => break Some((CLOSE_GOING_AWAY, "server shutting down: reconnect".into())),
            _ = inbox.ready() => {
                // Batch: wait for the tick boundary, then send everything queued.
                clock.wait().await;
                if let Err(reason) = send_frame(&mut sink, &inbox, format, settings.limits.slow_timeout, &hub.stats()).await {
                    break reason;
                }
            }
            request = incoming.next() => {
                let text = match request {
                    Some(Ok(Message::Text(text))) => text,
                    Some(Ok(Message::Binary(_))) => {
                        inbox.control(error(RequestError::Binary.to_string()));
                        continue;
                    }
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                    Some(Ok(Message::Close(_))) | None => break None,
                    Some(Err(e)) => {
                        tracing::info!(error = %e, "browser connection failed");
                        break None;
                    }
                };
                match ClientRequest::parse(&text) {
                    Ok(request) => {
                        if requests.try_send(Box::new(request)).is_err() {
                            inbox.control(error(format!(
                                "too many requests in progress: the limit is MAX_PENDING_REQUESTS = {MAX_PENDING_REQUESTS}"
                            )));
                        }
                    }
                    Err(e) => inbox.control(error(e.to_string())),
                }
            }
        }
    };
    worker.abort();
    hub.disconnect(client);
    if let Some((code, reason)) = close {
        // The last words of a closing connection must not wait on a browser that stopped reading.
        let bye = sink.send(Message::Close(Some(CloseFrame {
            code,
            reason: reason.into(),
        })));
        let _ = tokio::time::timeout(Duration::from_secs(1), bye).await;
    }
    tracing::info!("browser disconnected");
}

fn error(message: String) -> String {
    ServerMessage::Error {
        message,
        fatal: false,
    }
    .to_json()
}

/// Writes queued replies, then one batch frame of samples (JSON text or
/// MessagePack binary, as the browser asked); a browser whose socket does
/// not take a frame within `timeout` is disconnected. Each data frame's
/// frontend → browser time (from its oldest sample's store read to the
/// socket taking it) goes into the hop's histogram.
async fn send_frame(
    sink: &mut futures_util::stream::SplitSink<WebSocket, Message>,
    inbox: &Inbox,
    format: FrameFormat,
    timeout: Duration,
    stats: &HubStats,
) -> Result<(), Option<(u16, String)>> {
    let out = inbox.drain(MAX_FRAME_BYTES);
    let mut frames: Vec<(Message, f64)> = out
        .control
        .into_iter()
        .map(|c| (Message::Text(Utf8Bytes::from(String::from(c))), f64::NAN))
        .collect();
    if !out.samples.is_empty() || !out.lost.is_empty() {
        let oldest = out
            .samples
            .iter()
            .map(|s| s.read_ts)
            .fold(f64::INFINITY, f64::min);
        let batch = match format {
            FrameFormat::Json => Message::Text(Utf8Bytes::from(meridian_proto::browser::batch_frame(
                out.samples.iter().map(|s| s.native_json()),
                &out.lost,
            ))),
            FrameFormat::Msgpack => Message::Binary(
                meridian_proto::msgpack::batch_frame(
                    out.samples.iter().map(|s| s.native_msgpack()),
                    &out.lost,
                )
                .into(),
            ),
        };
        frames.push((batch, oldest));
    }
    // Shared ticks: encoded once for every browser of the feed, sent as they are.
    frames.extend(out.ticks.iter().map(|t| {
        let frame = match format {
            FrameFormat::Json => Message::Text(t.native_frame()),
            FrameFormat::Msgpack => Message::Binary(t.binary_frame()),
        };
        (frame, t.oldest_read)
    }));
    for (frame, oldest_read) in frames {
        match tokio::time::timeout(timeout, sink.send(frame)).await {
            Ok(Ok(())) => {
                if oldest_read.is_finite() {
                    stats
                        .frontend_to_browser
                        .observe(unix_now(SystemTime::now()) - oldest_read);
                }
            }
            Ok(Err(_)) => return Err(None),
            Err(_) => {
                return Err(Some((
                    CLOSE_LAGGED,
                    "too slow: a frame waited longer than frontend.slow_timeout_ms".into(),
                )))
            }
        }
    }
    Ok(())
}

fn selector(r: &SelectorRef) -> Result<Selector, String> {
    let csc = Csc::new(&r.csc).map_err(|e| e.to_string())?;
    if let Some(topic) = &r.topic {
        TopicId::new(
            meridian_proto::CscId {
                csc: csc.clone(),
                salindex: 0,
            },
            meridian_proto::Category::Event,
            topic,
        )
        .map_err(|e| e.to_string())?;
    }
    Ok(Selector {
        csc: Some(csc),
        salindex: r.salindex,
        category: r.category,
        topic: r.topic.clone(),
    })
}

/// Carries out a request; every reply goes through the inbox, in order.
async fn handle(hub: &Hub, client: u64, inbox: &Arc<Inbox>, settings: &Settings, request: ClientRequest) {
    let reply = match request {
        ClientRequest::Auth { .. } => error("already authenticated".into()),
        ClientRequest::Subscribe(r) => {
            let start = match r.after.as_deref().map(str::parse::<StreamId>) {
                None => Ok(Start::Last),
                Some(Ok(id)) => Ok(Start::After(id)),
                Some(Err(e)) => Err(format!("after: {e}")),
            };
            match (selector(&r), start) {
                (Ok(sel), Ok(start)) => {
                    // The confirmation goes first: every sample after it is for these topics.
                    let confirm = |topics: &[TopicId], waiting: bool| {
                        let topics = topics.iter().map(TopicRef::from).collect();
                        inbox.control(ServerMessage::Subscribed { topics, waiting }.to_json());
                    };
                    match hub.subscribe(client, &sel, start, confirm).await {
                        Ok(_) => return,
                        Err(e) => error(e.to_string()),
                    }
                }
                (Err(e), _) | (_, Err(e)) => error(e),
            }
        }
        ClientRequest::Unsubscribe(r) => match selector(&r) {
            Ok(sel) => match hub.unsubscribe(client, &sel).await {
                Ok(topics) => ServerMessage::Unsubscribed {
                    topics: topics.iter().map(TopicRef::from).collect(),
                }
                .to_json(),
                Err(e) => error(e.to_string()),
            },
            Err(e) => error(e),
        },
        ClientRequest::History { topic, last, since } => match topic.to_topic_id() {
            Ok(id) => match hub.history(&id, last, since).await {
                Ok((samples, complete)) => history_message(&id, &samples, complete),
                Err(HubError::Store(e)) => error(format!("history of {id} failed: {e}")),
                Err(e) => error(e.to_string()),
            },
            Err(e) => error(e.to_string()),
        },
        ClientRequest::Plot {
            topic,
            fields,
            since,
            until,
            points,
            id,
        } => {
            let until = until.unwrap_or_else(|| unix_now(SystemTime::now()));
            match (topic.to_topic_id(), plot::check(&fields, points, since, until)) {
                (Ok(topic_id), Ok(paths)) => {
                    let points = points.unwrap_or(plot::DEFAULT_POINTS);
                    let buckets = plot::Buckets::new(paths, since, until, points);
                    match hub.plot(&topic_id, buckets, since, until).await {
                        Ok((buckets, last_id, complete)) => {
                            let (t, min, max) = buckets.finish();
                            ServerMessage::Plot {
                                topic,
                                fields,
                                t,
                                min,
                                max,
                                last_id: last_id.map(|i| i.to_string()),
                                complete,
                                id,
                            }
                            .to_json()
                        }
                        Err(e) => error(format!("plot of {topic_id} failed: {e}")),
                    }
                }
                (Err(e), _) => error(e.to_string()),
                (_, Err(e)) => error(e),
            }
        }
        ClientRequest::Time { request_time } => time_message(settings.tai_utc, request_time),
    };
    inbox.control(reply);
}

/// `{"type":"history","topic":{…},"complete":bool,"samples":[…]}`.
fn history_message(topic: &TopicId, samples: &[Arc<super::sample::Delivered>], complete: bool) -> String {
    let topic = serde_json::to_string(&TopicRef::from(topic)).unwrap_or_default();
    let mut out = format!(r#"{{"type":"history","topic":{topic},"complete":{complete},"samples":["#);
    for (i, s) in samples.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(s.native_json());
    }
    out.push_str("]}");
    out
}

/// The server's time: UTC and TAI as Unix seconds.
pub fn time_message(tai_utc: u32, request_time: Option<f64>) -> String {
    let utc = unix_now(SystemTime::now());
    ServerMessage::Time {
        utc,
        tai: utc + f64::from(tai_utc),
        tai_utc,
        request_time,
    }
    .to_json()
}

/// The close code and reason for a browser the inbox says must go.
pub fn kick_close(kick: Kick) -> (u16, String) {
    let (code, reason) = match kick {
        Kick::TooSlow => (
            CLOSE_LAGGED,
            "too slow: lost events for longer than frontend.slow_timeout_ms; reconnect and recover".into(),
        ),
        Kick::TooManyRequests => (
            CLOSE_BAD_REQUEST,
            "too many requests without reading the replies".into(),
        ),
        Kick::Moved(reason) => (CLOSE_GOING_AWAY, reason),
    };
    if code == CLOSE_GOING_AWAY {
        tracing::info!(%reason, "asking browser to reconnect elsewhere");
    } else {
        tracing::warn!(%reason, "disconnecting browser");
    }
    (code, reason)
}

/// Refuses a connection with an error message and a close frame naming the reason.
pub async fn refuse(mut socket: WebSocket, code: u16, reason: &str) {
    let message = ServerMessage::Error {
        message: reason.to_string(),
        fatal: true,
    };
    let _ = socket.send(Message::Text(message.to_json().into())).await;
    // A close reason is at most 123 bytes.
    let short: String = reason.chars().take(100).collect();
    let _ = socket
        .send(Message::Close(Some(CloseFrame {
            code,
            reason: short.into(),
        })))
        .await;
}
