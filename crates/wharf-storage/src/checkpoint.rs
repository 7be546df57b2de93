//! The log start offsets, persisted as JSON (`log-start.json`) whenever one moves, before any
//! segment whose data it expires is deleted. Replaced durably.

use std::collections::BTreeMap;
use std::path::Path;

use crate::fs::FileSystem;
use crate::{durable, LogId, StorageError};

const FILE: &str = "log-start.json";

pub fn read(fs: &dyn FileSystem, dir: &Path) -> Result<BTreeMap<LogId, i64>, StorageError> {
    let path = dir.join(FILE);
    match durable::read_optional(fs, &path).map_err(|e| StorageError::io(&path, e))? {
        Some(bytes) => serde_json::from_slice(&bytes)
            .map_err(|e| StorageError::io(&path, std::io::Error::other(e))),
        None => Ok(BTreeMap::new()),
    }
}

pub fn write(
    fs: &dyn FileSystem,
    dir: &Path,
    starts: &BTreeMap<LogId, i64>,
) -> Result<(), StorageError> {
    let path = dir.join(FILE);
    let bytes = serde_json::to_vec(starts)
        .map_err(|e| StorageError::io(&path, std::io::Error::other(e)))?;
    durable::replace(fs, &path, &bytes).map_err(|e| StorageError::io(&path, e))
}
