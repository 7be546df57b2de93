//! kill -9 after confirms: every confirmed message of a durable queue is delivered after the
//! restart, and none that was acked before the kill comes back.

use super::pika;
use crate::start_broker;

const PUBLISH_AND_ACK_SOME: &str = r#"
conn = connect()
ch = conn.channel()
ch.confirm_delivery()
ch.queue_declare("durable.q", durable=True)
for i in range(100):
    ch.basic_publish("", "durable.q", f"{i}", pika.BasicProperties(delivery_mode=2))
acked = []
for method, props, body in ch.consume("durable.q", inactivity_timeout=2.0):
    if method is None:
        break
    ch.basic_ack(method.delivery_tag)
    acked.append(body.decode())
    if len(acked) == 30:
        break
conn.close()
print(json.dumps({"acked": acked}))
"#;

const DRAIN: &str = r#"
conn = connect()
ch = conn.channel()
ch.queue_declare("durable.q", durable=True)
got = drain(ch, "durable.q", timeout=3.0)
conn.close()
print(json.dumps({"got": got}))
"#;

#[test]
fn confirmed_messages_survive_kill9_and_acked_ones_stay_acked() {
    let (_dir, mut broker) = start_broker(&[]);
    let addr = broker.amqp_addr().unwrap();
    let first = pika(&addr, PUBLISH_AND_ACK_SOME, &[]);
    let acked: Vec<i64> = first["acked"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().parse().unwrap())
        .collect();
    assert_eq!(acked.len(), 30, "{first}");
    broker.kill9().unwrap();
    broker.restart().unwrap();
    let after = pika(&addr, DRAIN, &[]);
    let mut got: Vec<i64> = after["got"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().parse().unwrap())
        .collect();
    got.sort_unstable();
    let expected: Vec<i64> = (0..100).filter(|i| !acked.contains(i)).collect();
    assert_eq!(
        got, expected,
        "after kill -9: every confirmed, unacked message once"
    );
}
