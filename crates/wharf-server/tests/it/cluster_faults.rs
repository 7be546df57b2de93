//! Faults in a 3-node cluster (ADR 0012), through the testkit's `TestCluster`: a fault proxy
//! on every node-to-node path cuts the shard leader off, and a follower loses its data
//! directory. What is checked is safety, never who led or how fast: every record a librdkafka
//! acks=all producer saw acknowledged is on every node, in order, exactly once; an isolated
//! leader acknowledges nothing and its unacknowledged tail is gone after healing. And one
//! liveness claim, bounded by generous timeouts: the isolated leader stops naming itself the
//! leader and listing itself as a broker, so a producer that knows all three nodes gets its
//! records acknowledged by the majority's new leader.
//!
//! A node's data is read offline: the nodes are stopped and each data directory is opened
//! alone (a single-node `wharf serve` without cluster settings), whose high watermark is the
//! local log end, so everything the node holds is read, committed or not.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use wharf_testkit::TestCluster;

use crate::wharf_bin;

const TOPIC: &str = "faults";
const WAIT: Duration = Duration::from_secs(60);

/// Starts 3 nodes with one shard each and creates `TOPIC` (1 partition) through node 1 (the
/// controller group commits it for every node), then waits for a leader.
async fn cluster(dir: &std::path::Path) -> TestCluster {
    let mut cluster = TestCluster::start(wharf_bin(), dir, 3, &[("shards", "1")]).unwrap();
    wharf_testkit::create_topic(&cluster.node(1).addr(), TOPIC, 1, &[])
        .await
        .unwrap();
    cluster.wait_for_leaders(TOPIC, WAIT).unwrap();
    cluster
}

/// What the acks=all producer saw: value → offset of every acknowledged record.
#[derive(Default)]
struct Acked {
    records: Mutex<Vec<(String, i64)>>,
    failed: Mutex<Vec<String>>,
}

impl Acked {
    fn count(&self) -> usize {
        self.records.lock().unwrap().len()
    }
}

/// An idempotent acks=all producer (bootstrap: every node) writing `p-<seq>` in batches of
/// 10 until `stop`; returns when its last batch is settled.
fn spawn_producer(
    bootstrap: String,
    stop: Arc<AtomicBool>,
    acked: Arc<Acked>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let producer = wharf_testkit::producer(
            &bootstrap,
            &[
                ("acks", "all"),
                ("enable.idempotence", "true"),
                ("request.timeout.ms", "3000"),
                ("message.timeout.ms", "30000"),
                ("topic.metadata.refresh.interval.ms", "1000"),
            ],
        )
        .unwrap();
        let mut seq = 0u64;
        while !stop.load(Ordering::SeqCst) {
            let values: Vec<String> = (0..10).map(|i| format!("p-{}", seq + i)).collect();
            seq += 10;
            let deliveries: Vec<_> = values
                .iter()
                .map(|v| {
                    producer
                        .send_result(FutureRecord::<(), _>::to(TOPIC).partition(0).payload(v))
                        .map_err(|(e, _)| e)
                        .unwrap()
                })
                .collect();
            for (value, delivery) in values.into_iter().zip(deliveries) {
                match delivery.await.unwrap() {
                    Ok(d) => acked.records.lock().unwrap().push((value, d.offset)),
                    Err(_) => acked.failed.lock().unwrap().push(value),
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
}

/// Sends `values` with acks=all through `producer`, all enqueued before any is awaited;
/// returns those acknowledged, with their offsets.
async fn send_all<C: ClientContext + 'static>(
    producer: &FutureProducer<C>,
    values: &[String],
) -> Vec<(String, i64)> {
    let deliveries: Vec<_> = values
        .iter()
        .map(|v| {
            producer
                .send_result(FutureRecord::<(), _>::to(TOPIC).partition(0).payload(v))
                .map_err(|(e, _)| e)
                .unwrap()
        })
        .collect();
    let mut acked = Vec::new();
    let mut errors = BTreeSet::new();
    for (value, delivery) in values.iter().zip(deliveries) {
        match delivery.await.unwrap() {
            Ok(d) => acked.push((value.clone(), d.offset)),
            Err((error, _)) => {
                errors.insert(error.to_string());
            }
        }
    }
    if !errors.is_empty() {
        eprintln!("deliveries failed with: {errors:?}");
    }
    acked
}

/// A client's librdkafka log lines (its `debug` contexts), kept to print when a test fails:
/// which node it asked for metadata and which it sent to.
#[derive(Clone, Default)]
struct ClientLog(Arc<Mutex<Vec<String>>>);

impl ClientContext for ClientLog {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        let mut lines = self.0.lock().unwrap();
        if lines.len() < 100_000 {
            lines.push(format!("{level:?} {fac} {log_message}"));
        }
    }
}

/// An acks=all producer for `bootstrap` that records librdkafka's metadata, broker and
/// message log in `log`.
fn logged_producer(bootstrap: &str, log: &ClientLog) -> FutureProducer<ClientLog> {
    let mut config = rdkafka::ClientConfig::new();
    config
        .set("bootstrap.servers", bootstrap)
        .set("broker.address.family", "v4")
        .set("acks", "all")
        .set("linger.ms", "5")
        .set("message.timeout.ms", "60000")
        .set("debug", "metadata,topic,broker,msg")
        .set_log_level(RDKafkaLogLevel::Debug);
    config.create_with_context(log.clone()).unwrap()
}

/// `line` without its terminal colour codes (`ESC [ ... m`).
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The lines of a node's log [`print_diagnostics`] prints: about elections and leadership,
/// without the retries of replication to a node that is cut off.
const NODE_LOG_ABOUT: &[&str] = &[
    "leads the shard",
    "no longer leads",
    "leadership",
    "become leader",
    "quit leader",
    "new candidate",
    "establish_leader",
    "cannot serve",
    "rebuild",
    "quorum",
    "vote is changing",
    "ERROR",
    "panic",
];
const NODE_LOG_NOISE: &[&str] = &["openraft::replication", "while requesting vote"];
/// The lines of a client's log it prints: where it asked for metadata and sent records.
const CLIENT_LOG_ABOUT: &[&str] = &[
    "leader",
    "produce",
    "metadata",
    "timed out",
    "error",
    "state",
];

/// What a test needs to see when the cluster did not do what it should: each node's view of
/// `TOPIC`'s leader and its shard groups (`/v1/cluster`), the lines of each node's log about
/// elections and leadership, and the client's log lines about leaders and produce requests.
fn print_diagnostics(cluster: &mut TestCluster, client: Option<&ClientLog>) {
    eprintln!("leaders named: {:?}", cluster.leaders_named(TOPIC, 0));
    for id in cluster.ids() {
        if let Some(admin) = cluster.node(id).admin_addr() {
            let (_, body) = crate::admin_http::get(&admin, "/v1/cluster");
            eprintln!("node {id}'s /v1/cluster: {body}");
        }
    }
    for id in cluster.ids() {
        let log = cluster.node(id).log();
        let lines: Vec<String> = log
            .lines()
            .map(strip_ansi)
            .filter(|l| {
                NODE_LOG_ABOUT.iter().any(|a| l.contains(a))
                    && !NODE_LOG_NOISE.iter().any(|n| l.contains(n))
            })
            .collect();
        let from = lines.len().saturating_sub(60);
        eprintln!(
            "node {id}'s log about leadership (last {}):",
            lines.len() - from
        );
        for line in &lines[from..] {
            eprintln!("  {}", line.chars().take(400).collect::<String>());
        }
    }
    if let Some(client) = client {
        let lines = client.0.lock().unwrap();
        let chosen: Vec<&String> = lines
            .iter()
            .filter(|l| {
                let l = l.to_lowercase();
                CLIENT_LOG_ABOUT.iter().any(|a| l.contains(a))
            })
            .collect();
        let from = chosen.len().saturating_sub(150);
        eprintln!(
            "the client's log (last {} of {}):",
            chosen.len() - from,
            lines.len()
        );
        for line in &chosen[from..] {
            eprintln!("  {}", line.chars().take(400).collect::<String>());
        }
    }
}

/// One Produce (v7, acks=all, 5 s timeout) of `values` as one batch to partition 0 on the
/// node at `addr`, on its own connection: the partition's error code, or `None` when the
/// node did not answer within 10 s.
fn produce_raw(addr: &str, values: &[String]) -> Option<i16> {
    use std::io::{Read, Write};

    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    use kafka_protocol::messages::{ProduceRequest, ProduceResponse, TopicName};
    use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

    const VERSION: i16 = 7;
    let mut batch = wharf_record::BatchBuilder::new(1_000);
    for v in values {
        batch.push(None, Some(v.as_bytes()), &[], 1_000);
    }
    let request = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(5_000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(TopicName(StrBytes::from_static_str(TOPIC)))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(0)
                .with_records(Some(bytes::Bytes::from(batch.build())))])]);
    // Header v1: api key, version, correlation id, null client id.
    let mut body = Vec::new();
    body.extend_from_slice(&0i16.to_be_bytes());
    body.extend_from_slice(&VERSION.to_be_bytes());
    body.extend_from_slice(&7i32.to_be_bytes());
    body.extend_from_slice(&(-1i16).to_be_bytes());
    request.encode(&mut body, VERSION).unwrap();
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(&i32::try_from(body.len()).unwrap().to_be_bytes())
        .unwrap();
    s.write_all(&body).unwrap();
    let mut size = [0u8; 4];
    s.read_exact(&mut size).ok()?;
    let mut response = vec![0u8; usize::try_from(i32::from_be_bytes(size)).unwrap()];
    s.read_exact(&mut response).ok()?;
    let mut response = bytes::Bytes::from(response).slice(4..);
    let response = ProduceResponse::decode(&mut response, VERSION).unwrap();
    response
        .responses
        .iter()
        .flat_map(|t| &t.partition_responses)
        .map(|p| p.error_code)
        .next()
}

/// Node `id`'s local log end of partition 0 (the admin listener's `high_watermark` is the
/// storage log's next offset: written, committed or not).
fn local_end(cluster: &TestCluster, id: u64) -> i64 {
    let addr = cluster.node(id).admin_addr().unwrap();
    // -1 until the node knows the topic (a wiped node learns it from the controller's log).
    let (status, body) = crate::admin_http::get(&addr, &format!("/v1/topics/{TOPIC}"));
    if status != 200 {
        return -1;
    }
    let topic: serde_json::Value = serde_json::from_str(&body).unwrap();
    topic["partitions"][0]["high_watermark"].as_i64().unwrap()
}

/// Waits until every live node names the same leader and holds the same local log end for
/// a second (followers caught up); after `WAIT` it prints why not and returns, leaving the
/// verdict to the comparison of what the nodes hold.
fn wait_until_converged(cluster: &mut TestCluster) {
    let deadline = Instant::now() + WAIT;
    let mut stable_since: Option<(Instant, Vec<i64>)> = None;
    loop {
        let named = cluster.leaders_named(TOPIC, 0);
        let leaders: BTreeSet<_> = named.values().collect();
        let ends: Vec<i64> = named.keys().map(|id| local_end(cluster, *id)).collect();
        let agree = leaders.len() == 1
            && leaders.iter().all(|l| l.is_some())
            && ends.windows(2).all(|w| w[0] == w[1]);
        if agree {
            match &stable_since {
                Some((since, seen)) if *seen == ends => {
                    if since.elapsed() > Duration::from_secs(1) {
                        return;
                    }
                }
                _ => stable_since = Some((Instant::now(), ends.clone())),
            }
        } else {
            stable_since = None;
        }
        if Instant::now() >= deadline {
            eprintln!("nodes did not converge: leaders {named:?}, ends {ends:?}");
            for id in cluster.ids() {
                let log = cluster.node(id).log();
                let tail = log
                    .get(log.len().saturating_sub(4000)..)
                    .unwrap_or_default();
                eprintln!("node {id}'s log ends with:\n{tail}");
            }
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Every value of partition 0 that node `id`'s data directory holds, in offset order: the
/// node is stopped, opened alone (no cluster settings) and read up to its log end.
fn read_alone(cluster: &mut TestCluster, id: u64) -> Vec<String> {
    if cluster.node_mut(id).is_running() {
        cluster.stop(id).unwrap();
    }
    let mut alone = cluster.start_alone(id).unwrap();
    let consumer: BaseConsumer = wharf_testkit::base_consumer(&alone.addr(), &[]).unwrap();
    let (low, high) = consumer
        .fetch_watermarks(TOPIC, 0, Duration::from_secs(30))
        .unwrap();
    assert_eq!(low, 0, "node {id}: log start");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(TOPIC, 0, Offset::Beginning)
        .unwrap();
    consumer.assign(&tpl).unwrap();
    let mut out = Vec::new();
    let deadline = Instant::now() + WAIT;
    while (out.len() as i64) < high {
        assert!(
            Instant::now() < deadline,
            "node {id}: read {} of {high}",
            out.len()
        );
        if let Some(m) = consumer.poll(Duration::from_millis(200)) {
            let m = m.unwrap();
            assert_eq!(m.offset(), out.len() as i64, "node {id}: offsets are dense");
            out.push(String::from_utf8(m.payload().unwrap().to_vec()).unwrap());
        }
    }
    drop(consumer);
    assert!(alone.terminate().unwrap(), "node {id} alone exits cleanly");
    out
}

/// The safety claims on what the nodes hold: every node the same records at the same
/// offsets; each acknowledged record exactly once, at the offset it was acknowledged at,
/// acknowledged ones in the order they were produced.
fn check_logs(logs: &BTreeMap<u64, Vec<String>>, acked: &[(String, i64)]) {
    let (first_id, first) = logs.iter().next().unwrap();
    for (id, log) in logs {
        assert_eq!(
            log, first,
            "node {id} holds other records than node {first_id}"
        );
    }
    let mut positions: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (offset, value) in first.iter().enumerate() {
        positions.entry(value).or_default().push(offset);
    }
    // Per producer (the value's prefix), acknowledged records are in the order produced.
    let mut last_offset: BTreeMap<&str, i64> = BTreeMap::new();
    for (value, offset) in acked {
        let at = positions.get(value.as_str()).cloned().unwrap_or_default();
        assert_eq!(
            at,
            vec![usize::try_from(*offset).unwrap()],
            "acknowledged {value} (offset {offset}) must be held exactly once, at its offset"
        );
        let producer = value.split('-').next().unwrap_or_default();
        let last = last_offset.entry(producer).or_insert(-1);
        assert!(*offset > *last, "{value} out of order");
        *last = *offset;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cut_off_leader_acknowledges_nothing_and_its_unacknowledged_tail_is_truncated() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = cluster(dir.path()).await;
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Acked::default());
    let producing = spawn_producer(cluster.bootstrap(), stop.clone(), acked.clone());
    let deadline = Instant::now() + WAIT;
    while acked.count() < 30 {
        assert!(Instant::now() < deadline, "the producer got no acks");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Cut off the node that leads, then send one acks=all batch straight to its Kafka port:
    // the old leader, still thinking it leads, writes it to its log but can never commit it.
    // On a loaded machine leadership may move at that very moment, or the batch may arrive
    // after the node already stopped serving (its lease ran out, see below); then no
    // unacknowledged tail was written: heal and cut the leader again.
    let lone_values: Vec<String> = (0..20).map(|i| format!("lone-{i}")).collect();
    let mut attempts = 0;
    let (old, tail_end) = loop {
        attempts += 1;
        let old = cluster
            .leader_of(TOPIC, 0)
            .expect("a leader before the cut");
        cluster.isolate(old);
        if cluster.leaders_named(TOPIC, 0).get(&old) == Some(&Some(old)) {
            let end_before = local_end(&cluster, old);
            let answer = produce_raw(&cluster.node(old).addr(), &lone_values);
            assert!(
                answer.is_none_or(|code| code != 0),
                "the cut-off leader acknowledged an acks=all batch"
            );
            let tail_end = local_end(&cluster, old);
            if tail_end >= end_before + 20 {
                break (old, tail_end);
            }
            eprintln!("attempt {attempts}: node {old} answered {answer:?} and did not write the batch (log end {end_before} -> {tail_end})");
        }
        assert!(
            attempts < 5,
            "in 5 attempts, no cut-off leader wrote the batch to its log"
        );
        cluster.heal();
        cluster.wait_for_leaders(TOPIC, WAIT).unwrap();
    };

    // Unheard by a quorum, the cut-off node stops naming itself the leader (its Metadata
    // names none) and refuses produce requests with NOT_LEADER_OR_FOLLOWER, so a client that
    // asks it is sent on to the majority instead of waiting on appends it can never commit.
    let deadline = Instant::now() + WAIT;
    while cluster.leaders_named(TOPIC, 0).get(&old) == Some(&Some(old)) {
        if Instant::now() >= deadline {
            print_diagnostics(&mut cluster, None);
            panic!("the cut-off node {old} still names itself the leader");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        produce_raw(&cluster.node(old).addr(), &["refused".to_string()]),
        Some(6),
        "the cut-off node answers a produce with NOT_LEADER_OR_FOLLOWER"
    );
    // It leaves itself out of its Metadata's brokers (a fenced broker) once none of its raft
    // groups has a leader it can name, so a client that only asked it drops it and asks the
    // others, which name the new leader.
    let deadline = Instant::now() + WAIT;
    loop {
        let brokers: Vec<i32> = wharf_testkit::metadata(&cluster.node(old).addr(), TOPIC)
            .unwrap()
            .brokers
            .iter()
            .map(|b| b.node_id.0)
            .collect();
        if !brokers.contains(&i32::try_from(old).unwrap()) && !brokers.is_empty() {
            break;
        }
        if Instant::now() >= deadline {
            print_diagnostics(&mut cluster, None);
            panic!("the cut-off node {old} still lists itself among the brokers: {brokers:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The two others elect a leader among themselves and serve acks=all, to a client that
    // knows all three nodes (and may ask the cut-off one for metadata).
    let deadline = Instant::now() + WAIT;
    let new = loop {
        match cluster.leader_of(TOPIC, 0) {
            Some(leader) if leader != old => break leader,
            _ => {}
        }
        if Instant::now() >= deadline {
            print_diagnostics(&mut cluster, None);
            panic!("no new leader among the majority");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let client_log = ClientLog::default();
    let during = logged_producer(&cluster.bootstrap(), &client_log);
    let during_values: Vec<String> = (0..20).map(|i| format!("during-{i}")).collect();
    let during_acked = send_all(&during, &during_values).await;
    if during_acked.len() != during_values.len() {
        eprintln!("old leader: node {old}, new leader: node {new}");
        print_diagnostics(&mut cluster, Some(&client_log));
    }
    assert_eq!(
        during_acked.len(),
        during_values.len(),
        "the majority's new leader (node {new}) serves acks=all"
    );

    cluster.heal();
    let after_values: Vec<String> = (0..20).map(|i| format!("after-{i}")).collect();
    let after_acked = send_all(&during, &after_values).await;
    if after_acked.len() != after_values.len() {
        print_diagnostics(&mut cluster, Some(&client_log));
    }
    assert_eq!(
        after_acked.len(),
        after_values.len(),
        "acks=all after healing"
    );
    stop.store(true, Ordering::SeqCst);
    producing.await.unwrap();
    drop(during);
    wait_until_converged(&mut cluster);

    let mut logs = BTreeMap::new();
    for id in cluster.ids() {
        logs.insert(id, read_alone(&mut cluster, id));
    }
    let old_log = &logs[&old];
    assert!(
        old_log.len() > usize::try_from(tail_end).unwrap(),
        "the old leader caught up past its old log end {tail_end}"
    );
    for value in &lone_values {
        assert!(
            !old_log.contains(value),
            "the old leader still holds its unacknowledged {value}"
        );
    }
    let mut all_acked = acked.records.lock().unwrap().clone();
    all_acked.extend(during_acked);
    all_acked.extend(after_acked);
    check_logs(&logs, &all_acked);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wiped_follower_catches_up_and_survives_the_leaders_death() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = cluster(dir.path()).await;
    let producer = wharf_testkit::producer(
        &cluster.bootstrap(),
        &[
            ("acks", "all"),
            ("request.timeout.ms", "3000"),
            ("message.timeout.ms", "30000"),
        ],
    )
    .unwrap();
    let mut acked = Vec::new();
    let batch = |name: &str| -> Vec<String> { (0..50).map(|i| format!("{name}-{i}")).collect() };
    acked.extend(send_all(&producer, &batch("before")).await);
    assert_eq!(acked.len(), 50, "acks=all before the wipe");

    let leader = cluster.leader_of(TOPIC, 0).unwrap();
    let follower = cluster.ids().into_iter().find(|id| *id != leader).unwrap();
    cluster.kill(follower).unwrap();
    cluster.wipe(follower).unwrap();
    // Written while the follower is gone: the remaining two are a majority.
    let while_down = send_all(&producer, &batch("down")).await;
    assert_eq!(while_down.len(), 50, "acks=all with one node down");
    acked.extend(while_down);
    cluster.restart(follower).unwrap();
    // The wiped node learns the topic again from the controller group's log.
    wait_until_converged(&mut cluster);
    assert!(
        local_end(&cluster, follower) >= 100,
        "the wiped node holds the acknowledged records again"
    );

    // The wiped node is now needed for a majority: kill the leader.
    let leader = cluster.leader_of(TOPIC, 0).unwrap();
    cluster.kill(leader).unwrap();
    let after = send_all(&producer, &batch("after")).await;
    assert_eq!(after.len(), 50, "acks=all after the leader's death");
    acked.extend(after);
    drop(producer);
    cluster.restart(leader).unwrap();
    wait_until_converged(&mut cluster);

    let mut logs = BTreeMap::new();
    for id in cluster.ids() {
        logs.insert(id, read_alone(&mut cluster, id));
    }
    check_logs(&logs, &acked);
}
