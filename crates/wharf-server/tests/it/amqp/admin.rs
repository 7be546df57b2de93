//! The AMQP door's state through the admin listener (`/v1/amqp/...`), `wharf amqp list` and
//! the per-queue metrics, while a pika client holds a consumer.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

use crate::admin_http::{get, get_json};
use crate::{start_broker, wharf_bin};

const CLIENT: &str = r#"
conn = connect()
ch = conn.channel()
ch.confirm_delivery()
ch.exchange_declare("watch.ex", "topic", durable=True)
ch.queue_declare("watched", durable=True)
ch.queue_bind("watched", "watch.ex", "w.#")
for i in range(3):
    ch.basic_publish("watch.ex", "w.x", f"{i}")
m, p, b = ch.basic_get("watched")
ch.basic_ack(m.delivery_tag)
ch.queue_declare("idle")
ch.basic_qos(prefetch_count=7)
ch.basic_consume("idle", lambda *a: None, consumer_tag="watcher")
sys.stdout.write("ready\n"); sys.stdout.flush()
sys.stdin.readline()
conn.close()
"#;

#[test]
fn queues_bindings_consumers_and_metrics_are_visible() {
    let (_dir, broker) = start_broker(&[]);
    let admin = broker.admin_addr().unwrap();
    let amqp = broker.amqp_addr().unwrap();
    let mut client = Command::new(super::python())
        .arg("-c")
        .arg(format!("{}\n{CLIENT}", super::PRELUDE))
        .arg(amqp.rsplit_once(':').unwrap().1)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(client.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line, "ready\n");

    let queues = get_json(&admin, "/v1/amqp/queues");
    let watched = queues
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["name"] == "watched")
        .unwrap_or_else(|| panic!("no queue 'watched' in {queues}"));
    assert_eq!(watched["messages_ready"], 2, "{watched}");
    assert_eq!(watched["messages_unacknowledged"], 0, "{watched}");
    assert_eq!(watched["published"], 3, "{watched}");
    assert_eq!(watched["delivered"], 1, "{watched}");
    assert_eq!(watched["acked"], 1, "{watched}");
    assert_eq!(watched["durable"], true, "{watched}");

    let bindings = get_json(&admin, "/v1/amqp/bindings");
    assert!(
        bindings
            .as_array()
            .unwrap()
            .iter()
            .any(|b| b["source"] == "watch.ex"
                && b["destination"] == "watched"
                && b["routing_key"] == "w.#"),
        "{bindings}"
    );
    let exchanges = get_json(&admin, "/v1/amqp/exchanges");
    for name in ["watch.ex", "amq.topic", "amq.headers"] {
        assert!(
            exchanges
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e["name"] == name),
            "{name} in {exchanges}"
        );
    }
    let consumers = get_json(&admin, "/v1/amqp/consumers");
    let watcher = consumers
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["consumer_tag"] == "watcher")
        .unwrap_or_else(|| panic!("no consumer 'watcher' in {consumers}"));
    assert_eq!(watcher["queue"], "idle");
    assert_eq!(watcher["prefetch_count"], 7);

    let out = Command::new(wharf_bin())
        .args(["amqp", "list", "queues", "--admin", &admin])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let table = String::from_utf8(out.stdout).unwrap();
    let row = table
        .lines()
        .find(|l| l.starts_with("watched "))
        .unwrap_or_else(|| panic!("no row for 'watched':\n{table}"));
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(
        &cells[..5],
        ["watched", "classic", "2", "0", "0"],
        "{table}"
    );
    let out = Command::new(wharf_bin())
        .args(["amqp", "list", "consumers", "--admin", &admin])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("watcher"),
        "{out:?}"
    );

    let (status, metrics) = get(&admin, "/metrics");
    assert_eq!(status, 200);
    for (line, value) in [
        ("wharf_amqp_queue_ready{queue=\"watched\"}", "2"),
        ("wharf_amqp_queue_published_total{queue=\"watched\"}", "3"),
        ("wharf_amqp_queue_acked_total{queue=\"watched\"}", "1"),
        ("wharf_amqp_connections", "1"),
    ] {
        let found = metrics
            .lines()
            .find_map(|l| l.strip_prefix(line).map(str::trim))
            .unwrap_or_else(|| panic!("{line} missing from /metrics"));
        assert_eq!(found, value, "{line}");
    }
    assert!(metrics.contains("# HELP wharf_amqp_queue_dead_lettered_total"));

    client.stdin.as_mut().unwrap().write_all(b"go\n").unwrap();
    assert!(client.wait().unwrap().success());
}
