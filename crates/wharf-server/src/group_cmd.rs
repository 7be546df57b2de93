//! `wharf group list|describe|delete|reset-offsets`: consumer groups against a running broker
//! through `wharf_kafka::admin`, as `kafka-consumer-groups.sh` does. `reset-offsets` is a dry run
//! unless `--execute` is given, and needs the group to have no members.
//!
//! Lag is the partition's log end offset (high watermark) minus the committed offset. Tables
//! are built by pure functions so their layout is tested without a broker.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use anyhow::{bail, Context};
use wharf_kafka::admin::group::{GroupDescription, OffsetSpec};
use wharf_kafka::admin::Admin;

#[derive(clap::Subcommand, Debug)]
pub enum GroupCommand {
    /// List groups with their state.
    List,
    /// Members, assignments, committed offsets, log end offsets and lag of a group.
    Describe { group: String },
    /// Delete groups (only groups without members) and their committed offsets.
    Delete {
        #[arg(required = true)]
        groups: Vec<String>,
    },
    /// Reset committed offsets of a group without members. Dry run unless --execute.
    ResetOffsets {
        group: String,
        /// TOPIC or TOPIC:P1,P2 (repeatable).
        #[arg(long = "topic", value_name = "TOPIC[:PARTITIONS]")]
        topics: Vec<String>,
        /// Every topic the group has committed offsets for.
        #[arg(long, conflicts_with = "topics")]
        all_topics: bool,
        #[arg(long, group = "target")]
        to_earliest: bool,
        #[arg(long, group = "target")]
        to_latest: bool,
        /// Epoch milliseconds, or UTC `YYYY-MM-DDTHH:MM:SS[.mmm]`.
        #[arg(long, group = "target", value_name = "TIME")]
        to_datetime: Option<String>,
        #[arg(long, group = "target", value_name = "OFFSET")]
        to_offset: Option<i64>,
        /// Commit the new offsets (default: only show them).
        #[arg(long)]
        execute: bool,
    },
}

pub async fn run(bootstrap: &str, cmd: GroupCommand) -> anyhow::Result<()> {
    let mut admin = Admin::connect(bootstrap).await?;
    match cmd {
        GroupCommand::List => {
            let mut rows: Vec<Vec<String>> = admin
                .list_groups()
                .await?
                .into_iter()
                .map(|g| {
                    vec![
                        g.group_id,
                        if g.state.is_empty() {
                            "-".into()
                        } else {
                            g.state
                        },
                        g.protocol_type,
                    ]
                })
                .collect();
            rows.sort();
            print!(
                "{}",
                format_table(&["GROUP", "STATE", "PROTOCOL-TYPE"], &rows)
            );
            Ok(())
        }
        GroupCommand::Describe { group } => {
            let d = admin.describe_group(&group).await?;
            print!("{}", format_group(&d));
            Ok(())
        }
        GroupCommand::Delete { groups } => {
            let mut failures = Vec::new();
            for (group, outcome) in admin.delete_groups(&groups).await? {
                match outcome {
                    Ok(()) => println!("Deleted group {group}."),
                    Err(e) => failures.push(e.to_string()),
                }
            }
            if !failures.is_empty() {
                bail!("{}", failures.join("; "));
            }
            Ok(())
        }
        GroupCommand::ResetOffsets {
            group,
            topics,
            all_topics,
            to_earliest,
            to_latest,
            to_datetime,
            to_offset,
            execute,
        } => {
            let target = match (to_earliest, to_latest, to_datetime, to_offset) {
                (true, _, _, _) => Target::Earliest,
                (_, true, _, _) => Target::Latest,
                (_, _, Some(t), _) => Target::Timestamp(parse_time(&t)?),
                (_, _, _, Some(o)) => Target::Offset(o),
                _ => bail!("pick one of --to-earliest, --to-latest, --to-datetime, --to-offset"),
            };
            if topics.is_empty() && !all_topics {
                bail!("pick --topic TOPIC[:PARTITIONS] or --all-topics");
            }
            let selection = topics
                .iter()
                .map(|t| parse_topic_arg(t))
                .collect::<anyhow::Result<Vec<_>>>()?;
            reset(&mut admin, &group, &selection, all_topics, target, execute).await
        }
    }
}

/// What `reset-offsets` moves the committed offsets to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Earliest,
    Latest,
    Timestamp(i64),
    Offset(i64),
}

async fn reset(
    admin: &mut Admin,
    group: &str,
    selection: &[(String, Option<Vec<i32>>)],
    all_topics: bool,
    target: Target,
    execute: bool,
) -> anyhow::Result<()> {
    if let Some(membership) = admin.group_membership(group).await? {
        if membership.members > 0 {
            bail!(
                "group {group} has {} active members ({}); stop them before resetting offsets",
                membership.members,
                membership.state
            );
        }
    }
    let committed = admin.committed_offsets(group).await?;
    let mut keys = BTreeSet::new();
    if all_topics {
        keys.extend(committed.keys().cloned());
    }
    for (topic, partitions) in selection {
        let partitions = match partitions {
            Some(p) => p.clone(),
            None => admin.topic_partitions(topic).await?,
        };
        keys.extend(partitions.into_iter().map(|p| (topic.clone(), p)));
    }
    if keys.is_empty() {
        bail!("no partitions to reset");
    }
    let earliest = admin.log_offsets(&keys, OffsetSpec::Earliest).await?;
    let latest = admin.log_offsets(&keys, OffsetSpec::Latest).await?;
    let by_time = match target {
        Target::Timestamp(ts) => admin.log_offsets(&keys, OffsetSpec::Timestamp(ts)).await?,
        _ => BTreeMap::new(),
    };
    let mut plan = Vec::new();
    for key in &keys {
        let (Some(&low), Some(&high)) = (earliest.get(key), latest.get(key)) else {
            bail!("unknown topic partition {}[{}]", key.0, key.1);
        };
        let new = new_offset(target, low, high, by_time.get(key).copied());
        plan.push((key.clone(), committed.get(key).copied(), new));
    }
    let rows: Vec<Vec<String>> = plan
        .iter()
        .map(|((topic, partition), old, new)| {
            vec![
                topic.clone(),
                partition.to_string(),
                offset_cell(*old),
                new.to_string(),
            ]
        })
        .collect();
    print!(
        "{}",
        format_table(
            &["TOPIC", "PARTITION", "CURRENT-OFFSET", "NEW-OFFSET"],
            &rows
        )
    );
    if !execute {
        println!("Dry run: nothing committed. Add --execute to commit these offsets.");
        return Ok(());
    }
    let offsets: Vec<((String, i32), i64)> =
        plan.into_iter().map(|(key, _, new)| (key, new)).collect();
    admin.commit_offsets(group, &offsets).await?;
    println!("Committed new offsets for group {group}.");
    Ok(())
}

/// The offset `target` means for a partition holding [low, high); `at_time` is ListOffsets'
/// answer for a timestamp (-1: nothing at or after it, so the end).
pub fn new_offset(target: Target, low: i64, high: i64, at_time: Option<i64>) -> i64 {
    match target {
        Target::Earliest => low,
        Target::Latest => high,
        Target::Timestamp(_) => match at_time {
            Some(o) if o >= 0 => o.clamp(low, high),
            _ => high,
        },
        Target::Offset(o) => o.clamp(low, high),
    }
}

/// `TOPIC` or `TOPIC:1,2,3`.
pub fn parse_topic_arg(arg: &str) -> anyhow::Result<(String, Option<Vec<i32>>)> {
    match arg.split_once(':') {
        None => Ok((arg.to_string(), None)),
        Some((topic, list)) => {
            let partitions = list
                .split(',')
                .map(|p| {
                    p.trim()
                        .parse::<i32>()
                        .with_context(|| format!("--topic {arg}: bad partition {p:?}"))
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            Ok((topic.to_string(), Some(partitions)))
        }
    }
}

/// Epoch milliseconds, or a UTC date-time `YYYY-MM-DDTHH:MM:SS[.mmm][Z]`.
pub fn parse_time(text: &str) -> anyhow::Result<i64> {
    if let Ok(ms) = text.parse::<i64>() {
        return Ok(ms);
    }
    let bad =
        || anyhow::anyhow!("--to-datetime {text}: expected epoch ms or YYYY-MM-DDTHH:MM:SS[.mmm]");
    let text = text.trim_end_matches('Z');
    let (date, time) = text.split_once('T').ok_or_else(bad)?;
    let mut d = date.split('-').map(str::parse::<i64>);
    let (Some(Ok(year)), Some(Ok(month)), Some(Ok(day)), None) =
        (d.next(), d.next(), d.next(), d.next())
    else {
        return Err(bad());
    };
    let (time, millis) = match time.split_once('.') {
        Some((t, ms)) => (t, ms.parse::<i64>().map_err(|_| bad())?),
        None => (time, 0),
    };
    let mut t = time.split(':').map(str::parse::<i64>);
    let (Some(Ok(hour)), Some(Ok(minute)), Some(Ok(second)), None) =
        (t.next(), t.next(), t.next(), t.next())
    else {
        return Err(bad());
    };
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return Err(bad());
    }
    // Days from civil (Howard Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Ok(((days * 24 + hour) * 60 + minute) * 60_000 + second * 1000 + millis)
}

pub fn format_group(d: &GroupDescription) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Group: {}\tState: {}\tProtocol: {}\tMembers: {}",
        d.group,
        d.state,
        if d.protocol.is_empty() {
            "-"
        } else {
            &d.protocol
        },
        d.members.len()
    );
    out.push('\n');
    let rows: Vec<Vec<String>> = d
        .partitions
        .iter()
        .map(|p| {
            vec![
                p.topic.clone(),
                p.partition.to_string(),
                offset_cell(p.committed),
                offset_cell(p.log_end),
                offset_cell(p.lag()),
                p.owner.clone().unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    out.push_str(&format_table(
        &[
            "TOPIC",
            "PARTITION",
            "CURRENT-OFFSET",
            "LOG-END-OFFSET",
            "LAG",
            "CONSUMER-ID",
        ],
        &rows,
    ));
    if !d.members.is_empty() {
        out.push('\n');
        let rows: Vec<Vec<String>> = d
            .members
            .iter()
            .map(|m| {
                vec![
                    m.member_id.clone(),
                    m.instance_id.clone().unwrap_or_else(|| "-".into()),
                    m.client_id.clone(),
                    if m.host.is_empty() {
                        "-".into()
                    } else {
                        m.host.clone()
                    },
                    m.assignment.len().to_string(),
                ]
            })
            .collect();
        out.push_str(&format_table(
            &[
                "MEMBER-ID",
                "INSTANCE-ID",
                "CLIENT-ID",
                "HOST",
                "#PARTITIONS",
            ],
            &rows,
        ));
    }
    out
}

pub(crate) fn format_table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut text = String::new();
        for (cell, w) in cells.zip(&widths) {
            let _ = write!(text, "{cell:<w$}  ");
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(&mut headers.iter().copied());
    for row in rows {
        line(&mut row.iter().map(String::as_str));
    }
    out
}

fn offset_cell(offset: Option<i64>) -> String {
    offset.map_or_else(|| "-".into(), |o| o.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use wharf_kafka::admin::group::PartitionRow;

    #[test]
    fn lag_is_log_end_minus_committed() {
        let row = PartitionRow {
            topic: "t".into(),
            partition: 0,
            committed: Some(40),
            log_end: Some(100),
            owner: None,
        };
        assert_eq!(row.lag(), Some(60));
        let none = PartitionRow {
            committed: None,
            ..row.clone()
        };
        assert_eq!(none.lag(), None);
        let d = GroupDescription {
            group: "g".into(),
            state: "Empty".into(),
            protocol: String::new(),
            members: Vec::new(),
            partitions: vec![row, none],
        };
        let text = format_group(&d);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("Group: g"), "{text}");
        assert_eq!(
            lines[3].split_whitespace().collect::<Vec<_>>(),
            ["t", "0", "40", "100", "60", "-"]
        );
        assert_eq!(
            lines[4].split_whitespace().collect::<Vec<_>>(),
            ["t", "0", "-", "100", "-", "-"]
        );
    }

    #[test]
    fn reset_targets_clamp_to_the_log() {
        assert_eq!(new_offset(Target::Earliest, 5, 50, None), 5);
        assert_eq!(new_offset(Target::Latest, 5, 50, None), 50);
        assert_eq!(new_offset(Target::Offset(2), 5, 50, None), 5);
        assert_eq!(new_offset(Target::Offset(70), 5, 50, None), 50);
        assert_eq!(new_offset(Target::Offset(7), 5, 50, None), 7);
        assert_eq!(new_offset(Target::Timestamp(1), 5, 50, Some(9)), 9);
        assert_eq!(new_offset(Target::Timestamp(1), 5, 50, Some(-1)), 50);
    }

    #[test]
    fn arguments_parse() {
        assert_eq!(parse_topic_arg("t").unwrap(), ("t".into(), None));
        assert_eq!(
            parse_topic_arg("t:0,2").unwrap(),
            ("t".into(), Some(vec![0, 2]))
        );
        assert!(parse_topic_arg("t:x").is_err());
        assert_eq!(parse_time("1700000000000").unwrap(), 1_700_000_000_000);
        assert_eq!(
            parse_time("2023-11-14T22:13:20Z").unwrap(),
            1_700_000_000_000
        );
        assert_eq!(parse_time("1970-01-01T00:00:01.5").unwrap(), 1_005);
        assert!(parse_time("yesterday").is_err());
    }
}
