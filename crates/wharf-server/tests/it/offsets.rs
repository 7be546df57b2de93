//! ListOffsets by timestamp, earliest and latest, around DeleteRecords.

use std::time::Duration;

use rdkafka::admin::AdminOptions;
use rdkafka::consumer::Consumer;
use rdkafka::producer::FutureRecord;
use rdkafka::{Offset, TopicPartitionList};

use crate::start_broker;

fn offset_for_time(addr: &str, topic: &str, ts: i64) -> Offset {
    let c = wharf_testkit::base_consumer(addr, &[]).unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Offset(ts))
        .unwrap();
    let r = c.offsets_for_times(tpl, Duration::from_secs(10)).unwrap();
    r.elements()[0].offset()
}

#[tokio::test(flavor = "multi_thread")]
async fn timestamp_lookup_and_watermarks_follow_delete_records() {
    let (_dir, broker) = start_broker(&[]);
    let addr = broker.addr();
    wharf_testkit::create_topic(&addr, "clock", 1, &[])
        .await
        .unwrap();
    let base: i64 = 1_700_000_000_000;
    // 50 records, 10 ms apart; several per batch, so lookup must go inside batches.
    let p = wharf_testkit::producer(&addr, &[("acks", "all"), ("linger.ms", "20")]).unwrap();
    let mut fs = Vec::new();
    for i in 0..50i64 {
        let v = format!("v{i}");
        fs.push(
            p.send_result(
                FutureRecord::to("clock")
                    .key("k")
                    .payload(&v)
                    .timestamp(base + i * 10),
            )
            .map_err(|(e, _)| e)
            .unwrap(),
        );
    }
    for f in fs {
        f.await.unwrap().map_err(|(e, _)| e).unwrap();
    }
    let a = addr.clone();
    tokio::task::spawn_blocking(move || {
        assert_eq!(offset_for_time(&a, "clock", base), Offset::Offset(0));
        assert_eq!(offset_for_time(&a, "clock", base + 10), Offset::Offset(1));
        assert_eq!(
            offset_for_time(&a, "clock", base + 55),
            Offset::Offset(6),
            "first record at or after"
        );
        assert_eq!(offset_for_time(&a, "clock", base + 490), Offset::Offset(49));
        assert_eq!(
            offset_for_time(&a, "clock", base + 491),
            Offset::End,
            "none after: -1"
        );
        assert_eq!(
            wharf_testkit::watermarks(&a, "clock", 1).unwrap()[&0],
            (0, 50)
        );
    })
    .await
    .unwrap();

    let admin = wharf_testkit::admin(&addr).unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset("clock", 0, Offset::Offset(20))
        .unwrap();
    let r = admin
        .delete_records(&tpl, &AdminOptions::new())
        .await
        .unwrap();
    assert_eq!(r.elements()[0].offset(), Offset::Offset(20));
    assert!(r.elements()[0].error().is_ok());
    let a = addr.clone();
    tokio::task::spawn_blocking(move || {
        assert_eq!(
            wharf_testkit::watermarks(&a, "clock", 1).unwrap()[&0],
            (20, 50)
        );
        // A timestamp before the new log start finds the log start.
        assert_eq!(offset_for_time(&a, "clock", base), Offset::Offset(20));
    })
    .await
    .unwrap();
    // Beyond the high watermark: OFFSET_OUT_OF_RANGE for that partition.
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset("clock", 0, Offset::Offset(51))
        .unwrap();
    let r = admin
        .delete_records(&tpl, &AdminOptions::new())
        .await
        .unwrap();
    assert!(r.elements()[0].error().is_err());
}
