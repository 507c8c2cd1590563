//! Bad input gets a clear error and closes only the connection that sent
//! it: a broken or hostile producer or browser must not take the control
//! room's data away from everyone else.

use meridian_manager::frontend::CLOSE_UNAUTHORIZED;
use meridian_manager::ingest::close_code;
use meridian_proto::{
    encode_frame, FrameBuffer, Hello, IngestFrame, ProducerFrame, Sample, Value, MAX_FRAME_LEN,
};
use meridian_store::memory::MemoryStore;
use meridian_testkit::browser::{Browser, Received};
use meridian_testkit::system::{System, TOKEN};
use std::sync::Arc;
use std::time::Duration;

const RATE_HZ: f64 = 100.0;

async fn system() -> (System, Browser) {
    let system = System::start(Arc::new(MemoryStore::new()), &["Test:1"], RATE_HZ)
        .await
        .unwrap();
    let mut watcher = Browser::connect(&system.ws_url()).await.unwrap();
    watcher.subscribe("Test:1", "telemetry", "scalars").await.unwrap();
    watcher.next_sample().await.unwrap();
    (system, watcher)
}

/// A raw QUIC connection to the ingest manager, trusting its certificate.
async fn raw_connection(system: &System) -> quinn::Connection {
    let mut endpoint = quinn::Endpoint::client(([127, 0, 0, 1], 0).into()).unwrap();
    endpoint.set_default_client_config(
        meridian_quic::tls::client_config(&system.trust, &Default::default()).unwrap(),
    );
    endpoint
        .connect(system.ingest_addr, "meridian-ingest")
        .unwrap()
        .await
        .unwrap()
}

/// Sends `bytes` on a new stream and returns how the ingest closed the connection.
async fn close_reason_after(system: &System, bytes: &[u8]) -> (u64, String) {
    let conn = raw_connection(system).await;
    let (mut send, _recv) = conn.open_bi().await.unwrap();
    send.write_all(bytes).await.unwrap();
    let _ = send.finish();
    match tokio::time::timeout(Duration::from_secs(10), conn.closed())
        .await
        .expect("ingest did not close")
    {
        quinn::ConnectionError::ApplicationClosed(close) => (
            close.error_code.into_inner(),
            String::from_utf8_lossy(&close.reason).into_owned(),
        ),
        other => panic!("expected an application close with a reason, got {other}"),
    }
}

/// A connection that never sends its hello (a slow link, a stalled
/// process) is dropped after the handshake timeout, but not with a refusal:
/// a real producer retries it instead of stopping for good.
#[tokio::test]
async fn a_connection_without_a_hello_is_dropped_as_retryable_not_refused() {
    let (system, mut watcher) = system().await;
    let conn = raw_connection(&system).await;
    let closed = tokio::time::timeout(Duration::from_secs(30), conn.closed())
        .await
        .expect("the ingest keeps a silent connection forever");
    if let quinn::ConnectionError::ApplicationClosed(close) = &closed {
        assert!(
            !close_code::is_refusal(close.error_code.into_inner()),
            "a timeout must not be final for a producer: {closed}"
        );
    }
    others_keep_receiving(&mut watcher).await;
    system.stop().await;
}

/// The browser watching the healthy producer still receives new samples.
async fn others_keep_receiving(watcher: &mut Browser) {
    let a = watcher.next_sample().await.unwrap()["fields"]["int0"]
        .as_i64()
        .unwrap();
    let b = watcher.next_sample().await.unwrap()["fields"]["int0"]
        .as_i64()
        .unwrap();
    assert!(b > a, "new samples must keep flowing");
}

fn hello(version: u16) -> ProducerFrame {
    ProducerFrame::Hello(Hello {
        protocol_version: version,
        producer_id: 7,
        all_indices: false,
        csc: "Test".into(),
        salindex: 9,
        topics: meridian_sim::interface::Interface::builtin("Test")
            .unwrap()
            .topics(),
    })
}

#[tokio::test]
async fn garbage_on_a_quic_stream_closes_only_that_connection() {
    let (system, mut watcher) = system().await;
    let mut garbage = 40u32.to_be_bytes().to_vec();
    garbage.extend_from_slice(&[0xFF; 40]);
    let (code, reason) = close_reason_after(&system, &garbage).await;
    assert_eq!(code, close_code::PROTOCOL_ERROR as u64);
    assert!(reason.contains("malformed frame"), "{reason}");
    others_keep_receiving(&mut watcher).await;
    system.stop().await;
}

#[tokio::test]
async fn an_oversized_frame_is_refused_naming_the_limit() {
    let (system, mut watcher) = system().await;
    let prefix = ((MAX_FRAME_LEN + 1) as u32).to_be_bytes();
    let (code, reason) = close_reason_after(&system, &prefix).await;
    assert_eq!(code, close_code::PROTOCOL_ERROR as u64);
    assert!(reason.contains("MAX_FRAME_LEN"), "{reason}");
    assert!(reason.contains(&MAX_FRAME_LEN.to_string()), "{reason}");
    others_keep_receiving(&mut watcher).await;
    system.stop().await;
}

#[tokio::test]
async fn a_truncated_frame_is_an_error_not_a_hang() {
    let (system, mut watcher) = system().await;
    let mut bytes = Vec::new();
    encode_frame(&hello(meridian_proto::PROTOCOL_VERSION), &mut bytes).unwrap();
    bytes.truncate(bytes.len() / 2);
    let (code, reason) = close_reason_after(&system, &bytes).await;
    assert_eq!(code, close_code::PROTOCOL_ERROR as u64);
    assert!(reason.contains("stream ended inside a frame"), "{reason}");
    others_keep_receiving(&mut watcher).await;
    system.stop().await;
}

#[tokio::test]
async fn a_hello_of_another_protocol_version_is_refused_with_the_reason() {
    let (system, mut watcher) = system().await;
    let conn = raw_connection(&system).await;
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    let mut bytes = Vec::new();
    encode_frame(&hello(99), &mut bytes).unwrap();
    send.write_all(&bytes).await.unwrap();
    let answer = recv.read_to_end(64 * 1024).await.unwrap_or_default();
    let mut frames = FrameBuffer::new();
    frames.extend(&answer);
    match frames.next_frame::<IngestFrame>().unwrap() {
        Some(IngestFrame::Refused { reason }) => {
            assert!(reason.contains("hello.protocol_version"), "{reason}");
            assert!(reason.contains("99"), "{reason}");
        }
        other => panic!("expected Refused, got {other:?}"),
    }
    others_keep_receiving(&mut watcher).await;
    system.stop().await;
}

#[tokio::test]
async fn a_sample_of_an_undeclared_topic_is_refused_naming_it() {
    let (system, mut watcher) = system().await;
    let conn = raw_connection(&system).await;
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    let mut bytes = Vec::new();
    encode_frame(&hello(meridian_proto::PROTOCOL_VERSION), &mut bytes).unwrap();
    encode_frame(
        &ProducerFrame::Batch(vec![Sample {
            topic: "noSuchTopic".into(),
            category: meridian_proto::Category::Telemetry,
            salindex: None,
            seq: 1,
            source_ts: 1.0,
            fields: vec![("x".into(), Value::Int(1))],
        }]),
        &mut bytes,
    )
    .unwrap();
    send.write_all(&bytes).await.unwrap();
    let answer = recv.read_to_end(64 * 1024).await.unwrap_or_default();
    let mut frames = FrameBuffer::new();
    frames.extend(&answer);
    assert!(matches!(
        frames.next_frame::<IngestFrame>().unwrap(),
        Some(IngestFrame::Welcome { .. })
    ));
    match frames.next_frame::<IngestFrame>().unwrap() {
        Some(IngestFrame::Error { reason }) => assert!(reason.contains("\"noSuchTopic\""), "{reason}"),
        other => panic!("expected Error, got {other:?}"),
    }
    others_keep_receiving(&mut watcher).await;
    system.stop().await;
}

/// The next reply is a non-fatal error; returns its message.
async fn error_reply(browser: &mut Browser) -> String {
    let error = browser.next_of("error").await.unwrap();
    assert_eq!(error["fatal"], false, "{error}");
    error["message"].as_str().unwrap().to_string()
}

/// After bad input, the same connection still serves a good subscription.
async fn still_served(browser: &mut Browser) {
    browser.subscribe("Test:1", "telemetry", "scalars").await.unwrap();
    let sample = browser.next_sample().await.unwrap();
    assert_eq!(sample["topic"], "scalars");
}

/// Garbage, a request missing a field, and a binary frame each get an error
/// naming what was wrong; the connection stays open, and others are unaffected.
#[tokio::test]
async fn garbage_on_a_websocket_is_answered_and_the_connection_kept() {
    let (system, mut watcher) = system().await;
    let mut bad = Browser::connect(&system.ws_url()).await.unwrap();
    bad.send_text("{not json").await.unwrap();
    let message = error_reply(&mut bad).await;
    assert!(message.contains("not a valid request"), "{message}");

    bad.send_text(r#"{"op":"subscribe","salindex":1,"category":"telemetry"}"#)
        .await
        .unwrap();
    let message = error_reply(&mut bad).await;
    assert!(message.contains("missing field `csc`"), "{message}");

    bad.send_text(
        r#"{"op":"subscribe","csc":"Test","salindex":1,"category":"telemetry","topic":"scalars","colour":1}"#,
    )
    .await
    .unwrap();
    let message = error_reply(&mut bad).await;
    assert!(message.contains("colour"), "{message}");

    still_served(&mut bad).await;
    others_keep_receiving(&mut watcher).await;
    system.stop().await;
}

#[tokio::test]
async fn an_oversized_websocket_message_is_refused_naming_the_limit() {
    let (system, mut watcher) = system().await;
    let mut bad = Browser::connect(&system.ws_url()).await.unwrap();
    let limit = meridian_proto::browser::MAX_CLIENT_MESSAGE_LEN;
    bad.send_text(&" ".repeat(limit + 1)).await.unwrap();
    let message = error_reply(&mut bad).await;
    assert!(message.contains("MAX_CLIENT_MESSAGE_LEN"), "{message}");
    assert!(message.contains(&limit.to_string()), "{message}");
    still_served(&mut bad).await;
    others_keep_receiving(&mut watcher).await;
    system.stop().await;
}

#[tokio::test]
async fn a_bad_name_is_an_error_that_keeps_the_connection() {
    let (system, _watcher) = system().await;
    let mut browser = Browser::connect(&system.ws_url()).await.unwrap();
    browser
        .subscribe("Te st:1", "telemetry", "scalars")
        .await
        .unwrap();
    let message = error_reply(&mut browser).await;
    assert!(message.contains("Te st"), "{message}");
    still_served(&mut browser).await;
    system.stop().await;
}

/// A topic no producer declared is an error naming it, not a silent subscription.
#[tokio::test]
async fn an_unknown_topic_is_an_error_that_keeps_the_connection() {
    let (system, _watcher) = system().await;
    let mut browser = Browser::connect(&system.ws_url()).await.unwrap();
    browser
        .subscribe("Test:1", "telemetry", "noSuchTopic")
        .await
        .unwrap();
    let message = error_reply(&mut browser).await;
    assert!(
        message.contains("unknown topic") && message.contains("noSuchTopic"),
        "{message}"
    );
    // A CSC no producer declared yet is waited for, not refused.
    browser
        .subscribe("NoSuchCsc:1", "event", "heartbeat")
        .await
        .unwrap();
    let reply = browser.next_of("subscribed").await.unwrap();
    assert_eq!(reply["waiting"], true, "{reply}");
    still_served(&mut browser).await;
    system.stop().await;
}

/// The close frame that ends a refused connection, after its fatal error message.
async fn refused(browser: &mut Browser) -> (String, u16, String) {
    let error = browser.next_json().await.unwrap();
    assert_eq!(error["type"], "error", "{error}");
    assert_eq!(error["fatal"], true, "{error}");
    match browser.next().await.unwrap() {
        Received::Closed { code, reason } => (error["message"].as_str().unwrap().to_string(), code, reason),
        other => panic!("expected a close, got {other:?}"),
    }
}

/// A wrong token, in the URL or in the first message, and no token at all,
/// are refused with close code 4003 and a reason a browser can show.
#[tokio::test]
async fn a_wrong_or_missing_token_is_refused_with_a_close_reason() {
    let (system, _watcher) = system().await;
    let mut wrong = Browser::connect_raw(&format!("ws://{}/ws?token=wrong", system.frontend_addr))
        .await
        .unwrap();
    let (message, code, reason) = refused(&mut wrong).await;
    assert_eq!(code, CLOSE_UNAUTHORIZED);
    assert!(
        message.contains("token not accepted") && reason.contains("token"),
        "{message} / {reason}"
    );

    let url = format!("ws://{}/ws", system.frontend_addr);
    let mut wrong_first = Browser::connect_raw(&url).await.unwrap();
    wrong_first
        .send_text(r#"{"op":"auth","token":"wrong"}"#)
        .await
        .unwrap();
    let (_, code, _) = refused(&mut wrong_first).await;
    assert_eq!(code, CLOSE_UNAUTHORIZED);

    let mut none = Browser::connect_raw(&url).await.unwrap();
    none.subscribe("Test:1", "telemetry", "scalars").await.unwrap();
    let (message, code, _) = refused(&mut none).await;
    assert_eq!(code, CLOSE_UNAUTHORIZED);
    assert!(message.contains("missing token"), "{message}");
    system.stop().await;
}

/// The token may come as the first message instead of in the URL (so it
/// stays out of proxy logs); the welcome names the scope it grants.
#[tokio::test]
async fn a_token_in_the_first_message_is_accepted_with_its_scope() {
    let (system, _watcher) = system().await;
    let mut browser = Browser::connect_raw(&format!("ws://{}/ws", system.frontend_addr))
        .await
        .unwrap();
    browser
        .send_text(&format!(r#"{{"op":"auth","token":"{TOKEN}"}}"#))
        .await
        .unwrap();
    let welcome = browser.next_json().await.unwrap();
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    assert_eq!(welcome["scope"], "read");
    still_served(&mut browser).await;
    system.stop().await;
}
