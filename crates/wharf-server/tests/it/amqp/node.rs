//! A second real client: amqplib (Node.js, from npm; `scripts/test` installs it and points
//! `WHARF_NODE_PATH` at its node_modules). Declares each exchange type, binds, publishes on
//! a confirm channel and consumes with manual acks.

use std::process::Command;

use super::{sorted, strings};
use crate::start_broker;

const SCRIPT: &str = r"
const amqp = require('amqplib');
(async () => {
  const conn = await amqp.connect(`amqp://guest:guest@127.0.0.1:${process.argv[1]}`);
  const ch = await conn.createConfirmChannel();
  const queues = ['n.direct', 'n.fanout', 'n.topic', 'n.headers'];
  for (const q of queues) await ch.assertQueue(q, { durable: true });
  await ch.assertExchange('nx.direct', 'direct');
  await ch.assertExchange('nx.fanout', 'fanout');
  await ch.assertExchange('nx.topic', 'topic');
  await ch.assertExchange('nx.headers', 'headers');
  await ch.bindQueue('n.direct', 'nx.direct', 'k1');
  await ch.bindQueue('n.fanout', 'nx.fanout', '');
  await ch.bindQueue('n.topic', 'nx.topic', '*.b.#');
  await ch.bindQueue('n.headers', 'nx.headers', '', { 'x-match': 'all', kind: 'x' });
  const pub = (ex, key, body, headers) => new Promise((resolve, reject) =>
    ch.publish(ex, key, Buffer.from(body), { headers }, (err) => err ? reject(err) : resolve()));
  await pub('nx.direct', 'k1', 'd1');
  await pub('nx.direct', 'k2', 'd2');
  await pub('nx.fanout', 'any', 'f1');
  await pub('nx.topic', 'a.b', 't1');
  await pub('nx.topic', 'a.b.c.d', 't2');
  await pub('nx.topic', 'b.c', 't3');
  await pub('nx.headers', '', 'h1', { kind: 'x' });
  await pub('nx.headers', '', 'h2', { kind: 'y' });
  const got = {};
  for (const q of queues) {
    got[q] = [];
    await new Promise(async (resolve) => {
      let timer = setTimeout(resolve, 1500);
      await ch.consume(q, (m) => {
        got[q].push(m.content.toString());
        ch.ack(m);
        clearTimeout(timer);
        timer = setTimeout(resolve, 700);
      }, { noAck: false });
    });
  }
  const left = {};
  for (const q of queues) left[q] = (await ch.checkQueue(q)).messageCount;
  await conn.close();
  console.log(JSON.stringify({ got, left }));
})().catch((e) => { console.error(e); process.exit(1); });
";

#[test]
fn amqplib_routes_confirms_and_acks() {
    let node_path = std::env::var("WHARF_NODE_PATH").unwrap_or_else(|_| {
        panic!(
            "WHARF_NODE_PATH is not set: run the README test command (scripts/test installs \
             amqplib from npm)"
        )
    });
    let (_dir, broker) = start_broker(&[]);
    let port = broker
        .amqp_addr()
        .unwrap()
        .rsplit_once(':')
        .unwrap()
        .1
        .to_string();
    let out = Command::new("node")
        .arg("-e")
        .arg(SCRIPT)
        .arg(&port)
        .env("NODE_PATH", node_path)
        .output()
        .expect("running node");
    assert!(
        out.status.success(),
        "amqplib script failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let value: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let got = &value["got"];
    assert_eq!(sorted(&got["n.direct"]), strings(&["d1"]), "{value}");
    assert_eq!(sorted(&got["n.fanout"]), strings(&["f1"]), "{value}");
    assert_eq!(sorted(&got["n.topic"]), strings(&["t1", "t2"]), "{value}");
    assert_eq!(sorted(&got["n.headers"]), strings(&["h1"]), "{value}");
    for q in ["n.direct", "n.fanout", "n.topic", "n.headers"] {
        assert_eq!(value["left"][q], 0, "{value}");
    }
}
