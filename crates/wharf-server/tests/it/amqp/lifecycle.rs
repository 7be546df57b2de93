//! Queue and exchange lifecycle with pika: server-named exclusive queues that go with their
//! connection, auto-delete queues that go with their last consumer, purge, unbind,
//! delete if-empty/if-unused, and the spec's channel errors (404, 406, 403, 405).

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
