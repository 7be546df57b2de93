//! Kafka's client-visible contract, as librdkafka's own test suite checks it: request order
//! on one connection, Fetch size limits (KIP-74), deprecated topic configs and list-valued
//! config operations, hostile-client logging, and the CLI's `--bootstrap-server`.

use std::time::{Duration, Instant};

use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::{ApiKey, FetchRequest, RequestHeader, TopicName};
use kafka_protocol::protocol::{Encodable, StrBytes};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::producer::FutureRecord;
use rdkafka::{Message, Offset, TopicPartitionList};

use crate::start_broker;

/// librdkafka sends OffsetCommit and OffsetFetch to the coordinator on one connection: a
/// `committed()` right after an asynchronous commit must see that commit.
#[tokio::test(flavor = "multi_thread")]
async fn committed_sees_the_async_commit_sent_before_it() {
    let (_dir, broker) = start_broker(&[]);
    let addr = broker.addr();
    wharf_testkit::create_topic(&addr, "ordered", 1, &[])
        .await
        .unwrap();
    tokio::task::spawn_blocking(move || {
        let consumer =
            wharf_testkit::base_consumer(&addr, &[("group.id", "ordered-group")]).unwrap();
        // Once the coordinator is known: librdkafka defers a commit made before that, and a
        // committed() meanwhile is not ordered after it by the client itself.
        let mut first = TopicPartitionList::new();
        first
            .add_partition_offset("ordered", 0, Offset::Offset(0))
            .unwrap();
        consumer.commit(&first, CommitMode::Sync).unwrap();
        for offset in 1..=100 {
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition_offset("ordered", 0, Offset::Offset(offset))
                .unwrap();
            consumer.commit(&tpl, CommitMode::Async).unwrap();
            let committed = consumer
                .committed_offsets(tpl, Duration::from_secs(10))
                .unwrap();
            assert_eq!(
                committed.elements()[0].offset(),
                Offset::Offset(offset),
                "committed() after the asynchronous commit of {offset}"
            );
        }
    })
    .await
    .unwrap();
}

/// One request frame (size, header, body) at `version`.
fn request_frame<R: kafka_protocol::protocol::Encodable>(
    api: ApiKey,
    version: i16,
    correlation_id: i32,
    body: &R,
) -> Vec<u8> {
    let mut bytes = Vec::new();
    RequestHeader::default()
        .with_request_api_key(api as i16)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .encode(&mut bytes, api.request_header_version(version))
        .unwrap();
    body.encode(&mut bytes, version).unwrap();
    let mut frame = i32::try_from(bytes.len()).unwrap().to_be_bytes().to_vec();
    frame.extend_from_slice(&bytes);
    frame
}

/// Admin requests pipelined on one connection, written at once before any answer is read,
/// take effect in request order: each Metadata sees the change just before it.
#[test]
fn pipelined_admin_requests_take_effect_in_request_order() {
    use std::io::{Read, Write};
    use std::net::TcpStream;

    use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
    use kafka_protocol::messages::create_topics_request::CreatableTopic;
    use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
    use kafka_protocol::messages::{
        CreatePartitionsRequest, CreateTopicsRequest, DeleteTopicsRequest, MetadataRequest,
        MetadataResponse, ResponseHeader,
    };
    use kafka_protocol::protocol::Decodable;

    const METADATA_VERSION: i16 = 4;
    let (_dir, broker) = start_broker(&[("auto_create_topics", "false")]);
    let name = TopicName(StrBytes::from_static_str("pipelined"));
    let metadata = MetadataRequest::default()
        .with_topics(Some(vec![
            MetadataRequestTopic::default().with_name(Some(name.clone()))
        ]))
        .with_allow_auto_topic_creation(false);
    let mut stream = TcpStream::connect(broker.addr()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut requests = Vec::new();
    requests.extend(request_frame(
        ApiKey::CreateTopics,
        4,
        1,
        &CreateTopicsRequest::default()
            .with_topics(vec![CreatableTopic::default()
                .with_name(name.clone())
                .with_num_partitions(3)
                .with_replication_factor(1)])
            .with_timeout_ms(10_000),
    ));
    requests.extend(request_frame(
        ApiKey::Metadata,
        METADATA_VERSION,
        2,
        &metadata,
    ));
    requests.extend(request_frame(
        ApiKey::CreatePartitions,
        1,
        3,
        &CreatePartitionsRequest::default()
            .with_topics(vec![CreatePartitionsTopic::default()
                .with_name(name.clone())
                .with_count(5)])
            .with_timeout_ms(10_000),
    ));
    requests.extend(request_frame(
        ApiKey::Metadata,
        METADATA_VERSION,
        4,
        &metadata,
    ));
    requests.extend(request_frame(
        ApiKey::DeleteTopics,
        1,
        5,
        &DeleteTopicsRequest::default()
            .with_topic_names(vec![name.clone()])
            .with_timeout_ms(10_000),
    ));
    requests.extend(request_frame(
        ApiKey::Metadata,
        METADATA_VERSION,
        6,
        &metadata,
    ));
    stream.write_all(&requests).unwrap();

    // (error code, partitions) each Metadata answer must show: created, grown, deleted.
    let expected = [(0, 3), (0, 5), (3, 0)];
    let mut seen = Vec::new();
    for correlation_id in 1..=6 {
        let mut size = [0u8; 4];
        stream.read_exact(&mut size).unwrap();
        let mut body = vec![0u8; usize::try_from(i32::from_be_bytes(size)).unwrap()];
        stream.read_exact(&mut body).unwrap();
        let mut body = body.as_slice();
        let api = [
            ApiKey::CreateTopics,
            ApiKey::Metadata,
            ApiKey::CreatePartitions,
            ApiKey::Metadata,
            ApiKey::DeleteTopics,
            ApiKey::Metadata,
        ][correlation_id as usize - 1];
        let version = if api == ApiKey::Metadata {
            METADATA_VERSION
        } else {
            1
        };
        let header =
            ResponseHeader::decode(&mut body, api.response_header_version(version)).unwrap();
        assert_eq!(
            header.correlation_id, correlation_id,
            "responses in request order"
        );
        if api == ApiKey::Metadata {
            let response = MetadataResponse::decode(&mut body, version).unwrap();
            let topic = &response.topics[0];
            seen.push((topic.error_code, topic.partitions.len()));
        }
    }
    assert_eq!(
        seen, expected,
        "Metadata after CreateTopics, CreatePartitions, DeleteTopics"
    );
}

const BIG_TOPIC: &str = "big-batches";
const BIG_PARTITIONS: i32 = 6;
const RECORD_BYTES: usize = 10_000;
const RECORDS_PER_PARTITION: usize = 160;
/// The consumer's `fetch.max.bytes` and the raw Fetch's `max_bytes`: 1 MiB.
const FETCH_MAX_BYTES: usize = 1_048_576;

/// Six partitions of ~400 KB batches (40 records of 10 KB each).
async fn produce_big_batches(addr: &str) {
    wharf_testkit::create_topic(addr, BIG_TOPIC, BIG_PARTITIONS, &[])
        .await
        .unwrap();
    let p = wharf_testkit::producer(
        addr,
        &[
            ("acks", "all"),
            ("batch.size", "409600"),
            ("linger.ms", "100"),
            ("compression.type", "none"),
        ],
    )
    .unwrap();
    let payload = vec![b'x'; RECORD_BYTES];
    let mut sent = Vec::new();
    for i in 0..RECORDS_PER_PARTITION {
        for partition in 0..BIG_PARTITIONS {
            let key = format!("{partition}-{i}");
            sent.push(
                p.send_result(
                    FutureRecord::to(BIG_TOPIC)
                        .partition(partition)
                        .key(&key)
                        .payload(&payload),
                )
                .map_err(|(e, _)| e)
                .unwrap(),
            );
        }
    }
    for s in sent {
        s.await.unwrap().map_err(|(e, _)| e).unwrap();
    }
}

/// The stored batch lengths in `records`, from their v2 headers.
fn batch_lengths(records: &[u8]) -> Vec<usize> {
    let mut lengths = Vec::new();
    let mut at = 0;
    while at + 12 <= records.len() {
        let len = i32::from_be_bytes(records[at + 8..at + 12].try_into().unwrap()) as usize + 12;
        lengths.push(len);
        at += len;
    }
    lengths
}

/// A consumer with `fetch.max.bytes` = 1 MiB (and the smallest receive buffer librdkafka
/// allows for it) reads six partitions of 400 KB batches without a size error.
#[tokio::test(flavor = "multi_thread")]
async fn consumer_with_small_fetch_max_bytes_reads_large_batches() {
    let (_dir, broker) = start_broker(&[]);
    let addr = broker.addr();
    produce_big_batches(&addr).await;
    tokio::task::spawn_blocking(move || {
        let max = FETCH_MAX_BYTES.to_string();
        let receive = (FETCH_MAX_BYTES + 512).to_string();
        let consumer: BaseConsumer = wharf_testkit::base_consumer(
            &addr,
            &[
                ("fetch.max.bytes", max.as_str()),
                ("receive.message.max.bytes", receive.as_str()),
            ],
        )
        .unwrap();
        let mut tpl = TopicPartitionList::new();
        for partition in 0..BIG_PARTITIONS {
            tpl.add_partition_offset(BIG_TOPIC, partition, Offset::Beginning)
                .unwrap();
        }
        consumer.assign(&tpl).unwrap();
        let want = RECORDS_PER_PARTITION * BIG_PARTITIONS as usize;
        let mut got = 0;
        let deadline = Instant::now() + Duration::from_secs(60);
        while got < want {
            assert!(Instant::now() < deadline, "read {got} of {want} records");
            match consumer.poll(Duration::from_millis(200)) {
                Some(Ok(m)) => {
                    assert_eq!(m.payload().map(<[u8]>::len), Some(RECORD_BYTES));
                    got += 1;
                }
                Some(Err(e)) => panic!("consumer error after {got} records: {e}"),
                None => {}
            }
        }
    })
    .await
    .unwrap();
}

/// A raw Fetch over the six partitions: the response holds at most `max_bytes` of records
/// and each partition at most `partition_max_bytes`, except that the first batch of the
/// first non-empty partition is returned whatever its size (KIP-74).
#[tokio::test(flavor = "multi_thread")]
async fn fetch_response_honours_max_bytes_and_partition_max_bytes() {
    let (_dir, broker) = start_broker(&[]);
    let addr = broker.addr();
    produce_big_batches(&addr).await;
    let mut client = wharf_kafka::Client::connect(&addr).await.unwrap();
    // (max_bytes, partition_max_bytes): the response budget binds; then the partition's.
    for (max_bytes, partition_max_bytes) in [
        (FETCH_MAX_BYTES, FETCH_MAX_BYTES),
        (FETCH_MAX_BYTES, 100_000),
    ] {
        let request = FetchRequest::default()
            .with_replica_id(kafka_protocol::messages::BrokerId(-1))
            .with_max_wait_ms(0)
            .with_min_bytes(1)
            .with_max_bytes(i32::try_from(max_bytes).unwrap())
            .with_topics(vec![FetchTopic::default()
                .with_topic(TopicName(StrBytes::from_static_str(BIG_TOPIC)))
                .with_partitions(
                    (0..BIG_PARTITIONS)
                        .map(|p| {
                            FetchPartition::default()
                                .with_partition(p)
                                .with_fetch_offset(0)
                                .with_partition_max_bytes(
                                    i32::try_from(partition_max_bytes).unwrap(),
                                )
                        })
                        .collect(),
                )]);
        let response = client.send(request).await.unwrap();
        assert_eq!(response.error_code, 0);
        let partitions: Vec<Vec<usize>> = response.responses[0]
            .partitions
            .iter()
            .map(|p| {
                assert_eq!(p.error_code, 0);
                batch_lengths(p.records.as_deref().unwrap_or_default())
            })
            .collect();
        let sizes: Vec<usize> = partitions.iter().map(|b| b.iter().sum()).collect();
        let total: usize = sizes.iter().sum();
        assert!(total > 0, "some records are returned");
        let first = sizes.iter().position(|&s| s > 0).unwrap();
        let oversized_first = partitions[first].len() == 1;
        assert!(
            total <= max_bytes
                || (oversized_first && sizes.iter().filter(|&&s| s > 0).count() == 1),
            "max_bytes {max_bytes}, partition_max_bytes {partition_max_bytes}: \
             {total} bytes returned, per partition {sizes:?}"
        );
        for (i, size) in sizes.iter().enumerate() {
            assert!(
                *size <= partition_max_bytes || (i == first && partitions[i].len() == 1),
                "partition_max_bytes {partition_max_bytes}: partition {i} returned {size} \
                 bytes in {} batches (per partition {sizes:?})",
                partitions[i].len()
            );
        }
    }
}

/// Configs Kafka 3.x still accepts as deprecated no-ops are accepted on CreateTopics and
/// AlterConfigs; IncrementalAlterConfigs APPEND and SUBTRACT edit `cleanup.policy` as a list
/// and the result is validated as usual.
#[tokio::test(flavor = "multi_thread")]
async fn deprecated_configs_are_accepted_and_list_configs_append_and_subtract() {
    use kafka_protocol::messages::incremental_alter_configs_request::{
        AlterConfigsResource, AlterableConfig,
    };
    use kafka_protocol::messages::IncrementalAlterConfigsRequest;
    use rdkafka::admin::{AdminOptions, AlterConfig, ResourceSpecifier};

    let (_dir, broker) = start_broker(&[]);
    let addr = broker.addr();
    wharf_testkit::create_topic(
        &addr,
        "legacy",
        1,
        &[
            ("message.format.version", "2.8-IV1"),
            ("message.downconversion.enable", "false"),
        ],
    )
    .await
    .unwrap();
    let admin = wharf_testkit::admin(&addr).unwrap();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let altered = admin
        .alter_configs(
            [&AlterConfig::new(ResourceSpecifier::Topic("legacy"))
                .set("message.format.version", "3.0-IV1")
                .set("retention.ms", "60000")],
            &options,
        )
        .await
        .unwrap();
    assert!(altered[0].is_ok(), "{altered:?}");

    let mut client = wharf_kafka::Client::connect(&addr).await.unwrap();
    // (operation, key, value) → the error code the topic resource gets.
    let cases: [(i8, &str, &str, i16); 7] = [
        (2, "cleanup.policy", "delete", 0), // APPEND what is there: still delete
        (3, "cleanup.policy", "compact", 0), // SUBTRACT what is not there: unchanged
        (2, "cleanup.policy", "compact", 0), // APPEND compact: compact,delete
        (2, "cleanup.policy", "archive", 40), // APPEND an unknown policy
        (3, "cleanup.policy", "delete", 0), // SUBTRACT delete: compact alone
        (3, "cleanup.policy", "compact", 40), // SUBTRACT compact too: an empty policy
        (2, "retention.ms", "1", 40),       // APPEND to a value that is not a list
    ];
    for (operation, key, value, want) in cases {
        let request = IncrementalAlterConfigsRequest::default().with_resources(vec![
            AlterConfigsResource::default()
                .with_resource_type(2)
                .with_resource_name(StrBytes::from_static_str("legacy"))
                .with_configs(vec![AlterableConfig::default()
                    .with_name(StrBytes::from_string(key.to_string()))
                    .with_config_operation(operation)
                    .with_value(Some(StrBytes::from_string(value.to_string())))]),
        ]);
        let response = client.send(request).await.unwrap();
        let result = &response.responses[0];
        assert_eq!(
            result.error_code, want,
            "operation {operation} {key} {value}: {:?}",
            result.error_message
        );
    }

    let described = admin
        .describe_configs([&ResourceSpecifier::Topic("legacy")], &options)
        .await
        .unwrap();
    let resource = described[0].as_ref().unwrap();
    let value = |name: &str| resource.get(name).and_then(|e| e.value.clone());
    assert_eq!(value("cleanup.policy").as_deref(), Some("compact"));
    assert_eq!(value("retention.ms").as_deref(), Some("60000"));
    assert_eq!(value("message.format.version").as_deref(), Some("3.0-IV1"));
}

/// One frame of each kind a hostile client sends, each rejected with its reason.
fn garbage_frames() -> [(&'static str, Vec<u8>); 4] {
    let header = |api_key: i16, version: i16| {
        let mut frame = 10i32.to_be_bytes().to_vec();
        frame.extend_from_slice(&api_key.to_be_bytes());
        frame.extend_from_slice(&version.to_be_bytes());
        frame.extend_from_slice(&7i32.to_be_bytes());
        frame.extend_from_slice(&(-1i16).to_be_bytes());
        frame
    };
    [
        ("oversized", 0x7fff_ffffi32.to_be_bytes().to_vec()),
        ("malformed", (-5i32).to_be_bytes().to_vec()),
        ("unknown_api", header(999, 0)),
        ("unsupported_version", header(0, 0)), // Produce v0
    ]
}

/// 100,000 rejected frames (over 8 connections at a time, each closed by the broker) leave
/// the broker's log small, and `wharf_kafka_rejected_requests_total` counts each by reason.
#[test]
fn a_flood_of_bad_frames_is_counted_not_logged_line_by_line() {
    use std::io::{Read, Write};
    use std::net::TcpStream;

    const FRAMES: usize = 100_000;
    const CLIENTS: usize = 8;
    let (_dir, broker) = start_broker(&[]);
    let addr = broker.addr();
    let started = Instant::now();
    std::thread::scope(|s| {
        for client in 0..CLIENTS {
            let addr = addr.clone();
            s.spawn(move || {
                let frames = garbage_frames();
                for i in (client..FRAMES).step_by(CLIENTS) {
                    let mut stream = TcpStream::connect(&addr).unwrap();
                    stream
                        .set_read_timeout(Some(Duration::from_secs(30)))
                        .unwrap();
                    stream.write_all(&frames[i % frames.len()].1).unwrap();
                    let mut rest = Vec::new();
                    let _ = stream.read_to_end(&mut rest);
                    assert!(rest.is_empty(), "a bad frame gets no answer");
                }
            });
        }
    });
    assert!(
        started.elapsed() < Duration::from_secs(240),
        "the flood took {:?}",
        started.elapsed()
    );
    let admin = broker.admin_addr().unwrap();
    let (status, metrics) = crate::admin_http::get(&admin, "/metrics");
    assert_eq!(status, 200);
    for (reason, _) in garbage_frames() {
        let line = format!("wharf_kafka_rejected_requests_total{{reason=\"{reason}\"}} ");
        let count = metrics
            .lines()
            .find_map(|l| l.strip_prefix(line.as_str()))
            .unwrap_or_else(|| panic!("no {line} in:\n{metrics}"));
        assert_eq!(count.trim(), (FRAMES / 4).to_string(), "{reason}");
    }
    // The summary of what was rejected reaches the log within its interval.
    crate::eventually("a rejection summary in the broker log", || {
        broker.log().contains("rejected requests")
    });
    let log_bytes = broker.log().len();
    assert!(
        log_bytes < 1024 * 1024,
        "{FRAMES} bad frames wrote {log_bytes} bytes of broker log"
    );
}

/// `--bootstrap-server` is accepted after the subcommand too, as kafka-topics.sh takes it.
#[tokio::test(flavor = "multi_thread")]
async fn bootstrap_server_is_accepted_after_the_subcommand() {
    let (_dir, broker) = start_broker(&[]);
    let addr = broker.addr();
    wharf_testkit::create_topic(&addr, "anywhere", 1, &[])
        .await
        .unwrap();
    for args in [
        vec!["topic", "list", "--bootstrap-server", addr.as_str()],
        vec!["topic", "--bootstrap-server", addr.as_str(), "list"],
        vec!["group", "list", "--bootstrap-server", addr.as_str()],
        vec!["txn", "list", "--bootstrap-server", addr.as_str()],
    ] {
        let out = std::process::Command::new(crate::wharf_bin())
            .args(&args)
            .env_remove("WHARF_BOOTSTRAP")
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "wharf {}: {text}", args.join(" "));
        if args[0] == "topic" {
            assert!(text.lines().any(|l| l.trim() == "anywhere"), "{text}");
        }
    }
}
