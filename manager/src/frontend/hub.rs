//! The hub: one reader per frontend manager for every watched stream.
//!
//! Browsers subscribe through the hub. The first subscriber of a topic
//! makes the hub fetch its last entry (sent at once) and start reading the
//! stream after it; later subscribers get the cached last message. Each
//! entry read is turned into its JSON message once and the same bytes are
//! queued to every subscriber. When the last subscriber leaves, the stream
//! is no longer read.
//!
//! A topic subscribed while the reader waits in `XREAD BLOCK` is picked up
//! when that read returns (at most `frontend.read_block_ms`); its reader
//! cursor starts at the last entry already sent, so nothing falls in between.

use crate::store::{Entry, Store, StoreError};
use axum::extract::ws::Utf8Bytes;
use meridian_config::FrontendConfig;
use meridian_proto::{StreamId, TopicId};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Identifies one browser connection inside the hub.
pub type ClientId = u64;

/// What the hub holds of a browser: its bounded queue and the signal to
/// disconnect it when that queue is full.
#[derive(Clone)]
struct Subscriber {
    queue: mpsc::Sender<Utf8Bytes>,
    lagged: CancellationToken,
}

impl Subscriber {
    /// Queues `message`; a full queue marks the browser as lagging (it is
    /// disconnected with a reason) rather than dropping the message silently.
    fn offer(&self, message: &Utf8Bytes) {
        if let Err(mpsc::error::TrySendError::Full(_)) = self.queue.try_send(message.clone()) {
            self.lagged.cancel();
        }
    }
}

struct Watched {
    topic: TopicId,
    /// Id of the last entry sent to subscribers.
    cursor: StreamId,
    /// Message of that entry, for new subscribers.
    last: Option<Utf8Bytes>,
    subscribers: HashMap<ClientId, Subscriber>,
}

#[derive(Default)]
struct State {
    watched: HashMap<String, Watched>,
    clients: HashMap<ClientId, Subscriber>,
    next_client: ClientId,
}

/// Handle to the hub; cheap to clone.
#[derive(Clone)]
pub struct Hub {
    store: Arc<dyn Store>,
    state: Arc<Mutex<State>>,
}

impl Hub {
    /// Starts the hub's reader task; it stops at `shutdown`.
    pub fn start(store: Arc<dyn Store>, config: &FrontendConfig, shutdown: CancellationToken) -> Hub {
        let hub = Hub {
            store,
            state: Arc::default(),
        };
        let block = Duration::from_millis(config.read_block_ms);
        tokio::spawn(hub.clone().read_loop(config.read_count, block, shutdown));
        hub
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a browser whose messages go to `queue`.
    pub fn register(&self, queue: mpsc::Sender<Utf8Bytes>, lagged: CancellationToken) -> ClientId {
        let mut state = self.lock();
        state.next_client += 1;
        let id = state.next_client;
        state.clients.insert(id, Subscriber { queue, lagged });
        id
    }

    /// Subscribes `client` to `topic`: queues `reply` (the confirmation), then
    /// the topic's last stored sample if there is one, then every new sample.
    pub async fn subscribe(
        &self,
        client: ClientId,
        topic: &TopicId,
        reply: Utf8Bytes,
    ) -> Result<(), StoreError> {
        let key = topic.stream_key();
        if self.try_join(client, &key, &reply) {
            return Ok(());
        }
        let last = self.store.last(&key, 1).await?;
        let mut state = self.lock();
        let Some(subscriber) = state.clients.get(&client).cloned() else {
            return Ok(());
        };
        let watched = state.watched.entry(key).or_insert_with(|| Watched {
            topic: topic.clone(),
            cursor: last.last().map_or(StreamId::ZERO, |e| e.id),
            last: last.last().and_then(|e| encode(topic, e)),
            subscribers: HashMap::new(),
        });
        subscriber.offer(&reply);
        if let Some(message) = &watched.last {
            subscriber.offer(message);
        }
        watched.subscribers.insert(client, subscriber);
        Ok(())
    }

    /// Joins an already watched stream; false if nobody watches it yet.
    fn try_join(&self, client: ClientId, key: &str, reply: &Utf8Bytes) -> bool {
        let mut state = self.lock();
        let Some(subscriber) = state.clients.get(&client).cloned() else {
            return true;
        };
        let Some(watched) = state.watched.get_mut(key) else {
            return false;
        };
        subscriber.offer(reply);
        if let Some(message) = &watched.last {
            subscriber.offer(message);
        }
        watched.subscribers.insert(client, subscriber);
        true
    }

    /// Stops sending `topic` to `client`; the stream is no longer read if nobody else watches it.
    pub fn unsubscribe(&self, client: ClientId, topic: &TopicId) {
        let key = topic.stream_key();
        let mut state = self.lock();
        if let Some(watched) = state.watched.get_mut(&key) {
            watched.subscribers.remove(&client);
            if watched.subscribers.is_empty() {
                state.watched.remove(&key);
            }
        }
    }

    /// Forgets a browser and all its subscriptions.
    pub fn disconnect(&self, client: ClientId) {
        let mut state = self.lock();
        state.clients.remove(&client);
        state.watched.retain(|_, w| {
            w.subscribers.remove(&client);
            !w.subscribers.is_empty()
        });
    }

    /// Number of streams being read: one per watched topic, whatever the number of browsers.
    pub fn watched_streams(&self) -> usize {
        self.lock().watched.len()
    }

    async fn read_loop(self, count: usize, block: Duration, shutdown: CancellationToken) {
        let mut reader = None;
        let mut failing = false;
        let mut retry = Duration::from_millis(50);
        while !shutdown.is_cancelled() {
            let result = async {
                if reader.is_none() {
                    reader = Some(self.store.reader().await?);
                }
                let cursors: Vec<(String, StreamId)> = self
                    .lock()
                    .watched
                    .iter()
                    .map(|(k, w)| (k.clone(), w.cursor))
                    .collect();
                match reader.as_mut() {
                    Some(r) => r.read(&cursors, count, block).await,
                    None => Ok(Vec::new()),
                }
            };
            let streams = tokio::select! {
                _ = shutdown.cancelled() => break,
                r = result => r,
            };
            match streams {
                Ok(streams) => {
                    if failing {
                        tracing::warn!("store reads resumed");
                        failing = false;
                        retry = Duration::from_millis(50);
                    }
                    let mut state = self.lock();
                    for stream in streams {
                        let Some(watched) = state.watched.get_mut(&stream.key) else {
                            continue;
                        };
                        for entry in &stream.entries {
                            if entry.id <= watched.cursor {
                                continue;
                            }
                            watched.cursor = entry.id;
                            let Some(message) = encode(&watched.topic, entry) else {
                                continue;
                            };
                            for subscriber in watched.subscribers.values() {
                                subscriber.offer(&message);
                            }
                            watched.last = Some(message);
                        }
                    }
                }
                Err(e) => {
                    if !failing {
                        tracing::warn!(error = %e, "store read failed; browsers get no new data until it recovers");
                        failing = true;
                    }
                    reader = None;
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(retry) => {}
                    }
                    retry = (retry * 2).min(Duration::from_secs(2));
                }
            }
        }
    }
}

/// The browser message of a stored entry; `None` (and a warning) for an
/// entry that was not written by an ingest manager.
fn encode(topic: &TopicId, entry: &Entry) -> Option<Utf8Bytes> {
    let (Some(src), Some(ing), Some(fields)) = (entry.field("src"), entry.field("ing"), entry.field("f"))
    else {
        tracing::warn!(key = %topic.stream_key(), id = %entry.id, "skipping a stream entry without src/ing/f fields");
        return None;
    };
    let parse = |s: &str| s.parse::<f64>().unwrap_or(f64::NAN);
    Some(Utf8Bytes::from(meridian_proto::browser::sample_message(
        topic,
        entry.id,
        parse(src),
        parse(ing),
        fields,
    )))
}
