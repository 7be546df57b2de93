//! The log start offsets, persisted as JSON (`log-start.json`) whenever one moves, before any
//! segment whose data it expires is deleted. Written to a temporary file, fsynced, renamed.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use crate::shard::sync_dir;
use crate::{LogId, StorageError};

const FILE: &str = "log-start.json";

pub fn read(dir: &Path) -> Result<BTreeMap<LogId, i64>, StorageError> {
    let path = dir.join(FILE);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map_err(|e| StorageError::io(&path, std::io::Error::other(e))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
        Err(e) => Err(StorageError::io(&path, e)),
    }
}

pub fn write(dir: &Path, starts: &BTreeMap<LogId, i64>) -> Result<(), StorageError> {
    let path = dir.join(FILE);
    let tmp = dir.join("log-start.json.tmp");
    let bytes = serde_json::to_vec(starts)
        .map_err(|e| StorageError::io(&path, std::io::Error::other(e)))?;
    let mut f = std::fs::File::create(&tmp).map_err(|e| StorageError::io(&tmp, e))?;
    f.write_all(&bytes)
        .and_then(|()| f.sync_data())
        .map_err(|e| StorageError::io(&tmp, e))?;
    std::fs::rename(&tmp, &path).map_err(|e| StorageError::io(&path, e))?;
    sync_dir(dir)
}
