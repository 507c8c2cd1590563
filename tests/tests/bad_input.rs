//! Bad input gets a clear error and closes only the connection that sent
//! it: a broken or hostile producer or browser must not take the control
//! room's data away from everyone else.

use meridian_manager::frontend::CLOSE_BAD_REQUEST;
use meridian_manager::ingest::close_code;
use meridian_manager::store::memory::MemoryStore;
use meridian_proto::{
    encode_frame, FrameBuffer, Hello, IngestFrame, ProducerFrame, Sample, Value, MAX_FRAME_LEN,
};
use meridian_tests::browser::{Browser, Received};
use meridian_tests::system::System;
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
        meridian_producer::tls::client_config(&system.trust, &Default::default()).unwrap(),
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

/// Reads until the server closes, returning the fatal error message and the close frame.
async fn error_then_close(browser: &mut Browser) -> (String, u16, String) {
    let error = browser.next_json().await.unwrap();
    assert_eq!(error["type"], "error", "{error}");
    assert_eq!(error["fatal"], true, "{error}");
    match browser.next().await.unwrap() {
        Received::Closed { code, reason } => (error["message"].as_str().unwrap().to_string(), code, reason),
        other => panic!("expected a close, got {other:?}"),
    }
}

#[tokio::test]
async fn garbage_on_a_websocket_closes_only_that_connection() {
    let (system, mut watcher) = system().await;
    let mut bad = Browser::connect(&system.ws_url()).await.unwrap();
    bad.send_text("{not json").await.unwrap();
    let (message, code, _) = error_then_close(&mut bad).await;
    assert!(message.contains("not a valid request"), "{message}");
    assert_eq!(code, CLOSE_BAD_REQUEST);

    let mut missing = Browser::connect(&system.ws_url()).await.unwrap();
    missing
        .send_text(r#"{"op":"subscribe","csc":"Test","salindex":1,"category":"telemetry"}"#)
        .await
        .unwrap();
    let (message, code, _) = error_then_close(&mut missing).await;
    assert!(message.contains("missing field `topic`"), "{message}");
    assert_eq!(code, CLOSE_BAD_REQUEST);

    others_keep_receiving(&mut watcher).await;
    system.stop().await;
}

#[tokio::test]
async fn an_oversized_websocket_message_is_refused_naming_the_limit() {
    let (system, mut watcher) = system().await;
    let mut bad = Browser::connect(&system.ws_url()).await.unwrap();
    let limit = meridian_proto::browser::MAX_CLIENT_MESSAGE_LEN;
    bad.send_text(&" ".repeat(limit + 1)).await.unwrap();
    let (message, code, _) = error_then_close(&mut bad).await;
    assert!(message.contains("MAX_CLIENT_MESSAGE_LEN"), "{message}");
    assert!(message.contains(&limit.to_string()), "{message}");
    assert_eq!(code, CLOSE_BAD_REQUEST);
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
    let error = browser.next_json().await.unwrap();
    assert_eq!(error["type"], "error");
    assert_eq!(error["fatal"], false);
    assert!(error["message"].as_str().unwrap().contains("Te st"), "{error}");
    // The same connection still serves a good subscription.
    browser.subscribe("Test:1", "telemetry", "scalars").await.unwrap();
    browser.next_sample().await.unwrap();
    system.stop().await;
}

#[tokio::test]
async fn a_wrong_token_is_refused_before_the_upgrade() {
    let (system, _watcher) = system().await;
    for url in [
        format!("ws://{}/ws?token=wrong", system.frontend_addr),
        format!("ws://{}/ws", system.frontend_addr),
    ] {
        match tokio_tungstenite::connect_async(&url).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                assert_eq!(response.status(), 401, "{url}");
                let body =
                    String::from_utf8_lossy(response.body().as_deref().unwrap_or_default()).into_owned();
                assert!(body.contains("token"), "{body}");
            }
            other => panic!("{url}: expected 401, got {:?}", other.map(|_| ())),
        }
    }
    system.stop().await;
}
