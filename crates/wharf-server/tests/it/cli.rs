//! `wharf topic ...` against a running broker.

use std::process::Command;

use crate::{start_broker, wharf_bin};

fn wharf(addr: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new(wharf_bin())
        .args(["topic", "--bootstrap-server", addr])
        .args(args)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn topic_commands_create_describe_alter_delete() {
    let (_dir, broker) = start_broker(&[]);
    let addr = broker.addr();
    let (ok, out) = wharf(
        &addr,
        &[
            "create",
            "payments",
            "--partitions",
            "3",
            "--config",
            "retention.ms=60000",
        ],
    );
    assert!(ok, "{out}");
    let (ok, out) = wharf(&addr, &["create", "payments", "--partitions", "3"]);
    assert!(!ok && out.contains("TopicAlreadyExists"), "{out}");
    let (ok, out) = wharf(&addr, &["list"]);
    assert!(ok && out.lines().any(|l| l.trim() == "payments"), "{out}");
    let (ok, out) = wharf(
        &addr,
        &[
            "alter",
            "payments",
            "--partitions",
            "5",
            "--config",
            "retention.ms=120000",
        ],
    );
    assert!(ok, "{out}");
    let (ok, out) = wharf(&addr, &["describe", "payments"]);
    assert!(ok, "{out}");
    assert!(out.contains("PartitionCount: 5"), "{out}");
    assert!(out.contains("retention.ms=120000"), "{out}");
    let rows = out
        .lines()
        .filter(|l| {
            l.split_whitespace()
                .next()
                .is_some_and(|c| c.parse::<i32>().is_ok())
        })
        .count();
    assert_eq!(rows, 5, "one row per partition:\n{out}");
    let (ok, out) = wharf(&addr, &["delete", "payments"]);
    assert!(ok, "{out}");
    let (ok, out) = wharf(&addr, &["list"]);
    assert!(ok && !out.contains("payments"), "{out}");
}
