//! Queue and exchange lifecycle with pika: server-named exclusive queues that go with their
//! connection, auto-delete queues that go with their last consumer, purge, unbind,
//! delete if-empty/if-unused, and the spec's channel errors (404, 406, 403, 405); server-sent
//! basic.cancel when a consumed queue is deleted, basic.recover on a consuming channel, and an
//! auto-delete exchange that goes with its last binding.

use super::pika;
use crate::start_broker;

const SCRIPT: &str = r#"
out = {}
def code_of(fn):
    c = connect()
    ch = c.channel()
    try:
        fn(ch)
        return 0
    except pika.exceptions.ChannelClosedByBroker as e:
        return e.reply_code
    finally:
        if c.is_open:
            c.close()

owner = connect()
och = owner.channel()
named = och.queue_declare("", exclusive=True).method.queue
out["server_named"] = named.startswith("amq.gen-")
out["locked"] = code_of(lambda ch: ch.basic_consume(named, lambda *a: None))
owner.close()
out["exclusive_gone"] = code_of(lambda ch: ch.queue_declare(named, passive=True))

conn = connect()
ch = conn.channel()
ch.confirm_delivery()
ch.queue_declare("auto", auto_delete=True)
tag = ch.basic_consume("auto", lambda *a: None)
ch.basic_cancel(tag)
out["auto_gone"] = code_of(lambda c: c.queue_declare("auto", passive=True))

ch.exchange_declare("life", "direct")
ch.queue_declare("lq")
ch.queue_bind("lq", "life", "k")
for i in range(3):
    ch.basic_publish("life", "k", f"{i}")
out["purged"] = ch.queue_purge("lq").method.message_count
ch.queue_unbind("lq", "life", "k")
ch.basic_publish("life", "k", "after-unbind")
ch.basic_publish("", "lq", "direct")
out["not_empty"] = code_of(lambda c: c.queue_delete("lq", if_empty=True))
out["deleted_count"] = ch.queue_delete("lq").method.message_count
# A publish to a missing exchange closes the channel; the next call sees the 404.
out["no_exchange"] = code_of(lambda c: (c.basic_publish("nowhere", "k", "x"), c.queue_declare("", exclusive=True)))
out["inequivalent"] = code_of(lambda c: c.exchange_declare("life", "fanout"))
out["reserved"] = code_of(lambda c: c.exchange_declare("amq.mine", "direct"))
out["bad_arg"] = code_of(lambda c: c.queue_declare("badq", arguments={"x-overflow": "sideways"}))
conn.close()
print(json.dumps(out))
"#;

#[test]
fn queue_lifecycle_and_channel_errors() {
    let (_dir, broker) = start_broker(&[]);
    let out = pika(&broker.amqp_addr().unwrap(), SCRIPT, &[]);
    assert_eq!(out["server_named"], true, "{out}");
    assert_eq!(
        out["locked"], 405,
        "another connection cannot consume an exclusive queue: {out}"
    );
    assert_eq!(out["exclusive_gone"], 404, "{out}");
    assert_eq!(out["auto_gone"], 404, "{out}");
    assert_eq!(out["purged"], 3, "{out}");
    assert_eq!(out["not_empty"], 406, "{out}");
    assert_eq!(
        out["deleted_count"], 1,
        "only the direct publish after the unbind: {out}"
    );
    assert_eq!(out["no_exchange"], 404, "{out}");
    assert_eq!(out["inequivalent"], 406, "{out}");
    assert_eq!(out["reserved"], 403, "{out}");
    assert_eq!(out["bad_arg"], 406, "{out}");
}

const CANCEL_RECOVER_AUTO_DELETE: &str = r#"
out = {}
conn = connect()
ch = conn.channel()
ch.queue_declare("doomed")
cancelled = []
ch.add_on_cancel_callback(lambda frame: cancelled.append(frame.method.consumer_tag))
ch.basic_consume("doomed", lambda c, m, p, b: None, consumer_tag="watcher")
other = connect()
och = other.channel()
och.queue_delete("doomed")
deadline = time.time() + 10
while not cancelled and time.time() < deadline:
    conn.process_data_events(time_limit=0.2)
out["cancelled"] = cancelled

ch.queue_declare("again")
ch.basic_publish("", "again", "r0")
got = []
ch.basic_consume("again", lambda c, m, p, b: got.append([b.decode(), m.redelivered]))
deadline = time.time() + 10
while not got and time.time() < deadline:
    conn.process_data_events(time_limit=0.2)
ch.basic_recover(requeue=True)
deadline = time.time() + 10
while len(got) < 2 and time.time() < deadline:
    conn.process_data_events(time_limit=0.2)
out["recovered"] = got

och.exchange_declare("temp.x", "direct", auto_delete=True)
och.queue_declare("bound")
och.queue_bind("bound", "temp.x", "k")
och.exchange_declare("temp.x", "direct", passive=True, auto_delete=True)
out["while_bound"] = "exists"
och.queue_unbind("bound", "temp.x", "k")
try:
    och.exchange_declare("temp.x", "direct", passive=True)
    out["after_unbind"] = "exists"
except pika.exceptions.ChannelClosedByBroker as e:
    out["after_unbind"] = e.reply_code
for c in (conn, other):
    c.close()
print(json.dumps(out))
"#;

#[test]
fn a_deleted_queue_cancels_its_consumer_recover_redelivers_and_auto_delete_exchanges_go() {
    let (_dir, broker) = start_broker(&[]);
    let out = pika(
        &broker.amqp_addr().unwrap(),
        CANCEL_RECOVER_AUTO_DELETE,
        &[],
    );
    assert_eq!(
        out["cancelled"],
        serde_json::json!(["watcher"]),
        "queue.delete sends basic.cancel to its consumer: {out}"
    );
    assert_eq!(
        out["recovered"],
        serde_json::json!([["r0", false], ["r0", true]]),
        "basic.recover redelivers the unacked message to the consuming channel: {out}"
    );
    assert_eq!(out["while_bound"], "exists", "{out}");
    assert_eq!(
        out["after_unbind"], 404,
        "an auto-delete exchange goes with its last binding: {out}"
    );
}
