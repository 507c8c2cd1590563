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
//! The commands (the crate's `command`), scripts (`script`) and reply
//! parsing (`reply`) are shared with `cluster`; what is this
//! file's is the connections and how calls are pipelined to one server.

use crate::check::{check_batch, check_once_batches, expire_millis};
use crate::command::{
    escape_glob, expire_cmd, xadd, xrange_after, xread, xrevrange_newest, CONNECT_TIMEOUT, READ_REPLY_GRACE,
    RESPONSE_TIMEOUT, SCAN_COUNT,
};
use crate::contract::{Append, Entry, OnceBatch, Store, StoreError, StreamEntries, StreamReader};
use crate::reply::{
    expired, integer, oldest_first, parse_entries, parse_hash, parse_id, parse_len, parse_scan,
    parse_streams, store_error, text, unexpected,
};
use crate::script::{
    append_once_call, hash_set_call, lock_call, unlock_call, written_count, LuaScript, ScriptCall,
    APPEND_ONCE, HASH_SET, LOCK, UNLOCK,
};
use async_trait::async_trait;
use meridian_proto::StreamId;
use redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis::{AsyncConnectionConfig, Client, ErrorKind, RedisError, ServerErrorKind, Value};
use std::time::Duration;

/// How many times the connection manager retries connecting after a break
/// before the waiting call fails; callers retry on `Unavailable` anyway, so a
/// few attempts keep each failing call short during an outage.
const RECONNECT_RETRIES: usize = 2;

/// The longest pause between reconnection attempts.
const RECONNECT_MAX_DELAY: Duration = Duration::from_millis(500);

/// A [`Store`] on Redis streams.
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
