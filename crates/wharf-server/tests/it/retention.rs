//! Retention by time: expired segments leave the disk, the log start moves, and a consumer
//! asking for offset 0 is reset by auto.offset.reset.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rdkafka::consumer::Consumer;
use rdkafka::producer::FutureRecord;
use rdkafka::{Message, Offset, TopicPartitionList};

use crate::{eventually, start_broker};

fn segment_files(dir: &std::path::Path) -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(dir.join("shards/0"))
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str().map(str::to_string))
        .filter(|n| {
            std::path::Path::new(n)
                .extension()
                .is_some_and(|e| e == "log")
        })
        .collect();
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn expired_data_leaves_disk_and_consumers_reset() {
    let (_dir, broker) =
        start_broker(&[("shards", "1"), ("log_retention_check_interval_ms", "100")]);
    let addr = broker.addr();
    wharf_testkit::create_topic(
        &addr,
        "ephemeral",
        1,
        &[("retention.ms", "60000"), ("segment.ms", "200")],
    )
    .await
    .unwrap();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let p = wharf_testkit::producer(&addr, &[("acks", "all")]).unwrap();
    // 100 records stamped an hour ago: already past retention.ms.
    for i in 0..100 {
        let v = format!("old-{i}");
        p.send(
            FutureRecord::<str, str>::to("ephemeral")
                .payload(&v)
                .timestamp(now - 3_600_000),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    }
    let first_segment = segment_files(broker.data_dir())[0].clone();
    let a = addr.clone();
    tokio::task::spawn_blocking(move || {
        eventually("log start moves past expired records", || {
            wharf_testkit::watermarks(&a, "ephemeral", 1).unwrap()[&0] == (100, 100)
        });
    })
    .await
    .unwrap();
    let dir = broker.data_dir().to_path_buf();
    eventually("the expired segment file is deleted", || {
        !segment_files(&dir).contains(&first_segment)
    });

    // Fresh records stay.
    for i in 0..10 {
        let v = format!("new-{i}");
        p.send(
            FutureRecord::<str, str>::to("ephemeral").payload(&v),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    }
    let a = addr.clone();
    tokio::task::spawn_blocking(move || {
        let c = wharf_testkit::base_consumer(&a, &[("auto.offset.reset", "earliest")]).unwrap();
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset("ephemeral", 0, Offset::Offset(0))
            .unwrap();
        c.assign(&tpl).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            assert!(
                std::time::Instant::now() < deadline,
                "no message after offset reset"
            );
            if let Some(m) = c.poll(Duration::from_millis(200)) {
                let m = m.unwrap();
                assert_eq!(m.offset(), 100, "reset to the log start");
                assert_eq!(m.payload().unwrap(), b"new-0");
                break;
            }
        }
    })
    .await
    .unwrap();
}
