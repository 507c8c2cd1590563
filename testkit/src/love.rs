//! A client of the compatibility endpoint (`/manager/ws/subscription/`),
//! speaking the replaced system's protocol as its browser client and its
//! producers do: raw JSON text over a real WebSocket, no translation, so a
//! test sees exactly what the replaced client would.

use crate::browser::DEADLINE;
use crate::system::{System, TOKEN};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::time::Instant;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// What the server sent next.
#[derive(Debug)]
pub enum Got {
    Json(Value),
    Closed { code: u16, reason: String },
}

/// The compatibility endpoint's URL on `system`'s frontend, with `query`
/// (`token=…` for a browser, `password=…` for a producer).
pub fn love_url(system: &System, query: &str) -> String {
    format!("ws://{}/manager/ws/subscription/?{query}", system.frontend_addr)
}

/// The keys of a JSON object (a message's shape).
pub fn keys(v: &Value) -> BTreeSet<&str> {
    v.as_object()
        .unwrap_or_else(|| panic!("not an object: {v}"))
        .keys()
        .map(String::as_str)
        .collect()
}

pub struct Love {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl Love {
    pub async fn connect(url: &str) -> Love {
        let (ws, _) = tokio_tungstenite::connect_async(url).await.expect("connect");
        Love { ws }
    }

    /// A browser of `system` with the test token.
    pub async fn browser(system: &System) -> Love {
        Self::connect(&love_url(system, &format!("token={TOKEN}"))).await
    }

    pub async fn send(&mut self, v: Value) {
        self.send_text(&v.to_string()).await
    }

    pub async fn send_text(&mut self, text: &str) {
        self.ws.send(Message::Text(text.into())).await.expect("send");
    }

    /// The next message or close, within [`DEADLINE`]. No message may carry a bare NaN or Infinity.
    pub async fn next(&mut self) -> Got {
        loop {
            let frame = tokio::time::timeout(DEADLINE, self.ws.next())
                .await
                .expect("no message within the deadline");
            match frame {
                Some(Ok(Message::Text(text))) => {
                    let v: Value =
                        serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"));
                    assert!(!text.contains("NaN") && !text.contains("Infinity"), "{text}");
                    return Got::Json(v);
                }
                Some(Ok(Message::Close(frame))) => {
                    let (code, reason) =
                        frame.map_or((1005, String::new()), |f| (f.code.into(), f.reason.to_string()));
                    return Got::Closed { code, reason };
                }
                Some(Ok(_)) => continue,
                Some(Err(e)) => panic!("websocket error: {e}"),
                None => {
                    return Got::Closed {
                        code: 1006,
                        reason: String::new(),
                    }
                }
            }
        }
    }

    /// The next message; a close fails the test.
    pub async fn json(&mut self) -> Value {
        match self.next().await {
            Got::Json(v) => v,
            Got::Closed { code, reason } => panic!("closed: {code} {reason}"),
        }
    }

    /// The next message `want` accepts, skipping others, within [`DEADLINE`].
    pub async fn until(&mut self, what: &str, want: impl Fn(&Value) -> bool) -> Value {
        let end = Instant::now() + DEADLINE;
        loop {
            assert!(Instant::now() < end, "timed out waiting for {what}");
            let v = self.json().await;
            if want(&v) {
                return v;
            }
        }
    }

    pub async fn subscribe(&mut self, category: &str, csc: &str, salindex: Value, stream: &str) {
        self.send(json!({"option": "subscribe", "category": category, "csc": csc, "salindex": salindex, "stream": stream}))
            .await
    }

    pub async fn unsubscribe(&mut self, category: &str, csc: &str, salindex: Value, stream: &str) {
        self.send(json!({"option": "unsubscribe", "category": category, "csc": csc, "salindex": salindex, "stream": stream}))
            .await
    }
}
