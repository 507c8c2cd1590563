//! The Redis store: one Redis stream per topic.
//!
//! Commands: `XADD key MAXLEN ~ n * field value ...` (pipelined per batch),
//! `XREVRANGE`, `XRANGE` with an exclusive `(` start (Redis >= 6.2), `XLEN`,
//! and `XREAD COUNT c BLOCK ms STREAMS ...` on a reader's own connection.
//!
//! Short commands share one [`ConnectionManager`], which reconnects in the
//! background after a connection breaks (e.g. Redis restarted): the call that
//! finds the connection broken fails with [`StoreError::Unavailable`], later
//! calls succeed once Redis is back. Each [`RedisReader`] owns a dedicated
//! connection, since `XREAD BLOCK` holds the connection it runs on, and
//! reconnects on its next `read` after a failure.
//!
//! Replies are parsed by hand from [`redis::Value`], accepting both RESP2
//! and RESP3 shapes, and never panic on an odd reply.

use super::memory::check_batch;
use super::{Append, Entry, Store, StoreError, StreamEntries, StreamReader};
use async_trait::async_trait;
use meridian_proto::StreamId;
use redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis::{AsyncConnectionConfig, Client, ErrorKind, RedisError, ServerErrorKind, Value};
use std::time::Duration;

/// How long establishing one TCP connection to Redis may take: Redis on the
/// same network answers in milliseconds, so longer means it is not there.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// How long a short command (a batch of XADD, XRANGE, XLEN) may wait for its
/// reply before the connection is declared broken. Generous against a busy
/// Redis, short enough that ingest notices an outage within seconds.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);

/// How many times the connection manager retries connecting after a break
/// before the waiting call fails; callers retry on `Unavailable` anyway, so a
/// few attempts keep each failing call short during an outage.
const RECONNECT_RETRIES: usize = 2;

/// The longest pause between reconnection attempts.
const RECONNECT_MAX_DELAY: Duration = Duration::from_millis(500);

/// How much longer than its `BLOCK` an `XREAD` may take before the reader
/// declares its connection broken (a silent network partition would
/// otherwise hang the reader forever).
const READ_REPLY_GRACE: Duration = Duration::from_secs(5);

/// A [`super::Store`] on Redis streams.
#[derive(Clone)]
pub struct RedisStore {
    url: String,
    client: Client,
    commands: ConnectionManager,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore").field("url", &self.url).finish()
    }
}

impl RedisStore {
    /// Connects to Redis at `url` (`redis://host:port/db`), failing with
    /// `Unavailable` if it does not answer within a few seconds, or with
    /// `Refused` if the URL is not a Redis URL.
    pub async fn connect(url: &str) -> Result<RedisStore, StoreError> {
        let client = Client::open(url).map_err(store_error)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_number_of_retries(RECONNECT_RETRIES)
            .set_max_delay(RECONNECT_MAX_DELAY);
        let commands = ConnectionManager::new_with_config(client.clone(), config)
            .await
            .map_err(store_error)?;
        Ok(RedisStore {
            url: url.to_string(),
            client,
            commands,
        })
    }

    /// The URL this store connects to, for diagnostics.
    pub fn url(&self) -> &str {
        &self.url
    }
}

#[async_trait]
impl Store for RedisStore {
    async fn append(&self, batch: &[Append]) -> Result<Vec<StreamId>, StoreError> {
        check_batch(batch)?;
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for append in batch {
            let cmd = pipe
                .cmd("XADD")
                .arg(&append.key)
                .arg("MAXLEN")
                .arg("~")
                .arg(append.maxlen)
                .arg("*");
            for (field, value) in &append.fields {
                cmd.arg(field).arg(value);
            }
        }
        let replies: Vec<Value> = pipe
            .query_async(&mut self.commands.clone())
            .await
            .map_err(store_error)?;
        if replies.len() != batch.len() {
            return Err(StoreError::Protocol(format!(
                "{} replies to a pipeline of {} XADD",
                replies.len(),
                batch.len()
            )));
        }
        replies.iter().map(parse_id).collect()
    }

    async fn last(&self, key: &str, count: usize) -> Result<Vec<Entry>, StoreError> {
        if count == 0 {
            return Ok(Vec::new());
        }
        let reply: Value = redis::cmd("XREVRANGE")
            .arg(key)
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(count)
            .query_async(&mut self.commands.clone())
            .await
            .map_err(store_error)?;
        let mut entries = parse_entries(reply)?;
        entries.reverse();
        Ok(entries)
    }

    async fn range(
        &self,
        key: &str,
        after: StreamId,
        until: Option<StreamId>,
        count: usize,
    ) -> Result<Vec<Entry>, StoreError> {
        // Nothing is after the largest id, and Redis refuses `(` on it.
        if count == 0 || after == StreamId::new(u64::MAX, u64::MAX) {
            return Ok(Vec::new());
        }
        let until = until.map_or_else(|| "+".to_string(), |id| id.to_string());
        let reply: Value = redis::cmd("XRANGE")
            .arg(key)
            .arg(format!("({after}"))
            .arg(until)
            .arg("COUNT")
            .arg(count)
            .query_async(&mut self.commands.clone())
            .await
            .map_err(store_error)?;
        parse_entries(reply)
    }

    async fn len(&self, key: &str) -> Result<usize, StoreError> {
        let reply: Value = redis::cmd("XLEN")
            .arg(key)
            .query_async(&mut self.commands.clone())
            .await
            .map_err(store_error)?;
        match reply {
            Value::Int(n) => {
                usize::try_from(n).map_err(|_| StoreError::Protocol(format!("XLEN replied {n}")))
            }
            other => Err(unexpected("XLEN", &other)),
        }
    }

    async fn reader(&self) -> Result<Box<dyn StreamReader>, StoreError> {
        let mut reader = RedisReader {
            client: self.client.clone(),
            connection: None,
        };
        reader.connection().await?;
        Ok(Box::new(reader))
    }
}

/// Reads streams with `XREAD BLOCK` on a connection of its own.
///
/// After a failed read the connection is dropped, and the next `read`
/// connects again, so a reader survives a Redis restart.
pub struct RedisReader {
    client: Client,
    connection: Option<MultiplexedConnection>,
}

impl RedisReader {
    /// The reader's connection, connecting first if there is none.
    async fn connection(&mut self) -> Result<&mut MultiplexedConnection, StoreError> {
        if self.connection.is_none() {
            // No response timeout on the connection: an `XREAD BLOCK` is meant
            // to wait. `read` bounds each call instead.
            let config = AsyncConnectionConfig::new()
                .set_connection_timeout(Some(CONNECT_TIMEOUT))
                .set_response_timeout(None);
            let connection = self
                .client
                .get_multiplexed_async_connection_with_config(&config)
                .await
                .map_err(store_error)?;
            self.connection = Some(connection);
        }
        self.connection
            .as_mut()
            .ok_or_else(|| StoreError::Unavailable("no connection to Redis".to_string()))
    }
}

#[async_trait]
impl StreamReader for RedisReader {
    /// `count` 0 is read as 1, since `XREAD COUNT 0` would mean "no limit".
    /// A `block` of zero does not wait (Redis would read `BLOCK 0` as
    /// "forever"); a non-zero `block` under a millisecond waits 1 ms.
    async fn read(
        &mut self,
        cursors: &[(String, StreamId)],
        count: usize,
        block: Duration,
    ) -> Result<Vec<StreamEntries>, StoreError> {
        if cursors.is_empty() {
            // Nothing can arrive for no streams: waiting is the contract.
            tokio::time::sleep(block).await;
            return Ok(Vec::new());
        }
        let mut cmd = redis::cmd("XREAD");
        cmd.arg("COUNT").arg(count.max(1));
        if !block.is_zero() {
            // Redis refuses timeouts that overflow its clock: a year is forever enough.
            let ms = u64::try_from(block.as_millis())
                .unwrap_or(u64::MAX)
                .clamp(1, 365 * 86_400_000);
            cmd.arg("BLOCK").arg(ms);
        }
        cmd.arg("STREAMS");
        for (key, _) in cursors {
            cmd.arg(key);
        }
        for (_, after) in cursors {
            cmd.arg(after.to_string());
        }

        let connection = self.connection().await?;
        let result = tokio::time::timeout(
            block.saturating_add(READ_REPLY_GRACE),
            cmd.query_async::<Value>(connection),
        )
        .await;
        let reply = match result {
            Ok(Ok(reply)) => reply,
            Ok(Err(err)) => {
                let err = store_error(err);
                if matches!(err, StoreError::Unavailable(_)) {
                    self.connection = None;
                }
                return Err(err);
            }
            Err(_) => {
                self.connection = None;
                return Err(StoreError::Unavailable(format!(
                    "XREAD got no reply within {:?} of its block time",
                    READ_REPLY_GRACE
                )));
            }
        };
        parse_streams(reply)
    }
}

/// Sorts a redis-rs error into what the caller should do about it.
fn store_error(err: RedisError) -> StoreError {
    let text = err.to_string();
    if err.is_io_error() || err.is_connection_dropped() || err.is_connection_refusal() || err.is_timeout() {
        return StoreError::Unavailable(text);
    }
    match err.kind() {
        // Transient server states: the same request will succeed later.
        ErrorKind::Server(
            ServerErrorKind::BusyLoading
            | ServerErrorKind::TryAgain
            | ServerErrorKind::MasterDown
            | ServerErrorKind::ClusterDown,
        ) => StoreError::Unavailable(text),
        ErrorKind::Parse | ErrorKind::UnexpectedReturnType => StoreError::Protocol(text),
        _ => StoreError::Refused(text),
    }
}

fn unexpected(what: &str, value: &Value) -> StoreError {
    let mut shown = format!("{value:?}");
    if shown.len() > 200 {
        let mut end = 200;
        while !shown.is_char_boundary(end) {
            end -= 1;
        }
        shown.truncate(end);
        shown.push('…');
    }
    StoreError::Protocol(format!("unexpected {what}: {shown}"))
}

/// Strips RESP3 attributes, which carry side information around a reply.
fn strip(value: Value) -> Value {
    match value {
        Value::Attribute { data, .. } => strip(*data),
        other => other,
    }
}

/// A string reply. Field names and values that are not UTF-8 (written by
/// something other than Meridian) are decoded lossily rather than failing
/// the whole read, so one odd entry cannot stop a stream.
fn text(value: &Value) -> Option<String> {
    match value {
        Value::BulkString(bytes) => Some(String::from_utf8_lossy(bytes).into_owned()),
        Value::SimpleString(s) => Some(s.clone()),
        Value::VerbatimString { text, .. } => Some(text.clone()),
        Value::Int(n) => Some(n.to_string()),
        Value::Attribute { data, .. } => text(data),
        _ => None,
    }
}

fn parse_id(value: &Value) -> Result<StreamId, StoreError> {
    let s = text(value).ok_or_else(|| unexpected("stream id", value))?;
    s.parse()
        .map_err(|e: meridian_proto::stream_id::BadStreamId| StoreError::Protocol(e.to_string()))
}

/// An entry, `[id, [field, value, ...]]`; the field list may also come as a
/// RESP3 map, or nil for an entry deleted under a pending reference.
fn parse_entry(value: Value) -> Result<Entry, StoreError> {
    let items = match strip(value) {
        Value::Array(items) if items.len() == 2 => items,
        other => return Err(unexpected("stream entry", &other)),
    };
    let mut items = items.into_iter();
    let (Some(id), Some(fields)) = (items.next(), items.next()) else {
        return Err(StoreError::Protocol("stream entry without id".to_string()));
    };
    let id = parse_id(&id)?;
    let fields = match strip(fields) {
        Value::Nil => Vec::new(),
        Value::Array(flat) => {
            if flat.len() % 2 != 0 {
                return Err(StoreError::Protocol(format!(
                    "entry {id} has an odd number of field names and values"
                )));
            }
            flat.chunks_exact(2)
                .map(|pair| match (text(&pair[0]), text(&pair[1])) {
                    (Some(k), Some(v)) => Ok((k, v)),
                    _ => Err(unexpected("field of a stream entry", &pair[0])),
                })
                .collect::<Result<_, _>>()?
        }
        Value::Map(pairs) => pairs
            .iter()
            .map(|(k, v)| match (text(k), text(v)) {
                (Some(k), Some(v)) => Ok((k, v)),
                _ => Err(unexpected("field of a stream entry", k)),
            })
            .collect::<Result<_, _>>()?,
        other => return Err(unexpected("fields of a stream entry", &other)),
    };
    Ok(Entry { id, fields })
}

/// The reply of XRANGE/XREVRANGE: a list of entries (nil read as none).
fn parse_entries(value: Value) -> Result<Vec<Entry>, StoreError> {
    match strip(value) {
        Value::Nil => Ok(Vec::new()),
        Value::Array(items) | Value::Set(items) => items.into_iter().map(parse_entry).collect(),
        other => Err(unexpected("list of stream entries", &other)),
    }
}

/// The reply of XREAD: nil on timeout, else `[[key, entries], ...]` (RESP2)
/// or `{key: entries, ...}` (RESP3). Streams without entries are left out.
fn parse_streams(value: Value) -> Result<Vec<StreamEntries>, StoreError> {
    let pairs: Vec<(Value, Value)> = match strip(value) {
        Value::Nil => return Ok(Vec::new()),
        Value::Map(pairs) => pairs,
        Value::Array(items) => items
            .into_iter()
            .map(|item| match strip(item) {
                Value::Array(pair) if pair.len() == 2 => {
                    let mut pair = pair.into_iter();
                    match (pair.next(), pair.next()) {
                        (Some(key), Some(entries)) => Ok((key, entries)),
                        _ => Err(StoreError::Protocol("empty XREAD stream".to_string())),
                    }
                }
                other => Err(unexpected("XREAD stream", &other)),
            })
            .collect::<Result<_, _>>()?,
        other => return Err(unexpected("XREAD reply", &other)),
    };
    let mut streams = Vec::with_capacity(pairs.len());
    for (key, entries) in pairs {
        let key = text(&key).ok_or_else(|| unexpected("stream key", &key))?;
        let entries = parse_entries(entries)?;
        if !entries.is_empty() {
            streams.push(StreamEntries { key, entries });
        }
    }
    Ok(streams)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    fn entry(id: &str, fields: &[&str]) -> Value {
        Value::Array(vec![
            bulk(id),
            Value::Array(fields.iter().map(|f| bulk(f)).collect()),
        ])
    }

    #[test]
    fn xread_replies_parse_in_resp2_and_resp3_shapes() {
        let resp2 = Value::Array(vec![Value::Array(vec![
            bulk("k"),
            Value::Array(vec![entry("5-1", &["a", "1", "b", ""])]),
        ])]);
        let resp3 = Value::Map(vec![(
            bulk("k"),
            Value::Array(vec![entry("5-1", &["a", "1", "b", ""])]),
        )]);
        let expected = vec![StreamEntries {
            key: "k".to_string(),
            entries: vec![Entry {
                id: StreamId::new(5, 1),
                fields: vec![
                    ("a".to_string(), "1".to_string()),
                    ("b".to_string(), String::new()),
                ],
            }],
        }];
        assert_eq!(parse_streams(resp2).unwrap(), expected);
        assert_eq!(parse_streams(resp3).unwrap(), expected);
        assert_eq!(parse_streams(Value::Nil).unwrap(), vec![]);
    }

    #[test]
    fn odd_replies_are_protocol_errors_not_panics() {
        for odd in [
            Value::Int(3),
            Value::Array(vec![Value::Int(1)]),
            Value::Array(vec![Value::Array(vec![bulk("k")])]),
            Value::Array(vec![Value::Array(vec![bulk("k"), Value::Array(vec![bulk("x")])])]),
            Value::Array(vec![Value::Array(vec![
                bulk("k"),
                Value::Array(vec![entry("not-an-id", &["a", "1"])]),
            ])]),
            Value::Array(vec![Value::Array(vec![
                bulk("k"),
                Value::Array(vec![entry("1-1", &["a"])]),
            ])]),
        ] {
            assert!(matches!(parse_streams(odd), Err(StoreError::Protocol(_))));
        }
    }
}
