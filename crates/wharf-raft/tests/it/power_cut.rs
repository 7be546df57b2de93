//! Every replica fdatasyncs an entry before acknowledging it: a power cut of all three nodes at
//! once (simulated disks keep only what was synced) loses no committed entry.

use wharf_storage::sim::{PowerCut, SimFs};

use crate::cluster::{eventually, free_addrs, members, wait_leader, Node};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_power_cut_of_every_node_loses_no_committed_entry() {
    let addrs = free_addrs(3).await;
    let dirs: Vec<std::path::PathBuf> = (1..=3).map(|id| format!("/sim/n{id}").into()).collect();
    let disks: Vec<SimFs> = dirs.iter().map(SimFs::new).collect();
    let mut nodes = Vec::new();
    for i in 0..3 {
        nodes.push(Node::start_on(i as u64 + 1, &dirs[i], addrs[i], None, Some(&disks[i])).await);
    }
    for n in &nodes {
        n.group.initialize(members(&addrs)).await.unwrap();
    }
    let leader = wait_leader(&nodes.iter().collect::<Vec<_>>()).await;
    let mut committed = Vec::new();
    for i in 0..20 {
        let value = format!("p{i}");
        nodes[leader].append(&value).await.unwrap();
        committed.push(value);
    }
    for disk in &disks {
        disk.power_cut(PowerCut::LoseUnsynced);
    }
    for n in nodes {
        n.stop().await;
    }

    let mut nodes = Vec::new();
    for i in 0..3 {
        nodes.push(Node::start_on(i as u64 + 1, &dirs[i], addrs[i], None, Some(&disks[i])).await);
    }
    let leader = wait_leader(&nodes.iter().collect::<Vec<_>>()).await;
    nodes[leader].append("after").await.unwrap();
    committed.push("after".to_string());
    for n in &nodes {
        eventually(
            "every node holds every committed entry after the cut",
            || n.values() == committed,
        )
        .await;
    }
    for n in nodes {
        n.stop().await;
    }
}
