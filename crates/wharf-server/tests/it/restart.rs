//! A restart with 1,000 partitions holding data brings every partition's offsets back.

use std::time::Duration;

use rdkafka::producer::FutureRecord;

use crate::start_broker;

#[tokio::test(flavor = "multi_thread")]
async fn thousand_partitions_keep_offsets_across_restart() {
    let (_dir, mut broker) = start_broker(&[]);
    let addr = broker.addr();
    wharf_testkit::create_topic(&addr, "wide", 1_000, &[])
        .await
        .unwrap();
    let p = wharf_testkit::producer(&addr, &[("acks", "all")]).unwrap();
    let mut fs = Vec::new();
    for partition in 0..1_000 {
        // Partition p gets p % 5 + 1 records, so offsets differ across partitions.
        for i in 0..=(partition % 5) {
            let v = format!("p{partition}-{i}");
            fs.push(
                p.send_result(
                    FutureRecord::<str, str>::to("wide")
                        .partition(partition)
                        .payload(&v),
                )
                .map_err(|(e, _)| e)
                .unwrap(),
            );
        }
    }
    for f in fs {
        f.await.unwrap().map_err(|(e, _)| e).unwrap();
    }
    let before = {
        let a = addr.clone();
        tokio::task::spawn_blocking(move || wharf_testkit::watermarks(&a, "wide", 1_000).unwrap())
            .await
            .unwrap()
    };
    for (partition, (lo, hi)) in &before {
        assert_eq!((*lo, *hi), (0, i64::from(partition % 5 + 1)));
    }
    assert!(broker.terminate().unwrap(), "clean shutdown on SIGTERM");
    broker.restart().unwrap();
    let a = addr.clone();
    let after =
        tokio::task::spawn_blocking(move || wharf_testkit::watermarks(&a, "wide", 1_000).unwrap())
            .await
            .unwrap();
    assert_eq!(before, after);
    // And after kill -9 as well.
    broker.kill9().unwrap();
    broker.restart().unwrap();
    let a = addr.clone();
    let after_kill =
        tokio::task::spawn_blocking(move || wharf_testkit::watermarks(&a, "wide", 1_000).unwrap())
            .await
            .unwrap();
    assert_eq!(before, after_kill);
    p.send(
        FutureRecord::<str, str>::to("wide")
            .partition(999)
            .payload("more"),
        Duration::from_secs(10),
    )
    .await
    .unwrap();
}
