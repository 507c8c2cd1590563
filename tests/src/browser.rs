//! A WebSocket client speaking the native protocol, as a browser would.

use anyhow::{anyhow, bail, Context};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// How long a test waits for a message it expects.
pub const DEADLINE: Duration = Duration::from_secs(10);

pub struct Browser {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

/// What the next frame from the server was.
#[derive(Debug)]
pub enum Received {
    Json(Value),
    Closed { code: u16, reason: String },
}

impl Browser {
    pub async fn connect(url: &str) -> anyhow::Result<Browser> {
        let (ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .with_context(|| format!("connect {url}"))?;
        Ok(Browser { ws })
    }

    pub async fn send_text(&mut self, text: &str) -> anyhow::Result<()> {
        self.ws.send(Message::Text(text.into())).await?;
        Ok(())
    }

    /// Sends a subscribe request for `csc` (`Name:index`), category and topic.
    pub async fn subscribe(&mut self, csc: &str, category: &str, topic: &str) -> anyhow::Result<()> {
        let (name, index) = csc.split_once(':').unwrap_or((csc, "0"));
        let request = json!({"op": "subscribe", "csc": name, "salindex": index.parse::<u32>()?,
                             "category": category, "topic": topic});
        self.send_text(&request.to_string()).await
    }

    /// The next JSON message or close frame, within [`DEADLINE`].
    pub async fn next(&mut self) -> anyhow::Result<Received> {
        loop {
            let frame = tokio::time::timeout(DEADLINE, self.ws.next())
                .await
                .map_err(|_| anyhow!("no message within {DEADLINE:?}"))?;
            match frame {
                Some(Ok(Message::Text(text))) => {
                    return Ok(Received::Json(
                        serde_json::from_str(&text).context("server sent invalid JSON")?,
                    ))
                }
                Some(Ok(Message::Close(frame))) => {
                    let (code, reason) =
                        frame.map_or((1005, String::new()), |f| (f.code.into(), f.reason.to_string()));
                    return Ok(Received::Closed { code, reason });
                }
                Some(Ok(_)) => continue,
                Some(Err(e)) => bail!("websocket error: {e}"),
                None => {
                    return Ok(Received::Closed {
                        code: 1006,
                        reason: "stream ended".into(),
                    })
                }
            }
        }
    }

    /// The next JSON message; a close is an error naming its code and reason.
    pub async fn next_json(&mut self) -> anyhow::Result<Value> {
        match self.next().await? {
            Received::Json(v) => Ok(v),
            Received::Closed { code, reason } => bail!("connection closed: {code} {reason}"),
        }
    }

    /// The next message of type `sample`, skipping replies.
    pub async fn next_sample(&mut self) -> anyhow::Result<Value> {
        loop {
            let v = self.next_json().await?;
            if v["type"] == "sample" {
                return Ok(v);
            }
            if v["type"] == "error" {
                bail!("server error: {v}");
            }
        }
    }
}
