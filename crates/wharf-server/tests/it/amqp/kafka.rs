//! One log, two doors: pika publishes through a topic exchange bound to a Kafka-type queue
//! (`x-queue-type=kafka`, `x-wharf-topic`), and a librdkafka consumer group reads exactly
//! the routed messages, the routing key as the record key and the AMQP properties as headers.

use std::time::{Duration, Instant};

use rdkafka::consumer::Consumer;
use rdkafka::message::{Headers, Message};

use super::pika;
use crate::start_broker;

const SCRIPT: &str = r#"
conn = connect()
ch = conn.channel()
ch.confirm_delivery()
ch.exchange_declare("orders", "topic", durable=True)
ch.queue_declare("orders.kafka", durable=True,
                 arguments={"x-queue-type": "kafka", "x-wharf-topic": "orders-eu"})
ch.queue_bind("orders.kafka", "orders", "eu.#")
for i in range(3):
    ch.basic_publish("orders", f"eu.shop{i}", f"eu-{i}", pika.BasicProperties(
        content_type="application/json", message_id=f"id-{i}", headers={"tenant": "acme"}))
for i in range(2):
    ch.basic_publish("orders", f"us.shop{i}", f"us-{i}")
conn.close()
print(json.dumps({"ok": True}))
"#;

#[tokio::test(flavor = "multi_thread")]
async fn a_topic_exchange_feeds_a_kafka_consumer_group() {
    let (_dir, broker) = start_broker(&[]);
    let out = pika(&broker.amqp_addr().unwrap(), SCRIPT, &[]);
    assert_eq!(out["ok"], true);
    let consumer = wharf_testkit::group_consumer(
        &broker.addr(),
        "amqp-readers",
        &[],
        rdkafka::consumer::DefaultConsumerContext,
    )
    .unwrap();
    consumer.subscribe(&["orders-eu"]).unwrap();
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    // Past the third record, keep polling a little: nothing else may arrive.
    let mut quiet_until: Option<Instant> = None;
    while Instant::now() < deadline && quiet_until.is_none_or(|q| Instant::now() < q) {
        let Some(message) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let message = message.unwrap();
        let mut headers = std::collections::BTreeMap::new();
        if let Some(h) = message.headers() {
            for header in h.iter() {
                headers.insert(
                    header.key.to_string(),
                    String::from_utf8_lossy(header.value.unwrap_or_default()).into_owned(),
                );
            }
        }
        seen.push((
            String::from_utf8_lossy(message.key().unwrap_or_default()).into_owned(),
            String::from_utf8_lossy(message.payload().unwrap_or_default()).into_owned(),
            headers,
        ));
        if seen.len() == 3 {
            quiet_until = Some(Instant::now() + Duration::from_secs(3));
        }
    }
    seen.sort_by(|a, b| a.1.cmp(&b.1));
    let bodies: Vec<&str> = seen.iter().map(|s| s.1.as_str()).collect();
    assert_eq!(
        bodies,
        ["eu-0", "eu-1", "eu-2"],
        "exactly the routed messages"
    );
    for (i, (key, _, headers)) in seen.iter().enumerate() {
        assert_eq!(key, &format!("eu.shop{i}"));
        assert_eq!(headers["amqp.content-type"], "application/json");
        assert_eq!(headers["amqp.message-id"], format!("id-{i}"));
        assert_eq!(headers["amqp.exchange"], "orders");
        assert_eq!(headers["tenant"], "acme");
    }
}
