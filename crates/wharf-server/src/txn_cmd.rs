//! `wharf txn list|describe`: transactions over the Kafka protocol (ListTransactions,
//! DescribeTransactions) against a running broker, as `kafka-transactions.sh` does. Tables
//! are built by pure functions so their layout is tested without a broker.

use anyhow::bail;
use wharf_kafka::kafka_protocol::messages::{
    DescribeTransactionsRequest, ListTransactionsRequest, TransactionalId,
};
use wharf_kafka::kafka_protocol::protocol::StrBytes;
use wharf_kafka::kafka_protocol::ResponseError;
use wharf_kafka::Client;

use crate::group_cmd::format_table;

#[derive(clap::Subcommand, Debug)]
pub enum TxnCommand {
    /// Every transactional id with its producer id and state.
    List {
        /// Only these states (Empty, Ongoing, PrepareCommit, PrepareAbort, CompleteCommit,
        /// CompleteAbort); repeatable.
        #[arg(long = "state")]
        states: Vec<String>,
    },
    /// Producer, epoch, state, timeout, start time and partitions of a transactional id.
    Describe { transactional_id: String },
}

/// One row of `wharf txn list`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub transactional_id: String,
    pub producer_id: i64,
    pub state: String,
}

/// What `wharf txn describe` shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Described {
    pub transactional_id: String,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub state: String,
    pub timeout_ms: i32,
    pub start_ms: i64,
    /// `(topic, partition)`, sorted.
    pub partitions: Vec<(String, i32)>,
}

pub async fn run(bootstrap: &str, cmd: TxnCommand) -> anyhow::Result<()> {
    let mut client = Client::connect(bootstrap).await?;
    match cmd {
        TxnCommand::List { states } => {
            let request = ListTransactionsRequest::default()
                .with_state_filters(
                    states
                        .iter()
                        .map(|s| StrBytes::from_string(s.clone()))
                        .collect(),
                )
                .with_duration_filter(-1);
            let response = client.send(request).await?;
            if let Some(error) = ResponseError::try_from_code(response.error_code) {
                bail!("listing transactions: {error}");
            }
            if !response.unknown_state_filters.is_empty() {
                bail!(
                    "unknown states: {}",
                    response
                        .unknown_state_filters
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
            let mut rows: Vec<Listed> = response
                .transaction_states
                .iter()
                .map(|t| Listed {
                    transactional_id: t.transactional_id.0.to_string(),
                    producer_id: t.producer_id.0,
                    state: t.transaction_state.to_string(),
                })
                .collect();
            rows.sort_by(|a, b| a.transactional_id.cmp(&b.transactional_id));
            print!("{}", format_list(&rows));
            Ok(())
        }
        TxnCommand::Describe { transactional_id } => {
            let request = DescribeTransactionsRequest::default().with_transactional_ids(vec![
                TransactionalId(StrBytes::from_string(transactional_id.clone())),
            ]);
            let response = client.send(request).await?;
            let Some(t) = response.transaction_states.first() else {
                bail!("describing {transactional_id}: empty answer");
            };
            if let Some(error) = ResponseError::try_from_code(t.error_code) {
                bail!("describing {transactional_id}: {error}");
            }
            let mut partitions: Vec<(String, i32)> = t
                .topics
                .iter()
                .flat_map(|topic| {
                    topic
                        .partitions
                        .iter()
                        .map(|p| (topic.topic.0.to_string(), *p))
                })
                .collect();
            partitions.sort();
            print!(
                "{}",
                format_described(&Described {
                    transactional_id,
                    producer_id: t.producer_id.0,
                    producer_epoch: t.producer_epoch,
                    state: t.transaction_state.to_string(),
                    timeout_ms: t.transaction_timeout_ms,
                    start_ms: t.transaction_start_time_ms,
                    partitions,
                })
            );
            Ok(())
        }
    }
}

pub fn format_list(rows: &[Listed]) -> String {
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.transactional_id.clone(),
                r.producer_id.to_string(),
                r.state.clone(),
            ]
        })
        .collect();
    format_table(&["TRANSACTIONAL-ID", "PRODUCER-ID", "STATE"], &rows)
}

pub fn format_described(d: &Described) -> String {
    let start = if d.start_ms < 0 {
        "-".to_string()
    } else {
        d.start_ms.to_string()
    };
    let mut out = format_table(
        &[
            "TRANSACTIONAL-ID",
            "PRODUCER-ID",
            "EPOCH",
            "STATE",
            "TIMEOUT-MS",
            "START-MS",
        ],
        &[vec![
            d.transactional_id.clone(),
            d.producer_id.to_string(),
            d.producer_epoch.to_string(),
            d.state.clone(),
            d.timeout_ms.to_string(),
            start,
        ]],
    );
    if !d.partitions.is_empty() {
        out.push('\n');
        let rows: Vec<Vec<String>> = d
            .partitions
            .iter()
            .map(|(t, p)| vec![t.clone(), p.to_string()])
            .collect();
        out.push_str(&format_table(&["TOPIC", "PARTITION"], &rows));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_and_describe_tables() {
        let list = format_list(&[Listed {
            transactional_id: "orders-tx".into(),
            producer_id: 1000,
            state: "Ongoing".into(),
        }]);
        assert_eq!(
            list,
            "TRANSACTIONAL-ID  PRODUCER-ID  STATE\norders-tx         1000         Ongoing\n"
        );
        let described = format_described(&Described {
            transactional_id: "orders-tx".into(),
            producer_id: 1000,
            producer_epoch: 2,
            state: "Ongoing".into(),
            timeout_ms: 60_000,
            start_ms: 5,
            partitions: vec![("orders".into(), 0), ("orders".into(), 2)],
        });
        assert!(
            described.contains("orders-tx         1000         2      Ongoing  60000       5"),
            "{described}"
        );
        assert!(
            described.ends_with("TOPIC   PARTITION\norders  0\norders  2\n"),
            "{described}"
        );
    }
}
