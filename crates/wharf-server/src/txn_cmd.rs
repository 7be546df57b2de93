//! `wharf txn list|describe`: transactions (ListTransactions, DescribeTransactions) against a
//! running broker through `wharf_kafka::admin`, as `kafka-transactions.sh` does. Tables
//! are built by pure functions so their layout is tested without a broker.

use wharf_kafka::admin::txn::{TransactionDescription, TransactionListing};
use wharf_kafka::admin::Admin;

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

pub async fn run(bootstrap: &str, cmd: TxnCommand) -> anyhow::Result<()> {
    let mut admin = Admin::connect(bootstrap).await?;
    match cmd {
        TxnCommand::List { states } => {
            let mut rows = admin.list_transactions(&states).await?;
            rows.sort_by(|a, b| a.transactional_id.cmp(&b.transactional_id));
            print!("{}", format_list(&rows));
            Ok(())
        }
        TxnCommand::Describe { transactional_id } => {
            let described = admin.describe_transaction(&transactional_id).await?;
            print!("{}", format_described(&described));
            Ok(())
        }
    }
}

pub fn format_list(rows: &[TransactionListing]) -> String {
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

pub fn format_described(d: &TransactionDescription) -> String {
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
        let list = format_list(&[TransactionListing {
            transactional_id: "orders-tx".into(),
            producer_id: 1000,
            state: "Ongoing".into(),
        }]);
        assert_eq!(
            list,
            "TRANSACTIONAL-ID  PRODUCER-ID  STATE\norders-tx         1000         Ongoing\n"
        );
        let described = format_described(&TransactionDescription {
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
