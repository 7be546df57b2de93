use std::sync::atomic::AtomicI64;

use bytes::Bytes;
use wharf_storage::{LogConfig, Storage, StorageConfig};

use super::*;
use crate::group::api::{CommitPartition, Protocol};

const MINUTE: i64 = 60_000;

struct Harness {
    storage: Storage,
    coordinator: GroupCoordinator,
    clock: Arc<AtomicI64>,
}

fn open(dir: &std::path::Path, config: CoordinatorConfig, start: i64) -> Harness {
    let log_config = LogConfig {
        retention_ms: -1,
        retention_bytes: -1,
        ..LogConfig::default()
    };
    open_with(dir, config, start, log_config)
}

fn open_with(
    dir: &std::path::Path,
    config: CoordinatorConfig,
    start: i64,
    log_config: LogConfig,
) -> Harness {
    let mut sc = StorageConfig::new(dir);
    sc.shards = 1;
    let storage = Storage::open(sc).unwrap();
    let logs = (0..4)
        .map(|id| storage.create_log(id, log_config))
        .collect();
    let clock = Arc::new(AtomicI64::new(start));
    let c = clock.clone();
    let coordinator = GroupCoordinator::new(config, Arc::new(move || c.load(Ordering::SeqCst)));
    coordinator.load(logs).unwrap();
    Harness {
        storage,
        coordinator,
        clock,
    }
}

fn config() -> CoordinatorConfig {
    CoordinatorConfig {
        offsets_retention_ms: 10 * MINUTE,
        compact_after_records: 50,
        ..CoordinatorConfig::default()
    }
}

fn commit(group: &str, partition: i32, offset: i64, metadata: &str) -> OffsetCommitRequest {
    OffsetCommitRequest {
        group_id: group.into(),
        generation_id: -1,
        member_id: String::new(),
        group_instance_id: None,
        partitions: vec![CommitPartition {
            topic: "t".into(),
            partition,
            offset,
            leader_epoch: -1,
            metadata: Some(metadata.into()),
        }],
    }
}

fn committed(h: &Harness, group: &str) -> Vec<(i32, i64, Option<String>)> {
    h.coordinator
        .fetch_offsets(group, None)
        .unwrap()
        .into_iter()
        .map(|f| (f.partition, f.offset, f.metadata))
        .collect()
}

async fn close(h: Harness) {
    h.storage.flush().await.unwrap();
    h.storage.shutdown();
}

#[tokio::test]
async fn offsets_and_membership_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let h = open(dir.path(), config(), 1_000);
    for (p, o) in [(0, 5), (1, 7), (0, 9)] {
        let r = h
            .coordinator
            .commit_offsets(&commit("g", p, o, &format!("m{o}")), |_, _| true)
            .await
            .unwrap();
        assert!(r.iter().all(Result::is_ok));
    }
    let unknown = h
        .coordinator
        .commit_offsets(&commit("g", 3, 1, ""), |_, p| p != 3)
        .await
        .unwrap();
    assert!(matches!(
        unknown[0],
        Err(GroupError::UnknownTopicOrPartition { .. })
    ));
    // A member joins (v3: no MEMBER_ID_REQUIRED) and the group becomes stable.
    let join = JoinRequest {
        group_id: "g".into(),
        member_id: String::new(),
        group_instance_id: None,
        protocol_type: "consumer".into(),
        protocols: vec![Protocol {
            name: "range".into(),
            metadata: Bytes::from_static(b"sub"),
        }],
        session_timeout_ms: 10_000,
        rebalance_timeout_ms: 10_000,
        client_id: "c".into(),
        client_host: String::new(),
        require_known_member_id: false,
    };
    let coordinator = h.coordinator.clone();
    let parked = tokio::spawn(async move { coordinator.join_group(join).await });
    // The join completes once the initial rebalance delay has passed on the injected clock;
    // 1,000 rounds are 1,000 simulated seconds, far past any delay in `config()`.
    let mut rounds = 0;
    let joined = loop {
        assert!(
            rounds < 1_000,
            "join_group still parked after {rounds} ticks ({rounds} s of injected clock)"
        );
        rounds += 1;
        h.clock.fetch_add(1_000, Ordering::SeqCst);
        h.coordinator.tick().await;
        if parked.is_finished() {
            break parked.await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    assert_eq!((joined.error, joined.generation_id), (None, 1));
    // KIP-447: a transactional commit that names a consumer must name a member of this
    // generation; one that names none is not checked.
    let member = joined.member_id.clone();
    let check = |generation, member: &str| {
        h.coordinator
            .validate_txn_member("g", generation, member, None)
    };
    assert!(check(1, &member).is_ok());
    assert!(matches!(
        check(0, &member),
        Err(GroupError::IllegalGeneration { .. })
    ));
    assert!(matches!(
        check(1, "zombie"),
        Err(GroupError::UnknownMemberId { .. })
    ));
    assert!(check(-1, "").is_ok());
    assert!(matches!(
        h.coordinator
            .validate_txn_member("no-such-group", 3, "m", None),
        Err(GroupError::IllegalGeneration { .. })
    ));
    let synced = h
        .coordinator
        .sync_group(SyncRequest {
            group_id: "g".into(),
            generation_id: 1,
            member_id: joined.member_id.clone(),
            group_instance_id: None,
            protocol_type: None,
            protocol_name: None,
            assignments: vec![(joined.member_id.clone(), Bytes::from_static(b"A"))],
        })
        .await;
    assert_eq!(synced.assignment, Bytes::from_static(b"A"));
    let before = committed(&h, "g");
    close(h).await;

    let h = open(dir.path(), config(), 20_000);
    assert_eq!(committed(&h, "g"), before);
    assert_eq!(
        before,
        vec![(0, 9, Some("m9".into())), (1, 7, Some("m7".into()))]
    );
    let d = h.coordinator.describe_group("g").unwrap().unwrap();
    assert_eq!((d.state, d.members.len()), ("Stable", 1));
    assert_eq!(d.members[0].assignment, Bytes::from_static(b"A"));
    // The replayed member keeps its session from the moment of the reopen.
    h.coordinator
        .heartbeat(&HeartbeatRequest {
            group_id: "g".into(),
            generation_id: 1,
            member_id: joined.member_id,
            group_instance_id: None,
        })
        .unwrap();
    close(h).await;
}

#[tokio::test]
async fn offsets_of_an_empty_group_expire_and_stay_expired() {
    let dir = tempfile::tempdir().unwrap();
    let h = open(dir.path(), config(), 0);
    h.coordinator
        .commit_offsets(&commit("old", 0, 1, ""), |_, _| true)
        .await
        .unwrap();
    h.clock.store(8 * MINUTE, Ordering::SeqCst);
    h.coordinator
        .commit_offsets(&commit("new", 0, 2, ""), |_, _| true)
        .await
        .unwrap();
    h.coordinator.tick().await;
    assert_eq!(committed(&h, "old").len(), 1, "9 of 10 minutes");
    h.clock.store(10 * MINUTE + 1, Ordering::SeqCst);
    h.coordinator.tick().await;
    assert!(committed(&h, "old").is_empty());
    assert_eq!(committed(&h, "new").len(), 1);
    let listed = h.coordinator.list_groups(&[]).unwrap();
    assert_eq!(
        listed.len(),
        1,
        "an emptied simple group is forgotten: {listed:?}"
    );
    close(h).await;
    let h = open(dir.path(), config(), 11 * MINUTE);
    assert!(committed(&h, "old").is_empty(), "tombstones replay");
    assert_eq!(committed(&h, "new").len(), 1);
    close(h).await;
}

#[tokio::test]
async fn a_growing_offsets_partition_is_compacted_to_its_live_state() {
    let dir = tempfile::tempdir().unwrap();
    let h = open(dir.path(), config(), 0);
    for i in 0..200 {
        h.coordinator
            .commit_offsets(&commit("busy", i % 3, i64::from(i), "x"), |_, _| true)
            .await
            .unwrap();
    }
    let before = committed(&h, "busy");
    h.clock.store(EXPIRY_EVERY_MS, Ordering::SeqCst);
    h.coordinator.tick().await;
    let log = h
        .coordinator
        .inner
        .logs
        .get()
        .unwrap()
        .get(partition_for("busy", 4))
        .unwrap()
        .clone();
    assert_eq!(
        log.high_watermark(),
        200 + 4,
        "one group record and 3 offsets"
    );
    assert_eq!(log.log_start_offset(), 200);
    close(h).await;
    let h = open(dir.path(), config(), 2 * EXPIRY_EVERY_MS);
    assert_eq!(committed(&h, "busy"), before);
    close(h).await;
}

/// With `cleanup.policy=compact` (what `__consumer_offsets` has) the coordinator does not
/// rewrite its state: the storage cleaner drops superseded commits, and a reopen replays the
/// compacted log (with its offset gaps) to the same committed offsets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compacted_offsets_partition_replays_to_the_same_state() {
    let dir = tempfile::tempdir().unwrap();
    let log_config = LogConfig {
        retention_ms: -1,
        delete: false,
        compact: true,
        segment_bytes: 1024,
        ..LogConfig::default()
    };
    let h = open_with(dir.path(), config(), 0, log_config);
    for i in 0..200 {
        h.coordinator
            .commit_offsets(&commit("busy", i % 3, i64::from(i), "x"), |_, _| true)
            .await
            .unwrap();
    }
    let before = committed(&h, "busy");
    h.clock.store(EXPIRY_EVERY_MS, Ordering::SeqCst);
    h.coordinator.tick().await;
    let log = h
        .coordinator
        .inner
        .logs
        .get()
        .unwrap()
        .get(partition_for("busy", 4))
        .unwrap()
        .clone();
    assert_eq!(
        log.high_watermark(),
        200,
        "no snapshot rewrite on a compacted log"
    );
    let bytes = log.size_bytes();
    let stats = h.storage.run_compaction();
    assert!(stats.records_removed > 150, "{stats:?}");
    assert!(
        log.size_bytes() < bytes / 4,
        "{} of {bytes}",
        log.size_bytes()
    );
    close(h).await;
    let h = open_with(dir.path(), config(), 2 * EXPIRY_EVERY_MS, log_config);
    assert_eq!(committed(&h, "busy"), before);
    close(h).await;
}
