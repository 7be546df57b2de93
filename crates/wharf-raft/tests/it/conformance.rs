//! The storage crate's shard-log conformance steps, run against the replicated shard log.

use wharf_storage::{Position, ShardLog, StorageError};

use crate::cluster::{eventually, start_cluster, wait_leader, CONTROL_LOG};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicated_shard_log_conforms_on_every_node() {
    let root = tempfile::tempdir().unwrap();
    let (_addrs, nodes) = start_cluster(root.path(), None).await;
    let leader = &nodes[wait_leader(&nodes.iter().collect::<Vec<_>>()).await];
    let (_logs, ends) =
        wharf_storage::conformance::append_and_read(&leader.storage, &leader.log()).await;
    // Every follower holds the same entries at the same positions once it applied them.
    let partition_entries = |node: &crate::cluster::Node| -> Vec<(u64, i64, Position)> {
        node.log()
            .read(Position::default(), usize::MAX)
            .unwrap()
            .into_iter()
            .filter(|e| e.log_id != CONTROL_LOG)
            .map(|e| (e.log_id, e.base_offset, e.end))
            .collect()
    };
    let expected = partition_entries(leader);
    assert_eq!(expected.len(), 36, "30 appends, then 6 submitted together");
    assert_eq!(expected[..30].iter().map(|e| e.2).collect::<Vec<_>>(), ends);
    for node in &nodes {
        eventually("a follower applied every entry", || {
            partition_entries(node) == expected
        })
        .await;
    }
    // Committed entries are raft's to keep: the contract's truncate is refused.
    assert!(matches!(
        leader.log().truncate(ends[10]).await,
        Err(StorageError::TruncateReplicated { .. })
    ));
    // A follower refuses appends and names the leader.
    let follower = nodes.iter().find(|n| n.id != leader.id).unwrap();
    match follower.append("to-a-follower").await {
        Err(StorageError::NotLeader { leader: l, .. }) => assert_eq!(l, Some(leader.id)),
        other => panic!("a follower accepted or failed oddly: {other:?}"),
    }
    for node in nodes {
        node.stop().await;
    }
}
