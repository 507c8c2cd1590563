//! Replies from Redis read into the store's types, and redis-rs errors
//! sorted into [`StoreError`]s, for both Redis backends.
//!
//! Replies are parsed by hand from [`redis::Value`], accepting both RESP2
//! and RESP3 shapes, and never panic on an odd reply: anything unexpected
//! is [`StoreError::Protocol`].

use crate::contract::{Entry, StoreError, StreamEntries};
use meridian_proto::StreamId;
use redis::{ErrorKind, RedisError, ServerErrorKind, Value};
use std::time::Duration;

/// The entries of an `XREVRANGE` reply, oldest first (as `Store::last` returns them).
pub(crate) fn oldest_first(reply: Value) -> Result<Vec<Entry>, StoreError> {
    let mut entries = parse_entries(reply)?;
    entries.reverse();
    Ok(entries)
}

/// Checks the replies of `expected` `command::expire_cmd`s: one integer each.
pub(crate) fn expired(replies: &[Value], expected: usize) -> Result<(), StoreError> {
    if replies.len() != expected {
        return Err(StoreError::Protocol(format!(
            "{} replies to a pipeline of {expected} PEXPIRE/PERSIST",
            replies.len()
        )));
    }
    for reply in replies {
        integer("PEXPIRE", reply)?;
    }
    Ok(())
}

/// The reply of `HGETALL`: nil or empty read as no fields.
pub(crate) fn parse_hash(reply: Value) -> Result<Vec<(String, String)>, StoreError> {
    match strip(reply) {
        Value::Nil => Ok(Vec::new()),
        other => parse_pairs("hash", other),
    }
}

/// The reply of `XLEN`.
pub(crate) fn parse_len(reply: Value) -> Result<usize, StoreError> {
    match reply {
        Value::Int(n) => usize::try_from(n).map_err(|_| StoreError::Protocol(format!("XLEN replied {n}"))),
        other => Err(unexpected("XLEN", &other)),
    }
}

/// Sorts a redis-rs error into what the caller should do about it.
pub(crate) fn store_error(err: RedisError) -> StoreError {
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
        // A plain client talking to a cluster node: a misconfiguration.
        ErrorKind::Server(ServerErrorKind::Moved | ServerErrorKind::Ask) => StoreError::Refused(format!(
            "{text} (this Redis is a Redis Cluster node: set store.backend = \"cluster\" and store.cluster_nodes)"
        )),
        ErrorKind::Parse | ErrorKind::UnexpectedReturnType => StoreError::Protocol(text),
        _ => StoreError::Refused(text),
    }
}

pub(crate) fn unexpected(what: &str, value: &Value) -> StoreError {
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
pub(crate) fn strip(value: Value) -> Value {
    match value {
        Value::Attribute { data, .. } => strip(*data),
        other => other,
    }
}

/// A string reply. Field names and values that are not UTF-8 (written by
/// something other than Meridian) are decoded lossily rather than failing
/// the whole read, so one odd entry cannot stop a stream.
pub(crate) fn text(value: &Value) -> Option<String> {
    match value {
        Value::BulkString(bytes) => Some(String::from_utf8_lossy(bytes).into_owned()),
        Value::SimpleString(s) => Some(s.clone()),
        Value::VerbatimString { text, .. } => Some(text.clone()),
        Value::Int(n) => Some(n.to_string()),
        Value::Attribute { data, .. } => text(data),
        _ => None,
    }
}

pub(crate) fn parse_id(value: &Value) -> Result<StreamId, StoreError> {
    // The common shape parsed in place, without copying it into a String.
    if let Value::BulkString(bytes) = value {
        if let Ok(s) = std::str::from_utf8(bytes) {
            return s
                .parse()
                .map_err(|e: meridian_proto::stream_id::BadStreamId| StoreError::Protocol(e.to_string()));
        }
    }
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
        other => parse_pairs(&format!("stream entry {id}"), other)?,
    };
    Ok(Entry { id, fields })
}

/// The reply of XRANGE/XREVRANGE: a list of entries (nil read as none).
pub(crate) fn parse_entries(value: Value) -> Result<Vec<Entry>, StoreError> {
    match strip(value) {
        Value::Nil => Ok(Vec::new()),
        Value::Array(items) | Value::Set(items) => items.into_iter().map(parse_entry).collect(),
        other => Err(unexpected("list of stream entries", &other)),
    }
}

/// The reply of XREAD: nil on timeout, else `[[key, entries], ...]` (RESP2)
/// or `{key: entries, ...}` (RESP3). Streams without entries are left out.
pub(crate) fn parse_streams(value: Value) -> Result<Vec<StreamEntries>, StoreError> {
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

/// A count (`DEL`, `DBSIZE`): a non-negative integer reply.
pub(crate) fn parse_count(what: &str, value: &Value) -> Result<usize, StoreError> {
    let n = integer(what, value)?;
    usize::try_from(n).map_err(|_| StoreError::Protocol(format!("{what} replied {n}")))
}

/// The reply of `PTTL`: -2 (no key) and -1 (no TTL) read as `None`.
pub(crate) fn parse_pttl(value: &Value) -> Result<Option<Duration>, StoreError> {
    let ms = integer("PTTL", value)?;
    Ok(u64::try_from(ms).ok().map(Duration::from_millis))
}

/// An integer reply.
pub(crate) fn integer(what: &str, value: &Value) -> Result<i64, StoreError> {
    match value {
        Value::Int(n) => Ok(*n),
        Value::Attribute { data, .. } => integer(what, data),
        other => Err(unexpected(&format!("reply to {what}"), other)),
    }
}

/// The reply of SCAN: `[cursor, [key, ...]]`.
pub(crate) fn parse_scan(value: Value) -> Result<(String, Vec<String>), StoreError> {
    let items = match strip(value) {
        Value::Array(items) if items.len() == 2 => items,
        other => return Err(unexpected("reply to SCAN", &other)),
    };
    let mut items = items.into_iter();
    let (Some(cursor), Some(keys)) = (items.next(), items.next()) else {
        return Err(StoreError::Protocol("SCAN reply without cursor".to_string()));
    };
    let cursor = text(&cursor).ok_or_else(|| unexpected("SCAN cursor", &cursor))?;
    let keys = match strip(keys) {
        Value::Array(keys) | Value::Set(keys) => keys
            .iter()
            .map(|key| text(key).ok_or_else(|| unexpected("key from SCAN", key)))
            .collect::<Result<_, _>>()?,
        other => return Err(unexpected("keys from SCAN", &other)),
    };
    Ok((cursor, keys))
}

/// Field/value pairs: a flat `[field, value, ...]` list (RESP2) or a map
/// (RESP3). `what` names the owner in errors.
pub(crate) fn parse_pairs(what: &str, value: Value) -> Result<Vec<(String, String)>, StoreError> {
    match value {
        Value::Array(flat) => {
            if flat.len() % 2 != 0 {
                return Err(StoreError::Protocol(format!(
                    "{what} has an odd number of field names and values"
                )));
            }
            flat.chunks_exact(2)
                .map(|pair| match (text(&pair[0]), text(&pair[1])) {
                    (Some(k), Some(v)) => Ok((k, v)),
                    _ => Err(unexpected(&format!("field of a {what}"), &pair[0])),
                })
                .collect()
        }
        Value::Map(pairs) => pairs
            .iter()
            .map(|(k, v)| match (text(k), text(v)) {
                (Some(k), Some(v)) => Ok((k, v)),
                _ => Err(unexpected(&format!("field of a {what}"), k)),
            })
            .collect(),
        other => Err(unexpected(&format!("fields of a {what}"), &other)),
    }
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
