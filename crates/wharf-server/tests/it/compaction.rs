//! Compacted topics through librdkafka against a broker process: the latest value per key is
//! what a consumer from the beginning reads, in offset order and at the offsets it was
//! written; tombstones go after `delete.retention.ms`; keyless records get INVALID_RECORD;
//! kill -9 in the middle of a segment swap loses nothing and duplicates nothing.
//! `WHARF_COMPACTION_RECORDS` / `WHARF_COMPACTION_KEYS` run the long mode
//! (100,000 over 1,000).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use kafka_protocol::messages::incremental_alter_configs_request::{
    AlterConfigsResource, AlterableConfig,
};
use kafka_protocol::messages::IncrementalAlterConfigsRequest;
use kafka_protocol::protocol::StrBytes;
use rdkafka::consumer::Consumer;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Message, Offset, TopicPartitionList};
use wharf_testkit::BrokerProcess;

use crate::{start_broker, wharf_bin};

/// offset → (key, value; None is a tombstone)
type Records = BTreeMap<i64, (String, Option<String>)>;

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// IncrementalAlterConfigs on a topic: (operation, key, value); 0 SET, 2 APPEND, 3 SUBTRACT.
async fn alter(addr: &str, topic: &str, ops: &[(i8, &str, &str)]) {
    let mut client = wharf_kafka::Client::connect(addr).await.unwrap();
    let configs = ops
        .iter()
        .map(|(op, k, v)| {
            AlterableConfig::default()
                .with_name(StrBytes::from_string((*k).to_string()))
                .with_config_operation(*op)
                .with_value(Some(StrBytes::from_string((*v).to_string())))
        })
        .collect();
    let request = IncrementalAlterConfigsRequest::default().with_resources(vec![
        AlterConfigsResource::default()
            .with_resource_type(2)
            .with_resource_name(StrBytes::from_string(topic.to_string()))
            .with_configs(configs),
    ]);
    let response = client.send(request).await.unwrap();
    let result = &response.responses[0];
    assert_eq!(result.error_code, 0, "{ops:?}: {:?}", result.error_message);
}

/// Sends every record at once (one future each) and returns them by offset.
async fn produce(
    producer: &FutureProducer,
    topic: &str,
    records: &[(String, Option<String>)],
) -> Records {
    let mut pending = Vec::with_capacity(records.len());
    for (key, value) in records {
        let mut record = FutureRecord::<String, String>::to(topic).key(key);
        if let Some(v) = value {
            record = record.payload(v);
        }
        pending.push(producer.send_result(record).map_err(|(e, _)| e).unwrap());
    }
    let mut out = Records::new();
    for (future, record) in pending.into_iter().zip(records) {
        let delivery = future.await.unwrap().map_err(|(e, _)| e).unwrap();
        out.insert(delivery.offset, record.clone());
    }
    out
}

/// The story: `count` updates over `keys` keys, then tombstones for every tenth key, then one
/// record of key `end` on its own (a log's last batch is never compacted).
async fn write_story(addr: &str, topic: &str, count: usize, keys: usize) -> Records {
    let producer = wharf_testkit::producer(addr, &[("acks", "all")]).unwrap();
    let updates: Vec<_> = (0..count)
        .map(|i| (format!("key-{}", i % keys), Some(format!("value-{i}"))))
        .collect();
    let mut written = produce(&producer, topic, &updates).await;
    let tombstones: Vec<_> = (0..keys)
        .step_by(10)
        .map(|k| (format!("key-{k}"), None))
        .collect();
    written.extend(produce(&producer, topic, &tombstones).await);
    // The tail's segment rolls (segment.ms) before the last record goes to a new one.
    tokio::time::sleep(Duration::from_millis(600)).await;
    written.extend(produce(&producer, topic, &[("end".into(), Some("last".into()))]).await);
    written
}

/// The latest record per key; tombstones only when `keep_tombstones`.
fn latest(written: &Records, keep_tombstones: bool) -> Records {
    let mut by_key: BTreeMap<&str, i64> = BTreeMap::new();
    for (offset, (key, _)) in written {
        by_key.insert(key, *offset);
    }
    by_key
        .values()
        .map(|o| (*o, written[o].clone()))
        .filter(|(_, (_, v))| keep_tombstones || v.is_some())
        .collect()
}

/// Everything a consumer from the beginning reads, up to the high watermark. Offsets rise
/// strictly (a duplicate or a step back fails here).
fn consume_all(addr: &str, topic: &str) -> Records {
    let (_, high) = wharf_testkit::watermarks(addr, topic, 1).unwrap()[&0];
    let consumer = wharf_testkit::base_consumer(addr, &[]).unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Beginning)
        .unwrap();
    consumer.assign(&tpl).unwrap();
    let mut out = Records::new();
    let mut last = -1;
    let deadline = Instant::now() + Duration::from_secs(60);
    while last + 1 < high {
        assert!(
            Instant::now() < deadline,
            "consumer stalled at {last} of {high}"
        );
        let Some(message) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let message = message.unwrap();
        assert!(
            message.offset() > last,
            "offset {} after {last}",
            message.offset()
        );
        last = message.offset();
        let key = String::from_utf8(message.key().unwrap_or_default().to_vec()).unwrap();
        let value = message
            .payload()
            .map(|p| String::from_utf8(p.to_vec()).unwrap());
        out.insert(message.offset(), (key, value));
    }
    out
}

fn log_bytes(data_dir: &Path) -> u64 {
    let shards = data_dir.join("shards");
    let mut total = 0;
    for shard in std::fs::read_dir(shards).unwrap() {
        for file in std::fs::read_dir(shard.unwrap().path()).unwrap() {
            let file = file.unwrap();
            if file.path().extension().is_some_and(|e| e == "log") {
                total += file.metadata().unwrap().len();
            }
        }
    }
    total
}

/// Polls until the consumer reads `want`; panics with the last read after 90 s.
async fn until_consumed(addr: &str, topic: &str, want: &Records) {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let (a, t) = (addr.to_string(), topic.to_string());
        let read = tokio::task::spawn_blocking(move || consume_all(&a, &t))
            .await
            .unwrap();
        if &read == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "never compacted to {} records; read {} (first {:?})",
            want.len(),
            read.len(),
            read.iter().next()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

const SETTINGS: [(&str, &str); 2] = [("shards", "1"), ("log_retention_check_interval_ms", "200")];

async fn new_topic(addr: &str, topic: &str) {
    wharf_testkit::create_topic(addr, topic, 1, &[("segment.ms", "300")])
        .await
        .unwrap();
}

async fn make_compacted(addr: &str, topic: &str) {
    // Kafka's way to a compacted topic with IncrementalAlterConfigs: APPEND compact, then
    // SUBTRACT delete.
    alter(addr, topic, &[(2, "cleanup.policy", "compact")]).await;
    alter(
        addr,
        topic,
        &[
            (3, "cleanup.policy", "delete"),
            (0, "min.cleanable.dirty.ratio", "0.01"),
            (0, "delete.retention.ms", "3600000"),
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_consumer_reads_the_latest_value_per_key_and_tombstones_expire() {
    let (_dir, broker) = start_broker(&SETTINGS);
    let addr = broker.addr();
    new_topic(&addr, "table").await;
    let count = env_or("WHARF_COMPACTION_RECORDS", 20_000);
    let keys = env_or("WHARF_COMPACTION_KEYS", 200);
    let written = write_story(&addr, "table", count, keys).await;
    // Compacted once written, so the bytes before are all there.
    let before = log_bytes(broker.data_dir());
    make_compacted(&addr, "table").await;

    let with_tombstones = latest(&written, true);
    until_consumed(&addr, "table", &with_tombstones).await;
    let after = log_bytes(broker.data_dir());
    assert!(after < before, "disk use {before} → {after}");
    let (_, metrics) = crate::admin_http::get(&broker.admin_addr().unwrap(), "/metrics");
    let reclaimed = metrics
        .lines()
        .find_map(|l| l.strip_prefix("wharf_storage_compaction_bytes_reclaimed_total "))
        .and_then(|v| v.trim().parse::<f64>().ok());
    assert!(reclaimed.is_some_and(|r| r > 0.0), "{metrics}");

    alter(&addr, "table", &[(0, "delete.retention.ms", "0")]).await;
    let live = latest(&written, false);
    assert_eq!(live.len(), keys - keys.div_ceil(10) + 1);
    until_consumed(&addr, "table", &live).await;
    eprintln!(
        "compaction: {count} records over {keys} keys; segment bytes {before} → {after} → {}",
        log_bytes(broker.data_dir())
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_keyless_record_on_a_compacted_topic_gets_invalid_record() {
    let (_dir, broker) = start_broker(&SETTINGS);
    let addr = broker.addr();
    wharf_testkit::create_topic(&addr, "keyed", 1, &[("cleanup.policy", "compact")])
        .await
        .unwrap();
    let producer = wharf_testkit::producer(&addr, &[("acks", "all")]).unwrap();
    let keyless = producer
        .send(
            FutureRecord::<str, str>::to("keyed").payload("no key"),
            Duration::from_secs(10),
        )
        .await;
    match keyless {
        Err((KafkaError::MessageProduction(code), _)) => {
            assert_eq!(code, RDKafkaErrorCode::InvalidRecord);
        }
        other => panic!("keyless record: {other:?}"),
    }
    producer
        .send(
            FutureRecord::to("keyed").key("k").payload("v"),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    assert_eq!(
        wharf_testkit::watermarks(&addr, "keyed", 1).unwrap()[&0],
        (0, 1)
    );
}

/// The broker aborts itself (the `log_cleaner_abort_at` hook, as kill -9 would) right after
/// each step of its first segment swap; restarted without the hook, a consumer reads each
/// record at the offset it was written, every latest value, nothing twice, and the next
/// cleaner pass finishes the job.
#[tokio::test(flavor = "multi_thread")]
async fn a_crash_in_the_middle_of_a_swap_loses_nothing() {
    for step in ["written", "index_removed", "renamed"] {
        let (_dir, mut broker) =
            start_broker(&[SETTINGS[0], SETTINGS[1], ("log_cleaner_abort_at", step)]);
        let addr = broker.addr();
        new_topic(&addr, "crashy").await;
        let written = write_story(&addr, "crashy", 5_000, 100).await;
        // Compacted only now, so the crash cannot cut the story short.
        make_compacted(&addr, "crashy").await;
        let deadline = Instant::now() + Duration::from_secs(60);
        while broker.is_running() {
            assert!(
                Instant::now() < deadline,
                "{step}: the cleaner never reached its step"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(
            broker.log().contains("cleaner_abort_at"),
            "{step}: {}",
            broker.log()
        );
        let data_dir = broker.data_dir().to_path_buf();
        drop(broker);

        let broker = BrokerProcess::start(wharf_bin(), &data_dir, &SETTINGS).unwrap();
        let addr = broker.addr();
        let (a, t) = (addr.clone(), "crashy".to_string());
        let read = tokio::task::spawn_blocking(move || consume_all(&a, &t))
            .await
            .unwrap();
        for (offset, record) in &read {
            assert_eq!(written.get(offset), Some(record), "{step}: offset {offset}");
        }
        for (offset, record) in latest(&written, true) {
            assert_eq!(
                read.get(&offset),
                Some(&record),
                "{step}: lost offset {offset}"
            );
        }
        until_consumed(&addr, "crashy", &latest(&written, true)).await;
    }
}

/// Coordinator state topics are compacted by the same cleaner.
#[tokio::test(flavor = "multi_thread")]
async fn coordinator_topics_are_compacted() {
    use rdkafka::admin::{AdminOptions, ResourceSpecifier};
    let (_dir, broker) = start_broker(&SETTINGS);
    let admin = wharf_testkit::admin(&broker.addr()).unwrap();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    for topic in ["__consumer_offsets", "__transaction_state"] {
        let described = admin
            .describe_configs([&ResourceSpecifier::Topic(topic)], &options)
            .await
            .unwrap();
        let resource = described[0].as_ref().unwrap();
        let policy = resource.get("cleanup.policy").and_then(|e| e.value.clone());
        assert_eq!(policy.as_deref(), Some("compact"), "{topic}");
    }
}
