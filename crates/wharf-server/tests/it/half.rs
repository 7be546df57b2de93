//! Half messages (`wharf.message.type=transaction`) with librdkafka against a real broker
//! process: prepare then commit (sent twice) is visible once, prepare then rollback never,
//! an unanswered prepare is checked back on `wharf.txn-check.<group>` until the test answers
//! commit, and one never answered ends in `wharf.txn-abandoned` after
//! `wharf.txn.check.max` checks; a kill -9 comes after the prepares.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Message, Offset, TopicPartitionList};

use crate::{eventually, start_broker};

const CHECK_TOPIC: &str = "wharf.txn-check.shop";
const ABANDONED: &str = "wharf.txn-abandoned";

async fn send(producer: &FutureProducer, action: &str, txn_id: &str) {
    let headers = OwnedHeaders::new()
        .insert(Header {
            key: "wharf-txn",
            value: Some(action),
        })
        .insert(Header {
            key: "wharf-txn-id",
            value: Some(txn_id),
        })
        .insert(Header {
            key: "wharf-txn-group",
            value: Some("shop"),
        });
    let record = FutureRecord::<str, str>::to("orders")
        .partition(0)
        .key(txn_id)
        .payload(txn_id)
        .headers(headers);
    producer
        .send(record, Duration::from_secs(30))
        .await
        .map_err(|(e, _)| e)
        .unwrap();
}

type Read = Vec<(String, BTreeMap<String, String>)>;

/// `(key, headers)` of every message of `topic`[0] (empty while the topic does not exist).
fn read_all(addr: &str, topic: &str) -> Read {
    let consumer: BaseConsumer = wharf_testkit::base_consumer(addr, &[]).unwrap();
    let Ok((_, high)) = consumer.fetch_watermarks(topic, 0, Duration::from_secs(5)) else {
        return Vec::new();
    };
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Beginning)
        .unwrap();
    consumer.assign(&tpl).unwrap();
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while i64::try_from(out.len()).unwrap() < high {
        assert!(Instant::now() < deadline, "reading {topic}");
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            let key = String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned();
            let headers = m.headers().map_or_else(BTreeMap::new, |hs| {
                hs.iter()
                    .map(|h| {
                        (
                            h.key.to_string(),
                            String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned(),
                        )
                    })
                    .collect()
            });
            out.push((key, headers));
        }
    }
    out
}

fn checks_of(read: &Read, txn_id: &str) -> Vec<String> {
    read.iter()
        .filter(|(k, _)| k == txn_id)
        .map(|(_, h)| h["wharf-txn-check-count"].clone())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn half_messages_commit_rollback_check_back_and_abandon_across_kill_9() {
    let (_dir, mut broker) = start_broker(&[]);
    let addr = broker.addr();
    wharf_testkit::create_topic(
        &addr,
        "orders",
        1,
        &[
            ("wharf.message.type", "transaction"),
            ("wharf.txn.check.after.ms", "1000"),
            ("wharf.txn.check.interval.ms", "700"),
            ("wharf.txn.check.max", "3"),
        ],
    )
    .await
    .unwrap();
    {
        let producer = wharf_testkit::producer(&addr, &[]).unwrap();
        for id in ["t-commit", "t-rollback", "t-check", "t-abandon"] {
            send(&producer, "prepare", id).await;
        }
        send(&producer, "commit", "t-commit").await;
        send(&producer, "commit", "t-commit").await;
        send(&producer, "rollback", "t-rollback").await;
    }
    tokio::task::block_in_place(|| {
        broker.kill9().unwrap();
        broker.restart().unwrap();
    });
    let producer = wharf_testkit::producer(&addr, &[]).unwrap();

    // The application answers the first check of t-check, and never t-abandon.
    tokio::task::block_in_place(|| {
        eventually("a check-back of t-check", || {
            !checks_of(&read_all(&addr, CHECK_TOPIC), "t-check").is_empty()
        });
    });
    send(&producer, "commit", "t-check").await;
    tokio::task::block_in_place(|| {
        eventually("t-abandon abandoned", || {
            !read_all(&addr, ABANDONED).is_empty()
        });
    });

    let (orders, checks, abandoned) = tokio::task::block_in_place(|| {
        (
            read_all(&addr, "orders"),
            read_all(&addr, CHECK_TOPIC),
            read_all(&addr, ABANDONED),
        )
    });
    let mut visible: Vec<&str> = orders.iter().map(|(k, _)| k.as_str()).collect();
    visible.sort_unstable();
    assert_eq!(
        visible,
        ["t-check", "t-commit"],
        "each committed record once, nothing else"
    );
    assert_eq!(checks_of(&checks, "t-abandon"), ["1", "2", "3"]);
    assert!(
        checks_of(&checks, "t-commit").is_empty() && checks_of(&checks, "t-rollback").is_empty()
    );
    assert!(checks.iter().all(|(_, h)| h["wharf-txn-topic"] == "orders"));
    assert_eq!(abandoned.len(), 1);
    assert_eq!(abandoned[0].0, "t-abandon");
    assert_eq!(abandoned[0].1["wharf-txn-id"], "t-abandon");
    let (_, metrics) = tokio::task::block_in_place(|| {
        crate::admin_http::get(&broker.admin_addr().unwrap(), "/metrics")
    });
    assert!(
        metrics.contains("wharf_txn_half_abandoned_total 1"),
        "abandonment counted:\n{metrics}"
    );
}
