//! kcat (Debian's, linking librdkafka 2.0.2) produces and consumes, as the README shows.

use std::io::Write;
use std::process::{Command, Stdio};

use crate::start_broker;

fn kcat() -> Command {
    assert!(
        Command::new("kcat").arg("-V").output().is_ok_and(|o| o.status.success()),
        "kcat is not installed: run the README test command (scripts/test installs it), or apt-get install kcat"
    );
    Command::new("kcat")
}

#[test]
fn kcat_produces_and_consumes() {
    let (_dir, broker) = start_broker(&[("num_partitions", "3")]);
    let addr = broker.addr();
    let mut producer = kcat()
        .args(["-b", &addr, "-t", "greetings", "-P", "-K:"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    {
        let stdin = producer.stdin.as_mut().unwrap();
        for i in 0..100 {
            writeln!(stdin, "user{}:hello {i}", i % 4).unwrap();
        }
    }
    let status = producer.wait().unwrap();
    assert!(status.success(), "kcat -P failed");

    let out = kcat()
        .args([
            "-b",
            &addr,
            "-t",
            "greetings",
            "-C",
            "-o",
            "beginning",
            "-e",
            "-q",
            "-f",
            "%k=%s\n",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "kcat -C failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut lines: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    lines.sort();
    let mut expected: Vec<String> = (0..100)
        .map(|i| format!("user{}=hello {i}", i % 4))
        .collect();
    expected.sort();
    assert_eq!(lines, expected);

    // Metadata listing shows the auto-created topic with its 3 partitions.
    let meta = kcat()
        .args(["-b", &addr, "-L", "-t", "greetings"])
        .output()
        .unwrap();
    let text = String::from_utf8(meta.stdout).unwrap();
    assert!(
        text.contains("topic \"greetings\" with 3 partitions"),
        "{text}"
    );
}
