//! The broker's own breakdown of a scenario (ADR 0017): `/metrics` of the spawned broker is
//! scraped before and after, and the difference of each stage histogram
//! (`wharf_produce_stage_seconds`, `wharf_fetch_stage_seconds`) gives that stage's count and
//! quantiles, interpolated inside a bucket; `max` is the upper bound of the highest bucket
//! that gained samples.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use anyhow::{bail, Context as _};
use serde::Serialize;

const METRICS: [(&str, &str); 2] = [
    ("wharf_produce_stage_seconds_bucket", "produce"),
    ("wharf_fetch_stage_seconds_bucket", "fetch"),
];

/// Cumulative bucket counts per (path, stage), by upper bound.
#[derive(Debug, Clone, Default)]
pub struct Buckets(BTreeMap<(String, String), Vec<(f64, f64)>>);

/// One stage over the scenario.
#[derive(Debug, Clone, Serialize)]
pub struct StageFigure {
    pub path: String,
    pub stage: String,
    pub count: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    /// Upper bound of the highest bucket reached (`None`: above the last bound).
    pub max_ms_at_most: Option<f64>,
}

/// Reads the stage histograms from the broker's admin listener.
pub fn scrape(admin: SocketAddr) -> anyhow::Result<Buckets> {
    let mut stream = TcpStream::connect_timeout(&admin, Duration::from_secs(5))
        .with_context(|| format!("connecting to the broker's admin listener {admin}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        stream,
        "GET /metrics HTTP/1.1\r\nHost: {admin}\r\nConnection: close\r\n\r\n"
    )?;
    let mut text = String::new();
    stream.read_to_string(&mut text)?;
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        bail!("/metrics: no HTTP body");
    };
    if !head.starts_with("HTTP/1.1 200") {
        bail!("/metrics: {}", head.lines().next().unwrap_or_default());
    }
    Ok(parse(body))
}

fn parse(text: &str) -> Buckets {
    let mut out = Buckets::default();
    for line in text.lines() {
        let Some((name, rest)) = line.split_once('{') else {
            continue;
        };
        let Some(path) = METRICS.iter().find(|(m, _)| *m == name).map(|(_, p)| *p) else {
            continue;
        };
        let Some((labels, value)) = rest.rsplit_once('}') else {
            continue;
        };
        let label = |key: &str| {
            labels.split(',').find_map(|kv| {
                kv.split_once('=')
                    .filter(|(k, _)| k.trim() == key)
                    .map(|(_, v)| v.trim().trim_matches('"').to_string())
            })
        };
        let (Some(stage), Some(le)) = (label("stage"), label("le")) else {
            continue;
        };
        let le = if le == "+Inf" {
            f64::INFINITY
        } else {
            le.parse().unwrap_or(f64::NAN)
        };
        let Ok(count) = value.trim().parse::<f64>() else {
            continue;
        };
        if le.is_nan() {
            continue;
        }
        out.0
            .entry((path.to_string(), stage))
            .or_default()
            .push((le, count));
    }
    for buckets in out.0.values_mut() {
        buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    out
}

/// Each stage's samples between two scrapes, in the order of the path.
pub fn breakdown(before: &Buckets, after: &Buckets) -> Vec<StageFigure> {
    const ORDER: [&str; 9] = [
        "receive",
        "queue",
        "write",
        "fdatasync",
        "publish",
        "ack",
        "wake",
        "read",
        "response_write",
    ];
    let mut out: Vec<StageFigure> = after
        .0
        .iter()
        .filter_map(|((path, stage), buckets)| {
            let earlier = before.0.get(&(path.clone(), stage.clone()));
            let diff: Vec<(f64, f64)> = buckets
                .iter()
                .map(|&(le, count)| {
                    let was = earlier
                        .and_then(|b| b.iter().find(|(l, _)| l.to_bits() == le.to_bits()))
                        .map_or(0.0, |(_, c)| *c);
                    (le, (count - was).max(0.0))
                })
                .collect();
            let total = diff.last().map_or(0.0, |(_, c)| *c);
            (total > 0.0).then(|| StageFigure {
                path: path.clone(),
                stage: stage.clone(),
                count: total as u64,
                p50_ms: quantile(&diff, 0.5) * 1e3,
                p99_ms: quantile(&diff, 0.99) * 1e3,
                p999_ms: quantile(&diff, 0.999) * 1e3,
                max_ms_at_most: diff
                    .iter()
                    .find(|(_, c)| *c >= total)
                    .map(|(le, _)| *le)
                    .filter(|le| le.is_finite())
                    .map(|le| le * 1e3),
            })
        })
        .collect();
    let rank = |f: &StageFigure| {
        (
            f.path != "produce",
            ORDER
                .iter()
                .position(|s| *s == f.stage)
                .unwrap_or(ORDER.len()),
        )
    };
    out.sort_by_key(rank);
    out
}

/// The `q` quantile of cumulative `buckets`, linear inside the bucket that holds it.
fn quantile(buckets: &[(f64, f64)], q: f64) -> f64 {
    let total = buckets.last().map_or(0.0, |(_, c)| *c);
    let rank = q * total;
    let mut lower = (0.0, 0.0);
    for &(le, count) in buckets {
        if count >= rank && count > 0.0 {
            if !le.is_finite() {
                return lower.0;
            }
            let width = count - lower.1;
            let within = if width > 0.0 {
                (rank - lower.1) / width
            } else {
                1.0
            };
            return lower.0 + (le - lower.0) * within;
        }
        lower = (le, count);
    }
    lower.0
}

/// The breakdown as lines for the terminal.
pub fn lines(figures: &[StageFigure]) -> Vec<String> {
    let ms = |v: f64| crate::report::format_value(v);
    let mut out = vec!["   broker stages (ms): path/stage count p50 p99 p99.9 max≤".to_string()];
    for f in figures {
        out.push(format!(
            "   {:>7}/{:<14} {:>7} {:>7} {:>7} {:>7} {:>7}",
            f.path,
            f.stage,
            f.count,
            ms(f.p50_ms),
            ms(f.p99_ms),
            ms(f.p999_ms),
            f.max_ms_at_most.map_or_else(|| ">1000".to_string(), ms),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_breakdown_is_the_difference_of_two_scrapes() {
        let before = parse(
            "wharf_produce_stage_seconds_bucket{stage=\"queue\",le=\"0.001\"} 10\n\
             wharf_produce_stage_seconds_bucket{stage=\"queue\",le=\"0.002\"} 10\n\
             wharf_produce_stage_seconds_bucket{stage=\"queue\",le=\"+Inf\"} 10\n",
        );
        let after = parse(
            "wharf_produce_stage_seconds_bucket{stage=\"queue\",le=\"0.001\"} 60\n\
             wharf_produce_stage_seconds_bucket{stage=\"queue\",le=\"0.002\"} 110\n\
             wharf_produce_stage_seconds_bucket{stage=\"queue\",le=\"+Inf\"} 110\n\
             wharf_fetch_stage_seconds_bucket{stage=\"wake\",le=\"+Inf\"} 0\n",
        );
        let figures = breakdown(&before, &after);
        assert_eq!(figures.len(), 1, "a stage without samples is left out");
        let queue = &figures[0];
        assert_eq!((queue.stage.as_str(), queue.count), ("queue", 100));
        assert!((queue.p50_ms - 1.0).abs() < 1e-9);
        assert!((queue.p99_ms - 1.98).abs() < 1e-9);
        assert!(queue
            .max_ms_at_most
            .is_some_and(|max| (max - 2.0).abs() < 1e-9));
    }
}
