//! acks=1 (`Durability::Written`) on a replicated shard: acknowledged once the leader's own
//! log holds the entry, as Kafka does, while consumers still see only committed records; such
//! a write is lost when a cut-off leader's tail is truncated. acks=all (`Synced`) waits for
//! the majority.

use std::time::Duration;

use wharf_storage::{Durability, ShardLog};

use crate::cluster::{eventually, start_cluster, wait_leader};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acks_1_is_acknowledged_by_the_leader_alone_and_never_visible_uncommitted() {
    let root = tempfile::tempdir().unwrap();
    let (_addrs, mut nodes) = start_cluster(root.path(), None).await;
    let first = wait_leader(&nodes.iter().collect::<Vec<_>>()).await;
    for i in 0..3 {
        nodes[first].append(&format!("a{i}")).await.unwrap();
    }
    // Cut the leader off: it can no longer commit.
    let old = nodes.remove(first);
    for n in &nodes {
        old.cuts.cut(n.id);
        n.cuts.cut(old.id);
    }
    let old_log = old.log();
    let log = old.storage.log(crate::cluster::LOG).unwrap();
    let batch = |v: &str| wharf_storage::conformance::batch(v);
    let all = ShardLog::append(&old_log, &log, batch("all"), Durability::Synced).unwrap();
    let all = tokio::spawn(all.wait());
    let one = ShardLog::append(&old_log, &log, batch("one"), Durability::Written).unwrap();
    // acks=1 completes on the leader's own write, with the offsets it got.
    let info = tokio::time::timeout(Duration::from_secs(30), one.wait())
        .await
        .expect("an acks=1 write completes without a majority")
        .unwrap();
    assert!(info.base_offset >= 3, "{info:?}");
    assert_eq!(
        ShardLog::high_watermark(&old_log, &log),
        3,
        "consumers never see an uncommitted record"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!all.is_finished(), "acks=all waits for a majority");
    // The others elect a leader; healing truncates the old leader's tail, acks=1 write too.
    let second = wait_leader(&nodes.iter().collect::<Vec<_>>()).await;
    nodes[second].append("b0").await.unwrap();
    for n in &nodes {
        old.cuts.heal();
        n.cuts.heal();
    }
    eventually(
        "the old leader's tail is replaced by the committed entries",
        || old.values() == ["a0", "a1", "a2", "b0"],
    )
    .await;
    let result = tokio::time::timeout(Duration::from_secs(30), all)
        .await
        .expect("the acks=all write completes after healing")
        .unwrap();
    assert!(
        result.is_err(),
        "an overwritten acks=all write was acknowledged"
    );
    // An acks=1 write on a healthy leader is committed as well, and readable.
    let leader = wait_leader(&nodes.iter().collect::<Vec<_>>()).await;
    let new_log = nodes[leader].log();
    let plog = nodes[leader].storage.log(crate::cluster::LOG).unwrap();
    let pending = ShardLog::append(&new_log, &plog, batch("c0"), Durability::Written).unwrap();
    pending.wait().await.unwrap();
    eventually("an acks=1 write on a healthy cluster commits", || {
        ShardLog::high_watermark(&new_log, &plog) == 5
    })
    .await;
}
