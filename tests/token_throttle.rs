//! Wrong tokens and passwords on the frontend's WebSocket endpoints are
//! throttled per address: after a burst of failures, further attempts from
//! that address are refused at once with close code 4003, without their
//! token being compared (even a valid one waits), on `/ws` and the LOVE
//! endpoint alike.
//!
//! A user would notice a failure here as a frontend that lets a stranger
//! guess tokens as fast as it can connect.

use meridian_manager::frontend::{AUTH_FAILURE_BURST, CLOSE_UNAUTHORIZED};
use meridian_store::redis::RedisStore;
use meridian_testkit::browser::{Browser, Received};
use meridian_testkit::redis_server::RedisServer;
use meridian_testkit::system::{test_config, System, TOKEN};
use std::sync::Arc;

/// How the frontend closed a connection to `url`: (code, reason).
async fn closed(url: &str) -> (u16, String) {
    let mut browser = Browser::connect_raw(url).await.unwrap();
    loop {
        match browser.next().await.unwrap() {
            Received::Closed { code, reason } => return (code, reason),
            Received::Json(v) if v["type"] == "error" => continue,
            other => panic!("{url}: expected a close, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn wrong_tokens_are_throttled_per_address_on_every_websocket_endpoint() {
    let redis = RedisServer::start().unwrap();
    let store = Arc::new(RedisStore::connect(&redis.url()).await.unwrap());
    let mut config = test_config();
    config.frontend.love_password = Some("producer-password".into());
    let system = System::start_with(store, config).await.unwrap();
    let addr = system.frontend_addr;

    // A valid token is welcome before.
    let mut ok = Browser::connect(&system.ws_url()).await.unwrap();
    drop(ok.next().await);

    // The burst of wrong tokens is compared and refused as wrong.
    for i in 0..AUTH_FAILURE_BURST {
        let (code, reason) = closed(&format!("ws://{addr}/ws?token=guess-{i}")).await;
        assert_eq!(code, CLOSE_UNAUTHORIZED);
        assert!(reason.contains("token not accepted"), "{i}: {reason}");
    }
    // Then this address is refused without comparing: even the valid token,
    // on /ws and on the LOVE endpoint (token or password).
    for url in [
        format!("ws://{addr}/ws?token=guess-more"),
        system.ws_url(),
        format!("ws://{addr}/manager/ws/subscription/?token={TOKEN}"),
        format!("ws://{addr}/manager/ws/subscription/?password=producer-password"),
    ] {
        let (code, reason) = closed(&url).await;
        assert_eq!(code, CLOSE_UNAUTHORIZED, "{url}");
        assert!(reason.contains("too many wrong tokens"), "{url}: {reason}");
        assert!(reason.contains("retry in"), "{url}: {reason}");
    }
    system.stop().await;
}
