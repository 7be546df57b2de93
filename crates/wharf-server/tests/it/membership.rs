//! Membership changes (ADR 0019): a fourth node joins a running three-node cluster through
//! `wharf cluster add-node` and one of the first three (a leader) leaves through `wharf
//! cluster remove-node`, while an idempotent acks=all producer keeps producing. The claim checked is
//! the safety one: every acknowledged record is held, once, at its acknowledged offset, by
//! every remaining node, the new one included (it started empty, so the data moved to it);
//! and clients see the new membership (Metadata's brokers and each partition's replicas).
//!
//! Each node's data is read back offline, as in `it::cluster`: the nodes are stopped and each
//! started again alone (no cluster settings) on its own data directory.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use wharf_testkit::{free_port, BrokerProcess};

use crate::wharf_bin;

/// partition → (offset, value), in the order acknowledged or read.
type Held = BTreeMap<i32, Vec<(i64, String)>>;

const TOPIC: &str = "moving";
const PARTITIONS: i32 = 6;
const SHARDS: &str = "3";

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// `wharf cluster ARGS --admin ADMIN`: its stdout, or a panic with its stderr.
fn wharf_cluster(admin: &str, args: &[&str]) -> String {
    let out = Command::new(wharf_bin())
        .arg("cluster")
        .args(args)
        .args(["--admin", admin])
        .env_remove("WHARF_ADMIN")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "wharf cluster {args:?} failed: {}{}",
        stdout,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Brokers, and partition → replicas.
type Membership = (BTreeSet<i32>, BTreeMap<i32, BTreeSet<i32>>);

/// The brokers and each partition's replicas as the node at `addr` answers Metadata.
fn membership_seen_by(addr: &str) -> Option<Membership> {
    let consumer = wharf_testkit::base_consumer(addr, &[]).ok()?;
    let metadata = consumer
        .fetch_metadata(Some(TOPIC), Duration::from_secs(5))
        .ok()?;
    let brokers = metadata
        .brokers()
        .iter()
        .map(rdkafka::metadata::MetadataBroker::id)
        .collect();
    let replicas = metadata
        .topics()
        .iter()
        .flat_map(rdkafka::metadata::MetadataTopic::partitions)
        .map(|p| (p.id(), p.replicas().iter().copied().collect()))
        .collect();
    Some((brokers, replicas))
}

/// Waits until the node at `addr` names exactly `nodes` as brokers and as every partition's
/// replicas.
fn wait_for_membership(addr: &str, nodes: &[i32]) {
    let want: BTreeSet<i32> = nodes.iter().copied().collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let seen = membership_seen_by(addr);
        if let Some((brokers, replicas)) = &seen {
            if *brokers == want
                && replicas.len() == usize::try_from(PARTITIONS).unwrap()
                && replicas.values().all(|r| *r == want)
            {
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "{addr} does not show the members {want:?}: {seen:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The leader of `TOPIC`[0] as the node at `addr` answers Metadata.
fn leader_of_partition_0(addr: &str) -> Option<u64> {
    let consumer = wharf_testkit::base_consumer(addr, &[]).ok()?;
    let metadata = consumer
        .fetch_metadata(Some(TOPIC), Duration::from_secs(5))
        .ok()?;
    let leader = metadata
        .topics()
        .iter()
        .flat_map(rdkafka::metadata::MetadataTopic::partitions)
        .find(|p| p.id() == 0)?
        .leader();
    u64::try_from(leader).ok()
}

/// Every record of `TOPIC`[`partition`] on the node at `addr`, in offset order.
fn read_partition(addr: &str, partition: i32) -> Vec<(i64, String)> {
    let consumer: BaseConsumer = wharf_testkit::base_consumer(addr, &[]).unwrap();
    let (_, high) = consumer
        .fetch_watermarks(TOPIC, partition, Duration::from_secs(30))
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(TOPIC, partition, Offset::Beginning)
        .unwrap();
    consumer.assign(&tpl).unwrap();
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while out.last().is_none_or(|(o, _): &(i64, String)| o + 1 < high) {
        assert!(
            Instant::now() < deadline,
            "{addr} {TOPIC}[{partition}] read stalled"
        );
        if let Some(m) = consumer.poll(Duration::from_millis(200)) {
            let m = m.unwrap();
            let value = String::from_utf8(m.payload().unwrap().to_vec()).unwrap();
            out.push((m.offset(), value));
        }
    }
    out
}

/// Waits for each delivery, recording it as acknowledged (partition, offset) or failed.
async fn settle(
    batch: Vec<(String, rdkafka::producer::DeliveryFuture)>,
    acked: &Mutex<Held>,
    failed: &Mutex<Vec<String>>,
) {
    for (value, delivery) in batch {
        match delivery.await.unwrap() {
            Ok(d) => lock(acked)
                .entry(d.partition)
                .or_default()
                .push((d.offset, value)),
            Err((e, _)) => lock(failed).push(format!("{value}: {e}")),
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_node_joins_and_another_leaves_while_a_producer_keeps_producing() {
    let dir = tempfile::tempdir().unwrap();
    let ports: BTreeMap<u64, u16> = (1..=5).map(|id| (id, free_port().unwrap())).collect();
    let peers = |ids: &[u64]| {
        ids.iter()
            .map(|id| format!("{id}@127.0.0.1:{}", ports[id]))
            .collect::<Vec<_>>()
            .join(",")
    };
    let start = |id: u64, peers: &str, extra: &[(&str, &str)]| {
        let id_s = id.to_string();
        let listen = format!("127.0.0.1:{}", ports[&id]);
        let mut settings = vec![
            ("node_id", id_s.as_str()),
            ("shards", SHARDS),
            ("cluster_listen", listen.as_str()),
            ("cluster_peers", peers),
            ("amqp_listen", "off"),
        ];
        settings.extend_from_slice(extra);
        BrokerProcess::start(wharf_bin(), &dir.path().join(format!("n{id}")), &settings).unwrap()
    };
    let first_three = peers(&[1, 2, 3]);
    let mut nodes: BTreeMap<u64, BrokerProcess> = (1..=3)
        .map(|id| (id, start(id, &first_three, &[])))
        .collect();
    wharf_testkit::create_topic(&nodes[&1].addr(), TOPIC, PARTITIONS, &[])
        .await
        .unwrap();
    wait_for_membership(&nodes[&1].addr(), &[1, 2, 3]);

    let bootstrap = nodes
        .values()
        .map(BrokerProcess::addr)
        .collect::<Vec<_>>()
        .join(",");
    let stop = Arc::new(AtomicBool::new(false));
    let acked: Arc<Mutex<Held>> = Arc::default();
    let failed = Arc::new(Mutex::new(Vec::new()));
    let producing = {
        let (stop, acked, failed) = (stop.clone(), acked.clone(), failed.clone());
        tokio::spawn(async move {
            let producer: FutureProducer = wharf_testkit::producer(
                &bootstrap,
                &[
                    ("acks", "all"),
                    ("enable.idempotence", "true"),
                    ("message.timeout.ms", "120000"),
                    ("linger.ms", "5"),
                ],
            )
            .unwrap();
            let mut seq = 0u64;
            let mut inflight = Vec::new();
            while !stop.load(Ordering::Acquire) {
                let value = format!("m-{seq}");
                let partition = i32::try_from(seq % 6).unwrap();
                seq += 1;
                let delivery = producer
                    .send_result(
                        FutureRecord::<(), _>::to(TOPIC)
                            .partition(partition)
                            .payload(&value),
                    )
                    .map_err(|(e, _)| e)
                    .unwrap();
                inflight.push((value, delivery));
                if inflight.len() >= 30 {
                    settle(std::mem::take(&mut inflight), &acked, &failed).await;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
            settle(inflight, &acked, &failed).await;
        })
    };
    let acked_count = || lock(&acked).values().map(Vec::len).sum::<usize>();
    // Waits for `more` acknowledgements beyond `from` (the producer makes progress).
    let progress = |from: usize, more: usize, what: &str| {
        // Generous: a minute plus 20 ms a record (the opt-in long mode produces many).
        let deadline = Instant::now()
            + Duration::from_secs(60)
            + Duration::from_millis(u64::try_from(more).unwrap() * 20);
        while acked_count() < from + more {
            assert!(
                Instant::now() < deadline,
                "producing stalled {what}: {} acknowledged, failures: {:?}",
                acked_count(),
                lock(&failed).iter().take(3).collect::<Vec<_>>()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        acked_count()
    };
    // Enough data that the new node has a log to catch up on; `WHARF_MEMBERSHIP_RECORDS=N`
    // (opt-in) makes it N records.
    let records: usize = std::env::var("WHARF_MEMBERSHIP_RECORDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1500);
    let before_add = tokio::task::block_in_place(|| progress(0, records, "before the add"));

    // Node 4 starts empty with `cluster_join`: it initializes nothing and waits to be added.
    // Its `cluster_peers` names only itself: it learns the others from the membership the
    // cluster replicates to it (without the join rule it would make a cluster of its own).
    nodes.insert(4, start(4, &peers(&[4]), &[("cluster_join", "true")]));
    let admin2 = nodes[&2].admin_addr().unwrap();
    let address4 = format!("127.0.0.1:{}", ports[&4]);
    // Refused before any group changes: a node that is not a member, an address where
    // another node answers, an address where nothing answers, a node that made a cluster of
    // its own (started without `cluster_join`).
    let mut alone = start(5, &peers(&[5]), &[]);
    let address5 = format!("127.0.0.1:{}", ports[&5]);
    for (args, refusal) in [
        (
            vec!["add-node", "--id", "5", "--address", address5.as_str()],
            "belongs to another cluster",
        ),
        (vec!["remove-node", "--id", "9"], "not a member"),
        (
            vec!["add-node", "--id", "5", "--address", address4.as_str()],
            "is node 4, not node 5",
        ),
        (
            vec!["add-node", "--id", "4", "--address", "127.0.0.1:1"],
            "does not answer",
        ),
    ] {
        let out = Command::new(wharf_bin())
            .arg("cluster")
            .args(&args)
            .args(["--admin", &admin2])
            .env_remove("WHARF_ADMIN")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && stderr.contains(refusal),
            "{args:?}: {stderr}"
        );
    }
    assert!(alone.terminate().unwrap());
    let (acked_at_add, add_started) = (acked_count(), Instant::now());
    let added = {
        let admin2 = admin2.clone();
        tokio::task::spawn_blocking(move || {
            wharf_cluster(&admin2, &["add-node", "--id", "4", "--address", &address4])
        })
        .await
        .unwrap()
    };
    // Reported, not asserted: how much was acknowledged while the node caught up.
    eprintln!(
        "add-node took {:?}, {} records acknowledged meanwhile:\n{added}",
        add_started.elapsed(),
        acked_count() - acked_at_add
    );
    for group in ["controller", "shard 0", "shard 1", "shard 2"] {
        assert!(
            added
                .lines()
                .any(|l| l.starts_with(group) && l.trim_end().ends_with("1,2,3,4")),
            "{group} does not have voters 1,2,3,4:\n{added}"
        );
    }
    let after_add = tokio::task::block_in_place(|| {
        wait_for_membership(&nodes[&2].addr(), &[1, 2, 3, 4]);
        wait_for_membership(&nodes[&4].addr(), &[1, 2, 3, 4]);
        progress(before_add, 300, "after the add")
    });

    // The leader of partition 0 leaves (so a leader is removed), asked through the new node.
    let victim: u64 = tokio::task::block_in_place(|| leader_of_partition_0(&nodes[&2].addr()))
        .filter(|l| (1..=3).contains(l))
        .unwrap_or(1);
    let rest: Vec<u64> = [1, 2, 3, 4]
        .into_iter()
        .filter(|id| *id != victim)
        .collect();
    let rest_i32: Vec<i32> = rest.iter().map(|id| i32::try_from(*id).unwrap()).collect();
    let rest_list = rest
        .iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(",");
    let removed = {
        let admin4 = nodes[&4].admin_addr().unwrap();
        let victim = victim.to_string();
        tokio::task::spawn_blocking(move || {
            wharf_cluster(&admin4, &["remove-node", "--id", &victim])
        })
        .await
        .unwrap()
    };
    eprintln!("remove-node {victim} (led partition 0):\n{removed}");
    for group in ["controller", "shard 0", "shard 1", "shard 2"] {
        assert!(
            removed
                .lines()
                .any(|l| l.starts_with(group) && l.trim_end().ends_with(&rest_list)),
            "{group} does not have voters {rest_list}:\n{removed}"
        );
    }
    tokio::task::block_in_place(|| {
        for id in &rest {
            wait_for_membership(&nodes[id].addr(), &rest_i32);
        }
    });
    // `wharf cluster status` lists the members and each shard's replicas as raft has them
    // (merged over the three: a follower that has not received the last membership entry yet
    // still names the removed node among a shard's replicas, so it is polled).
    let admins = rest
        .iter()
        .map(|id| nodes[id].admin_addr().unwrap())
        .collect::<Vec<_>>()
        .join(",");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let status: serde_json::Value = serde_json::from_str(&tokio::task::block_in_place(|| {
            wharf_cluster(&admins, &["status", "--json"])
        }))
        .unwrap();
        let listed: Vec<u64> = status["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["node_id"].as_u64().unwrap())
            .collect();
        let replicas_ok = status["shards"]
            .as_array()
            .unwrap()
            .iter()
            .all(|shard| shard["replicas"] == serde_json::json!(rest));
        if listed == rest && replicas_ok {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "wharf cluster status does not show {rest:?}: {status}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // One cluster: every remaining node reports the same cluster id (a node that made a
    // cluster of its own keeps the id it committed there).
    let cluster_ids: BTreeSet<String> = rest
        .iter()
        .map(|id| {
            let admin = nodes[id].admin_addr().unwrap();
            crate::admin_http::get_json(&admin, "/v1/cluster")["cluster_id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(cluster_ids.len(), 1, "cluster ids: {cluster_ids:?}");
    // The removed node goes away; the three others keep serving.
    assert!(nodes.get_mut(&victim).unwrap().terminate().unwrap());
    let after_remove =
        tokio::task::block_in_place(|| progress(after_add, 300, "after the removal"));
    stop.store(true, Ordering::Release);
    producing.await.unwrap();
    assert!(
        lock(&failed).is_empty(),
        "deliveries failed: {:?}",
        lock(&failed).iter().take(5).collect::<Vec<_>>()
    );
    let acked = std::mem::take(&mut *lock(&acked));
    let total: usize = acked.values().map(Vec::len).sum();
    eprintln!(
        "acknowledged: {before_add} before the add, {after_add} after it, {after_remove} after \
         the removal, {total} in all"
    );

    // Every remaining node, the new one included, holds every acknowledged record once at its
    // offset, and the same records as the others.
    for id in &rest {
        assert!(nodes.get_mut(id).unwrap().terminate().unwrap());
    }
    let mut held_by: Vec<(u64, Held)> = Vec::new();
    for id in rest.iter().copied() {
        let alone = BrokerProcess::start(
            wharf_bin(),
            &dir.path().join(format!("n{id}")),
            &[("node_id", &id.to_string()), ("shards", SHARDS)],
        )
        .unwrap();
        let addr = alone.addr();
        let held = tokio::task::block_in_place(|| {
            (0..PARTITIONS)
                .map(|p| (p, read_partition(&addr, p)))
                .collect()
        });
        held_by.push((id, held));
    }
    let (first_id, first) = &held_by[0];
    for (id, held) in &held_by {
        for (partition, records) in &acked {
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
        assert_eq!(
            held, first,
            "node {id} holds other records than node {first_id}"
        );
    }
}

#[test]
fn membership_changes_refuse_bad_requests() {
    // A single node has no cluster: the routes say so instead of changing anything.
    let (_dir, broker) = crate::start_broker(&[]);
    let admin = broker.admin_addr().unwrap();
    let out = Command::new(wharf_bin())
        .args(["cluster", "remove-node", "--id", "2", "--admin", &admin])
        .env_remove("WHARF_ADMIN")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not in a cluster"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
