//! The leader gathers writes that queue while entries are in flight into one raft entry of
//! several parts (ARCHITECTURE decision 7: one replication round and one fdatasync for many
//! partitions): each write keeps its own offsets, every node stores the same, a restart reads
//! the groups back, and a group cut short by a crash is dropped when the node starts.

use std::time::Duration;

use wharf_record::BatchBuilder;
use wharf_storage::conformance::batch;
use wharf_storage::{Durability, LogConfig, ShardLog, Storage, StorageConfig};

use crate::cluster::{eventually, start_cluster, wait_leader, Node, CONTROL_LOG, LOG};

/// A second partition log in the shard.
const OTHER: u64 = 3;

async fn restart(nodes: Vec<Node>) -> Vec<Node> {
    let places: Vec<_> = nodes
        .iter()
        .map(|n| (n.id, n.dir.clone(), n.addr))
        .collect();
    for n in nodes {
        n.stop().await;
    }
    let mut out = Vec::new();
    for (id, dir, addr) in places {
        out.push(Node::start(id, &dir, addr, None).await);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_submitted_together_share_raft_entries_and_keep_their_own_offsets() {
    let root = tempfile::tempdir().unwrap();
    let (_, nodes) = start_cluster(root.path(), None).await;
    let leader = wait_leader(&nodes.iter().collect::<Vec<_>>()).await;
    let logs = [
        nodes[leader].storage.log(LOG).unwrap(),
        nodes[leader]
            .storage
            .create_log(OTHER, LogConfig::default()),
    ];
    let before = nodes[leader]
        .group
        .raft()
        .metrics()
        .borrow()
        .last_log_index
        .unwrap_or(0);
    let writes = 400;
    let pending: Vec<_> = (0..writes)
        .map(|i| {
            nodes[leader]
                .log()
                .append(&logs[i % 2], batch(&format!("w{i}")), Durability::Synced)
                .unwrap()
        })
        .collect();
    for (i, p) in pending.into_iter().enumerate() {
        let info = tokio::time::timeout(Duration::from_secs(60), p.wait())
            .await
            .expect("a commit within 60 s")
            .unwrap();
        assert_eq!(info.base_offset, (i / 2) as i64, "write {i}'s own offset");
    }
    let entries = nodes[leader]
        .group
        .raft()
        .metrics()
        .borrow()
        .last_log_index
        .unwrap_or(0)
        - before;
    assert!(
        entries < writes as u64 / 4,
        "{writes} writes submitted together took {entries} raft entries"
    );
    let expected = |parity: usize| -> Vec<String> {
        (0..writes)
            .filter(|i| i % 2 == parity)
            .map(|i| format!("w{i}"))
            .collect()
    };
    for n in &nodes {
        eventually("every node holds every write at its offset", || {
            n.values_in(LOG) == expected(0) && n.values_in(OTHER) == expected(1)
        })
        .await;
    }

    // A restart numbers the raft entries from the groups on disk: the logs agree and go on.
    let nodes = restart(nodes).await;
    let leader = wait_leader(&nodes.iter().collect::<Vec<_>>()).await;
    assert_eq!(
        nodes[leader].append("after").await.unwrap(),
        writes as i64 / 2
    );
    let mut after = expected(0);
    after.push("after".into());
    for n in &nodes {
        eventually("every node holds the writes and the one after", || {
            n.values_in(LOG) == after && n.values_in(OTHER) == expected(1)
        })
        .await;
    }
    for n in nodes {
        n.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_cut_short_by_a_crash_is_dropped_when_the_node_starts() {
    let root = tempfile::tempdir().unwrap();
    let (_, nodes) = start_cluster(root.path(), None).await;
    let leader = wait_leader(&nodes.iter().collect::<Vec<_>>()).await;
    nodes[leader].append("a").await.unwrap();
    for n in &nodes {
        eventually("every node holds a", || n.values() == ["a"]).await;
    }
    let places: Vec<_> = nodes
        .iter()
        .map(|n| (n.id, n.dir.clone(), n.addr))
        .collect();
    for n in nodes {
        n.stop().await;
    }
    // Node 1 crashed while writing an entry of three parts: its group record and one part made
    // it to disk (never acknowledged: the parts were not all written).
    {
        let mut config = StorageConfig::new(&places[0].1);
        config.shards = 1;
        config.segment_bytes = 4096;
        let storage = Storage::open(config).unwrap();
        let shard = storage.shard_log(0).unwrap();
        let control = storage
            .log(CONTROL_LOG)
            .unwrap_or_else(|| storage.create_log(CONTROL_LOG, LogConfig::default()));
        let mut group = BatchBuilder::new(0);
        group.push(None, Some(br#"{"Group":3}"#), &[], 0);
        for (log, bytes) in [
            (control, bytes::Bytes::from(group.build())),
            (storage.log(LOG).unwrap(), batch("torn")),
        ] {
            shard
                .append(&log, bytes, Durability::Synced)
                .unwrap()
                .wait()
                .await
                .unwrap();
        }
        storage.shutdown();
    }
    let mut nodes = Vec::new();
    for (id, dir, addr) in places {
        nodes.push(Node::start(id, &dir, addr, None).await);
    }
    assert_eq!(nodes[0].values(), ["a"], "the torn part is gone at start");
    let leader = wait_leader(&nodes.iter().collect::<Vec<_>>()).await;
    nodes[leader].append("b").await.unwrap();
    for n in &nodes {
        eventually("every node holds a and b", || n.values() == ["a", "b"]).await;
    }
    // And again after a restart: what follows the dropped group is not read as its parts.
    let nodes = restart(nodes).await;
    for n in &nodes {
        assert_eq!(n.values(), ["a", "b"]);
    }
    for n in nodes {
        n.stop().await;
    }
}
