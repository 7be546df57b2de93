//! Per-message acks: two consumers with prefetch 1 share a queue; one closes its channel
//! holding an unacked message, which the other then gets with redelivered=true. basic.get
//! and basic.recover requeue too.

use super::{pika, sorted, strings};
use crate::start_broker;

const TWO_CONSUMERS: &str = r#"
setup = connect()
sch = setup.channel()
sch.confirm_delivery()
sch.queue_declare("work", durable=True)
for i in range(4):
    sch.basic_publish("", "work", f"m{i}", pika.BasicProperties(delivery_mode=2))
conn_a, conn_b = connect(), connect()
ch_a, ch_b = conn_a.channel(), conn_b.channel()
a_got, b_got = [], []
ch_a.basic_qos(prefetch_count=1)
ch_a.basic_consume("work", lambda c, m, p, b: a_got.append((b.decode(), m.redelivered)))
deadline = time.time() + 10
while not a_got and time.time() < deadline:
    conn_a.process_data_events(time_limit=0.2)
conn_a.process_data_events(time_limit=1.0)
a_while_unacked = len(a_got)
ch_b.basic_qos(prefetch_count=1)
def on_b(c, m, p, b):
    b_got.append((b.decode(), m.redelivered, m.delivery_tag))
ch_b.basic_consume("work", on_b)
deadline = time.time() + 10
while not b_got and time.time() < deadline:
    conn_b.process_data_events(time_limit=0.2)
conn_b.process_data_events(time_limit=1.0)
b_while_unacked = len(b_got)
ch_a.close()
acked = 0
deadline = time.time() + 20
while len(b_got) < 4 and time.time() < deadline:
    while acked < len(b_got):
        ch_b.basic_ack(b_got[acked][2])
        acked += 1
    conn_b.process_data_events(time_limit=0.2)
while acked < len(b_got):
    ch_b.basic_ack(b_got[acked][2])
    acked += 1
conn_b.process_data_events(time_limit=0.5)
left = sch.queue_declare("work", passive=True).method.message_count
for c in (conn_a, conn_b, setup):
    c.close()
print(json.dumps({
    "a": [x[0] for x in a_got], "a_while_unacked": a_while_unacked,
    "b_while_unacked": b_while_unacked,
    "b": [[x[0], x[1]] for x in b_got], "left": left,
}))
"#;

#[test]
fn a_closed_channel_hands_its_unacked_message_to_the_other_consumer_redelivered() {
    let (_dir, broker) = start_broker(&[]);
    let out = pika(&broker.amqp_addr().unwrap(), TWO_CONSUMERS, &[]);
    assert_eq!(
        out["a_while_unacked"], 1,
        "prefetch 1 holds A at one: {out}"
    );
    assert_eq!(
        out["b_while_unacked"], 1,
        "prefetch 1 holds B at one: {out}"
    );
    let a_message = out["a"][0].as_str().unwrap().to_string();
    let b: Vec<(String, bool)> = out["b"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| (x[0].as_str().unwrap().to_string(), x[1].as_bool().unwrap()))
        .collect();
    let mut bodies: Vec<String> = b.iter().map(|(m, _)| m.clone()).collect();
    bodies.sort();
    assert_eq!(bodies, strings(&["m0", "m1", "m2", "m3"]), "{out}");
    for (message, redelivered) in &b {
        assert_eq!(
            *redelivered,
            *message == a_message,
            "only A's message comes back redelivered: {out}"
        );
    }
    assert_eq!(out["left"], 0, "{out}");
}

const GET_AND_RECOVER: &str = r#"
conn = connect()
ch = conn.channel()
ch.confirm_delivery()
ch.queue_declare("got")
for i in range(3):
    ch.basic_publish("", "got", f"g{i}")
m1, p1, b1 = ch.basic_get("got")
m2, p2, b2 = ch.basic_get("got")
ch.basic_nack(m1.delivery_tag, requeue=True)
ch.basic_ack(m2.delivery_tag)
ch.basic_recover(requeue=True)
seen = []
while True:
    m, p, b = ch.basic_get("got", auto_ack=True)
    if m is None:
        break
    seen.append([b.decode(), m.redelivered])
conn.close()
print(json.dumps({"first": [b1.decode(), b2.decode()], "after": seen}))
"#;

#[test]
fn basic_get_nack_requeues_and_ack_removes() {
    let (_dir, broker) = start_broker(&[]);
    let out = pika(&broker.amqp_addr().unwrap(), GET_AND_RECOVER, &[]);
    assert_eq!(sorted(&out["first"]), strings(&["g0", "g1"]), "{out}");
    let after: Vec<(String, bool)> = out["after"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| (x[0].as_str().unwrap().to_string(), x[1].as_bool().unwrap()))
        .collect();
    assert_eq!(
        after,
        vec![("g0".to_string(), true), ("g2".to_string(), false)],
        "the nacked g0 comes back first, redelivered; the acked g1 never: {out}"
    );
}

const TRANSACTIONS: &str = r#"
conn = connect()
ch = conn.channel()
ch.queue_declare("txq")
count = lambda: ch.queue_declare("txq", passive=True).method.message_count
ch.tx_select()
ch.basic_publish("", "txq", "a")
ch.basic_publish("", "txq", "b")
out = {"uncommitted": count()}
ch.tx_rollback()
out["rolled_back"] = count()
ch.basic_publish("", "txq", "c")
ch.tx_commit()
out["committed"] = count()
m, p, b = ch.basic_get("txq")
out["got"] = b.decode()
ch.basic_ack(m.delivery_tag)
ch.tx_rollback()
ch.basic_ack(m.delivery_tag)
ch.tx_commit()
m2, p2, b2 = ch.basic_get("txq")
out["after_ack_commit"] = None if m2 is None else b2.decode()
conn.close()
print(json.dumps(out))
"#;

#[test]
fn tx_publishes_and_acks_take_effect_at_commit_only() {
    let (_dir, broker) = start_broker(&[]);
    let out = pika(&broker.amqp_addr().unwrap(), TRANSACTIONS, &[]);
    assert_eq!(out["uncommitted"], 0, "{out}");
    assert_eq!(out["rolled_back"], 0, "{out}");
    assert_eq!(out["committed"], 1, "{out}");
    assert_eq!(out["got"], "c", "{out}");
    assert_eq!(out["after_ack_commit"], serde_json::Value::Null, "{out}");
}

const READY_COUNT: &str = r#"
conn = connect()
ch = conn.channel()
ch.queue_declare("countq")
for i in range(3):
    ch.basic_publish("", "countq", f"c{i}")
count = lambda: ch.queue_declare("countq", passive=True).method.message_count
got = [ch.basic_get("countq") for _ in range(3)]
out = {"bodies": [b.decode() for (m, p, b) in got], "all_unacked": count()}
ch.basic_ack(got[1][0].delivery_tag)
ch.basic_ack(got[2][0].delivery_tag)
out["head_unacked_rest_acked"] = count()
ch.basic_publish("", "countq", "c3")
out["one_more"] = count()
ch.basic_nack(got[0][0].delivery_tag, requeue=True)
out["head_requeued"] = count()
conn.close()
print(json.dumps(out))
"#;

#[test]
fn message_count_excludes_acked_messages_behind_an_unacked_one() {
    let (_dir, broker) = start_broker(&[]);
    let out = pika(&broker.amqp_addr().unwrap(), READY_COUNT, &[]);
    assert_eq!(
        sorted(&out["bodies"]),
        strings(&["c0", "c1", "c2"]),
        "{out}"
    );
    assert_eq!(out["all_unacked"], 0, "{out}");
    assert_eq!(
        out["head_unacked_rest_acked"], 0,
        "acked messages behind the unacked head are not ready: {out}"
    );
    assert_eq!(out["one_more"], 1, "{out}");
    assert_eq!(out["head_requeued"], 2, "{out}");
}

const PURGE_KEEPS_UNACKED: &str = r#"
conn = connect()
ch = conn.channel()
ch.queue_declare("purgeq")
for i in range(4):
    ch.basic_publish("", "purgeq", f"p{i}")
m0, _, b0 = ch.basic_get("purgeq")
m1, _, b1 = ch.basic_get("purgeq")
out = {"held": [b0.decode(), b1.decode()]}
out["purged"] = ch.queue_purge("purgeq").method.message_count
out["after_purge"] = ch.queue_declare("purgeq", passive=True).method.message_count
ch.basic_ack(m0.delivery_tag)
ch.basic_nack(m1.delivery_tag, requeue=True)
ch.basic_publish("", "purgeq", "p4")
got = []
while True:
    m, _, b = ch.basic_get("purgeq")
    if m is None:
        break
    got.append([b.decode(), m.redelivered])
    ch.basic_ack(m.delivery_tag)
out["got"] = got
out["open"] = ch.is_open
conn.close()
print(json.dumps(out))
"#;

#[test]
fn queue_purge_keeps_unacked_deliveries_which_can_still_be_acked_or_requeued() {
    let (_dir, broker) = start_broker(&[]);
    let out = pika(&broker.amqp_addr().unwrap(), PURGE_KEEPS_UNACKED, &[]);
    assert_eq!(out["held"], serde_json::json!(["p0", "p1"]), "{out}");
    assert_eq!(
        out["purged"], 2,
        "only the two ready messages are purged: {out}"
    );
    assert_eq!(out["after_purge"], 0, "{out}");
    assert_eq!(
        out["got"],
        serde_json::json!([["p1", true], ["p4", false]]),
        "the acked p0 is gone, the requeued p1 comes back, purged p2/p3 never: {out}"
    );
    assert_eq!(
        out["open"], true,
        "acking a delivery held across the purge works: {out}"
    );
}
