//! Every store keeps the same promises: the in-memory store, the Redis
//! store and the Redis Cluster store (on a 3-master cluster) run this one
//! suite.
//!
//! If these failed, a user would notice: samples missing, duplicated or out
//! of order in a browser's plot; a reconnecting browser that replays the wrong
//! entries after its "last id seen"; history shorter than the configured
//! retention, or memory and Redis growing without bound; live plots that
//! freeze until the next poll instead of updating as samples arrive; text
//! fields mangled (unicode, empty values); a sample written twice after a
//! producer replayed it, or lost because a stale dedup mark never expired;
//! two managers both believing they hold one lock; state hashes that never
//! expire or expire too soon; and, for Redis, the manager hanging or crashing
//! when Redis goes away instead of reporting the outage and carrying on once
//! Redis is back, or data acknowledged before a Redis crash missing after it.

use anyhow::{ensure, Context};
use meridian_proto::StreamId;
use meridian_store::cluster::ClusterStore;
use meridian_store::memory::MemoryStore;
use meridian_store::redis::RedisStore;
use meridian_store::{Append, Entry, OnceBatch, Store, StoreError, StreamEntries, TRIM_SLACK};
use meridian_testkit::redis_cluster::RedisCluster;
use meridian_testkit::redis_server::RedisServer;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Bound on anything that should be quick, so a broken store fails the test
/// instead of hanging it.
const PATIENCE: Duration = Duration::from_secs(20);

/// The store under test, and the Redis server or cluster behind it if there is one.
struct Backend {
    store: Arc<dyn Store>,
    server: Option<RedisServer>,
    cluster: Option<RedisCluster>,
}

impl Backend {
    fn memory() -> Backend {
        Backend {
            store: Arc::new(MemoryStore::new()),
            server: None,
            cluster: None,
        }
    }

    async fn redis() -> anyhow::Result<Backend> {
        let server = RedisServer::start()?;
        let store = RedisStore::connect(&server.url()).await?;
        Ok(Backend {
            store: Arc::new(store),
            server: Some(server),
            cluster: None,
        })
    }

    /// Three masters without replicas: keys of the tests spread over all three.
    async fn cluster() -> anyhow::Result<Backend> {
        let cluster = tokio::task::block_in_place(|| RedisCluster::start(3, 0))?;
        let store = ClusterStore::connect(&cluster.seeds(), 0).await?;
        Ok(Backend {
            store: Arc::new(store),
            server: None,
            cluster: Some(cluster),
        })
    }

    /// Waits until a reader is blocked inside the store, where the store can
    /// tell (Redis: `CLIENT LIST` shows a client blocked in XREAD), so the
    /// wake-up test appends to a reader that is really waiting.
    async fn until_a_reader_blocks(&self) -> anyhow::Result<()> {
        let urls = match (&self.server, &self.cluster) {
            (Some(server), _) => vec![server.url()],
            (_, Some(cluster)) => cluster.seeds(),
            _ => return Ok(()),
        };
        let deadline = Instant::now() + PATIENCE;
        loop {
            let mut clients = String::new();
            for url in &urls {
                let client = ::redis::Client::open(url.as_str())?;
                let mut conn = client.get_multiplexed_async_connection().await?;
                let list: String = ::redis::cmd("CLIENT").arg("LIST").query_async(&mut conn).await?;
                clients.push_str(&list);
            }
            let blocked = clients.lines().any(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                fields.contains(&"cmd=xread")
                    && fields
                        .iter()
                        .any(|f| f.strip_prefix("flags=").is_some_and(|fl| fl.contains('b')))
            });
            if blocked {
                return Ok(());
            }
            ensure!(
                Instant::now() < deadline,
                "no reader blocked in XREAD:\n{clients}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// Generates one test per backend for each generic test below.
macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() -> anyhow::Result<()> {
                    super::$name(&super::Backend::memory()).await
                }
            )*
        }
        mod redis {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() -> anyhow::Result<()> {
                    super::$name(&super::Backend::redis().await?).await
                }
            )*
        }
        mod cluster {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() -> anyhow::Result<()> {
                    super::$name(&super::Backend::cluster().await?).await
                }
            )*
        }
    };
}

conformance!(
    append_returns_increasing_ids_in_order,
    one_batch_spans_several_keys,
    empty_batch_and_entry_without_fields,
    last_is_newest_oldest_first_and_empty_when_missing,
    range_is_exclusive_after_inclusive_until_and_counted,
    retention_keeps_the_newest_maxlen,
    trim_before_removes_exactly_the_older_entries,
    read_returns_only_entries_after_the_cursors,
    blocked_read_wakes_up_on_append,
    read_times_out_empty_when_nothing_arrives,
    a_reader_of_many_streams_misses_and_repeats_nothing,
    fields_keep_order_and_values,
    concurrent_appenders_keep_every_entry,
    append_once_writes_each_seq_once,
    append_once_mark_expires_after_mark_ttl,
    append_once_refuses_bad_batches_before_writing,
    concurrent_append_once_writes_one_copy,
    hash_set_and_get_round_trip_with_ttl,
    streams_expire_when_told_and_keep_their_ttl_across_appends,
    keys_exist_delete_count_and_list_by_prefix,
    lock_is_held_by_one_holder_until_expiry,
);

fn append(key: &str, maxlen: usize, n: usize) -> Append {
    Append {
        key: key.to_string(),
        maxlen,
        fields: vec![("n".to_string(), n.to_string())],
    }
}

fn ids(entries: &[Entry]) -> Vec<StreamId> {
    entries.iter().map(|e| e.id).collect()
}

fn numbers(entries: &[Entry]) -> Vec<usize> {
    entries
        .iter()
        .filter_map(|e| e.field("n")?.parse().ok())
        .collect()
}

fn strictly_increasing(ids: &[StreamId]) -> bool {
    ids.windows(2).all(|w| w[0] < w[1])
}

/// Appends `0..count` to `key` as `n` fields, one batch, returning the ids.
async fn fill(store: &dyn Store, key: &str, count: usize) -> anyhow::Result<Vec<StreamId>> {
    let batch: Vec<Append> = (0..count).map(|n| append(key, 10_000, n)).collect();
    Ok(store.append(&batch).await?)
}

fn sorted(mut streams: Vec<StreamEntries>) -> Vec<StreamEntries> {
    streams.sort_by(|a, b| a.key.cmp(&b.key));
    streams
}

async fn append_returns_increasing_ids_in_order(b: &Backend) -> anyhow::Result<()> {
    let store = &*b.store;
    let first = fill(store, "k", 5).await?;
    let second = fill(store, "k", 5).await?;
    assert_eq!(first.len(), 5);
    assert_eq!(second.len(), 5);
    let all: Vec<StreamId> = first.iter().chain(&second).copied().collect();
    assert!(strictly_increasing(&all), "ids not increasing: {all:?}");
    assert!(all[0] > StreamId::ZERO);

    let stored = store.last("k", 100).await?;
    assert_eq!(ids(&stored), all, "returned ids are not the stored ones");
    assert_eq!(numbers(&stored), [0, 1, 2, 3, 4, 0, 1, 2, 3, 4]);
    assert_eq!(store.len("k").await?, 10);
    Ok(())
}

async fn one_batch_spans_several_keys(b: &Backend) -> anyhow::Result<()> {
    let store = &*b.store;
    let batch = [
        append("a", 100, 0),
        append("b", 100, 0),
        append("a", 100, 1),
        append("c", 100, 0),
        append("b", 100, 1),
    ];
    let got = store.append(&batch).await?;
    assert_eq!(got.len(), batch.len());
    assert_eq!(ids(&store.last("a", 10).await?), [got[0], got[2]]);
    assert_eq!(ids(&store.last("b", 10).await?), [got[1], got[4]]);
    assert_eq!(ids(&store.last("c", 10).await?), [got[3]]);
    assert!(got[0] < got[2] && got[1] < got[4]);
    assert_eq!(numbers(&store.last("a", 10).await?), [0, 1]);
    assert_eq!(store.len("a").await?, 2);
    assert_eq!(store.len("b").await?, 2);
    assert_eq!(store.len("c").await?, 1);
    Ok(())
}

async fn empty_batch_and_entry_without_fields(b: &Backend) -> anyhow::Result<()> {
    let store = &*b.store;
    assert_eq!(store.append(&[]).await?, []);
    let fieldless = Append {
        key: "k".to_string(),
        maxlen: 10,
        fields: Vec::new(),
    };
    let result = store.append(&[append("k", 10, 0), fieldless]).await;
    assert!(
        matches!(result, Err(StoreError::Refused(_))),
        "an entry without fields must be refused, got {result:?}"
    );
    assert_eq!(store.len("k").await?, 0, "a refused batch stored something");
    Ok(())
}

async fn last_is_newest_oldest_first_and_empty_when_missing(b: &Backend) -> anyhow::Result<()> {
    let store = &*b.store;
    assert_eq!(store.last("missing", 10).await?, []);
    assert_eq!(store.len("missing").await?, 0);

    let all = fill(store, "k", 10).await?;
    let newest = store.last("k", 3).await?;
    assert_eq!(ids(&newest), all[7..]);
    assert_eq!(numbers(&newest), [7, 8, 9]);
    assert_eq!(ids(&store.last("k", 100).await?), all);
    assert_eq!(store.last("k", 0).await?, []);
    Ok(())
}

async fn range_is_exclusive_after_inclusive_until_and_counted(b: &Backend) -> anyhow::Result<()> {
    let store = &*b.store;
    let all = fill(store, "k", 10).await?;

    let after_2 = store.range("k", all[2], None, 100).await?;
    assert_eq!(ids(&after_2), all[3..], "`after` must be exclusive");
    let up_to_5 = store.range("k", all[2], Some(all[5]), 100).await?;
    assert_eq!(ids(&up_to_5), all[3..=5], "`until` must be inclusive");
    let two = store.range("k", all[2], None, 2).await?;
    assert_eq!(ids(&two), all[3..5], "`count` must limit, oldest first");
    assert_eq!(ids(&store.range("k", StreamId::ZERO, None, 100).await?), all);
    assert_eq!(store.range("k", all[9], None, 100).await?, []);
    assert_eq!(store.range("k", all[5], Some(all[2]), 100).await?, []);
    assert_eq!(store.range("missing", StreamId::ZERO, None, 100).await?, []);
    assert_eq!(numbers(&up_to_5), [3, 4, 5]);
    Ok(())
}

async fn trim_before_removes_exactly_the_older_entries(b: &Backend) -> anyhow::Result<()> {
    let store = &*b.store;
    let all = fill(store, "aged", 10).await?;
    assert_eq!(store.trim_before("aged", StreamId::ZERO).await?, 0);
    assert_eq!(store.trim_before("aged", all[4]).await?, 4);
    assert_eq!(ids(&store.last("aged", 100).await?), all[4..]);
    assert_eq!(store.trim_before("missing", all[9]).await?, 0);
    Ok(())
}

async fn retention_keeps_the_newest_maxlen(b: &Backend) -> anyhow::Result<()> {
    let store = &*b.store;
    const MAXLEN: usize = 100;
    let mut all = Vec::new();
    for chunk in (0..1000).collect::<Vec<_>>().chunks(50) {
        let batch: Vec<Append> = chunk.iter().map(|&n| append("k", MAXLEN, n)).collect();
        all.extend(store.append(&batch).await?);
    }
    let len = store.len("k").await?;
    assert!(
        (MAXLEN..=MAXLEN + TRIM_SLACK).contains(&len),
        "len {len} outside {MAXLEN}..={}",
        MAXLEN + TRIM_SLACK
    );
    let kept = store.last("k", len + 10).await?;
    assert_eq!(kept.len(), len);
    assert_eq!(ids(&kept), all[1000 - len..], "kept entries are not the newest");
    assert_eq!(numbers(&kept[len - MAXLEN..]), (900..1000).collect::<Vec<_>>());
    Ok(())
}

async fn read_returns_only_entries_after_the_cursors(b: &Backend) -> anyhow::Result<()> {
    let store = &*b.store;
    let a = fill(store, "a", 4).await?;
    let b_ids = fill(store, "b", 2).await?;
    let c = fill(store, "c", 1).await?;
    let mut reader = store.reader().await?;

    let cursors = [
        ("a".to_string(), a[1]),
        ("b".to_string(), b_ids[1]),
        ("c".to_string(), StreamId::ZERO),
        ("missing".to_string(), StreamId::ZERO),
    ];
    // Data is there: a long block must not delay the answer.
    let started = Instant::now();
    let got = sorted(reader.read(&cursors, 10, Duration::from_secs(10)).await?);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "read waited despite data"
    );
    let keys: Vec<&str> = got.iter().map(|s| s.key.as_str()).collect();
    assert_eq!(keys, ["a", "c"], "streams with nothing new must be left out");
    assert_eq!(ids(&got[0].entries), a[2..]);
    assert_eq!(numbers(&got[0].entries), [2, 3]);
    assert_eq!(ids(&got[1].entries), c);

    let limited = sorted(reader.read(&cursors, 1, Duration::ZERO).await?);
    assert_eq!(ids(&limited[0].entries), [a[2]], "`count` must limit per stream");
    assert_eq!(ids(&limited[1].entries), c);

    let caught_up = [("a".to_string(), a[3]), ("c".to_string(), c[0])];
    assert_eq!(reader.read(&caught_up, 10, Duration::ZERO).await?, []);
    Ok(())
}

async fn blocked_read_wakes_up_on_append(b: &Backend) -> anyhow::Result<()> {
    let store = &*b.store;
    let before = fill(store, "k", 1).await?;
    let mut reader = store.reader().await?;
    let cursors = vec![
        ("k".to_string(), before[0]),
        ("other".to_string(), StreamId::ZERO),
    ];
    let read = tokio::spawn(async move { reader.read(&cursors, 10, Duration::from_secs(10)).await });
    b.until_a_reader_blocks().await?;

    let appended = store.append(&[append("k", 100, 1)]).await?;
    // Well under the 10 s block: the append woke the reader.
    let got = tokio::time::timeout(Duration::from_secs(5), read)
        .await
        .context("the blocked read did not wake up on append")???;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].key, "k");
    assert_eq!(ids(&got[0].entries), appended);
    assert_eq!(numbers(&got[0].entries), [1]);
    Ok(())
}

async fn read_times_out_empty_when_nothing_arrives(b: &Backend) -> anyhow::Result<()> {
    let store = &*b.store;
    let last = fill(store, "k", 3).await?;
    let mut reader = store.reader().await?;
    let block = Duration::from_millis(200);

    for cursors in [
        vec![("k".to_string(), last[2])],
        vec![("missing".to_string(), StreamId::ZERO)],
        vec![],
    ] {
        let started = Instant::now();
        let got = tokio::time::timeout(PATIENCE, reader.read(&cursors, 10, block))
            .await
            .context("a read with a 200 ms block hung")??;
        let waited = started.elapsed();
        assert_eq!(got, [], "nothing new for {cursors:?}");
        assert!(
            waited >= Duration::from_millis(150),
            "returned after {waited:?}, before its block of {block:?} for {cursors:?}"
        );
    }
    Ok(())
}

/// A reader following 100 streams (on a cluster: more slots than it
/// blocks on at once, so some are polled) while another task appends to
/// them in small batches: every entry read once, in order per stream.
async fn a_reader_of_many_streams_misses_and_repeats_nothing(b: &Backend) -> anyhow::Result<()> {
    const STREAMS: usize = 100;
    const ENTRIES: usize = 1000;
    let keys: Vec<String> = (0..STREAMS).map(|i| format!("stream:{i}")).collect();
    let mut reader = b.store.reader().await?;
    let writer = {
        let (store, keys) = (Arc::clone(&b.store), keys.clone());
        tokio::spawn(async move {
            for chunk in (0..ENTRIES).collect::<Vec<_>>().chunks(7) {
                let batch: Vec<Append> = chunk
                    .iter()
                    .map(|&n| append(&keys[n * 37 % STREAMS], 10_000, n))
                    .collect();
                store.append(&batch).await?;
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            anyhow::Ok(())
        })
    };
    let mut cursors: Vec<(String, StreamId)> = keys.iter().map(|k| (k.clone(), StreamId::ZERO)).collect();
    let mut seen: Vec<usize> = Vec::new();
    let deadline = Instant::now() + PATIENCE;
    while seen.len() < ENTRIES {
        ensure!(
            Instant::now() < deadline,
            "read {} of {ENTRIES} entries",
            seen.len()
        );
        for stream in reader.read(&cursors, 16, Duration::from_millis(200)).await? {
            let cursor = cursors
                .iter_mut()
                .find(|(k, _)| *k == stream.key)
                .context("a key not asked for")?;
            ensure!(
                stream.entries.first().is_some_and(|e| e.id > cursor.1),
                "an entry at or before the cursor"
            );
            cursor.1 = stream.entries.last().map_or(cursor.1, |e| e.id);
            seen.extend(numbers(&stream.entries));
        }
    }
    writer.await??;
    seen.sort_unstable();
    assert_eq!(
        seen,
        (0..ENTRIES).collect::<Vec<_>>(),
        "entries missed or read twice"
    );
    Ok(())
}

async fn fields_keep_order_and_values(b: &Backend) -> anyhow::Result<()> {
    let store = &*b.store;
    let fields: Vec<(String, String)> = [
        ("z", "last letter first"),
        ("a", ""),
        ("température", "23,5 °C"),
        ("名前", "望遠鏡 🔭"),
        ("", "an empty name"),
        ("spaces and\r\nnewlines", "  \"quoted\"\t\n"),
        ("n", "-0.000001e-300"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let appended = store
        .append(&[Append {
            key: "k".to_string(),
            maxlen: 10,
            fields: fields.clone(),
        }])
        .await?;
    let expected = vec![Entry {
        id: appended[0],
        fields: fields.clone(),
    }];
    assert_eq!(store.last("k", 1).await?, expected);
    assert_eq!(store.range("k", StreamId::ZERO, None, 10).await?, expected);
    let mut reader = store.reader().await?;
    let read = reader
        .read(&[("k".to_string(), StreamId::ZERO)], 10, Duration::ZERO)
        .await?;
    assert_eq!(
        read,
        [StreamEntries {
            key: "k".to_string(),
            entries: expected.clone()
        }]
    );
    assert_eq!(expected[0].field("名前"), Some("望遠鏡 🔭"));
    assert_eq!(expected[0].field("a"), Some(""));
    Ok(())
}

async fn concurrent_appenders_keep_every_entry(b: &Backend) -> anyhow::Result<()> {
    const TASKS: usize = 2;
    const PER_TASK: usize = 200;
    let mut tasks = Vec::new();
    for task in 0..TASKS {
        let store = Arc::clone(&b.store);
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            for n in 0..PER_TASK {
                // Batches of 1 and 3 so pipelines of both tasks interleave.
                let batch: Vec<Append> = (0..1 + n % 2 * 2)
                    .map(|_| append("k", 10_000, task * 1_000_000 + n))
                    .collect();
                mine.extend(store.append(&batch).await?);
            }
            anyhow::Ok(mine)
        }));
    }
    let mut all = HashSet::new();
    let mut total = 0;
    for task in tasks {
        let mine = tokio::time::timeout(PATIENCE, task).await???;
        assert!(strictly_increasing(&mine), "one task's ids went backwards");
        total += mine.len();
        all.extend(mine);
    }
    assert_eq!(all.len(), total, "two appends got the same id");

    let stored = b.store.last("k", total + 10).await?;
    assert_eq!(stored.len(), total);
    assert!(strictly_increasing(&ids(&stored)));
    assert_eq!(ids(&stored).into_iter().collect::<HashSet<_>>(), all);
    for task in 0..TASKS {
        let own: Vec<usize> = numbers(&stored)
            .into_iter()
            .filter(|n| n / 1_000_000 == task)
            .collect();
        assert!(own.windows(2).all(|w| w[0] <= w[1]), "task {task} reordered");
        assert_eq!(own.len(), total / TASKS);
    }
    Ok(())
}

/// Retries `op` until it succeeds, each attempt bounded, up to `PATIENCE`:
/// reconnection happens in the background, so this waits on a condition.
async fn until_ok<T, F, Fut>(what: &str, mut op: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, StoreError>>,
{
    let deadline = Instant::now() + PATIENCE;
    loop {
        let last = match tokio::time::timeout(Duration::from_secs(5), op()).await {
            Ok(Ok(value)) => return Ok(value),
            Ok(Err(err)) => err.to_string(),
            Err(_) => "attempt hung for 5 s".to_string(),
        };
        ensure!(Instant::now() < deadline, "{what} never succeeded: {last}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Redis going away is reported as `Unavailable` (not a panic, not a hang),
/// and the same store and reader work again once Redis is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_outage_is_unavailable_and_recovers_after_restart() -> anyhow::Result<()> {
    let mut server = RedisServer::start()?;
    let store = RedisStore::connect(&server.url()).await?;
    let mut reader = store.reader().await?;
    let first = store.append(&[append("k", 100, 0)]).await?;
    let cursor = [("k".to_string(), first[0])];

    server.stop();
    let append_result = tokio::time::timeout(PATIENCE, store.append(&[append("k", 100, 1)]))
        .await
        .context("append hung while Redis was down")?;
    assert!(
        matches!(append_result, Err(StoreError::Unavailable(_))),
        "append while Redis is down: {append_result:?}"
    );
    let len_result = tokio::time::timeout(PATIENCE, store.len("k"))
        .await
        .context("len hung while Redis was down")?;
    assert!(
        matches!(len_result, Err(StoreError::Unavailable(_))),
        "len while Redis is down: {len_result:?}"
    );
    let read_result = tokio::time::timeout(PATIENCE, reader.read(&cursor, 10, Duration::from_millis(200)))
        .await
        .context("read hung while Redis was down")?;
    assert!(
        matches!(read_result, Err(StoreError::Unavailable(_))),
        "read while Redis is down: {read_result:?}"
    );

    server.restart()?;
    // Nothing was persisted: the restarted Redis is empty.
    let batch = [append("k", 100, 2)];
    let appended = until_ok("append after restart", || store.append(&batch)).await?;
    assert_eq!(numbers(&store.last("k", 10).await?), [2]);
    let from_start = [("k".to_string(), StreamId::ZERO)];
    let deadline = Instant::now() + PATIENCE;
    let got = loop {
        // The reader reconnects on the call after its connection broke.
        match tokio::time::timeout(PATIENCE, reader.read(&from_start, 10, Duration::ZERO)).await {
            Ok(Ok(got)) => break got,
            Ok(Err(err)) => ensure!(Instant::now() < deadline, "read after restart: {err}"),
            Err(_) => anyhow::bail!("read hung after restart"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(got.len(), 1);
    assert_eq!(ids(&got[0].entries), appended);
    Ok(())
}

/// Connecting to a Redis that is not there fails promptly with `Unavailable`.
#[tokio::test]
async fn redis_connect_to_nothing_is_unavailable() -> anyhow::Result<()> {
    let mut server = RedisServer::start()?;
    let url = server.url();
    server.stop();
    let result = tokio::time::timeout(PATIENCE, RedisStore::connect(&url))
        .await
        .context("connect hung")?;
    assert!(
        matches!(result, Err(StoreError::Unavailable(_))),
        "connect to nothing: {:?}",
        result.map(|s| s.url().to_string())
    );
    Ok(())
}

/// A TTL no test outlives.
const LONG_TTL: Duration = Duration::from_secs(60);

/// A TTL short enough to wait out.
const SHORT_TTL: Duration = Duration::from_millis(300);

/// How long a key with [`SHORT_TTL`] may take to be gone.
const EXPIRY_PATIENCE: Duration = Duration::from_secs(5);

/// Polls `check` every 20 ms until it is true, failing after
/// [`EXPIRY_PATIENCE`]: for expiry, which no event announces.
async fn eventually<F, Fut>(what: &str, mut check: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<bool, StoreError>>,
{
    let deadline = Instant::now() + EXPIRY_PATIENCE;
    loop {
        if check().await? {
            return Ok(());
        }
        ensure!(
            Instant::now() < deadline,
            "not within {EXPIRY_PATIENCE:?}: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A batch of `seqs` for `stream` under the mark `dedup_key`, each entry
/// carrying its seq as the `seq` field.
fn once(dedup_key: &str, stream: &str, seqs: impl IntoIterator<Item = u64>, mark_ttl: Duration) -> OnceBatch {
    OnceBatch {
        dedup_key: dedup_key.to_string(),
        mark_ttl,
        entries: seqs
            .into_iter()
            .map(|seq| {
                let fields = vec![("seq".to_string(), seq.to_string())];
                let key = stream.to_string();
                (
                    seq,
                    Append {
                        key,
                        maxlen: 10_000,
                        fields,
                    },
                )
            })
            .collect(),
    }
}

fn seqs(entries: &[Entry]) -> Vec<u64> {
    entries
        .iter()
        .filter_map(|e| e.field("seq")?.parse().ok())
        .collect()
}

fn pairs(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn sorted_pairs(mut pairs: Vec<(String, String)>) -> Vec<(String, String)> {
    pairs.sort();
    pairs
}

async fn append_once_writes_each_seq_once(b: &Backend) -> anyhow::Result<()> {
    let store = &*b.store;
    let (mark, stream) = ("test:{p1}:mark", "test:{p1}:stream");
    assert_eq!(store.append_once(&[]).await?, Vec::<usize>::new());
    assert_eq!(
        store.append_once(&[once(mark, stream, 1..=10, LONG_TTL)]).await?,
        [10]
    );
    // A replay overlapping what was written: only the new seqs.
    assert_eq!(
        store.append_once(&[once(mark, stream, 5..=15, LONG_TTL)]).await?,
        [5]
    );
    // Entirely at or below the mark: nothing.
    assert_eq!(
        store.append_once(&[once(mark, stream, 3..=15, LONG_TTL)]).await?,
        [0]
    );
    assert_eq!(
        seqs(&store.last(stream, 100).await?),
        (1..=15).collect::<Vec<_>>()
    );

    // Another mark is independent, even for the same stream.
    let other = "test:{p1}:other-mark";
    assert_eq!(
        store.append_once(&[once(other, stream, 1..=3, LONG_TTL)]).await?,
        [3]
    );

    // Several batches in one call, in order: the last sees the first's mark.
    let empty = OnceBatch {
        entries: Vec::new(),
        ..once("test:{p3}:mark", "test:{p3}:stream", [], LONG_TTL)
    };
    let got = store
        .append_once(&[
            once(mark, stream, 14..=17, LONG_TTL),
            once("test:{p2}:mark", "test:{p2}:stream", 1..=2, LONG_TTL),
            empty,
            once(mark, stream, 17..=18, LONG_TTL),
        ])
        .await?;
    assert_eq!(got, [2, 2, 0, 1]);
    let expected: Vec<u64> = (1..=15).chain(1..=3).chain(16..=18).collect();
    assert_eq!(seqs(&store.last(stream, 100).await?), expected);
    assert_eq!(seqs(&store.last("test:{p2}:stream", 100).await?), [1, 2]);
    assert!(
        !store.exists("test:{p3}:mark").await?,
        "an empty batch set a mark"
    );
    Ok(())
}

async fn append_once_mark_expires_after_mark_ttl(b: &Backend) -> anyhow::Result<()> {
    let store = &*b.store;
    let (mark, stream) = ("test:{p1}:mark", "test:{p1}:stream");
    assert_eq!(
        store.append_once(&[once(mark, stream, 1..=3, SHORT_TTL)]).await?,
        [3]
    );
    // (It may be gone already on a busy machine.)
    if let Some(left) = store.ttl(mark).await? {
        assert!(left <= SHORT_TTL, "mark TTL {left:?} above {SHORT_TTL:?}");
    }
    eventually("the mark expires", || async { Ok(!store.exists(mark).await?) }).await?;

    // With the mark gone, the same seqs are new again.
    assert_eq!(
        store.append_once(&[once(mark, stream, 1..=3, LONG_TTL)]).await?,
        [3]
    );
    assert_eq!(seqs(&store.last(stream, 100).await?), [1, 2, 3, 1, 2, 3]);

    // A replay of duplicates only still refreshes the mark's TTL.
    let longer = LONG_TTL * 10;
    assert_eq!(
        store.append_once(&[once(mark, stream, 1..=3, longer)]).await?,
        [0]
    );
    let left = store.ttl(mark).await?.context("the mark lost its TTL")?;
    assert!(
        left > LONG_TTL && left <= longer,
        "mark TTL {left:?} not refreshed to {longer:?}"
    );
    Ok(())
}

async fn append_once_refuses_bad_batches_before_writing(b: &Backend) -> anyhow::Result<()> {
    let store = &*b.store;
    let (mark, stream) = ("test:{p1}:mark", "test:{p1}:stream");
    let mut fieldless = once(mark, stream, 1..=2, LONG_TTL);
    fieldless.entries[1].1.fields.clear();
    let zero_ttl = once(mark, stream, 1..=2, Duration::ZERO);
    for bad in [fieldless, zero_ttl] {
        let result = store
            .append_once(&[once("test:{p2}:mark", "test:{p2}:s", [1], LONG_TTL), bad])
            .await;
        assert!(matches!(result, Err(StoreError::Refused(_))), "got {result:?}");
    }
    assert_eq!(store.key_count().await?, 0, "a refused call stored something");

    // A stream key of another type: refused, and nothing of the batch written.
    let hash = "test:{p1}:a-hash";
    store.hash_set(hash, &pairs(&[("f", "v")]), None).await?;
    let mut mixed = once(mark, stream, 1..=3, LONG_TTL);
    mixed.entries[2].1.key = hash.to_string();
    let result = store.append_once(&[mixed]).await;
    assert!(matches!(result, Err(StoreError::Refused(_))), "got {result:?}");
    assert!(!store.exists(stream).await?, "a refused batch wrote entries");
    assert!(!store.exists(mark).await?, "a refused batch set its mark");

    // Keys of another type are refused by the other calls too.
    assert_eq!(
        store.append_once(&[once(mark, stream, [1], LONG_TTL)]).await?,
        [1]
    );
    let refused = [
        store.hash_get(stream).await.map(|_| ()),
        store
            .hash_set(stream, &pairs(&[("f", "v")]), Some(LONG_TTL))
            .await,
        store.lock(hash, "a", LONG_TTL).await.map(|_| ()),
        store.unlock(hash, "a").await.map(|_| ()),
        store.len(hash).await.map(|_| ()),
        store
            .append_once(&[once(hash, stream, [2], LONG_TTL)])
            .await
            .map(|_| ()),
    ];
    for (i, result) in refused.into_iter().enumerate() {
        assert!(
            matches!(result, Err(StoreError::Refused(_))),
            "call {i}: {result:?}"
        );
    }
    assert_eq!(
        store.ttl(stream).await?,
        None,
        "a refused hash_set changed the TTL"
    );
    assert_eq!(seqs(&store.last(stream, 10).await?), [1]);
    Ok(())
}

async fn concurrent_append_once_writes_one_copy(b: &Backend) -> anyhow::Result<()> {
    let (mark, stream) = ("test:{p1}:mark", "test:{p1}:stream");
    let mut tasks = Vec::new();
    for _ in 0..2 {
        let store = Arc::clone(&b.store);
        tasks.push(tokio::spawn(async move {
            let mut written = 0;
            for first in (1..=200).step_by(5) {
                // Two batches per call, the second overlapping the first.
                let batches = [
                    once(mark, stream, first..first + 5, LONG_TTL),
                    once(mark, stream, first + 2..first + 7, LONG_TTL),
                ];
                written += store.append_once(&batches).await?.iter().sum::<usize>();
            }
            anyhow::Ok(written)
        }));
    }
    let mut written = 0;
    for task in tasks {
        written += tokio::time::timeout(PATIENCE, task).await???;
    }
    assert_eq!(written, 202, "entries reported written by both tasks");
    let stored = b.store.last(stream, 1000).await?;
    assert_eq!(seqs(&stored), (1..=202).collect::<Vec<_>>());
    Ok(())
}

async fn hash_set_and_get_round_trip_with_ttl(b: &Backend) -> anyhow::Result<()> {
    let store = &*b.store;
    let key = "meridian:{Script}:state:1";
    assert_eq!(store.hash_get(key).await?, []);
    assert_eq!(store.ttl(key).await?, None);

    store
        .hash_set(key, &pairs(&[("a", "1"), ("b", "")]), None)
        .await?;
    store
        .hash_set(key, &pairs(&[("a", "2"), ("名前", "望遠鏡 🔭")]), None)
        .await?;
    let expected = pairs(&[("a", "2"), ("b", ""), ("名前", "望遠鏡 🔭")]);
    assert_eq!(sorted_pairs(store.hash_get(key).await?), expected);
    assert_eq!(store.ttl(key).await?, None);

    // A TTL, changed alone (no fields), then removed by a set without one.
    store.hash_set(key, &[], Some(LONG_TTL)).await?;
    let left = store.ttl(key).await?.context("no TTL after hash_set with one")?;
    assert!(left <= LONG_TTL && left > LONG_TTL / 2, "TTL {left:?}");
    store.hash_set(key, &pairs(&[("c", "3")]), None).await?;
    assert_eq!(store.ttl(key).await?, None, "hash_set with None kept the TTL");
    assert_eq!(store.hash_get(key).await?.len(), 4);

    // Fields and a short TTL at once: the hash disappears.
    let short = "meridian:{Script}:state:2";
    store
        .hash_set(short, &pairs(&[("x", "y")]), Some(SHORT_TTL))
        .await?;
    if let Some(left) = store.ttl(short).await? {
        assert!(left <= SHORT_TTL, "TTL {left:?} above {SHORT_TTL:?}");
    }
    eventually("the hash expires", || async { Ok(!store.exists(short).await?) }).await?;
    assert_eq!(store.hash_get(short).await?, []);
    assert_eq!(store.ttl(short).await?, None);

    // No fields and no key: nothing is created.
    store.hash_set(short, &[], Some(LONG_TTL)).await?;
    assert!(!store.exists(short).await?);
    Ok(())
}

async fn streams_expire_when_told_and_keep_their_ttl_across_appends(b: &Backend) -> anyhow::Result<()> {
    let store = &*b.store;
    // Keys on different slots of a cluster, of two types.
    let (s1, s2, hash) = ("meridian:{a}:s", "meridian:{b}:s", "meridian:{c}:h");
    let first = fill(store, s1, 3).await?;
    fill(store, s2, 2).await?;
    store.hash_set(hash, &pairs(&[("f", "v")]), None).await?;
    assert_eq!(store.ttl(s1).await?, None, "a stream with a TTL of its own");

    // A TTL, kept by later appends (as XADD keeps it), refreshed by a new one.
    store.expire(&[s1.to_string()], Some(LONG_TTL)).await?;
    let left = store.ttl(s1).await?.context("no TTL after expire")?;
    assert!(left <= LONG_TTL && left > LONG_TTL / 2, "TTL {left:?}");
    fill(store, s1, 1).await?;
    let left = store.ttl(s1).await?.context("an append removed the TTL")?;
    assert!(left <= LONG_TTL, "TTL {left:?}");
    let longer = LONG_TTL * 10;
    store.expire(&[s1.to_string()], Some(longer)).await?;
    let left = store.ttl(s1).await?.context("the refresh removed the TTL")?;
    assert!(left > LONG_TTL && left <= longer, "TTL {left:?} not refreshed");
    // None removes it; the entries stay.
    store.expire(&[s1.to_string()], None).await?;
    assert_eq!(store.ttl(s1).await?, None, "expire(None) kept the TTL");
    assert_eq!(store.len(s1).await?, 4);

    // A zero TTL is refused and changes nothing; no keys is nothing to do.
    let refused = store.expire(&[s1.to_string()], Some(Duration::ZERO)).await;
    assert!(matches!(refused, Err(StoreError::Refused(_))), "got {refused:?}");
    assert_eq!(store.ttl(s1).await?, None);
    store.expire(&[], Some(LONG_TTL)).await?;

    // Several keys at once, any type, a missing one left missing: all expire.
    let missing = "meridian:{d}:missing";
    let all: Vec<String> = [s1, s2, hash, missing].iter().map(|k| k.to_string()).collect();
    store.expire(&all, Some(SHORT_TTL)).await?;
    assert!(!store.exists(missing).await?, "expire created a key");
    for key in [s1, s2, hash] {
        if let Some(left) = store.ttl(key).await? {
            assert!(left <= SHORT_TTL, "{key}: TTL {left:?} above {SHORT_TTL:?}");
        }
    }
    eventually("the streams and the hash expire", || async {
        for key in [s1, s2, hash] {
            if store.exists(key).await? {
                return Ok(false);
            }
        }
        Ok(true)
    })
    .await?;
    // An expired stream is absent to every read.
    assert_eq!(store.len(s1).await?, 0);
    assert_eq!(store.last(s1, 10).await?, []);
    assert_eq!(store.range(s1, StreamId::ZERO, None, 10).await?, []);
    let mut reader = store.reader().await?;
    let cursors = [(s1.to_string(), StreamId::ZERO), (s2.to_string(), StreamId::ZERO)];
    assert_eq!(reader.read(&cursors, 10, Duration::ZERO).await?, []);
    assert_eq!(store.hash_get(hash).await?, []);

    // Written again, it is a new stream without a TTL, its ids still above the old ones.
    let again = fill(store, s1, 1).await?;
    assert!(again[0] > first[2], "{again:?} not above {first:?}");
    assert_eq!(store.ttl(s1).await?, None);
    assert_eq!(numbers(&store.last(s1, 10).await?), [0]);
    Ok(())
}

async fn keys_exist_delete_count_and_list_by_prefix(b: &Backend) -> anyhow::Result<()> {
    let store = &*b.store;
    assert_eq!(store.key_count().await?, 0);
    let literal = [
        "meridian:{Script}:state:1",
        "meridian:{Script}:state:2",
        "meridian:*star:1",
        "meridian:xstar:1",
        "meridian:[ab]:1",
        "meridian:a:1",
        "meridian:?:1",
        "meridian:back\\slash:1",
        "meridian:backXslash:1",
    ];
    for key in literal {
        store.hash_set(key, &pairs(&[("f", "v")]), None).await?;
    }
    // Enough keys that listing takes several SCAN steps.
    const BULK: usize = 1500;
    for n in 0..BULK {
        store
            .hash_set(&format!("meridian:bulk:{n}"), &pairs(&[("n", "1")]), None)
            .await?;
    }
    fill(store, "meridian:{Script}:events", 3).await?;
    assert!(store.lock("meridian:{Script}:lock", "me", LONG_TTL).await?);
    let total = literal.len() + BULK + 2;
    assert_eq!(store.key_count().await?, total);

    let list = |prefix: &'static str, limit: usize| async move {
        let mut keys = store.keys_with_prefix(prefix, limit).await?;
        keys.sort();
        anyhow::Ok(keys)
    };
    assert_eq!(
        list("meridian:{Script}:state:", 100).await?,
        ["meridian:{Script}:state:1", "meridian:{Script}:state:2"]
    );
    assert_eq!(list("meridian:*star:", 100).await?, ["meridian:*star:1"]);
    assert_eq!(list("meridian:[ab]:", 100).await?, ["meridian:[ab]:1"]);
    assert_eq!(list("meridian:?:", 100).await?, ["meridian:?:1"]);
    assert_eq!(list("meridian:back\\", 100).await?, ["meridian:back\\slash:1"]);
    assert_eq!(list("meridian:bulk:", 10_000).await?.len(), BULK);
    assert_eq!(list("meridian:bulk:", 1_100).await?.len(), 1_100);
    assert_eq!(list("meridian:", 10_000).await?.len(), total);
    assert_eq!(list("meridian:", 0).await?, Vec::<String>::new());
    assert_eq!(list("nothing:", 100).await?, Vec::<String>::new());

    assert!(store.exists("meridian:{Script}:state:1").await?);
    assert!(store.exists("meridian:{Script}:events").await?);
    assert!(store.exists("meridian:{Script}:lock").await?);
    assert!(!store.exists("meridian:missing").await?);
    let doomed = [
        "meridian:{Script}:state:1",
        "meridian:{Script}:events",
        "meridian:missing",
    ];
    let doomed: Vec<String> = doomed.iter().map(|k| k.to_string()).collect();
    assert_eq!(store.delete(&doomed).await?, 2);
    assert_eq!(store.delete(&doomed).await?, 0);
    assert_eq!(store.delete(&[]).await?, 0);
    assert!(!store.exists("meridian:{Script}:state:1").await?);
    assert_eq!(store.len("meridian:{Script}:events").await?, 0);
    assert_eq!(store.key_count().await?, total - 2);
    Ok(())
}

async fn lock_is_held_by_one_holder_until_expiry(b: &Backend) -> anyhow::Result<()> {
    let store = &*b.store;
    let name = "meridian:{Script}:lock";
    assert!(store.lock(name, "a", LONG_TTL).await?, "a free lock was refused");
    assert!(!store.lock(name, "b", LONG_TTL).await?, "b took a's lock");
    // Renewal sets the holder's new TTL.
    assert!(store.lock(name, "a", LONG_TTL * 2).await?, "a could not renew");
    let left = store.ttl(name).await?.context("a lock without TTL")?;
    assert!(left > LONG_TTL && left <= LONG_TTL * 2, "renewed TTL {left:?}");
    assert!(!store.unlock(name, "b").await?, "b released a's lock");
    assert!(!store.lock(name, "b", LONG_TTL).await?, "b took a's lock");
    assert!(store.unlock(name, "a").await?, "a could not release its lock");
    assert!(!store.unlock(name, "a").await?, "a released a free lock");
    assert!(!store.exists(name).await?);

    // Expiry frees it for the next holder.
    assert!(
        store.lock(name, "b", SHORT_TTL).await?,
        "a released lock was refused"
    );
    eventually("a takes b's expired lock", || store.lock(name, "a", LONG_TTL)).await?;
    assert!(!store.unlock(name, "b").await?, "b released a's lock");
    assert!(store.unlock(name, "a").await?);

    let refused = store.lock(name, "a", Duration::ZERO).await;
    assert!(
        matches!(refused, Err(StoreError::Refused(_))),
        "zero TTL: {refused:?}"
    );
    Ok(())
}

/// With `--appendonly yes --appendfsync always`, what Redis acknowledged
/// before a kill is there after the restart: entries, dedup marks (so a
/// replay after the restart is still written once), hashes and locks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_persistent_data_survives_restart() -> anyhow::Result<()> {
    let mut server = RedisServer::start_persistent()?;
    let store = RedisStore::connect(&server.url()).await?;
    let (mark, stream) = ("test:{p1}:mark", "test:{p1}:stream");
    let state = "meridian:{Script}:state:1";
    assert_eq!(
        store.append_once(&[once(mark, stream, 1..=5, LONG_TTL)]).await?,
        [5]
    );
    store.hash_set(state, &pairs(&[("a", "1")]), None).await?;
    assert!(store.lock("meridian:{Script}:lock", "a", LONG_TTL).await?);

    server.stop();
    server.restart()?;
    let stored = until_ok("read after restart", || store.last(stream, 100)).await?;
    assert_eq!(seqs(&stored), [1, 2, 3, 4, 5]);
    // Also the first script call after the restart: Redis forgot the script.
    assert_eq!(
        store.append_once(&[once(mark, stream, 3..=7, LONG_TTL)]).await?,
        [2]
    );
    assert_eq!(seqs(&store.last(stream, 100).await?), [1, 2, 3, 4, 5, 6, 7]);
    assert_eq!(store.hash_get(state).await?, pairs(&[("a", "1")]));
    assert!(!store.lock("meridian:{Script}:lock", "b", LONG_TTL).await?);
    assert!(store.ttl(mark).await?.is_some(), "the mark lost its TTL");
    Ok(())
}
