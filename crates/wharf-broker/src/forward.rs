//! Calls one node's broker makes on another's (ADR 0012): a transaction touches partitions
//! whose shards other nodes may lead. The transaction coordinator writes each marker through
//! the partition's leader (Kafka's WriteTxnMarkers), commits a committed transaction's offsets
//! through the group's coordinator, and a group coordinator that receives a TxnOffsetCommit
//! for a transaction another node coordinates hands the offsets to that node. The server
//! carries a [`NodeCall`] over the cluster port ([`crate::cluster::ClusterView::call`]) and
//! hands what arrives to [`Broker::serve_call`].

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::group::api::CommitPartition;
use crate::txn::{TxnError, TxnOffset};
use crate::{Broker, BrokerError};

/// One partition's offset, as a call carries it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallOffset {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum NodeCall {
    /// Write a transaction marker into a partition the receiver leads.
    Marker {
        topic: String,
        partition: i32,
        producer_id: i64,
        producer_epoch: i16,
        commit: bool,
    },
    /// Make a committed transaction's offsets the committed offsets of a group the receiver
    /// coordinates.
    CommitTxnOffsets {
        group: String,
        offsets: Vec<CallOffset>,
    },
    /// Record a TxnOffsetCommit in a transaction the receiver coordinates.
    AddTxnOffsets {
        transactional_id: String,
        producer_id: i64,
        producer_epoch: i16,
        group: String,
        offsets: Vec<CallOffset>,
    },
    /// Change the configs of a share group on the node serving `__wharf_share_groups`:
    /// (name, value to set, or `None` to delete).
    ShareGroupConfigs {
        group: String,
        ops: Vec<(String, Option<String>)>,
    },
}

/// How long a marker or an offset commit is retried against a moving leader before the
/// transaction is left to the next coordinator (which finishes it when it loads).
const CALL_RETRY_FOR: Duration = Duration::from_secs(120);

fn failed(reason: impl Into<String>) -> BrokerError {
    BrokerError::Txn(TxnError::CoordinatorNotAvailable {
        reason: reason.into(),
    })
}

impl Broker {
    /// Serves a call another node (or this one, leading the shard itself) made on this one.
    pub async fn serve_call(&self, call: NodeCall) -> Result<(), BrokerError> {
        match call {
            NodeCall::Marker {
                topic,
                partition,
                producer_id,
                producer_epoch,
                commit,
            } => {
                let p = self.partition(&topic, partition)?;
                self.check_leader(&p)?;
                self.producers()
                    .write_marker(&p.log, producer_id, producer_epoch, commit)
                    .await
            }
            NodeCall::CommitTxnOffsets { group, offsets } => {
                let partitions = offsets
                    .into_iter()
                    .map(|o| CommitPartition {
                        topic: o.topic,
                        partition: o.partition,
                        offset: o.offset,
                        leader_epoch: o.leader_epoch,
                        metadata: o.metadata,
                    })
                    .collect();
                Ok(self
                    .groups()
                    .commit_transactional_offsets(&group, partitions)
                    .await?)
            }
            NodeCall::AddTxnOffsets {
                transactional_id,
                producer_id,
                producer_epoch,
                group,
                offsets,
            } => {
                let offsets = offsets
                    .into_iter()
                    .map(|o| {
                        (
                            o.topic,
                            o.partition,
                            TxnOffset {
                                offset: o.offset,
                                leader_epoch: o.leader_epoch,
                                metadata: o.metadata,
                            },
                        )
                    })
                    .collect();
                self.record_txn_offsets(
                    &transactional_id,
                    producer_id,
                    producer_epoch,
                    &group,
                    offsets,
                )
                .await
            }
            NodeCall::ShareGroupConfigs { group, ops } => {
                let ops: Vec<crate::ConfigOp> = ops
                    .into_iter()
                    .map(|(k, v)| match v {
                        Some(v) => crate::ConfigOp::Set(k, v),
                        None => crate::ConfigOp::Delete(k),
                    })
                    .collect();
                self.write_share_configs(&group, &ops).await
            }
        }
    }

    /// Sends `call` to the node that leads `shard` now, retrying while leadership moves.
    pub(crate) async fn call_shard_leader(
        &self,
        shard: usize,
        call: NodeCall,
    ) -> Result<(), BrokerError> {
        let deadline = std::time::Instant::now() + CALL_RETRY_FOR;
        let mut last = String::from("no leader");
        while std::time::Instant::now() < deadline {
            let cluster = self.cluster();
            match cluster.shard_leader(shard) {
                Some(leader) if leader == cluster.node_id() && self.shard_served(shard) => {
                    return self.serve_call(call).await;
                }
                Some(leader) if leader != cluster.node_id() => {
                    match cluster.call(leader, call.clone()).await {
                        Ok(()) => return Ok(()),
                        Err(error) => last = format!("node {leader}: {error}"),
                    }
                }
                _ => {}
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Err(failed(format!(
            "shard {shard}: call not served within {CALL_RETRY_FOR:?}: {last}"
        )))
    }

    /// The shard holding `key`'s partition of the coordinators' internal `topic`
    /// (`__consumer_offsets` for a group id, `__transaction_state` for a transactional id).
    pub(crate) fn coordinator_shard(&self, topic: &str, key: &str) -> Option<usize> {
        let t = self.topic(topic)?;
        let index = crate::group::partition_for(key, t.partitions.len());
        t.partitions.get(index).map(|p| p.log.shard_id())
    }
}
