//! The fan-out bench's baseline: a bare axum/tungstenite server that
//! builds one batch frame of every topic's sample per tick and broadcasts the
//! same bytes to every client, with the frontend's socket settings and
//! nothing else (no Redis, no hub, no per-client encoding).

use super::topics::Topic;
use crate::measure::NamedRuntime;
use axum::extract::ws::{Message as ServerMessage, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use futures_util::{SinkExt, StreamExt};
use meridian_proto::browser::FrameFormat;
use meridian_proto::{unix_now, StreamId, TopicId};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

/// The baseline: one frame per tick, the same bytes to every client.
pub(super) struct Bare {
    pub(super) frames: broadcast::Sender<ServerMessage>,
    pub(super) format: FrameFormat,
    /// Frames are built while set.
    pub(super) generating: AtomicBool,
    pub(super) generated: AtomicU64,
}

impl Bare {
    pub(super) fn new(format: FrameFormat) -> Bare {
        // A client more than two frames behind skips to the newest, as the
        // frontend conflates telemetry for a slow browser.
        let (frames, _) = broadcast::channel(2);
        Bare {
            frames,
            format,
            generating: AtomicBool::new(false),
            generated: AtomicU64::new(0),
        }
    }
}

/// Starts the bare broadcast server and its frame generator on their own
/// runtime, with as many threads as the frontend's.
pub(super) async fn start_bare(
    rt: &NamedRuntime,
    bare: Arc<Bare>,
    topics: &[Topic],
    period: Duration,
    stop: CancellationToken,
) -> anyhow::Result<SocketAddr> {
    let listener = rt
        .handle()
        .spawn(tokio::net::TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0)))
        .await??;
    let addr = listener.local_addr()?;
    let app = axum::Router::new()
        .route("/ws", axum::routing::get(bare_upgrade))
        .with_state(bare.clone());
    let serve_stop = stop.clone();
    rt.handle().spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(serve_stop.cancelled_owned())
            .await;
        if let Err(e) = served {
            eprintln!("bench fanout: the bare server failed: {e}");
        }
    });
    let topics: Vec<(TopicId, String)> = topics.iter().map(|t| (t.id.clone(), t.json.clone())).collect();
    rt.handle().spawn(async move {
        let mut ticker = tokio::time::interval(period);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut seq = 0u64;
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = ticker.tick() => {}
            }
            if !bare.generating.load(Ordering::Relaxed) {
                continue;
            }
            let now = unix_now(SystemTime::now());
            seq += 1;
            let id = StreamId::new((now * 1000.0) as u64, seq);
            let frame = match bare.format {
                FrameFormat::Json => {
                    let samples: Vec<String> = topics
                        .iter()
                        .map(|(topic, json)| {
                            meridian_proto::browser::sample_message(topic, id, now, now, now, json)
                        })
                        .collect();
                    let frame = meridian_proto::browser::batch_frame(samples.iter().map(String::as_str), &[]);
                    ServerMessage::Text(Utf8Bytes::from(frame))
                }
                FrameFormat::Msgpack => {
                    let samples: Vec<Vec<u8>> = topics
                        .iter()
                        .map(|(topic, json)| {
                            meridian_proto::msgpack::sample_message(topic, id, now, now, now, json).0
                        })
                        .collect();
                    let frame = meridian_proto::msgpack::batch_frame(samples.iter().map(Vec::as_slice), &[]);
                    ServerMessage::Binary(frame.into())
                }
            };
            let _ = bare.frames.send(frame);
            bare.generated.fetch_add(1, Ordering::Relaxed);
        }
    });
    Ok(addr)
}

/// The frontend's socket settings (manager/src/frontend/mod.rs `small`), so only the work differs.
async fn bare_upgrade(State(bare): State<Arc<Bare>>, ws: WebSocketUpgrade) -> axum::response::Response {
    ws.read_buffer_size(4 * 1024)
        .write_buffer_size(0)
        .max_message_size(4 * meridian_proto::browser::MAX_CLIENT_MESSAGE_LEN)
        .on_upgrade(move |socket| bare_client(socket, bare.frames.subscribe()))
}

async fn bare_client(socket: WebSocket, mut frames: broadcast::Receiver<ServerMessage>) {
    let (mut sink, mut incoming) = socket.split();
    loop {
        tokio::select! {
            frame = frames.recv() => match frame {
                Ok(frame) => {
                    if sink.send(frame).await.is_err() {
                        break;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => break,
            },
            message = incoming.next() => match message {
                Some(Ok(_)) => {}
                _ => break,
            },
        }
    }
}
