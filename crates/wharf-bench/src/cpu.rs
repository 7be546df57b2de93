//! Who used the CPU during a measured interval: the broker process (with `--spawn`, or
//! `--broker-pid` with `--bootstrap`) and this process, from `utime + stime` in
//! `/proc/<pid>/stat` sampled at the start and the end of the interval. Threads that exited
//! during the interval are still counted (the kernel folds them into the process's times).

use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

/// `utime + stime` of `/proc/<pid>/stat`, in clock ticks. The command name (field 2) may hold
/// spaces and parentheses, so fields are counted after its last `)`.
pub fn parse_stat_ticks(stat: &str) -> Option<u64> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_name.split_whitespace();
    // After the name: state (3), ppid (4), …, utime (14), stime (15).
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// Clock ticks per second (`getconf CLK_TCK`, 100 almost everywhere, and when unknown).
pub fn clock_ticks_per_second() -> u64 {
    static TICKS: OnceLock<u64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|out| String::from_utf8(out.stdout).ok())
            .and_then(|text| text.trim().parse().ok())
            .filter(|&ticks| ticks > 0)
            .unwrap_or(100)
    })
}

fn cpu_seconds(path: &str) -> Option<f64> {
    let ticks = parse_stat_ticks(&std::fs::read_to_string(path).ok()?)?;
    Some(ticks as f64 / clock_ticks_per_second() as f64)
}

/// CPU-seconds used so far by the broker (when known) and by this process.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    broker: Option<f64>,
    client: Option<f64>,
}

impl Sample {
    pub fn take(broker_pid: Option<u32>) -> Sample {
        Sample {
            broker: broker_pid.and_then(|pid| cpu_seconds(&format!("/proc/{pid}/stat"))),
            client: cpu_seconds("/proc/self/stat"),
        }
    }

    /// The CPU used between `start` and `self`.
    pub fn since(&self, start: &Sample) -> CpuUsage {
        let diff = |end: Option<f64>, begin: Option<f64>| Some(end? - begin?).filter(|d| *d >= 0.0);
        CpuUsage {
            broker_seconds: diff(self.broker, start.broker),
            client_seconds: diff(self.client, start.client),
        }
    }
}

/// CPU-seconds spent during one measured interval.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct CpuUsage {
    /// The broker process; `None` when its pid is not known (`--bootstrap` without
    /// `--broker-pid`) or it exited.
    pub broker_seconds: Option<f64>,
    pub client_seconds: Option<f64>,
}

impl CpuUsage {
    /// CPU-seconds per GB (10^9 bytes) of `bytes` for the broker and the client.
    pub fn per_gb(&self, bytes: u64) -> (Option<f64>, Option<f64>) {
        let gb = bytes as f64 / 1e9;
        let per = |seconds: Option<f64>| seconds.filter(|_| gb > 0.0).map(|s| s / gb);
        (per(self.broker_seconds), per(self.client_seconds))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_utime_plus_stime() {
        let stat =
            "4242 (wharf) S 1 4242 4242 0 -1 4194560 5237 0 0 0 1234 567 0 0 20 0 9 0 100 0 0";
        assert_eq!(parse_stat_ticks(stat), Some(1801));
    }

    #[test]
    fn a_name_with_spaces_and_parentheses_does_not_shift_the_fields() {
        let stat = "7 (tokio (rt) worker) R 1 7 7 0 -1 0 0 0 0 0 10 20 0 0 20 0 1 0 5 0 0";
        assert_eq!(parse_stat_ticks(stat), Some(30));
    }

    #[test]
    fn short_or_garbled_stat_gives_nothing() {
        assert_eq!(parse_stat_ticks("7 (x) R 1 2 3"), None);
        assert_eq!(parse_stat_ticks("no name here"), None);
        assert_eq!(
            parse_stat_ticks("7 (x) R 1 7 7 0 -1 0 0 0 0 0 ten 20 0"),
            None
        );
    }

    #[test]
    fn this_process_has_a_readable_stat() {
        assert!(Sample::take(None).client.is_some());
        assert!(clock_ticks_per_second() > 0);
    }

    #[test]
    fn cost_per_gb_divides_by_decimal_gigabytes() {
        let usage = CpuUsage {
            broker_seconds: Some(3.0),
            client_seconds: Some(1.5),
        };
        assert_eq!(usage.per_gb(1_500_000_000), (Some(2.0), Some(1.0)));
        assert_eq!(usage.per_gb(0), (None, None));
        assert_eq!(CpuUsage::default().per_gb(1), (None, None));
    }
}
