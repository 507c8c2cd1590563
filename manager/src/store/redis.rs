//! The Redis store: one Redis stream per topic.
//!
//! Commands: `XADD key MAXLEN ~ n * field value ...` (pipelined per batch),
//! `XREVRANGE`, `XRANGE` with an exclusive `(` start (Redis >= 6.2), `XLEN`,
//! and `XREAD COUNT c BLOCK ms STREAMS ...` on a reader's own connection;
//! `HGETALL`, `PTTL`, `EXISTS`, `DEL`, `SCAN MATCH` and `DBSIZE`. What must
//! be atomic is a Lua script run with `EVALSHA` (`APPEND_ONCE`,
//! `HASH_SET`, `LOCK`, `UNLOCK`; each documents its `KEYS`/`ARGV`).
//!
//! Short commands share one [`ConnectionManager`], which reconnects in the
//! background after a connection breaks (e.g. Redis restarted): the call that
//! finds the connection broken fails with [`StoreError::Unavailable`], later
//! calls succeed once Redis is back. Each [`RedisReader`] owns a dedicated
//! connection, since `XREAD BLOCK` holds the connection it runs on, and
//! reconnects on its next `read` after a failure.
//!
//! Replies are parsed by hand from [`redis::Value`], accepting both RESP2
//! and RESP3 shapes, and never panic on an odd reply. The command builders,
//! scripts and parsers here also serve [`super::cluster`].

use super::memory::{check_batch, check_once_batches, ttl_millis};
use super::{Append, Entry, OnceBatch, Store, StoreError, StreamEntries, StreamReader};
use async_trait::async_trait;
use meridian_proto::StreamId;
use redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis::{AsyncConnectionConfig, Client, ErrorKind, RedisError, ServerErrorKind, Value};
use std::sync::OnceLock;
use std::time::Duration;

/// How long establishing one TCP connection to Redis may take: Redis on the
/// same network answers in milliseconds, so longer means it is not there.
pub(super) const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// How long a short command (a batch of XADD, XRANGE, XLEN) may wait for its
/// reply before the connection is declared broken. Generous against a busy
/// Redis, short enough that ingest notices an outage within seconds.
pub(super) const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);

/// How many times the connection manager retries connecting after a break
/// before the waiting call fails; callers retry on `Unavailable` anyway, so a
/// few attempts keep each failing call short during an outage.
const RECONNECT_RETRIES: usize = 2;

/// The longest pause between reconnection attempts.
const RECONNECT_MAX_DELAY: Duration = Duration::from_millis(500);

/// How much longer than its `BLOCK` an `XREAD` may take before the reader
/// declares its connection broken (a silent network partition would
/// otherwise hang the reader forever).
pub(super) const READ_REPLY_GRACE: Duration = Duration::from_secs(5);

/// How many keys one `SCAN` step looks at: large enough that listing a
/// database of a few hundred thousand keys takes few round trips, small
/// enough that each step blocks Redis for well under a millisecond.
pub(super) const SCAN_COUNT: usize = 1000;

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

    /// Runs `calls` of `script` in one pipelined round trip and returns the
    /// replies in order; loads the script first if Redis does not know it.
    async fn run_script(&self, script: &LuaScript, calls: &[ScriptCall]) -> Result<Vec<Value>, StoreError> {
        let sha = match script.sha.get() {
            Some(sha) => sha.clone(),
            None => self.load_script(script).await?,
        };
        let replies = match self.send_script(&sha, calls).await {
            Err(err) if err.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
                let sha = self.load_script(script).await?;
                self.send_script(&sha, calls).await
            }
            other => other,
        }
        .map_err(store_error)?;
        if replies.len() != calls.len() {
            return Err(StoreError::Protocol(format!(
                "{} replies to a pipeline of {} calls of the {} script",
                replies.len(),
                calls.len(),
                script.name
            )));
        }
        Ok(replies)
    }

    async fn send_script(&self, sha: &str, calls: &[ScriptCall]) -> Result<Vec<Value>, RedisError> {
        let mut pipe = redis::pipe();
        for call in calls {
            pipe.cmd("EVALSHA")
                .arg(sha)
                .arg(call.keys.len())
                .arg(&call.keys)
                .arg(&call.args);
        }
        pipe.query_async(&mut self.commands.clone()).await
    }

    /// `SCRIPT LOAD`s `script` and remembers its SHA1.
    async fn load_script(&self, script: &LuaScript) -> Result<String, StoreError> {
        let reply: Value = redis::cmd("SCRIPT")
            .arg("LOAD")
            .arg(script.source)
            .query_async(&mut self.commands.clone())
            .await
            .map_err(store_error)?;
        let sha = text(&reply).ok_or_else(|| unexpected("reply to SCRIPT LOAD", &reply))?;
        // Another call may have loaded it at the same time: same SHA1.
        let _ = script.sha.set(sha.clone());
        Ok(sha)
    }

    /// Runs one call of a script that returns an integer.
    async fn run_script_once(&self, script: &LuaScript, call: ScriptCall) -> Result<i64, StoreError> {
        let replies = self.run_script(script, std::slice::from_ref(&call)).await?;
        integer(script.name, &replies[0])
    }

    /// Runs a command that answers an integer.
    async fn query_integer(&self, cmd: &redis::Cmd, what: &str) -> Result<i64, StoreError> {
        let reply: Value = cmd
            .query_async(&mut self.commands.clone())
            .await
            .map_err(store_error)?;
        integer(what, &reply)
    }
}

#[async_trait]
impl Store for RedisStore {
    async fn append(&self, batch: &[Append]) -> Result<Vec<StreamId>, StoreError> {
        check_batch(batch)?;
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::Pipeline::with_capacity(batch.len());
        for append in batch {
            pipe.add_command(xadd(append));
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
        let Some(cmd) = xrevrange_newest(key, count) else {
            return Ok(Vec::new());
        };
        let reply: Value = cmd
            .query_async(&mut self.commands.clone())
            .await
            .map_err(store_error)?;
        oldest_first(reply)
    }

    async fn range(
        &self,
        key: &str,
        after: StreamId,
        until: Option<StreamId>,
        count: usize,
    ) -> Result<Vec<Entry>, StoreError> {
        let Some(cmd) = xrange_after(key, after, until, count) else {
            return Ok(Vec::new());
        };
        let reply: Value = cmd
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
        parse_len(reply)
    }

    async fn reader(&self) -> Result<Box<dyn StreamReader>, StoreError> {
        let mut reader = RedisReader {
            client: self.client.clone(),
            connection: None,
        };
        reader.connection().await?;
        Ok(Box::new(reader))
    }

    /// One `EVALSHA` of `APPEND_ONCE` per non-empty batch, all in one
    /// pipeline. Each batch is atomic; if one fails (a key of another type)
    /// the others still run, and the first error is returned: retrying the
    /// whole call is safe, since the marks skip what was written.
    async fn append_once(&self, batches: &[OnceBatch]) -> Result<Vec<usize>, StoreError> {
        check_once_batches(batches)?;
        let calls = batches
            .iter()
            .filter(|b| !b.entries.is_empty())
            .map(append_once_call)
            .collect::<Result<Vec<_>, _>>()?;
        if calls.is_empty() {
            return Ok(vec![0; batches.len()]);
        }
        let mut replies = self.run_script(&APPEND_ONCE, &calls).await?.into_iter();
        batches
            .iter()
            .map(|batch| {
                if batch.entries.is_empty() {
                    return Ok(0);
                }
                written_count(&replies.next().unwrap_or(Value::Nil))
            })
            .collect()
    }

    /// One `HASH_SET` script: with no fields, only the TTL of an existing
    /// key changes (Redis has no empty hashes, so a missing key stays missing).
    async fn hash_set(
        &self,
        key: &str,
        fields: &[(String, String)],
        ttl: Option<Duration>,
    ) -> Result<(), StoreError> {
        let call = hash_set_call(key, fields, ttl)?;
        self.run_script_once(&HASH_SET, call).await.map(|_| ())
    }

    async fn hash_get(&self, key: &str) -> Result<Vec<(String, String)>, StoreError> {
        let reply: Value = redis::cmd("HGETALL")
            .arg(key)
            .query_async(&mut self.commands.clone())
            .await
            .map_err(store_error)?;
        parse_hash(reply)
    }

    /// `PTTL`: -2 (no key) and -1 (no TTL) read as `None`.
    async fn ttl(&self, key: &str) -> Result<Option<Duration>, StoreError> {
        let ms = self.query_integer(redis::cmd("PTTL").arg(key), "PTTL").await?;
        Ok(u64::try_from(ms).ok().map(Duration::from_millis))
    }

    /// `PEXPIRE` (or `PERSIST`) per key, in one pipeline.
    async fn expire(&self, keys: &[String], ttl: Option<Duration>) -> Result<(), StoreError> {
        let ms = expire_millis(ttl)?;
        if keys.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::Pipeline::with_capacity(keys.len());
        for key in keys {
            pipe.add_command(expire_cmd(key, ms));
        }
        let replies: Vec<Value> = pipe
            .query_async(&mut self.commands.clone())
            .await
            .map_err(store_error)?;
        expired(&replies, keys.len())
    }

    async fn exists(&self, key: &str) -> Result<bool, StoreError> {
        Ok(self
            .query_integer(redis::cmd("EXISTS").arg(key), "EXISTS")
            .await?
            > 0)
    }

    /// One `DEL` (in a Redis Cluster, of keys in one slot).
    async fn delete(&self, keys: &[String]) -> Result<usize, StoreError> {
        if keys.is_empty() {
            return Ok(0);
        }
        let n = self.query_integer(redis::cmd("DEL").arg(keys), "DEL").await?;
        usize::try_from(n).map_err(|_| StoreError::Protocol(format!("DEL replied {n}")))
    }

    /// `SCAN 0 MATCH <prefix with glob characters escaped>* COUNT 1000` until
    /// the cursor comes back to 0 or `limit` keys are found; sorted, and
    /// without the duplicates SCAN may return while Redis rehashes.
    async fn keys_with_prefix(&self, prefix: &str, limit: usize) -> Result<Vec<String>, StoreError> {
        let pattern = format!("{}*", escape_glob(prefix));
        let mut found = std::collections::BTreeSet::new();
        let mut cursor = "0".to_string();
        while found.len() < limit {
            let reply: Value = redis::cmd("SCAN")
                .arg(&cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(SCAN_COUNT)
                .query_async(&mut self.commands.clone())
                .await
                .map_err(store_error)?;
            let (next, keys) = parse_scan(reply)?;
            found.extend(keys);
            if next == "0" {
                break;
            }
            cursor = next;
        }
        Ok(found.into_iter().take(limit).collect())
    }

    /// `DBSIZE`, which counts keys that have expired but that Redis has not
    /// reclaimed yet (it does within about a second, or when they are touched).
    async fn key_count(&self) -> Result<usize, StoreError> {
        let n = self.query_integer(&redis::cmd("DBSIZE"), "DBSIZE").await?;
        usize::try_from(n).map_err(|_| StoreError::Protocol(format!("DBSIZE replied {n}")))
    }

    /// The `LOCK` script.
    async fn lock(&self, name: &str, holder: &str, ttl: Duration) -> Result<bool, StoreError> {
        Ok(self.run_script_once(&LOCK, lock_call(name, holder, ttl)?).await? == 1)
    }

    /// The `UNLOCK` script.
    async fn unlock(&self, name: &str, holder: &str) -> Result<bool, StoreError> {
        Ok(self.run_script_once(&UNLOCK, unlock_call(name, holder)).await? == 1)
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
        let cmd = xread(cursors, count, block);

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

/// A Lua script run with `EVALSHA`. It is loaded with `SCRIPT LOAD` on first
/// use, and again whenever Redis answers `NOSCRIPT` (after a restart or a
/// `SCRIPT FLUSH`: Redis does not persist loaded scripts). A `NOSCRIPT`
/// reply means the script did not run, so the retry cannot write twice.
pub(super) struct LuaScript {
    pub(super) name: &'static str,
    pub(super) source: &'static str,
    /// The script's SHA1 as Redis computed it: a function of `source` only,
    /// so one process-wide cache serves stores of every server.
    pub(super) sha: OnceLock<String>,
}

/// One call of a script: its `KEYS` and `ARGV`.
pub(super) struct ScriptCall {
    pub(super) keys: Vec<String>,
    pub(super) args: Vec<String>,
}

/// Appends one [`OnceBatch`] exactly once; returns how many entries it wrote.
///
/// `KEYS = [dedup_key, stream of entry 1, ..., stream of entry n]`;
/// `ARGV = [mark_ttl_ms, then per entry: seq, maxlen, field count, field,
/// value, ...]`, with n ≥ 1. First checks, writing nothing if one fails: the
/// mark (`GET`, missing reads as 0) is a canonical decimal number, and every
/// stream key holds a stream or nothing. Then `XADD key MAXLEN ~ maxlen *`
/// for each entry whose seq is above the mark, in order, moving the mark to
/// it; then `SET dedup_key mark PX mark_ttl_ms`, so the TTL is refreshed
/// even when every entry was a duplicate. Sequence numbers are compared as
/// decimal strings (longer is larger, then by bytes), exact for all of u64
/// where Lua's doubles are not.
///
/// In a Redis Cluster all `KEYS` of one call must hash to one slot: callers
/// give the mark and the streams of a producer one hash tag.
pub(super) static APPEND_ONCE: LuaScript = LuaScript {
    name: "append_once",
    source: r#"
local function above(a, b)
  if #a ~= #b then return #a > #b end
  return a > b
end
local mark = redis.call('GET', KEYS[1]) or '0'
if #mark > 20 or not (mark == '0' or string.match(mark, '^[1-9]%d*$')) then
  return redis.error_reply('ERR dedup mark ' .. KEYS[1] .. ' holds "' .. mark .. '", not a sequence number')
end
for i = 2, #KEYS do
  local kind = redis.call('TYPE', KEYS[i]).ok
  if kind ~= 'stream' and kind ~= 'none' then
    return redis.error_reply('WRONGTYPE key ' .. KEYS[i] .. ' holds a ' .. kind .. ', not a stream')
  end
end
local written = 0
local at = 2
for i = 2, #KEYS do
  local seq, maxlen, count = ARGV[at], ARGV[at + 1], tonumber(ARGV[at + 2])
  if above(seq, mark) then
    local xadd = {'XADD', KEYS[i], 'MAXLEN', '~', maxlen, '*'}
    for j = at + 3, at + 2 + 2 * count do
      xadd[#xadd + 1] = ARGV[j]
    end
    redis.call(unpack(xadd))
    mark = seq
    written = written + 1
  end
  at = at + 3 + 2 * count
end
redis.call('SET', KEYS[1], mark, 'PX', ARGV[1])
return written
"#,
    sha: OnceLock::new(),
};

/// Sets fields of a hash and its TTL in one atomic step that changes
/// nothing if the key holds another type (a `MULTI` would still apply the
/// TTL after `HSET` failed).
///
/// `KEYS = [key]`; `ARGV = [ttl_ms, or "" for none, field, value, ...]`.
/// With no fields, only the TTL of an existing key (of any type) changes.
/// `HSET` goes in chunks of 100 pairs, under Lua's `unpack` limit.
pub(super) static HASH_SET: LuaScript = LuaScript {
    name: "hash_set",
    source: r#"
if #ARGV > 1 then
  local kind = redis.call('TYPE', KEYS[1]).ok
  if kind ~= 'hash' and kind ~= 'none' then
    return redis.error_reply('WRONGTYPE key ' .. KEYS[1] .. ' holds a ' .. kind .. ', not a hash')
  end
  for i = 2, #ARGV, 200 do
    redis.call('HSET', KEYS[1], unpack(ARGV, i, math.min(i + 199, #ARGV)))
  end
end
if ARGV[1] == '' then
  redis.call('PERSIST', KEYS[1])
else
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
end
return 1
"#,
    sha: OnceLock::new(),
};

/// Takes or renews a lock: 1 if `holder` holds it afterwards, else 0.
///
/// `KEYS = [lock]`; `ARGV = [holder, ttl_ms]`. The holder's own lock gets
/// its TTL renewed (`PEXPIRE`); a free one is taken with `SET NX PX`.
pub(super) static LOCK: LuaScript = LuaScript {
    name: "lock",
    source: r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return 1
end
return 0
"#,
    sha: OnceLock::new(),
};

/// Releases a lock only if `holder` holds it: 1 if it did, else 0.
///
/// `KEYS = [lock]`; `ARGV = [holder]`.
pub(super) static UNLOCK: LuaScript = LuaScript {
    name: "unlock",
    source: r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"#,
    sha: OnceLock::new(),
};

/// `XREVRANGE key + - COUNT count`: the newest `count` entries; `None` for
/// a count of 0 (nothing to ask). Its reply goes through [`oldest_first`].
pub(super) fn xrevrange_newest(key: &str, count: usize) -> Option<redis::Cmd> {
    if count == 0 {
        return None;
    }
    let mut cmd = redis::cmd("XREVRANGE");
    cmd.arg(key).arg("+").arg("-").arg("COUNT").arg(count);
    Some(cmd)
}

/// The entries of an `XREVRANGE` reply, oldest first (as `Store::last` returns them).
pub(super) fn oldest_first(reply: Value) -> Result<Vec<Entry>, StoreError> {
    let mut entries = parse_entries(reply)?;
    entries.reverse();
    Ok(entries)
}

/// `XRANGE key (after until COUNT count` (`until` defaults to `+`): up to
/// `count` entries after `after`; `None` when nothing can be (a count of 0,
/// or `after` the largest id, on which Redis refuses `(`).
pub(super) fn xrange_after(
    key: &str,
    after: StreamId,
    until: Option<StreamId>,
    count: usize,
) -> Option<redis::Cmd> {
    if count == 0 || after == StreamId::new(u64::MAX, u64::MAX) {
        return None;
    }
    let until = until.map_or_else(|| "+".to_string(), |id| id.to_string());
    let mut cmd = redis::cmd("XRANGE");
    cmd.arg(key)
        .arg(format!("({after}"))
        .arg(until)
        .arg("COUNT")
        .arg(count);
    Some(cmd)
}

/// `XADD key MAXLEN ~ maxlen * field value ...`, sized up front: one
/// allocation for its arguments and one for its bytes, none as they are
/// added (the hot path of ingest).
pub(super) fn xadd(append: &Append) -> redis::Cmd {
    let args = 6 + 2 * append.fields.len();
    let bytes = "XADDMAXLEN~20*".len()
        + append.key.len()
        + append
            .fields
            .iter()
            .map(|(f, v)| f.len() + v.len())
            .sum::<usize>();
    let mut cmd = redis::Cmd::with_capacity(args, bytes);
    cmd.arg("XADD")
        .arg(&append.key)
        .arg("MAXLEN")
        .arg("~")
        .arg(append.maxlen)
        .arg("*");
    for (field, value) in &append.fields {
        cmd.arg(field).arg(value);
    }
    cmd
}

/// `XREAD COUNT c [BLOCK ms] STREAMS key ... id ...` for non-empty
/// `cursors`: `count` 0 is read as 1, since `XREAD COUNT 0` would mean "no
/// limit"; a `block` of zero does not wait (Redis would read `BLOCK 0` as
/// "forever"); a non-zero `block` under a millisecond waits 1 ms.
pub(super) fn xread(cursors: &[(String, StreamId)], count: usize, block: Duration) -> redis::Cmd {
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
    cmd
}

/// The `APPEND_ONCE` call of one non-empty batch.
pub(super) fn append_once_call(batch: &OnceBatch) -> Result<ScriptCall, StoreError> {
    let mut keys = Vec::with_capacity(1 + batch.entries.len());
    keys.push(batch.dedup_key.clone());
    let mut args = vec![ttl_millis("mark_ttl", batch.mark_ttl)?.to_string()];
    for (seq, append) in &batch.entries {
        keys.push(append.key.clone());
        args.push(seq.to_string());
        args.push(append.maxlen.to_string());
        args.push(append.fields.len().to_string());
        for (field, value) in &append.fields {
            args.push(field.clone());
            args.push(value.clone());
        }
    }
    Ok(ScriptCall { keys, args })
}

/// The `HASH_SET` call.
pub(super) fn hash_set_call(
    key: &str,
    fields: &[(String, String)],
    ttl: Option<Duration>,
) -> Result<ScriptCall, StoreError> {
    let ttl = match ttl {
        Some(ttl) => ttl_millis("ttl", ttl)?.to_string(),
        None => String::new(),
    };
    let mut args = Vec::with_capacity(1 + 2 * fields.len());
    args.push(ttl);
    for (field, value) in fields {
        args.push(field.clone());
        args.push(value.clone());
    }
    Ok(ScriptCall {
        keys: vec![key.to_string()],
        args,
    })
}

/// The milliseconds of an [`Store::expire`] TTL (checked before anything is
/// sent); `None` for none.
pub(super) fn expire_millis(ttl: Option<Duration>) -> Result<Option<u64>, StoreError> {
    ttl.map(|ttl| ttl_millis("ttl", ttl)).transpose()
}

/// `PEXPIRE key ms`, or `PERSIST key` without a TTL: each leaves a missing
/// key missing, and works on a key of any type.
pub(super) fn expire_cmd(key: &str, ms: Option<u64>) -> redis::Cmd {
    match ms {
        Some(ms) => {
            let mut cmd = redis::cmd("PEXPIRE");
            cmd.arg(key).arg(ms);
            cmd
        }
        None => {
            let mut cmd = redis::cmd("PERSIST");
            cmd.arg(key);
            cmd
        }
    }
}

/// Checks the replies of `expected` [`expire_cmd`]s: one integer each.
pub(super) fn expired(replies: &[Value], expected: usize) -> Result<(), StoreError> {
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

/// The `LOCK` call.
pub(super) fn lock_call(name: &str, holder: &str, ttl: Duration) -> Result<ScriptCall, StoreError> {
    Ok(ScriptCall {
        keys: vec![name.to_string()],
        args: vec![holder.to_string(), ttl_millis("lock ttl", ttl)?.to_string()],
    })
}

/// The `UNLOCK` call.
pub(super) fn unlock_call(name: &str, holder: &str) -> ScriptCall {
    ScriptCall {
        keys: vec![name.to_string()],
        args: vec![holder.to_string()],
    }
}

/// The count of entries `append_once` wrote for one batch, from its script reply.
pub(super) fn written_count(reply: &Value) -> Result<usize, StoreError> {
    let n = integer(APPEND_ONCE.name, reply)?;
    usize::try_from(n).map_err(|_| unexpected("count from append_once", reply))
}

/// The reply of `HGETALL`: nil or empty read as no fields.
pub(super) fn parse_hash(reply: Value) -> Result<Vec<(String, String)>, StoreError> {
    match strip(reply) {
        Value::Nil => Ok(Vec::new()),
        other => parse_pairs("hash", other),
    }
}

/// The reply of `XLEN`.
pub(super) fn parse_len(reply: Value) -> Result<usize, StoreError> {
    match reply {
        Value::Int(n) => usize::try_from(n).map_err(|_| StoreError::Protocol(format!("XLEN replied {n}"))),
        other => Err(unexpected("XLEN", &other)),
    }
}

/// Sorts a redis-rs error into what the caller should do about it.
pub(super) fn store_error(err: RedisError) -> StoreError {
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

pub(super) fn unexpected(what: &str, value: &Value) -> StoreError {
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
pub(super) fn strip(value: Value) -> Value {
    match value {
        Value::Attribute { data, .. } => strip(*data),
        other => other,
    }
}

/// A string reply. Field names and values that are not UTF-8 (written by
/// something other than Meridian) are decoded lossily rather than failing
/// the whole read, so one odd entry cannot stop a stream.
pub(super) fn text(value: &Value) -> Option<String> {
    match value {
        Value::BulkString(bytes) => Some(String::from_utf8_lossy(bytes).into_owned()),
        Value::SimpleString(s) => Some(s.clone()),
        Value::VerbatimString { text, .. } => Some(text.clone()),
        Value::Int(n) => Some(n.to_string()),
        Value::Attribute { data, .. } => text(data),
        _ => None,
    }
}

pub(super) fn parse_id(value: &Value) -> Result<StreamId, StoreError> {
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
pub(super) fn parse_entries(value: Value) -> Result<Vec<Entry>, StoreError> {
    match strip(value) {
        Value::Nil => Ok(Vec::new()),
        Value::Array(items) | Value::Set(items) => items.into_iter().map(parse_entry).collect(),
        other => Err(unexpected("list of stream entries", &other)),
    }
}

/// The reply of XREAD: nil on timeout, else `[[key, entries], ...]` (RESP2)
/// or `{key: entries, ...}` (RESP3). Streams without entries are left out.
pub(super) fn parse_streams(value: Value) -> Result<Vec<StreamEntries>, StoreError> {
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

/// An integer reply.
pub(super) fn integer(what: &str, value: &Value) -> Result<i64, StoreError> {
    match value {
        Value::Int(n) => Ok(*n),
        Value::Attribute { data, .. } => integer(what, data),
        other => Err(unexpected(&format!("reply to {what}"), other)),
    }
}

/// `prefix` with SCAN's glob characters (`* ? [ ] \`) escaped, so it
/// matches itself literally.
pub(super) fn escape_glob(prefix: &str) -> String {
    let mut escaped = String::with_capacity(prefix.len() + 8);
    for c in prefix.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

/// The reply of SCAN: `[cursor, [key, ...]]`.
pub(super) fn parse_scan(value: Value) -> Result<(String, Vec<String>), StoreError> {
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
pub(super) fn parse_pairs(what: &str, value: Value) -> Result<Vec<(String, String)>, StoreError> {
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
    fn glob_characters_in_a_prefix_are_escaped() {
        assert_eq!(
            escape_glob("meridian:{Script}:state:"),
            "meridian:{Script}:state:"
        );
        assert_eq!(escape_glob(r"a*b?c[d]e\f"), r"a\*b\?c\[d\]e\\f");
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
