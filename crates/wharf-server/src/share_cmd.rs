//! `wharf share list|describe|reset-offsets`: share groups (KIP-932) over the Kafka protocol
//! against a running broker, as `kafka-share-groups.sh` does. `describe` shows members and
//! assignments (ShareGroupDescribe), and per share partition the start offset, in-flight,
//! acquired, accepted, released, rejected, redelivered, archived and dead-lettered counts,
//! lock expiries and lag (the broker's read-only `wharf.share.state:*` group configs).
//! `reset-offsets` is a dry run unless `--execute` is given, and needs the group to have no
//! members.

use std::collections::BTreeMap;

use anyhow::bail;
use wharf_kafka::admin::group::OffsetSpec;
use wharf_kafka::admin::Admin;

use crate::group_cmd::format_table;

const STATE_PREFIX: &str = "wharf.share.state:";

#[derive(clap::Subcommand, Debug)]
pub enum ShareCommand {
    /// List share groups with their state.
    List,
    /// Members, assignments, and per share partition: start offset, in-flight, acquired,
    /// acknowledged, archived and dead-lettered counts, lag.
    Describe { group: String },
    /// Move a share group's start offsets (no members allowed). Dry run unless --execute.
    ResetOffsets {
        group: String,
        #[arg(long)]
        topic: String,
        #[arg(long, group = "target")]
        to_earliest: bool,
        #[arg(long, group = "target")]
        to_latest: bool,
        #[arg(long, group = "target", value_name = "OFFSET")]
        to_offset: Option<i64>,
        #[arg(long)]
        execute: bool,
    },
}

/// One share partition's counts, parsed from a `wharf.share.state:<topic>:<partition>` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharePartitionRow {
    pub topic: String,
    pub partition: i32,
    pub counts: BTreeMap<String, i64>,
}

/// Parses a state entry; `None` when it is not one.
pub fn parse_state(name: &str, value: &str) -> Option<SharePartitionRow> {
    let (topic, partition) = name.strip_prefix(STATE_PREFIX)?.rsplit_once(':')?;
    let counts = value
        .split(';')
        .filter_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect();
    Some(SharePartitionRow {
        topic: topic.to_string(),
        partition: partition.parse().ok()?,
        counts,
    })
}

/// The counts columns of `describe`, in order, with their entry names.
const COLUMNS: &[(&str, &str)] = &[
    ("START-OFFSET", "start"),
    ("IN-FLIGHT", "in_flight"),
    ("ACQUIRED", "acquired"),
    ("ACCEPTED", "accepted"),
    ("RELEASED", "released"),
    ("REJECTED", "rejected"),
    ("REDELIVERED", "redelivered"),
    ("LOCK-EXPIRIES", "lock_expiries"),
    ("ARCHIVED", "archived"),
    ("DEAD-LETTERED", "dead_lettered"),
    ("DLQ-PENDING", "dlq_pending"),
    ("LAG", "lag"),
];

/// The partition table of `describe`.
pub fn format_partitions(rows: &[SharePartitionRow]) -> String {
    let mut headers = vec!["TOPIC", "PARTITION"];
    headers.extend(COLUMNS.iter().map(|(h, _)| *h));
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let mut row = vec![r.topic.clone(), r.partition.to_string()];
            row.extend(
                COLUMNS
                    .iter()
                    .map(|(_, k)| r.counts.get(*k).map_or("-".into(), i64::to_string)),
            );
            row
        })
        .collect();
    format_table(&headers, &cells)
}

pub async fn run(bootstrap: &str, cmd: ShareCommand) -> anyhow::Result<()> {
    let mut admin = Admin::connect(bootstrap).await?;
    match cmd {
        ShareCommand::List => {
            let rows: Vec<Vec<String>> = admin
                .list_share_groups()
                .await?
                .into_iter()
                .map(|(group, state)| vec![group, state])
                .collect();
            print!("{}", format_table(&["GROUP", "STATE"], &rows));
            Ok(())
        }
        ShareCommand::Describe { group } => {
            let described = admin.describe_share_group(&group).await?;
            println!(
                "Share group {group}: state {}, epoch {}, {} member(s)",
                described.state,
                described.epoch,
                described.members.len()
            );
            let members: Vec<Vec<String>> = described
                .members
                .iter()
                .map(|m| {
                    let assignment: Vec<String> = m
                        .assignment
                        .iter()
                        .map(|(topic, partitions)| {
                            let ps: Vec<String> = partitions.iter().map(i32::to_string).collect();
                            format!("{topic}:{}", ps.join(","))
                        })
                        .collect();
                    vec![
                        m.member_id.clone(),
                        m.member_epoch.to_string(),
                        assignment.join(" "),
                    ]
                })
                .collect();
            print!(
                "{}",
                format_table(&["MEMBER-ID", "EPOCH", "ASSIGNMENT"], &members)
            );
            let mut rows: Vec<SharePartitionRow> = described
                .configs
                .iter()
                .filter_map(|(name, value)| parse_state(name, value))
                .collect();
            rows.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
            print!("{}", format_partitions(&rows));
            let totals = |k: &str| rows.iter().filter_map(|r| r.counts.get(k)).sum::<i64>();
            println!(
                "Total: accepted {}, archived {}, dead-lettered {}, in flight {}, acquired {}, lag {}",
                totals("accepted"),
                totals("archived"),
                totals("dead_lettered"),
                totals("in_flight"),
                totals("acquired"),
                totals("lag")
            );
            Ok(())
        }
        ShareCommand::ResetOffsets {
            group,
            topic,
            to_earliest,
            to_latest,
            to_offset,
            execute,
        } => {
            let spec = match (to_earliest, to_latest, to_offset) {
                (true, _, _) => Some(OffsetSpec::Earliest),
                (_, true, _) => Some(OffsetSpec::Latest),
                (_, _, Some(_)) => None,
                _ => bail!("pick one of --to-earliest, --to-latest, --to-offset"),
            };
            let partitions = admin.topic_partitions(&topic).await?;
            let targets: Vec<(i32, i64)> = match (spec, to_offset) {
                (Some(spec), _) => {
                    let keys = partitions.iter().map(|p| (topic.clone(), *p)).collect();
                    admin
                        .log_offsets(&keys, spec)
                        .await?
                        .into_iter()
                        .map(|((_, p), o)| (p, o))
                        .collect()
                }
                (None, offset) => partitions
                    .iter()
                    .map(|p| (*p, offset.unwrap_or_default()))
                    .collect(),
            };
            let rows: Vec<Vec<String>> = targets
                .iter()
                .map(|(p, o)| vec![topic.clone(), p.to_string(), o.to_string()])
                .collect();
            print!(
                "{}",
                format_table(&["TOPIC", "PARTITION", "NEW-START-OFFSET"], &rows)
            );
            if !execute {
                println!("Dry run: add --execute to apply.");
                return Ok(());
            }
            admin
                .alter_share_group_offsets(&group, &topic, &targets)
                .await?;
            println!(
                "Reset {} partition(s) of {topic} for share group {group}.",
                targets.len()
            );
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_entries_become_rows() {
        let row = parse_state(
            "wharf.share.state:orders.eu:3",
            "start=10;in_flight=2;accepted=7;lag=5",
        )
        .unwrap();
        assert_eq!((row.topic.as_str(), row.partition), ("orders.eu", 3));
        assert_eq!(row.counts["accepted"], 7);
        assert!(parse_state("share.record.lock.duration.ms", "30000").is_none());
        let table = format_partitions(&[row]);
        assert!(
            table.contains("ACCEPTED") && table.contains("orders.eu"),
            "{table}"
        );
    }
}
