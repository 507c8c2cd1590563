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
//! parsing (`reply`) are shared with `cluster`; this file owns the
//! connections and how calls are pipelined to one server.

use crate::check::{check_batch, check_once_batches, expire_millis};
use crate::command::{
    expire_cmd, prefix_pattern, scan, xadd, xrange_after, xread, xrevrange_newest, xtrim_before,
    CONNECT_TIMEOUT, READ_REPLY_GRACE, RESPONSE_TIMEOUT,
};
use crate::contract::{Append, Entry, OnceBatch, Store, StoreError, StreamEntries, StreamReader};
use crate::reply::{
    expired, integer, oldest_first, parse_count, parse_entries, parse_hash, parse_id, parse_len, parse_pttl,
    parse_scan, parse_streams, store_error,
};
use crate::script::{
    append_once_calls, hash_set_call, lock_call, unlock_call, written_counts, LuaScript, ScriptCall,
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
        let mut pipe = redis::Pipeline::with_capacity(calls.len());
        for call in calls {
            pipe.add_command(call.evalsha(sha));
        }
        pipe.query_async(&mut self.commands.clone()).await
    }

    /// `SCRIPT LOAD`s `script` and remembers its SHA1.
    async fn load_script(&self, script: &LuaScript) -> Result<String, StoreError> {
        script.loaded(&self.query(&script.load_cmd()).await?)
    }

    /// Runs one call of a script that returns an integer.
    async fn run_script_once(&self, script: &LuaScript, call: ScriptCall) -> Result<i64, StoreError> {
        let replies = self.run_script(script, std::slice::from_ref(&call)).await?;
        integer(script.name, &replies[0])
    }

    /// Runs one short command on the shared connection.
    async fn query(&self, cmd: &redis::Cmd) -> Result<Value, StoreError> {
        cmd.query_async(&mut self.commands.clone())
            .await
            .map_err(store_error)
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
        oldest_first(self.query(&cmd).await?)
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
        parse_entries(self.query(&cmd).await?)
    }

    async fn len(&self, key: &str) -> Result<usize, StoreError> {
        parse_len(self.query(redis::cmd("XLEN").arg(key)).await?)
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
        let calls = append_once_calls(batches)?;
        if calls.is_empty() {
            return Ok(vec![0; batches.len()]);
        }
        let replies = self.run_script(&APPEND_ONCE, &calls).await?;
        written_counts(batches, replies)
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
        parse_hash(self.query(redis::cmd("HGETALL").arg(key)).await?)
    }

    async fn ttl(&self, key: &str) -> Result<Option<Duration>, StoreError> {
        parse_pttl(&self.query(redis::cmd("PTTL").arg(key)).await?)
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
        Ok(integer("EXISTS", &self.query(redis::cmd("EXISTS").arg(key)).await?)? > 0)
    }

    /// One `XTRIM MINID`, routed by the key.
    async fn trim_before(&self, key: &str, min_id: StreamId) -> Result<usize, StoreError> {
        parse_count("XTRIM", &self.query(&xtrim_before(key, min_id)).await?)
    }

    async fn delete(&self, keys: &[String]) -> Result<usize, StoreError> {
        if keys.is_empty() {
            return Ok(0);
        }
        parse_count("DEL", &self.query(redis::cmd("DEL").arg(keys)).await?)
    }

    /// `SCAN 0 MATCH <prefix with glob characters escaped>* COUNT 1000` until
    /// the cursor comes back to 0 or `limit` keys are found; sorted, and
    /// without the duplicates SCAN may return while Redis rehashes.
    async fn keys_with_prefix(&self, prefix: &str, limit: usize) -> Result<Vec<String>, StoreError> {
        let pattern = prefix_pattern(prefix);
        let mut found = std::collections::BTreeSet::new();
        let mut cursor = "0".to_string();
        while found.len() < limit {
            let reply = self.query(&scan(&cursor, &pattern)).await?;
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
        parse_count("DBSIZE", &self.query(&redis::cmd("DBSIZE")).await?)
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
