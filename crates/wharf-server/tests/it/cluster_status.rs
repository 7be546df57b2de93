//! Operating a 3-node cluster (ADR 0012): `/v1/cluster`, `wharf cluster status` and the
//! cluster metrics report every node, each shard group's leader and term, and how far each
//! follower lags; a follower cut off by the testkit's fault proxies shows up as lagging and
//! its partitions as under-replicated, and a leader's death counts as a leader change.
//! Leadership may move under load, so the checks ask "some leader reports", never "node N".

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use rdkafka::producer::FutureRecord;
use serde_json::Value;
use wharf_testkit::TestCluster;

use crate::admin_http::{get, get_json};
use crate::{eventually, wharf_bin};

const TOPIC: &str = "status";

/// Every sample of metric `name` in a Prometheus scrape: (labels text, value).
fn samples(text: &str, name: &str) -> Vec<(String, f64)> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let rest = l.strip_prefix(name)?;
            let (labels, value) = match rest.strip_prefix('{') {
                Some(r) => {
                    let (labels, value) = r.split_once('}')?;
                    (labels.to_string(), value)
                }
                None if rest.starts_with(' ') => (String::new(), rest),
                None => return None,
            };
            Some((labels, value.trim().parse().ok()?))
        })
        .collect()
}

fn scrape(cluster: &TestCluster, id: u64) -> String {
    let (status, body) = get(&cluster.node(id).admin_addr().unwrap(), "/metrics");
    assert_eq!(status, 200);
    body
}

fn status_of(cluster: &TestCluster, id: u64) -> Value {
    get_json(&cluster.node(id).admin_addr().unwrap(), "/v1/cluster")
}

/// The lag each leader reports: (shard, follower) → entries, over every node that leads.
fn reported_lag(cluster: &TestCluster, ids: &[u64]) -> BTreeMap<(u64, u64), u64> {
    let mut lag = BTreeMap::new();
    for id in ids {
        let status = status_of(cluster, *id);
        for shard in status["shards"].as_array().unwrap() {
            if shard["role"] != "Leader" {
                continue;
            }
            for f in shard["followers"].as_array().unwrap() {
                lag.insert(
                    (
                        shard["shard"].as_u64().unwrap(),
                        f["node_id"].as_u64().unwrap(),
                    ),
                    f["lag_entries"].as_u64().unwrap(),
                );
            }
        }
    }
    lag
}

async fn produce(bootstrap: &str, partitions: i32, count: usize) {
    let producer = wharf_testkit::producer(
        bootstrap,
        &[("acks", "all"), ("message.timeout.ms", "30000")],
    )
    .unwrap();
    let deliveries: Vec<_> = (0..count)
        .map(|i| {
            let value = format!("v{i}");
            let partition = i32::try_from(i).unwrap() % partitions;
            producer
                .send_result(
                    FutureRecord::<(), _>::to(TOPIC)
                        .partition(partition)
                        .payload(&value),
                )
                .map_err(|(e, _)| e)
                .unwrap()
        })
        .collect();
    for d in deliveries {
        d.await.unwrap().map_err(|(e, _)| e).unwrap();
    }
}

fn leader_changes(cluster: &TestCluster, id: u64) -> f64 {
    samples(&scrape(cluster, id), "wharf_cluster_leader_changes_total")
        .iter()
        .map(|(_, v)| v)
        .sum()
}

#[tokio::test(flavor = "multi_thread")]
async fn cluster_status_reports_leaders_follower_lag_and_under_replicated_partitions() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = TestCluster::start(wharf_bin(), dir.path(), 3, &[("shards", "2")]).unwrap();
    // Created once: the controller group commits it for every node.
    wharf_testkit::create_topic(&cluster.node(1).addr(), TOPIC, 2, &[])
        .await
        .unwrap();
    cluster
        .wait_for_leaders(TOPIC, Duration::from_secs(60))
        .unwrap();
    produce(&cluster.bootstrap(), 2, 20).await;
    let ids = cluster.ids();

    // Each shard has a leader that reports both followers, caught up.
    eventually(
        "every shard's leader reports two caught-up followers",
        || {
            let lag = reported_lag(&cluster, &ids);
            (0..2).all(|shard| lag.keys().filter(|(s, _)| *s == shard).count() == 2)
                && lag.values().all(|l| *l == 0)
        },
    );
    // Peers' Kafka listeners are learned by a Hello on the cluster port, shortly after start.
    eventually("node 1 knows every node's Kafka listener", || {
        let status = status_of(&cluster, 1);
        status["brokers"].as_array().unwrap().len() == 3
            && status["nodes"]
                .as_array()
                .unwrap()
                .iter()
                .all(|n| n["kafka"].is_string())
    });
    let status = status_of(&cluster, 1);
    assert_eq!(status["nodes"].as_array().unwrap().len(), 3, "{status}");
    for shard in status["shards"].as_array().unwrap() {
        assert!(shard["leader"].as_u64().is_some(), "{status}");
        assert!(shard["term"].as_u64().unwrap() >= 1, "{status}");
        assert_eq!(shard["replicas"].as_array().unwrap().len(), 3, "{status}");
    }
    for id in &ids {
        let text = scrape(&cluster, *id);
        assert_eq!(
            samples(&text, "wharf_under_replicated_partitions"),
            vec![(String::new(), 0.0)],
            "node {id}"
        );
    }

    // The CLI merges the three views: every node with its Kafka listener, each shard with
    // its leader and both followers' lag.
    let admins = ids
        .iter()
        .map(|id| cluster.node(*id).admin_addr().unwrap())
        .collect::<Vec<_>>()
        .join(",");
    let out = Command::new(wharf_bin())
        .args(["cluster", "status", "--admin", &admins])
        .env_remove("WHARF_ADMIN")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    for id in &ids {
        assert!(text.contains(&cluster.node(*id).addr()), "{text}");
    }
    assert!(text.contains("FOLLOWER LAG"), "{text}");
    let out = Command::new(wharf_bin())
        .args(["cluster", "status", "--json", "--admin", &admins])
        .env_remove("WHARF_ADMIN")
        .output()
        .unwrap();
    assert!(out.status.success());
    let merged: Value = serde_json::from_slice(&out.stdout).unwrap();
    let shards = merged["shards"].as_array().unwrap();
    assert_eq!(shards.len(), 2, "{merged}");
    for shard in shards {
        assert_eq!(shard["role"], "Leader", "{merged}");
        assert_eq!(shard["followers"].as_array().unwrap().len(), 2, "{merged}");
    }

    // A follower cut off lags on every shard it does not lead once records are written,
    // and its partitions count as under-replicated on their leader.
    // A node leading neither partition's shard (3 nodes, 2 shards): writes go on without it.
    let leaders = [
        cluster.leader_of(TOPIC, 0).unwrap(),
        cluster.leader_of(TOPIC, 1).unwrap(),
    ];
    let cut = ids
        .iter()
        .copied()
        .find(|id| !leaders.contains(id))
        .unwrap();
    cluster.isolate(cut);
    let majority = ids
        .iter()
        .filter(|id| **id != cut)
        .map(|id| cluster.node(*id).addr())
        .collect::<Vec<_>>()
        .join(",");
    produce(&majority, 2, 20).await;
    let others: Vec<u64> = ids.iter().copied().filter(|id| *id != cut).collect();
    eventually("a leader reports the cut-off follower lagging", || {
        reported_lag(&cluster, &others)
            .iter()
            .any(|((_, f), lag)| *f == cut && *lag > 0)
    });
    eventually(
        "the cut-off follower's lag and under-replication in /metrics",
        || {
            others.iter().any(|id| {
                let text = scrape(&cluster, *id);
                let lagging = samples(&text, "wharf_cluster_replication_lag_entries")
                    .iter()
                    .any(|(labels, v)| labels.contains(&format!("follower=\"{cut}\"")) && *v > 0.0);
                let under = samples(&text, "wharf_under_replicated_partitions")
                    .iter()
                    .any(|(_, v)| *v > 0.0);
                lagging && under && text.contains("# HELP wharf_cluster_replication_lag_entries")
            })
        },
    );

    // Healed, the follower catches up: no lag, nothing under-replicated.
    cluster.heal();
    eventually("no lag and nothing under-replicated after healing", || {
        let lag = reported_lag(&cluster, &ids);
        lag.len() == 4
            && lag.values().all(|l| *l == 0)
            && ids.iter().all(|id| {
                samples(&scrape(&cluster, *id), "wharf_under_replicated_partitions")
                    == vec![(String::new(), 0.0)]
            })
    });
}

#[tokio::test(flavor = "multi_thread")]
async fn a_leaders_death_counts_as_a_leader_change_on_the_survivors() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = TestCluster::start(wharf_bin(), dir.path(), 3, &[("shards", "1")]).unwrap();
    // Created once: the controller group commits it for every node.
    wharf_testkit::create_topic(&cluster.node(1).addr(), TOPIC, 1, &[])
        .await
        .unwrap();
    cluster
        .wait_for_leaders(TOPIC, Duration::from_secs(60))
        .unwrap();
    // Every node stands for election at start, so the first leader may still be replaced:
    // the leader killed is the one named after the survivors counted it and their counts
    // were read.
    let mut attempt = 0;
    let (leader, survivors, before) = loop {
        let leader = cluster.leader_of(TOPIC, 0).unwrap();
        let survivors: Vec<u64> = cluster
            .ids()
            .into_iter()
            .filter(|id| *id != leader)
            .collect();
        // Every node counts the first election once it hears the leader.
        eventually("every survivor counted the first election", || {
            survivors
                .iter()
                .all(|id| leader_changes(&cluster, *id) >= 1.0)
        });
        let before: Vec<f64> = survivors
            .iter()
            .map(|id| leader_changes(&cluster, *id))
            .collect();
        attempt += 1;
        if cluster.leader_of(TOPIC, 0).unwrap() == leader || attempt == 10 {
            break (leader, survivors, before);
        }
    };
    cluster.kill(leader).unwrap();
    eventually("a survivor counts the leader change", || {
        survivors
            .iter()
            .zip(&before)
            .any(|(id, b)| leader_changes(&cluster, *id) > *b)
    });
}
