//! One producer connection: the handshake, then batches on each stream.

use super::stats::IngestStats;
use super::writer::{HashUpdate, Write, Writer};
use meridian_proto::frame::close_code;
use meridian_proto::stored::InstanceState;
use meridian_proto::{
    keys, unix_now, Category, CscId, IngestFrame, ProducerFrame, Sample, StoredSample, TopicId,
};
use meridian_quic::{FrameError, FramedRecv, FramedSend};
use meridian_store::{Append, OnceBatch};
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// How long a producer has to open its first stream and say hello.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Batches of one stream handed to the store writer and not yet
/// acknowledged; past it the stream stops reading until the oldest is
/// stored, so a producer's unstored batches held here are bounded whatever
/// the writer's queues hold.
pub const ACKS_IN_FLIGHT: usize = 16;

/// Shared by all connections of an ingest manager.
pub struct Context {
    pub writer: Writer,
    pub telemetry_maxlen: usize,
    pub event_maxlen: usize,
    /// Producers must present a client certificate valid for their CSC's name.
    pub check_identity: bool,
    /// How long a finished instance's state hash (a Script's) is kept.
    pub instance_ttl: Duration,
    /// How long exactly-once marks outlive their last write.
    pub dedup_ttl: Duration,
    /// Counters and lag histograms of this ingest.
    pub stats: Arc<IngestStats>,
}

/// What this producer declared, and where its samples go.
struct Session {
    csc: CscId,
    producer_id: u64,
    all_indices: bool,
    /// Declared telemetry topics: name → (stream key for this instance, retention).
    telemetry_keys: HashMap<String, (String, usize)>,
    /// Declared event topics, likewise.
    event_keys: HashMap<String, (String, usize)>,
    /// The writer lane of this connection: its streams' batches are written in order.
    writer: Writer,
}

/// Script states after which a Script runs no more (DONE, STOPPED, FAILED,
/// CONFIGURE_FAILED in the observatory's ScriptState enumeration).
const FINAL_SCRIPT_STATES: &[i64] = &[8, 9, 10, 11];

impl Session {
    /// The stream key and retention of a declared topic.
    fn key(&self, category: Category, topic: &str) -> Option<&(String, usize)> {
        // Looked up by borrowed name: no allocation per sample.
        match category {
            Category::Telemetry => self.telemetry_keys.get(topic),
            Category::Event => self.event_keys.get(topic),
        }
    }

    /// The instance a sample comes from.
    fn instance(&self, sample: &Sample) -> CscId {
        match (self.all_indices, sample.salindex) {
            (true, Some(index)) => CscId {
                csc: self.csc.csc.clone(),
                salindex: index,
            },
            _ => self.csc.clone(),
        }
    }

    /// What a batch of samples writes: telemetry appended, events once per
    /// sequence number, and instance state of aggregated CSCs.
    fn write_for(&self, samples: Vec<Sample>, ctx: &Context) -> Result<Write, Fault> {
        let now = unix_now(SystemTime::now());
        // One ingest time per batch, formatted once.
        let ingest_ts = now.to_string();
        let stats = &ctx.stats;
        let mut write = Write::default();
        let mut events = Vec::new();
        // Only aggregated CSCs (Scripts) need the instance of each sample.
        let aggregated = self.csc.is_aggregated();
        write.appends.reserve(samples.len());
        for sample in samples {
            let Some((key, maxlen)) = self.key(sample.category, &sample.topic) else {
                return Err(Fault::Protocol(format!(
                    "sample seq {}: {} topic {:?} was not declared in the hello",
                    sample.seq, sample.category, sample.topic
                )));
            };
            let (received, lag) = match sample.category {
                Category::Telemetry => (&stats.telemetry_received, &stats.telemetry_lag),
                Category::Event => (&stats.events_received, &stats.event_lag),
            };
            received.fetch_add(1, Ordering::Relaxed);
            lag.observe(now - sample.source_ts);
            let mut salindex = None;
            if aggregated {
                let instance = self.instance(&sample);
                salindex = Some(instance.salindex);
                if sample.category == Category::Event && sample.topic == "state" {
                    write
                        .hashes
                        .push(instance_state(&instance, &sample, now, ctx.instance_ttl));
                }
            }
            let stored = StoredSample {
                seq: Some(sample.seq),
                source_ts: sample.source_ts,
                ingest_ts: now,
                salindex,
                upto: None,
                fields: meridian_proto::value::fields_to_json(&sample.fields),
            };
            let append = Append {
                key: key.clone(),
                maxlen: *maxlen,
                fields: stored.into_fields_stamped(&ingest_ts),
            };
            match sample.category {
                Category::Telemetry => write.appends.push(append),
                Category::Event => events.push((sample.seq, append)),
            }
        }
        if !events.is_empty() {
            write.once = Some(OnceBatch {
                dedup_key: keys::dedup(&self.csc, self.producer_id, "events"),
                mark_ttl: ctx.dedup_ttl,
                entries: events,
            });
        }
        Ok(write)
    }
}

/// The state hash of a Script after its `state` event: its state, and a TTL
/// once it has ended, so a night of Scripts leaves no keys behind.
fn instance_state(instance: &CscId, sample: &Sample, ingest_ts: f64, ttl: Duration) -> HashUpdate {
    let state = sample
        .fields
        .iter()
        .find(|(k, _)| k == "state")
        .and_then(|(_, v)| match v {
            meridian_proto::Value::Int(i) => Some(*i),
            _ => None,
        });
    let ended = state.is_some_and(|s| FINAL_SCRIPT_STATES.contains(&s));
    let fields = InstanceState {
        updated: ingest_ts,
        state,
    }
    .into_fields();
    HashUpdate {
        key: keys::instance(instance),
        fields,
        ttl: ended.then_some(ttl),
    }
}

/// Checks that the producer's client certificate names the CSC it claims.
fn check_identity(conn: &quinn::Connection, csc: &CscId) -> Result<(), Fault> {
    let certs = conn
        .peer_identity()
        .and_then(|id| {
            id.downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>()
                .ok()
        })
        .ok_or_else(|| {
            Fault::Refused("no client certificate: this ingest requires one (tls.ca is set)".into())
        })?;
    let leaf = certs
        .first()
        .ok_or_else(|| Fault::Refused("empty client certificate chain".into()))?;
    let cert = webpki::EndEntityCert::try_from(leaf)
        .map_err(|e| Fault::Refused(format!("client certificate unreadable: {e}")))?;
    let name = rustls::pki_types::ServerName::try_from(csc.csc.to_string())
        .map_err(|e| Fault::Refused(format!("CSC name {} is not a DNS name: {e}", csc.csc)))?;
    cert.verify_is_valid_for_subject_name(&name).map_err(|_| {
        Fault::Refused(format!(
            "the client certificate is not valid for CSC {}: a producer may only serve the CSC its certificate names",
            csc.csc
        ))
    })
}

/// Why a connection is being closed.
#[derive(Debug, thiserror::Error)]
enum Fault {
    #[error("{0}")]
    Protocol(String),
    #[error("handshake refused: {0}")]
    Refused(String),
    #[error("connection lost: {0}")]
    Lost(String),
}

impl From<FrameError> for Fault {
    /// A lost stream is lost; anything else (a truncated, oversized or
    /// malformed frame) is the producer's protocol error.
    fn from(e: FrameError) -> Self {
        match e.is_lost() {
            true => Fault::Lost(e.to_string()),
            false => Fault::Protocol(e.to_string()),
        }
    }
}

pub async fn serve(incoming: quinn::Incoming, ctx: Arc<Context>, stop: CancellationToken) {
    let conn = match incoming.await {
        Ok(conn) => conn,
        Err(e) => {
            tracing::info!(error = %e, "producer connection failed during TLS handshake");
            return;
        }
    };
    let result = tokio::select! {
        r = serve_connection(&conn, &ctx, &stop) => r,
        _ = stop.cancelled() => Ok(()),
    };
    match result {
        Ok(()) if stop.is_cancelled() => {
            conn.close(close_code::DRAINING.into(), b"ingest draining: reconnect");
        }
        Ok(()) => tracing::info!("producer disconnected"),
        Err(Fault::Lost(reason)) => tracing::info!(%reason, "producer connection lost"),
        Err(fault @ Fault::Refused(_)) => {
            ctx.stats.refused.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(reason = %fault, "producer refused");
            conn.close(close_code::REFUSED.into(), fault.to_string().as_bytes());
        }
        Err(fault) => {
            ctx.stats.protocol_errors.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(reason = %fault, "closing producer connection: protocol error");
            conn.close(close_code::PROTOCOL_ERROR.into(), fault.to_string().as_bytes());
        }
    }
}

async fn serve_connection(
    conn: &quinn::Connection,
    ctx: &Arc<Context>,
    stop: &CancellationToken,
) -> Result<(), Fault> {
    // A handshake that times out is a slow link or a busy process, not a
    // protocol violation: the connection is dropped as lost, which the
    // producer retries. (A PROTOCOL_ERROR close is final for a producer: a
    // slow moment while an ingest restarts must not stop it for good.)
    let (send, recv) = tokio::time::timeout(HANDSHAKE_TIMEOUT, conn.accept_bi())
        .await
        .map_err(|_| {
            Fault::Lost(format!(
                "no stream opened within {} s",
                HANDSHAKE_TIMEOUT.as_secs()
            ))
        })?
        .map_err(|e| Fault::Lost(e.to_string()))?;
    let (mut send, mut recv) = (FramedSend::new(send), FramedRecv::new(recv));
    let first = tokio::time::timeout(HANDSHAKE_TIMEOUT, recv.read_frame())
        .await
        .map_err(|_| Fault::Lost(format!("no hello within {} s", HANDSHAKE_TIMEOUT.as_secs())))??;
    let hello = match first {
        Some(ProducerFrame::Hello(hello)) => hello,
        Some(ProducerFrame::Batch(_)) => {
            return Err(Fault::Protocol("the first frame must be a Hello".into()))
        }
        None => return Err(Fault::Lost("stream closed before the hello".into())),
    };
    let validated = hello
        .validate()
        .map_err(|e| Fault::Refused(e.to_string()))
        .and_then(|csc| {
            if ctx.check_identity {
                check_identity(conn, &csc)?;
            }
            if hello.all_indices && !csc.is_aggregated() {
                return Err(Fault::Refused(format!(
                    "hello.all_indices: CSC {} is not one whose instances share streams ({:?})",
                    csc.csc,
                    meridian_proto::AGGREGATED_CSCS
                )));
            }
            Ok(csc)
        });
    let session = match validated {
        Ok(csc) => {
            let (mut telemetry_keys, mut event_keys) = (HashMap::new(), HashMap::new());
            for t in &hello.topics {
                let id = TopicId::new(csc.clone(), t.category, &t.name)
                    .map_err(|e| Fault::Refused(format!("hello.topics: {e}")))?;
                let (by_name, maxlen) = match t.category {
                    Category::Telemetry => (&mut telemetry_keys, ctx.telemetry_maxlen),
                    Category::Event => (&mut event_keys, ctx.event_maxlen),
                };
                by_name.insert(t.name.clone(), (keys::stream(&id), maxlen));
            }
            Arc::new(Session {
                csc,
                producer_id: hello.producer_id,
                all_indices: hello.all_indices,
                telemetry_keys,
                event_keys,
                writer: ctx.writer.lane(),
            })
        }
        Err(fault) => {
            let reason = match &fault {
                Fault::Refused(r) | Fault::Protocol(r) | Fault::Lost(r) => r.clone(),
            };
            if send
                .write_frame(&IngestFrame::Refused {
                    reason: reason.clone(),
                })
                .await
                .is_ok()
            {
                finish(send).await;
            }
            return Err(Fault::Refused(reason));
        }
    };
    // List the declared topics in the catalog, so frontends can resolve
    // wildcard subscriptions before the first sample arrives.
    let catalog: Vec<(String, String)> = hello
        .topics
        .iter()
        .filter_map(|t| {
            let id = TopicId::new(session.csc.clone(), t.category, &t.name).ok()?;
            Some((
                id.catalog_field(),
                t.rate_hz.map(|r| r.to_string()).unwrap_or_default(),
            ))
        })
        .collect();
    let schemas: Vec<(String, String)> = hello
        .topics
        .iter()
        .filter_map(|t| {
            let id = TopicId::new(session.csc.clone(), t.category, &t.name).ok()?;
            Some((id.catalog_field(), serde_json::to_string(&t.fields).ok()?))
        })
        .collect();
    let update = HashUpdate {
        key: keys::CATALOG.to_string(),
        fields: catalog,
        ttl: None,
    };
    let described = HashUpdate {
        key: keys::SCHEMAS.to_string(),
        fields: schemas,
        ttl: None,
    };
    let listed = session
        .writer
        .submit(Write {
            hashes: vec![described, update],
            ..Write::default()
        })
        .await;
    if let Ok(listed) = listed {
        let _ = listed.await;
    }
    tracing::Span::current().record("csc", tracing::field::display(&session.csc));
    let topics = session.telemetry_keys.len() + session.event_keys.len();
    tracing::info!(topics, "producer connected");
    ctx.stats.connections.fetch_add(1, Ordering::Relaxed);
    ctx.stats.producers.fetch_add(1, Ordering::Relaxed);
    let _connected = Connected(&ctx.stats);
    send.write_frame(&IngestFrame::Welcome {
        session: conn.stable_id() as u64,
    })
    .await?;

    let (fault_tx, mut fault_rx) = mpsc::channel::<Fault>(1);
    let streams = tokio_util::task::TaskTracker::new();
    let spawn_stream = |send, recv| {
        let (ctx, session, fault_tx) = (ctx.clone(), session.clone(), fault_tx.clone());
        streams.spawn(
            async move {
                if let Err(fault) = serve_stream(send, recv, &ctx, &session).await {
                    let _ = fault_tx.try_send(fault);
                }
            }
            .in_current_span(),
        );
    };
    spawn_stream(send, recv);
    let outcome = loop {
        tokio::select! {
            accepted = conn.accept_bi() => match accepted {
                Ok((send, recv)) => spawn_stream(FramedSend::new(send), FramedRecv::new(recv)),
                Err(quinn::ConnectionError::ApplicationClosed(_)) | Err(quinn::ConnectionError::LocallyClosed) => break Ok(()),
                Err(e) => break Err(Fault::Lost(e.to_string())),
            },
            Some(fault) = fault_rx.recv() => break Err(fault),
            _ = stop.cancelled() => break Ok(()),
        }
    };
    streams.close();
    if outcome.is_ok() {
        // Let batches already read reach the store and their acks go out.
        let _ = tokio::time::timeout(Duration::from_secs(5), streams.wait()).await;
    }
    outcome
}

/// Counts a producer as connected for as long as it lives.
struct Connected<'a>(&'a IngestStats);

impl Drop for Connected<'_> {
    fn drop(&mut self) {
        self.0.producers.fetch_sub(1, Ordering::Relaxed);
    }
}

enum Reply {
    Stored {
        up_to_seq: u64,
        stored: oneshot::Receiver<Result<(), String>>,
        /// One of the stream's [`ACKS_IN_FLIGHT`], released with the ack.
        _in_flight: OwnedSemaphorePermit,
    },
    Error(String),
}

/// Reads batches from one stream until it ends; acknowledges each once stored.
async fn serve_stream(
    send: FramedSend,
    mut recv: FramedRecv,
    ctx: &Context,
    session: &Session,
) -> Result<(), Fault> {
    // Every Stored reply holds a permit, so the channel never blocks a send;
    // one more slot for a last Error.
    let in_flight = Arc::new(Semaphore::new(ACKS_IN_FLIGHT));
    let (replies, reply_rx) = mpsc::channel(ACKS_IN_FLIGHT + 1);
    let acks = tokio::spawn(acknowledge(send, reply_rx).in_current_span());
    let result = async {
        while let Some(frame) = recv.read_frame().await? {
            let samples = match frame {
                ProducerFrame::Batch(samples) => samples,
                ProducerFrame::Hello(_) => return Err(Fault::Protocol("hello sent twice".into())),
            };
            let Some(up_to_seq) = samples.last().map(|s| s.seq) else {
                continue;
            };
            let write = session.write_for(samples, ctx)?;
            let permit = in_flight
                .clone()
                .acquire_owned()
                .await
                .map_err(|_| Fault::Lost("acknowledgement stream closed".into()))?;
            let stored = session
                .writer
                .submit(write)
                .await
                .map_err(|e| Fault::Lost(e.to_string()))?;
            let reply = Reply::Stored {
                up_to_seq,
                stored,
                _in_flight: permit,
            };
            if replies.send(reply).await.is_err() {
                return Err(Fault::Lost("acknowledgement stream closed".into()));
            }
        }
        Ok(())
    }
    .await;
    if let Err(fault @ Fault::Protocol(_)) = &result {
        let _ = replies.send(Reply::Error(fault.to_string())).await;
    }
    drop(replies);
    let _ = acks.await;
    result
}

/// Writes acknowledgements in order as batches reach the store.
async fn acknowledge(mut send: FramedSend, mut replies: mpsc::Receiver<Reply>) {
    while let Some(reply) = replies.recv().await {
        let frame = match reply {
            Reply::Stored {
                up_to_seq, stored, ..
            } => match stored.await {
                Ok(Ok(())) => IngestFrame::Ack { up_to_seq },
                Ok(Err(reason)) => IngestFrame::Error { reason },
                Err(_) => return,
            },
            Reply::Error(reason) => IngestFrame::Error { reason },
        };
        let fatal = matches!(frame, IngestFrame::Error { .. });
        if send.write_frame(&frame).await.is_err() {
            return;
        }
        if fatal {
            break;
        }
    }
    finish(send).await;
}

/// Ends a stream and waits (briefly) until the peer has read it, so a last
/// error or refusal is not discarded when the connection closes right after.
async fn finish(mut send: FramedSend) {
    if send.finish().is_ok() {
        let _ = tokio::time::timeout(Duration::from_secs(1), send.stream_mut().stopped()).await;
    }
}
