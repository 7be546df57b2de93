//! `wharf group list|describe|delete|reset-offsets`: consumer groups over the Kafka protocol
//! against a running broker, as `kafka-consumer-groups.sh` does. `reset-offsets` is a dry run
//! unless `--execute` is given, and needs the group to have no members.
//!
//! Lag is the partition's log end offset (high watermark) minus the committed offset. Tables
//! are built by pure functions so their layout is tested without a broker.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use anyhow::{bail, Context};
use wharf_kafka::kafka_protocol::messages::list_offsets_request::{
    ListOffsetsPartition, ListOffsetsTopic,
};
use wharf_kafka::kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use wharf_kafka::kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use wharf_kafka::kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestGroup;
use wharf_kafka::kafka_protocol::messages::{
    ApiKey, BrokerId, ConsumerGroupDescribeRequest, ConsumerProtocolAssignment,
    DeleteGroupsRequest, DescribeGroupsRequest, GroupId, ListGroupsRequest, ListOffsetsRequest,
    MetadataRequest, OffsetCommitRequest, OffsetFetchRequest, TopicName,
};
use wharf_kafka::kafka_protocol::protocol::{Decodable, StrBytes};
use wharf_kafka::kafka_protocol::ResponseError;
use wharf_kafka::Client;

const EARLIEST: i64 = -2;
const LATEST: i64 = -1;

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
    let mut client = Client::connect(bootstrap).await?;
    match cmd {
        GroupCommand::List => {
            let response = client.send(ListGroupsRequest::default()).await?;
            check(response.error_code, "listing groups")?;
            let mut rows: Vec<Vec<String>> = response
                .groups
                .iter()
                .map(|g| {
                    vec![
                        g.group_id.0.to_string(),
                        if g.group_state.is_empty() {
                            "-".into()
                        } else {
                            g.group_state.to_string()
                        },
                        g.protocol_type.to_string(),
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
            let d = describe(&mut client, &group).await?;
            print!("{}", format_group(&d));
            Ok(())
        }
        GroupCommand::Delete { groups } => {
            let request = DeleteGroupsRequest::default()
                .with_groups_names(groups.iter().map(|g| GroupId(str_bytes(g))).collect());
            let response = client.send(request).await?;
            let mut failures = Vec::new();
            for r in &response.results {
                match check(r.error_code, &format!("deleting group {}", r.group_id.0)) {
                    Ok(()) => println!("Deleted group {}.", r.group_id.0),
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
            reset(&mut client, &group, &selection, all_topics, target, execute).await
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

/// One partition row of `describe`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionRow {
    pub topic: String,
    pub partition: i32,
    pub committed: Option<i64>,
    pub log_end: Option<i64>,
    pub owner: Option<String>,
}

impl PartitionRow {
    /// Log end offset minus committed offset, when both are known.
    pub fn lag(&self) -> Option<i64> {
        Some((self.log_end? - self.committed?).max(0))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberRow {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub host: String,
    pub assignment: Vec<(String, i32)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupDescription {
    pub group: String,
    pub state: String,
    pub protocol: String,
    pub members: Vec<MemberRow>,
    pub partitions: Vec<PartitionRow>,
}

/// The (topic, partition) pairs of a consumer-protocol assignment; empty if it is not one.
pub fn decode_assignment(bytes: &[u8]) -> Vec<(String, i32)> {
    let (Some(&[high, low]), Some(mut rest)) = (bytes.get(..2), bytes.get(2..)) else {
        return Vec::new();
    };
    let version = i16::from_be_bytes([high, low]).clamp(0, 3);
    ConsumerProtocolAssignment::decode(&mut rest, version)
        .map(|a| {
            a.assigned_partitions
                .iter()
                .flat_map(|tp| tp.partitions.iter().map(|p| (tp.topic.0.to_string(), *p)))
                .collect()
        })
        .unwrap_or_default()
}

/// A consumer-protocol (KIP-848) group through ConsumerGroupDescribe: `None` when the group
/// is not one (or the broker does not serve the API).
async fn describe_consumer_protocol(
    client: &mut Client,
    group: &str,
) -> anyhow::Result<Option<(String, String, Vec<MemberRow>)>> {
    let request =
        ConsumerGroupDescribeRequest::default().with_group_ids(vec![GroupId(str_bytes(group))]);
    let Ok(response) = client.send(request).await else {
        return Ok(None);
    };
    let Some(described) = response.groups.first() else {
        return Ok(None);
    };
    if described.error_code != 0 {
        return Ok(None);
    }
    let members = described
        .members
        .iter()
        .map(|m| MemberRow {
            member_id: m.member_id.to_string(),
            instance_id: m.instance_id.as_ref().map(ToString::to_string),
            client_id: m.client_id.to_string(),
            host: m.client_host.to_string(),
            assignment: m
                .assignment
                .topic_partitions
                .iter()
                .flat_map(|tp| {
                    tp.partitions
                        .iter()
                        .map(|p| (tp.topic_name.0.to_string(), *p))
                })
                .collect(),
        })
        .collect();
    Ok(Some((
        described.group_state.to_string(),
        format!("consumer protocol, {} assignor", described.assignor_name),
        members,
    )))
}

async fn describe(client: &mut Client, group: &str) -> anyhow::Result<GroupDescription> {
    if let Some((state, protocol, members)) = describe_consumer_protocol(client, group).await? {
        return describe_with(client, group, state, protocol, members).await;
    }
    let response = client
        .send(DescribeGroupsRequest::default().with_groups(vec![GroupId(str_bytes(group))]))
        .await?;
    let described = response
        .groups
        .first()
        .context("DescribeGroups returned no group")?;
    let missing = ResponseError::GroupIdNotFound.code();
    if described.error_code == missing || described.group_state.as_str() == "Dead" {
        bail!("group {group} does not exist");
    }
    check(described.error_code, &format!("describing group {group}"))?;
    let members: Vec<MemberRow> = described
        .members
        .iter()
        .map(|m| MemberRow {
            member_id: m.member_id.to_string(),
            instance_id: m.group_instance_id.as_ref().map(ToString::to_string),
            client_id: m.client_id.to_string(),
            host: m.client_host.to_string(),
            assignment: decode_assignment(&m.member_assignment),
        })
        .collect();
    let state = described.group_state.to_string();
    let protocol = described.protocol_data.to_string();
    describe_with(client, group, state, protocol, members).await
}

/// The rest of `describe`: committed offsets, log ends and owners for `members`.
async fn describe_with(
    client: &mut Client,
    group: &str,
    state: String,
    protocol: String,
    members: Vec<MemberRow>,
) -> anyhow::Result<GroupDescription> {
    let committed = fetch_committed(client, group).await?;
    let mut keys: BTreeSet<(String, i32)> = committed.keys().cloned().collect();
    for m in &members {
        keys.extend(m.assignment.iter().cloned());
    }
    let log_end = list_offsets(client, &keys, LATEST).await?;
    let partitions = keys
        .into_iter()
        .map(|(topic, partition)| {
            let key = (topic.clone(), partition);
            PartitionRow {
                committed: committed.get(&key).copied(),
                log_end: log_end.get(&key).copied(),
                owner: members
                    .iter()
                    .find(|m| m.assignment.contains(&key))
                    .map(|m| m.member_id.clone()),
                topic,
                partition,
            }
        })
        .collect();
    Ok(GroupDescription {
        group: group.to_string(),
        state,
        protocol,
        members,
        partitions,
    })
}

/// Every committed offset of `group`.
async fn fetch_committed(
    client: &mut Client,
    group: &str,
) -> anyhow::Result<BTreeMap<(String, i32), i64>> {
    let version = client
        .version_for(ApiKey::OffsetFetch)
        .context("broker does not support OffsetFetch")?;
    let mut out = BTreeMap::new();
    let mut add = |topic: &str, partition: i32, offset: i64, code: i16| -> anyhow::Result<()> {
        check(code, &format!("fetching offsets of {topic}[{partition}]"))?;
        if offset >= 0 {
            out.insert((topic.to_string(), partition), offset);
        }
        Ok(())
    };
    if version >= 8 {
        let request =
            OffsetFetchRequest::default().with_groups(vec![OffsetFetchRequestGroup::default()
                .with_group_id(GroupId(str_bytes(group)))
                .with_topics(None)]);
        let response = client.send(request).await?;
        for g in &response.groups {
            check(g.error_code, &format!("fetching offsets of group {group}"))?;
            for t in &g.topics {
                for p in &t.partitions {
                    add(
                        t.name.0.as_str(),
                        p.partition_index,
                        p.committed_offset,
                        p.error_code,
                    )?;
                }
            }
        }
    } else {
        let request = OffsetFetchRequest::default()
            .with_group_id(GroupId(str_bytes(group)))
            .with_topics(None);
        let response = client.send(request).await?;
        check(
            response.error_code,
            &format!("fetching offsets of group {group}"),
        )?;
        for t in &response.topics {
            for p in &t.partitions {
                add(
                    t.name.0.as_str(),
                    p.partition_index,
                    p.committed_offset,
                    p.error_code,
                )?;
            }
        }
    }
    Ok(out)
}

/// ListOffsets at `timestamp` for each partition; -1 where no record is at or after it.
async fn list_offsets(
    client: &mut Client,
    keys: &BTreeSet<(String, i32)>,
    timestamp: i64,
) -> anyhow::Result<BTreeMap<(String, i32), i64>> {
    let mut by_topic: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
    for (topic, partition) in keys {
        by_topic.entry(topic).or_default().push(*partition);
    }
    let mut out = BTreeMap::new();
    if by_topic.is_empty() {
        return Ok(out);
    }
    let topics = by_topic
        .into_iter()
        .map(|(topic, partitions)| {
            ListOffsetsTopic::default()
                .with_name(TopicName(str_bytes(topic)))
                .with_partitions(
                    partitions
                        .into_iter()
                        .map(|p| {
                            ListOffsetsPartition::default()
                                .with_partition_index(p)
                                .with_timestamp(timestamp)
                        })
                        .collect(),
                )
        })
        .collect();
    let response = client
        .send(
            ListOffsetsRequest::default()
                .with_replica_id(BrokerId(-1))
                .with_topics(topics),
        )
        .await?;
    for t in response.topics {
        for p in t.partitions {
            if p.error_code == 0 {
                out.insert((t.name.0.to_string(), p.partition_index), p.offset);
            }
        }
    }
    Ok(out)
}

/// Partitions of a topic, from Metadata.
async fn topic_partitions(client: &mut Client, topic: &str) -> anyhow::Result<Vec<i32>> {
    let request = MetadataRequest::default()
        .with_topics(Some(vec![
            MetadataRequestTopic::default().with_name(Some(TopicName(str_bytes(topic))))
        ]))
        .with_allow_auto_topic_creation(false);
    let response = client.send(request).await?;
    let t = response
        .topics
        .first()
        .with_context(|| format!("no metadata for topic {topic}"))?;
    check(t.error_code, &format!("topic {topic}"))?;
    Ok(t.partitions.iter().map(|p| p.partition_index).collect())
}

async fn reset(
    client: &mut Client,
    group: &str,
    selection: &[(String, Option<Vec<i32>>)],
    all_topics: bool,
    target: Target,
    execute: bool,
) -> anyhow::Result<()> {
    let response = client
        .send(DescribeGroupsRequest::default().with_groups(vec![GroupId(str_bytes(group))]))
        .await?;
    if let Some(g) = response.groups.first() {
        if !g.members.is_empty() {
            bail!(
                "group {group} has {} active members ({}); stop them before resetting offsets",
                g.members.len(),
                g.group_state
            );
        }
    }
    let committed = fetch_committed(client, group).await?;
    let mut keys = BTreeSet::new();
    if all_topics {
        keys.extend(committed.keys().cloned());
    }
    for (topic, partitions) in selection {
        let partitions = match partitions {
            Some(p) => p.clone(),
            None => topic_partitions(client, topic).await?,
        };
        keys.extend(partitions.into_iter().map(|p| (topic.clone(), p)));
    }
    if keys.is_empty() {
        bail!("no partitions to reset");
    }
    let earliest = list_offsets(client, &keys, EARLIEST).await?;
    let latest = list_offsets(client, &keys, LATEST).await?;
    let by_time = match target {
        Target::Timestamp(ts) => list_offsets(client, &keys, ts).await?,
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
    let mut topics: BTreeMap<&str, Vec<OffsetCommitRequestPartition>> = BTreeMap::new();
    for ((topic, partition), _, new) in &plan {
        topics.entry(topic).or_default().push(
            OffsetCommitRequestPartition::default()
                .with_partition_index(*partition)
                .with_committed_offset(*new)
                .with_committed_leader_epoch(-1),
        );
    }
    let request = OffsetCommitRequest::default()
        .with_group_id(GroupId(str_bytes(group)))
        .with_generation_id_or_member_epoch(-1)
        .with_retention_time_ms(-1)
        .with_topics(
            topics
                .into_iter()
                .map(|(topic, partitions)| {
                    OffsetCommitRequestTopic::default()
                        .with_name(TopicName(str_bytes(topic)))
                        .with_partitions(partitions)
                })
                .collect(),
        );
    let response = client.send(request).await?;
    for t in &response.topics {
        for p in &t.partitions {
            check(
                p.error_code,
                &format!("committing {}[{}]", t.name.0, p.partition_index),
            )?;
        }
    }
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

fn str_bytes(text: &str) -> StrBytes {
    StrBytes::from_string(text.to_owned())
}

fn check(error_code: i16, context: &str) -> anyhow::Result<()> {
    match ResponseError::try_from_code(error_code) {
        None => Ok(()),
        Some(error) => bail!("{context}: {error}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn assignments_decode_from_consumer_protocol_bytes() {
        use wharf_kafka::kafka_protocol::messages::consumer_protocol_assignment::TopicPartition;
        use wharf_kafka::kafka_protocol::protocol::Encodable;
        let a = ConsumerProtocolAssignment::default().with_assigned_partitions(vec![
            TopicPartition::default()
                .with_topic(TopicName(str_bytes("t")))
                .with_partitions(vec![1, 3]),
        ]);
        let mut buf: Vec<u8> = 1i16.to_be_bytes().to_vec();
        a.encode(&mut buf, 1).unwrap();
        assert_eq!(
            decode_assignment(&buf),
            vec![("t".to_string(), 1), ("t".to_string(), 3)]
        );
        assert!(decode_assignment(b"x").is_empty());
    }
}
