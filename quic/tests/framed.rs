//! The framed reader and writer over a real quinn connection on loopback:
//! what a peer that ends, truncates, garbles or resets a stream looks like
//! to the reader.

use meridian_proto::{encode_frame, IngestFrame, MAX_FRAME_LEN};
use meridian_quic::tls::{client_config, server_config, Identity, ServerTrust};
use meridian_quic::{FrameError, FramedRecv, FramedSend};
use std::time::Duration;

/// One stream of a loopback connection: the client's sending end (the
/// test writes the peer's bytes) and the server's receiving end, which the
/// server sees only once bytes arrived, so it is accepted in the background.
struct Stream {
    send: quinn::SendStream,
    accepted: tokio::task::JoinHandle<(quinn::Connection, quinn::RecvStream)>,
    // Kept open for the test's length.
    _client: quinn::Connection,
    server: Option<quinn::Connection>,
    _endpoints: (quinn::Endpoint, quinn::Endpoint),
}

impl Stream {
    /// The reader under test, once the server saw the stream.
    async fn reader(&mut self) -> FramedRecv {
        let (server, recv) = within(&mut self.accepted).await.unwrap();
        self.server = Some(server);
        FramedRecv::new(recv)
    }
}

async fn stream() -> Stream {
    let identity = Identity::self_signed("localhost").unwrap();
    let trust = ServerTrust::Roots(identity.chain.clone());
    let server =
        quinn::Endpoint::server(server_config(identity, None).unwrap(), ([127, 0, 0, 1], 0).into()).unwrap();
    let mut client = quinn::Endpoint::client(([127, 0, 0, 1], 0).into()).unwrap();
    client.set_default_client_config(client_config(&trust, &Default::default()).unwrap());
    let connecting = client.connect(server.local_addr().unwrap(), "localhost").unwrap();
    let accepting = server.accept();
    let (client_conn, server_conn) = tokio::join!(connecting, async { accepting.await.unwrap().await });
    let (client_conn, server_conn) = (client_conn.unwrap(), server_conn.unwrap());
    let (send, _) = client_conn.open_bi().await.unwrap();
    let accepted = tokio::spawn(async move {
        let (_send, recv) = server_conn.accept_bi().await.unwrap();
        (server_conn, recv)
    });
    Stream {
        send,
        accepted,
        _client: client_conn,
        server: None,
        _endpoints: (server, client),
    }
}

fn ack(seq: u64) -> Vec<u8> {
    let mut buf = Vec::new();
    encode_frame(&IngestFrame::Ack { up_to_seq: seq }, &mut buf).unwrap();
    buf
}

async fn within<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(10), f)
        .await
        .expect("the reader answered within 10 s")
}

#[tokio::test]
async fn frames_arrive_in_order_then_a_clean_end() {
    let mut s = stream().await;
    let mut writer = FramedSend::new(s.send);
    writer
        .write_frame(&IngestFrame::Ack { up_to_seq: 1 })
        .await
        .unwrap();
    writer.write_encoded(&ack(2)).await.unwrap();
    writer.finish().unwrap();
    s.send = writer.into_stream();
    let mut reader = s.reader().await;
    for seq in [1, 2] {
        let frame: Option<IngestFrame> = within(reader.read_frame()).await.unwrap();
        assert_eq!(frame, Some(IngestFrame::Ack { up_to_seq: seq }));
    }
    let end: Option<IngestFrame> = within(reader.read_frame()).await.unwrap();
    assert_eq!(end, None, "a stream finished between frames is a clean end");
}

/// The bug of the producer's old reader: a peer that stops in the middle
/// of a frame (it crashed mid-write) looked like one that finished cleanly.
#[tokio::test]
async fn a_stream_ending_inside_a_frame_is_truncated_not_a_clean_end() {
    let mut s = stream().await;
    let whole = ack(1);
    let mut bytes = ack(7);
    bytes.extend_from_slice(&whole[..whole.len() - 1]);
    s.send.write_all(&bytes).await.unwrap();
    s.send.finish().unwrap();
    let mut reader = s.reader().await;
    let first: Option<IngestFrame> = within(reader.read_frame()).await.unwrap();
    assert_eq!(first, Some(IngestFrame::Ack { up_to_seq: 7 }));
    let err = within(reader.read_frame::<IngestFrame>()).await.unwrap_err();
    assert!(
        matches!(err, FrameError::Truncated { buffered } if buffered == whole.len() - 1),
        "{err:?}"
    );
    assert!(
        !err.is_lost(),
        "a truncated frame is the peer's fault, not a lost connection"
    );
    assert_eq!(
        err.to_string(),
        format!(
            "stream ended inside a frame ({} bytes left over)",
            whole.len() - 1
        )
    );
}

/// A length prefix alone (the stream ends before any payload) is truncated too.
#[tokio::test]
async fn a_stream_ending_after_a_length_prefix_is_truncated() {
    let mut s = stream().await;
    s.send.write_all(&[0, 0, 0, 9, 1]).await.unwrap();
    s.send.finish().unwrap();
    let mut reader = s.reader().await;
    let err = within(reader.read_frame::<IngestFrame>()).await.unwrap_err();
    assert!(matches!(err, FrameError::Truncated { buffered: 5 }), "{err:?}");
}

#[tokio::test]
async fn an_oversized_length_prefix_is_too_large_before_any_payload() {
    let mut s = stream().await;
    let len = (MAX_FRAME_LEN as u32 + 1).to_be_bytes();
    s.send.write_all(&len).await.unwrap();
    let mut reader = s.reader().await;
    let err = within(reader.read_frame::<IngestFrame>()).await.unwrap_err();
    assert!(
        matches!(err, FrameError::TooLarge { len, max } if len == MAX_FRAME_LEN + 1 && max == MAX_FRAME_LEN),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_payload_that_is_not_a_frame_is_malformed() {
    let mut s = stream().await;
    s.send.write_all(&[0, 0, 0, 2, 0xff, 0xff]).await.unwrap();
    let mut reader = s.reader().await;
    let err = within(reader.read_frame::<IngestFrame>()).await.unwrap_err();
    assert!(matches!(err, FrameError::Malformed { .. }), "{err:?}");
    assert!(!err.is_lost());
}

#[tokio::test]
async fn a_reset_stream_is_lost_not_malformed() {
    let mut s = stream().await;
    let whole = ack(1);
    s.send.write_all(&whole[..3]).await.unwrap();
    let mut reader = s.reader().await;
    s.send.reset(5u32.into()).unwrap();
    let err = within(reader.read_frame::<IngestFrame>()).await.unwrap_err();
    assert!(
        matches!(err, FrameError::Read(quinn::ReadError::Reset(_))),
        "{err:?}"
    );
    assert!(err.is_lost());
}

#[tokio::test]
async fn an_oversized_frame_is_not_written() {
    let mut s = stream().await;
    let mut writer = FramedSend::new(s.send);
    let huge = IngestFrame::Error {
        reason: "x".repeat(MAX_FRAME_LEN + 1),
    };
    let err = writer.write_frame(&huge).await.unwrap_err();
    assert!(matches!(err, FrameError::Encode(_)), "{err:?}");
    writer
        .write_frame(&IngestFrame::Ack { up_to_seq: 3 })
        .await
        .unwrap();
    writer.finish().unwrap();
    s.send = writer.into_stream();
    let mut reader = s.reader().await;
    let frame: Option<IngestFrame> = within(reader.read_frame()).await.unwrap();
    assert_eq!(
        frame,
        Some(IngestFrame::Ack { up_to_seq: 3 }),
        "nothing of the refused frame went out"
    );
}
