//! The controller group (ADR 0012): topic metadata is committed by the controller and applied
//! by every node, so a topic created, altered or deleted through any one node of a 3-process
//! cluster is the same topic (same id, same partitions) on all three, a node that was down
//! catches up when it restarts, and a new controller takes over when the leader is killed.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{InitProducerIdRequest, MetadataRequest, ProducerId, TopicName};
use kafka_protocol::protocol::StrBytes;
use rdkafka::admin::AdminOptions;
use rdkafka::producer::FutureRecord;
use tempfile::TempDir;
use wharf_kafka::admin::quota::{EntityComponent, QuotaOp};
use wharf_kafka::admin::topic::NewTopic;
use wharf_kafka::admin::Admin;
use wharf_testkit::{free_port, BrokerProcess};

use crate::wharf_bin;

/// Starts nodes 1..=3 (one shard each) on ephemeral ports.
fn start_cluster(dir: &TempDir) -> Vec<BrokerProcess> {
    let ports: Vec<u16> = (0..3).map(|_| free_port().unwrap()).collect();
    let peers = ports
        .iter()
        .enumerate()
        .map(|(i, p)| format!("{}@127.0.0.1:{p}", i + 1))
        .collect::<Vec<_>>()
        .join(",");
    (0..3)
        .map(|i| {
            let id = (i + 1).to_string();
            let listen = format!("127.0.0.1:{}", ports[i]);
            BrokerProcess::start(
                wharf_bin(),
                &dir.path().join(format!("n{id}")),
                &[
                    ("node_id", &id),
                    ("shards", "1"),
                    ("cluster_listen", &listen),
                    ("cluster_peers", &peers),
                    // One port fewer to collide with on a restart (AMQP is not tested here).
                    ("amqp_listen", "off"),
                ],
            )
            .unwrap()
        })
        .collect()
}

/// One node's own Metadata (asked of that node alone): the controller it names and each
/// topic's id and partition count.
#[derive(Debug, Clone, PartialEq, Eq)]
struct View {
    controller: i32,
    cluster_id: Option<String>,
    topics: BTreeMap<String, (String, usize)>,
}

async fn view(addr: &str) -> anyhow::Result<View> {
    let mut client = wharf_kafka::Client::connect(addr).await?;
    let response = client
        .send(
            MetadataRequest::default()
                .with_topics(None)
                .with_allow_auto_topic_creation(false),
        )
        .await?;
    Ok(View {
        controller: response.controller_id.0,
        cluster_id: response.cluster_id.as_ref().map(ToString::to_string),
        topics: response
            .topics
            .iter()
            .filter(|t| t.error_code == 0 && !t.is_internal)
            .filter_map(|t| {
                let name = t.name.as_ref()?.0.to_string();
                Some((name, (t.topic_id.to_string(), t.partitions.len())))
            })
            .collect(),
    })
}

/// Polls `check` until it holds; panics with `what` (and the last views) after 60 s.
async fn until(what: &str, addrs: &[String], check: impl Fn(&[View]) -> bool) -> Vec<View> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = Vec::new();
    while Instant::now() < deadline {
        let mut views = Vec::new();
        for addr in addrs {
            match view(addr).await {
                Ok(v) => views.push(v),
                Err(_) => break,
            }
        }
        if views.len() == addrs.len() && check(&views) {
            return views;
        }
        last = views;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting for: {what}; last views: {last:?}");
}

fn addrs(nodes: &[BrokerProcess]) -> Vec<String> {
    nodes.iter().map(BrokerProcess::addr).collect()
}

/// Every node knows `topic` with the same id and `partitions` partitions.
fn same_everywhere(views: &[View], topic: &str, partitions: usize) -> bool {
    let first = views.first().and_then(|v| v.topics.get(topic));
    first.is_some_and(|(_, n)| *n == partitions)
        && views.iter().all(|v| v.topics.get(topic) == first)
}

/// The value of `key` in the configs of `topic` on the node whose admin listener is `admin`.
fn config_on(admin: &str, topic: &str, key: &str) -> Option<String> {
    let (status, body) = crate::admin_http::get(admin, &format!("/v1/topics/{topic}/configs"));
    if status != 200 {
        return None;
    }
    let configs: serde_json::Value = serde_json::from_str(&body).ok()?;
    configs
        .as_array()?
        .iter()
        .find(|c| c["name"] == key)
        .and_then(|c| c["value"].as_str().map(str::to_string))
}

/// The index of a node that is not the controller `views` name.
fn a_follower(views: &[View]) -> usize {
    let controller = usize::try_from(views[0].controller - 1).unwrap();
    (controller + 1) % 3
}

/// An admin connection to the node at `addr` alone (librdkafka's admin client would send
/// topic changes to the controller itself; these go to the node named).
async fn node_admin(addr: &str) -> Admin {
    Admin::connect(addr).await.unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn topic_changes_through_any_node_reach_every_node() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = start_cluster(&dir);
    let all = addrs(&nodes);
    let views = until("a controller every node names", &all, |v| {
        v[0].controller > 0 && v.iter().all(|x| x.controller == v[0].controller)
    })
    .await;
    // Every node started with a cluster id of its own in its meta.json; the controller's
    // becomes every node's (clients warn about nodes of one cluster with different ids).
    until("one cluster id", &all, |v| {
        v[0].cluster_id.is_some() && v.iter().all(|x| x.cluster_id == v[0].cluster_id)
    })
    .await;
    // Created once, through a node that is not the controller (it forwards the change).
    let follower = a_follower(&views);
    let orders = NewTopic {
        name: "orders".into(),
        partitions: 3,
        replication_factor: -1,
        configs: Vec::new(),
    };
    node_admin(&all[follower])
        .await
        .create_topic(&orders, false)
        .await
        .unwrap();
    // The node that took the request answers once it applied the record itself.
    let own = view(&all[follower]).await.unwrap();
    assert_eq!(own.topics.get("orders").map(|t| t.1), Some(3), "{own:?}");
    let views = until("orders on every node", &all, |v| {
        same_everywhere(v, "orders", 3)
    })
    .await;
    let orders_id = views[0].topics["orders"].0.clone();
    // A second create through the third node is refused: the controller knows the topic.
    let again = node_admin(&all[(follower + 1) % 3])
        .await
        .create_topic(&orders, false)
        .await;
    assert!(
        again
            .as_ref()
            .is_err_and(|e| e.to_string().contains("already exists")),
        "{again:?}"
    );

    // Metadata auto-creation on a follower goes through the controller too.
    let mut client = wharf_kafka::Client::connect(&all[follower]).await.unwrap();
    client
        .send(
            MetadataRequest::default()
                .with_topics(Some(vec![MetadataRequestTopic::default().with_name(Some(
                    TopicName(StrBytes::from_static_str("auto-created")),
                ))]))
                .with_allow_auto_topic_creation(true),
        )
        .await
        .unwrap();
    until("auto-created on every node", &all, |v| {
        same_everywhere(v, "auto-created", 1)
    })
    .await;

    // A librdkafka producer bootstrapped on all three nodes writes to both, and one more
    // topic it auto-creates itself.
    let bootstrap = all.join(",");
    let producer = wharf_testkit::producer(
        &bootstrap,
        &[("acks", "all"), ("message.timeout.ms", "30000")],
    )
    .unwrap();
    for topic in ["orders", "auto-created", "auto-by-producer"] {
        for i in 0..20 {
            let value = format!("{topic}-{i}");
            producer
                .send(
                    FutureRecord::<(), _>::to(topic).payload(&value),
                    Duration::from_secs(30),
                )
                .await
                .unwrap_or_else(|(e, _)| panic!("{topic} message {i} not delivered: {e}"));
        }
    }
    let views = until("auto-by-producer on every node", &all, |v| {
        same_everywhere(v, "auto-by-producer", 1)
    })
    .await;
    assert_eq!(
        views[0].topics["orders"].0, orders_id,
        "the id never changes"
    );

    // Producer ids come in blocks the controller reserves per node: no two nodes hand out
    // the same one (a shared id would make a partition leader take one producer's batches
    // for another's duplicates).
    let mut producer_ids = Vec::new();
    for addr in &all {
        let mut client = wharf_kafka::Client::connect(addr).await.unwrap();
        for _ in 0..2 {
            let response = client
                .send(
                    InitProducerIdRequest::default()
                        .with_transactional_id(None)
                        .with_transaction_timeout_ms(60_000)
                        .with_producer_id(ProducerId(-1))
                        .with_producer_epoch(-1),
                )
                .await
                .unwrap();
            assert_eq!(response.error_code, 0, "InitProducerId on {addr}");
            producer_ids.push(response.producer_id.0);
        }
    }
    let distinct: std::collections::BTreeSet<i64> = producer_ids.iter().copied().collect();
    assert_eq!(distinct.len(), producer_ids.len(), "{producer_ids:?}");

    // Partitions added, configs changed and a topic deleted, each through a follower: each
    // reaches every node.
    node_admin(&all[follower])
        .await
        .create_partitions("orders", 5)
        .await
        .unwrap();
    until("orders grown to 5 partitions everywhere", &all, |v| {
        same_everywhere(v, "orders", 5) && v[0].topics["orders"].0 == orders_id
    })
    .await;
    node_admin(&all[(follower + 1) % 3])
        .await
        .alter_topic_configs("orders", &[("retention.ms".into(), "123456".into())], &[])
        .await
        .unwrap();
    for node in &nodes {
        let admin_addr = node.admin_addr().unwrap();
        crate::eventually("retention.ms of orders on every node", || {
            config_on(&admin_addr, "orders", "retention.ms").as_deref() == Some("123456")
        });
    }
    // A client quota set through a follower is enforced by every node.
    let alice = [EntityComponent {
        entity_type: "client-id".into(),
        name: Some("alice".into()),
    }];
    node_admin(&all[follower])
        .await
        .alter_client_quotas(
            &alice,
            &[QuotaOp::Set {
                key: "producer_byte_rate".into(),
                value: 4096.0,
            }],
        )
        .await
        .unwrap();
    for addr in &all {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let quotas = node_admin(addr)
                .await
                .describe_client_quotas(&alice)
                .await
                .unwrap();
            if quotas
                .iter()
                .any(|q| q.values == [("producer_byte_rate".to_string(), 4096.0)])
            {
                break;
            }
            assert!(Instant::now() < deadline, "quota not on {addr}: {quotas:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    // librdkafka's admin client (it sends to the controller) for the delete.
    let admin = wharf_testkit::admin(&all[follower]).unwrap();
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    for r in admin.delete_topics(&["auto-created"], &opts).await.unwrap() {
        r.unwrap();
    }
    until("auto-created deleted everywhere", &all, |v| {
        v.iter()
            .all(|x| !x.topics.contains_key("auto-created") && x.topics.contains_key("orders"))
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_node_that_was_down_catches_up_and_a_new_controller_takes_over() {
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = start_cluster(&dir);
    let all = addrs(&nodes);
    until("a controller every node names", &all, |v| {
        v[0].controller > 0 && v.iter().all(|x| x.controller == v[0].controller)
    })
    .await;

    // Node 3 is down while a topic is created through node 1; it learns it on restart.
    assert!(nodes[2].terminate().unwrap(), "node 3 stops cleanly");
    // librdkafka's admin client sends CreateTopics to the controller Metadata names: wait
    // until the two live nodes name one of them (node 3 may have been the controller).
    until("a live controller", &all[..2], |v| {
        (1..=2).contains(&v[0].controller) && v[1].controller == v[0].controller
    })
    .await;
    wharf_testkit::create_topic(&nodes[0].addr(), "while-down", 2, &[])
        .await
        .unwrap();
    until("while-down on nodes 1 and 2", &all[..2], |v| {
        same_everywhere(v, "while-down", 2)
    })
    .await;
    let before = view(&all[0]).await.unwrap();
    nodes[2].restart().unwrap();
    let views = until("node 3 learned while-down", &all, |v| {
        same_everywhere(v, "while-down", 2)
    })
    .await;
    assert_eq!(
        views[2].topics["while-down"], before.topics["while-down"],
        "the same topic (id) on the restarted node"
    );

    // kill -9 of the controller: the other two elect a new one that takes creations.
    let controller = views[0].controller;
    let killed = usize::try_from(controller - 1).unwrap();
    nodes[killed].kill9().unwrap();
    let survivors: Vec<String> = (0..3)
        .filter(|i| *i != killed)
        .map(|i| all[i].clone())
        .collect();
    let views = until("a new controller", &survivors, |v| {
        v[0].controller > 0
            && v[0].controller != controller
            && v.iter().all(|x| x.controller == v[0].controller)
    })
    .await;
    wharf_testkit::create_topic(&survivors[0], "after-failover", 1, &[])
        .await
        .unwrap();
    wharf_testkit::create_topic(&survivors[1], "after-failover-2", 4, &[])
        .await
        .unwrap();
    until(
        "topics created after the failover on both survivors",
        &survivors,
        |v| same_everywhere(v, "after-failover", 1) && same_everywhere(v, "after-failover-2", 4),
    )
    .await;
    assert_ne!(views[0].controller, controller);
    // The killed node comes back and learns what it missed.
    nodes[killed].restart().unwrap();
    until("the killed controller caught up", &all, |v| {
        same_everywhere(v, "after-failover", 1)
            && same_everywhere(v, "after-failover-2", 4)
            && same_everywhere(v, "while-down", 2)
    })
    .await;
}
