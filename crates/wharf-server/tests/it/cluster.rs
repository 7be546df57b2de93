//! Three `wharf` processes form a cluster from `cluster_listen` / `cluster_peers` (ADR 0012).
//! Clients see a Kafka cluster: Metadata names every node and each partition's leader (its
//! shard group's), so librdkafka routes produces and fetches to leaders and re-routes when a
//! leader dies. What is checked is the safety claim, never who led (elections are timed and
//! CI load moves leadership): every acknowledged record is held by every node, once, at the
//! offset it was acknowledged at, in order.
//!
//! Each node's data is read back offline: the cluster is stopped and each node started again
//! alone (no `cluster_peers`) on its own data directory, then read with a consumer.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer, DefaultConsumerContext};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use tempfile::TempDir;
use wharf_testkit::{free_port, BrokerProcess};

use crate::wharf_bin;

/// What a node holds: partition → (offset, value), in offset order.
type Held = BTreeMap<i32, Vec<(i64, String)>>;

/// Nodes 1..=3 of one cluster, the same shard count each, on ephemeral ports.
struct Nodes {
    nodes: Vec<BrokerProcess>,
    shards: &'static str,
}

impl Nodes {
    fn start(dir: &TempDir) -> Self {
        Self::start_with(dir, "3")
    }

    fn start_with(dir: &TempDir, shards: &'static str) -> Self {
        let ports: Vec<u16> = (0..3).map(|_| free_port().unwrap()).collect();
        let peers = ports
            .iter()
            .enumerate()
            .map(|(i, p)| format!("{}@127.0.0.1:{p}", i + 1))
            .collect::<Vec<_>>()
            .join(",");
        let nodes = (0..3)
            .map(|i| {
                let id = (i + 1).to_string();
                let listen = format!("127.0.0.1:{}", ports[i]);
                BrokerProcess::start(
                    wharf_bin(),
                    &dir.path().join(format!("n{id}")),
                    &[
                        ("node_id", &id),
                        ("shards", shards),
                        ("cluster_listen", &listen),
                        ("cluster_peers", &peers),
                        // One port fewer to collide with on a restart (AMQP is not tested here).
                        ("amqp_listen", "off"),
                    ],
                )
                .unwrap()
            })
            .collect();
        Self { nodes, shards }
    }

    fn bootstrap(&self) -> String {
        self.nodes
            .iter()
            .map(BrokerProcess::addr)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Node `id` (1-based).
    fn node(&mut self, id: i32) -> &mut BrokerProcess {
        &mut self.nodes[usize::try_from(id - 1).unwrap()]
    }

    /// Creates `topic` through node 1: the controller group commits it for every node
    /// (`leaders` then waits until every node's Metadata agrees).
    async fn create_topic(&self, topic: &str, partitions: i32) {
        wharf_testkit::create_topic(&self.nodes[0].addr(), topic, partitions, &[])
            .await
            .unwrap();
    }

    /// Waits until every partition of `topic` has a leader all live nodes agree on; returns
    /// the leader of each partition.
    fn leaders(&mut self, topic: &str, partitions: i32) -> BTreeMap<i32, i32> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let mut answers = Vec::new();
            for node in &mut self.nodes {
                if !node.is_running() {
                    continue;
                }
                answers.push(leaders_seen_by(&node.addr(), topic));
            }
            if let Some(first) = answers.first() {
                if first.len() == usize::try_from(partitions).unwrap()
                    && answers.iter().all(|a| a == first)
                {
                    return first.clone();
                }
            }
            assert!(Instant::now() < deadline, "no agreed leaders: {answers:?}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Stops every node, then starts each alone on its own data directory and reads every
    /// partition of `topic` from it: (offset, value) per partition, by node id.
    fn read_back_alone(self, dir: &TempDir, topic: &str, partitions: i32) -> Vec<(i32, Held)> {
        self.read_back_alone_with(dir, topic, partitions, "read_uncommitted")
    }

    fn read_back_alone_with(
        mut self,
        dir: &TempDir,
        topic: &str,
        partitions: i32,
        isolation: &str,
    ) -> Vec<(i32, Held)> {
        for node in &mut self.nodes {
            node.terminate().unwrap();
        }
        let mut out = Vec::new();
        for id in 1..=3 {
            let alone = BrokerProcess::start(
                wharf_bin(),
                &dir.path().join(format!("n{id}")),
                &[("node_id", &id.to_string()), ("shards", self.shards)],
            )
            .unwrap();
            let mut by_partition = BTreeMap::new();
            for partition in 0..partitions {
                by_partition.insert(
                    partition,
                    read_partition(&alone.addr(), topic, partition, isolation),
                );
            }
            out.push((id, by_partition));
        }
        out
    }
}

/// A Fetch of `topic`[`partition`] from offset 0 sent to the node at `addr` itself: the
/// partition's error code and how many record bytes came back.
async fn raw_fetch(addr: &str, topic: &str, partition: i32) -> (i16, usize) {
    use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
    use kafka_protocol::messages::{FetchRequest, TopicName};
    use kafka_protocol::protocol::StrBytes;
    let mut client = wharf_kafka::Client::connect(addr).await.unwrap();
    let request = FetchRequest::default()
        .with_replica_id(kafka_protocol::messages::BrokerId(-1))
        .with_max_wait_ms(0)
        .with_min_bytes(1)
        .with_max_bytes(1 << 20)
        .with_topics(vec![FetchTopic::default()
            .with_topic(TopicName(StrBytes::from_string(topic.to_string())))
            .with_partitions(vec![FetchPartition::default()
                .with_partition(partition)
                .with_fetch_offset(0)
                .with_partition_max_bytes(1 << 20)])]);
    let response = client.send(request).await.unwrap();
    let p = &response.responses[0].partitions[0];
    (
        p.error_code,
        p.records.as_ref().map_or(0, bytes::Bytes::len),
    )
}

/// The node coordinating group `group`, as the node at `addr` answers FindCoordinator.
async fn coordinator_of(addr: &str, group: &str) -> i32 {
    use kafka_protocol::messages::FindCoordinatorRequest;
    use kafka_protocol::protocol::StrBytes;
    let mut client = wharf_kafka::Client::connect(addr).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        // The client speaks v4+ (batched keys).
        let request = FindCoordinatorRequest::default()
            .with_coordinator_keys(vec![StrBytes::from_string(group.to_string())]);
        let response = client.send(request).await.unwrap();
        let id = response
            .coordinators
            .first()
            .filter(|c| c.error_code == 0)
            .map_or(-1, |c| c.node_id.0);
        if id > 0 {
            return id;
        }
        assert!(Instant::now() < deadline, "no coordinator for {group}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Partition → leader as the node at `addr` tells it (partitions without a leader left out).
fn leaders_seen_by(addr: &str, topic: &str) -> BTreeMap<i32, i32> {
    let Ok(consumer) = wharf_testkit::base_consumer(addr, &[]) else {
        return BTreeMap::new();
    };
    let Ok(metadata) = consumer.fetch_metadata(Some(topic), Duration::from_secs(5)) else {
        return BTreeMap::new();
    };
    metadata
        .topics()
        .iter()
        .flat_map(rdkafka::metadata::MetadataTopic::partitions)
        .filter(|p| p.leader() >= 0 && p.error().is_none())
        .map(|p| (p.id(), p.leader()))
        .collect()
}

/// Every record of `topic`[`partition`] on a single node, in offset order.
fn read_partition(addr: &str, topic: &str, partition: i32, isolation: &str) -> Vec<(i64, String)> {
    let consumer = wharf_testkit::base_consumer(addr, &[("isolation.level", isolation)]).unwrap();
    let (_, high) = consumer
        .fetch_watermarks(topic, partition, Duration::from_secs(30))
        .unwrap();
    // read_committed stops before the high watermark when the log ends with a marker or an
    // aborted batch: read until a second of quiet once past the last record seen.
    let mut quiet_since = Instant::now();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, Offset::Beginning)
        .unwrap();
    consumer.assign(&tpl).unwrap();
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while out.last().is_none_or(|(o, _)| o + 1 < high) {
        assert!(
            Instant::now() < deadline,
            "{addr} {topic}[{partition}] read stalled"
        );
        if let Some(m) = consumer.poll(Duration::from_millis(200)) {
            let m = m.unwrap();
            let value = String::from_utf8(m.payload().unwrap().to_vec()).unwrap();
            out.push((m.offset(), value));
            quiet_since = Instant::now();
        } else if isolation == "read_committed" && quiet_since.elapsed() > Duration::from_secs(2) {
            break;
        }
    }
    out
}

/// Checks the safety claim on every node's read-back: each acknowledged record is there
/// exactly once, at the offset it was acknowledged at, and each node holds the same records.
fn assert_every_node_holds(nodes: &[(i32, Held)], acked: &BTreeMap<i32, Vec<(i64, String)>>) {
    let (first_id, first) = &nodes[0];
    for (id, held) in nodes {
        for (partition, records) in acked {
            let on_node = held.get(partition).cloned().unwrap_or_default();
            let by_offset: HashMap<i64, &String> = on_node.iter().map(|(o, v)| (*o, v)).collect();
            let mut seen: HashMap<&String, usize> = HashMap::new();
            for (_, v) in &on_node {
                *seen.entry(v).or_default() += 1;
            }
            for (offset, value) in records {
                assert_eq!(
                    by_offset.get(offset).copied(),
                    Some(value),
                    "node {id}: acknowledged {value} at [{partition}]@{offset} is not there"
                );
                assert_eq!(
                    seen.get(value).copied(),
                    Some(1),
                    "node {id}: acknowledged {value} is held more than once"
                );
            }
        }
        // Every node holds the same committed records (a node may hold no more than the
        // others: the read-back is of a cluster stopped cleanly after its last commit).
        assert_eq!(
            held, first,
            "node {id} holds other records than node {first_id}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn clients_reach_each_shard_leader_and_every_node_holds_what_was_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = Nodes::start(&dir);
    // replication.factor: 3 (the shard groups' replicas) is taken, 2 is refused.
    let admin = wharf_testkit::admin(&nodes.node(2).addr()).unwrap();
    let options =
        rdkafka::admin::AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let created = admin
        .create_topics(
            [
                &rdkafka::admin::NewTopic::new("t", 6, rdkafka::admin::TopicReplication::Fixed(3)),
                &rdkafka::admin::NewTopic::new(
                    "two",
                    1,
                    rdkafka::admin::TopicReplication::Fixed(2),
                ),
            ],
            &options,
        )
        .await
        .unwrap();
    assert!(created[0].is_ok(), "{:?}", created[0]);
    assert_eq!(
        created[1].as_ref().map_err(|(_, e)| *e),
        Err(rdkafka::types::RDKafkaErrorCode::InvalidReplicationFactor)
    );
    // Every node names the same leaders before the sends.
    nodes.leaders("t", 6);
    // Metadata is a cluster's: three brokers, each partition with three replicas.
    let consumer = wharf_testkit::base_consumer(&nodes.node(1).addr(), &[]).unwrap();
    let metadata = consumer
        .fetch_metadata(Some("t"), Duration::from_secs(10))
        .unwrap();
    let mut brokers: Vec<i32> = metadata
        .brokers()
        .iter()
        .map(rdkafka::metadata::MetadataBroker::id)
        .collect();
    brokers.sort_unstable();
    assert_eq!(brokers, vec![1, 2, 3], "Metadata names every node");
    let ids: Vec<Option<String>> = (1..=3)
        .map(|id| {
            wharf_testkit::base_consumer(&nodes.node(id).addr(), &[])
                .unwrap()
                .client()
                .fetch_cluster_id(Duration::from_secs(10))
        })
        .collect();
    assert!(
        ids[0].is_some() && ids.iter().all(|id| *id == ids[0]),
        "every node answers with one cluster id: {ids:?}"
    );
    for p in metadata.topics()[0].partitions() {
        let mut replicas = p.replicas().to_vec();
        replicas.sort_unstable();
        assert_eq!(replicas, vec![1, 2, 3], "partition {} replicas", p.id());
    }
    let producer: FutureProducer = wharf_testkit::producer(
        &nodes.bootstrap(),
        &[("acks", "all"), ("enable.idempotence", "true")],
    )
    .unwrap();
    let mut acked: BTreeMap<i32, Vec<(i64, String)>> = BTreeMap::new();
    let sends: Vec<_> = (0..600)
        .map(|i| {
            let value = format!("m{i}");
            let partition = i % 6;
            let delivery = producer
                .send_result(
                    FutureRecord::<(), _>::to("t")
                        .partition(partition)
                        .payload(&value),
                )
                .map_err(|(e, _)| e)
                .unwrap();
            (value, delivery)
        })
        .collect();
    for (value, delivery) in sends {
        let d = delivery
            .await
            .unwrap()
            .unwrap_or_else(|(e, _)| panic!("{value} not acknowledged: {e}"));
        acked
            .entry(d.partition)
            .or_default()
            .push((d.offset, value));
    }
    // Only the leader serves a fetch; a follower answers NOT_LEADER_OR_FOLLOWER and the
    // client re-routes (librdkafka hides this, so ask with a raw Fetch). Leadership can move
    // under CI load: the leader is read again before the fetches, and both are asked again
    // if it moved in between. A node that serves as a follower, or refuses as the leader,
    // fails the test at the deadline.
    let not_leader = kafka_protocol::ResponseError::NotLeaderOrFollower.code();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let leader = nodes.leaders("t", 6)[&0];
        let follower = (1..=3).find(|id| *id != leader).unwrap();
        let led = raw_fetch(&nodes.node(leader).addr(), "t", 0).await;
        let followed = raw_fetch(&nodes.node(follower).addr(), "t", 0).await;
        if led.0 == not_leader || followed.0 == 0 {
            assert!(
                Instant::now() < deadline,
                "partition 0: leader {leader} answered {led:?}, follower {follower} {followed:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        }
        assert_eq!(
            (led.0, led.1 > 0),
            (0, true),
            "the leader serves partition 0"
        );
        assert_eq!(followed, (not_leader, 0), "a follower refuses the fetch");
        break;
    }
    drop(producer);
    let held = nodes.read_back_alone(&dir, "t", 6);
    assert_every_node_holds(&held, &acked);
}

/// What the producer thread saw acknowledged, by partition.
type Acked = Arc<Mutex<BTreeMap<i32, Vec<(i64, String)>>>>;

#[tokio::test(flavor = "multi_thread")]
async fn nothing_acknowledged_is_lost_when_each_shard_leader_is_killed_in_turn() {
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = Nodes::start(&dir);
    nodes.create_topic("k", 6).await;
    nodes.leaders("k", 6);
    let bootstrap = nodes.bootstrap();
    let stop = Arc::new(AtomicBool::new(false));
    let acked: Acked = Arc::default();
    let failed = Arc::new(Mutex::new(Vec::new()));
    // An idempotent acks=all producer stamps (producer, sequence) on each message.
    let producing = {
        let (stop, acked, failed, bootstrap) = (
            stop.clone(),
            acked.clone(),
            failed.clone(),
            bootstrap.clone(),
        );
        tokio::spawn(async move {
            let producer: FutureProducer = wharf_testkit::producer(
                &bootstrap,
                &[
                    ("acks", "all"),
                    ("enable.idempotence", "true"),
                    ("message.timeout.ms", "60000"),
                    ("linger.ms", "5"),
                ],
            )
            .unwrap();
            let mut seq = 0u64;
            let mut inflight = Vec::new();
            while !stop.load(Ordering::Acquire) {
                let value = format!("p1-{seq}");
                let partition = i32::try_from(seq % 6).unwrap();
                seq += 1;
                let delivery = producer
                    .send_result(
                        FutureRecord::<(), _>::to("k")
                            .partition(partition)
                            .payload(&value),
                    )
                    .map_err(|(e, _)| e)
                    .unwrap();
                inflight.push((value, delivery));
                if inflight.len() >= 50 {
                    for (value, delivery) in inflight.drain(..) {
                        match delivery.await.unwrap() {
                            Ok(d) => lock(&acked)
                                .entry(d.partition)
                                .or_default()
                                .push((d.offset, value)),
                            Err((e, _)) => lock(&failed).push(format!("{value}: {e}")),
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
            for (value, delivery) in inflight {
                match delivery.await.unwrap() {
                    Ok(d) => lock(&acked)
                        .entry(d.partition)
                        .or_default()
                        .push((d.offset, value)),
                    Err((e, _)) => lock(&failed).push(format!("{value}: {e}")),
                }
            }
        })
    };
    // A group consumer commits what it read; its committed offsets must never go back.
    let consuming = {
        let (stop, bootstrap) = (stop.clone(), bootstrap.clone());
        std::thread::spawn(move || {
            let consumer: BaseConsumer<DefaultConsumerContext> =
                wharf_testkit::group_consumer(&bootstrap, "readers", &[], DefaultConsumerContext)
                    .unwrap();
            consumer.subscribe(&["k"]).unwrap();
            let mut committed: BTreeMap<i32, i64> = BTreeMap::new();
            let mut consumed = 0usize;
            let mut backwards = Vec::new();
            let mut last_check = Instant::now();
            while !stop.load(Ordering::Acquire) {
                if let Some(Ok(_)) = consumer.poll(Duration::from_millis(100)) {
                    consumed += 1;
                }
                if last_check.elapsed() > Duration::from_millis(500) {
                    last_check = Instant::now();
                    // A commit may fail while the coordinator moves; the next one retries.
                    let _ = consumer.commit_consumer_state(rdkafka::consumer::CommitMode::Sync);
                    if let Ok(tpl) = consumer.committed(Duration::from_secs(5)) {
                        for e in tpl.elements() {
                            // A partition that had a committed offset and now has none went
                            // back too (a coordinator that lost what it acknowledged).
                            let now = match e.offset() {
                                Offset::Offset(o) => o,
                                _ => -1,
                            };
                            let before = committed.get(&e.partition()).copied();
                            if before.is_some_and(|b| b > now) {
                                backwards.push((e.partition(), before, now));
                            }
                            if now >= 0 {
                                committed.insert(e.partition(), now);
                            }
                        }
                    }
                }
            }
            (consumed, committed, backwards)
        })
    };
    // Kill -9 the leader of each shard in turn (a partition's leader is its shard's; the
    // partitions 0..3 of a new topic lie in the three shards), then the group's coordinator;
    // let the others elect a new leader and serve, then restart the dead node.
    // `WHARF_CLUSTER_KILLS=N` (opt-in chaos mode) goes on to N kills, alternating leaders of
    // every partition and the coordinator.
    let rounds: usize = std::env::var("WHARF_CLUSTER_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4)
        .max(4);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut killed = Vec::new();
    for round in 0..rounds {
        let leaders = nodes.leaders("k", 6);
        let victim = if round % 4 == 3 {
            let addr = nodes.node(leaders[&0]).addr();
            coordinator_of(&addr, "readers").await
        } else {
            leaders[&i32::try_from(round % 6).unwrap()]
        };
        nodes.node(victim).kill9().unwrap();
        killed.push(victim);
        nodes.leaders("k", 6);
        tokio::time::sleep(Duration::from_secs(if round < 4 { 2 } else { 1 })).await;
        nodes.node(victim).restart().unwrap();
        tokio::time::sleep(Duration::from_secs(if round < 4 { 3 } else { 2 })).await;
    }
    stop.store(true, Ordering::Release);
    producing.await.unwrap();
    let (consumed, _committed, backwards) = consuming.join().unwrap();
    let acked = std::mem::take(&mut *lock(&acked));
    let total: usize = acked.values().map(Vec::len).sum();
    assert!(
        total > 100,
        "the producer kept producing: {total} acknowledged"
    );
    assert!(consumed > 0, "the group consumer read records");
    assert!(
        backwards.is_empty(),
        "committed offsets went backwards: {backwards:?}"
    );
    eprintln!(
        "{} kills {killed:?}; {total} acknowledged, {consumed} consumed",
        killed.len()
    );
    // An idempotent producer rides over leader changes: nothing fails, nothing doubles.
    assert!(
        lock(&failed).is_empty(),
        "deliveries failed: {:?}",
        lock(&failed).iter().take(5).collect::<Vec<_>>()
    );
    // Per partition, acknowledged offsets grow with the producer's sequence.
    for (partition, records) in &acked {
        let mut sorted = records.clone();
        sorted.sort();
        let seqs: Vec<u64> = sorted
            .iter()
            .map(|(_, v)| v.trim_start_matches("p1-").parse().unwrap())
            .collect();
        assert!(
            seqs.windows(2).all(|w| w[0] < w[1]),
            "partition {partition}: acknowledged out of order"
        );
    }
    let held = nodes.read_back_alone(&dir, "k", 6);
    assert_every_node_holds(&held, &acked);
}

#[test]
fn a_transactional_producer_keeps_committing_across_a_leader_change() {
    use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
    let dir = tempfile::tempdir().unwrap();
    // One shard: the transaction coordinator and the data partitions share their leader
    // (markers to a partition another node leads are not forwarded yet: ADR 0012).
    let mut nodes = Nodes::start_with(&dir, "1");
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(nodes.create_topic("tx", 2));
    nodes.leaders("tx", 2);
    let mut config = rdkafka::ClientConfig::new();
    config
        .set("bootstrap.servers", nodes.bootstrap())
        .set("broker.address.family", "v4")
        .set("transactional.id", "mover")
        .set("transaction.timeout.ms", "20000")
        .set("message.timeout.ms", "20000")
        .set("linger.ms", "5");
    let wait = Duration::from_secs(60);
    let producer: ThreadedProducer<DefaultProducerContext> = config.create().unwrap();
    producer.init_transactions(wait).unwrap();
    let mut committed = Vec::new();
    let mut aborted = 0;
    let mut killed = None;
    for txn in 0..30 {
        if txn == 10 {
            // Mid-run: kill -9 the leader (it coordinates the transactions too).
            let victim = nodes.leaders("tx", 2)[&0];
            nodes.node(victim).kill9().unwrap();
            killed = Some(victim);
        }
        if txn == 20 {
            if let Some(victim) = killed {
                nodes.node(victim).restart().unwrap();
            }
        }
        let values: Vec<String> = (0..10).map(|i| format!("t{txn}-{i}")).collect();
        producer.begin_transaction().unwrap();
        for (i, value) in values.iter().enumerate() {
            producer
                .send(
                    BaseRecord::<(), str>::to("tx")
                        .partition(i32::try_from(i % 2).unwrap())
                        .payload(value),
                )
                .map_err(|(e, _)| e)
                .unwrap();
        }
        match producer.commit_transaction(wait) {
            Ok(()) => committed.extend(values),
            Err(e) => {
                // A commit cut by the leader change is abortable: abort and go on; its
                // records must never be read as committed.
                eprintln!("transaction {txn}: {e}");
                producer.abort_transaction(wait).unwrap();
                aborted += 1;
            }
        }
    }
    drop(producer);
    // The coordinator's move is retriable for the client: every transaction commits (the
    // new coordinator rebuilt the producer's transactional state from the log).
    assert_eq!(aborted, 0, "transactions aborted across the leader change");
    assert_eq!(committed.len(), 300);
    let held = nodes.read_back_alone_with(&dir, "tx", 2, "read_committed");
    let committed: std::collections::HashSet<&String> = committed.iter().collect();
    for (id, partitions) in &held {
        let mut read: Vec<&String> = partitions.values().flatten().map(|(_, v)| v).collect();
        let total = read.len();
        read.sort();
        read.dedup();
        assert_eq!(
            read.len(),
            total,
            "node {id}: a committed record read twice"
        );
        let read: std::collections::HashSet<&String> = read.into_iter().collect();
        assert_eq!(
            read, committed,
            "node {id}: read_committed reads exactly the committed transactions"
        );
    }
}

/// A consume-transform-produce transaction over three shards: its markers go through each
/// output partition's leader and its offsets through the group's coordinator, wherever they
/// are (leaders spread over the nodes at start).
#[test]
fn a_transaction_spans_partitions_and_a_group_led_by_other_nodes() {
    use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = Nodes::start(&dir);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(nodes.create_topic("ctp-in", 3));
    rt.block_on(nodes.create_topic("ctp-out", 6));
    nodes.leaders("ctp-in", 3);
    let out_leaders = nodes.leaders("ctp-out", 6);
    let wait = Duration::from_secs(60);
    let mut config = rdkafka::ClientConfig::new();
    config
        .set("bootstrap.servers", nodes.bootstrap())
        .set("broker.address.family", "v4")
        .set("linger.ms", "5");
    let plain: ThreadedProducer<DefaultProducerContext> = config.create().unwrap();
    for i in 0..30 {
        plain
            .send(
                BaseRecord::<(), str>::to("ctp-in")
                    .partition(i % 3)
                    .payload(&format!("in-{i}")),
            )
            .map_err(|(e, _)| e)
            .unwrap();
    }
    plain.flush(wait).unwrap();
    let consumer = wharf_testkit::base_consumer(
        &nodes.bootstrap(),
        &[("group.id", "ctp"), ("isolation.level", "read_committed")],
    )
    .unwrap();
    let committed = |c: &BaseConsumer| -> Vec<Offset> {
        let mut want = TopicPartitionList::new();
        for p in 0..3 {
            want.add_partition("ctp-in", p);
        }
        let got = c.committed_offsets(want, wait).unwrap();
        (0..3)
            .map(|p| got.find_partition("ctp-in", p).unwrap().offset())
            .collect()
    };
    config.set("transactional.id", "spanning");
    let producer: ThreadedProducer<DefaultProducerContext> = config.create().unwrap();
    producer.init_transactions(wait).unwrap();
    let mut expected = Vec::new();
    for (upto, commit) in [(5i64, false), (10, true)] {
        producer.begin_transaction().unwrap();
        for i in 0..12 {
            let value = format!("out-{upto}-{i}");
            producer
                .send(
                    BaseRecord::<(), str>::to("ctp-out")
                        .partition(i % 6)
                        .payload(&value),
                )
                .map_err(|(e, _)| e)
                .unwrap();
            if commit {
                expected.push(value);
            }
        }
        let mut offsets = TopicPartitionList::new();
        for p in 0..3 {
            offsets
                .add_partition_offset("ctp-in", p, Offset::Offset(upto))
                .unwrap();
        }
        producer
            .send_offsets_to_transaction(&offsets, &consumer.group_metadata().unwrap(), wait)
            .unwrap();
        if commit {
            producer.commit_transaction(wait).unwrap();
            assert_eq!(committed(&consumer), vec![Offset::Offset(10); 3]);
        } else {
            producer.abort_transaction(wait).unwrap();
            assert_eq!(
                committed(&consumer),
                vec![Offset::Invalid; 3],
                "an abort moved the offsets"
            );
        }
    }
    drop(producer);
    drop(plain);
    eprintln!("ctp-out leaders: {out_leaders:?}");
    let held = nodes.read_back_alone_with(&dir, "ctp-out", 6, "read_committed");
    expected.sort();
    for (id, partitions) in &held {
        let mut read: Vec<String> = partitions
            .values()
            .flatten()
            .map(|(_, v)| v.clone())
            .collect();
        read.sort();
        assert_eq!(
            read, expected,
            "node {id}: read_committed reads the committed transaction once"
        );
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap()
}
