//! A small HTTP/1.1 client over a real `TcpStream`, enough for the
//! commander's API: one request per connection (`Connection: close`),
//! bodies with `Content-Length` or chunked, and a chunked body read line by
//! line as it arrives (the acknowledgement stream). No new dependency.

use anyhow::{bail, Context};
use std::net::SocketAddr;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// A complete response.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    /// Header names lower-cased, in order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// The first header `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON; fails with the body in the message if it is not.
    pub fn json(&self) -> anyhow::Result<serde_json::Value> {
        serde_json::from_slice(&self.body)
            .with_context(|| format!("body is not JSON: {:?}", String::from_utf8_lossy(&self.body)))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A request to build and send.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    pub fn new(method: &str, path: &str) -> Request {
        Request {
            method: method.to_string(),
            path: path.to_string(),
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    pub fn get(path: &str) -> Request {
        Request::new("GET", path)
    }

    /// A POST with a JSON body.
    pub fn post_json(path: &str, body: &serde_json::Value) -> Request {
        Request::post_raw(path, body.to_string().into_bytes())
    }

    /// A POST of `body` as is, labelled JSON (to send malformed JSON).
    pub fn post_raw(path: &str, body: Vec<u8>) -> Request {
        let mut r = Request::new("POST", path);
        r.headers.push(("Content-Type".into(), "application/json".into()));
        r.body = body;
        r
    }

    pub fn header(mut self, name: &str, value: &str) -> Request {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    /// `Authorization: Bearer <token>`.
    pub fn bearer(self, token: &str) -> Request {
        self.header("Authorization", &format!("Bearer {token}"))
    }

    /// Sends the request and reads the whole response.
    pub async fn send(&self, addr: SocketAddr) -> anyhow::Result<Response> {
        let mut stream = self.open(addr).await?;
        let mut body = Vec::new();
        match stream.body {
            BodyKind::Chunked => {
                while let Some(chunk) = stream.next_chunk().await? {
                    body.extend_from_slice(&chunk);
                }
            }
            BodyKind::Length(n) => {
                body.resize(n, 0);
                stream.reader.read_exact(&mut body).await?;
            }
            BodyKind::UntilClose => {
                stream.reader.read_to_end(&mut body).await?;
            }
        }
        Ok(Response {
            status: stream.status,
            headers: stream.headers,
            body,
        })
    }

    /// Sends the request and returns once the head has arrived, to read
    /// the body as it comes.
    pub async fn open(&self, addr: SocketAddr) -> anyhow::Result<Streaming> {
        let socket = TcpStream::connect(addr)
            .await
            .with_context(|| format!("connect {addr}"))?;
        let mut head = format!(
            "{} {} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
            self.method,
            self.path,
            self.body.len()
        );
        for (k, v) in &self.headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        let mut reader = BufReader::new(socket);
        reader.get_mut().write_all(head.as_bytes()).await?;
        reader.get_mut().write_all(&self.body).await?;
        reader.get_mut().flush().await?;

        let mut status_line = String::new();
        reader.read_line(&mut status_line).await?;
        let status: u16 = status_line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .with_context(|| format!("bad status line {status_line:?}"))?;
        let mut headers = Vec::new();
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).await? == 0 {
                bail!("connection closed in the response head");
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            let (k, v) = line
                .split_once(':')
                .with_context(|| format!("bad header {line:?}"))?;
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
        let find = |name: &str| headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
        let body = if find("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
            BodyKind::Chunked
        } else if let Some(n) = find("content-length") {
            BodyKind::Length(n.parse().context("content-length")?)
        } else {
            BodyKind::UntilClose
        };
        Ok(Streaming {
            status,
            headers,
            reader,
            body,
            pending: Vec::new(),
            done: false,
        })
    }
}

#[derive(Debug, Clone, Copy)]
enum BodyKind {
    Chunked,
    Length(usize),
    UntilClose,
}

/// A response whose body is read as it arrives.
pub struct Streaming {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    reader: BufReader<TcpStream>,
    body: BodyKind,
    /// Bytes received but not yet returned as a line.
    pending: Vec<u8>,
    done: bool,
}

impl Streaming {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The next chunk of a chunked body; `None` after the last.
    async fn next_chunk(&mut self) -> anyhow::Result<Option<Vec<u8>>> {
        if self.done {
            return Ok(None);
        }
        let mut size_line = String::new();
        if self.reader.read_line(&mut size_line).await? == 0 {
            bail!("connection closed inside a chunked body");
        }
        let size_hex = size_line.trim().split(';').next().unwrap_or("");
        let size =
            usize::from_str_radix(size_hex, 16).with_context(|| format!("bad chunk size {size_line:?}"))?;
        if size == 0 {
            // Trailers (none expected) end with an empty line.
            loop {
                let mut line = String::new();
                if self.reader.read_line(&mut line).await? == 0 || line.trim_end().is_empty() {
                    break;
                }
            }
            self.done = true;
            return Ok(None);
        }
        let mut chunk = vec![0; size + 2];
        self.reader.read_exact(&mut chunk).await?;
        chunk.truncate(size);
        Ok(Some(chunk))
    }

    /// The next line of the body (without its newline), as soon as it has
    /// arrived; `None` at the end of the body.
    pub async fn next_line(&mut self) -> anyhow::Result<Option<String>> {
        loop {
            if let Some(i) = self.pending.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.pending.drain(..=i).collect();
                return Ok(Some(String::from_utf8_lossy(&line[..i]).into_owned()));
            }
            let more = match self.body {
                BodyKind::Chunked => self.next_chunk().await?,
                BodyKind::Length(_) | BodyKind::UntilClose => {
                    let mut buf = vec![0; 4096];
                    let n = self.reader.read(&mut buf).await?;
                    buf.truncate(n);
                    (n > 0).then_some(buf)
                }
            };
            match more {
                Some(bytes) => self.pending.extend_from_slice(&bytes),
                None if self.pending.is_empty() => return Ok(None),
                None => {
                    let rest = std::mem::take(&mut self.pending);
                    return Ok(Some(String::from_utf8_lossy(&rest).into_owned()));
                }
            }
        }
    }
}
