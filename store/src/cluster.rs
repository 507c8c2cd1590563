//! The Redis Cluster store: the Redis store's commands and scripts (the
//! crate's `command` and `script`, replies read by `reply`), spread over
//! the shards of a cluster with the redis crate's cluster client.
//!
//! A cluster splits keys into 16384 hash slots and gives each master a
//! share of them. A command, a Lua script, and (in the cluster client) a
//! pipeline may only touch keys of one slot; every key of one CSC instance
//! carries the hash tag `{CSC:salindex}` (see `meridian_proto::topic`), so
//! one producer's streams and dedup marks share a slot. What changes from
//! the Redis store (`redis`):
//! - `append`, `append_once` and `delete` group their keys by slot and send
//!   one pipeline per slot, all at once, merging the replies into the
//!   caller's order. A batch of many CSCs is as many pipelines in flight.
//! - `keys_with_prefix` runs `SCAN` on every master and merges the keys;
//!   `key_count` sums `DBSIZE` over the masters.
//! - A [`ClusterReader`] groups its cursors by slot and blocks on each group
//!   on a connection of its own (see its doc for the bounds).
//! - The cluster client follows `MOVED` and `ASK` (a resharding), and after
//!   a failover refreshes its slot map and retries, a few times within
//!   [`RESPONSE_TIMEOUT`]; a write that still fails is `Unavailable`, which
//!   the ingest writer retries until it is stored and only then
//!   acknowledges. A retried pipeline may append telemetry twice (the store
//!   contract allows it); events are written once by their dedup marks.
//! - With `store.cluster_replica_acks` = n > 0, each slot's write pipeline
//!   ends with `WAIT n`, and a write that fewer replicas acknowledged within
//!   [`REPLICA_ACK_TIMEOUT`] is `Unavailable` (retried, not acknowledged):
//!   a master that crashes and is replaced by such a replica loses nothing
//!   that was acknowledged.
//! - Scripts: `SCRIPT LOAD` goes to every master; a master that does not
//!   know a script (one promoted by a failover, or restarted) gets it with
//!   `EVAL` in place of `EVALSHA`, which also caches it there.
//!
//! Performance: a batch of one slot costs what it costs on one Redis; a
//! batch over k slots is k pipelines, multiplexed over one connection per
//! master, so Redis sees about the same commands. `WAIT` adds one
//! replication round trip per slot pipeline, and those of one master follow
//! each other (a waiting `WAIT` holds the connection), so with replica acks
//! the write rate falls with the number of CSCs per batch. `WAIT` stays in
//! the pipeline of the writes it covers: on another connection (a reconnect
//! after a failover) it would count that connection's writes, none, and
//! acknowledge what a crash may have lost. Figures (one Redis against a
//! cluster, with and without replica acks): `docs/performance.md`, "Redis
//! Cluster store".

use crate::check::{check_batch, check_once_batches, expire_millis};
use crate::command::{
    expire_cmd, prefix_pattern, scan, xadd, xrange_after, xread, xrevrange_newest, xtrim_before,
    CONNECT_TIMEOUT, READ_REPLY_GRACE, RESPONSE_TIMEOUT,
};
use crate::contract::{Append, Entry, OnceBatch, Store, StoreError, StreamEntries, StreamReader};
use crate::reply::{
    expired, integer, oldest_first, parse_count, parse_entries, parse_hash, parse_id, parse_len, parse_pttl,
    parse_scan, parse_streams, store_error, text, unexpected,
};
use crate::script::{
    append_once_calls, hash_set_call, lock_call, unlock_call, written_counts, LuaScript, ScriptCall,
    APPEND_ONCE, HASH_SET, LOCK, UNLOCK,
};
use async_trait::async_trait;
use futures_util::future::{join_all, BoxFuture};
use futures_util::stream::{FuturesUnordered, StreamExt};
use futures_util::FutureExt;
use meridian_proto::StreamId;
use redis::aio::MultiplexedConnection;
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
use redis::{
    AsyncConnectionConfig, Client, ConnectionAddr, ConnectionInfo, ErrorKind, IntoConnectionInfo, RedisError,
    ServerErrorKind, Value,
};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

/// Hash slots of a Redis Cluster.
pub const SLOTS: u16 = 16384;

/// Streams groups (slots) one reader blocks on at once, each on a
/// connection of its own, since a blocking `XREAD` may only name keys of
/// one slot and holds the connection it runs on. A frontend watching more
/// slots than this polls the rest every [`OVERFLOW_POLL`]: connections
/// stay bounded, latency grows only for those streams.
pub const MAX_BLOCKING_SLOTS: usize = 64;

/// How often a reader polls the slots it does not block on (beyond
/// [`MAX_BLOCKING_SLOTS`], or one being moved between masters): one
/// frontend frame (20 ms), so a browser sees no difference.
pub const OVERFLOW_POLL: Duration = Duration::from_millis(20);

/// How long a write waits for its replicas (`WAIT`) before it counts as
/// not stored: replication on a healthy network takes milliseconds; well
/// under [`RESPONSE_TIMEOUT`], which bounds the whole write.
pub const REPLICA_ACK_TIMEOUT: Duration = Duration::from_millis(1000);

/// How many times the cluster client retries a request (following a
/// redirection, reconnecting, refreshing its slot map) before it fails it;
/// all within [`RESPONSE_TIMEOUT`]. Callers retry `Unavailable` anyway.
const CLUSTER_RETRIES: u32 = 6;

/// Shortest and longest pause between two of those retries, in ms: a
/// failover takes the cluster about its node timeout, so later attempts
/// wait longer, up to half a second.
const CLUSTER_RETRY_WAIT_MS: (u64, u64) = (10, 500);

/// The hash slot of `key`: CRC16 (XMODEM) of its hash tag (the text between
/// the first `{` and the next `}`, if not empty) or else of the whole key,
/// modulo [`SLOTS`], as Redis computes it.
pub fn slot(key: &str) -> u16 {
    let key = key.as_bytes();
    let hashed = match key.iter().position(|&b| b == b'{') {
        Some(open) => match key[open + 1..].iter().position(|&b| b == b'}') {
            Some(len) if len > 0 => &key[open + 1..open + 1 + len],
            _ => key,
        },
        None => key,
    };
    crc16_xmodem(hashed) % SLOTS
}

fn crc16_xmodem(bytes: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &byte in bytes {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// Indices of `keys` grouped by slot, each group in the order of `keys`.
fn by_slot<'a>(keys: impl Iterator<Item = &'a str>) -> BTreeMap<u16, Vec<usize>> {
    let mut groups: BTreeMap<u16, Vec<usize>> = BTreeMap::new();
    for (i, key) in keys.enumerate() {
        groups.entry(slot(key)).or_default().push(i);
    }
    groups
}

/// Routes a command to the master of `slot`.
fn to_master(slot: u16) -> RoutingInfo {
    RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(Route::new(
        slot,
        SlotAddr::Master,
    )))
}

/// A [`Store`] on a Redis Cluster.
#[derive(Clone)]
pub struct ClusterStore {
    seeds: Vec<String>,
    /// The first seed's connection settings (credentials, TLS), for the
    /// connections readers open to single masters.
    node_settings: ConnectionInfo,
    commands: ClusterConnection,
    replica_acks: usize,
}

impl std::fmt::Debug for ClusterStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterStore")
            .field("seeds", &self.seeds)
            .field("replica_acks", &self.replica_acks)
            .finish()
    }
}

/// One range of slots and the address of the master serving it.
#[derive(Debug, Clone, PartialEq)]
struct SlotRange {
    first: u16,
    last: u16,
    host: String,
    port: u16,
}

impl ClusterStore {
    /// Connects to the cluster through `seeds` (`redis://host:port` URLs;
    /// one reachable node is enough), failing with `Unavailable` if none
    /// answers, or `Refused` if a URL is not a Redis URL. Each write waits
    /// for `replica_acks` replicas (`WAIT`; 0: none).
    pub async fn connect(seeds: &[String], replica_acks: usize) -> Result<ClusterStore, StoreError> {
        let infos = seeds
            .iter()
            .map(|url| url.as_str().into_connection_info())
            .collect::<Result<Vec<_>, _>>()
            .map_err(cluster_error)?;
        let node_settings = infos
            .first()
            .cloned()
            .ok_or_else(|| StoreError::Refused("no seed node for the Redis Cluster".to_string()))?;
        let client = ClusterClientBuilder::new(infos)
            .connection_timeout(CONNECT_TIMEOUT)
            .response_timeout(RESPONSE_TIMEOUT)
            .retries(CLUSTER_RETRIES)
            .min_retry_wait(CLUSTER_RETRY_WAIT_MS.0)
            .max_retry_wait(CLUSTER_RETRY_WAIT_MS.1)
            .build()
            .map_err(cluster_error)?;
        let commands = client.get_async_connection().await.map_err(cluster_error)?;
        Ok(ClusterStore {
            seeds: seeds.to_vec(),
            node_settings,
            commands,
            replica_acks,
        })
    }

    /// The seed URLs, for diagnostics.
    pub fn seeds(&self) -> &[String] {
        &self.seeds
    }

    async fn query(&self, cmd: &redis::Cmd) -> Result<Value, StoreError> {
        cmd.query_async(&mut self.commands.clone())
            .await
            .map_err(cluster_error)
    }

    /// Sends one slot's pipeline of writes, ended by `WAIT` when writes must
    /// reach replicas; [`ClusterStore::acknowledged`] reads the replies.
    async fn send_writes(&self, mut pipe: redis::Pipeline) -> Result<Vec<Value>, RedisError> {
        if self.replica_acks > 0 {
            pipe.cmd("WAIT")
                .arg(self.replica_acks)
                .arg(REPLICA_ACK_TIMEOUT.as_millis() as u64);
        }
        pipe.query_async(&mut self.commands.clone()).await
    }

    /// The replies of a write pipeline without its `WAIT`'s, once enough
    /// replicas acknowledged it.
    fn acknowledged(
        &self,
        mut replies: Vec<Value>,
        commands: usize,
        what: &str,
    ) -> Result<Vec<Value>, StoreError> {
        let expected = commands + usize::from(self.replica_acks > 0);
        if replies.len() != expected {
            return Err(StoreError::Protocol(format!(
                "{} replies to a pipeline of {commands} {what}",
                replies.len()
            )));
        }
        if self.replica_acks > 0 {
            let reply = replies.pop().unwrap_or(Value::Nil);
            let reached = integer("WAIT", &reply)?;
            if usize::try_from(reached).unwrap_or(0) < self.replica_acks {
                return Err(StoreError::Unavailable(format!(
                    "{what}: {reached} of {} replicas (store.cluster_replica_acks) acknowledged \
                     within {REPLICA_ACK_TIMEOUT:?}; held back until the shard has enough live replicas",
                    self.replica_acks
                )));
            }
        }
        Ok(replies)
    }

    /// Writes one slot's pipeline and checks it reached its replicas.
    async fn write(
        &self,
        pipe: redis::Pipeline,
        commands: usize,
        what: &str,
    ) -> Result<Vec<Value>, StoreError> {
        let replies = self.send_writes(pipe).await.map_err(cluster_error)?;
        self.acknowledged(replies, commands, what)
    }

    /// Runs `calls` of `script`, one pipeline per slot, all at once; returns
    /// the replies in the order of `calls`. A call whose keys hash to more
    /// than one slot is refused before anything is sent.
    async fn run_script(&self, script: &LuaScript, calls: &[ScriptCall]) -> Result<Vec<Value>, StoreError> {
        for call in calls {
            let Some(first) = call.keys.first() else {
                return Err(StoreError::Refused(format!(
                    "a call of the {} script without keys",
                    script.name
                )));
            };
            if let Some(other) = call.keys.iter().find(|k| slot(k) != slot(first)) {
                return Err(StoreError::Refused(format!(
                    "the {} script was given keys {first:?} and {other:?}, which a Redis Cluster keeps \
                     in different slots: give every key of one call the same hash tag",
                    script.name
                )));
            }
        }
        let sha = match script.sha.get() {
            Some(sha) => sha.clone(),
            None => self.load_script(script).await?,
        };
        let groups = by_slot(calls.iter().map(|c| c.keys[0].as_str()));
        let sha = &sha;
        let results = join_all(groups.values().map(|indices| async move {
            let pipeline = |by_source: bool| {
                let mut pipe = redis::Pipeline::with_capacity(indices.len() + 1);
                for &i in indices {
                    pipe.add_command(match by_source {
                        false => calls[i].evalsha(sha),
                        true => calls[i].eval(script),
                    });
                }
                pipe
            };
            let replies = match self.send_writes(pipeline(false)).await {
                Err(err) if err.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
                    self.send_writes(pipeline(true)).await
                }
                other => other,
            }
            .map_err(cluster_error)?;
            self.acknowledged(replies, indices.len(), script.name)
        }))
        .await;
        let mut replies = vec![Value::Nil; calls.len()];
        for (indices, result) in groups.values().zip(results) {
            for (&i, reply) in indices.iter().zip(result?) {
                replies[i] = reply;
            }
        }
        Ok(replies)
    }

    /// `SCRIPT LOAD`s `script` on every master and remembers its SHA1.
    async fn load_script(&self, script: &LuaScript) -> Result<String, StoreError> {
        script.loaded(&self.query(&script.load_cmd()).await?)
    }

    async fn run_script_once(&self, script: &LuaScript, call: ScriptCall) -> Result<i64, StoreError> {
        let replies = self.run_script(script, std::slice::from_ref(&call)).await?;
        integer(script.name, &replies[0])
    }

    /// Which master serves which slots (`CLUSTER SLOTS`), as the node the
    /// client asks sees it.
    async fn slot_ranges(&self) -> Result<Vec<SlotRange>, StoreError> {
        let reply = self.query(redis::cmd("CLUSTER").arg("SLOTS")).await?;
        let fallback_host = match self.node_settings.addr() {
            ConnectionAddr::Tcp(host, _) | ConnectionAddr::TcpTls { host, .. } => host.clone(),
            _ => String::new(),
        };
        parse_slot_ranges(reply, &fallback_host)
    }

    /// A connection of its own to the master at `host:port`, with the
    /// seeds' credentials, for a blocking read.
    async fn node_connection(&self, host: &str, port: u16) -> Result<MultiplexedConnection, StoreError> {
        let addr = match self.node_settings.addr() {
            ConnectionAddr::TcpTls {
                insecure, tls_params, ..
            } => ConnectionAddr::TcpTls {
                host: host.to_string(),
                port,
                insecure: *insecure,
                tls_params: tls_params.clone(),
            },
            _ => ConnectionAddr::Tcp(host.to_string(), port),
        };
        let client = Client::open(self.node_settings.clone().set_addr(addr)).map_err(cluster_error)?;
        // No response timeout: an `XREAD BLOCK` is meant to wait; reads bound each call.
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(None);
        client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(cluster_error)
    }

    /// Non-blocking `XREAD`s of every group through the cluster client, all
    /// at once, merged.
    async fn read_now(&self, groups: &[Group], count: usize) -> Result<Vec<StreamEntries>, StoreError> {
        let replies = join_all(
            groups
                .iter()
                .map(|group| async move { self.query(&xread(&group.cursors, count, Duration::ZERO)).await }),
        )
        .await;
        let mut streams = Vec::new();
        for reply in replies {
            streams.extend(parse_streams(reply?)?);
        }
        Ok(streams)
    }
}

/// The reply of `CLUSTER SLOTS`: `[[first, last, [host, port, id, ...],
/// replicas...], ...]`. An empty host means "the node you asked", here the
/// first seed's host.
fn parse_slot_ranges(reply: Value, fallback_host: &str) -> Result<Vec<SlotRange>, StoreError> {
    let Value::Array(ranges) = reply else {
        return Err(unexpected("reply to CLUSTER SLOTS", &reply));
    };
    let slot_number = |value: &Value| {
        integer("CLUSTER SLOTS", value).and_then(|n| {
            u16::try_from(n)
                .ok()
                .filter(|n| *n < SLOTS)
                .ok_or_else(|| unexpected("slot number", value))
        })
    };
    ranges
        .iter()
        .map(|range| {
            let Value::Array(parts) = range else {
                return Err(unexpected("slot range", range));
            };
            let (Some(first), Some(last), Some(Value::Array(master))) =
                (parts.first(), parts.get(1), parts.get(2))
            else {
                return Err(unexpected("slot range", range));
            };
            let (Some(host), Some(port)) = (master.first().and_then(text), master.get(1)) else {
                return Err(unexpected("slot range master", range));
            };
            let port = integer("CLUSTER SLOTS", port)
                .ok()
                .and_then(|p| u16::try_from(p).ok())
                .ok_or_else(|| unexpected("master port", range))?;
            let host = match host.as_str() {
                "" | "?" => fallback_host.to_string(),
                _ => host,
            };
            Ok(SlotRange {
                first: slot_number(first)?,
                last: slot_number(last)?,
                host,
                port,
            })
        })
        .collect()
}

#[async_trait]
impl Store for ClusterStore {
    async fn append(&self, batch: &[Append]) -> Result<Vec<StreamId>, StoreError> {
        check_batch(batch)?;
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let groups = by_slot(batch.iter().map(|a| a.key.as_str()));
        let results = join_all(groups.values().map(|indices| async move {
            let mut pipe = redis::Pipeline::with_capacity(indices.len() + 1);
            for &i in indices {
                pipe.add_command(xadd(&batch[i]));
            }
            let replies = self.write(pipe, indices.len(), "XADD").await?;
            replies.iter().map(parse_id).collect::<Result<Vec<_>, _>>()
        }))
        .await;
        let mut ids = vec![StreamId::ZERO; batch.len()];
        for (indices, result) in groups.values().zip(results) {
            for (&i, id) in indices.iter().zip(result?) {
                ids[i] = id;
            }
        }
        Ok(ids)
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
        let slots = self.slot_ranges().await?;
        Ok(Box::new(ClusterReader {
            store: self.clone(),
            slots,
            connections: HashMap::new(),
            waiting: HashMap::new(),
        }))
    }

    /// One `APPEND_ONCE` per non-empty batch, one pipeline per slot. As on
    /// one Redis each batch is atomic, and a failure of one still lets the
    /// others run; the first error is returned.
    async fn append_once(&self, batches: &[OnceBatch]) -> Result<Vec<usize>, StoreError> {
        check_once_batches(batches)?;
        let calls = append_once_calls(batches)?;
        if calls.is_empty() {
            return Ok(vec![0; batches.len()]);
        }
        let replies = self.run_script(&APPEND_ONCE, &calls).await?;
        written_counts(batches, replies)
    }

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

    /// One pipeline of `PEXPIRE` (or `PERSIST`) per slot, all at once
    /// (each ended by `WAIT` with replica acks, like every write).
    async fn expire(&self, keys: &[String], ttl: Option<Duration>) -> Result<(), StoreError> {
        let ms = expire_millis(ttl)?;
        if keys.is_empty() {
            return Ok(());
        }
        let groups = by_slot(keys.iter().map(String::as_str));
        let results = join_all(groups.values().map(|indices| async move {
            let mut pipe = redis::Pipeline::with_capacity(indices.len() + 1);
            for &i in indices {
                pipe.add_command(expire_cmd(&keys[i], ms));
            }
            let replies = self.write(pipe, indices.len(), "PEXPIRE").await?;
            expired(&replies, indices.len())
        }))
        .await;
        results.into_iter().collect()
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

    /// `SCAN` on every master in turn (as on one Redis), merged, sorted and
    /// deduplicated. A key moved between masters while the scan runs (a
    /// resharding) may be missed: for sweepers, which come back.
    async fn keys_with_prefix(&self, prefix: &str, limit: usize) -> Result<Vec<String>, StoreError> {
        let pattern = prefix_pattern(prefix);
        let mut masters: BTreeMap<(String, u16), u16> = BTreeMap::new();
        for range in self.slot_ranges().await? {
            masters.entry((range.host, range.port)).or_insert(range.first);
        }
        let mut found = BTreeSet::new();
        for slot in masters.into_values() {
            let mut cursor = "0".to_string();
            while found.len() < limit {
                let reply = self
                    .commands
                    .clone()
                    .route_command(scan(&cursor, &pattern), to_master(slot))
                    .await
                    .map_err(cluster_error)?;
                let (next, keys) = parse_scan(reply)?;
                found.extend(keys);
                if next == "0" {
                    break;
                }
                cursor = next;
            }
        }
        Ok(found.into_iter().take(limit).collect())
    }

    /// `DBSIZE` summed over the masters (the cluster client's policy for it).
    async fn key_count(&self) -> Result<usize, StoreError> {
        parse_count("DBSIZE", &self.query(&redis::cmd("DBSIZE")).await?)
    }

    async fn lock(&self, name: &str, holder: &str, ttl: Duration) -> Result<bool, StoreError> {
        Ok(self.run_script_once(&LOCK, lock_call(name, holder, ttl)?).await? == 1)
    }

    async fn unlock(&self, name: &str, holder: &str) -> Result<bool, StoreError> {
        Ok(self.run_script_once(&UNLOCK, unlock_call(name, holder)).await? == 1)
    }
}

/// The cursors of one slot.
#[derive(Debug, Clone, PartialEq)]
struct Group {
    slot: u16,
    cursors: Vec<(String, StreamId)>,
}

/// What one blocking read of a group resolves to.
type Outcome = Result<Result<Value, RedisError>, tokio::time::error::Elapsed>;

/// A blocking `XREAD` of one group in flight, kept across `read` calls.
struct Waiting {
    group: Group,
    reply: BoxFuture<'static, Outcome>,
}

impl Future for Waiting {
    type Output = (Group, Outcome);

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.reply.poll_unpin(cx) {
            Poll::Ready(outcome) => Poll::Ready((self.group.clone(), outcome)),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// Reads streams of many slots, blocking on all of them at once.
///
/// A blocking `XREAD` may only name keys of one slot, so the reader groups
/// its cursors by slot and keeps one `XREAD BLOCK` in flight per group, each
/// on a connection of its own to the group's master (at most
/// [`MAX_BLOCKING_SLOTS`]; further groups are polled every
/// [`OVERFLOW_POLL`] through the cluster client). With several groups, a
/// `read` first reads every group without blocking, through the cluster
/// client (one round trip per master): entries already there come at once,
/// from all groups, as one `XREAD` would return them. Only if there are none
/// does it block, and it returns as soon as any group has entries, with
/// those of every other group whose read is done at that moment. The reads
/// of the other groups stay in flight, kept for the next call if their
/// cursors have not changed (a group whose cursors did change gets a new
/// read, queued behind the old one on its connection, which ends within its
/// block). So one `read` waits at most its `block`, and the memory and
/// connections held are bounded by [`MAX_BLOCKING_SLOTS`].
///
/// Cost against one Redis: a busy reader sends one `XREAD` per slot group
/// per read instead of one `XREAD` naming every stream; Redis does about the
/// same work per stream, the client more round trips (pipelined per master).
///
/// A redirection (`MOVED`, `ASK`, `TRYAGAIN`: a resharding; `CLUSTERDOWN`,
/// `READONLY`: a failover) makes the reader forget the slot map and poll
/// that group until the next call asks the cluster again; a broken
/// connection is `Unavailable`, and the next call reconnects.
pub struct ClusterReader {
    store: ClusterStore,
    /// The slot map, fetched again when empty.
    slots: Vec<SlotRange>,
    /// Connections for blocking reads, by slot, with the master's address.
    connections: HashMap<u16, ((String, u16), MultiplexedConnection)>,
    /// Blocking reads in flight, by slot.
    waiting: HashMap<u16, Waiting>,
}

impl ClusterReader {
    fn master_of(&self, slot: u16) -> Option<(String, u16)> {
        self.slots
            .iter()
            .find(|r| r.first <= slot && slot <= r.last)
            .map(|r| (r.host.clone(), r.port))
    }

    /// The connection for blocking reads of `slot` (one per slot, since a
    /// blocking read holds its connection), opened to the master the slot
    /// map names if there is none to that master yet; `None` if no master
    /// serves the slot now.
    async fn connection(&mut self, slot: u16) -> Result<Option<MultiplexedConnection>, StoreError> {
        if self.slots.is_empty() {
            self.slots = self.store.slot_ranges().await?;
        }
        let Some(master) = self.master_of(slot) else {
            return Ok(None); // a slot no master serves: poll it
        };
        if let Some((node, connection)) = self.connections.get(&slot) {
            if *node == master {
                return Ok(Some(connection.clone()));
            }
        }
        let connection = self.store.node_connection(&master.0, master.1).await?;
        self.connections.insert(slot, (master, connection.clone()));
        self.waiting.remove(&slot);
        Ok(Some(connection))
    }

    /// Drops what the reader knows about `slot`'s master.
    fn forget(&mut self, slot: u16) {
        self.slots.clear();
        self.connections.remove(&slot);
        self.waiting.remove(&slot);
    }

    /// A blocking read of `group` on `connection`, bounded by its block and
    /// a grace period (a silent network partition would otherwise hang it).
    fn start(group: Group, mut connection: MultiplexedConnection, count: usize, block: Duration) -> Waiting {
        let cmd = xread(&group.cursors, count, block);
        let reply = async move {
            tokio::time::timeout(
                block.saturating_add(READ_REPLY_GRACE),
                cmd.query_async::<Value>(&mut connection),
            )
            .await
        }
        .boxed();
        Waiting { group, reply }
    }
}

/// Sorts a cluster client's error: as [`store_error`] does, and also
/// `Unavailable` for what a failover or a resharding in progress looks like
/// once the client's own retries ran out (a redirection, a write to a
/// demoted master, no connection to the node serving a slot). The caller
/// retries; nothing was acknowledged.
fn cluster_error(err: RedisError) -> StoreError {
    match err.kind() {
        ErrorKind::Server(ServerErrorKind::Moved | ServerErrorKind::Ask | ServerErrorKind::ReadOnly)
        | ErrorKind::ClusterConnectionNotFound => StoreError::Unavailable(err.to_string()),
        _ => store_error(err),
    }
}

/// Whether a failed blocking read only means its slot is elsewhere now (or
/// soon): resharding and failover replies, as opposed to a broken connection.
fn redirected(err: &RedisError) -> bool {
    matches!(
        err.kind(),
        ErrorKind::Server(
            ServerErrorKind::Moved
                | ServerErrorKind::Ask
                | ServerErrorKind::TryAgain
                | ServerErrorKind::ClusterDown
                | ServerErrorKind::ReadOnly
                | ServerErrorKind::MasterDown
        )
    )
}

#[async_trait]
impl StreamReader for ClusterReader {
    async fn read(
        &mut self,
        cursors: &[(String, StreamId)],
        count: usize,
        block: Duration,
    ) -> Result<Vec<StreamEntries>, StoreError> {
        if cursors.is_empty() {
            tokio::time::sleep(block).await;
            return Ok(Vec::new());
        }
        let mut by_slot: BTreeMap<u16, Vec<(String, StreamId)>> = BTreeMap::new();
        for (key, after) in cursors {
            by_slot.entry(slot(key)).or_default().push((key.clone(), *after));
        }
        let groups: Vec<Group> = by_slot
            .into_iter()
            .map(|(slot, cursors)| Group { slot, cursors })
            .collect();
        if block.is_zero() || groups.len() > 1 {
            // Entries already there come at once, from every group, as one
            // `XREAD` would return them; only then is it worth blocking.
            let found = self.store.read_now(&groups, count).await?;
            if block.is_zero() || !found.is_empty() {
                return Ok(found);
            }
        }
        let deadline = tokio::time::Instant::now() + block;
        let count = count.max(1);

        // Groups without a blocking connection: beyond the bound, or whose
        // slot no master serves right now.
        let mut polled: Vec<Group> = groups.iter().skip(MAX_BLOCKING_SLOTS).cloned().collect();
        let blocking: Vec<Group> = groups.into_iter().take(MAX_BLOCKING_SLOTS).collect();
        let keep: std::collections::HashSet<u16> = blocking.iter().map(|g| g.slot).collect();
        self.connections.retain(|slot, _| keep.contains(slot));
        self.waiting.retain(|slot, _| keep.contains(slot));

        let mut waits = FuturesUnordered::new();
        for group in blocking {
            match self.waiting.remove(&group.slot) {
                Some(waiting) if waiting.group == group => waits.push(waiting),
                _ => match self.connection(group.slot).await {
                    Ok(Some(connection)) => waits.push(Self::start(group, connection, count, block)),
                    Ok(None) => polled.push(group),
                    Err(err) => {
                        self.waiting.extend(waits.into_iter().map(|w| (w.group.slot, w)));
                        return Err(err);
                    }
                },
            }
        }

        let mut found = Vec::new();
        let mut next_poll = tokio::time::Instant::now();
        loop {
            if !polled.is_empty() && tokio::time::Instant::now() >= next_poll {
                found.extend(self.store.read_now(&polled, count).await?);
                next_poll = tokio::time::Instant::now() + OVERFLOW_POLL;
            }
            if !found.is_empty() || tokio::time::Instant::now() >= deadline {
                break;
            }
            let wake = match polled.is_empty() {
                true => deadline,
                false => next_poll.min(deadline),
            };
            tokio::select! {
                next = waits.next(), if !waits.is_empty() => {
                    let Some((group, outcome)) = next else { continue };
                    match outcome {
                        Ok(Ok(reply)) => {
                            let streams = parse_streams(reply)?;
                            if streams.is_empty() {
                                // Its block ran out (it was started by an earlier call):
                                // wait for the rest of this call's block.
                                let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                                if !left.is_zero() {
                                    match self.connection(group.slot).await {
                                        Ok(Some(connection)) => waits.push(Self::start(group, connection, count, left)),
                                        Ok(None) => polled.push(group),
                                        Err(err) => {
                                            self.waiting.extend(waits.into_iter().map(|w| (w.group.slot, w)));
                                            return Err(err);
                                        }
                                    }
                                }
                            } else {
                                found.extend(streams);
                            }
                        }
                        Ok(Err(err)) if redirected(&err) => {
                            tracing::debug!(slot = group.slot, error = %err, "stream slot moving; polling it");
                            self.forget(group.slot);
                            polled.push(group);
                        }
                        Ok(Err(err)) => {
                            self.forget(group.slot);
                            self.waiting.extend(waits.into_iter().map(|w| (w.group.slot, w)));
                            return Err(cluster_error(err));
                        }
                        Err(_) => {
                            self.forget(group.slot);
                            self.waiting.extend(waits.into_iter().map(|w| (w.group.slot, w)));
                            return Err(StoreError::Unavailable(format!(
                                "XREAD got no reply within {READ_REPLY_GRACE:?} of its block time"
                            )));
                        }
                    }
                }
                _ = tokio::time::sleep_until(wake) => {}
            }
        }
        // Whatever else is ready now comes along; the rest stays in flight.
        while let Some(Some((group, outcome))) = waits.next().now_or_never() {
            match outcome {
                Ok(Ok(reply)) => found.extend(parse_streams(reply)?),
                Ok(Err(_)) | Err(_) => self.forget(group.slot),
            }
        }
        self.waiting.extend(waits.into_iter().map(|w| (w.group.slot, w)));
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_computed_as_redis_does() {
        // Values from the Redis Cluster specification and redis-cli.
        assert_eq!(crc16_xmodem(b"123456789"), 0x31C3);
        assert_eq!(slot("foo"), 12182);
        assert_eq!(slot("{foo}bar"), 12182);
        assert_eq!(slot("{user1000}.following"), slot("{user1000}.followers"));
        // An empty tag or none closed: the whole key is hashed.
        assert_eq!(slot("{}foo"), crc16_xmodem(b"{}foo") % SLOTS);
        assert_eq!(slot("foo{bar"), crc16_xmodem(b"foo{bar") % SLOTS);
        // Only the first tag counts.
        assert_eq!(slot("foo{bar}{zap}"), slot("bar"));
        // The same slot the cluster client routes to.
        for key in [
            "meridian:{MTM1M3:0}:telemetry:x",
            "meridian:catalog",
            "k",
            "{}",
            "a{b}c",
        ] {
            assert_eq!(
                Route::new(slot(key), SlotAddr::Master),
                Route::with_key(key, SlotAddr::Master),
                "{key}"
            );
        }
    }

    #[test]
    fn failover_and_resharding_errors_are_retried_not_refused() {
        for kind in [
            ServerErrorKind::Moved,
            ServerErrorKind::Ask,
            ServerErrorKind::ReadOnly,
            ServerErrorKind::TryAgain,
            ServerErrorKind::ClusterDown,
            ServerErrorKind::MasterDown,
        ] {
            let err = RedisError::from((ErrorKind::Server(kind), "in transit"));
            assert!(
                matches!(cluster_error(err), StoreError::Unavailable(_)),
                "{kind:?}"
            );
        }
        let err = RedisError::from((ErrorKind::ClusterConnectionNotFound, "no node"));
        assert!(matches!(cluster_error(err), StoreError::Unavailable(_)));
        // A bug, not a transition: retrying cannot help.
        let err = RedisError::from((ErrorKind::Server(ServerErrorKind::CrossSlot), "two slots"));
        assert!(matches!(cluster_error(err), StoreError::Refused(_)));
        // A plain Redis client pointed at a cluster node is told what to configure.
        let err = RedisError::from((ErrorKind::Server(ServerErrorKind::Moved), "MOVED 1 h:1"));
        assert!(
            matches!(store_error(err), StoreError::Refused(ref m) if m.contains("store.backend = \"cluster\"")),
        );
    }

    #[test]
    fn one_csc_instance_is_one_slot() {
        use meridian_proto::{keys, Category, CscId, TopicId};
        let csc = CscId::new("MTM1M3", 0).unwrap();
        let stream =
            keys::stream(&TopicId::new(csc.clone(), Category::Telemetry, "forceActuatorData").unwrap());
        assert_eq!(slot(&stream), slot(&keys::dedup(&csc, 7, "events")));
        let groups = by_slot(["a", "b", "a", "{a}x"].into_iter());
        assert_eq!(groups[&slot("a")], [0, 2, 3]);
        assert_eq!(groups[&slot("b")], [1]);
    }

    #[test]
    fn cluster_slots_replies_parse() {
        let node = |host: &str, port: i64| {
            Value::Array(vec![
                Value::BulkString(host.as_bytes().to_vec()),
                Value::Int(port),
                Value::BulkString(b"id".to_vec()),
            ])
        };
        let reply = Value::Array(vec![
            Value::Array(vec![
                Value::Int(0),
                Value::Int(5460),
                node("10.0.0.1", 7000),
                node("10.0.0.4", 7003),
            ]),
            Value::Array(vec![Value::Int(5461), Value::Int(16383), node("", 7001)]),
        ]);
        assert_eq!(
            parse_slot_ranges(reply, "seed").unwrap(),
            [
                SlotRange {
                    first: 0,
                    last: 5460,
                    host: "10.0.0.1".to_string(),
                    port: 7000
                },
                SlotRange {
                    first: 5461,
                    last: 16383,
                    host: "seed".to_string(),
                    port: 7001
                },
            ]
        );
        for odd in [
            Value::Int(1),
            Value::Array(vec![Value::Int(1)]),
            Value::Array(vec![Value::Array(vec![
                Value::Int(0),
                Value::Int(99999),
                node("h", 1),
            ])]),
            Value::Array(vec![Value::Array(vec![
                Value::Int(0),
                Value::Int(1),
                node("h", 70000),
            ])]),
        ] {
            assert!(matches!(
                parse_slot_ranges(odd, "seed"),
                Err(StoreError::Protocol(_))
            ));
        }
    }
}
