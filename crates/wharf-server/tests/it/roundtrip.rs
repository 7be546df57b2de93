//! librdkafka produces keyed messages with headers and reads them back by assign().

use std::collections::HashMap;
use std::time::Duration;

use rdkafka::consumer::Consumer;
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::FutureRecord;
use rdkafka::{Offset, TopicPartitionList};

use crate::start_broker;

const N: usize = 100_000;

struct Got {
    partition: i32,
    offset: i64,
    key: Vec<u8>,
    value: Vec<u8>,
    headers: Vec<(String, Vec<u8>)>,
}

/// Reads `expected` messages from every partition of `topic` from offset 0.
fn consume_all(addr: &str, topic: &str, partitions: i32, expected: usize) -> Vec<Got> {
    let consumer = wharf_testkit::base_consumer(addr, &[]).unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let mut out = Vec::with_capacity(expected);
    let deadline = std::time::Instant::now() + Duration::from_secs(300);
    while out.len() < expected {
        assert!(
            std::time::Instant::now() < deadline,
            "consumed only {} of {expected}",
            out.len()
        );
        let Some(m) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let m = m.unwrap();
        let headers = m
            .headers()
            .map(|h| {
                h.iter()
                    .map(|h| (h.key.to_string(), h.value.unwrap_or_default().to_vec()))
                    .collect()
            })
            .unwrap_or_default();
        out.push(Got {
            partition: m.partition(),
            offset: m.offset(),
            key: m.key().unwrap_or_default().to_vec(),
            value: m.payload().unwrap_or_default().to_vec(),
            headers,
        });
    }
    // Nothing beyond what was produced.
    assert!(
        consumer.poll(Duration::from_millis(500)).is_none(),
        "more messages than produced"
    );
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn hundred_thousand_keyed_messages_round_trip_in_key_order() {
    let (_dir, broker) = start_broker(&[]);
    let addr = broker.addr();
    wharf_testkit::create_topic(&addr, "orders", 6, &[])
        .await
        .unwrap();
    let producer = wharf_testkit::producer(
        &addr,
        &[("acks", "all"), ("queue.buffering.max.messages", "200000")],
    )
    .unwrap();
    let mut deliveries = Vec::with_capacity(N);
    for i in 0..N {
        let key = format!("customer-{}", i % 997);
        let value = format!("order-{i}-{}", "x".repeat(i % 50));
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: "seq",
                value: Some(&i.to_string()),
            })
            .insert(Header {
                key: "source",
                value: Some("roundtrip"),
            });
        let record = FutureRecord::to("orders")
            .key(&key)
            .payload(&value)
            .headers(headers);
        deliveries.push(producer.send_result(record).map_err(|(e, _)| e).unwrap());
    }
    let mut acked = 0;
    for d in deliveries {
        d.await.unwrap().map_err(|(e, _)| e).unwrap();
        acked += 1;
    }
    assert_eq!(acked, N);

    let got = tokio::task::spawn_blocking(move || consume_all(&addr, "orders", 6, N))
        .await
        .unwrap();
    assert_eq!(got.len(), N);
    let mut key_partition: HashMap<Vec<u8>, i32> = HashMap::new();
    let mut last_seq_of_key: HashMap<Vec<u8>, usize> = HashMap::new();
    let mut last_offset: HashMap<i32, i64> = HashMap::new();
    let mut seen = vec![false; N];
    for g in &got {
        let seq: usize = String::from_utf8(g.headers[0].1.clone())
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(g.headers[0].0, "seq");
        assert_eq!(g.headers[1], ("source".to_string(), b"roundtrip".to_vec()));
        assert_eq!(g.key, format!("customer-{}", seq % 997).into_bytes());
        assert_eq!(
            g.value,
            format!("order-{seq}-{}", "x".repeat(seq % 50)).into_bytes()
        );
        assert!(!seen[seq], "message {seq} read twice");
        seen[seq] = true;
        // Each key stays on one partition, in produce order.
        let p = *key_partition.entry(g.key.clone()).or_insert(g.partition);
        assert_eq!(p, g.partition, "key moved partitions");
        if let Some(prev) = last_seq_of_key.insert(g.key.clone(), seq) {
            assert!(prev < seq, "key order broken: {prev} then {seq}");
        }
        if let Some(prev) = last_offset.insert(g.partition, g.offset) {
            assert_eq!(
                g.offset,
                prev + 1,
                "partition {} offsets not contiguous",
                g.partition
            );
        }
    }
    assert!(seen.iter().all(|s| *s));
    assert_eq!(last_offset.len(), 6, "all partitions used");
}

#[tokio::test(flavor = "multi_thread")]
async fn every_compression_codec_round_trips() {
    let (_dir, broker) = start_broker(&[]);
    let addr = broker.addr();
    for codec in ["gzip", "snappy", "lz4", "zstd"] {
        let topic = format!("codec-{codec}");
        wharf_testkit::create_topic(&addr, &topic, 2, &[])
            .await
            .unwrap();
        let producer =
            wharf_testkit::producer(&addr, &[("compression.type", codec), ("acks", "1")]).unwrap();
        let mut futures = Vec::new();
        for i in 0..2_000 {
            let value = format!("{codec} payload {i} {}", "compressible ".repeat(20));
            let key = format!("k{}", i % 10);
            futures.push(
                producer
                    .send_result(FutureRecord::to(&topic).key(&key).payload(&value))
                    .map_err(|(e, _)| e)
                    .unwrap(),
            );
        }
        for f in futures {
            f.await.unwrap().map_err(|(e, _)| e).unwrap();
        }
        let a = addr.clone();
        let t = topic.clone();
        let got = tokio::task::spawn_blocking(move || consume_all(&a, &t, 2, 2_000))
            .await
            .unwrap();
        let mut values: Vec<String> = got
            .iter()
            .map(|g| String::from_utf8(g.value.clone()).unwrap())
            .collect();
        values.sort();
        let mut expected: Vec<String> = (0..2_000)
            .map(|i| format!("{codec} payload {i} {}", "compressible ".repeat(20)))
            .collect();
        expected.sort();
        assert_eq!(values, expected, "codec {codec}");
    }
    // The batches were stored compressed, as sent: the data on disk is far smaller than the
    // 4 × 2,000 × ~280 bytes of plain payload.
    let on_disk: u64 = walk_size(&broker.data_dir().join("shards"));
    assert!(
        on_disk < 4 * 2_000 * 280 / 2,
        "stored {on_disk} bytes: batches were not kept compressed"
    );
}

fn walk_size(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let m = e.metadata().unwrap();
            if m.is_dir() {
                walk_size(&e.path())
            } else {
                m.len()
            }
        })
        .sum()
}
