//! The admin HTTP listener of a real broker process: `/health` answers while storage is
//! still being recovered and `/ready` only after, `/v1/topics` agrees with the Kafka
//! Metadata and ListOffsets APIs, and `admin_listen=off` turns the listener off.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use rdkafka::consumer::Consumer;
use rdkafka::producer::FutureRecord;
use serde_json::Value;
use wharf_testkit::BrokerProcess;

use crate::{eventually, start_broker, wharf_bin};

/// One `GET` over HTTP/1.1 with `Connection: close`: (status, body).
pub fn get(addr: &str, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, body.to_string())
}

/// `GET` expecting 200 and JSON.
pub fn get_json(addr: &str, path: &str) -> Value {
    let (status, body) = get(addr, path);
    assert_eq!(status, 200, "GET {path}: {body}");
    serde_json::from_str(&body).unwrap()
}

#[test]
fn ready_is_false_until_storage_recovery_is_done() {
    // The metadata file is a FIFO: opening the data directory blocks in recovery until the
    // test writes it, so the broker is observably alive but not ready.
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let meta = data.join("meta.json");
    let made = Command::new("mkfifo").arg(&meta).status().unwrap();
    assert!(made.success());
    let broker = BrokerProcess::start(wharf_bin(), &data, &[]).unwrap();
    let admin = broker.admin_addr().unwrap();

    let (status, body) = get(&admin, "/health");
    assert_eq!(status, 200, "{body}");
    for _ in 0..5 {
        let (status, body) = get(&admin, "/ready");
        assert_eq!(status, 503, "{body}");
        assert_eq!(
            serde_json::from_str::<Value>(&body).unwrap()["ready"],
            false
        );
        let (status, _) = get(&admin, "/v1/topics");
        assert_eq!(status, 503);
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(get(&admin, "/metrics").0, 200);

    std::fs::write(
        &meta,
        r#"{"cluster_id":"recovering","next_log_id":1,"topics":{}}"#,
    )
    .unwrap();
    eventually("/ready turns true", || get(&admin, "/ready").0 == 200);
    assert_eq!(get_json(&admin, "/ready")["ready"], true);
    assert_eq!(get_json(&admin, "/v1/cluster")["cluster_id"], "recovering");
    assert_eq!(get_json(&admin, "/health")["status"], "ok");
}

#[tokio::test(flavor = "multi_thread")]
async fn topics_match_the_metadata_api() {
    let (_dir, broker) = start_broker(&[]);
    let addr = broker.addr();
    let admin = broker.admin_addr().unwrap();
    wharf_testkit::create_topic(&addr, "orders", 3, &[("retention.ms", "86400000")])
        .await
        .unwrap();
    wharf_testkit::create_topic(&addr, "audit", 1, &[])
        .await
        .unwrap();
    let producer = wharf_testkit::producer(&addr, &[("acks", "all")]).unwrap();
    for i in 0..30 {
        let value = format!("order-{i}");
        producer
            .send(
                FutureRecord::<(), _>::to("orders")
                    .partition(i % 3)
                    .payload(&value),
                Duration::from_secs(10),
            )
            .await
            .unwrap();
    }

    let a = addr.clone();
    let (from_kafka, offsets) = tokio::task::spawn_blocking(move || {
        let consumer = wharf_testkit::base_consumer(&a, &[]).unwrap();
        let metadata = consumer
            .fetch_metadata(None, Duration::from_secs(10))
            .unwrap();
        let topics: BTreeMap<String, Vec<i32>> = metadata
            .topics()
            .iter()
            .map(|t| {
                (
                    t.name().to_string(),
                    t.partitions()
                        .iter()
                        .map(rdkafka::metadata::MetadataPartition::id)
                        .collect(),
                )
            })
            .collect();
        let offsets = wharf_testkit::watermarks(&a, "orders", 3).unwrap();
        (topics, offsets)
    })
    .await
    .unwrap();

    let topics = get_json(&admin, "/v1/topics");
    let from_admin: BTreeMap<String, Vec<i32>> = topics
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["name"].as_str().unwrap().to_string(),
                t["partitions"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|p| p["partition"].as_i64().unwrap() as i32)
                    .collect(),
            )
        })
        .collect();
    assert_eq!(from_admin, from_kafka);
    assert!(from_admin.contains_key("orders") && from_admin.contains_key("audit"));

    let orders = get_json(&admin, "/v1/topics/orders");
    assert_eq!(orders["internal"], false);
    let mut total = 0;
    for p in orders["partitions"].as_array().unwrap() {
        let index = p["partition"].as_i64().unwrap() as i32;
        let (low, high) = offsets[&index];
        assert_eq!(p["log_start_offset"].as_i64().unwrap(), low);
        assert_eq!(p["high_watermark"].as_i64().unwrap(), high);
        assert_eq!(high, 10);
        assert!(p["size_bytes"].as_u64().unwrap() > 0);
        total += p["size_bytes"].as_u64().unwrap();
    }
    assert_eq!(orders["size_bytes"].as_u64().unwrap(), total);
    let retention = orders["configs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "retention.ms")
        .unwrap()
        .clone();
    assert_eq!(retention["value"], "86400000");
    assert_eq!(retention["source"], "topic");
    assert_eq!(
        get_json(&admin, "/v1/topics/audit/configs")
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == "retention.ms")
            .unwrap()["source"],
        "default"
    );
    assert_eq!(get(&admin, "/v1/topics/missing").0, 404);
    assert_eq!(get(&admin, "/v1/nothing").0, 404);

    let cluster = get_json(&admin, "/v1/cluster");
    assert_eq!(cluster["brokers"].as_array().unwrap().len(), 1);
    assert_eq!(
        cluster["brokers"][0]["port"].as_i64().unwrap().to_string(),
        addr.rsplit_once(':').unwrap().1
    );
    assert_eq!(get_json(&admin, "/v1/broker")["ready"], true);
}

#[test]
fn admin_listener_can_be_turned_off() {
    let dir = tempfile::tempdir().unwrap();
    let off = BrokerProcess::start(
        wharf_bin(),
        &dir.path().join("data"),
        &[("admin_listen", "off")],
    )
    .unwrap();
    assert_eq!(off.admin_addr(), None);
    let consumer = wharf_testkit::base_consumer(&off.addr(), &[]).unwrap();
    consumer
        .fetch_metadata(None, Duration::from_secs(10))
        .unwrap();
    assert!(
        !off.log().contains("admin HTTP listener started"),
        "{}",
        off.log()
    );

    let (_dir, on) = start_broker(&[]);
    assert_eq!(get(&on.admin_addr().unwrap(), "/health").0, 200);
    assert!(on.log().contains("admin HTTP listener started"));
}
