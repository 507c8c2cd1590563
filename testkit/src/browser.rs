//! A WebSocket client speaking the native protocol, as a browser would.
//!
//! Batch frames are unpacked: each sample of a batch comes out of
//! [`Browser::next_json`] as its own `{"type":"sample",…}` message, and each
//! entry of a batch's `lost` list as a `{"type":"lost",…}` message (the
//! topic and `from_id`), in the order the batch carried them (samples first).
//! Binary batch frames (`?format=msgpack`) are decoded with the protocol
//! crate's MessagePack reader and unpacked the same way.

use anyhow::{anyhow, bail, Context};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::collections::{HashMap, VecDeque};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// How long a test waits for a message it expects.
pub const DEADLINE: Duration = Duration::from_secs(10);

pub struct Browser {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    pending: VecDeque<Value>,
    /// The `welcome` message the server opened with.
    pub welcome: Value,
    /// Bytes of the batch frames received (text or binary), to compare encodings.
    pub batch_bytes: u64,
}

/// A MessagePack value as the JSON value it stands for (32-bit floats widened exactly).
pub fn msgpack_to_json(v: &meridian_proto::msgpack::Value) -> Value {
    use meridian_proto::msgpack::Value as M;
    match v {
        M::Nil => Value::Null,
        M::Bool(b) => (*b).into(),
        M::Int(i) => (*i).into(),
        M::UInt(u) => (*u).into(),
        M::F32(f) => f64::from(*f).into(),
        M::F64(f) => (*f).into(),
        M::Str(s) => s.clone().into(),
        M::Bin(b) => b.iter().map(|x| Value::from(*x)).collect(),
        M::Array(a) => a.iter().map(msgpack_to_json).collect(),
        M::Map(m) => m
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().map_or_else(|| format!("{k:?}"), str::to_owned),
                    msgpack_to_json(v),
                )
            })
            .collect::<serde_json::Map<_, _>>()
            .into(),
    }
}

/// What the next message from the server was.
#[derive(Debug)]
pub enum Received {
    Json(Value),
    Closed { code: u16, reason: String },
}

/// `Name:index` as the protocol's `csc` and `salindex`.
fn split_csc(csc: &str) -> anyhow::Result<(&str, u32)> {
    let (name, index) = csc.split_once(':').unwrap_or((csc, "0"));
    Ok((name, index.parse()?))
}

/// The topic key a test uses for a sample or topic object: `CSC:idx/category/topic`.
pub fn topic_key(v: &Value) -> String {
    format!(
        "{}:{}/{}/{}",
        v["csc"].as_str().unwrap_or("?"),
        v["salindex"],
        v["category"].as_str().unwrap_or("?"),
        v["topic"].as_str().unwrap_or("?")
    )
}

impl Browser {
    /// Connects and reads the server's `welcome`; fails if the server refuses.
    pub async fn connect(url: &str) -> anyhow::Result<Browser> {
        let mut browser = Self::connect_raw(url).await?;
        let welcome = browser.next_json().await.context("waiting for welcome")?;
        if welcome["type"] != "welcome" {
            bail!("expected a welcome, got {welcome}");
        }
        browser.welcome = welcome;
        Ok(browser)
    }

    /// Wraps an already upgraded connection (e.g. over a socket with small
    /// buffers) and reads the server's `welcome`.
    pub async fn from_stream(ws: WebSocketStream<MaybeTlsStream<TcpStream>>) -> anyhow::Result<Browser> {
        let mut browser = Browser {
            ws,
            pending: VecDeque::new(),
            welcome: Value::Null,
            batch_bytes: 0,
        };
        let welcome = browser.next_json().await.context("waiting for welcome")?;
        if welcome["type"] != "welcome" {
            bail!("expected a welcome, got {welcome}");
        }
        browser.welcome = welcome;
        Ok(browser)
    }

    /// Connects without reading anything (for tests of authentication).
    pub async fn connect_raw(url: &str) -> anyhow::Result<Browser> {
        let (ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .with_context(|| format!("connect {url}"))?;
        Ok(Browser {
            ws,
            pending: VecDeque::new(),
            welcome: Value::Null,
            batch_bytes: 0,
        })
    }

    pub async fn send_text(&mut self, text: &str) -> anyhow::Result<()> {
        self.ws.send(Message::Text(text.into())).await?;
        Ok(())
    }

    pub async fn send_json(&mut self, v: &Value) -> anyhow::Result<()> {
        self.send_text(&v.to_string()).await
    }

    /// Sends a subscribe request for `csc` (`Name:index`), category and topic.
    pub async fn subscribe(&mut self, csc: &str, category: &str, topic: &str) -> anyhow::Result<()> {
        let (name, index) = split_csc(csc)?;
        self.send_json(
            &json!({"op": "subscribe", "csc": name, "salindex": index, "category": category, "topic": topic}),
        )
        .await
    }

    /// Subscribes to one topic from stream id `after` (recovery after a reconnect).
    pub async fn subscribe_after(
        &mut self,
        csc: &str,
        category: &str,
        topic: &str,
        after: &str,
    ) -> anyhow::Result<()> {
        let (name, index) = split_csc(csc)?;
        self.send_json(
            &json!({"op": "subscribe", "csc": name, "salindex": index, "category": category, "topic": topic, "after": after}),
        )
        .await
    }

    /// The next message or close frame, within [`DEADLINE`].
    pub async fn next(&mut self) -> anyhow::Result<Received> {
        loop {
            if let Some(v) = self.pending.pop_front() {
                return Ok(Received::Json(v));
            }
            let frame = tokio::time::timeout(DEADLINE, self.ws.next())
                .await
                .map_err(|_| anyhow!("no message within {DEADLINE:?}"))?;
            let (v, len) = match frame {
                Some(Ok(Message::Text(text))) => (
                    serde_json::from_str::<Value>(&text).context("server sent invalid JSON")?,
                    text.len(),
                ),
                Some(Ok(Message::Binary(bytes))) => {
                    let v =
                        meridian_proto::msgpack::decode(&bytes).context("server sent invalid MessagePack")?;
                    (msgpack_to_json(&v), bytes.len())
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
            };
            if v["type"] == "batch" {
                self.batch_bytes += len as u64;
                for s in v["samples"].as_array().into_iter().flatten() {
                    self.pending.push_back(s.clone());
                }
                for l in v["lost"].as_array().into_iter().flatten() {
                    let mut l = l.clone();
                    l["type"] = "lost".into();
                    self.pending.push_back(l);
                }
                continue;
            }
            return Ok(Received::Json(v));
        }
    }

    /// The next JSON message; a close is an error naming its code and reason.
    pub async fn next_json(&mut self) -> anyhow::Result<Value> {
        match self.next().await? {
            Received::Json(v) => Ok(v),
            Received::Closed { code, reason } => bail!("connection closed: {code} {reason}"),
        }
    }

    /// The next message of type `sample`, skipping replies; an error or a
    /// loss notice is an error.
    pub async fn next_sample(&mut self) -> anyhow::Result<Value> {
        loop {
            let v = self.next_json().await?;
            match v["type"].as_str() {
                Some("sample") => return Ok(v),
                Some("error") | Some("lost") => bail!("server said: {v}"),
                _ => {}
            }
        }
    }

    /// The next message of type `kind`, skipping samples and other replies.
    pub async fn next_of(&mut self, kind: &str) -> anyhow::Result<Value> {
        loop {
            let v = self.next_json().await?;
            if v["type"] == kind {
                return Ok(v);
            }
            if v["type"] == "error" && kind != "error" {
                bail!("server error: {v}");
            }
        }
    }
}

/// What a recovering client keeps: the last stream id seen per topic.
#[derive(Debug, Default, Clone)]
pub struct Cursors(pub HashMap<String, String>);

impl Cursors {
    /// Records a sample's id under its topic.
    pub fn saw(&mut self, sample: &Value) {
        if let Some(id) = sample["id"].as_str() {
            self.0.insert(topic_key(sample), id.to_string());
        }
    }
}
