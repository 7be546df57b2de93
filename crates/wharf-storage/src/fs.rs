//! The file seam: every byte storage writes or reads, and every name it creates, renames or
//! removes, goes through [`FileSystem`] and [`StorageFile`]. Production uses [`RealFs`]; the
//! fault-injecting simulation (`sim`, feature `sim`) keeps written-but-unsynced bytes apart so
//! tests can cut the power.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// An open file, read and written at explicit positions (no cursor), shared by threads.
pub trait StorageFile: Send + Sync + fmt::Debug {
    /// The file size in bytes.
    fn size(&self) -> io::Result<u64>;
    /// Fills `buf` from `position`; a short file is an `UnexpectedEof` error.
    fn read_exact_at(&self, buf: &mut [u8], position: u64) -> io::Result<()>;
    fn write_all_at(&self, buf: &[u8], position: u64) -> io::Result<()>;
    /// Writes `parts` one after another from `position`, as `write_all_at` of their
    /// concatenation would. The operating system's files gather them in one `pwritev`
    /// instead of copying them into one buffer first.
    fn write_all_gathered_at(&self, parts: &[&[u8]], position: u64) -> io::Result<()> {
        let mut whole = Vec::with_capacity(parts.iter().map(|p| p.len()).sum());
        for part in parts {
            whole.extend_from_slice(part);
        }
        self.write_all_at(&whole, position)
    }
    fn set_len(&self, len: u64) -> io::Result<()>;
    /// fdatasync: the file's bytes and size are durable when it returns `Ok`.
    fn sync_data(&self) -> io::Result<()>;
}

/// Directory operations. Names become durable only once their directory is synced
/// ([`FileSystem::sync_dir`]); `durable` builds the safe sequences on top.
pub trait FileSystem: Send + Sync + fmt::Debug {
    /// Opens a file for reading and writing; `create` makes it when missing.
    fn open(&self, path: &Path, create: bool) -> io::Result<Arc<dyn StorageFile>>;
    /// Creates one directory whose parent exists; an existing directory is not an error.
    fn create_dir(&self, path: &Path) -> io::Result<()>;
    fn is_dir(&self, path: &Path) -> bool;
    /// Full paths of the entries of a directory.
    fn list_dir(&self, path: &Path) -> io::Result<Vec<PathBuf>>;
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    /// fsync of a directory: its entries (creations, renames, removals) are durable.
    fn sync_dir(&self, path: &Path) -> io::Result<()>;

    /// The whole content of a file.
    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        let file = self.open(path, false)?;
        let len = usize::try_from(file.size()?).map_err(io::Error::other)?;
        let mut buf = vec![0u8; len];
        file.read_exact_at(&mut buf, 0)?;
        Ok(buf)
    }
}

/// The operating system's files.
#[derive(Debug, Default, Clone, Copy)]
pub struct RealFs;

impl RealFs {
    pub fn shared() -> Arc<dyn FileSystem> {
        Arc::new(Self)
    }

    /// Opens a file for reading only (offline verification).
    pub fn open_read_only(path: &Path) -> io::Result<Arc<dyn StorageFile>> {
        Ok(Arc::new(RealFile(File::open(path)?)))
    }
}

#[derive(Debug)]
struct RealFile(File);

impl StorageFile for RealFile {
    fn size(&self) -> io::Result<u64> {
        Ok(self.0.metadata()?.len())
    }
    fn read_exact_at(&self, buf: &mut [u8], position: u64) -> io::Result<()> {
        FileExt::read_exact_at(&self.0, buf, position)
    }
    fn write_all_at(&self, buf: &[u8], position: u64) -> io::Result<()> {
        FileExt::write_all_at(&self.0, buf, position)
    }
    fn write_all_gathered_at(&self, parts: &[&[u8]], mut position: u64) -> io::Result<()> {
        /// Linux refuses more than IOV_MAX (1,024) slices in one call.
        const MAX_SLICES: usize = 1024;
        let mut slices: Vec<io::IoSlice<'_>> = parts
            .iter()
            .filter(|p| !p.is_empty())
            .map(|p| io::IoSlice::new(p))
            .collect();
        let mut rest = &mut slices[..];
        while !rest.is_empty() {
            let take = rest.len().min(MAX_SLICES);
            match rustix::io::pwritev(&self.0, &rest[..take], position) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(written) => {
                    position += written as u64;
                    io::IoSlice::advance_slices(&mut rest, written);
                }
                Err(rustix::io::Errno::INTR) => {}
                Err(errno) => return Err(errno.into()),
            }
        }
        Ok(())
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }
    fn sync_data(&self) -> io::Result<()> {
        self.0.sync_data()
    }
}

impl FileSystem for RealFs {
    fn open(&self, path: &Path, create: bool) -> io::Result<Arc<dyn StorageFile>> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(create)
            .truncate(false)
            .open(path)?;
        Ok(Arc::new(RealFile(file)))
    }
    fn create_dir(&self, path: &Path) -> io::Result<()> {
        match std::fs::create_dir(path) {
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && path.is_dir() => Ok(()),
            other => other,
        }
    }
    fn is_dir(&self, path: &Path) -> bool {
        path.is_dir()
    }
    fn list_dir(&self, path: &Path) -> io::Result<Vec<PathBuf>> {
        std::fs::read_dir(path)?
            .map(|entry| entry.map(|e| e.path()))
            .collect()
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }
    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        File::open(path)?.sync_all()
    }
    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        std::fs::read(path)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_gathered_write_of_more_parts_than_one_call_takes_is_the_concatenation() {
        let dir = tempfile::tempdir().unwrap();
        let file = RealFs.open(&dir.path().join("f"), true).unwrap();
        file.write_all_at(b"head", 0).unwrap();
        // 3,000 parts of 1..=7 bytes (more than IOV_MAX slices), some empty.
        let owned: Vec<Vec<u8>> = (0..3000u32)
            .map(|i| vec![(i % 251) as u8; (i % 8) as usize])
            .collect();
        let parts: Vec<&[u8]> = owned.iter().map(Vec::as_slice).collect();
        file.write_all_gathered_at(&parts, 4).unwrap();
        let expected: Vec<u8> = b"head".iter().copied().chain(owned.concat()).collect();
        assert_eq!(file.size().unwrap(), expected.len() as u64);
        let mut back = vec![0u8; expected.len()];
        file.read_exact_at(&mut back, 0).unwrap();
        assert_eq!(back, expected);
    }
}
