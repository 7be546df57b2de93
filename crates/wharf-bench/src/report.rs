//! What a run prints and records: one markdown table on stdout, one JSON line per scenario
//! appended to the results file.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::cli::Client;
use crate::cpu::CpuUsage;
use crate::provenance::Commit;
use crate::stats::{ratio, Summary};

/// The reference a figure is divided by, measured in the same run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ceiling {
    /// `disk_write`, `disk_sync`, `loopback`, `fdatasync_p50`, or a scenario's own baseline.
    pub name: String,
    pub value: f64,
    pub unit: String,
}

impl Ceiling {
    pub fn new(name: impl Into<String>, value: f64, unit: impl Into<String>) -> Ceiling {
        Ceiling {
            name: name.into(),
            value,
            unit: unit.into(),
        }
    }
}

/// One figure of a scenario over its repeats.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Figure {
    /// What is measured and its unit, e.g. `MB/s` or `p99 ms`.
    pub name: String,
    /// One value per repeat.
    pub values: Vec<f64>,
    pub summary: Option<Summary>,
    pub ceiling: Option<Ceiling>,
    /// `summary.median / ceiling.value`.
    pub ratio: Option<f64>,
    /// CPU-seconds per GB moved during the repeats this figure measures.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost: Option<Cost>,
}

/// CPU-seconds per GB (10^9 bytes of values) of the broker and of the client, per repeat;
/// a side is left out when any repeat lacks it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cost {
    pub broker_cpu_s_per_gb: Vec<f64>,
    pub broker: Option<Summary>,
    pub client_cpu_s_per_gb: Vec<f64>,
    pub client: Option<Summary>,
}

/// Broker and client CPU-seconds per GB of one repeat.
type PerGb = (Option<f64>, Option<f64>);

impl Cost {
    /// From each repeat's CPU usage and the bytes it moved.
    pub fn of(repeats: &[(CpuUsage, u64)]) -> Cost {
        let side = |pick: fn(PerGb) -> Option<f64>| {
            repeats
                .iter()
                .map(|(usage, bytes)| pick(usage.per_gb(*bytes)))
                .collect::<Option<Vec<f64>>>()
                .unwrap_or_default()
        };
        let broker = side(|(broker, _)| broker);
        let client = side(|(_, client)| client);
        Cost {
            broker: Summary::of(&broker),
            broker_cpu_s_per_gb: broker,
            client: Summary::of(&client),
            client_cpu_s_per_gb: client,
        }
    }
}

impl Figure {
    /// A ceiling that was not measured (not finite) is left out.
    pub fn new(name: impl Into<String>, values: Vec<f64>, ceiling: Option<Ceiling>) -> Figure {
        let ceiling = ceiling.filter(|c| c.value.is_finite());
        let summary = Summary::of(&values);
        let ratio = match (&summary, &ceiling) {
            (Some(s), Some(c)) => ratio(s.median, c.value),
            _ => None,
        };
        Figure {
            name: name.into(),
            values,
            summary,
            ceiling,
            ratio,
            cost: None,
        }
    }

    /// This figure with the CPU cost of its repeats.
    pub fn with_cost(mut self, repeats: &[(CpuUsage, u64)]) -> Figure {
        self.cost = Some(Cost::of(repeats));
        self
    }
}

/// The outcome of one scenario: its figures, or why it failed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ScenarioReport {
    pub scenario: String,
    /// Runs written before the native client existed used librdkafka.
    #[serde(default)]
    pub client: Client,
    pub figures: Vec<Figure>,
    /// Settings the scenario ran with (sizes, counts, client configuration).
    pub config: serde_json::Value,
    /// Things a reader of the figures should know (delivery errors, skipped parts).
    pub notes: Vec<String>,
    pub error: Option<String>,
}

impl ScenarioReport {
    /// A scenario's figures; the client is set by the caller that ran it.
    pub fn new(
        scenario: &str,
        figures: Vec<Figure>,
        config: serde_json::Value,
        notes: Vec<String>,
    ) -> ScenarioReport {
        ScenarioReport {
            scenario: scenario.to_string(),
            client: Client::default(),
            figures,
            config,
            notes,
            error: None,
        }
    }

    /// A scenario that does not apply to this run: no figures, no error, one note.
    pub fn skipped(scenario: &str, config: serde_json::Value, reason: &str) -> ScenarioReport {
        ScenarioReport {
            scenario: scenario.to_string(),
            client: Client::default(),
            figures: Vec::new(),
            config,
            notes: vec![format!("skipped: {reason}")],
            error: None,
        }
    }

    pub fn failed(
        scenario: &str,
        config: serde_json::Value,
        error: &anyhow::Error,
    ) -> ScenarioReport {
        ScenarioReport {
            scenario: scenario.to_string(),
            client: Client::default(),
            figures: Vec::new(),
            config,
            notes: Vec::new(),
            error: Some(format!("{error:#}")),
        }
    }
}

/// Formats a figure for a human: three significant digits or so, thousands grouped.
pub fn format_value(value: f64) -> String {
    let magnitude = value.abs();
    if !value.is_finite() {
        value.to_string()
    } else if magnitude >= 1000.0 {
        group_thousands(value.round() as i64)
    } else if magnitude >= 100.0 {
        format!("{value:.0}")
    } else if magnitude >= 10.0 {
        format!("{value:.1}")
    } else if magnitude >= 1.0 {
        format!("{value:.2}")
    } else {
        format!("{value:.3}")
    }
}

fn group_thousands(value: i64) -> String {
    let digits = value.unsigned_abs().to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3 + 1);
    if value < 0 {
        out.push('-');
    }
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

/// Keeps a cell on one line and out of the table's syntax.
fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace('\n', " ")
}

/// The table's columns, in order.
pub const TABLE_HEADER: &str = "| scenario | client | figure | ratio | median | min–max | ceiling | broker CPU-s/GB | client CPU-s/GB | target (issue 16) |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n";

/// What issue 16 asks of a figure, if anything: the target and whether the median meets it.
/// produce-100b at least 3.1M msgs/s, produce-1k at least 0.5 of disk_write, e2e p99 at most
/// 3 ms and p99.9 at most 5 ms, and 10,000 partitions at least 0.7 of the 8-partition figure.
pub fn target(scenario: &str, figure: &Figure) -> Option<String> {
    let median = figure.summary.map(|s| s.median);
    let (goal, met) = match (scenario, figure.name.as_str()) {
        ("produce-100b", "msgs/s") => ("≥ 3.1M msgs/s", median.map(|m| m >= 3.1e6)),
        ("produce-1k", "MB/s") => ("≥ 0.5 of disk_write", figure.ratio.map(|r| r >= 0.5)),
        ("e2e-latency", "p99 ms") => ("≤ 3 ms", median.map(|m| m <= 3.0)),
        ("e2e-latency", "p99.9 ms") => ("≤ 5 ms", median.map(|m| m <= 5.0)),
        ("many-partitions", name) if name.ends_with("@ 10000 partitions") => {
            ("≥ 0.7 of 8 partitions", figure.ratio.map(|r| r >= 0.7))
        }
        _ => return None,
    };
    Some(match met {
        Some(true) => format!("{goal}: met"),
        Some(false) => format!("{goal}: **not met**"),
        None => format!("{goal}: not measured"),
    })
}

/// The markdown table: ratio first, then the figure's median and range, then the ceiling,
/// then the CPU-seconds per GB the broker and the client spent (medians over the repeats).
/// Rows of one scenario stay together (clients side by side), scenarios in the order they
/// first appear.
pub fn markdown_table(reports: &[ScenarioReport]) -> String {
    let mut out = String::from(TABLE_HEADER);
    let mut order: Vec<&str> = Vec::new();
    for report in reports {
        if !order.contains(&report.scenario.as_str()) {
            order.push(&report.scenario);
        }
    }
    let mut sorted: Vec<&ScenarioReport> = reports.iter().collect();
    sorted.sort_by_key(|r| order.iter().position(|s| *s == r.scenario));
    for report in sorted {
        let (scenario, client) = (&report.scenario, report.client.name());
        if let Some(error) = &report.error {
            let _ = writeln!(
                out,
                "| {scenario} | {client} | FAILED | — | — | — | {} | — | — | — |",
                cell(error)
            );
            continue;
        }
        if report.figures.is_empty() {
            let _ = writeln!(
                out,
                "| {scenario} | {client} | skipped | — | — | — | {} | — | — | — |",
                cell(&report.notes.join("; "))
            );
            continue;
        }
        for figure in &report.figures {
            let ratio = figure
                .ratio
                .map_or_else(|| "—".to_string(), |r| format!("{r:.3}"));
            let (median, range) = figure.summary.map_or_else(
                || ("—".to_string(), "—".to_string()),
                |s| {
                    (
                        format_value(s.median),
                        format!("{}–{}", format_value(s.min), format_value(s.max)),
                    )
                },
            );
            let ceiling = figure.ceiling.as_ref().map_or_else(
                || "—".to_string(),
                |c| format!("{} {} {}", c.name, format_value(c.value), c.unit),
            );
            let cost = |pick: fn(&Cost) -> Option<Summary>| {
                figure
                    .cost
                    .as_ref()
                    .and_then(pick)
                    .map_or_else(|| "—".to_string(), |s| format_value(s.median))
            };
            let _ = writeln!(
                out,
                "| {scenario} | {client} | {} | {ratio} | {median} | {range} | {} | {} | {} | {} |",
                cell(&figure.name),
                cell(&ceiling),
                cost(|c| c.broker),
                cost(|c| c.client),
                target(scenario, figure).unwrap_or_else(|| "—".to_string()),
            );
        }
    }
    out
}

/// Fields every JSON line carries besides the scenario's own.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunInfo {
    pub run_id: String,
    pub unix_time: u64,
    /// The command line, to quote beside the figures.
    pub command: String,
    /// `spawn` or `bootstrap HOST:PORT`.
    pub target: String,
    pub load_average: Option<[f64; 3]>,
    /// The one-minute load average was above 1 at the start: repeat the run.
    #[serde(default)]
    pub load_warning: bool,
    /// The commit measured.
    #[serde(default)]
    pub commit: Commit,
    /// The broker's pid when its CPU was measured (`--spawn`, or `--broker-pid`).
    #[serde(default)]
    pub broker_pid: Option<u32>,
    pub ceilings: serde_json::Value,
}

/// The line quoted above a table: command, target, commit, load.
pub fn run_line(info: &RunInfo) -> String {
    let load = info.load_average.map_or_else(
        || "unknown".to_string(),
        |[one, five, fifteen]| format!("{one:.2} {five:.2} {fifteen:.2}"),
    );
    let warning = if info.load_warning {
        " — load warning: repeat on a quiet machine"
    } else {
        ""
    };
    format!(
        "`{}` (target: {}, commit {}, load average at start: {load}{warning})",
        info.command,
        info.target,
        info.commit.short()
    )
}

/// The scenarios' notes as a markdown list, empty when there are none.
pub fn notes(reports: &[ScenarioReport]) -> String {
    reports
        .iter()
        .flat_map(|r| {
            r.notes
                .iter()
                .map(move |n| format!("- {} ({}): {n}", r.scenario, r.client.name()))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[derive(Serialize)]
struct ResultLine<'a> {
    #[serde(flatten)]
    run: &'a RunInfo,
    #[serde(flatten)]
    report: &'a ScenarioReport,
}

/// One JSON object per line, no trailing newline.
pub fn json_line(run: &RunInfo, report: &ScenarioReport) -> anyhow::Result<String> {
    serde_json::to_string(&ResultLine { run, report }).context("serialising a result line")
}

/// Appends one line per scenario to `path`, creating its directories.
pub fn append_results(
    path: &Path,
    run: &RunInfo,
    reports: &[ScenarioReport],
) -> anyhow::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    let mut text = String::new();
    for report in reports {
        text.push_str(&json_line(run, report)?);
        text.push('\n');
    }
    file.write_all(text.as_bytes())
        .with_context(|| format!("appending to {}", path.display()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn report(figures: Vec<Figure>) -> ScenarioReport {
        ScenarioReport {
            scenario: "produce-1k".into(),
            client: Client::default(),
            figures,
            config: serde_json::json!({}),
            notes: Vec::new(),
            error: None,
        }
    }

    #[test]
    fn values_keep_about_three_significant_digits() {
        assert_eq!(format_value(1_234_567.4), "1,234,567");
        assert_eq!(format_value(-4321.0), "-4,321");
        assert_eq!(format_value(512.4), "512");
        assert_eq!(format_value(51.24), "51.2");
        assert_eq!(format_value(5.124), "5.12");
        assert_eq!(format_value(0.5124), "0.512");
        assert_eq!(format_value(1000.0), "1,000");
    }

    #[test]
    fn each_issue_16_target_is_judged_on_the_median_or_the_ratio() {
        let p99 = Figure::new("p99 ms", vec![2.0, 4.0, 6.8], None);
        assert_eq!(target("e2e-latency", &p99).unwrap(), "≤ 3 ms: **not met**");
        let p999 = Figure::new("p99.9 ms", vec![4.0, 5.0, 9.0], None);
        assert_eq!(target("e2e-latency", &p999).unwrap(), "≤ 5 ms: met");
        let msgs = Figure::new("msgs/s", vec![5.2e6], None);
        assert_eq!(target("produce-100b", &msgs).unwrap(), "≥ 3.1M msgs/s: met");
        let many = Figure::new(
            "produce-1k MB/s @ 10000 partitions",
            vec![253.0],
            Some(Ceiling::new("produce-1k@8p", 519.0, "MB/s")),
        );
        assert_eq!(
            target("many-partitions", &many).unwrap(),
            "≥ 0.7 of 8 partitions: **not met**"
        );
        let fewer = Figure::new("produce-1k MB/s @ 1000 partitions", vec![1.0], None);
        assert_eq!(target("many-partitions", &fewer), None);
        let unmeasured = Figure::new("MB/s", vec![500.0], None);
        assert_eq!(
            target("produce-1k", &unmeasured).unwrap(),
            "≥ 0.5 of disk_write: not measured"
        );
        assert_eq!(target("consume-1k", &unmeasured), None);
    }

    #[test]
    fn figure_ratio_is_median_over_ceiling() {
        let figure = Figure::new(
            "MB/s",
            vec![100.0, 300.0, 200.0],
            Some(Ceiling::new("disk_write", 1000.0, "MB/s")),
        );
        assert_eq!(figure.ratio, Some(0.2));
        assert!(Figure::new("MB/s", vec![1.0], None).ratio.is_none());
        let unmeasured = Figure::new(
            "MB/s",
            vec![1.0],
            Some(Ceiling::new("disk_write", f64::NAN, "MB/s")),
        );
        assert_eq!((unmeasured.ceiling, unmeasured.ratio), (None, None));
    }

    #[test]
    fn table_has_ratio_before_median_and_one_row_per_figure() {
        let table = markdown_table(&[report(vec![
            Figure::new(
                "MB/s",
                vec![100.0, 300.0, 200.0],
                Some(Ceiling::new("disk_write", 1000.0, "MB/s")),
            ),
            Figure::new("msgs/s", vec![2000.0], None),
        ])]);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(
            lines[0],
            "| scenario | client | figure | ratio | median | min–max | ceiling | broker CPU-s/GB | client CPU-s/GB | target (issue 16) |"
        );
        assert_eq!(
            lines[2],
            "| produce-1k | librdkafka | MB/s | 0.200 | 200 | 100–300 | disk_write 1,000 MB/s | — | — | ≥ 0.5 of disk_write: **not met** |"
        );
        assert_eq!(
            lines[3],
            "| produce-1k | librdkafka | msgs/s | — | 2,000 | 2,000–2,000 | — | — | — | — |"
        );
        assert_eq!(lines.len(), 4);
    }

    #[test]
    fn cost_is_per_decimal_gigabyte_and_drops_a_side_any_repeat_lacks() {
        let usage = |broker, client| CpuUsage {
            broker_seconds: broker,
            client_seconds: client,
        };
        let cost = Cost::of(&[
            (usage(Some(2.0), Some(1.0)), 1_000_000_000),
            (usage(Some(6.0), None), 2_000_000_000),
        ]);
        assert_eq!(cost.broker_cpu_s_per_gb, vec![2.0, 3.0]);
        assert_eq!(cost.broker.map(|s| s.median), Some(2.5));
        assert!(cost.client_cpu_s_per_gb.is_empty());
        assert_eq!(cost.client, None);
        let table = markdown_table(&[report(vec![Figure::new("MB/s", vec![1.0], None)
            .with_cost(&[(usage(Some(2.0), Some(0.5)), 1_000_000_000)])])]);
        assert!(table
            .lines()
            .nth(2)
            .unwrap()
            .ends_with("| 2.00 | 0.500 | ≥ 0.5 of disk_write: not measured |"));
    }

    #[test]
    fn rows_of_one_scenario_stay_together_with_clients_in_run_order() {
        let row = |scenario: &str, client: Client| ScenarioReport {
            scenario: scenario.into(),
            client,
            ..ScenarioReport::skipped("x", serde_json::json!({}), "-")
        };
        let table = markdown_table(&[
            row("produce-1k", Client::Librdkafka),
            row("consume-1k", Client::Librdkafka),
            row("produce-1k", Client::Native),
            row("consume-1k", Client::Native),
        ]);
        let rows: Vec<String> = table
            .lines()
            .skip(2)
            .map(|l| l.split(" | ").take(2).collect::<Vec<_>>().join(" "))
            .collect();
        assert_eq!(
            rows,
            [
                "| produce-1k librdkafka",
                "| produce-1k native",
                "| consume-1k librdkafka",
                "| consume-1k native"
            ]
        );
    }

    #[test]
    fn a_failed_scenario_is_one_row_with_its_error_escaped() {
        let failed = ScenarioReport::failed(
            "recovery",
            serde_json::json!({}),
            &anyhow::anyhow!("port | closed"),
        );
        let table = markdown_table(&[failed]);
        assert!(table.lines().nth(2).unwrap().contains(
            "| recovery | librdkafka | FAILED | — | — | — | port \\| closed | — | — | — |"
        ));
    }

    #[test]
    fn a_skipped_scenario_is_one_row_with_its_reason() {
        let skipped = ScenarioReport::skipped("recovery", serde_json::json!({}), "needs --spawn");
        let table = markdown_table(&[skipped]);
        assert_eq!(
            table.lines().nth(2),
            Some(
                "| recovery | librdkafka | skipped | — | — | — | skipped: needs --spawn | — | — | — |"
            )
        );
    }

    #[test]
    fn a_json_line_carries_run_and_scenario_fields() {
        let run = RunInfo {
            run_id: "r1".into(),
            unix_time: 1,
            command: "wharf-bench --spawn".into(),
            target: "spawn".into(),
            load_average: Some([0.5, 0.4, 0.3]),
            load_warning: false,
            commit: Commit::default(),
            broker_pid: None,
            ceilings: serde_json::json!({"disk_write_mb_s": 1000.0}),
        };
        let line = json_line(
            &run,
            &report(vec![Figure::new("MB/s", vec![1.0, 3.0], None)]),
        )
        .unwrap();
        assert!(!line.contains('\n'));
        let value: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(value["scenario"], "produce-1k");
        assert_eq!(value["run_id"], "r1");
        assert_eq!(value["figures"][0]["summary"]["median"], 2.0);
        assert_eq!(value["ceilings"]["disk_write_mb_s"], 1000.0);
    }

    #[test]
    fn results_are_appended_under_created_directories() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bench/results/results.jsonl");
        let run = RunInfo {
            run_id: "r".into(),
            unix_time: 0,
            command: String::new(),
            target: "spawn".into(),
            load_average: None,
            load_warning: false,
            commit: Commit::default(),
            broker_pid: None,
            ceilings: serde_json::json!({}),
        };
        append_results(&path, &run, &[report(Vec::new())]).unwrap();
        append_results(&path, &run, &[report(Vec::new()), report(Vec::new())]).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 3);
    }
}
