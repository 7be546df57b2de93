//! Durable file creation and replacement, written once: a new name is durable only after its
//! directory is synced, and a replaced file is whole-old or whole-new after a crash.
//!
//! ```text
//!  replace(path, bytes): write path.tmp ─► fdatasync ─► rename onto path ─► fsync the directory
//!  create_file(path):    create ─► fsync the directory
//! ```

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::fs::{FileSystem, StorageFile};

/// The directory holding `path` (`.` for a bare name).
fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// The temporary name `replace` writes before renaming (recovery removes leftovers).
pub fn temp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    path.with_file_name(name)
}

/// Creates `dir` (and missing parents), and makes its entry durable in its parent even when
/// it already existed (a process killed after creating it may have left the entry unsynced).
pub fn ensure_dir(fs: &dyn FileSystem, dir: &Path) -> io::Result<()> {
    if !fs.is_dir(dir) {
        let up = parent(dir);
        if !fs.is_dir(up) {
            ensure_dir(fs, up)?;
        }
        fs.create_dir(dir)?;
    }
    fs.sync_dir(parent(dir))
}

/// Creates (or opens, when a retried creation finds it) a file and makes its name durable.
pub fn create_file(fs: &dyn FileSystem, path: &Path) -> io::Result<Arc<dyn StorageFile>> {
    let file = fs.open(path, true)?;
    fs.sync_dir(parent(path))?;
    Ok(file)
}

/// Replaces `path` with `bytes`: all of the old content or all of the new survives a crash.
pub fn replace(fs: &dyn FileSystem, path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = temp_path(path);
    let file = fs.open(&tmp, true)?;
    file.set_len(0)?;
    file.write_all_at(bytes, 0)?;
    file.sync_data()?;
    drop(file);
    fs.rename(&tmp, path)?;
    fs.sync_dir(parent(path))
}

/// The content of `path`, or `None` when it does not exist.
pub fn read_optional(fs: &dyn FileSystem, path: &Path) -> io::Result<Option<Vec<u8>>> {
    match fs.read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}
