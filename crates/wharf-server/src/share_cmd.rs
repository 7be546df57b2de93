//! `wharf share list|describe|reset-offsets`: share groups (KIP-932) over the Kafka protocol
//! against a running broker, as `kafka-share-groups.sh` does. `describe` shows members and
//! assignments (ShareGroupDescribe), and per share partition the start offset, in-flight,
//! acquired, accepted, released, rejected, redelivered, archived and dead-lettered counts,
//! lock expiries and lag (the broker's read-only `wharf.share.state:*` group configs).
//! `reset-offsets` is a dry run unless `--execute` is given, and needs the group to have no
//! members.

use std::collections::BTreeMap;

use anyhow::{bail, Context};
use wharf_kafka::kafka_protocol::messages::alter_share_group_offsets_request::{
    AlterShareGroupOffsetsRequestPartition, AlterShareGroupOffsetsRequestTopic,
};
use wharf_kafka::kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use wharf_kafka::kafka_protocol::messages::list_offsets_request::{
    ListOffsetsPartition, ListOffsetsTopic,
};
use wharf_kafka::kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use wharf_kafka::kafka_protocol::messages::{
    AlterShareGroupOffsetsRequest, BrokerId, DescribeConfigsRequest, GroupId, ListGroupsRequest,
    ListOffsetsRequest, MetadataRequest, ShareGroupDescribeRequest, TopicName,
};
use wharf_kafka::kafka_protocol::protocol::StrBytes;
use wharf_kafka::kafka_protocol::ResponseError;
use wharf_kafka::Client;

use crate::group_cmd::format_table;

/// Resource type GROUP in the config APIs.
const RESOURCE_GROUP: i8 = 32;
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

fn str_bytes(text: &str) -> StrBytes {
    StrBytes::from_string(text.to_owned())
}

fn check(error_code: i16, context: &str) -> anyhow::Result<()> {
    match ResponseError::try_from_code(error_code) {
        None => Ok(()),
        Some(error) => bail!("{context}: {error}"),
    }
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
    let mut client = Client::connect(bootstrap).await?;
    match cmd {
        ShareCommand::List => {
            let request = ListGroupsRequest::default().with_types_filter(vec![str_bytes("share")]);
            let response = client.send(request).await?;
            check(response.error_code, "listing share groups")?;
            let rows: Vec<Vec<String>> = response
                .groups
                .iter()
                .map(|g| vec![g.group_id.0.to_string(), g.group_state.to_string()])
                .collect();
            print!("{}", format_table(&["GROUP", "STATE"], &rows));
            Ok(())
        }
        ShareCommand::Describe { group } => {
            let response = client
                .send(
                    ShareGroupDescribeRequest::default()
                        .with_group_ids(vec![GroupId(str_bytes(&group))]),
                )
                .await?;
            let described = response
                .groups
                .first()
                .context("the broker described no group")?;
            check(
                described.error_code,
                &format!("describing share group {group}"),
            )?;
            println!(
                "Share group {group}: state {}, epoch {}, {} member(s)",
                described.group_state,
                described.group_epoch,
                described.members.len()
            );
            let members: Vec<Vec<String>> = described
                .members
                .iter()
                .map(|m| {
                    let assignment: Vec<String> = m
                        .assignment
                        .topic_partitions
                        .iter()
                        .map(|t| {
                            let ps: Vec<String> = t.partitions.iter().map(i32::to_string).collect();
                            format!("{}:{}", t.topic_name.0, ps.join(","))
                        })
                        .collect();
                    vec![
                        m.member_id.to_string(),
                        m.member_epoch.to_string(),
                        assignment.join(" "),
                    ]
                })
                .collect();
            print!(
                "{}",
                format_table(&["MEMBER-ID", "EPOCH", "ASSIGNMENT"], &members)
            );
            let configs = client
                .send(DescribeConfigsRequest::default().with_resources(vec![
                    DescribeConfigsResource::default()
                        .with_resource_type(RESOURCE_GROUP)
                        .with_resource_name(str_bytes(&group))
                        .with_configuration_keys(None),
                ]))
                .await?;
            let result = configs.results.first().context("no config result")?;
            check(result.error_code, &format!("describing configs of {group}"))?;
            let mut rows: Vec<SharePartitionRow> = result
                .configs
                .iter()
                .filter_map(|c| parse_state(&c.name, c.value.as_deref().unwrap_or_default()))
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
            let timestamp = match (to_earliest, to_latest, to_offset) {
                (true, _, _) => -2,
                (_, true, _) => -1,
                (_, _, Some(_)) => 0,
                _ => bail!("pick one of --to-earliest, --to-latest, --to-offset"),
            };
            let metadata = client
                .send(MetadataRequest::default().with_topics(Some(vec![
                    MetadataRequestTopic::default().with_name(Some(TopicName(str_bytes(&topic)))),
                ])))
                .await?;
            let t = metadata.topics.first().context("no such topic")?;
            check(t.error_code, &format!("topic {topic}"))?;
            let partitions: Vec<i32> = t.partitions.iter().map(|p| p.partition_index).collect();
            let targets: Vec<(i32, i64)> = if let Some(offset) = to_offset {
                partitions.iter().map(|p| (*p, offset)).collect()
            } else {
                let response = client
                    .send(
                        ListOffsetsRequest::default()
                            .with_replica_id(BrokerId(-1))
                            .with_topics(vec![ListOffsetsTopic::default()
                                .with_name(TopicName(str_bytes(&topic)))
                                .with_partitions(
                                    partitions
                                        .iter()
                                        .map(|p| {
                                            ListOffsetsPartition::default()
                                                .with_partition_index(*p)
                                                .with_timestamp(timestamp)
                                        })
                                        .collect(),
                                )]),
                    )
                    .await?;
                response
                    .topics
                    .iter()
                    .flat_map(|t| t.partitions.iter().map(|p| (p.partition_index, p.offset)))
                    .collect()
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
            let response = client
                .send(
                    AlterShareGroupOffsetsRequest::default()
                        .with_group_id(GroupId(str_bytes(&group)))
                        .with_topics(vec![AlterShareGroupOffsetsRequestTopic::default()
                            .with_topic_name(TopicName(str_bytes(&topic)))
                            .with_partitions(
                                targets
                                    .iter()
                                    .map(|(p, o)| {
                                        AlterShareGroupOffsetsRequestPartition::default()
                                            .with_partition_index(*p)
                                            .with_start_offset(*o)
                                    })
                                    .collect(),
                            )]),
                )
                .await?;
            check(response.error_code, "resetting share offsets")?;
            for t in &response.responses {
                for p in &t.partitions {
                    check(p.error_code, &format!("{}[{}]", topic, p.partition_index))?;
                }
            }
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
