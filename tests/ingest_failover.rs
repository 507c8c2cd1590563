//! A producer finds its ingest: it skips an address that does not answer
//! and uses the next one; an ingest that closes the connection because it
//! is draining (restarting) while the producer says hello is retried, not
//! taken for a refusal; a real refusal still stops the producer with the
//! reason; and `producer.pools` sends a CSC's traffic — and a ScriptQueue
//! pool its Scripts' traffic too — to the pool's ingest. An operator would
//! notice a failure as a producer that stays down after an ingest restart,
//! or a dedicated ingest pool that gets none of its CSC's load.

use meridian_manager::ingest::close_code;
use meridian_producer::{ProducerError, ProducerStats};
use meridian_proto::{keys, CscId, FrameBuffer, ProducerFrame, Value};
use meridian_quic::tls::{server_config, Identity, ServerTrust};
use meridian_sim::{AckState, Middleware, SimMiddleware, SimOptions};
use meridian_store::{memory::MemoryStore, Store};
use meridian_testkit::manual_csc::ManualCsc;
use meridian_testkit::system::{test_config, System};
use meridian_testkit::wait_for;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// An ingest stand-in that reads each producer's hello and then closes the
/// connection with `code`, as a real ingest does when it drains or refuses.
struct ClosingIngest {
    addr: SocketAddr,
    trust: ServerTrust,
    /// Hellos read so far.
    hellos: watch::Receiver<usize>,
    _endpoint: quinn::Endpoint,
}

impl ClosingIngest {
    fn start(code: u32, reason: &'static str) -> ClosingIngest {
        let identity = Identity::self_signed("meridian-ingest").unwrap();
        let trust = ServerTrust::Roots(identity.chain.clone());
        let endpoint =
            quinn::Endpoint::server(server_config(identity, None).unwrap(), ([127, 0, 0, 1], 0).into())
                .unwrap();
        let addr = endpoint.local_addr().unwrap();
        let (count, hellos) = watch::channel(0);
        let accepting = endpoint.clone();
        tokio::spawn(async move {
            while let Some(incoming) = accepting.accept().await {
                let Ok(conn) = incoming.await else { continue };
                let Ok((_send, mut recv)) = conn.accept_bi().await else {
                    continue;
                };
                let mut frames = FrameBuffer::new();
                let hello = loop {
                    match frames.next_frame::<ProducerFrame>() {
                        Ok(Some(frame)) => break Some(frame),
                        Ok(None) => {}
                        Err(_) => break None,
                    }
                    match recv.read_chunk(64 * 1024, true).await {
                        Ok(Some(chunk)) => frames.extend(&chunk.bytes),
                        _ => break None,
                    }
                };
                if let Some(ProducerFrame::Hello(_)) = hello {
                    count.send_modify(|n| *n += 1);
                }
                conn.close(code.into(), reason.as_bytes());
            }
        });
        ClosingIngest {
            addr,
            trust,
            hellos,
            _endpoint: endpoint,
        }
    }
}

/// Runs a producer of a manual CSC `csc` against `addrs`, trusting `trust`.
fn producer(
    csc: &str,
    addrs: Vec<String>,
    trust: ServerTrust,
    stop: &CancellationToken,
) -> (Arc<ProducerStats>, JoinHandle<Result<(), ProducerError>>) {
    let mut config = test_config();
    config.producer.csc = csc.into();
    config.producer.ingest = addrs;
    let stats = Arc::new(ProducerStats::default());
    let middleware = ManualCsc::new(csc, 16);
    let (s, stop) = (stats.clone(), stop.clone());
    let task = tokio::spawn(async move { meridian_producer::run(&config, middleware, trust, s, stop).await });
    (stats, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ingest_draining_during_the_hello_is_retried_not_a_refusal() {
    let draining = ClosingIngest::start(close_code::DRAINING, "ingest shutting down");
    let stop = CancellationToken::new();
    let (_, task) = producer(
        "Test:21",
        vec![draining.addr.to_string()],
        draining.trust.clone(),
        &stop,
    );
    // Three hellos: the producer came back twice, with backoff, after being
    // closed as the ingest drained.
    let mut hellos = draining.hellos.clone();
    tokio::time::timeout(Duration::from_secs(20), hellos.wait_for(|n| *n >= 3))
        .await
        .expect("the producer retries a draining ingest")
        .unwrap();
    assert!(!task.is_finished(), "the producer still runs");
    stop.cancel();
    task.await.unwrap().expect("a clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ingest_refusing_during_the_hello_stops_the_producer_with_the_reason() {
    let refusing = ClosingIngest::start(
        close_code::REFUSED,
        "the client certificate is not valid for CSC Test",
    );
    let stop = CancellationToken::new();
    let (stats, task) = producer(
        "Test:22",
        vec![refusing.addr.to_string()],
        refusing.trust.clone(),
        &stop,
    );
    let outcome = tokio::time::timeout(Duration::from_secs(20), task)
        .await
        .expect("refused promptly")
        .unwrap();
    let message = outcome.expect_err("a refusal is final").to_string();
    assert!(message.contains("not valid for CSC Test"), "{message}");
    assert_eq!(*refusing.hellos.borrow(), 1, "no retry after a refusal");
    assert_eq!(ProducerStats::get(&stats.connections), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_producer_skips_an_ingest_that_does_not_answer_and_uses_the_next() {
    let mut system = System::start_with(Arc::new(MemoryStore::new()), test_config())
        .await
        .unwrap();
    // Held open and never read: QUIC packets sent there get no answer.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let dead = silent.local_addr().unwrap().to_string();
    let live = system.ingest_addr.to_string();
    let csc = ManualCsc::new("Test:23", 16);
    let stats = system.spawn_producer(csc.clone(), |c| {
        c.producer.csc = "Test:23".into();
        c.producer.ingest = vec![dead, live];
    });
    csc.publish(1).await;
    wait_for(
        "the event stored through the second address",
        Duration::from_secs(30),
        || {
            let stats = stats.clone();
            async move { (ProducerStats::get(&stats.events_acked_seq) >= 1).then_some(()) }
        },
    )
    .await
    .unwrap();
    assert_eq!(ProducerStats::get(&stats.connections), 1);
    system.stop().await;
}

/// Whether `store` holds any key of the instance `csc` (e.g. `ATDome:0`;
/// any Script for `Script:0`).
async fn holds(store: &MemoryStore, csc: &str) -> bool {
    let csc: CscId = csc.parse().unwrap();
    !store
        .keys_with_prefix(&keys::instance_keys_prefix(&csc), 1)
        .await
        .unwrap()
        .is_empty()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pools_route_a_csc_and_a_script_queues_scripts_to_their_ingest() {
    let (default_store, pool_store) = (MemoryStore::new(), MemoryStore::new());
    let default = System::start_with(Arc::new(default_store.clone()), test_config())
        .await
        .unwrap();
    let pool = System::start_with(Arc::new(pool_store.clone()), test_config())
        .await
        .unwrap();

    let sim = SimMiddleware::new();
    let options = SimOptions {
        start_enabled: true,
        ..SimOptions::default()
    };
    let queue = "ScriptQueue:1".parse().unwrap();
    let stop = default.stop_token();
    for csc in ["ATDome:0", "Test:1", "ScriptQueue:1"] {
        sim.start_with(&csc.parse().unwrap(), options, stop.clone())
            .unwrap();
    }
    // Each ingest has its own development certificate: producers trust both.
    let trust = match (&default.trust, &pool.trust) {
        (ServerTrust::Roots(a), ServerTrust::Roots(b)) => ServerTrust::Roots([a.clone(), b.clone()].concat()),
        _ => unreachable!("test systems trust their exact certificates"),
    };
    // Every producer has the default ingest as `producer.ingest` and the same pools.
    let mut config = test_config();
    config.producer.ingest = vec![default.ingest_addr.to_string()];
    for csc in ["ATDome", "ScriptQueue"] {
        config
            .producer
            .pools
            .insert(csc.into(), vec![pool.ingest_addr.to_string()]);
    }
    let spawn = |csc: &str, all_indices: bool| {
        let mut config = config.clone();
        config.producer.csc = csc.into();
        config.producer.all_indices = all_indices;
        let stats = Arc::new(ProducerStats::default());
        let (sim, trust, s, stop) = (Arc::new(sim.clone()), trust.clone(), stats.clone(), stop.clone());
        tokio::spawn(async move { meridian_producer::run(&config, sim, trust, s, stop).await });
        stats
    };
    let producers = [
        spawn("ATDome:0", false),
        spawn("Test:1", false),
        spawn("ScriptQueue:1", false),
        spawn("Script", true),
    ];
    wait_for("every producer connected", Duration::from_secs(20), || {
        let producers = producers.clone();
        async move {
            producers
                .iter()
                .all(|p| ProducerStats::get(&p.connections) > 0)
                .then_some(())
        }
    })
    .await
    .unwrap();
    // One Script run, so the Script producer has events to send.
    let params = vec![
        ("isStandard".into(), Value::Bool(true)),
        ("path".into(), Value::Str("sleep.py".into())),
        ("config".into(), Value::Str("duration: 0".into())),
        ("location".into(), Value::Int(2)),
        ("locationSalIndex".into(), Value::Int(0)),
        ("logLevel".into(), Value::Int(20)),
        ("blockSize".into(), Value::Int(0)),
        ("startBlock".into(), Value::Bool(false)),
    ];
    let ack = sim
        .command(&queue, "add", params, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(ack.final_ack().await.state, AckState::Complete);

    wait_for(
        "each CSC's data in its ingest's store",
        Duration::from_secs(30),
        || {
            let (default_store, pool_store) = (default_store.clone(), pool_store.clone());
            async move {
                let routed = holds(&pool_store, "ATDome:0").await
                    && holds(&pool_store, "ScriptQueue:1").await
                    && holds(&pool_store, "Script:0").await
                    && holds(&default_store, "Test:1").await;
                routed.then_some(())
            }
        },
    )
    .await
    .unwrap();
    for csc in ["ATDome:0", "ScriptQueue:1", "Script:0"] {
        assert!(!holds(&default_store, csc).await, "{csc} went to its pool only");
    }
    assert!(
        !holds(&pool_store, "Test:1").await,
        "Test has no pool: the default ingest"
    );
    // Producers first (they share the default system's stop token), then the pool's ingest.
    default.stop().await;
    pool.stop().await;
}
