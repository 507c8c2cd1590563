//! Meridian on a Redis Cluster (real `redis-server`s with
//! `--cluster-enabled yes`, assembled by the harness on free ports): the
//! whole path from producers to a WebSocket client works when the CSCs'
//! streams live on different shards, and a master that crashes (and is
//! replaced by its replica), a manual failover, or a resharding that moves
//! a CSC's slot to another master in the middle of a stream of events loses
//! no event and repeats none, in the store or at the browser (after a
//! crash, see the kill test for the one repeat Redis allows).
//!
//! If these failed, an operator would notice: a control room that shows
//! some CSCs and not others once Redis is a cluster; gaps or repeats in a
//! CSC's event log after a Redis node crashed or an administrator moved
//! slots; browsers that stop updating after a failover until reloaded.

use anyhow::Context;
use meridian_producer::ProducerStats;
use meridian_proto::OnFull;
use meridian_proto::{keys, Category, CscId, StreamId, TopicId};
use meridian_store::cluster::{slot, ClusterStore};
use meridian_store::Store;
use meridian_testkit::browser::{topic_key, Browser};
use meridian_testkit::manual_csc::{stored_event_values, ManualCsc};
use meridian_testkit::redis_cluster::RedisCluster;
use meridian_testkit::system::{test_config, System};
use meridian_testkit::wait_for;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::task::block_in_place;

/// Bound on waits for data that should flow within seconds.
const PATIENCE: Duration = Duration::from_secs(60);

/// Four simulated CSCs on a 3-master cluster: their streams land on at
/// least two masters, and one browser gets live telemetry of each through
/// one frontend, and their events too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn telemetry_of_csc_on_different_shards_reaches_one_browser() {
    let cluster = block_in_place(|| RedisCluster::start(3, 0)).unwrap();
    let store = Arc::new(ClusterStore::connect(&cluster.seeds(), 0).await.unwrap());
    let cscs = ["Test:1", "Test:2", "Test:3", "Test:4"];
    let masters: BTreeSet<u16> = cscs
        .iter()
        .map(|csc| {
            let topic = TopicId::new(csc.parse().unwrap(), Category::Telemetry, "scalars").unwrap();
            cluster.master_of_slot(slot(&keys::stream(&topic))).unwrap()
        })
        .collect();
    assert!(
        masters.len() >= 2,
        "the CSCs' streams should spread over masters: {masters:?}"
    );

    let system = System::start(store.clone(), &cscs, 10.0).await.unwrap();
    let mut browser = Browser::connect(&system.ws_url()).await.unwrap();
    for csc in cscs {
        browser.subscribe(csc, "telemetry", "scalars").await.unwrap();
        browser.subscribe(csc, "event", "heartbeat").await.unwrap();
    }
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while seen.len() < 2 * cscs.len() || seen.values().any(|n| *n < 3) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "samples seen so far: {seen:?}"
        );
        let sample = browser.next_sample().await.unwrap();
        *seen.entry(topic_key(&sample)).or_default() += 1;
    }
    // The streams are on the shards the test computed: each master holds keys.
    let sizes: Vec<i64> = block_in_place(|| cluster.on_masters(&redis::cmd("DBSIZE"))).unwrap();
    let holding = sizes.iter().filter(|n| **n > 0).count();
    assert!(
        holding >= masters.len(),
        "keys per master {sizes:?}, expected on {masters:?}"
    );
    println!("samples per topic: {seen:?}; keys per master: {sizes:?}");
    system.stop().await;
}

/// Masters that forget the store's Lua scripts (a promoted replica, a
/// restarted node, `SCRIPT FLUSH`) get them again with the next call:
/// exactly-once appends, hashes and locks keep working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scripts_forgotten_by_the_masters_are_sent_again() {
    use meridian_store::{Append, OnceBatch};
    let cluster = block_in_place(|| RedisCluster::start(3, 0)).unwrap();
    let store = ClusterStore::connect(&cluster.seeds(), 0).await.unwrap();
    let stream = |csc: &str| keys::stream(&TopicId::new(csc.parse().unwrap(), Category::Event, "e").unwrap());
    let batch = |csc: &str, seqs: std::ops::RangeInclusive<u64>| OnceBatch {
        dedup_key: keys::dedup(&csc.parse().unwrap(), 1, "events"),
        mark_ttl: Duration::from_secs(60),
        entries: seqs
            .map(|seq| {
                let fields = vec![("seq".to_string(), seq.to_string())];
                let key = stream(csc);
                (
                    seq,
                    Append {
                        key,
                        maxlen: 100,
                        fields,
                    },
                )
            })
            .collect(),
    };
    // Three CSCs, so the calls go to every master.
    let cscs = ["Test:1", "Test:2", "Test:4"];
    let masters: BTreeSet<u16> = cscs
        .iter()
        .map(|c| {
            cluster
                .master_of_slot(slot(&keys::hash_tag(&c.parse::<CscId>().unwrap())))
                .unwrap()
        })
        .collect();
    assert_eq!(masters.len(), 3, "one CSC per master");
    let first: Vec<_> = cscs.iter().map(|c| batch(c, 1..=3)).collect();
    assert_eq!(store.append_once(&first).await.unwrap(), [3, 3, 3]);
    block_in_place(|| cluster.on_masters::<()>(redis::cmd("SCRIPT").arg("FLUSH"))).unwrap();
    let replay: Vec<_> = cscs.iter().map(|c| batch(c, 2..=5)).collect();
    assert_eq!(
        store.append_once(&replay).await.unwrap(),
        [2, 2, 2],
        "the replay was deduplicated"
    );
    assert!(store
        .lock(keys::SWEEPER_LOCK, "a", Duration::from_secs(5))
        .await
        .unwrap());
    for csc in cscs {
        assert_eq!(store.len(&stream(csc)).await.unwrap(), 5);
    }
}

/// What a load test drives: a manual CSC publishing numbered events, its
/// producer, and a browser subscribed to them.
struct Load {
    system: System,
    store: Arc<ClusterStore>,
    csc: Arc<ManualCsc>,
    stats: Arc<ProducerStats>,
    /// The browser, reading all along: the stream ids it got each event with.
    received: tokio::task::JoinHandle<anyhow::Result<BTreeMap<i64, Vec<String>>>>,
}

const CSC: &str = "Test:3";

impl Load {
    async fn start(cluster: &RedisCluster, replica_acks: usize) -> Load {
        let store = Arc::new(
            ClusterStore::connect(&cluster.seeds(), replica_acks)
                .await
                .unwrap(),
        );
        let mut system = System::start_with(store.clone(), test_config()).await.unwrap();
        let csc = ManualCsc::new(CSC, 1024);
        let stats = system.spawn_producer(csc.clone(), |c| {
            c.producer.csc = CSC.into();
            c.producer.spool_events = 100_000;
            c.producer.spool_on_full = OnFull::Block;
        });
        let field = event_topic().catalog_field();
        let catalog = store.clone();
        wait_for("the producer's topics in the catalog", PATIENCE, || {
            let (catalog, field) = (catalog.clone(), field.clone());
            async move {
                let fields = catalog.hash_get(keys::CATALOG).await.ok()?;
                fields.iter().any(|(f, _)| *f == field).then_some(())
            }
        })
        .await
        .unwrap();
        let mut browser = Browser::connect(&system.ws_url()).await.unwrap();
        browser.subscribe(CSC, "event", "scalars").await.unwrap();
        let subscribed = browser.next_of("subscribed").await.unwrap();
        assert_eq!(subscribed["waiting"], false, "{subscribed}");
        let received = tokio::spawn(receive(browser, EVENTS));
        Load {
            system,
            store,
            csc,
            stats,
            received,
        }
    }

    /// Publishes events `1..=count` at about 1000 per second in the background.
    fn publish(&self, count: i64) -> tokio::task::JoinHandle<()> {
        let csc = self.csc.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(10));
            for n in 1..=count {
                if n % 10 == 1 {
                    tick.tick().await;
                }
                csc.publish(n).await;
            }
        })
    }

    async fn until_acked(&self, at_least: u64) {
        let stats = self.stats.clone();
        wait_for(&format!("{at_least} events acknowledged"), PATIENCE, || {
            let stats = stats.clone();
            async move { (ProducerStats::get(&stats.events_acked_seq) >= at_least).then_some(()) }
        })
        .await
        .unwrap();
    }

    /// Every event in the store once, in order, and at the browser once.
    /// Every event in the store once, in order, and at the browser once.
    /// With `crash`, an event may also have reached the browser from the
    /// crashed master before its replica had it (a window of microseconds
    /// between Redis writing to a reader and to its replica): such a copy,
    /// whose id the store no longer holds, is tolerated; any other repeat is not.
    async fn check(self, count: i64, crash: bool) {
        self.until_acked(count as u64).await;
        let stored = stored_event_values(self.store.as_ref(), CSC).await;
        let expected: Vec<i64> = (1..=count).collect();
        assert_eq!(stored.len(), expected.len(), "events stored once each");
        assert_eq!(stored, expected, "in order, none missing, none repeated");
        let stored_ids: BTreeSet<String> = self
            .store
            .range(
                &keys::stream(&event_topic()),
                StreamId::ZERO,
                None,
                count as usize + 1,
            )
            .await
            .unwrap()
            .iter()
            .map(|e| e.id.to_string())
            .collect();

        let received = self.received.await.unwrap().unwrap();
        assert_eq!(
            received.keys().copied().collect::<Vec<_>>(),
            expected,
            "events missed"
        );
        for (n, ids) in &received {
            let kept = ids.iter().filter(|id| stored_ids.contains(*id)).count();
            let lost_with_the_master = ids.len() - kept;
            assert!(
                kept == 1 && (lost_with_the_master == 0 || crash && lost_with_the_master == 1),
                "event {n} reached the browser as {ids:?}"
            );
        }
        let repeats = received.values().filter(|ids| ids.len() > 1).count();
        println!("events the browser also got from the crashed master before replication: {repeats}");
        assert_eq!(ProducerStats::get(&self.stats.events_dropped), 0);
        self.system.stop().await;
    }
}

/// Reads samples until `count` distinct events arrived (a quiet spell, as
/// while a shard fails over, is waited out up to [`PATIENCE`]); a loss
/// notice is an error.
async fn receive(mut browser: Browser, count: i64) -> anyhow::Result<BTreeMap<i64, Vec<String>>> {
    let mut received: BTreeMap<i64, Vec<String>> = BTreeMap::new();
    let mut last_progress = tokio::time::Instant::now();
    while received.len() < count as usize {
        match browser.next_sample().await {
            Ok(sample) => {
                let n = sample["fields"]["int0"].as_i64().context("int0")?;
                let id = sample["id"].as_str().context("id")?.to_string();
                received.entry(n).or_default().push(id);
                last_progress = tokio::time::Instant::now();
            }
            Err(e) if e.to_string().contains("no message within") && last_progress.elapsed() < PATIENCE => {}
            Err(e) => return Err(e.context(format!("after {} of {count} events", received.len()))),
        }
    }
    Ok(received)
}

fn event_topic() -> TopicId {
    TopicId::new(CSC.parse().unwrap(), Category::Event, "scalars").unwrap()
}

const EVENTS: i64 = 6_000;

/// The master holding the CSC's streams is killed (`SIGKILL`) a third of
/// the way through 6000 events; its replica takes over, and the killed node
/// comes back as the new master's replica. With `cluster_replica_acks = 1`
/// the ingest acknowledged only events a replica had, so the new master has
/// all of them; the rest are retried (and the producer resends what was not
/// acknowledged, deduplicated). The store ends with every event once; the
/// browser gets every event, and a second copy only of an event it read from
/// the crashed master in the microseconds before the replica had it (Redis
/// cannot offer more: a read is not held until replication).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_killed_during_load_loses_and_repeats_no_event() {
    let mut cluster = block_in_place(|| RedisCluster::start(3, 1)).unwrap();
    let load = Load::start(&cluster, 1).await;
    let publisher = load.publish(EVENTS);
    load.until_acked(EVENTS as u64 / 3).await;

    let master = cluster
        .master_of_slot(slot(&keys::stream(&event_topic())))
        .unwrap();
    let started = std::time::Instant::now();
    block_in_place(|| {
        cluster.kill(master)?;
        cluster.wait_replaced(master)?;
        cluster.restart(master)
    })
    .unwrap();
    println!(
        "master {master} killed, replaced and back as a replica in {:?}",
        started.elapsed()
    );
    publisher.await.unwrap();
    load.check(EVENTS, true).await;
}

/// A manual failover (`CLUSTER FAILOVER` on the replica, what an operator
/// does before taking a master's machine down) in the middle of the events:
/// the master stops taking writes, the replica catches up and takes over,
/// clients are redirected to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manual_failover_during_load_loses_and_repeats_no_event() {
    let cluster = block_in_place(|| RedisCluster::start(3, 1)).unwrap();
    let load = Load::start(&cluster, 1).await;
    let publisher = load.publish(EVENTS);
    load.until_acked(EVENTS as u64 / 3).await;

    let master = cluster
        .master_of_slot(slot(&keys::stream(&event_topic())))
        .unwrap();
    let started = std::time::Instant::now();
    let new_master = block_in_place(|| cluster.failover(master)).unwrap();
    assert_eq!(
        cluster
            .master_of_slot(slot(&keys::stream(&event_topic())))
            .unwrap(),
        new_master
    );
    println!(
        "master {master} handed over to {new_master} in {:?}",
        started.elapsed()
    );
    publisher.await.unwrap();
    load.check(EVENTS, false).await;
}

/// The slot of the CSC's streams moves to another master, its keys one
/// `MIGRATE` at a time (as `redis-cli --cluster reshard` moves each slot:
/// clients see `ASK`, `TRYAGAIN`, then `MOVED`), while events flow.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resharding_during_load_loses_and_repeats_no_event() {
    let cluster = block_in_place(|| RedisCluster::start(3, 0)).unwrap();
    let load = Load::start(&cluster, 0).await;
    let publisher = load.publish(EVENTS);
    load.until_acked(EVENTS as u64 / 3).await;

    let key_slot = slot(&keys::stream(&event_topic()));
    let from = cluster.master_of_slot(key_slot).unwrap();
    let to = *cluster
        .master_ports()
        .unwrap()
        .iter()
        .find(|p| **p != from)
        .unwrap();
    let started = std::time::Instant::now();
    let moved = block_in_place(|| cluster.migrate_slot(key_slot, to)).unwrap();
    assert!(
        moved >= 2,
        "the slot held the CSC's stream and dedup mark, {moved} keys moved"
    );
    assert_eq!(cluster.master_of_slot(key_slot).unwrap(), to);
    println!(
        "slot {key_slot} ({moved} keys) moved from {from} to {to} in {:?}",
        started.elapsed()
    );
    publisher.await.unwrap();
    load.check(EVENTS, false).await;
}
