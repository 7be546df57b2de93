//! A node whose data directory was wiped rejoins empty and catches up by snapshot install,
//! then survives the leader's death with nothing lost.

use crate::cluster::{eventually, start_cluster, wait_leader, Node};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wiped_node_catches_up_by_snapshot_and_survives_the_leaders_death() {
    let root = tempfile::tempdir().unwrap();
    let (addrs, mut nodes) = start_cluster(root.path(), Some(10)).await;
    let leader = wait_leader(&nodes.iter().collect::<Vec<_>>()).await;
    let mut committed = Vec::new();
    for i in 0..30 {
        let value = format!("s{i}");
        nodes[leader].append(&value).await.unwrap();
        committed.push(value);
    }
    let follower = (leader + 1) % 3;
    let wiped = nodes.remove(follower);
    let (id, dir, addr) = (wiped.id, wiped.dir.clone(), wiped.addr);
    wiped.stop().await;
    std::fs::remove_dir_all(&dir).unwrap();

    let leader = wait_leader(&nodes.iter().collect::<Vec<_>>()).await;
    for i in 30..45 {
        let value = format!("s{i}");
        nodes[leader].append(&value).await.unwrap();
        committed.push(value);
    }
    eventually("the leader purged log entries the wiped node needs", || {
        nodes[leader]
            .group
            .raft()
            .metrics()
            .borrow()
            .purged
            .is_some_and(|p| p.index > 10)
    })
    .await;

    let back = Node::start(id, &dir, addr, Some(10)).await;
    // It initializes at start like every node; its empty log loses every vote.
    back.group
        .initialize(crate::cluster::members(&addrs))
        .await
        .unwrap();
    eventually("the wiped node caught up", || back.values() == committed).await;
    assert!(
        back.group.raft().metrics().borrow().snapshot.is_some(),
        "it caught up by a snapshot"
    );

    // The leader dies; the rejoined node and the other elect a leader and lose nothing.
    let dead = nodes.remove(leader);
    dead.stop().await;
    nodes.push(back);
    let leader = wait_leader(&nodes.iter().collect::<Vec<_>>()).await;
    nodes[leader].append("after").await.unwrap();
    committed.push("after".to_string());
    for n in &nodes {
        eventually("every survivor holds every committed entry", || {
            n.values() == committed
        })
        .await;
    }
    for n in nodes {
        n.stop().await;
    }
}
