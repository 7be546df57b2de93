//! The AMQP 0-9-1 door with real clients: pika (Python, from PyPI) and amqplib (Node.js,
//! from npm), against a real broker process on loopback ports.

mod acks;
mod admin;
mod dead_letter;
mod durability;
mod hostile;
mod kafka;
mod lifecycle;
mod node;
mod routing;

use std::process::Command;

use serde_json::Value;

/// The venv interpreter `scripts/test` prepared (pika is in it).
fn python() -> String {
    std::env::var("WHARF_PYTHON").unwrap_or_else(|_| {
        panic!(
            "WHARF_PYTHON is not set: run the README test command (scripts/test creates the \
             virtual environment with pika)"
        )
    })
}

/// Common pika helpers, prepended to each script: `connect()` opens a blocking connection
/// to the port in argv[1].
const PRELUDE: &str = r#"
import json, sys, time
import pika
PORT = int(sys.argv[1])
def connect():
    return pika.BlockingConnection(pika.ConnectionParameters(
        host="127.0.0.1", port=PORT, heartbeat=30, blocked_connection_timeout=30,
        connection_attempts=3, retry_delay=1))
def drain(ch, queue, timeout=1.0):
    got = []
    for method, props, body in ch.consume(queue, auto_ack=False, inactivity_timeout=timeout):
        if method is None:
            break
        got.append(body.decode())
        ch.basic_ack(method.delivery_tag)
    ch.cancel()
    return got
"#;

/// Runs a pika script with the broker's AMQP port and `args`; its stdout parsed as JSON.
fn pika(amqp_addr: &str, script: &str, args: &[&str]) -> Value {
    let port = amqp_addr.rsplit_once(':').unwrap().1;
    let out = Command::new(python())
        .arg("-c")
        .arg(format!("{PRELUDE}\n{script}"))
        .arg(port)
        .args(args)
        .output()
        .expect("running the venv python");
    assert!(
        out.status.success(),
        "pika script failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "pika script printed no JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// The sorted strings of a JSON array.
fn sorted(value: &Value) -> Vec<String> {
    let mut v: Vec<String> = value
        .as_array()
        .unwrap_or_else(|| panic!("not an array: {value}"))
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect();
    v.sort();
    v
}

fn strings(items: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = items.iter().map(|s| (*s).to_string()).collect();
    v.sort();
    v
}
