//! Both stores keep the same promises: the Redis store and the in-memory
//! store run this one suite.
//!
//! If these failed, a user would notice: samples missing, duplicated or out
//! of order in a browser's plot; a reconnecting browser that replays the wrong
//! entries after its "last id seen"; history shorter than the configured
//! retention, or memory and Redis growing without bound; live plots that
//! freeze until the next poll instead of updating as samples arrive; text
//! fields mangled (unicode, empty values); and, for Redis, the manager
//! hanging or crashing when Redis goes away instead of reporting the outage
//! and carrying on once Redis is back.

use anyhow::{ensure, Context};
use meridian_manager::store::memory::MemoryStore;
use meridian_manager::store::redis::RedisStore;
use meridian_manager::store::{Append, Entry, Store, StoreError, StreamEntries, TRIM_SLACK};
use meridian_proto::StreamId;
use meridian_tests::redis_server::RedisServer;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Bound on anything that should be quick, so a broken store fails the test
/// instead of hanging it.
const PATIENCE: Duration = Duration::from_secs(20);

/// The store under test, and the Redis server behind it if there is one.
struct Backend {
    store: Arc<dyn Store>,
    server: Option<RedisServer>,
}

impl Backend {
    fn memory() -> Backend {
        Backend {
            store: Arc::new(MemoryStore::new()),
            server: None,
        }
    }

    async fn redis() -> anyhow::Result<Backend> {
        let server = RedisServer::start()?;
        let store = RedisStore::connect(&server.url()).await?;
        Ok(Backend {
            store: Arc::new(store),
            server: Some(server),
        })
    }

    /// Waits until a reader is blocked inside the store, where the store can
    /// tell (Redis: `CLIENT LIST` shows a client blocked in XREAD), so the
    /// wake-up test appends to a reader that is really waiting.
    async fn until_a_reader_blocks(&self) -> anyhow::Result<()> {
        let Some(server) = &self.server else {
            return Ok(());
        };
        let client = ::redis::Client::open(server.url())?;
        let mut conn = client.get_multiplexed_async_connection().await?;
        let deadline = Instant::now() + PATIENCE;
        loop {
            let clients: String = ::redis::cmd("CLIENT").arg("LIST").query_async(&mut conn).await?;
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
    };
}

conformance!(
    append_returns_increasing_ids_in_order,
    one_batch_spans_several_keys,
    empty_batch_and_entry_without_fields,
    last_is_newest_oldest_first_and_empty_when_missing,
    range_is_exclusive_after_inclusive_until_and_counted,
    retention_keeps_the_newest_maxlen,
    read_returns_only_entries_after_the_cursors,
    blocked_read_wakes_up_on_append,
    read_times_out_empty_when_nothing_arrives,
    fields_keep_order_and_values,
    concurrent_appenders_keep_every_entry,
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
