//! Each exchange type delivers exactly the messages its bindings select; publishes are
//! confirmed; an unroutable mandatory publish comes back with basic.return; manual acks
//! empty the queues.

use super::{pika, sorted, strings};
use crate::start_broker;

const SCRIPT: &str = r##"
conn = connect()
ch = conn.channel()
ch.confirm_delivery()
queues = ["q.red", "q.green", "q.f1", "q.f2", "q.t1", "q.t2", "q.t3", "q.hall", "q.hany"]
for q in queues:
    ch.queue_declare(q, durable=True)
ch.exchange_declare("r.direct", "direct", durable=True)
ch.exchange_declare("r.fanout", "fanout")
ch.exchange_declare("r.topic", "topic")
ch.exchange_declare("r.headers", "headers")
ch.queue_bind("q.red", "r.direct", "red")
ch.queue_bind("q.red", "r.direct", "crimson")
ch.queue_bind("q.green", "r.direct", "green")
ch.queue_bind("q.f1", "r.fanout", "")
ch.queue_bind("q.f2", "r.fanout", "ignored")
ch.queue_bind("q.t1", "r.topic", "eu.*")
ch.queue_bind("q.t2", "r.topic", "#.new")
ch.queue_bind("q.t3", "r.topic", "eu.#")
ch.queue_bind("q.hall", "r.headers", "", arguments={"x-match": "all", "a": "1", "b": "2"})
ch.queue_bind("q.hany", "r.headers", "", arguments={"x-match": "any", "a": "1", "b": "2"})
def pub(ex, key, body, headers=None, mandatory=False):
    ch.basic_publish(ex, key, body, pika.BasicProperties(headers=headers, delivery_mode=2),
                     mandatory=mandatory)
pub("r.direct", "red", "1")
pub("r.direct", "green", "2")
pub("r.direct", "crimson", "3")
returned = []
try:
    pub("r.direct", "blue", "4", mandatory=True)
except pika.exceptions.UnroutableError as e:
    returned = [m.body.decode() for m in e.messages]
pub("r.fanout", "whatever", "5")
pub("r.topic", "eu.new", "6")
pub("r.topic", "us.new", "7")
pub("r.topic", "eu.old.x", "8")
pub("r.topic", "eu", "9")
pub("r.headers", "", "10", {"a": "1", "b": "2"})
pub("r.headers", "", "11", {"a": "1"})
pub("r.headers", "", "12", {"b": "3"})
pub("", "q.green", "13")
got = {q: drain(ch, q) for q in queues}
left = {q: ch.queue_declare(q, passive=True).method.message_count for q in queues}
conn.close()
print(json.dumps({"got": got, "returned": returned, "left": left}))
"##;

#[test]
fn each_exchange_type_routes_exactly_its_messages_with_pika() {
    let (_dir, broker) = start_broker(&[]);
    let out = pika(&broker.amqp_addr().unwrap(), SCRIPT, &[]);
    let got = &out["got"];
    let expect = [
        ("q.red", vec!["1", "3"]),
        ("q.green", vec!["13", "2"]),
        ("q.f1", vec!["5"]),
        ("q.f2", vec!["5"]),
        ("q.t1", vec!["6"]),
        ("q.t2", vec!["6", "7"]),
        ("q.t3", vec!["6", "8", "9"]),
        ("q.hall", vec!["10"]),
        ("q.hany", vec!["10", "11"]),
    ];
    for (queue, bodies) in expect {
        assert_eq!(
            sorted(&got[queue]),
            strings(&bodies),
            "queue {queue}: {out}"
        );
        assert_eq!(
            out["left"][queue], 0,
            "queue {queue} was acked empty: {out}"
        );
    }
    assert_eq!(sorted(&out["returned"]), strings(&["4"]), "{out}");
}
