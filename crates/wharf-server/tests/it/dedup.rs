//! Deduplication by `wharf-msg-id` (`wharf.dedup.window.ms`) with librdkafka against a real
//! broker process: the same id produced three times within the window is stored once, also
//! when a kill -9 and restart come between the copies; after the window it is stored again.

use std::time::{Duration, Instant};

use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};

use crate::start_broker;

const WINDOW_MS: u64 = 6_000;

async fn send(producer: &FutureProducer, msg_id: &str) -> i64 {
    let headers = OwnedHeaders::new().insert(Header {
        key: "wharf-msg-id",
        value: Some(msg_id),
    });
    let record = FutureRecord::<str, str>::to("once")
        .partition(0)
        .payload(msg_id)
        .headers(headers);
    producer
        .send(record, Duration::from_secs(30))
        .await
        .map_err(|(e, _)| e)
        .unwrap()
        .offset
}

fn high_watermark(addr: &str) -> i64 {
    wharf_testkit::watermarks(addr, "once", 1).unwrap()[&0].1
}

#[tokio::test(flavor = "multi_thread")]
async fn a_message_id_is_stored_once_per_window_across_kill_9() {
    let (_dir, mut broker) = start_broker(&[]);
    let addr = broker.addr();
    let window = WINDOW_MS.to_string();
    wharf_testkit::create_topic(&addr, "once", 1, &[("wharf.dedup.window.ms", &window)])
        .await
        .unwrap();
    let first_sent = Instant::now();
    {
        let producer = wharf_testkit::producer(&addr, &[]).unwrap();
        assert_eq!(send(&producer, "order-1").await, 0);
        assert_eq!(
            send(&producer, "order-1").await,
            0,
            "answered with the original"
        );
        assert_eq!(send(&producer, "order-2").await, 1);
    }
    tokio::task::block_in_place(|| {
        broker.kill9().unwrap();
        broker.restart().unwrap();
    });
    let producer = wharf_testkit::producer(&addr, &[]).unwrap();
    assert_eq!(send(&producer, "order-1").await, 0, "after kill -9");
    assert_eq!(
        tokio::task::block_in_place(|| high_watermark(&addr)),
        2,
        "stored once"
    );
    assert!(
        first_sent.elapsed() < Duration::from_millis(WINDOW_MS),
        "the test was too slow to stay within the window"
    );
    tokio::time::sleep(Duration::from_millis(WINDOW_MS).saturating_sub(first_sent.elapsed())).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        send(&producer, "order-1").await,
        2,
        "stored again after the window"
    );
}
