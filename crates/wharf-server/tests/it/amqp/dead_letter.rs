//! Dead-lettering: a nack without requeue moves the message to the dead-letter exchange
//! with an x-death header; so does a message returned more often than `x-delivery-limit`
//! and one whose TTL expired; a full `reject-publish` queue nacks the publish.

use super::pika;
use crate::start_broker;

const SCRIPT: &str = r#"
conn = connect()
ch = conn.channel()
ch.confirm_delivery()
ch.exchange_declare("dlx", "fanout", durable=True)
ch.queue_declare("dead", durable=True)
ch.queue_bind("dead", "dlx", "")
def dead_one():
    deadline = time.time() + 20
    while time.time() < deadline:
        m, p, b = ch.basic_get("dead", auto_ack=True)
        if m is not None:
            death = p.headers["x-death"][0]
            return {"body": b.decode(), "reason": str(death["reason"]),
                    "queue": str(death["queue"]), "count": int(death["count"]),
                    "routing_key": m.routing_key}
        time.sleep(0.1)
    return None
out = {}

ch.queue_declare("work.dl", durable=True, arguments={"x-dead-letter-exchange": "dlx"})
ch.basic_publish("", "work.dl", "n1")
m, p, b = ch.basic_get("work.dl")
ch.basic_nack(m.delivery_tag, requeue=False)
out["nack"] = dead_one()
out["nack_left"] = ch.queue_declare("work.dl", passive=True).method.message_count

ch.queue_declare("limited", durable=True,
                 arguments={"x-dead-letter-exchange": "dlx", "x-delivery-limit": 2})
ch.basic_publish("", "limited", "d1")
deliveries = 0
while deliveries < 10:
    m, p, b = ch.basic_get("limited")
    if m is None:
        break
    deliveries += 1
    ch.basic_nack(m.delivery_tag, requeue=True)
out["limit_deliveries"] = deliveries
out["limit"] = dead_one()

ch.queue_declare("ttl", durable=True,
                 arguments={"x-message-ttl": 300, "x-dead-letter-exchange": "dlx"})
ch.basic_publish("", "ttl", "t1")
ch.queue_declare("ttl.msg", durable=True, arguments={"x-dead-letter-exchange": "dlx"})
ch.basic_publish("", "ttl.msg", "t2", pika.BasicProperties(expiration="300"))
ch.basic_publish("", "ttl.msg", "t3")
both = sorted([dead_one(), dead_one()], key=lambda d: d["body"] if d else "")
out["ttl"], out["ttl_msg"] = both[0], both[1]
time.sleep(0.5)
out["ttl_left"] = ch.queue_declare("ttl", passive=True).method.message_count
m, p, b = ch.basic_get("ttl.msg", auto_ack=True)
out["ttl_msg_kept"] = b.decode() if m else None

ch.queue_declare("bounded", arguments={"x-max-length": 2, "x-overflow": "reject-publish"})
nacked = []
for i in range(3):
    try:
        ch.basic_publish("", "bounded", f"b{i}")
    except pika.exceptions.NackError:
        nacked.append(f"b{i}")
out["rejected"] = nacked
out["bounded_left"] = ch.queue_declare("bounded", passive=True).method.message_count
conn.close()
print(json.dumps(out))
"#;

#[test]
fn nack_delivery_limit_and_ttl_dead_letter_with_x_death_and_a_full_queue_nacks() {
    let (_dir, broker) = start_broker(&[]);
    let out = pika(&broker.amqp_addr().unwrap(), SCRIPT, &[]);
    let nack = &out["nack"];
    assert_eq!(nack["body"], "n1", "{out}");
    assert_eq!(nack["reason"], "rejected", "{out}");
    assert_eq!(nack["queue"], "work.dl", "{out}");
    assert_eq!(nack["count"], 1, "{out}");
    assert_eq!(nack["routing_key"], "work.dl", "{out}");
    assert_eq!(out["nack_left"], 0, "{out}");

    assert_eq!(
        out["limit_deliveries"], 3,
        "limit 2: the third return dead-letters: {out}"
    );
    assert_eq!(out["limit"]["body"], "d1", "{out}");
    assert_eq!(out["limit"]["reason"], "delivery_limit", "{out}");

    assert_eq!(out["ttl"]["body"], "t1", "{out}");
    assert_eq!(out["ttl"]["reason"], "expired", "{out}");
    assert_eq!(
        out["ttl_msg"]["body"], "t2",
        "per-message expiration: {out}"
    );
    assert_eq!(out["ttl_msg"]["reason"], "expired", "{out}");
    assert_eq!(out["ttl_left"], 0, "{out}");
    assert_eq!(
        out["ttl_msg_kept"], "t3",
        "a message without expiration stays: {out}"
    );

    assert_eq!(out["rejected"], serde_json::json!(["b2"]), "{out}");
    assert_eq!(out["bounded_left"], 2, "{out}");
}

const OVERFLOW: &str = r#"
conn = connect()
ch = conn.channel()
ch.confirm_delivery()
ch.queue_declare("over.dl")
dl = {"x-dead-letter-exchange": "", "x-dead-letter-routing-key": "over.dl"}
ch.queue_declare("by.count", arguments={"x-max-length": 2, **dl})
ch.queue_declare("by.bytes", arguments={"x-max-length-bytes": 10, **dl})
ch.queue_declare("bytes.reject",
                 arguments={"x-max-length-bytes": 10, "x-overflow": "reject-publish"})
for i in range(5):
    ch.basic_publish("", "by.count", f"count{i}")
for body in ["aaaa", "bbbb", "cccc"]:
    ch.basic_publish("", "by.bytes", body)
def settle(queue, n):
    deadline = time.time() + 10
    while time.time() < deadline:
        if ch.queue_declare(queue, passive=True).method.message_count == n:
            return
        time.sleep(0.1)
settle("by.count", 2)
settle("by.bytes", 2)
out = {"count_left": drain(ch, "by.count"), "bytes_left": drain(ch, "by.bytes")}
dead = []
deadline = time.time() + 10
while len(dead) < 4 and time.time() < deadline:
    m, p, b = ch.basic_get("over.dl", auto_ack=True)
    if m is None:
        time.sleep(0.1)
        continue
    death = p.headers["x-death"][0]
    dead.append([b.decode(), death["reason"], death["queue"]])
out["dead"] = sorted(dead)
nacked = []
for body in ["123456", "abcdef", "xy"]:
    try:
        ch.basic_publish("", "bytes.reject", body)
    except pika.exceptions.NackError:
        nacked.append(body)
out["rejected"] = nacked
m, p, b = ch.basic_get("bytes.reject", auto_ack=True)
out["got"] = b.decode()
try:
    ch.basic_publish("", "bytes.reject", "xy")
    out["after_get"] = "accepted"
except pika.exceptions.NackError:
    out["after_get"] = "rejected"
out["reject_left"] = drain(ch, "bytes.reject")

# A requeued message counts again: 4 requeued + 1 + 4 + 1 = 10 bytes refuse "z".
ch.queue_declare("bytes.requeue",
                 arguments={"x-max-length-bytes": 10, "x-overflow": "reject-publish"})
ch.basic_publish("", "bytes.requeue", "aaaa")
ch.basic_publish("", "bytes.requeue", "bbbb")
ma, _, _ = ch.basic_get("bytes.requeue")
mb, _, _ = ch.basic_get("bytes.requeue")
ch.basic_publish("", "bytes.requeue", "x")
ch.basic_nack(ma.delivery_tag, requeue=True)
nacked = []
for body in ["cccc", "y", "z"]:
    try:
        ch.basic_publish("", "bytes.requeue", body)
    except pika.exceptions.NackError:
        nacked.append(body)
out["requeue_rejected"] = nacked

# x-max-length counts ready messages only: one taken (unacked) makes room.
ch.queue_declare("count.reject", arguments={"x-max-length": 2, "x-overflow": "reject-publish"})
ch.basic_publish("", "count.reject", "k0")
ch.basic_publish("", "count.reject", "k1")
m, _, _ = ch.basic_get("count.reject")
nacked = []
for body in ["k2", "k3"]:
    try:
        ch.basic_publish("", "count.reject", body)
    except pika.exceptions.NackError:
        nacked.append(body)
out["count_rejected"] = nacked
conn.close()
print(json.dumps(out))
"#;

#[test]
fn max_length_and_max_length_bytes_drop_the_head_or_refuse_the_publish() {
    let (_dir, broker) = start_broker(&[]);
    let out = pika(&broker.amqp_addr().unwrap(), OVERFLOW, &[]);
    assert_eq!(
        out["count_left"],
        serde_json::json!(["count3", "count4"]),
        "the oldest beyond x-max-length 2 go, one at a time: {out}"
    );
    assert_eq!(
        out["bytes_left"],
        serde_json::json!(["bbbb", "cccc"]),
        "12 body bytes > 10: the head goes: {out}"
    );
    assert_eq!(
        out["dead"],
        serde_json::json!([
            ["aaaa", "maxlen", "by.bytes"],
            ["count0", "maxlen", "by.count"],
            ["count1", "maxlen", "by.count"],
            ["count2", "maxlen", "by.count"]
        ]),
        "{out}"
    );
    assert_eq!(
        out["rejected"],
        serde_json::json!(["xy"]),
        "12 ready body bytes >= 10 refuse the next publish: {out}"
    );
    assert_eq!(out["got"], "123456", "{out}");
    assert_eq!(
        out["after_get"], "accepted",
        "6 bytes ready: room again: {out}"
    );
    assert_eq!(
        out["reject_left"],
        serde_json::json!(["abcdef", "xy"]),
        "{out}"
    );
    assert_eq!(
        out["requeue_rejected"],
        serde_json::json!(["z"]),
        "a requeued message's bytes count again: {out}"
    );
    assert_eq!(
        out["count_rejected"],
        serde_json::json!(["k3"]),
        "an unacked message does not count toward x-max-length: {out}"
    );
}
