//! A leader change loses nothing committed; a cut-off old leader's uncommitted tail is
//! truncated when it rejoins, never served.

use std::time::Duration;

use crate::cluster::{eventually, start_cluster, wait_leader, Node};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_keeps_committed_entries_and_truncates_a_cut_off_leaders_tail() {
    let root = tempfile::tempdir().unwrap();
    let (_addrs, mut nodes) = start_cluster(root.path(), None).await;
    let first = wait_leader(&nodes.iter().collect::<Vec<_>>()).await;
    let mut committed = Vec::new();
    for i in 0..10 {
        let value = format!("a{i}");
        assert_eq!(nodes[first].append(&value).await.unwrap(), i);
        committed.push(value);
    }

    // Cut the leader off from both others, in both directions.
    let old = nodes.remove(first);
    for n in &nodes {
        old.cuts.cut(n.id);
        n.cuts.cut(old.id);
    }
    // It still takes writes into its own log, but cannot commit them.
    let old_log = old.log();
    let log = old.storage.log(crate::cluster::LOG).unwrap();
    let mut cut_off = Vec::new();
    for i in 0..5 {
        let pending = wharf_storage::ShardLog::append(
            &old_log,
            &log,
            wharf_storage::conformance::batch(&format!("lost{i}")),
            wharf_storage::Durability::Synced,
        )
        .unwrap();
        cut_off.push(tokio::spawn(pending.wait()));
    }
    eventually("the cut-off leader wrote its tail locally", || {
        old.values().len() == 15
    })
    .await;
    assert_eq!(log.high_watermark(), 15, "written locally");
    assert_eq!(
        wharf_storage::ShardLog::high_watermark(&old_log, &log),
        10,
        "an uncommitted record is above the high watermark"
    );

    // The other two elect a leader and commit more.
    let second = wait_leader(&nodes.iter().collect::<Vec<_>>()).await;
    for i in 0..5 {
        let value = format!("b{i}");
        assert_eq!(nodes[second].append(&value).await.unwrap(), 10 + i);
        committed.push(value);
    }
    assert!(
        cut_off.iter().all(|t| !t.is_finished()),
        "a leader without a majority acknowledged a write"
    );

    // Heal: the old leader follows, its tail is truncated and replaced by the committed entries.
    for n in &nodes {
        old.cuts.heal();
        n.cuts.heal();
    }
    eventually("the old leader holds exactly the committed entries", || {
        old.values() == committed
    })
    .await;
    let healed = old.storage.log(crate::cluster::LOG).unwrap();
    eventually(
        "the old leader's high watermark covers the committed records",
        || wharf_storage::ShardLog::high_watermark(&old_log, &healed) == 15,
    )
    .await;
    for t in cut_off {
        let result = tokio::time::timeout(Duration::from_secs(30), t)
            .await
            .expect("the cut-off writes complete after healing")
            .unwrap();
        assert!(
            result.is_err(),
            "an overwritten write was acknowledged: {result:?}"
        );
    }

    // Stop the current leader: the old one and the third elect a leader, nothing is lost.
    let stopped = nodes.remove(second);
    let (id, dir, addr) = (stopped.id, stopped.dir.clone(), stopped.addr);
    stopped.stop().await;
    nodes.push(old);
    let third = wait_leader(&nodes.iter().collect::<Vec<_>>()).await;
    for i in 0..5 {
        let value = format!("c{i}");
        nodes[third].append(&value).await.unwrap();
        committed.push(value);
    }
    for n in &nodes {
        eventually(
            "every survivor holds every committed entry in order",
            || n.values() == committed,
        )
        .await;
    }
    // The stopped node restarts from its own data (log, vote, term starts) and catches up.
    let back = Node::start(id, &dir, addr, None).await;
    assert!(
        back.values().starts_with(&committed[..15]),
        "a restarted node keeps its log"
    );
    eventually("the restarted node caught up", || {
        back.values() == committed
    })
    .await;
    nodes.push(back);
    stop_all(nodes).await;
}

async fn stop_all(nodes: Vec<Node>) {
    for n in nodes {
        n.stop().await;
    }
}
