//! One QUIC connection to an ingest manager.
//!
//! The first bidirectional stream carries the handshake and then events; a
//! second one carries telemetry, so a burst of telemetry never delays an
//! event: the event stream has the higher send priority
//! ([`EVENT_STREAM_PRIORITY`]), and the ingest writes event batches before
//! queued telemetry. Each stream has a writer task fed through a small
//! bounded queue of encoded frames, and a reader task that reports
//! acknowledgements; both report a lost connection. The producer's loop never waits on the
//! network: when a queue is full, events stay in the spool and telemetry is
//! resampled at the next tick.

use meridian_proto::frame::close_code;
use meridian_proto::{encode_frame, CscId, Hello, IngestFrame, ProducerFrame, TopicSchema, PROTOCOL_VERSION};
use meridian_quic::{FramedRecv, FramedSend};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tracing::Instrument;

/// How long to wait for an ingest manager to answer the hello.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// Encoded frames waiting for a stream's writer. Small: the spool, not this
/// queue, is where events wait.
pub const FRAMES_QUEUED: usize = 8;

/// QUIC send priority of the event stream; telemetry keeps quinn's default
/// of 0. When the connection cannot send everything at once (congestion or
/// flow control), quinn sends the higher priority stream's data first, so
/// queued event bytes overtake a burst of telemetry bytes.
pub const EVENT_STREAM_PRIORITY: i32 = 1;

/// Why a session could not start.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ConnectError {
    #[error("no ingest address configured")]
    NoAddress,
    /// No answer, a network error, or a passing close (the ingest is
    /// draining or busy): try the next address, then retry with backoff.
    #[error("{addr}: {reason}")]
    Unreachable { addr: String, reason: String },
    /// The ingest manager refused this producer (identity, version, names,
    /// a hello it could not read): fix the configuration, retrying will not
    /// help. Not for an ingest that closes because it is draining: that is
    /// [`ConnectError::Unreachable`], retried with backoff.
    #[error("{addr} refused this producer: {reason}")]
    Refused { addr: String, reason: String },
}

/// What the stream tasks report to the producer's loop.
#[derive(Debug)]
pub enum Report {
    /// Every event with `seq <= up_to_seq` is stored.
    EventsStored(u64),
    /// Every telemetry sample with `seq <= up_to_seq` is stored.
    TelemetryStored(u64),
    /// The ingest refused a batch; the stream closes.
    Refused(String),
    /// The connection or a stream ended.
    Lost(String),
}

/// Which stream a frame goes on.
#[derive(Debug, Clone, Copy)]
pub enum Stream {
    Events,
    Telemetry,
}

pub struct Session {
    pub addr: String,
    conn: quinn::Connection,
    events: mpsc::Sender<Vec<u8>>,
    telemetry: mpsc::Sender<Vec<u8>>,
    reports: mpsc::Receiver<Report>,
    tasks: JoinSet<()>,
}

/// What to say in the hello.
#[derive(Clone)]
pub struct Identity {
    pub producer_id: u64,
    pub csc: CscId,
    pub all_indices: bool,
    pub schemas: Vec<TopicSchema>,
}

impl Session {
    /// Connects to the first ingest manager of `addrs` that answers, and says hello.
    pub async fn connect(
        endpoint: quinn::Endpoint,
        addrs: Vec<String>,
        server_name: String,
        identity: Identity,
    ) -> Result<Session, ConnectError> {
        let mut last = ConnectError::NoAddress;
        for addr in addrs {
            match Self::connect_one(&endpoint, &addr, &server_name, &identity).await {
                Ok(session) => return Ok(session),
                Err(e @ ConnectError::Refused { .. }) => return Err(e),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    async fn connect_one(
        endpoint: &quinn::Endpoint,
        addr: &str,
        server_name: &str,
        identity: &Identity,
    ) -> Result<Session, ConnectError> {
        let unreachable = |reason: String| ConnectError::Unreachable {
            addr: addr.to_string(),
            reason,
        };
        let refused = |reason: String| ConnectError::Refused {
            addr: addr.to_string(),
            reason,
        };
        let socket = tokio::net::lookup_host(addr)
            .await
            .map_err(|e| unreachable(e.to_string()))?
            .next()
            .ok_or_else(|| unreachable("no address for this name".into()))?;
        let connecting = endpoint
            .connect(socket, server_name)
            .map_err(|e| unreachable(e.to_string()))?;
        let conn = tokio::time::timeout(HANDSHAKE_TIMEOUT, connecting)
            .await
            .map_err(|_| unreachable("QUIC handshake timed out".into()))?
            .map_err(|e| match tls_rejection(&e) {
                true => refused(format!(
                    "TLS handshake rejected ({e}): check tls.cert, tls.key and tls.ca"
                )),
                false => unreachable(e.to_string()),
            })?;
        // In TLS 1.3 the ingest checks our certificate after we think the
        // handshake is done: its rejection arrives as the connection closing.
        // Only a refusal is final; an ingest that closes because it is
        // draining (restarting) is retried like an unreachable one.
        let closed_reason = |e: quinn::ConnectionError| match e {
            quinn::ConnectionError::ApplicationClosed(close) => {
                let code = close.error_code.into_inner();
                let reason = String::from_utf8_lossy(&close.reason).into_owned();
                match close_code::is_refusal(code) {
                    true => refused(reason),
                    false => unreachable(format!("closed during the handshake (code {code}): {reason}")),
                }
            }
            other if tls_rejection(&other) => refused(format!(
                "TLS handshake rejected ({other}): check tls.cert, tls.key and tls.ca"
            )),
            other => unreachable(other.to_string()),
        };
        let (events, recv) = conn.open_bi().await.map_err(closed_reason)?;
        events
            .set_priority(EVENT_STREAM_PRIORITY)
            .map_err(|e| unreachable(e.to_string()))?;
        let (mut events, mut recv) = (FramedSend::new(events), FramedRecv::new(recv));
        let hello = ProducerFrame::Hello(Hello {
            protocol_version: PROTOCOL_VERSION,
            producer_id: identity.producer_id,
            csc: identity.csc.csc.to_string(),
            salindex: identity.csc.salindex,
            all_indices: identity.all_indices,
            topics: identity.schemas.clone(),
        });
        events
            .write_frame(&hello)
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        let answer = tokio::time::timeout(HANDSHAKE_TIMEOUT, recv.read_frame::<IngestFrame>())
            .await
            .map_err(|_| unreachable("no answer to the hello".into()))?;
        match answer {
            Ok(Some(IngestFrame::Welcome { .. })) => {}
            Ok(Some(IngestFrame::Refused { reason })) => return Err(refused(reason)),
            Ok(Some(other)) => return Err(unreachable(format!("unexpected answer to the hello: {other:?}"))),
            Ok(None) | Err(_) => {
                // The ingest closed the connection instead of answering: its reason says why.
                return Err(match conn.close_reason() {
                    Some(reason) => closed_reason(reason),
                    None => unreachable("stream closed before the answer".into()),
                });
            }
        }
        let (telemetry, telemetry_recv) = conn.open_bi().await.map_err(|e| unreachable(e.to_string()))?;
        let (report_tx, reports) = mpsc::channel(256);
        let (events_tx, events_rx) = mpsc::channel(FRAMES_QUEUED);
        let (telemetry_tx, telemetry_rx) = mpsc::channel(FRAMES_QUEUED);
        let mut tasks = JoinSet::new();
        let span = tracing::Span::current();
        tasks.spawn(write_frames(events, events_rx, report_tx.clone()).instrument(span.clone()));
        tasks.spawn(
            write_frames(FramedSend::new(telemetry), telemetry_rx, report_tx.clone())
                .instrument(span.clone()),
        );
        tasks.spawn(read_acks(recv, Stream::Events, report_tx.clone()).instrument(span.clone()));
        tasks
            .spawn(read_acks(FramedRecv::new(telemetry_recv), Stream::Telemetry, report_tx).instrument(span));
        Ok(Session {
            addr: addr.to_string(),
            conn,
            events: events_tx,
            telemetry: telemetry_tx,
            reports,
            tasks,
        })
    }

    /// Room for one more frame on `stream`, without waiting.
    pub fn try_reserve(&self, stream: Stream) -> Option<mpsc::Permit<'_, Vec<u8>>> {
        match stream {
            Stream::Events => self.events.try_reserve().ok(),
            Stream::Telemetry => self.telemetry.try_reserve().ok(),
        }
    }

    /// The next report of the stream tasks.
    pub async fn report(&mut self) -> Report {
        self.reports
            .recv()
            .await
            .unwrap_or(Report::Lost("stream tasks ended".into()))
    }

    /// Closes the connection (after the streams were drained, at shutdown).
    pub fn close(mut self, reason: &str) {
        self.conn.close(0u32.into(), reason.as_bytes());
        self.tasks.abort_all();
    }
}

/// Whether the TLS handshake failed on a certificate (a TLS alert, from
/// either side): a configuration problem that retrying will not fix, unlike
/// a network fault.
fn tls_rejection(e: &quinn::ConnectionError) -> bool {
    // QUIC carries TLS alerts as transport error codes 0x100 + alert.
    let is_alert = |code: quinn::TransportErrorCode| (0x100..0x200).contains(&u64::from(code));
    match e {
        quinn::ConnectionError::TransportError(t) => is_alert(t.code),
        quinn::ConnectionError::ConnectionClosed(c) => is_alert(c.error_code),
        _ => false,
    }
}

/// Encodes a frame; a frame over the size limit is an error to log, not to send.
pub fn encode(frame: &ProducerFrame) -> Result<Vec<u8>, meridian_proto::EncodeError> {
    let mut buf = Vec::new();
    encode_frame(frame, &mut buf)?;
    Ok(buf)
}

/// Writes queued frames to one stream until the queue closes or the stream fails.
async fn write_frames(
    mut send: FramedSend,
    mut frames: mpsc::Receiver<Vec<u8>>,
    reports: mpsc::Sender<Report>,
) {
    while let Some(frame) = frames.recv().await {
        if let Err(e) = send.write_encoded(&frame).await {
            let _ = reports.send(Report::Lost(e.to_string())).await;
            return;
        }
    }
    let _ = send.finish();
}

/// Reports acknowledgements of one stream until it ends.
async fn read_acks(mut recv: FramedRecv, stream: Stream, reports: mpsc::Sender<Report>) {
    let report = loop {
        match recv.read_frame::<IngestFrame>().await {
            Ok(Some(IngestFrame::Ack { up_to_seq })) => {
                let r = match stream {
                    Stream::Events => Report::EventsStored(up_to_seq),
                    Stream::Telemetry => Report::TelemetryStored(up_to_seq),
                };
                if reports.send(r).await.is_err() {
                    return;
                }
            }
            Ok(Some(IngestFrame::Error { reason })) => break Report::Refused(reason),
            Ok(Some(other)) => break Report::Lost(format!("unexpected frame from ingest: {other:?}")),
            Ok(None) => break Report::Lost(format!("ingest closed the {stream:?} stream")),
            // A truncated or malformed ack is as final as a lost stream:
            // the spool replays what it did not acknowledge.
            Err(e) => break Report::Lost(e.to_string()),
        }
    };
    let _ = reports.send(report).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use meridian_quic::tls::{client_config, server_config, Identity as TlsIdentity, ServerTrust};

    /// An ingest that acknowledges seq 3, then dies in the middle of the
    /// next acknowledgement (its stream ends inside a frame): the producer
    /// must report the connection lost because of a truncated frame, not a
    /// stream the ingest closed cleanly.
    #[tokio::test]
    async fn an_ack_stream_ending_inside_a_frame_is_reported_as_truncated() {
        let identity = TlsIdentity::self_signed("localhost").unwrap();
        let trust = ServerTrust::Roots(identity.chain.clone());
        let server =
            quinn::Endpoint::server(server_config(identity, None).unwrap(), ([127, 0, 0, 1], 0).into())
                .unwrap();
        let mut client = quinn::Endpoint::client(([127, 0, 0, 1], 0).into()).unwrap();
        client.set_default_client_config(client_config(&trust, &Default::default()).unwrap());
        let addr = server.local_addr().unwrap();
        let ingest = tokio::spawn(async move {
            let conn = server.accept().await.unwrap().await.unwrap();
            let (mut send, _recv) = conn.accept_bi().await.unwrap();
            let mut bytes = Vec::new();
            encode_frame(&IngestFrame::Ack { up_to_seq: 3 }, &mut bytes).unwrap();
            let mut next = Vec::new();
            encode_frame(&IngestFrame::Ack { up_to_seq: 4 }, &mut next).unwrap();
            bytes.extend_from_slice(&next[..next.len() - 2]);
            send.write_all(&bytes).await.unwrap();
            send.finish().unwrap();
            let _ = send.stopped().await;
            (conn, server)
        });
        let conn = client.connect(addr, "localhost").unwrap().await.unwrap();
        let (mut send, recv) = conn.open_bi().await.unwrap();
        send.write_all(b"x").await.unwrap();
        let (tx, mut reports) = mpsc::channel(4);
        tokio::spawn(read_acks(FramedRecv::new(recv), Stream::Events, tx));
        let first = reports.recv().await.unwrap();
        assert!(matches!(first, Report::EventsStored(3)), "{first:?}");
        let second = reports.recv().await.unwrap();
        match second {
            Report::Lost(reason) => assert!(reason.contains("stream ended inside a frame"), "{reason}"),
            other => panic!("expected a lost connection, got {other:?}"),
        }
        drop(ingest);
    }
}
