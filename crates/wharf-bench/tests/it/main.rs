//! Smoke test of the native client against a real broker: `wharf-bench --spawn --client
//! native` produces (every answer checked, everything read back and counted, CRCs checked),
//! consumes, and writes results the `table` command reads. It needs the `wharf` binary next
//! to this test's `wharf-bench` (`cargo build -p wharf-server`, same target directory) or
//! `WHARF_BIN`; without it the test prints SKIPPED and lists itself for `scripts/test`'s skip
//! report (under CI it fails instead). Ceilings are skipped, so the
//! test takes seconds; it asserts on counts and checks, never on speed.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::Command;

#[test]
fn native_produce_is_read_back_and_consumed_from_a_spawned_broker() {
    let bench = PathBuf::from(env!("CARGO_BIN_EXE_wharf-bench"));
    let wharf =
        std::env::var_os("WHARF_BIN").map_or_else(|| bench.with_file_name("wharf"), PathBuf::from);
    if !wharf.is_file() {
        let reason = format!(
            "no broker binary at {} (`cargo build -p wharf-server` into the same target directory, or set WHARF_BIN)",
            wharf.display()
        );
        // A skip is never a silent pass: under CI it fails; otherwise it is printed past the
        // harness's capture and listed for `scripts/test`'s skip report.
        assert!(
            std::env::var_os("CI").is_none(),
            "cannot run under CI: {reason}"
        );
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED native_produce_is_read_back_and_consumed_from_a_spawned_broker: {reason}"
        );
        if let Ok(mut list) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(concat!(env!("CARGO_TARGET_TMPDIR"), "/wharf-skipped-tests"))
        {
            let _ = writeln!(
                list,
                "wharf-bench native_produce_is_read_back_and_consumed_from_a_spawned_broker ({reason})"
            );
        }
        return;
    }
    let dir = tempfile::tempdir().expect("a temporary directory");
    let results = dir.path().join("results.jsonl");
    let output = Command::new(&bench)
        .arg("--spawn")
        .arg("--wharf-bin")
        .arg(&wharf)
        .arg("--data-dir")
        .arg(dir.path())
        .args(["--skip-ceilings", "--client", "native"])
        .args(["--scenario", "produce-1k", "--scenario", "consume-1k"])
        .args(["--duration", "1", "--repeat", "1", "--max-gb", "0.02"])
        .arg("--results")
        .arg(&results)
        .output()
        .expect("wharf-bench runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "wharf-bench failed: {stderr}");

    let text = std::fs::read_to_string(&results).expect("a results file");
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|line| serde_json::from_str(line).expect("a JSON line"))
        .collect();
    assert_eq!(lines.len(), 2, "{text}");
    for line in &lines {
        assert_eq!(line["client"], "native");
        assert!(line["error"].is_null(), "{}", line["error"]);
        assert!(line["figures"][0]["values"][0].as_f64().unwrap_or(0.0) > 0.0);
        assert!(line["broker_pid"].as_u64().is_some());
    }
    let produced = &lines[0]["config"]["runs"][0];
    assert_eq!(lines[0]["scenario"], "produce-1k");
    assert_eq!(produced["failed_messages"], 0);
    assert!(produced["acked_messages"].as_u64().unwrap_or(0) > 0);
    let consumed = &lines[1]["config"]["runs"][0];
    assert_eq!(lines[1]["scenario"], "consume-1k");
    assert_eq!(consumed["messages"], consumed["expected_messages"]);
    assert_eq!(consumed["messages"], produced["acked_messages"]);

    let table = Command::new(&bench)
        .arg("table")
        .arg("--results")
        .arg(&results)
        .output()
        .expect("wharf-bench table runs");
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(
        table.contains("| produce-1k | native | MB/s | — |"),
        "{table}"
    );
    assert!(
        table.contains("| consume-1k | native | MB/s | — |"),
        "{table}"
    );
}
