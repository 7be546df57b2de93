//! `wharf topic create|list|describe|alter|delete`: topic administration against a running
//! broker through `wharf_kafka::admin`, as `kafka-topics.sh` does.
//!
//! Every Kafka error code in a response becomes an error naming the Kafka error; tables are
//! built by pure functions so their layout is tested without a broker.

use std::fmt::Write as _;

use anyhow::bail;
use wharf_kafka::admin::topic::{Created, NewTopic, TopicDescription};
use wharf_kafka::admin::Admin;

#[derive(clap::Subcommand, Debug)]
pub enum TopicCommand {
    /// Create a topic.
    Create {
        name: String,
        /// Number of partitions; -1 uses the broker default.
        #[arg(long, default_value_t = -1, allow_negative_numbers = true)]
        partitions: i32,
        /// Replication factor; -1 uses the broker default.
        #[arg(long, default_value_t = -1, allow_negative_numbers = true)]
        replication_factor: i16,
        /// Topic config override as key=value; repeatable.
        #[arg(long = "config", value_name = "KEY=VALUE", value_parser = parse_key_value)]
        configs: Vec<(String, String)>,
        /// Succeed if the topic already exists.
        #[arg(long)]
        if_not_exists: bool,
    },
    /// List all topics.
    List,
    /// Describe one topic, or all topics.
    Describe { name: Option<String> },
    /// Add partitions to a topic or change its configs.
    Alter {
        name: String,
        /// New total number of partitions.
        #[arg(long)]
        partitions: Option<i32>,
        /// Set a topic config as key=value; repeatable.
        #[arg(long = "config", value_name = "KEY=VALUE", value_parser = parse_key_value)]
        configs: Vec<(String, String)>,
        /// Remove a topic config override; repeatable.
        #[arg(long = "delete-config", value_name = "KEY")]
        delete_configs: Vec<String>,
    },
    /// Delete topics.
    Delete {
        #[arg(required = true)]
        names: Vec<String>,
    },
}

pub async fn run(bootstrap: &str, cmd: TopicCommand) -> anyhow::Result<()> {
    let mut admin = Admin::connect(bootstrap).await?;
    match cmd {
        TopicCommand::Create {
            name,
            partitions,
            replication_factor,
            configs,
            if_not_exists,
        } => {
            let topic = NewTopic {
                name,
                partitions,
                replication_factor,
                configs,
            };
            match admin.create_topic(&topic, if_not_exists).await? {
                Created::Created => println!("Created topic {}.", topic.name),
                Created::AlreadyExists => println!("Topic {} already exists.", topic.name),
            }
            Ok(())
        }
        TopicCommand::List => {
            let mut names = admin.list_topics().await?;
            names.sort();
            for name in names {
                println!("{name}");
            }
            Ok(())
        }
        TopicCommand::Describe { name } => {
            let mut out = String::new();
            for description in admin.describe_topics(name.as_deref()).await? {
                if !out.is_empty() {
                    out.push('\n');
                }
                out.push_str(&format_topic(&description));
            }
            print!("{out}");
            Ok(())
        }
        TopicCommand::Alter {
            name,
            partitions,
            configs,
            delete_configs,
        } => alter(&mut admin, &name, partitions, &configs, &delete_configs).await,
        TopicCommand::Delete { names } => {
            let mut failures = Vec::new();
            for (name, outcome) in admin.delete_topics(&names).await? {
                match outcome {
                    Ok(()) => println!("Deleted topic {name}."),
                    Err(err) => failures.push(err.to_string()),
                }
            }
            if !failures.is_empty() {
                bail!("{}", failures.join("; "));
            }
            Ok(())
        }
    }
}

async fn alter(
    admin: &mut Admin,
    name: &str,
    partitions: Option<i32>,
    configs: &[(String, String)],
    delete_configs: &[String],
) -> anyhow::Result<()> {
    if partitions.is_none() && configs.is_empty() && delete_configs.is_empty() {
        bail!("nothing to alter: pass --partitions, --config or --delete-config");
    }
    if let Some(count) = partitions {
        admin.create_partitions(name, count).await?;
        println!("Topic {name} now has {count} partitions.");
    }
    if !configs.is_empty() || !delete_configs.is_empty() {
        admin
            .alter_topic_configs(name, configs, delete_configs)
            .await?;
        println!("Updated configs of topic {name}.");
    }
    Ok(())
}

fn parse_key_value(arg: &str) -> Result<(String, String), String> {
    match arg.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_owned(), value.to_owned())),
        _ => Err(format!("expected KEY=VALUE, got {arg:?}")),
    }
}

/// One summary line, then an aligned table with a row per partition.
fn format_topic(topic: &TopicDescription) -> String {
    let replication_factor = topic
        .partitions
        .first()
        .map_or(0, |partition| partition.replicas.len());
    let configs = if topic.configs.is_empty() {
        "-".to_owned()
    } else {
        topic
            .configs
            .iter()
            .map(|(key, value)| format!("{key}={value}"))
            .collect::<Vec<_>>()
            .join(",")
    };
    let mut out = format!(
        "Topic: {}  TopicId: {}  PartitionCount: {}  ReplicationFactor: {}  Configs: {}\n",
        topic.name,
        topic.topic_id.as_deref().unwrap_or("-"),
        topic.partitions.len(),
        replication_factor,
        configs
    );
    let rows: Vec<Vec<String>> = topic
        .partitions
        .iter()
        .map(|row| {
            vec![
                row.partition.to_string(),
                leader_cell(row.leader),
                join_ids(&row.replicas),
                join_ids(&row.isr),
                offset_cell(row.log_start),
                offset_cell(row.high_watermark),
            ]
        })
        .collect();
    out.push_str(&format_table(
        &[
            "PARTITION",
            "LEADER",
            "REPLICAS",
            "ISR",
            "LOG-START",
            "HIGH-WATERMARK",
        ],
        &rows,
    ));
    out
}

/// Left-aligned columns separated by two spaces, no trailing whitespace, one line per row.
fn format_table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers
        .iter()
        .map(|header| header.chars().count())
        .collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let header_cells: Vec<&str> = headers.to_vec();
    push_row(&mut out, &widths, &header_cells);
    for row in rows {
        let cells: Vec<&str> = row.iter().map(String::as_str).collect();
        push_row(&mut out, &widths, &cells);
    }
    out
}

fn push_row(out: &mut String, widths: &[usize], cells: &[&str]) {
    let mut line = String::new();
    for (index, (cell, width)) in cells.iter().zip(widths).enumerate() {
        if index > 0 {
            line.push_str("  ");
        }
        // Writing to a String cannot fail.
        let _ = write!(line, "{cell:<width$}");
    }
    out.push_str(line.trim_end());
    out.push('\n');
}

fn leader_cell(leader: i32) -> String {
    if leader < 0 {
        "none".to_owned()
    } else {
        leader.to_string()
    }
}

fn join_ids(ids: &[i32]) -> String {
    ids.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

fn offset_cell(offset: Option<i64>) -> String {
    offset.map_or_else(|| "-".to_owned(), |offset| offset.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use wharf_kafka::admin::topic::PartitionDescription;

    #[test]
    fn table_columns_line_up_under_their_headers() {
        let table = format_table(
            &["PARTITION", "LEADER", "REPLICAS"],
            &[
                vec!["0".into(), "1".into(), "1,2,3".into()],
                vec!["10".into(), "none".into(), "2".into()],
            ],
        );
        assert_eq!(
            table,
            "PARTITION  LEADER  REPLICAS\n\
             0          1       1,2,3\n\
             10         none    2\n"
        );
    }

    #[test]
    fn topic_description_shows_summary_and_one_row_per_partition() {
        let topic = TopicDescription {
            name: "orders".into(),
            topic_id: Some("AAAAAAAAAAAAAAAAAAAAAA".into()),
            configs: vec![
                ("cleanup.policy".into(), "compact".into()),
                ("retention.ms".into(), "1000".into()),
            ],
            partitions: vec![
                PartitionDescription {
                    partition: 0,
                    leader: 1,
                    replicas: vec![1, 2],
                    isr: vec![1, 2],
                    log_start: Some(0),
                    high_watermark: Some(12_345),
                },
                PartitionDescription {
                    partition: 1,
                    leader: -1,
                    replicas: vec![2, 1],
                    isr: vec![],
                    log_start: None,
                    high_watermark: None,
                },
            ],
        };
        let text = format_topic(&topic);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines,
            [
                "Topic: orders  TopicId: AAAAAAAAAAAAAAAAAAAAAA  PartitionCount: 2  \
                 ReplicationFactor: 2  Configs: cleanup.policy=compact,retention.ms=1000",
                "PARTITION  LEADER  REPLICAS  ISR  LOG-START  HIGH-WATERMARK",
                "0          1       1,2       1,2  0          12345",
                "1          none    2,1            -          -",
            ]
        );
    }

    #[test]
    fn config_argument_splits_at_the_first_equals_sign() {
        assert_eq!(
            parse_key_value("a=b=c"),
            Ok(("a".to_owned(), "b=c".to_owned()))
        );
        assert!(parse_key_value("novalue").is_err());
        assert!(parse_key_value("=x").is_err());
    }
}
