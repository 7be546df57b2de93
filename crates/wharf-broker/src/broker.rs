//! The broker: topic lifecycle over the metadata store and storage logs, offsets, shutdown.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, RwLock};

use wharf_storage::{Log, ShardLog, Storage, StorageConfig, StorageError, TimestampMatch};

use crate::cluster::{ClusterView, NodeAddress, ShardRole, SingleNode};
use crate::group::{system_clock, CoordinatorConfig, GroupCoordinator};
use crate::metadata::{MetadataStore, TopicRecord};
use crate::producer::{ProducerError, Producers};
use crate::scheduled::{Scheduler, SCHEDULED_TOPIC};
use crate::topic::{Partition, Topic, TopicCounters};
use crate::topic_config::{ConfigEntry, TopicConfig};
use crate::txn::{TxnConfig, TxnCoordinator, TRANSACTION_STATE_TOPIC};
use crate::BrokerError;

/// Broker-wide settings.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    pub node_id: i32,
    /// Host and port clients are told to connect to (Metadata).
    pub advertised_host: String,
    pub advertised_port: i32,
    /// Kafka's `auto.create.topics.enable`.
    pub auto_create_topics: bool,
    /// Kafka's `num.partitions`: partitions of an auto-created topic or a create with -1.
    pub num_partitions: i32,
    pub topic_defaults: TopicConfig,
    /// Consumer groups: protocol limits and offset retention.
    pub groups: CoordinatorConfig,
    /// Kafka's `producer.id.expiration.ms`: a producer idle this long is forgotten.
    pub producer_id_expiration_ms: i64,
    /// When producer state is snapshotted (bounds the replay after a kill).
    pub producer_snapshot: crate::producer::SnapshotPolicy,
    /// The transaction coordinator: maximum timeout, transactional id expiry.
    pub transactions: TxnConfig,
    /// `max_delay_ms`: the longest delay a delayed message may ask for.
    pub max_delay_ms: i64,
    /// KIP-1191's `errors.deadletterqueue.topic.name.prefix`: when not empty, a share group's
    /// `errors.deadletterqueue.topic.name` must start with it (Kafka 4.4's default is `dlq.`;
    /// Wharf requires no prefix unless one is set).
    pub dlq_topic_name_prefix: String,
    /// Part of a cluster (`cluster_peers` set): from open on, no shard is served until the
    /// server reports this node leads it (`Broker::become_leader`), so nothing (a delivery
    /// loop, a lock expiry, a producer snapshot) acts on the single-node view while the
    /// broker opens and its raft groups already elect.
    pub clustered: bool,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        Self {
            node_id: 0,
            advertised_host: "127.0.0.1".into(),
            advertised_port: 9092,
            auto_create_topics: true,
            num_partitions: 1,
            topic_defaults: TopicConfig::default(),
            groups: CoordinatorConfig::default(),
            producer_id_expiration_ms: 86_400_000,
            producer_snapshot: crate::producer::SnapshotPolicy::default(),
            transactions: TxnConfig::default(),
            max_delay_ms: 259_200_000,
            dlq_topic_name_prefix: String::new(),
            clustered: false,
        }
    }
}

/// What CreateTopics asks for.
#[derive(Debug, Clone)]
pub struct TopicSpec {
    pub name: String,
    /// -1: `num.partitions`.
    pub partitions: i32,
    /// -1 or 1 (a single node).
    pub replication_factor: i16,
    pub configs: BTreeMap<String, String>,
}

/// One change of IncrementalAlterConfigs.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub enum ConfigOp {
    Set(String, String),
    Delete(String),
    /// Adds the comma-separated items to a list config (Kafka's APPEND).
    Append(String, String),
    /// Removes the comma-separated items from a list config (Kafka's SUBTRACT).
    Subtract(String, String),
}

/// Builds the shard log of every shard (index = shard id) once storage is open: the local
/// shards by default ([`Broker::local_shard_logs`]); `wharf-server` hands replicated ones for a
/// cluster (ADR 0012), so the broker depends on neither raft nor a network.
pub type ShardLogFactory =
    Box<dyn FnOnce(&Storage) -> Result<Vec<Arc<dyn ShardLog>>, BrokerError> + Send>;

pub struct Broker {
    config: BrokerConfig,
    /// Fixed at creation; kept outside `meta` so readers never wait behind a topic change.
    /// In a cluster the controller's (one id for every node) replaces it once.
    pub(crate) cluster_id: RwLock<String>,
    storage: Storage,
    /// The shard-log contract of each shard, by shard id: partitions append through it and
    /// read their high watermark from it (local shards here; a replicated shard log later).
    shard_logs: Vec<Arc<dyn ShardLog>>,
    meta: Mutex<MetadataStore>,
    topics: RwLock<HashMap<String, Arc<Topic>>>,
    groups: GroupCoordinator,
    producers: Producers,
    transactions: TxnCoordinator,
    scheduler: Scheduler,
    /// Stops the producer snapshot thread.
    producer_housekeeping: Mutex<Option<std::sync::mpsc::Sender<()>>>,
    quotas: crate::quota::QuotaState,
    pub(crate) cursors: crate::cursor::Cursors,
    pub(crate) share: crate::share::ShareCoordinator,
    /// The nodes and each shard's leader (a single node until the server sets a cluster).
    cluster: RwLock<Arc<dyn ClusterView>>,
    /// The shards this node serves as leader (all of them alone).
    leadership: crate::leadership::Leadership,
    /// In a cluster: where topic changes go (the controller); `None` on a single node.
    pub(crate) metadata_log: RwLock<Option<Arc<dyn crate::metadata_log::MetadataLog>>>,
}

/// Log ids from here on belong to whoever builds the shard logs (a replicated shard's raft
/// control log): the broker never allocates them and never drops them as a deleted topic's.
pub const FIRST_RESERVED_LOG_ID: u64 = 1 << 40;

const MAX_TOPIC_NAME: usize = 249;
const MAX_PARTITIONS: i32 = 100_000;

fn validate_name(name: &str) -> Result<(), BrokerError> {
    let bad = |reason: &str| {
        Err(BrokerError::InvalidTopic {
            topic: name.to_string(),
            reason: reason.to_string(),
        })
    };
    if name.is_empty() || name == "." || name == ".." {
        return bad("empty, '.' or '..'");
    }
    if name.len() > MAX_TOPIC_NAME {
        return bad("longer than 249 characters");
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    {
        return bad("only ASCII alphanumerics, '.', '_' and '-' are allowed");
    }
    Ok(())
}

fn read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(std::sync::PoisonError::into_inner)
}
fn write<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Broker {
    /// Opens storage (recovering it) and the topic registry; partitions append through the
    /// local shards.
    pub fn open(
        config: BrokerConfig,
        storage_config: StorageConfig,
    ) -> Result<Arc<Self>, BrokerError> {
        Self::open_with_shard_logs(config, storage_config, Box::new(Self::local_shard_logs))
    }

    /// Each shard of `storage` as its own local shard log (the single-node default).
    pub fn local_shard_logs(storage: &Storage) -> Result<Vec<Arc<dyn ShardLog>>, BrokerError> {
        Ok((0..storage.config().shards)
            .filter_map(|shard| storage.shard_log(shard))
            .map(|shard| Arc::new(shard) as Arc<dyn ShardLog>)
            .collect())
    }

    /// [`Broker::open`] with the shard logs `shard_logs` builds over the opened storage: one
    /// per shard, by shard id (a count that differs from the shard count is refused).
    pub fn open_with_shard_logs(
        config: BrokerConfig,
        storage_config: StorageConfig,
        shard_logs: ShardLogFactory,
    ) -> Result<Arc<Self>, BrokerError> {
        let fs = storage_config.fs.clone();
        wharf_storage::durable::ensure_dir(&*fs, &storage_config.data_dir).map_err(|e| {
            BrokerError::Metadata(format!("{}: {e}", storage_config.data_dir.display()))
        })?;
        let meta = MetadataStore::load(fs.clone(), &storage_config.data_dir)?;
        let storage = Storage::open(storage_config)?;
        let mut topics = HashMap::new();
        let mut known = std::collections::HashSet::new();
        for record in meta.topics.values() {
            let cfg = TopicConfig::resolve(&config.topic_defaults, &record.configs)?;
            let topic = Self::materialize(&storage, record, cfg);
            known.extend(record.log_ids.iter().copied());
            topics.insert(record.name.clone(), Arc::new(topic));
        }
        // A log id at or past `next_log_id` belongs to a topic this node has not applied yet
        // (in a cluster, its partitions' raft entries may arrive first): kept.
        let orphans: Vec<_> = storage
            .log_ids()
            .into_iter()
            .filter(|&id| {
                !known.contains(&id) && id < FIRST_RESERVED_LOG_ID && id < meta.next_log_id
            })
            .collect();
        if !orphans.is_empty() {
            tracing::info!(
                logs = orphans.len(),
                first = orphans.iter().min(),
                last = orphans.iter().max(),
                "dropping logs of deleted topics"
            );
            storage.delete_logs(orphans)?;
        }
        let logs: Vec<_> = topics
            .values()
            .flat_map(|t| t.partitions.iter().map(|p| p.log.clone()))
            .collect();
        let producers = Producers::load(
            fs,
            &storage.config().data_dir,
            config.producer_id_expiration_ms,
            &logs,
        )?;
        tracing::info!(topics = topics.len(), cluster_id = %meta.cluster_id, "broker opened");
        let groups = GroupCoordinator::new(config.groups.clone(), system_clock());
        let transactions = TxnCoordinator::new(config.transactions.clone());
        let quotas = crate::quota::QuotaState::new(&meta.quotas);
        let shard_logs = shard_logs(&storage)?;
        if shard_logs.len() != storage.config().shards {
            return Err(BrokerError::Metadata(format!(
                "{} shard logs for {} shards",
                shard_logs.len(),
                storage.config().shards
            )));
        }
        let single = SingleNode(NodeAddress {
            id: config.node_id,
            host: config.advertised_host.clone(),
            port: config.advertised_port,
        });
        let broker = Arc::new(Self {
            leadership: crate::leadership::Leadership::new(storage.config().shards),
            cluster: RwLock::new(Arc::new(single)),
            metadata_log: RwLock::default(),
            quotas,
            config,
            cluster_id: RwLock::new(meta.cluster_id.clone()),
            storage,
            shard_logs,
            meta: Mutex::new(meta),
            topics: RwLock::new(topics),
            groups,
            producers,
            transactions,
            scheduler: Scheduler::default(),
            producer_housekeeping: Mutex::new(None),
            cursors: crate::cursor::Cursors::new(system_clock()),
            share: crate::share::ShareCoordinator::new(system_clock()),
        });
        if broker.config.clustered {
            broker.leadership.serve_none();
        }
        let weak = Arc::downgrade(&broker);
        broker.groups.set_topic_source(Arc::new(move || {
            weak.upgrade()
                .map(|b| {
                    b.topics()
                        .iter()
                        .filter(|t| !t.is_internal())
                        .map(|t| (t.name.clone(), t.partitions.len() as i32))
                        .collect()
                })
                .unwrap_or_default()
        }));
        let weak = Arc::downgrade(&broker);
        broker.groups.set_owner(Arc::new(move |index| {
            weak.upgrade()
                .is_some_and(|b| b.owns_internal(crate::group::OFFSETS_TOPIC, index))
        }));
        broker.open_groups()?;
        broker.open_transactions()?;
        broker.note_internal_shards();
        broker.open_scheduled()?;
        broker.open_dedup()?;
        broker.open_share()?;
        broker.open_cursors()?;
        let stop = crate::producer::spawn_housekeeping(
            Arc::downgrade(&broker),
            broker.config.producer_snapshot,
        )?;
        *broker
            .producer_housekeeping
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(stop);
        Ok(broker)
    }

    pub(crate) fn quota_state(&self) -> &crate::quota::QuotaState {
        &self.quotas
    }

    pub(crate) fn meta_lock(&self) -> std::sync::MutexGuard<'_, MetadataStore> {
        self.meta
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The topics by name, to change (applying a metadata record).
    pub(crate) fn topics_mut(
        &self,
    ) -> std::sync::RwLockWriteGuard<'_, HashMap<String, Arc<Topic>>> {
        write(&self.topics)
    }

    pub(crate) fn materialize(
        storage: &Storage,
        record: &TopicRecord,
        config: TopicConfig,
    ) -> Topic {
        let counters = Arc::new(TopicCounters::new(&record.name));
        let partitions = record
            .log_ids
            .iter()
            .enumerate()
            .map(|(i, &id)| Partition {
                index: i as i32,
                log: storage.create_log(id, config.log_config()),
                counters: counters.clone(),
            })
            .collect();
        Topic {
            name: record.name.clone(),
            id: record.id,
            partitions,
            config,
            overrides: record.configs.clone(),
        }
    }

    pub fn config(&self) -> &BrokerConfig {
        &self.config
    }

    /// Replaces the single-node view with the cluster's (ADR 0012): Metadata, FindCoordinator
    /// and DescribeCluster answer from it.
    /// No shard is served until the server reports this node leads it
    /// ([`Broker::become_leader`]).
    pub fn set_cluster_view(&self, view: Arc<dyn ClusterView>) {
        self.leadership.serve_none();
        *write(&self.cluster) = view;
    }

    pub(crate) fn leadership(&self) -> &crate::leadership::Leadership {
        &self.leadership
    }

    /// The cluster as this node sees it now.
    pub fn cluster(&self) -> Arc<dyn ClusterView> {
        read(&self.cluster).clone()
    }

    /// The replication state of `partition`: its shard's.
    pub fn partition_role(&self, partition: &Partition) -> ShardRole {
        self.cluster().shard(partition.log.shard_id())
    }

    /// `NotLeader` unless this node leads `partition`'s shard: what a follower answers to a
    /// client that should re-route (NOT_LEADER_OR_FOLLOWER).
    pub fn check_leader(&self, partition: &Partition) -> Result<(), BrokerError> {
        let shard_id = partition.log.shard_id();
        if self.shard_served(shard_id) {
            return Ok(());
        }
        let leader = self.cluster().shard_leader(shard_id);
        Err(BrokerError::Storage(StorageError::NotLeader {
            shard_id,
            leader: leader.and_then(|l| u64::try_from(l).ok()),
        }))
    }

    /// The node that coordinates `key` (a group id or a transactional id): the leader of the
    /// shard holding its partition of `__consumer_offsets` or `__transaction_state`, with its
    /// address when known.
    pub fn coordinator_node(&self, key: &str, transactional: bool) -> Option<NodeAddress> {
        let topic = if transactional {
            TRANSACTION_STATE_TOPIC
        } else {
            crate::group::OFFSETS_TOPIC
        };
        let cluster = self.cluster();
        let leader = match self.coordinator_shard(topic, key) {
            Some(shard) => cluster.shard_leader(shard)?,
            None => cluster.node_id(),
        };
        cluster.nodes().into_iter().find(|n| n.id == leader)
    }

    /// The shard log holding `log`'s batches.
    pub(crate) fn shard_log(&self, log: &Log) -> Result<&Arc<dyn ShardLog>, StorageError> {
        self.shard_logs
            .get(log.shard_id())
            .ok_or(StorageError::UnknownLog { log_id: log.id() })
    }

    /// The offset after `log`'s last committed record: what consumers may read up to.
    pub(crate) fn high_watermark(&self, log: &Log) -> i64 {
        self.shard_log(log)
            .map_or_else(|_| log.high_watermark(), |shard| shard.high_watermark(log))
    }

    pub fn storage(&self) -> &Storage {
        &self.storage
    }

    /// The transaction coordinator.
    pub fn transactions(&self) -> &TxnCoordinator {
        &self.transactions
    }

    /// The engine of delayed and half messages.
    pub fn scheduler(&self) -> &Scheduler {
        &self.scheduler
    }

    /// The group coordinator (consumer groups and committed offsets).
    pub fn groups(&self) -> &GroupCoordinator {
        &self.groups
    }

    pub fn cluster_id(&self) -> String {
        read(&self.cluster_id).clone()
    }

    pub fn topic(&self, name: &str) -> Option<Arc<Topic>> {
        read(&self.topics).get(name).cloned()
    }

    pub fn topic_by_id(&self, id: uuid::Uuid) -> Option<Arc<Topic>> {
        read(&self.topics).values().find(|t| t.id == id).cloned()
    }

    /// Every topic, sorted by name.
    pub fn topics(&self) -> Vec<Arc<Topic>> {
        let mut all: Vec<_> = read(&self.topics).values().cloned().collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }

    pub fn partition(&self, topic: &str, partition: i32) -> Result<Partition, BrokerError> {
        self.topic(topic)
            .and_then(|t| t.partition(partition).cloned())
            .ok_or_else(|| BrokerError::UnknownTopicOrPartition {
                topic: topic.to_string(),
                partition,
            })
    }

    /// Creates a topic. With `validate_only`, checks everything and changes nothing.
    pub fn create_topic(
        &self,
        spec: &TopicSpec,
        validate_only: bool,
    ) -> Result<Arc<Topic>, BrokerError> {
        validate_name(&spec.name)?;
        let partitions = if spec.partitions == -1 {
            self.config.num_partitions
        } else {
            spec.partitions
        };
        if !(1..=MAX_PARTITIONS).contains(&partitions) {
            return Err(BrokerError::InvalidPartitions {
                topic: spec.name.clone(),
                reason: format!("{partitions} is not in 1..={MAX_PARTITIONS}"),
            });
        }
        // Every partition has its shard group's replicas: 1 alone, the voters in a cluster
        // (3). A factor of 1 is taken in a cluster too (tools default to it): the topic is
        // replicated anyway.
        let replicas = self.cluster().shard(0).replicas.len().max(1);
        let factor = usize::try_from(spec.replication_factor).unwrap_or(0);
        if spec.replication_factor != -1 && factor != 1 && factor != replicas {
            return Err(BrokerError::InvalidReplicationFactor {
                factor: i32::from(spec.replication_factor),
            });
        }
        let config = TopicConfig::resolve(&self.config.topic_defaults, &spec.configs)?;
        let mut meta = self
            .meta
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if meta.topics.contains_key(&spec.name) {
            return Err(BrokerError::TopicAlreadyExists {
                topic: spec.name.clone(),
            });
        }
        let record = TopicRecord {
            name: spec.name.clone(),
            id: uuid::Uuid::new_v4(),
            log_ids: Vec::new(),
            configs: spec.configs.clone(),
        };
        if validate_only {
            return Ok(Arc::new(Topic {
                name: record.name,
                id: record.id,
                partitions: Vec::new(),
                config,
                overrides: record.configs,
            }));
        }
        if let Some(log) = self.metadata_log() {
            drop(meta);
            log.submit(crate::metadata_log::MetadataRequest::CreateTopic {
                name: spec.name.clone(),
                partitions,
                configs: spec.configs.clone(),
            })?;
            return self
                .topic(&spec.name)
                .ok_or_else(|| BrokerError::UnknownTopicOrPartition {
                    topic: spec.name.clone(),
                    partition: -1,
                });
        }
        let mut record = record;
        record.log_ids = meta.allocate_log_ids(partitions as usize);
        meta.put_topic(record.clone())?;
        let topic = Arc::new(Self::materialize(&self.storage, &record, config));
        write(&self.topics).insert(spec.name.clone(), topic.clone());
        tracing::info!(topic = %spec.name, partitions, "topic created");
        Ok(topic)
    }

    /// Creates `name` with broker defaults if auto-creation is on; `None` otherwise.
    pub fn auto_create(&self, name: &str) -> Option<Result<Arc<Topic>, BrokerError>> {
        if !self.config.auto_create_topics {
            return None;
        }
        let spec = TopicSpec {
            name: name.to_string(),
            partitions: -1,
            replication_factor: -1,
            configs: BTreeMap::new(),
        };
        Some(match self.create_topic(&spec, false) {
            Err(BrokerError::TopicAlreadyExists { .. }) => {
                self.topic(name)
                    .ok_or_else(|| BrokerError::UnknownTopicOrPartition {
                        topic: name.to_string(),
                        partition: -1,
                    })
            }
            other => other,
        })
    }

    pub fn delete_topic(&self, name: &str) -> Result<(), BrokerError> {
        if name == crate::group::OFFSETS_TOPIC
            || name == TRANSACTION_STATE_TOPIC
            || name == SCHEDULED_TOPIC
        {
            return Err(BrokerError::InvalidRequest(format!(
                "{name} is internal and cannot be deleted"
            )));
        }
        if let Some(log) = self.metadata_log() {
            return log.submit(crate::metadata_log::MetadataRequest::DeleteTopic {
                name: name.to_string(),
            });
        }
        let mut meta = self
            .meta
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some(record) = meta.remove_topic(name)? else {
            return Err(BrokerError::UnknownTopicOrPartition {
                topic: name.to_string(),
                partition: -1,
            });
        };
        write(&self.topics).remove(name);
        self.storage.delete_logs(record.log_ids)?;
        tracing::info!(topic = name, "topic deleted");
        Ok(())
    }

    /// Grows a topic to `total` partitions (Kafka never shrinks one).
    pub fn create_partitions(
        &self,
        name: &str,
        total: i32,
        validate_only: bool,
    ) -> Result<(), BrokerError> {
        if name == crate::group::OFFSETS_TOPIC || name == TRANSACTION_STATE_TOPIC {
            return Err(BrokerError::InvalidPartitions {
                topic: name.to_string(),
                reason: "groups are placed by a hash of its partition count".into(),
            });
        }
        let mut meta = self
            .meta
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some(record) = meta.topics.get(name).cloned() else {
            return Err(BrokerError::UnknownTopicOrPartition {
                topic: name.to_string(),
                partition: -1,
            });
        };
        let current = record.log_ids.len() as i32;
        if total <= current || total > MAX_PARTITIONS {
            return Err(BrokerError::InvalidPartitions {
                topic: name.to_string(),
                reason: format!("topic has {current} partitions; {total} is not more"),
            });
        }
        if validate_only {
            return Ok(());
        }
        if let Some(log) = self.metadata_log() {
            drop(meta);
            return log.submit(crate::metadata_log::MetadataRequest::CreatePartitions {
                name: name.to_string(),
                total,
            });
        }
        let mut record = record;
        let new_ids = meta.allocate_log_ids((total - current) as usize);
        record.log_ids.extend(new_ids);
        meta.put_topic(record.clone())?;
        let config = TopicConfig::resolve(&self.config.topic_defaults, &record.configs)?;
        write(&self.topics).insert(
            name.to_string(),
            Arc::new(Self::materialize(&self.storage, &record, config)),
        );
        tracing::info!(topic = name, from = current, to = total, "partitions added");
        Ok(())
    }

    pub fn describe_configs(&self, name: &str) -> Result<Vec<ConfigEntry>, BrokerError> {
        let t = self
            .topic(name)
            .ok_or_else(|| BrokerError::UnknownTopicOrPartition {
                topic: name.to_string(),
                partition: -1,
            })?;
        Ok(t.config.describe(&t.overrides))
    }

    /// Replaces every override (AlterConfigs) or applies `ops` (IncrementalAlterConfigs).
    pub fn alter_configs(
        &self,
        name: &str,
        replace: Option<BTreeMap<String, String>>,
        ops: &[ConfigOp],
        validate_only: bool,
    ) -> Result<(), BrokerError> {
        let mut meta = self
            .meta
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some(record) = meta.topics.get(name).cloned() else {
            return Err(BrokerError::UnknownTopicOrPartition {
                topic: name.to_string(),
                partition: -1,
            });
        };
        let configs = self.altered_configs(&record.configs, replace.clone(), ops)?;
        let config = TopicConfig::resolve(&self.config.topic_defaults, &configs)?;
        if validate_only {
            return Ok(());
        }
        if let Some(log) = self.metadata_log() {
            drop(meta);
            return log.submit(crate::metadata_log::MetadataRequest::AlterConfigs {
                name: name.to_string(),
                replace,
                ops: ops.to_vec(),
            });
        }
        let mut record = record;
        record.configs = configs;
        meta.put_topic(record.clone())?;
        write(&self.topics).insert(
            name.to_string(),
            Arc::new(Self::materialize(&self.storage, &record, config)),
        );
        tracing::info!(topic = name, "topic configs altered");
        Ok(())
    }

    /// The overrides `current` becomes under `replace` (AlterConfigs) then `ops`.
    pub(crate) fn altered_configs(
        &self,
        current: &BTreeMap<String, String>,
        replace: Option<BTreeMap<String, String>>,
        ops: &[ConfigOp],
    ) -> Result<BTreeMap<String, String>, BrokerError> {
        let mut configs = replace.unwrap_or_else(|| current.clone());
        for op in ops {
            match op {
                ConfigOp::Set(k, v) => {
                    configs.insert(k.clone(), v.clone());
                }
                ConfigOp::Delete(k) => {
                    configs.remove(k);
                }
                ConfigOp::Append(k, items) | ConfigOp::Subtract(k, items) => {
                    let current = match configs.get(k) {
                        Some(v) => v.clone(),
                        None => self
                            .config
                            .topic_defaults
                            .describe(&BTreeMap::new())
                            .into_iter()
                            .find(|e| &e.name == k)
                            .map(|e| e.value)
                            .unwrap_or_default(),
                    };
                    let append = matches!(op, ConfigOp::Append(..));
                    configs.insert(
                        k.clone(),
                        TopicConfig::edit_list(k, &current, items, append)?,
                    );
                }
            }
        }
        Ok(configs)
    }

    /// ListOffsets: -2 earliest, -1 latest, otherwise the first record at or after the time.
    pub fn list_offset(
        &self,
        topic: &str,
        partition: i32,
        timestamp: i64,
    ) -> Result<TimestampMatch, BrokerError> {
        let p = self.partition(topic, partition)?;
        self.check_leader(&p)?;
        Ok(match timestamp {
            -2 => TimestampMatch {
                offset: p.log.log_start_offset(),
                timestamp: -1,
            },
            -1 => TimestampMatch {
                offset: self.high_watermark(&p.log),
                timestamp: -1,
            },
            ts => p.log.offset_for_timestamp(ts)?.unwrap_or(TimestampMatch {
                offset: -1,
                timestamp: -1,
            }),
        })
    }

    /// DeleteRecords: moves the log start offset; returns the new low watermark.
    pub fn delete_records(
        &self,
        topic: &str,
        partition: i32,
        offset: i64,
    ) -> Result<i64, BrokerError> {
        let p = self.partition(topic, partition)?;
        p.log.delete_records(offset).map_err(|e| match e {
            wharf_storage::StorageError::OffsetOutOfRange {
                offset,
                log_start,
                high_watermark,
                ..
            } => BrokerError::OffsetOutOfRange {
                topic: topic.to_string(),
                partition,
                offset,
                log_start,
                high_watermark,
            },
            other => BrokerError::Storage(other),
        })
    }

    pub(crate) fn producers(&self) -> &Producers {
        &self.producers
    }

    /// InitProducerId: a new producer id with epoch 0 for an idempotent producer (as Kafka,
    /// even when the client names its previous id). A transactional id is served by
    /// [`Broker::init_transactional_producer`] and refused here.
    pub fn init_producer_id(
        &self,
        transactional_id: Option<&str>,
    ) -> Result<(i64, i16), BrokerError> {
        if let Some(id) = transactional_id {
            return Err(ProducerError::TransactionsUnsupported {
                what: format!("transactional.id {id:?}"),
            }
            .into());
        }
        let producer_id = self.producers.allocate_id(|| self.reserve_producer_ids())?;
        tracing::debug!(producer_id, "producer id allocated");
        Ok((producer_id, 0))
    }

    pub(crate) fn allocate_producer_id(&self) -> Result<i64, BrokerError> {
        self.producers.allocate_id(|| self.reserve_producer_ids())
    }

    /// Writes the producer state snapshot of every live partition (and expires idle
    /// producers). Blocking: file writes.
    pub fn snapshot_producers(&self) -> Result<(), BrokerError> {
        // Only the shards this node serves: a follower's producer state is not kept up to
        // date (the leader's is; a new leader rebuilds it), so a snapshot of it would claim
        // to cover batches it never saw. Left out, a log is replayed whole at the next start.
        let logs: Vec<_> = read(&self.topics)
            .values()
            .flat_map(|t| t.partitions.iter().map(|p| p.log.clone()))
            .filter(|log| self.shard_served(log.shard_id()))
            .collect();
        self.producers.snapshot(&logs)
    }

    /// Flushes every shard, snapshots producer state and stops storage threads.
    pub async fn shutdown(&self) {
        self.groups.stop();
        self.transactions.stop();
        self.scheduler.stop();
        self.cursors.stop();
        if let Some(stop) = self
            .producer_housekeeping
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
        {
            stop.send(()).ok();
        }
        if let Err(error) = self.storage.flush().await {
            tracing::error!(%error, "flush at shutdown failed");
        }
        if let Err(error) = self.snapshot_producers() {
            tracing::error!(%error, "producer snapshot at shutdown failed");
        }
        self.storage.shutdown();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(dir: &std::path::Path) -> Arc<Broker> {
        let mut sc = StorageConfig::new(dir);
        sc.shards = 2;
        Broker::open(BrokerConfig::default(), sc).unwrap()
    }

    #[tokio::test]
    async fn topics_survive_restart_and_deleted_ones_stay_gone() {
        let dir = tempfile::tempdir().unwrap();
        {
            let b = open(dir.path());
            let spec = |name: &str| TopicSpec {
                name: name.into(),
                partitions: 3,
                replication_factor: 1,
                configs: BTreeMap::new(),
            };
            b.create_topic(&spec("keep"), false).unwrap();
            b.create_topic(&spec("gone"), false).unwrap();
            assert!(matches!(
                b.create_topic(&spec("keep"), false),
                Err(BrokerError::TopicAlreadyExists { .. })
            ));
            assert!(matches!(
                b.create_topic(&spec("bad/name"), false),
                Err(BrokerError::InvalidTopic { .. })
            ));
            b.create_topic(&spec("dry"), true).unwrap();
            assert!(b.topic("dry").is_none());
            b.create_partitions("keep", 5, false).unwrap();
            assert!(b.create_partitions("keep", 4, false).is_err());
            b.alter_configs(
                "keep",
                None,
                &[ConfigOp::Set("retention.ms".into(), "5000".into())],
                false,
            )
            .unwrap();
            b.delete_topic("gone").unwrap();
            b.shutdown().await;
        }
        let b = open(dir.path());
        let t = b.topic("keep").unwrap();
        assert_eq!(t.partitions.len(), 5);
        assert_eq!(t.config.retention_ms, 5000);
        assert!(b.topic("gone").is_none());
    }
}
