//! The engine against a real broker on a temporary directory: delivery at the due time with
//! the record's fields, refusal of bad delays, normal topics untouched, restarts (overdue
//! delivery, a delivery whose tombstone was lost, a diverted idempotent batch).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use wharf_record::{BatchBuilder, BatchHeader, RecordIter};
use wharf_storage::Durability;

use super::records::{encode_key, encode_value};
use super::{Entry, SCHEDULED_TOPIC};
use crate::producer::now_ms;
use crate::{Acks, Broker, BrokerConfig, BrokerError, StorageConfig, TopicSpec};

type Headers<'a> = Vec<(&'a [u8], Option<&'a [u8]>)>;
type OwnedHeaders = Vec<(Vec<u8>, Option<Vec<u8>>)>;

fn open(dir: &std::path::Path) -> Arc<Broker> {
    let mut sc = StorageConfig::new(dir);
    sc.shards = 1;
    let config = BrokerConfig {
        max_delay_ms: 10_000,
        ..BrokerConfig::default()
    };
    Broker::open(config, sc).unwrap()
}

fn create(b: &Broker, name: &str, message_type: &str) {
    let spec = TopicSpec {
        name: name.into(),
        partitions: 1,
        replication_factor: 1,
        configs: BTreeMap::from([("wharf.message.type".to_string(), message_type.to_string())]),
    };
    b.create_topic(&spec, false).unwrap();
}

fn batch(key: &[u8], headers: &[(&[u8], Option<&[u8]>)], timestamp: i64) -> Bytes {
    let mut builder = BatchBuilder::new(timestamp);
    builder.push(Some(key), Some(b"value"), headers, timestamp);
    Bytes::from(builder.build())
}

/// `(key, headers, timestamp)` of every record of `topic`[0].
fn records(b: &Broker, topic: &str) -> Vec<(Vec<u8>, OwnedHeaders, i64)> {
    let p = b.partition(topic, 0).unwrap();
    let read = p.log.read(0, 1 << 20).unwrap();
    let mut out = Vec::new();
    for range in wharf_record::split_batches(&read.records).unwrap() {
        let h = BatchHeader::parse(&read.records[range]).unwrap();
        for r in RecordIter::new(&h).unwrap() {
            let r = r.unwrap();
            let headers = r
                .headers
                .iter()
                .map(|(n, v)| (n.to_vec(), v.map(<[u8]>::to_vec)))
                .collect();
            out.push((r.key.unwrap().to_vec(), headers, r.timestamp));
        }
    }
    out
}

async fn wait_for_count(b: &Broker, topic: &str, count: i64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while b.partition(topic, 0).unwrap().log.high_watermark() < count {
        assert!(
            Instant::now() < deadline,
            "{topic} never reached {count} records"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn delayed_record_arrives_at_its_due_time_with_its_fields() {
    let dir = tempfile::tempdir().unwrap();
    let b = open(dir.path());
    create(&b, "d", "delay");
    let sent = Instant::now();
    let headers: Headers<'_> = vec![(b"wharf-delay-ms", Some(b"400")), (b"app", Some(b"x"))];
    let ack = b
        .produce("d", 0, batch(b"k", &headers, 1_234), Acks::All)
        .await
        .unwrap();
    assert_eq!(ack.base_offset, -1);
    assert_eq!(b.scheduler().waiting("d").0, 1);
    assert_eq!(b.partition("d", 0).unwrap().log.high_watermark(), 0);
    wait_for_count(&b, "d", 1).await;
    assert!(
        sent.elapsed() >= Duration::from_millis(400),
        "delivered early"
    );
    let got = records(&b, "d");
    assert_eq!(got.len(), 1);
    let (key, headers, timestamp) = &got[0];
    assert_eq!((key.as_slice(), *timestamp), (&b"k"[..], 1_234));
    assert!(headers.contains(&(b"app".to_vec(), Some(b"x".to_vec()))));
    assert!(headers.contains(&(b"wharf-delay-ms".to_vec(), Some(b"400".to_vec()))));
    assert!(headers.iter().any(|(n, _)| n == b"wharf-delayed-from"));
    // A record is visible once written and settled once its append is durable (ADR 0017):
    // the waiting count drops right after.
    let deadline = Instant::now() + Duration::from_secs(10);
    while b.scheduler().waiting("d").0 != 0 {
        assert!(
            Instant::now() < deadline,
            "the delivered record stays waiting"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn records_without_a_pending_delay_are_appended_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let b = open(dir.path());
    create(&b, "d", "delay");
    let past = (now_ms() - 1_000).to_string();
    for (i, headers) in [
        Vec::new(),
        vec![(&b"wharf-deliver-at"[..], Some(past.as_bytes()))],
        vec![(&b"wharf-delay-ms"[..], Some(&b"0"[..]))],
    ]
    .into_iter()
    .enumerate()
    {
        let ack = b
            .produce("d", 0, batch(b"k", &headers, 1), Acks::All)
            .await
            .unwrap();
        assert_eq!(ack.base_offset, i as i64);
    }
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_delays_fail_with_invalid_record_and_store_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let b = open(dir.path());
    create(&b, "d", "delay");
    for value in [&b"-1"[..], b"10001", b"soon"] {
        let headers: Headers<'_> = vec![(b"wharf-delay-ms", Some(value))];
        let result = b.produce("d", 0, batch(b"k", &headers, 1), Acks::All).await;
        assert!(
            matches!(result, Err(BrokerError::InvalidRecord { .. })),
            "{value:?}: {result:?}"
        );
    }
    assert_eq!(b.scheduler().waiting("d").0, 0);
    assert_eq!(
        b.partition(SCHEDULED_TOPIC, 0)
            .unwrap()
            .log
            .high_watermark(),
        0
    );
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_normal_topic_ignores_wharf_headers() {
    let dir = tempfile::tempdir().unwrap();
    let b = open(dir.path());
    create(&b, "n", "normal");
    let headers: Headers<'_> = vec![
        (b"wharf-delay-ms", Some(b"5000")),
        (b"wharf-txn", Some(b"bogus")),
    ];
    let ack = b
        .produce("n", 0, batch(b"k", &headers, 1), Acks::All)
        .await
        .unwrap();
    assert_eq!(ack.base_offset, 0);
    let got = records(&b, "n");
    assert_eq!(got[0].1.len(), 2, "headers kept as sent");
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_delay_that_fell_due_while_stopped_is_delivered_after_start() {
    let dir = tempfile::tempdir().unwrap();
    {
        let b = open(dir.path());
        create(&b, "d", "delay");
        let headers: Headers<'_> = vec![(b"wharf-delay-ms", Some(b"300"))];
        b.produce("d", 0, batch(b"k", &headers, 1), Acks::All)
            .await
            .unwrap();
        b.shutdown().await;
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    let b = open(dir.path());
    wait_for_count(&b, "d", 1).await;
    b.shutdown().await;
}

/// A crash after a delivery and before its tombstone: simulated by writing the delivered
/// record's entry again. The restarted engine must recognise it as delivered.
#[tokio::test(flavor = "multi_thread")]
async fn a_delivery_missing_its_tombstone_is_not_repeated() {
    let dir = tempfile::tempdir().unwrap();
    {
        let b = open(dir.path());
        create(&b, "d", "delay");
        for key in [&b"a"[..], b"b"] {
            let headers: Headers<'_> = vec![(b"wharf-delay-ms", Some(b"50"))];
            b.produce("d", 0, batch(key, &headers, 1), Acks::All)
                .await
                .unwrap();
        }
        wait_for_count(&b, "d", 2).await;
        // Both were delivered together in one engine batch (or the last one alone); the
        // entry of key "b" (id 1) comes back as if its tombstone were lost.
        let entry = Entry {
            id: 1,
            due_ms: 0,
            topic: "d".into(),
            partition: 0,
            timestamp: 1,
            key: Some(b"b".to_vec()),
            value: Some(b"value".to_vec()),
            headers: Vec::new(),
            origin: None,
            half: None,
        };
        let mut builder = BatchBuilder::new(1);
        builder.push(Some(&encode_key(1)), Some(&encode_value(&entry)), &[], 1);
        let log = b.partition(SCHEDULED_TOPIC, 0).unwrap().log;
        log.submit(builder.build().into(), Durability::Synced)
            .unwrap()
            .wait()
            .await
            .unwrap();
        b.shutdown().await;
    }
    let b = open(dir.path());
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        b.partition("d", 0).unwrap().log.high_watermark(),
        2,
        "delivered twice"
    );
    assert_eq!(b.scheduler().waiting("d").0, 0);
    b.shutdown().await;
}

fn idempotent(key: &[u8], headers: &[(&[u8], Option<&[u8]>)], seq: i32) -> Bytes {
    let mut builder = BatchBuilder::new(1).producer(5, 0, seq);
    builder.push(Some(key), Some(b"v"), headers, 1);
    Bytes::from(builder.build())
}

/// An idempotent producer's diverted batch advances its sequence, a retry of it is not
/// scheduled twice, and after a restart without a producer snapshot the next sequence is
/// still accepted.
#[tokio::test(flavor = "multi_thread")]
async fn a_diverted_idempotent_batch_keeps_the_producer_sequence() {
    let dir = tempfile::tempdir().unwrap();
    let delayed: Headers<'_> = vec![(b"wharf-delay-ms", Some(b"9000"))];
    {
        let b = open(dir.path());
        create(&b, "d", "delay");
        b.produce("d", 0, idempotent(b"a", &[], 0), Acks::All)
            .await
            .unwrap();
        b.produce("d", 0, idempotent(b"b", &delayed, 1), Acks::All)
            .await
            .unwrap();
        b.produce("d", 0, idempotent(b"b", &delayed, 1), Acks::All)
            .await
            .unwrap();
        assert_eq!(
            b.scheduler().waiting("d").0,
            1,
            "a retry was scheduled again"
        );
        b.shutdown().await;
    }
    std::fs::remove_file(dir.path().join("producer_state.json")).unwrap();
    let b = open(dir.path());
    let next = b.produce("d", 0, idempotent(b"c", &[], 2), Acks::All).await;
    assert_eq!(next.unwrap().base_offset, 1);
    b.shutdown().await;
}

fn create_with(b: &Broker, name: &str, configs: &[(&str, &str)]) {
    let spec = TopicSpec {
        name: name.into(),
        partitions: 1,
        replication_factor: 1,
        configs: configs
            .iter()
            .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
            .collect(),
    };
    b.create_topic(&spec, false).unwrap();
}

/// The same `wharf-msg-id` three times within the window is stored once (the repeats are
/// answered with the first offset), also after a restart; after the window it is stored
/// again.
#[tokio::test(flavor = "multi_thread")]
async fn a_message_id_is_stored_once_within_the_window() {
    let dir = tempfile::tempdir().unwrap();
    let id: Headers<'_> = vec![(b"wharf-msg-id", Some(b"m-1"))];
    let other: Headers<'_> = vec![(b"wharf-msg-id", Some(b"m-2"))];
    {
        let b = open(dir.path());
        create_with(&b, "u", &[("wharf.dedup.window.ms", "1500")]);
        for expected in [0, 0, 0] {
            let ack = b
                .produce("u", 0, batch(b"k", &id, now_ms()), Acks::All)
                .await;
            assert_eq!(ack.unwrap().base_offset, expected);
        }
        let ack = b
            .produce("u", 0, batch(b"k", &other, now_ms()), Acks::All)
            .await;
        assert_eq!(ack.unwrap().base_offset, 1);
        b.shutdown().await;
    }
    let b = open(dir.path());
    let ack = b
        .produce("u", 0, batch(b"k", &id, now_ms()), Acks::All)
        .await;
    assert_eq!(ack.unwrap().base_offset, 0, "stored again after a restart");
    assert_eq!(b.partition("u", 0).unwrap().log.high_watermark(), 2);
    tokio::time::sleep(Duration::from_millis(1_600)).await;
    let ack = b
        .produce("u", 0, batch(b"k", &id, now_ms()), Acks::All)
        .await;
    assert_eq!(
        ack.unwrap().base_offset,
        2,
        "not stored again after the window"
    );
    b.shutdown().await;
}

/// On a delay topic with a window, a duplicate of a waiting record is not scheduled again,
/// and a batch mixing a new and a repeated id delivers only the new one.
#[tokio::test(flavor = "multi_thread")]
async fn duplicates_of_waiting_and_mixed_records_are_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let b = open(dir.path());
    create_with(
        &b,
        "du",
        &[
            ("wharf.message.type", "delay"),
            ("wharf.dedup.window.ms", "60000"),
        ],
    );
    let waiting: Headers<'_> = vec![
        (b"wharf-msg-id", Some(b"a")),
        (b"wharf-delay-ms", Some(b"200")),
    ];
    for _ in 0..2 {
        b.produce("du", 0, batch(b"a", &waiting, now_ms()), Acks::All)
            .await
            .unwrap();
    }
    assert_eq!(b.scheduler().waiting("du").0, 1);
    let mut mixed = BatchBuilder::new(now_ms());
    mixed.push(Some(b"a"), None, &[(b"wharf-msg-id", Some(b"a"))], now_ms());
    mixed.push(Some(b"b"), None, &[(b"wharf-msg-id", Some(b"b"))], now_ms());
    b.produce("du", 0, Bytes::from(mixed.build()), Acks::All)
        .await
        .unwrap();
    wait_for_count(&b, "du", 2).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let keys: Vec<Vec<u8>> = records(&b, "du").into_iter().map(|r| r.0).collect();
    assert_eq!(keys.len(), 2);
    assert!(keys.contains(&b"a".to_vec()) && keys.contains(&b"b".to_vec()));
    b.shutdown().await;
}

/// The window is per topic: the same id sent to another partition is not stored again, and
/// a re-created topic of the same name starts with an empty window.
#[tokio::test(flavor = "multi_thread")]
async fn the_dedup_window_spans_the_topic_not_the_partition() {
    let dir = tempfile::tempdir().unwrap();
    let b = open(dir.path());
    let spec = TopicSpec {
        name: "u2".into(),
        partitions: 2,
        replication_factor: 1,
        configs: BTreeMap::from([("wharf.dedup.window.ms".to_string(), "60000".to_string())]),
    };
    b.create_topic(&spec, false).unwrap();
    let id: Headers<'_> = vec![(b"wharf-msg-id", Some(b"x"))];
    let first = b
        .produce("u2", 0, batch(b"k", &id, now_ms()), Acks::All)
        .await;
    assert_eq!(first.unwrap().base_offset, 0);
    let again = b
        .produce("u2", 1, batch(b"k", &id, now_ms()), Acks::All)
        .await;
    assert_eq!(again.unwrap().base_offset, 0, "answered with the original");
    assert_eq!(b.partition("u2", 1).unwrap().log.high_watermark(), 0);
    b.delete_topic("u2").unwrap();
    b.create_topic(&spec, false).unwrap();
    let fresh = b
        .produce("u2", 1, batch(b"k", &id, now_ms()), Acks::All)
        .await;
    assert_eq!(fresh.unwrap().base_offset, 0);
    assert_eq!(b.partition("u2", 1).unwrap().log.high_watermark(), 1);
    b.shutdown().await;
}

/// A produce whose store in `__wharf_scheduled` is refused (the shard is poisoned by a
/// failed fdatasync) leaves nothing waiting: the record must not be delivered after the
/// client was told it failed.
#[tokio::test(flavor = "multi_thread")]
async fn a_refused_store_leaves_nothing_waiting() {
    let dir = tempfile::tempdir().unwrap();
    let fs = Arc::new(wharf_storage::sim::SimFs::new(dir.path()));
    let mut sc = StorageConfig::new(dir.path());
    sc.shards = 1;
    sc.fs = fs.clone();
    // `fail_sync` counts fdatasyncs: the storage filler's would race the writer's.
    sc.preallocate_bytes = 0;
    let b = Broker::open(BrokerConfig::default(), sc).unwrap();
    create(&b, "d", "delay");
    fs.fail_sync(1);
    let poisoning = b.produce("d", 0, batch(b"x", &[], 1), Acks::All).await;
    assert!(poisoning.is_err(), "the failed fdatasync poisons the shard");
    let headers: Headers<'_> = vec![(b"wharf-delay-ms", Some(b"100"))];
    let refused = b.produce("d", 0, batch(b"k", &headers, 1), Acks::All).await;
    assert!(refused.is_err());
    assert_eq!(
        b.scheduler().waiting("d").0,
        0,
        "a refused record still waits"
    );
}

/// While a shard is poisoned nothing is delivered: a store that failed after its records
/// were indexed must not reach the partition. (Placement of logs on shards is a stable hash
/// of their ids, so which shard `other` poisons is the same on every run; the test fails
/// without the check because it is not the shard of `d`.)
#[tokio::test(flavor = "multi_thread")]
async fn nothing_is_delivered_while_a_shard_is_poisoned() {
    let dir = tempfile::tempdir().unwrap();
    let fs = Arc::new(wharf_storage::sim::SimFs::new(dir.path()));
    let mut sc = StorageConfig::new(dir.path());
    sc.shards = 2;
    sc.fs = fs.clone();
    // `fail_sync` counts fdatasyncs: the storage filler's would race the writer's.
    sc.preallocate_bytes = 0;
    let b = Broker::open(BrokerConfig::default(), sc).unwrap();
    create(&b, "d", "delay");
    create_with(&b, "other", &[]);
    let headers: Headers<'_> = vec![(b"wharf-delay-ms", Some(b"300"))];
    b.produce("d", 0, batch(b"k", &headers, 1), Acks::All)
        .await
        .unwrap();
    fs.fail_sync(1);
    let poisoning = b.produce("other", 0, batch(b"x", &[], 1), Acks::All).await;
    assert!(poisoning.is_err());
    assert_eq!(b.storage().poisoned_shards().len(), 1);
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(
        b.partition("d", 0).unwrap().log.high_watermark(),
        0,
        "delivered while poisoned"
    );
    assert_eq!(b.scheduler().waiting("d").0, 1);
}

/// A cluster view the test moves: node 1 (this one) or another node leads every shard, in
/// `term`.
pub(crate) struct Moving {
    pub(crate) leader: std::sync::atomic::AtomicI32,
    pub(crate) term: std::sync::atomic::AtomicU64,
}

impl Moving {
    pub(crate) fn led_by(leader: i32, term: u64) -> Arc<Self> {
        Arc::new(Self {
            leader: leader.into(),
            term: term.into(),
        })
    }

    pub(crate) fn set(&self, leader: i32, term: u64) {
        use std::sync::atomic::Ordering;
        self.leader.store(leader, Ordering::Release);
        self.term.store(term, Ordering::Release);
    }
}

impl crate::cluster::ClusterView for Moving {
    fn node_id(&self) -> i32 {
        1
    }

    fn nodes(&self) -> Vec<crate::cluster::NodeAddress> {
        vec![crate::cluster::NodeAddress {
            id: 1,
            host: "127.0.0.1".into(),
            port: 9092,
        }]
    }

    fn shard(&self, _shard: usize) -> crate::cluster::ShardRole {
        use std::sync::atomic::Ordering;
        crate::cluster::ShardRole {
            leader: Some(self.leader.load(Ordering::Acquire)),
            leader_epoch: i32::try_from(self.term.load(Ordering::Acquire)).unwrap(),
            replicas: vec![1, 2, 3],
            isr: vec![1, 2, 3],
        }
    }

    fn controller(&self) -> Option<i32> {
        Some(1)
    }
}

/// Appends a waiting record for `d`[0] with `id`, due at once, to `__wharf_scheduled` the
/// way replication brings another leader's writes.
async fn replicated_entry(b: &Broker, id: u64, key: &[u8]) {
    let entry = Entry {
        id,
        due_ms: 0,
        topic: "d".into(),
        partition: 0,
        timestamp: 1,
        key: Some(key.to_vec()),
        value: Some(b"value".to_vec()),
        headers: Vec::new(),
        origin: None,
        half: None,
    };
    let mut builder = BatchBuilder::new(1);
    builder.push(Some(&encode_key(id)), Some(&encode_value(&entry)), &[], 1);
    let log = b.partition(SCHEDULED_TOPIC, 0).unwrap().log;
    log.submit(builder.build().into(), Durability::Synced)
        .unwrap()
        .wait()
        .await
        .unwrap();
}

async fn become_leader(b: &Arc<Broker>, term: u64) {
    let (b, runtime) = (b.clone(), tokio::runtime::Handle::current());
    tokio::task::spawn_blocking(move || b.become_leader(0, term, &runtime))
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn only_the_leader_of_the_scheduled_shard_delivers_and_a_new_leader_reloads_what_others_stored(
) {
    let dir = tempfile::tempdir().unwrap();
    let b = open(dir.path());
    create(&b, "d", "delay");
    // Stored while this node served the shard alone, due 300 ms later.
    let headers: Headers<'_> = vec![(b"wharf-delay-ms", Some(b"300"))];
    b.produce("d", 0, batch(b"mine", &headers, 1), Acks::All)
        .await
        .unwrap();
    let view = Moving::led_by(2, 1);
    b.set_cluster_view(view.clone());
    // Another node leads: a delayed record is refused here, and neither the record that
    // fell due nor what another leader stored is delivered from here.
    let refused = b.produce("d", 0, batch(b"k", &headers, 1), Acks::All).await;
    assert!(
        matches!(
            refused,
            Err(BrokerError::Storage(
                wharf_storage::StorageError::NotLeader { .. }
            ))
        ),
        "{refused:?}"
    );
    replicated_entry(&b, 7, b"other").await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(
        b.partition("d", 0).unwrap().log.high_watermark(),
        0,
        "a follower delivers nothing"
    );
    // This node wins the shard: it reloads the schedule and delivers each record once.
    view.set(1, 2);
    become_leader(&b, 2).await;
    wait_for_count(&b, "d", 2).await;
    let mut keys: Vec<Vec<u8>> = records(&b, "d").into_iter().map(|r| r.0).collect();
    keys.sort();
    assert_eq!(keys, vec![b"mine".to_vec(), b"other".to_vec()]);
    // It loses the shard: a record stored meanwhile waits for the next leader.
    view.set(2, 3);
    b.step_down(0);
    replicated_entry(&b, 8, b"later").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(b.partition("d", 0).unwrap().log.high_watermark(), 2);
    // Back as leader in a later term: delivered, and the first ones not again.
    view.set(1, 4);
    become_leader(&b, 4).await;
    wait_for_count(&b, "d", 3).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let keys: Vec<Vec<u8>> = records(&b, "d").into_iter().map(|r| r.0).collect();
    assert_eq!(keys.len(), 3, "each record once: {keys:?}");
    assert_eq!(keys[2], b"later");
    b.shutdown().await;
}
