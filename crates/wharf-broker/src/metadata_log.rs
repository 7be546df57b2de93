//! Cluster metadata through the controller (ADR 0012). On a single node the broker writes
//! `meta.json` itself. In a cluster the server hands the broker a [`MetadataLog`]: a topic
//! change becomes a [`MetadataRequest`] that the controller (the leader of the controller's
//! raft group) checks against the metadata it applied, turns into a [`MetadataRecord`]
//! (allocating log ids and the topic id) and commits; every node, the controller included,
//! applies committed records in log order through [`Broker::apply_metadata`]. Applying is
//! idempotent: `meta.json` remembers the offset of the next record to apply, so a replay after
//! a restart skips what this node already applied, and a node that was down catches up.
//!
//! ```text
//!  create_topic (any node) ─► MetadataLog::submit ─► controller: prepare_metadata ─► raft
//!    every node: committed record ─► apply_metadata ─► meta.json + topics in memory
//! ```

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::metadata::TopicRecord;
use crate::producer::ID_BLOCK;
use crate::quota::{QuotaEntity, QuotaRecord};
use crate::scheduled::SCHEDULED_TOPIC;
use crate::topic_config::TopicConfig;
use crate::txn::TRANSACTION_STATE_TOPIC;
use crate::{Broker, BrokerError, ConfigOp, TopicSpec};

/// A metadata change as a node asks the controller for it (what is forwarded).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum MetadataRequest {
    /// `partitions` is already resolved (`num.partitions` of the asking node for -1).
    CreateTopic {
        name: String,
        partitions: i32,
        configs: BTreeMap<String, String>,
    },
    DeleteTopic {
        name: String,
    },
    CreatePartitions {
        name: String,
        total: i32,
    },
    /// AlterConfigs (`replace`) or IncrementalAlterConfigs (`ops`).
    AlterConfigs {
        name: String,
        replace: Option<BTreeMap<String, String>>,
        ops: Vec<ConfigOp>,
    },
    AlterClientQuota {
        entity: QuotaEntity,
        ops: Vec<(String, Option<f64>)>,
    },
    /// A block of producer ids for node `node` (KIP-730's AllocateProducerIds).
    ReserveProducerIds {
        node: i32,
    },
    /// Makes the asking controller's cluster id every node's (once per cluster).
    SetClusterId,
}

/// A committed metadata change, applied by every node in log order.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum MetadataRecord {
    /// The whole topic: its id and the log id of each partition (allocated by the controller).
    TopicCreated(TopicRecord),
    TopicDeleted {
        name: String,
        id: uuid::Uuid,
    },
    /// The log id of every partition, old ones first.
    PartitionsAdded {
        name: String,
        id: uuid::Uuid,
        log_ids: Vec<u64>,
    },
    /// Every override of the topic after the change.
    ConfigsChanged {
        name: String,
        id: uuid::Uuid,
        configs: BTreeMap<String, String>,
    },
    /// Every client quota after the change.
    QuotasSet {
        quotas: Vec<QuotaRecord>,
    },
    /// Producer ids `start..start + ID_BLOCK` belong to node `node`.
    ProducerIdsReserved {
        node: i32,
        start: i64,
    },
    /// The cluster's id (Metadata, DescribeCluster) on every node.
    ClusterIdSet {
        cluster_id: String,
    },
}

/// Where the broker sends metadata changes when it runs in a cluster.
pub trait MetadataLog: Send + Sync {
    /// Hands `request` to the controller and returns once this node has applied the record it
    /// became (or the controller's refusal). Blocking: call it off the async workers.
    fn submit(&self, request: MetadataRequest) -> Result<(), BrokerError>;
}

/// Why the controller refused a request, as it crosses the cluster port (a [`BrokerError`]
/// the asking node rebuilds).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum MetadataRefusal {
    UnknownTopic {
        topic: String,
    },
    TopicAlreadyExists {
        topic: String,
    },
    InvalidTopic {
        topic: String,
        reason: String,
    },
    InvalidPartitions {
        topic: String,
        reason: String,
    },
    InvalidConfig {
        key: String,
        value: String,
        reason: String,
    },
    InvalidRequest(String),
    NotController(String),
    Other(String),
}

impl From<&BrokerError> for MetadataRefusal {
    fn from(e: &BrokerError) -> Self {
        match e {
            BrokerError::UnknownTopicOrPartition { topic, .. } => Self::UnknownTopic {
                topic: topic.clone(),
            },
            BrokerError::TopicAlreadyExists { topic } => Self::TopicAlreadyExists {
                topic: topic.clone(),
            },
            BrokerError::InvalidTopic { topic, reason } => Self::InvalidTopic {
                topic: topic.clone(),
                reason: reason.clone(),
            },
            BrokerError::InvalidPartitions { topic, reason } => Self::InvalidPartitions {
                topic: topic.clone(),
                reason: reason.clone(),
            },
            BrokerError::InvalidConfig { key, value, reason } => Self::InvalidConfig {
                key: key.clone(),
                value: value.clone(),
                reason: reason.clone(),
            },
            BrokerError::InvalidRequest(r) => Self::InvalidRequest(r.clone()),
            BrokerError::NotController(r) => Self::NotController(r.clone()),
            other => Self::Other(other.to_string()),
        }
    }
}

impl From<MetadataRefusal> for BrokerError {
    fn from(r: MetadataRefusal) -> Self {
        match r {
            MetadataRefusal::UnknownTopic { topic } => BrokerError::UnknownTopicOrPartition {
                topic,
                partition: -1,
            },
            MetadataRefusal::TopicAlreadyExists { topic } => {
                BrokerError::TopicAlreadyExists { topic }
            }
            MetadataRefusal::InvalidTopic { topic, reason } => {
                BrokerError::InvalidTopic { topic, reason }
            }
            MetadataRefusal::InvalidPartitions { topic, reason } => {
                BrokerError::InvalidPartitions { topic, reason }
            }
            MetadataRefusal::InvalidConfig { key, value, reason } => {
                BrokerError::InvalidConfig { key, value, reason }
            }
            MetadataRefusal::InvalidRequest(r) => BrokerError::InvalidRequest(r),
            MetadataRefusal::NotController(r) => BrokerError::NotController(r),
            MetadataRefusal::Other(r) => BrokerError::Metadata(format!("controller: {r}")),
        }
    }
}

fn unknown(name: &str) -> BrokerError {
    BrokerError::UnknownTopicOrPartition {
        topic: name.to_string(),
        partition: -1,
    }
}

impl Broker {
    /// Hands metadata changes to the controller from now on (`wharf-server` in a cluster).
    pub fn set_metadata_log(&self, log: Arc<dyn MetadataLog>) {
        *self
            .metadata_log
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(log);
    }

    /// The controller's metadata log, when this node runs in a cluster.
    pub(crate) fn metadata_log(&self) -> Option<Arc<dyn MetadataLog>> {
        self.metadata_log
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Reserves the next block of producer ids and returns its start: in `meta.json` on a
    /// single node, through the controller in a cluster (so no two nodes hand out the same id).
    pub(crate) fn reserve_producer_ids(&self) -> Result<i64, BrokerError> {
        if let Some(log) = self.metadata_log() {
            self.meta_lock().granted_producer_ids = None;
            log.submit(MetadataRequest::ReserveProducerIds {
                node: self.config().node_id,
            })?;
            return self.meta_lock().granted_producer_ids.take().ok_or_else(|| {
                BrokerError::Metadata(
                    "the controller reserved no producer ids for this node".into(),
                )
            });
        }
        let mut meta = self.meta_lock();
        let start = meta.next_producer_id;
        meta.next_producer_id = start + ID_BLOCK;
        if let Err(e) = meta.save() {
            meta.next_producer_id = start;
            return Err(e);
        }
        Ok(start)
    }

    /// Whether this node's cluster id is the controller's (a cluster's nodes share it).
    pub fn cluster_id_committed(&self) -> bool {
        self.meta_lock().cluster_id_committed
    }

    /// The offset of the next metadata record this node will apply (the ones below are in
    /// `meta.json`).
    pub fn metadata_offset(&self) -> i64 {
        self.meta_lock().metadata_offset
    }

    /// The controller's side: checks `request` against the metadata applied here and turns it
    /// into the record to commit (log ids allocated after every applied one). The caller
    /// makes sure everything committed is applied first and prepares one request at a time.
    pub fn prepare_metadata(
        &self,
        request: &MetadataRequest,
    ) -> Result<MetadataRecord, BrokerError> {
        match request {
            MetadataRequest::CreateTopic {
                name,
                partitions,
                configs,
            } => {
                let spec = TopicSpec {
                    name: name.clone(),
                    partitions: *partitions,
                    replication_factor: -1,
                    configs: configs.clone(),
                };
                self.create_topic(&spec, true)?;
                let meta = self.meta_lock();
                let first = meta.next_log_id;
                let count = u64::try_from(*partitions).unwrap_or(0);
                Ok(MetadataRecord::TopicCreated(TopicRecord {
                    name: name.clone(),
                    id: uuid::Uuid::new_v4(),
                    log_ids: (first..first + count).collect(),
                    configs: configs.clone(),
                }))
            }
            MetadataRequest::DeleteTopic { name } => {
                if name == crate::group::OFFSETS_TOPIC
                    || name == TRANSACTION_STATE_TOPIC
                    || name == SCHEDULED_TOPIC
                {
                    return Err(BrokerError::InvalidRequest(format!(
                        "{name} is internal and cannot be deleted"
                    )));
                }
                let meta = self.meta_lock();
                let record = meta.topics.get(name).ok_or_else(|| unknown(name))?;
                Ok(MetadataRecord::TopicDeleted {
                    name: name.clone(),
                    id: record.id,
                })
            }
            MetadataRequest::CreatePartitions { name, total } => {
                self.create_partitions(name, *total, true)?;
                let meta = self.meta_lock();
                let record = meta.topics.get(name).ok_or_else(|| unknown(name))?;
                let mut log_ids = record.log_ids.clone();
                let first = meta.next_log_id;
                let count = usize::try_from(*total).unwrap_or(0) - log_ids.len();
                log_ids.extend(first..first + count as u64);
                Ok(MetadataRecord::PartitionsAdded {
                    name: name.clone(),
                    id: record.id,
                    log_ids,
                })
            }
            MetadataRequest::AlterConfigs { name, replace, ops } => {
                let meta = self.meta_lock();
                let record = meta.topics.get(name).ok_or_else(|| unknown(name))?;
                let configs = self.altered_configs(&record.configs, replace.clone(), ops)?;
                TopicConfig::resolve(&self.config().topic_defaults, &configs)?;
                Ok(MetadataRecord::ConfigsChanged {
                    name: name.clone(),
                    id: record.id,
                    configs,
                })
            }
            MetadataRequest::SetClusterId => {
                let meta = self.meta_lock();
                if meta.cluster_id_committed {
                    return Err(BrokerError::InvalidRequest(format!(
                        "the cluster id is already {}",
                        meta.cluster_id
                    )));
                }
                Ok(MetadataRecord::ClusterIdSet {
                    cluster_id: meta.cluster_id.clone(),
                })
            }
            MetadataRequest::ReserveProducerIds { node } => {
                Ok(MetadataRecord::ProducerIdsReserved {
                    node: *node,
                    start: self.meta_lock().next_producer_id,
                })
            }
            MetadataRequest::AlterClientQuota { entity, ops } => {
                let _meta = self.meta_lock();
                Ok(MetadataRecord::QuotasSet {
                    quotas: self.planned_quotas(entity, ops)?,
                })
            }
        }
    }

    /// Applies the committed metadata record at `offset` of the controller's log: saves it in
    /// `meta.json` with the offset, then materializes or drops topics in memory and storage.
    /// A record below the offset already applied is a no-op (`Ok(false)`), as is one whose
    /// topic is gone or was replaced by another with the same name.
    pub fn apply_metadata(
        &self,
        offset: i64,
        record: &MetadataRecord,
    ) -> Result<bool, BrokerError> {
        let mut meta = self.meta_lock();
        if offset < meta.metadata_offset {
            return Ok(false);
        }
        let before = meta.clone();
        let mut materialize = None;
        let mut dropped = Vec::new();
        let mut removed = false;
        let mut quotas = None;
        match record {
            MetadataRecord::TopicCreated(topic) => {
                if let Some(old) = meta.topics.get(&topic.name) {
                    if old.id != topic.id {
                        tracing::warn!(topic = %topic.name, "a topic created outside the controller is replaced by the controller's");
                        dropped.extend(
                            old.log_ids
                                .iter()
                                .filter(|id| !topic.log_ids.contains(id))
                                .copied(),
                        );
                    }
                }
                meta.topics.insert(topic.name.clone(), topic.clone());
                materialize = Some(topic.clone());
            }
            MetadataRecord::TopicDeleted { name, id } => {
                if meta.topics.get(name).is_some_and(|t| t.id == *id) {
                    if let Some(old) = meta.topics.remove(name) {
                        dropped = old.log_ids;
                        removed = true;
                    }
                }
            }
            MetadataRecord::PartitionsAdded { name, id, log_ids } => {
                if let Some(t) = meta.topics.get_mut(name) {
                    if t.id == *id && log_ids.len() > t.log_ids.len() {
                        t.log_ids.clone_from(log_ids);
                        materialize = Some(t.clone());
                    }
                }
            }
            MetadataRecord::ConfigsChanged { name, id, configs } => {
                if let Some(t) = meta.topics.get_mut(name) {
                    if t.id == *id {
                        t.configs.clone_from(configs);
                        materialize = Some(t.clone());
                    }
                }
            }
            MetadataRecord::QuotasSet { quotas: q } => {
                meta.quotas.clone_from(q);
                quotas = Some(q.clone());
            }
            MetadataRecord::ClusterIdSet { cluster_id } => {
                if !meta.cluster_id_committed {
                    meta.cluster_id.clone_from(cluster_id);
                    meta.cluster_id_committed = true;
                }
            }
            MetadataRecord::ProducerIdsReserved { node, start } => {
                meta.next_producer_id = meta.next_producer_id.max(start + ID_BLOCK);
                if *node == self.config().node_id {
                    meta.granted_producer_ids = Some(*start);
                }
            }
        }
        if let Some(topic) = &materialize {
            let next = topic.log_ids.iter().max().map_or(0, |m| m + 1);
            meta.next_log_id = meta.next_log_id.max(next);
        }
        meta.metadata_offset = offset + 1;
        if let Err(e) = meta.save() {
            *meta = before;
            return Err(e);
        }
        let name = match record {
            MetadataRecord::TopicCreated(t) => Some(t.name.clone()),
            MetadataRecord::TopicDeleted { name, .. }
            | MetadataRecord::PartitionsAdded { name, .. }
            | MetadataRecord::ConfigsChanged { name, .. } => Some(name.clone()),
            MetadataRecord::QuotasSet { .. }
            | MetadataRecord::ProducerIdsReserved { .. }
            | MetadataRecord::ClusterIdSet { .. } => None,
        };
        if let Some(topic) = materialize {
            let defaults = &self.config().topic_defaults;
            let config = TopicConfig::resolve(defaults, &topic.configs).unwrap_or_else(|error| {
                tracing::error!(topic = %topic.name, %error, "committed topic configs do not resolve here; using the defaults");
                defaults.clone()
            });
            let materialized = Self::materialize(self.storage(), &topic, config);
            self.topics_mut()
                .insert(topic.name.clone(), Arc::new(materialized));
        } else if removed {
            if let Some(name) = &name {
                self.topics_mut().remove(name);
            }
        }
        self.cluster_id
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone_from(&meta.cluster_id);
        drop(meta);
        self.storage().delete_logs(dropped)?;
        if let Some(q) = quotas {
            self.set_quota_records(&q);
        }
        tracing::info!(offset, topic = ?name, record = record_kind(record), "metadata record applied");
        Ok(true)
    }
}

fn record_kind(record: &MetadataRecord) -> &'static str {
    match record {
        MetadataRecord::TopicCreated(_) => "topic created",
        MetadataRecord::TopicDeleted { .. } => "topic deleted",
        MetadataRecord::PartitionsAdded { .. } => "partitions added",
        MetadataRecord::ConfigsChanged { .. } => "topic configs changed",
        MetadataRecord::QuotasSet { .. } => "client quotas set",
        MetadataRecord::ProducerIdsReserved { .. } => "producer ids reserved",
        MetadataRecord::ClusterIdSet { .. } => "cluster id set",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{BrokerConfig, StorageConfig};

    fn open(dir: &std::path::Path) -> Arc<Broker> {
        let mut sc = StorageConfig::new(dir);
        sc.shards = 2;
        Broker::open(BrokerConfig::default(), sc).unwrap()
    }

    fn create(name: &str, partitions: i32) -> MetadataRequest {
        MetadataRequest::CreateTopic {
            name: name.into(),
            partitions,
            configs: BTreeMap::new(),
        }
    }

    #[tokio::test]
    async fn records_apply_in_order_once_and_a_replay_after_restart_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let b = open(dir.path());
        // What a controller commits: a, then a deleted, then a new a, grown, configured.
        let first = b.prepare_metadata(&create("a", 2)).unwrap();
        assert!(b.apply_metadata(0, &first).unwrap());
        assert!(matches!(
            b.prepare_metadata(&create("a", 1)),
            Err(BrokerError::TopicAlreadyExists { .. })
        ));
        let deleted = b
            .prepare_metadata(&MetadataRequest::DeleteTopic { name: "a".into() })
            .unwrap();
        assert!(b.apply_metadata(1, &deleted).unwrap());
        assert!(b.topic("a").is_none());
        let second = b.prepare_metadata(&create("a", 3)).unwrap();
        assert!(b.apply_metadata(2, &second).unwrap());
        let grown = b
            .prepare_metadata(&MetadataRequest::CreatePartitions {
                name: "a".into(),
                total: 4,
            })
            .unwrap();
        assert!(b.apply_metadata(3, &grown).unwrap());
        let configured = b
            .prepare_metadata(&MetadataRequest::AlterConfigs {
                name: "a".into(),
                replace: None,
                ops: vec![ConfigOp::Set("retention.ms".into(), "5000".into())],
            })
            .unwrap();
        assert!(b.apply_metadata(4, &configured).unwrap());
        let a = b.topic("a").unwrap();
        assert_eq!(a.config.retention_ms, 5000);
        let MetadataRecord::TopicCreated(first_record) = &first else {
            panic!("{first:?}")
        };
        assert_ne!(a.id, first_record.id, "a new topic id");
        let logs: Vec<u64> = a.partitions.iter().map(|p| p.log.id()).collect();
        assert_eq!(logs.len(), 4);
        assert!(
            logs.iter().all(|id| !first_record.log_ids.contains(id)),
            "log ids are never reused: {logs:?} vs {:?}",
            first_record.log_ids
        );
        let id = a.id;
        let mut batch = wharf_record::BatchBuilder::new(0);
        batch.push(None, Some(b"kept"), &[], 0);
        a.partitions[0]
            .log
            .submit(batch.build().into(), crate::Durability::Synced)
            .unwrap()
            .wait_appended()
            .await
            .unwrap();
        b.shutdown().await;
        drop(b);

        // After a restart the whole log is replayed: every record is already applied, so
        // the old a's creation does not replace (and drop the logs of) the new a.
        let b = open(dir.path());
        assert_eq!(b.metadata_offset(), 5);
        let replayed: Vec<bool> = [first, deleted, second, grown, configured]
            .into_iter()
            .enumerate()
            .map(|(offset, record)| b.apply_metadata(offset as i64, &record).unwrap())
            .collect();
        let a = b.topic("a").unwrap();
        assert_eq!(a.id, id);
        assert_eq!(
            a.partitions.iter().map(|p| p.log.id()).collect::<Vec<_>>(),
            logs
        );
        for id in &logs {
            assert!(b.storage().log(*id).is_some(), "log {id} kept");
        }
        assert_eq!(a.partitions[0].log.high_watermark(), 1, "its record kept");
        assert_eq!(replayed, vec![false; 5], "a replay applies nothing");
        // The next allocation comes after every applied log id.
        let MetadataRecord::TopicCreated(next) = b.prepare_metadata(&create("b", 1)).unwrap()
        else {
            panic!("not a creation")
        };
        assert!(next.log_ids[0] > *logs.iter().max().unwrap());
    }
}
