//! Transactions: ListTransactions and DescribeTransactions.

use kafka_protocol::messages::{
    DescribeTransactionsRequest, ListTransactionsRequest, TransactionalId,
};

use super::{check, str_bytes, Admin, AdminError};

/// One transactional id of [`Admin::list_transactions`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransactionListing {
    pub transactional_id: String,
    pub producer_id: i64,
    pub state: String,
}

/// A transaction as [`Admin::describe_transaction`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransactionDescription {
    pub transactional_id: String,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub state: String,
    pub timeout_ms: i32,
    /// -1 when no transaction is open.
    pub start_ms: i64,
    /// `(topic, partition)`, sorted.
    pub partitions: Vec<(String, i32)>,
}

impl Admin {
    /// Every transactional id, in the broker's order; only those in `states` unless it is
    /// empty. A state the broker does not know is an [`AdminError::UnknownStates`].
    pub async fn list_transactions(
        &mut self,
        states: &[String],
    ) -> Result<Vec<TransactionListing>, AdminError> {
        let request = ListTransactionsRequest::default()
            .with_state_filters(states.iter().map(|s| str_bytes(s)).collect())
            .with_duration_filter(-1);
        let response = self.client.send(request).await?;
        check(response.error_code, None, "listing transactions")?;
        if !response.unknown_state_filters.is_empty() {
            return Err(AdminError::UnknownStates {
                states: response
                    .unknown_state_filters
                    .iter()
                    .map(ToString::to_string)
                    .collect(),
            });
        }
        Ok(response
            .transaction_states
            .iter()
            .map(|t| TransactionListing {
                transactional_id: t.transactional_id.0.to_string(),
                producer_id: t.producer_id.0,
                state: t.transaction_state.to_string(),
            })
            .collect())
    }

    /// Producer, epoch, state, timeout, start time and partitions of `transactional_id`.
    pub async fn describe_transaction(
        &mut self,
        transactional_id: &str,
    ) -> Result<TransactionDescription, AdminError> {
        let request = DescribeTransactionsRequest::default()
            .with_transactional_ids(vec![TransactionalId(str_bytes(transactional_id))]);
        let response = self.client.send(request).await?;
        let context = format!("describing {transactional_id}");
        let Some(t) = response.transaction_states.first() else {
            return Err(AdminError::MissingResult {
                what: format!("{context}: empty answer"),
            });
        };
        check(t.error_code, None, &context)?;
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
        Ok(TransactionDescription {
            transactional_id: transactional_id.to_owned(),
            producer_id: t.producer_id.0,
            producer_epoch: t.producer_epoch,
            state: t.transaction_state.to_string(),
            timeout_ms: t.transaction_timeout_ms,
            start_ms: t.transaction_start_time_ms,
            partitions,
        })
    }
}
