//! A simulated disk for fault injection (redb's crash backend is the model). Every file keeps
//! its durable bytes apart from the writes made since its last fdatasync, and every directory
//! keeps its durable entries apart from those changed since its last fsync. Tests can then
//! - cut the power ([`SimFs::power_cut`]): unsynced writes are lost all, none, or as a random
//!   (possibly torn) prefix per file, unsynced directory changes per directory all or none,
//!   and every handle opened before the cut fails from then on;
//! - fail a chosen fdatasync ([`SimFs::fail_sync`]) or a chosen write with ENOSPC or EIO
//!   ([`SimFs::fail_write`]), or fill the disk ([`SimFs::set_full`]).
//!
//! Invariant: `durable` of a file only ever holds bytes some fdatasync covered, and
//! `durable_names` only names some directory fsync covered.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::fs::{FileSystem, StorageFile};

/// What a power cut does to the bytes written since a file's last fdatasync.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PowerCut {
    /// Every unsynced write and directory change is lost.
    LoseUnsynced,
    /// The disk happened to write everything back before the power went.
    KeepUnsynced,
    /// Per file, a random prefix of the unsynced writes survives, the last one possibly torn;
    /// per directory, its unsynced changes all survive or none.
    Random { seed: u64 },
}

/// The error a chosen write fails with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteFault {
    /// ENOSPC.
    NoSpace,
    /// EIO.
    Io,
}

impl WriteFault {
    fn error(self) -> io::Error {
        io::Error::from_raw_os_error(match self {
            Self::NoSpace => 28,
            Self::Io => 5,
        })
    }
}

#[derive(Debug, Clone)]
enum Op {
    Write { position: u64, bytes: Vec<u8> },
    SetLen(u64),
}

impl Op {
    fn apply(&self, data: &mut Vec<u8>) {
        match self {
            Self::Write { position, bytes } => {
                let at = *position as usize;
                if data.len() < at + bytes.len() {
                    data.resize(at + bytes.len(), 0);
                }
                data[at..at + bytes.len()].copy_from_slice(bytes);
            }
            Self::SetLen(len) => data.resize(*len as usize, 0),
        }
    }
}

#[derive(Debug, Default)]
struct Inode {
    data: Vec<u8>,
    durable: Vec<u8>,
    pending: Vec<Op>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Entry {
    Dir,
    File(u64),
}

#[derive(Debug, Default)]
struct Disk {
    root: PathBuf,
    generation: u64,
    next_inode: u64,
    inodes: HashMap<u64, Inode>,
    names: BTreeMap<PathBuf, Entry>,
    durable_names: BTreeMap<PathBuf, Entry>,
    writes: u64,
    syncs: u64,
    fail_write_at: Option<(u64, WriteFault)>,
    fail_sync_at: Option<u64>,
    full: bool,
    /// fdatasyncs of this inode wait until released or the power is cut.
    held: Option<u64>,
}

/// The simulated disk; cheap to clone, every clone sees the same disk.
#[derive(Debug, Clone)]
pub struct SimFs {
    disk: Arc<Mutex<Disk>>,
}

#[derive(Debug)]
struct SimFile {
    disk: Arc<Mutex<Disk>>,
    inode: u64,
    generation: u64,
}

fn lost_power() -> io::Error {
    io::Error::other("simulated power cut: this handle belongs to a dead process")
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("{}: no such file", path.display()),
    )
}

/// splitmix64: a small seeded generator, so a failing seed replays exactly.
pub struct SimRng(u64);

impl SimRng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `0..n` (`0` when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next_u64() % n
        }
    }
}

impl Disk {
    fn is_dir(&self, path: &Path) -> bool {
        self.root.starts_with(path) || self.names.get(path) == Some(&Entry::Dir)
    }

    fn parent_is_dir(&self, path: &Path) -> bool {
        path.parent().is_some_and(|p| self.is_dir(p))
    }

    fn inode(&mut self, inode: u64, generation: u64) -> io::Result<&mut Inode> {
        if generation != self.generation {
            return Err(lost_power());
        }
        self.inodes.get_mut(&inode).ok_or_else(lost_power)
    }

    /// Drops names whose directory did not survive, then inodes no name reaches.
    fn collect_garbage(&mut self) {
        let mut dirs: BTreeSet<PathBuf> = BTreeSet::new();
        let root = self.root.clone();
        let reachable = |path: &Path, dirs: &BTreeSet<PathBuf>| {
            path.parent()
                .is_some_and(|p| root.starts_with(p) || dirs.contains(p))
        };
        let mut kept = BTreeMap::new();
        for (path, entry) in std::mem::take(&mut self.durable_names) {
            if reachable(&path, &dirs) {
                if entry == Entry::Dir {
                    dirs.insert(path.clone());
                }
                kept.insert(path, entry);
            }
        }
        self.durable_names = kept;
        self.names.clone_from(&self.durable_names);
        let live: BTreeSet<u64> = self
            .names
            .values()
            .filter_map(|e| match e {
                Entry::File(i) => Some(*i),
                Entry::Dir => None,
            })
            .collect();
        self.inodes.retain(|i, _| live.contains(i));
    }
}

impl SimFs {
    /// A disk holding only `root` (and its ancestors), durably.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        let disk = Disk {
            root: root.into(),
            next_inode: 1,
            ..Disk::default()
        };
        Self {
            disk: Arc::new(Mutex::new(disk)),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Disk> {
        self.disk
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Cuts the power: see [`PowerCut`]. Handles opened before fail from now on.
    pub fn power_cut(&self, mode: PowerCut) {
        let mut disk = self.lock();
        let mut rng = SimRng::new(match mode {
            PowerCut::Random { seed } => seed,
            _ => 0,
        });
        let mut inodes: Vec<u64> = disk.inodes.keys().copied().collect();
        inodes.sort_unstable();
        for id in inodes {
            let Some(inode) = disk.inodes.get_mut(&id) else {
                continue;
            };
            let pending = std::mem::take(&mut inode.pending);
            let keep = match mode {
                PowerCut::LoseUnsynced => 0,
                PowerCut::KeepUnsynced => pending.len(),
                PowerCut::Random { .. } => rng.below(pending.len() as u64 + 1) as usize,
            };
            for op in &pending[..keep] {
                op.apply(&mut inode.durable);
            }
            if let (PowerCut::Random { .. }, Some(Op::Write { position, bytes })) =
                (mode, pending.get(keep))
            {
                let torn = rng.below(bytes.len() as u64) as usize;
                Op::Write {
                    position: *position,
                    bytes: bytes[..torn].to_vec(),
                }
                .apply(&mut inode.durable);
            }
            inode.data.clone_from(&inode.durable);
        }
        // Directories whose entries changed since their last fsync.
        let changed: BTreeSet<PathBuf> = disk
            .names
            .iter()
            .filter(|(p, e)| disk.durable_names.get(*p) != Some(*e))
            .map(|(p, _)| p)
            .chain(
                disk.durable_names
                    .keys()
                    .filter(|p| !disk.names.contains_key(*p)),
            )
            .filter_map(|p| p.parent().map(Path::to_path_buf))
            .collect();
        for dir in changed {
            let keep = match mode {
                PowerCut::LoseUnsynced => false,
                PowerCut::KeepUnsynced => true,
                PowerCut::Random { .. } => rng.below(2) == 1,
            };
            if keep {
                sync_entries(&mut disk, &dir);
            }
        }
        disk.collect_garbage();
        disk.generation += 1;
        disk.fail_sync_at = None;
        disk.fail_write_at = None;
        disk.full = false;
        disk.held = None;
    }

    /// Holds every fdatasync of the file at `path` (a slow disk) until [`Self::release_syncs`]
    /// or a power cut, which fails it. False when there is no such file.
    pub fn hold_syncs_of(&self, path: &Path) -> bool {
        let mut disk = self.lock();
        let Some(Entry::File(inode)) = disk.names.get(path).copied() else {
            return false;
        };
        disk.held = Some(inode);
        true
    }

    /// Lets held fdatasyncs finish.
    pub fn release_syncs(&self) {
        self.lock().held = None;
    }

    /// The `n`-th fdatasync from now (1 = the next one) fails with EIO; what it would have
    /// made durable stays unsynced.
    pub fn fail_sync(&self, n: u64) {
        let mut disk = self.lock();
        disk.fail_sync_at = Some(disk.syncs + n);
    }

    /// The `n`-th write from now (1 = the next one) writes half its bytes, then fails.
    pub fn fail_write(&self, n: u64, fault: WriteFault) {
        let mut disk = self.lock();
        disk.fail_write_at = Some((disk.writes + n, fault));
    }

    /// While full, every write that would grow a file fails with ENOSPC.
    pub fn set_full(&self, full: bool) {
        self.lock().full = full;
    }

    /// fdatasync calls so far.
    pub fn syncs(&self) -> u64 {
        self.lock().syncs
    }
}

/// Makes the current entries of `dir` durable.
fn sync_entries(disk: &mut Disk, dir: &Path) {
    let now: Vec<(PathBuf, Entry)> = disk
        .names
        .iter()
        .filter(|(p, _)| p.parent() == Some(dir))
        .map(|(p, e)| (p.clone(), *e))
        .collect();
    disk.durable_names.retain(|p, _| p.parent() != Some(dir));
    disk.durable_names.extend(now);
}

impl StorageFile for SimFile {
    fn size(&self) -> io::Result<u64> {
        let mut disk = self
            .disk
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Ok(disk.inode(self.inode, self.generation)?.data.len() as u64)
    }

    fn read_exact_at(&self, buf: &mut [u8], position: u64) -> io::Result<()> {
        let mut disk = self
            .disk
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let data = &disk.inode(self.inode, self.generation)?.data;
        let at = usize::try_from(position).map_err(io::Error::other)?;
        let Some(src) = data.get(at..at + buf.len()) else {
            return Err(io::ErrorKind::UnexpectedEof.into());
        };
        buf.copy_from_slice(src);
        Ok(())
    }

    fn write_all_at(&self, buf: &[u8], position: u64) -> io::Result<()> {
        let mut disk = self
            .disk
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        disk.inode(self.inode, self.generation)?;
        disk.writes += 1;
        let fault = match disk.fail_write_at {
            Some((at, fault)) if at == disk.writes => Some(fault),
            _ => None,
        };
        let full = disk.full;
        let inode = disk.inode(self.inode, self.generation)?;
        let grows = position + buf.len() as u64 > inode.data.len() as u64;
        let (bytes, error) = match fault {
            Some(fault) => (&buf[..buf.len() / 2], Some(fault.error())),
            None if full && grows => (&buf[..0], Some(WriteFault::NoSpace.error())),
            None => (buf, None),
        };
        let op = Op::Write {
            position,
            bytes: bytes.to_vec(),
        };
        op.apply(&mut inode.data);
        inode.pending.push(op);
        error.map_or(Ok(()), Err)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        let mut disk = self
            .disk
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let inode = disk.inode(self.inode, self.generation)?;
        let op = Op::SetLen(len);
        op.apply(&mut inode.data);
        inode.pending.push(op);
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        let mut disk = self
            .disk
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        disk.inode(self.inode, self.generation)?;
        while disk.held == Some(self.inode) {
            drop(disk);
            std::thread::sleep(std::time::Duration::from_millis(1));
            disk = self
                .disk
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            disk.inode(self.inode, self.generation)?;
        }
        disk.syncs += 1;
        if disk.fail_sync_at == Some(disk.syncs) {
            return Err(WriteFault::Io.error());
        }
        let inode = disk.inode(self.inode, self.generation)?;
        for op in std::mem::take(&mut inode.pending) {
            op.apply(&mut inode.durable);
        }
        Ok(())
    }
}

impl FileSystem for SimFs {
    fn open(&self, path: &Path, create: bool) -> io::Result<Arc<dyn StorageFile>> {
        let mut disk = self.lock();
        let inode = match disk.names.get(path) {
            Some(Entry::File(inode)) => *inode,
            Some(Entry::Dir) => {
                return Err(io::Error::other(format!(
                    "{}: is a directory",
                    path.display()
                )))
            }
            None if create && disk.parent_is_dir(path) => {
                let inode = disk.next_inode;
                disk.next_inode += 1;
                disk.inodes.insert(inode, Inode::default());
                disk.names.insert(path.to_path_buf(), Entry::File(inode));
                inode
            }
            None => return Err(not_found(path)),
        };
        Ok(Arc::new(SimFile {
            disk: self.disk.clone(),
            inode,
            generation: disk.generation,
        }))
    }

    fn create_dir(&self, path: &Path) -> io::Result<()> {
        let mut disk = self.lock();
        if disk.is_dir(path) {
            return Ok(());
        }
        if disk.names.contains_key(path) {
            return Err(io::ErrorKind::AlreadyExists.into());
        }
        if !disk.parent_is_dir(path) {
            return Err(not_found(path));
        }
        disk.names.insert(path.to_path_buf(), Entry::Dir);
        Ok(())
    }

    fn is_dir(&self, path: &Path) -> bool {
        self.lock().is_dir(path)
    }

    fn list_dir(&self, path: &Path) -> io::Result<Vec<PathBuf>> {
        let disk = self.lock();
        if !disk.is_dir(path) {
            return Err(not_found(path));
        }
        Ok(disk
            .names
            .keys()
            .filter(|p| p.parent() == Some(path))
            .cloned()
            .collect())
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut disk = self.lock();
        let Some(entry @ Entry::File(_)) = disk.names.get(from).copied() else {
            return Err(not_found(from));
        };
        if !disk.parent_is_dir(to) {
            return Err(not_found(to));
        }
        disk.names.remove(from);
        disk.names.insert(to.to_path_buf(), entry);
        Ok(())
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        let mut disk = self.lock();
        match disk.names.get(path) {
            Some(Entry::File(_)) => {
                disk.names.remove(path);
                Ok(())
            }
            _ => Err(not_found(path)),
        }
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        let mut disk = self.lock();
        if !disk.is_dir(path) {
            return Err(not_found(path));
        }
        sync_entries(&mut disk, path);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::durable;

    #[test]
    fn unsynced_bytes_and_names_are_lost_at_a_power_cut() {
        let fs = SimFs::new("/data");
        durable::ensure_dir(&fs, Path::new("/data/a")).unwrap();
        let synced = durable::create_file(&fs, Path::new("/data/a/synced")).unwrap();
        synced.write_all_at(b"kept", 0).unwrap();
        synced.sync_data().unwrap();
        synced.write_all_at(b"lost", 4).unwrap();
        let unnamed = fs.open(Path::new("/data/a/unnamed"), true).unwrap();
        unnamed.write_all_at(b"x", 0).unwrap();
        unnamed.sync_data().unwrap();
        fs.power_cut(PowerCut::LoseUnsynced);
        assert!(synced.size().is_err(), "old handles die with the power");
        assert_eq!(fs.read(Path::new("/data/a/synced")).unwrap(), b"kept");
        assert!(fs.read(Path::new("/data/a/unnamed")).is_err());
    }

    #[test]
    fn a_directory_lost_at_a_cut_takes_its_files_with_it() {
        let fs = SimFs::new("/data");
        fs.create_dir(Path::new("/data/d")).unwrap();
        let file = durable::create_file(&fs, Path::new("/data/d/f")).unwrap();
        file.write_all_at(b"abc", 0).unwrap();
        file.sync_data().unwrap();
        fs.power_cut(PowerCut::LoseUnsynced);
        assert!(!fs.is_dir(Path::new("/data/d")));
        assert!(fs.read(Path::new("/data/d/f")).is_err());
    }

    #[test]
    fn replace_is_all_old_or_all_new() {
        for seed in 0..50 {
            let fs = SimFs::new("/data");
            let path = Path::new("/data/meta");
            durable::replace(&fs, path, b"old").unwrap();
            let tmp = durable::temp_path(path);
            let file = fs.open(&tmp, true).unwrap();
            file.write_all_at(b"new-new", 0).unwrap();
            fs.rename(&tmp, path).unwrap();
            fs.power_cut(PowerCut::Random { seed });
            let got = fs.read(path).unwrap();
            assert!(
                got == b"old" || got == b"new-new" || got.len() < 7,
                "seed {seed}: {got:?}"
            );
            let fs = SimFs::new("/data");
            durable::replace(&fs, path, b"old").unwrap();
            durable::replace(&fs, path, b"new-new").unwrap();
            fs.power_cut(PowerCut::Random { seed });
            assert_eq!(fs.read(path).unwrap(), b"new-new", "seed {seed}");
        }
    }

    #[test]
    fn chosen_faults_fire_once() {
        let fs = SimFs::new("/data");
        let file = fs.open(Path::new("/data/f"), true).unwrap();
        fs.fail_write(2, WriteFault::NoSpace);
        file.write_all_at(b"ab", 0).unwrap();
        let error = file.write_all_at(b"cdef", 2).unwrap_err();
        assert_eq!(error.raw_os_error(), Some(28));
        assert_eq!(file.size().unwrap(), 4, "half of the failed write landed");
        fs.fail_sync(1);
        assert_eq!(file.sync_data().unwrap_err().raw_os_error(), Some(5));
        file.sync_data().unwrap();
    }
}
