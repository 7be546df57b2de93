//! The pure cursor (acquire, ack, expiry, backoff, delivery limit, in-flight cap), the byte
//! layout of its records, and the driver against a real broker on a temporary directory:
//! restarts keep acknowledgements and delivery counts, and the dead-letter step writes each
//! archived record once even when a restart comes between the write and its record.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use wharf_record::{BatchBuilder, BatchHeader, RecordIter};

use super::core::{AckType, BatchKind, Cursor, CursorConfig, SlotState, StartFrom};
use super::records::{decode_key, decode_value, encode_key, encode_value};
use super::{AcquiredRange, ArchivedRecord, CursorKey, DeadLetterStep, DeadRecord};
use crate::{Acks, Broker, BrokerConfig, StorageConfig, TopicSpec};

fn config() -> CursorConfig {
    CursorConfig {
        lock_ms: 1_000,
        delivery_limit: 3,
        retry_backoff_ms: vec![100, 500],
        max_in_flight: 10,
        start: StartFrom::Earliest,
        read_committed: false,
    }
}

fn range(first: i64, last: i64, delivery_count: u16) -> AcquiredRange {
    AcquiredRange {
        first,
        last,
        delivery_count,
    }
}

#[test]
fn accepted_records_move_the_start_and_are_not_delivered_again() {
    let cfg = config();
    let mut c = Cursor::new(0);
    assert_eq!(
        c.acquire_new(0, 4, BatchKind::Data, "a", 0, &cfg),
        vec![range(0, 4, 1)]
    );
    c.ack("a", 0, 1, AckType::Accept, 10, &cfg).unwrap();
    assert_eq!(c.start(), 2);
    assert!(c.available(10_000, 100).is_empty());
    // Offsets held by `a` cannot be settled by `b`, nor accepted twice.
    assert!(c.ack("b", 2, 2, AckType::Accept, 10, &cfg).is_err());
    assert!(c.ack("a", 0, 0, AckType::Accept, 10, &cfg).is_err());
    assert_eq!(c.totals().accepted, 2);
}

#[test]
fn released_records_come_back_after_the_backoff_for_their_delivery_count() {
    let cfg = config();
    let mut c = Cursor::new(0);
    c.acquire_new(0, 0, BatchKind::Data, "a", 0, &cfg);
    c.ack("a", 0, 0, AckType::Release, 1_000, &cfg).unwrap();
    assert!(c.available(1_099, 10).is_empty(), "first backoff is 100 ms");
    assert_eq!(c.available(1_100, 10), vec![0]);
    assert_eq!(
        c.acquire_available(&[0], "b", 1_100, &cfg),
        vec![range(0, 0, 2)]
    );
    c.ack("b", 0, 0, AckType::Release, 2_000, &cfg).unwrap();
    assert!(
        c.available(2_499, 10).is_empty(),
        "second backoff is 500 ms"
    );
    assert_eq!(c.available(2_500, 10), vec![0]);
    assert_eq!(CursorConfig::default().backoff_ms(7), 0, "empty: at once");
    assert_eq!(cfg.backoff_ms(9), 500, "the last value repeats");
}

#[test]
fn the_delivery_limit_archives_and_reject_archives_at_once() {
    let cfg = config();
    let mut c = Cursor::new(0);
    c.acquire_new(0, 1, BatchKind::Data, "a", 0, &cfg);
    let archived = c.ack("a", 1, 1, AckType::Reject, 0, &cfg).unwrap();
    assert_eq!(archived.len(), 1);
    let mut now = 0;
    for delivery in 1..=3u16 {
        if delivery > 1 {
            now += 1_000;
            assert_eq!(
                c.acquire_available(&c.available(now, 10), "a", now, &cfg),
                vec![range(0, 0, delivery)]
            );
        }
        let archived = c.ack("a", 0, 0, AckType::Release, now, &cfg).unwrap();
        assert_eq!(archived.is_empty(), delivery < 3, "delivery {delivery}");
    }
    assert!(c.available(i64::MAX, 10).is_empty());
    assert_eq!(c.start(), 2);
    assert_eq!(
        c.dead_pending().map(|(o, _)| o).collect::<Vec<_>>(),
        vec![0, 1]
    );
    c.end_dead_letter(&[0, 1], true);
    assert_eq!(c.totals().dead_lettered, 2);
    assert_eq!(c.totals().archived, 2);
}

#[test]
fn an_expired_lock_makes_the_record_available_again() {
    let cfg = config();
    let mut c = Cursor::new(0);
    c.acquire_new(0, 2, BatchKind::Data, "a", 0, &cfg);
    assert!(c.expire(999, &cfg).is_empty());
    assert!(c.available(999, 10).is_empty());
    c.expire(1_000, &cfg);
    assert_eq!(c.totals().lock_expiries, 3);
    assert_eq!(c.available(1_100, 10), vec![0, 1, 2]);
    assert!(
        c.ack("a", 0, 0, AckType::Accept, 1_100, &cfg).is_err(),
        "a lock that expired cannot be acknowledged"
    );
}

#[test]
fn the_in_flight_cap_bounds_new_records_and_gaps_are_done() {
    let cfg = config();
    let mut c = Cursor::new(0);
    c.acquire_new(0, 7, BatchKind::Data, "a", 0, &cfg);
    assert_eq!(c.room(&cfg), 2);
    c.acquire_new(8, 8, BatchKind::Skip, "a", 0, &cfg);
    assert_eq!(c.room(&cfg), 2, "a gap holds no lock");
    c.ack("a", 0, 3, AckType::Accept, 0, &cfg).unwrap();
    assert_eq!(c.room(&cfg), 6, "accepted records free their locks");
    c.ack("a", 4, 7, AckType::Accept, 0, &cfg).unwrap();
    assert_eq!((c.start(), c.next()), (9, 9));
    assert_eq!(c.room(&cfg), 10);
}

#[test]
fn a_consumer_that_leaves_gives_its_locks_back() {
    let cfg = config();
    let mut c = Cursor::new(5);
    c.acquire_new(5, 6, BatchKind::Data, "a", 0, &cfg);
    c.acquire_new(7, 7, BatchKind::Data, "b", 0, &cfg);
    c.release_consumer("a", 10, &cfg);
    assert_eq!(c.available(200, 10), vec![5, 6]);
    assert!(matches!(
        c.slots().find(|(o, _)| *o == 7).map(|(_, s)| &s.state),
        Some(SlotState::Acquired { .. })
    ));
}

#[test]
fn available_count_excludes_settled_offsets_behind_an_unsettled_one() {
    let cfg = config();
    let mut c = Cursor::new(0);
    c.acquire_new(0, 4, BatchKind::Data, "a", 0, &cfg);
    // 0 stays acquired; 1 and 2 are acknowledged behind it; 3 is released; 4 stays acquired.
    c.ack("a", 1, 2, AckType::Accept, 0, &cfg).unwrap();
    c.ack("a", 3, 3, AckType::Release, 0, &cfg).unwrap();
    assert_eq!((c.start(), c.next()), (0, 5));
    assert_eq!(
        c.in_flight() - c.acquired_count(),
        3,
        "the window holds 3 not acquired"
    );
    assert_eq!(
        c.available_count(),
        1,
        "only the released offset 3 is available"
    );
    c.acquire_available(&c.available(100, 10), "b", 100, &cfg);
    assert_eq!(c.available_count(), 0);
}

#[test]
fn purge_settles_what_is_not_acquired_and_keeps_locks() {
    let cfg = config();
    let mut c = Cursor::new(0);
    c.acquire_new(0, 2, BatchKind::Data, "a", 0, &cfg);
    c.ack("a", 1, 1, AckType::Release, 0, &cfg).unwrap();
    // 0 and 2 acquired, 1 available, 3..10 never acquired.
    assert_eq!(c.purge_available(10), 8);
    assert_eq!((c.start(), c.next(), c.acquired_count()), (0, 10, 2));
    assert_eq!(c.available_count(), 0);
    assert_eq!(c.available(1_000, 10), Vec::<i64>::new());
    c.ack("a", 0, 0, AckType::Accept, 0, &cfg).unwrap();
    c.ack("a", 2, 2, AckType::Release, 0, &cfg).unwrap();
    assert_eq!(c.available(1_000, 10), vec![2]);
    c.acquire_available(&[2], "a", 1_000, &cfg);
    c.ack("a", 2, 2, AckType::Accept, 1_000, &cfg).unwrap();
    assert_eq!((c.start(), c.next(), c.in_flight()), (10, 10, 0));
    // Nothing acquired: the cursor just moves.
    assert_eq!(c.purge_available(15), 5);
    assert_eq!((c.start(), c.next(), c.in_flight()), (15, 15, 0));
}

#[test]
fn stored_cursors_round_trip_and_locks_become_available() {
    let cfg = config();
    let mut c = Cursor::new(10);
    c.acquire_new(10, 14, BatchKind::Data, "a", 0, &cfg);
    c.ack("a", 11, 11, AckType::Accept, 0, &cfg).unwrap();
    c.ack("a", 12, 12, AckType::Release, 0, &cfg).unwrap();
    c.ack("a", 13, 13, AckType::Reject, 0, &cfg).unwrap();
    let key = CursorKey::new("g", "t", 3);
    assert_eq!(decode_key(&encode_key(&key)).unwrap(), key);
    let bytes = encode_value(&c);
    let back = decode_value(&bytes).unwrap();
    assert_eq!((back.start(), back.next()), (10, 15));
    assert_eq!(back.totals(), c.totals());
    assert_eq!(back.available(0, 10), vec![10, 14], "locks are not kept");
    assert_eq!(back.available(100, 10), vec![10, 12, 14]);
    assert_eq!(back.dead_pending().count(), 1);
    for cut in 0..bytes.len() {
        assert!(decode_value(&bytes[..cut]).is_err(), "cut at {cut}");
    }
}

// ---- the driver, against a real broker ----

fn open(dir: &std::path::Path) -> Arc<Broker> {
    let mut sc = StorageConfig::new(dir);
    sc.shards = 1;
    Broker::open(BrokerConfig::default(), sc).unwrap()
}

fn create(b: &Broker, name: &str) {
    let spec = TopicSpec {
        name: name.into(),
        partitions: 1,
        replication_factor: 1,
        configs: BTreeMap::new(),
    };
    b.create_topic(&spec, false).unwrap();
}

async fn produce(b: &Broker, topic: &str, values: &[&str]) {
    for v in values {
        let mut builder = BatchBuilder::new(0);
        builder.push(Some(b"k"), Some(v.as_bytes()), &[(b"h", Some(b"x"))], 0);
        b.produce(topic, 0, Bytes::from(builder.build()), Acks::All)
            .await
            .unwrap();
    }
}

/// (value, headers) of every record of `topic`[0].
type Stored = Vec<(Vec<u8>, Vec<(String, Vec<u8>)>)>;

fn records(b: &Broker, topic: &str) -> Stored {
    let Ok(p) = b.partition(topic, 0) else {
        return Vec::new();
    };
    let read = p.log.read(0, 1 << 20).unwrap();
    let mut out = Vec::new();
    for r in wharf_record::split_batches(&read.records).unwrap() {
        let h = BatchHeader::parse(&read.records[r]).unwrap();
        for rec in RecordIter::new(&h).unwrap() {
            let rec = rec.unwrap();
            out.push((
                rec.value.unwrap_or_default().to_vec(),
                rec.headers
                    .iter()
                    .map(|(n, v)| {
                        (
                            String::from_utf8(n.to_vec()).unwrap(),
                            v.unwrap_or_default().to_vec(),
                        )
                    })
                    .collect(),
            ));
        }
    }
    out
}

/// Writes archived records to `dlq` with an `offset` header.
struct TestStep;

impl DeadLetterStep for TestStep {
    fn topic(&self, _: &CursorKey) -> Option<String> {
        Some("dlq".into())
    }
    fn record(&self, a: &ArchivedRecord) -> DeadRecord {
        let r = a.record.clone().unwrap();
        let mut headers = r.headers;
        headers.push((b"offset".to_vec(), Some(a.offset.to_string().into_bytes())));
        DeadRecord {
            key: r.key,
            value: r.value,
            headers,
        }
    }
    fn written_for(&self, headers: &[(&[u8], Option<&[u8]>)], _: &CursorKey, offset: i64) -> bool {
        headers
            .iter()
            .any(|(n, v)| *n == b"offset" && *v == Some(offset.to_string().as_bytes()))
    }
}

async fn wait_for(b: &Broker, topic: &str, n: usize) -> Stored {
    for _ in 0..200 {
        let r = records(b, topic);
        if r.len() >= n {
            return r;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    records(b, topic)
}

#[tokio::test(flavor = "multi_thread")]
async fn acknowledgements_and_delivery_counts_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let key = CursorKey::new("g", "t", 0);
    let cfg = CursorConfig {
        retry_backoff_ms: vec![],
        ..config()
    };
    {
        let b = open(dir.path());
        create(&b, "t");
        produce(&b, "t", &["a", "b", "c", "d"]).await;
        let got = b
            .cursor_acquire(&key, &cfg, "m1", 3, 1 << 20)
            .await
            .unwrap();
        assert_eq!(
            got.ranges,
            vec![range(0, 0, 1), range(1, 1, 1), range(2, 2, 1)]
        );
        assert!(!got.records.is_empty());
        let results = b
            .cursor_ack(
                &key,
                &cfg,
                "m1",
                &[
                    (0, 0, AckType::Accept),
                    (1, 1, AckType::Release),
                    (3, 3, AckType::Accept),
                ],
            )
            .await
            .unwrap();
        assert!(results[0].is_ok() && results[1].is_ok() && results[2].is_err());
        b.shutdown().await;
    }
    let b = open(dir.path());
    let got = b
        .cursor_acquire(&key, &cfg, "m2", 10, 1 << 20)
        .await
        .unwrap();
    // 0 accepted: never again; 1 released and 2 locked before the restart: back, counted;
    // 3 never delivered: delivered now for the first time.
    assert_eq!(got.ranges, vec![range(1, 2, 2), range(3, 3, 1)]);
    let view = b.cursors().view(&key).await.unwrap();
    assert_eq!((view.start, view.next, view.acquired), (1, 4, 3));
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn archived_records_are_dead_lettered_once() {
    let dir = tempfile::tempdir().unwrap();
    let key = CursorKey::new("g", "t", 0);
    let cfg = config();
    let b = open(dir.path());
    b.cursors().register_dead_letter("g", Arc::new(TestStep));
    create(&b, "t");
    produce(&b, "t", &["a", "b"]).await;
    b.cursor_acquire(&key, &cfg, "m", 10, 1 << 20)
        .await
        .unwrap();
    b.cursor_ack(
        &key,
        &cfg,
        "m",
        &[(0, 0, AckType::Reject), (1, 1, AckType::Accept)],
    )
    .await
    .unwrap();
    let dead = wait_for(&b, "dlq", 1).await;
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].0, b"a");
    assert!(dead[0].1.contains(&("h".into(), b"x".to_vec())));
    assert!(dead[0].1.contains(&("offset".into(), b"0".to_vec())));
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(records(&b, "dlq").len(), 1, "written once");
    assert_eq!(
        b.cursors().view(&key).await.unwrap().totals.dead_lettered,
        1
    );
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restart_between_the_dead_letter_write_and_its_record_writes_nothing_twice() {
    let dir = tempfile::tempdir().unwrap();
    let key = CursorKey::new("g", "t", 0);
    let cfg = config();
    {
        let b = open(dir.path());
        create(&b, "t");
        create(&b, "dlq");
        produce(&b, "t", &["a", "b"]).await;
        // What a crash after writing offset 0 to the dead-letter topic and before recording
        // it leaves: both archived, their write begun at high watermark 0, and the
        // dead-letter record of offset 0.
        let mut cursor = Cursor::new(0);
        cursor.acquire_new(0, 1, BatchKind::Data, "m", 0, &cfg);
        cursor.ack("m", 0, 1, AckType::Reject, 0, &cfg).unwrap();
        cursor.begin_dead_letter(&[0, 1], 0);
        b.ensure_cursor_log().await.unwrap();
        b.cursors().persist(&key, Some(&cursor)).await.unwrap();
        let mut builder = BatchBuilder::new(0);
        builder.push(Some(b"k"), Some(b"a"), &[(b"offset", Some(b"0"))], 0);
        b.produce("dlq", 0, Bytes::from(builder.build()), Acks::All)
            .await
            .unwrap();
        b.shutdown().await;
    }
    let b = open(dir.path());
    b.cursors().register_dead_letter("g", Arc::new(TestStep));
    let _ = b
        .cursor_acquire(&key, &cfg, "m", 10, 1 << 20)
        .await
        .unwrap();
    let dead = wait_for(&b, "dlq", 2).await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let values: Vec<Vec<u8>> = records(&b, "dlq").into_iter().map(|(v, _)| v).collect();
    assert_eq!(values, vec![b"a".to_vec(), b"b".to_vec()], "{dead:?}");
    let view = b.cursors().view(&key).await.unwrap();
    assert_eq!(
        (view.dead_letter_pending, view.totals.dead_lettered),
        (0, 2)
    );
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_big_batch_is_shared_between_consumers_offset_by_offset() {
    let dir = tempfile::tempdir().unwrap();
    let key = CursorKey::new("g", "t", 0);
    let cfg = config();
    let b = open(dir.path());
    create(&b, "t");
    let mut builder = BatchBuilder::new(0);
    for i in 0..10u8 {
        builder.push(None, Some(&[i]), &[], 0);
    }
    b.produce("t", 0, Bytes::from(builder.build()), Acks::All)
        .await
        .unwrap();
    let first = b.cursor_acquire(&key, &cfg, "a", 4, 1 << 20).await.unwrap();
    let second = b.cursor_acquire(&key, &cfg, "b", 4, 1 << 20).await.unwrap();
    assert_eq!(first.ranges, vec![range(0, 3, 1)]);
    assert_eq!(second.ranges, vec![range(4, 7, 1)]);
    assert_eq!(
        first.records, second.records,
        "the whole batch goes to both"
    );
    b.shutdown().await;
}

/// KIP-1191's topic gate: a dead-letter topic with `errors.deadletterqueue.group.enable=false`
/// takes no dead letters; the rejected record is archived only, and nothing is written.
#[tokio::test(flavor = "multi_thread")]
async fn a_topic_that_refuses_dead_letters_keeps_records_archived_only() {
    let dir = tempfile::tempdir().unwrap();
    let key = CursorKey::new("g", "t", 0);
    let cfg = config();
    let b = open(dir.path());
    b.cursors().register_dead_letter("g", Arc::new(TestStep));
    create(&b, "t");
    let spec = TopicSpec {
        name: "dlq".into(),
        partitions: 1,
        replication_factor: 1,
        configs: BTreeMap::from([(
            "errors.deadletterqueue.group.enable".to_string(),
            "false".to_string(),
        )]),
    };
    b.create_topic(&spec, false).unwrap();
    produce(&b, "t", &["a"]).await;
    b.cursor_acquire(&key, &cfg, "m", 10, 1 << 20)
        .await
        .unwrap();
    b.cursor_ack(&key, &cfg, "m", &[(0, 0, AckType::Reject)])
        .await
        .unwrap();
    let mut view = b.cursors().view(&key).await.unwrap();
    for _ in 0..200 {
        if view.dead_letter_pending == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        view = b.cursors().view(&key).await.unwrap();
    }
    assert_eq!(view.dead_letter_pending, 0, "the dead-letter step ran");
    assert_eq!(view.totals.archived, 1);
    assert_eq!(view.totals.dead_lettered, 0);
    assert!(
        records(&b, "dlq").is_empty(),
        "nothing written to the gated topic"
    );
    b.shutdown().await;
}

/// KIP-1191's name gate: with a prefix set, a share group may only name dead-letter topics
/// that start with it.
#[tokio::test(flavor = "multi_thread")]
async fn a_dead_letter_topic_name_must_carry_the_prefix_when_one_is_set() {
    let dir = tempfile::tempdir().unwrap();
    let mut sc = StorageConfig::new(dir.path());
    sc.shards = 1;
    let config = BrokerConfig {
        dlq_topic_name_prefix: "dlq.".into(),
        ..BrokerConfig::default()
    };
    let b = Broker::open(config, sc).unwrap();
    let set = |v: &str| {
        vec![crate::ConfigOp::Set(
            "errors.deadletterqueue.topic.name".into(),
            v.into(),
        )]
    };
    let refused = b.share_alter_configs("g", &set("orders-dead"), false).await;
    assert!(
        matches!(refused, Err(crate::BrokerError::InvalidConfig { .. })),
        "{refused:?}"
    );
    b.share_alter_configs("g", &set("dlq.orders"), false)
        .await
        .unwrap();
    b.share_alter_configs("g", &set(""), false).await.unwrap();
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn cursors_are_served_by_the_leader_of_their_shard_and_reloaded_when_it_changes() {
    use crate::scheduled::tests::Moving;
    let dir = tempfile::tempdir().unwrap();
    let key = CursorKey::new("g", "t", 0);
    let cfg = CursorConfig {
        lock_ms: 60_000,
        retry_backoff_ms: vec![],
        ..config()
    };
    let b = open(dir.path());
    create(&b, "t");
    produce(&b, "t", &["a", "b", "c", "d"]).await;
    let got = b
        .cursor_acquire(&key, &cfg, "m1", 3, 1 << 20)
        .await
        .unwrap();
    assert_eq!(
        got.ranges,
        vec![range(0, 0, 1), range(1, 1, 1), range(2, 2, 1)]
    );
    b.cursor_ack(&key, &cfg, "m1", &[(0, 0, AckType::Accept)])
        .await
        .unwrap();
    // Another node leads the shard: this one answers nothing about the cursor.
    let view = Moving::led_by(2, 1);
    b.set_cluster_view(view.clone());
    let not_leader = |r: Option<&crate::BrokerError>| {
        matches!(
            r,
            Some(crate::BrokerError::Storage(
                wharf_storage::StorageError::NotLeader { .. }
            ))
        )
    };
    let refused = b.cursor_acquire(&key, &cfg, "m2", 10, 1 << 20).await;
    assert!(not_leader(refused.as_ref().err()), "{refused:?}");
    let refused = b
        .cursor_ack(&key, &cfg, "m1", &[(1, 1, AckType::Accept)])
        .await;
    assert!(not_leader(refused.as_ref().err()), "{refused:?}");
    // Back as leader in a later term: the cursor is what the log holds. Locks do not
    // survive a reload (1 and 2 come back, counted); the accepted 0 never does.
    view.set(1, 2);
    let (b2, runtime) = (b.clone(), tokio::runtime::Handle::current());
    tokio::task::spawn_blocking(move || b2.become_leader(0, 2, &runtime))
        .await
        .unwrap()
        .unwrap();
    let got = b
        .cursor_acquire(&key, &cfg, "m2", 10, 1 << 20)
        .await
        .unwrap();
    assert_eq!(got.ranges, vec![range(1, 2, 2), range(3, 3, 1)]);
    b.shutdown().await;
}
