//! The topic registry, persisted as `meta.json` (ADR 0002): replaced durably (storage's
//! `durable::replace`) before a change is acknowledged. Log ids and producer ids are never
//! reused.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use wharf_storage::{durable, FileSystem, RealFs};

use crate::BrokerError;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TopicRecord {
    pub name: String,
    pub id: uuid::Uuid,
    /// The storage log of each partition, by partition index.
    pub log_ids: Vec<u64>,
    pub configs: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MetadataStore {
    pub cluster_id: String,
    pub next_log_id: u64,
    /// Producer ids below this may have been handed out (reserved in blocks).
    #[serde(default)]
    pub next_producer_id: i64,
    pub topics: BTreeMap<String, TopicRecord>,
    /// Client quotas (AlterClientQuotas), absent in files written before them.
    #[serde(default)]
    pub quotas: Vec<crate::quota::QuotaRecord>,
    /// In a cluster: the controller's metadata records below this offset are applied here
    /// (`meta.json` is then this node's cache of them; 0 on a single node).
    #[serde(default)]
    pub metadata_offset: i64,
    /// In a cluster: `cluster_id` is the controller's, the same on every node.
    #[serde(default)]
    pub cluster_id_committed: bool,
    /// In a cluster: the start of the producer-id block the controller last reserved for this
    /// node (taken by the reservation that asked for it).
    #[serde(skip)]
    pub granted_producer_ids: Option<i64>,
    #[serde(skip)]
    path: PathBuf,
    #[serde(skip, default = "RealFs::shared")]
    fs: Arc<dyn FileSystem>,
}

fn meta_err(path: &Path, e: impl std::fmt::Display) -> BrokerError {
    BrokerError::Metadata(format!("{}: {e}", path.display()))
}

impl MetadataStore {
    pub fn load(fs: Arc<dyn FileSystem>, dir: &Path) -> Result<Self, BrokerError> {
        let path = dir.join("meta.json");
        match fs.read(&path) {
            Ok(bytes) => {
                let mut store: MetadataStore =
                    serde_json::from_slice(&bytes).map_err(|e| meta_err(&path, e))?;
                store.path = path;
                store.fs = fs;
                Ok(store)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let store = MetadataStore {
                    cluster_id: uuid::Uuid::new_v4().simple().to_string(),
                    next_log_id: 1,
                    next_producer_id: 0,
                    topics: BTreeMap::new(),
                    quotas: Vec::new(),
                    metadata_offset: 0,
                    cluster_id_committed: false,
                    granted_producer_ids: None,
                    path,
                    fs,
                };
                store.save()?;
                Ok(store)
            }
            Err(e) => Err(meta_err(&path, e)),
        }
    }

    pub fn allocate_log_ids(&mut self, count: usize) -> Vec<u64> {
        let ids = (self.next_log_id..self.next_log_id + count as u64).collect();
        self.next_log_id += count as u64;
        ids
    }

    /// Inserts or replaces a topic and saves; if the save fails the registry is left as it was,
    /// so memory never runs ahead of the file.
    pub fn put_topic(&mut self, record: TopicRecord) -> Result<(), BrokerError> {
        let name = record.name.clone();
        let previous = self.topics.insert(name.clone(), record);
        let saved = self.save();
        if saved.is_err() {
            match previous {
                Some(p) => self.topics.insert(name, p),
                None => self.topics.remove(&name),
            };
        }
        saved
    }

    /// Replaces the client quotas and saves; if the save fails they are left as they were.
    pub fn set_quotas(
        &mut self,
        quotas: Vec<crate::quota::QuotaRecord>,
    ) -> Result<(), BrokerError> {
        let previous = std::mem::replace(&mut self.quotas, quotas);
        let saved = self.save();
        if saved.is_err() {
            self.quotas = previous;
        }
        saved
    }

    /// Removes a topic and saves; if the save fails the topic is put back.
    pub fn remove_topic(&mut self, name: &str) -> Result<Option<TopicRecord>, BrokerError> {
        let Some(record) = self.topics.remove(name) else {
            return Ok(None);
        };
        if let Err(e) = self.save() {
            self.topics.insert(name.to_string(), record);
            return Err(e);
        }
        Ok(Some(record))
    }

    pub fn save(&self) -> Result<(), BrokerError> {
        let bytes = serde_json::to_vec_pretty(self).map_err(|e| meta_err(&self.path, e))?;
        durable::replace(&*self.fs, &self.path, &bytes).map_err(|e| meta_err(&self.path, e))
    }
}
