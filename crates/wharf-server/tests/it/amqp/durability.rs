//! kill -9 after confirms: every confirmed message of a durable queue is delivered after the
//! restart, and none that was acked before the kill comes back; messages a consumer held
//! unacked at the kill come back redelivered.

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

/// Takes 10 deliveries without acking them and stays connected until stdin closes.
const HOLD: &str = r#"
conn = connect()
ch = conn.channel()
ch.basic_qos(prefetch_count=10)
held = []
for method, props, body in ch.consume("durable.q", inactivity_timeout=5.0):
    if method is None:
        break
    held.append(body.decode())
    if len(held) == 10:
        break
sys.stdout.write(json.dumps({"held": held}) + "\n"); sys.stdout.flush()
sys.stdin.readline()
"#;

const DRAIN: &str = r#"
conn = connect()
ch = conn.channel()
ch.queue_declare("durable.q", durable=True)
got = []
for method, props, body in ch.consume("durable.q", auto_ack=False, inactivity_timeout=3.0):
    if method is None:
        break
    got.append([body.decode(), method.redelivered])
    ch.basic_ack(method.delivery_tag)
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
    let mut holder = std::process::Command::new(super::python())
        .arg("-c")
        .arg(format!("{}\n{HOLD}", super::PRELUDE))
        .arg(addr.rsplit_once(':').unwrap().1)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(holder.stdout.as_mut().unwrap()),
        &mut line,
    )
    .unwrap();
    let held: serde_json::Value = serde_json::from_str(&line).unwrap();
    let held: Vec<String> = held["held"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    assert_eq!(held.len(), 10, "the holder took 10 deliveries: {line}");
    broker.kill9().unwrap();
    holder.kill().unwrap();
    holder.wait().unwrap();
    broker.restart().unwrap();
    let after = pika(&addr, DRAIN, &[]);
    let got: Vec<(i64, bool)> = after["got"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                v[0].as_str().unwrap().parse().unwrap(),
                v[1].as_bool().unwrap(),
            )
        })
        .collect();
    for (message, redelivered) in &got {
        if held.contains(&message.to_string()) {
            assert!(
                redelivered,
                "{message} was held unacked at the kill: redelivered"
            );
        }
    }
    let mut got: Vec<i64> = got.into_iter().map(|(m, _)| m).collect();
    got.sort_unstable();
    let expected: Vec<i64> = (0..100).filter(|i| !acked.contains(i)).collect();
    assert_eq!(
        got, expected,
        "after kill -9: every confirmed, unacked message once"
    );
}
