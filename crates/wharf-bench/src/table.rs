//! `wharf-bench table`: the markdown table of chosen runs, regenerated from a results file,
//! so README tables are generated, never typed. Lines written before a field existed read
//! with its default (librdkafka, no CPU figures, commit unknown).

use std::fmt::Write as _;

use anyhow::Context as _;
use serde::Deserialize;

use crate::cli::TableArgs;
use crate::report::{self, RunInfo, ScenarioReport};

#[derive(Deserialize)]
struct ResultLine {
    #[serde(flatten)]
    run: RunInfo,
    #[serde(flatten)]
    report: ScenarioReport,
}

pub fn print(args: &TableArgs) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(&args.results)
        .with_context(|| format!("reading {}", args.results.display()))?;
    print!("{}", render(&text, &args.runs)?);
    Ok(())
}

/// One section per run (in file order): its command line, the table, its notes. `runs`
/// empty means the last run of the file.
pub fn render(results: &str, runs: &[String]) -> anyhow::Result<String> {
    let mut lines = Vec::new();
    for (number, line) in results.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let parsed: ResultLine =
            serde_json::from_str(line).with_context(|| format!("results line {}", number + 1))?;
        lines.push(parsed);
    }
    let wanted: Vec<String> = if runs.is_empty() {
        lines
            .last()
            .map(|l| l.run.run_id.clone())
            .into_iter()
            .collect()
    } else {
        runs.to_vec()
    };
    let mut out = String::new();
    for run_id in &wanted {
        let chosen: Vec<&ResultLine> = lines.iter().filter(|l| &l.run.run_id == run_id).collect();
        let Some(first) = chosen.first() else {
            anyhow::bail!("run {run_id} is not in the results file");
        };
        if !out.is_empty() {
            out.push('\n');
        }
        let _ = writeln!(out, "{}\n", report::run_line(&first.run));
        let reports: Vec<ScenarioReport> = chosen.iter().map(|l| l.report.clone()).collect();
        out.push_str(&report::markdown_table(&reports));
        let notes = report::notes(&reports);
        if !notes.is_empty() {
            let _ = writeln!(out, "\nNotes:\n{notes}");
        }
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// A line as written before the native client (no client, cost, commit) and two of a
    /// later run, one native with CPU figures.
    const FIXTURE: &str = r#"{"run_id":"old","unix_time":1,"command":"wharf-bench --spawn","target":"spawn","load_average":[0.5,0.4,0.3],"ceilings":{},"scenario":"consume-1k","figures":[{"name":"MB/s","values":[600.0],"summary":{"median":600.0,"min":600.0,"max":600.0},"ceiling":{"name":"loopback","value":3000.0,"unit":"MB/s"},"ratio":0.2}],"config":{},"notes":[],"error":null}
{"run_id":"new","unix_time":2,"command":"wharf-bench --spawn --client librdkafka --client native","target":"spawn","load_average":[1.5,0.4,0.3],"load_warning":true,"commit":{"id":"0123456789abcdef0123456789abcdef01234567","dirty":true,"source":"git"},"broker_pid":42,"ceilings":{},"scenario":"produce-1k","client":"librdkafka","figures":[{"name":"MB/s","values":[250.0,270.0,260.0],"summary":{"median":260.0,"min":250.0,"max":270.0},"ceiling":{"name":"disk_write","value":2000.0,"unit":"MB/s"},"ratio":0.13,"cost":{"broker_cpu_s_per_gb":[2.0,2.5,3.0],"broker":{"median":2.5,"min":2.0,"max":3.0},"client_cpu_s_per_gb":[4.0],"client":{"median":4.0,"min":4.0,"max":4.0}}}],"config":{},"notes":[],"error":null}

{"run_id":"new","unix_time":2,"command":"wharf-bench --spawn --client librdkafka --client native","target":"spawn","load_average":[1.5,0.4,0.3],"load_warning":true,"commit":{"id":"0123456789abcdef0123456789abcdef01234567","dirty":true,"source":"git"},"broker_pid":42,"ceilings":{},"scenario":"produce-1k","client":"native","figures":[{"name":"MB/s","values":[500.0],"summary":{"median":500.0,"min":500.0,"max":500.0},"ceiling":{"name":"disk_write","value":2000.0,"unit":"MB/s"},"ratio":0.25,"cost":{"broker_cpu_s_per_gb":[1.25],"broker":{"median":1.25,"min":1.25,"max":1.25},"client_cpu_s_per_gb":[],"client":null}}],"config":{},"notes":["gaps"],"error":null}
"#;

    #[test]
    fn the_last_run_is_the_default_with_its_commit_and_load_warning() {
        let table = render(FIXTURE, &[]).unwrap();
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(
            lines[0],
            "`wharf-bench --spawn --client librdkafka --client native` (target: spawn, commit 0123456789ab (dirty), load average at start: 1.50 0.40 0.30 — load warning: repeat on a quiet machine)"
        );
        assert_eq!(lines[2], report::TABLE_HEADER.lines().next().unwrap());
        assert_eq!(
            lines[4],
            "| produce-1k | librdkafka | MB/s | 0.130 | 260 | 250–270 | disk_write 2,000 MB/s | 2.50 | 4.00 | ≥ 0.5 of disk_write: **not met** |"
        );
        assert_eq!(
            lines[5],
            "| produce-1k | native | MB/s | 0.250 | 500 | 500–500 | disk_write 2,000 MB/s | 1.25 | — | ≥ 0.5 of disk_write: **not met** |"
        );
        assert!(table.ends_with("Notes:\n- produce-1k (native): gaps\n"));
    }

    #[test]
    fn an_old_line_reads_as_librdkafka_without_cpu_figures() {
        let table = render(FIXTURE, &["old".to_string()]).unwrap();
        assert!(table.contains("commit unknown"));
        assert!(table.contains(
            "| consume-1k | librdkafka | MB/s | 0.200 | 600 | 600–600 | loopback 3,000 MB/s | — | — | — |"
        ));
        assert!(!table.contains("produce-1k"));
    }

    #[test]
    fn an_unknown_run_or_a_garbled_line_is_an_error() {
        assert!(render(FIXTURE, &["nope".to_string()]).is_err());
        assert!(render("{not json", &[]).is_err());
    }
}
