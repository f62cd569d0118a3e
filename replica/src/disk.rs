//! The file system a durable replica writes through: the calls the WAL and the
//! checkpoints make, behind one narrow trait, with a faulty twin for tests.
//!
//! - [`OsDisk`] is the real file system (data files 0600 in 0700 directories).
//! - [`FaultyDisk`] is an in-memory file system that behaves like a disk after a power
//!   cut: file contents and directory entries reach "the platter" only when synced
//!   (`sync_data`/`sync_all` for a file's bytes and length, `sync_dir` for the names in a
//!   directory); [`FaultyDisk::crash`] throws away everything unsynced, keeping a random
//!   prefix of each file's unsynced writes with the last one possibly torn, as a disk that
//!   lost power mid-write does. [`FaultyDisk::fail`] makes one kind of call fail, and
//!   [`FaultyDisk::die_after`] makes every call fail after a number of calls, as a process
//!   killed mid-write stops calling.
//!
//! Nothing here knows about records or raft; the WAL and checkpoints are written against
//! [`Disk`] and their tests run them on both.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// A file open for writing.
pub trait DiskFile: Send + Debug {
    /// Writes all of `data` at `offset` (a hole before it reads as zeros).
    fn write_at(&mut self, data: &[u8], offset: u64) -> io::Result<()>;
    /// Its length now.
    fn size(&self) -> io::Result<u64>;
    /// Cuts or extends it to `len` bytes.
    fn set_len(&mut self, len: u64) -> io::Result<()>;
    /// Makes its bytes durable (`fdatasync`).
    fn sync_data(&mut self) -> io::Result<()>;
    /// Makes its bytes and metadata durable (`fsync`).
    fn sync_all(&mut self) -> io::Result<()>;
}

/// The file system calls a durable replica makes.
pub trait Disk: Send + Sync + Debug {
    /// Creates `dir` and its parents, private to this user.
    fn create_dir(&self, dir: &Path) -> io::Result<()>;
    /// The names of the entries (files and directories) in `dir`.
    fn list(&self, dir: &Path) -> io::Result<Vec<String>>;
    /// The whole of `path`.
    fn read(&self, path: &Path) -> io::Result<Vec<u8>>;
    /// `path` as a stream.
    fn reader(&self, path: &Path) -> io::Result<Box<dyn Read + Send>>;
    /// `path`'s length.
    fn size(&self, path: &Path) -> io::Result<u64>;
    /// Creates `path` empty, private to this user; with `exclusive`, fails if it exists,
    /// otherwise truncates it.
    fn create(&self, path: &Path, exclusive: bool) -> io::Result<Box<dyn DiskFile>>;
    /// Opens an existing `path` for writing.
    fn open(&self, path: &Path) -> io::Result<Box<dyn DiskFile>>;
    /// Renames `from` over `to`, atomically.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Deletes `path`.
    fn remove(&self, path: &Path) -> io::Result<()>;
    /// Deletes `dir` and everything under it (durable once `dir`'s parent is synced).
    fn remove_all(&self, dir: &Path) -> io::Result<()>;
    /// Makes the names in `dir` durable (creations, renames, deletions).
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// How long the next group commit's sync takes on a simulation's clock. A real disk
    /// takes its own time inside the sync call, so it adds nothing (the default); a
    /// simulated one says how long to wait, which opens the window a real `fdatasync`
    /// opens between a record queued and a record durable.
    fn sync_time(&self) -> Duration {
        Duration::ZERO
    }
}

/// The disk every replica writes through unless a test says otherwise.
pub fn os() -> Arc<dyn Disk> {
    Arc::new(OsDisk)
}

/// A [`DiskFile`] as a sequential [`io::Write`] from `pos` on (for encoders that stream).
#[derive(Debug)]
pub struct Appender {
    /// The file.
    pub file: Box<dyn DiskFile>,
    /// Where the next write goes.
    pub pos: u64,
}

impl io::Write for Appender {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.file.write_at(buf, self.pos)?;
        self.pos += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The real file system.
#[derive(Clone, Copy, Debug, Default)]
pub struct OsDisk;

#[derive(Debug)]
struct OsFile(std::fs::File);

impl DiskFile for OsFile {
    fn write_at(&mut self, data: &[u8], offset: u64) -> io::Result<()> {
        std::os::unix::fs::FileExt::write_all_at(&self.0, data, offset)
    }

    fn size(&self) -> io::Result<u64> {
        Ok(self.0.metadata()?.len())
    }

    fn set_len(&mut self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }

    fn sync_data(&mut self) -> io::Result<()> {
        self.0.sync_data()
    }

    fn sync_all(&mut self) -> io::Result<()> {
        self.0.sync_all()
    }
}

impl Disk for OsDisk {
    fn create_dir(&self, dir: &Path) -> io::Result<()> {
        weft_security::files::private_dir(dir)
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            if let Some(name) = entry?.file_name().to_str() {
                names.push(name.to_string());
            }
        }
        Ok(names)
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        std::fs::read(path)
    }

    fn reader(&self, path: &Path) -> io::Result<Box<dyn Read + Send>> {
        Ok(Box::new(std::fs::File::open(path)?))
    }

    fn size(&self, path: &Path) -> io::Result<u64> {
        Ok(std::fs::metadata(path)?.len())
    }

    fn create(&self, path: &Path, exclusive: bool) -> io::Result<Box<dyn DiskFile>> {
        let f = if exclusive {
            weft_security::files::private_new_file(path)?
        } else {
            weft_security::files::private_file(path)?
        };
        Ok(Box::new(OsFile(f)))
    }

    fn open(&self, path: &Path) -> io::Result<Box<dyn DiskFile>> {
        Ok(Box::new(OsFile(std::fs::OpenOptions::new().write(true).open(path)?)))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }

    fn remove_all(&self, dir: &Path) -> io::Result<()> {
        std::fs::remove_dir_all(dir)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        std::fs::File::open(dir)?.sync_all()
    }
}

/// The kinds of call [`FaultyDisk::fail`] can make fail.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Call {
    /// `write_at`.
    Write,
    /// `sync_data`, `sync_all`.
    Sync,
    /// `set_len`.
    SetLen,
    /// `rename`.
    Rename,
    /// `sync_dir`.
    SyncDir,
    /// `create`, `open`.
    Create,
}

/// One file's bytes: what a crash would keep, and the writes since.
#[derive(Clone, Debug, Default)]
struct Inode {
    durable: Vec<u8>,
    now: Vec<u8>,
    /// Changes since the last sync, in order: `Some(data)` a write at an offset, `None`
    /// a length change.
    pending: Vec<(u64, Option<Vec<u8>>)>,
}

impl Inode {
    fn write(&mut self, data: &[u8], offset: u64) {
        apply(&mut self.now, offset, Some(data));
        self.pending.push((offset, Some(data.to_vec())));
    }

    fn set_len(&mut self, len: u64) {
        apply(&mut self.now, len, None);
        self.pending.push((len, None));
    }

    fn sync(&mut self) {
        self.durable = self.now.clone();
        self.pending.clear();
    }
}

fn apply(bytes: &mut Vec<u8>, at: u64, data: Option<&[u8]>) {
    let at = at as usize;
    match data {
        Some(d) => {
            if bytes.len() < at + d.len() {
                bytes.resize(at + d.len(), 0);
            }
            bytes[at..at + d.len()].copy_from_slice(d);
        }
        None => bytes.resize(at, 0),
    }
}

#[derive(Debug)]
struct State {
    inodes: BTreeMap<u64, Inode>,
    next_inode: u64,
    /// Path to inode, as the process sees it.
    names: BTreeMap<PathBuf, u64>,
    /// Path to inode, as a crash would leave it (per directory, as of its last sync).
    durable_names: BTreeMap<PathBuf, u64>,
    dirs: Vec<PathBuf>,
    failing: Vec<Call>,
    /// Calls left before every call fails (`None`: no limit).
    calls_left: Option<u64>,
    /// The range a group commit's sync takes on a simulation's clock (`None`: no time).
    sync_time: Option<(Duration, Duration)>,
    rng: StdRng,
}

/// An in-memory disk that loses what was not synced when it [`crash`](FaultyDisk::crash)es
/// and fails the calls it is told to.
#[derive(Clone, Debug)]
pub struct FaultyDisk {
    state: Arc<Mutex<State>>,
}

#[derive(Debug)]
struct FaultyFile {
    state: Arc<Mutex<State>>,
    inode: u64,
}

fn injected(call: Call) -> io::Error {
    io::Error::other(format!("injected fault: {call:?}"))
}

impl State {
    /// Counts one call of kind `call`; fails it when told to.
    fn call(&mut self, call: Option<Call>) -> io::Result<()> {
        if let Some(left) = self.calls_left.as_mut() {
            if *left == 0 {
                return Err(io::Error::other("injected fault: the process died"));
            }
            *left -= 1;
        }
        match call {
            Some(c) if self.failing.contains(&c) => Err(injected(c)),
            _ => Ok(()),
        }
    }

    fn inode(&self, path: &Path) -> io::Result<u64> {
        self.names
            .get(path)
            .copied()
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("{}: no such file", path.display())))
    }
}

impl FaultyDisk {
    /// An empty disk whose crashes keep unsynced writes as `seed` decides.
    pub fn new(seed: u64) -> Self {
        FaultyDisk {
            state: Arc::new(Mutex::new(State {
                inodes: BTreeMap::new(),
                next_inode: 1,
                names: BTreeMap::new(),
                durable_names: BTreeMap::new(),
                dirs: Vec::new(),
                failing: Vec::new(),
                calls_left: None,
                sync_time: None,
                rng: StdRng::seed_from_u64(seed),
            })),
        }
    }

    /// Makes every call of kind `call` fail (`on`) or succeed again.
    pub fn fail(&self, call: Call, on: bool) {
        let mut s = self.state.lock();
        s.failing.retain(|c| *c != call);
        if on {
            s.failing.push(call);
        }
    }

    /// Makes each group commit's sync take between `min` and `max` of simulated time (drawn
    /// from the disk's seed), as a real disk's `fdatasync` does.
    pub fn set_sync_time(&self, min: Duration, max: Duration) {
        self.state.lock().sync_time = Some((min, max.max(min)));
    }

    /// Makes every call after the next `calls` fail, as a killed process makes none.
    pub fn die_after(&self, calls: u64) {
        self.state.lock().calls_left = Some(calls);
    }

    /// A power cut: names revert to their directories' last sync; each file keeps its
    /// synced bytes plus a random prefix of its later writes, the last one possibly torn.
    /// Faults are cleared, so the disk works again for recovery.
    pub fn crash(&self) {
        let mut guard = self.state.lock();
        let s = &mut *guard;
        for inode in s.inodes.values_mut() {
            let keep = s.rng.random_range(0..=inode.pending.len());
            let mut bytes = inode.durable.clone();
            for (k, (at, data)) in inode.pending.iter().take(keep).enumerate() {
                match data {
                    Some(d) if k + 1 == keep => {
                        let torn = s.rng.random_range(0..=d.len());
                        apply(&mut bytes, *at, Some(&d[..torn]));
                    }
                    Some(d) => apply(&mut bytes, *at, Some(d)),
                    None => apply(&mut bytes, *at, None),
                }
            }
            inode.durable = bytes.clone();
            inode.now = bytes;
            inode.pending.clear();
        }
        s.names = s.durable_names.clone();
        let live: Vec<u64> = s.names.values().copied().collect();
        s.inodes.retain(|id, _| live.contains(id));
        s.failing.clear();
        s.calls_left = None;
    }

    /// The names of every file, as the process sees them.
    pub fn files(&self) -> Vec<PathBuf> {
        self.state.lock().names.keys().cloned().collect()
    }
}

impl DiskFile for FaultyFile {
    fn write_at(&mut self, data: &[u8], offset: u64) -> io::Result<()> {
        let mut s = self.state.lock();
        s.call(Some(Call::Write))?;
        s.inodes.entry(self.inode).or_default().write(data, offset);
        Ok(())
    }

    fn size(&self) -> io::Result<u64> {
        Ok(self.state.lock().inodes.get(&self.inode).map_or(0, |i| i.now.len() as u64))
    }

    fn set_len(&mut self, len: u64) -> io::Result<()> {
        let mut s = self.state.lock();
        s.call(Some(Call::SetLen))?;
        s.inodes.entry(self.inode).or_default().set_len(len);
        Ok(())
    }

    fn sync_data(&mut self) -> io::Result<()> {
        let mut s = self.state.lock();
        s.call(Some(Call::Sync))?;
        s.inodes.entry(self.inode).or_default().sync();
        Ok(())
    }

    fn sync_all(&mut self) -> io::Result<()> {
        self.sync_data()
    }
}

/// The name of `dir`'s entry that `p` is or lies under, if any.
fn entry_of(dir: &Path, p: &Path) -> Option<String> {
    let entry = p.ancestors().find(|a| a.parent() == Some(dir))?;
    entry.file_name().and_then(|n| n.to_str()).map(String::from)
}

impl Disk for FaultyDisk {
    fn create_dir(&self, dir: &Path) -> io::Result<()> {
        let mut s = self.state.lock();
        s.call(None)?;
        if !s.dirs.iter().any(|d| d == dir) {
            s.dirs.push(dir.to_path_buf());
        }
        Ok(())
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut s = self.state.lock();
        s.call(None)?;
        let entries: std::collections::BTreeSet<String> =
            s.names.keys().chain(s.dirs.iter()).filter_map(|p| entry_of(dir, p)).collect();
        Ok(entries.into_iter().collect())
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        let mut s = self.state.lock();
        s.call(None)?;
        let id = s.inode(path)?;
        Ok(s.inodes.get(&id).map(|i| i.now.clone()).unwrap_or_default())
    }

    fn reader(&self, path: &Path) -> io::Result<Box<dyn Read + Send>> {
        Ok(Box::new(io::Cursor::new(self.read(path)?)))
    }

    fn size(&self, path: &Path) -> io::Result<u64> {
        Ok(self.read(path)?.len() as u64)
    }

    fn create(&self, path: &Path, exclusive: bool) -> io::Result<Box<dyn DiskFile>> {
        let mut s = self.state.lock();
        s.call(Some(Call::Create))?;
        let inode = match s.names.get(path).copied() {
            Some(_) if exclusive => {
                return Err(io::Error::new(io::ErrorKind::AlreadyExists, format!("{}: exists", path.display())));
            }
            Some(id) => {
                s.inodes.entry(id).or_default().set_len(0);
                id
            }
            None => {
                let id = s.next_inode;
                s.next_inode += 1;
                s.inodes.insert(id, Inode::default());
                s.names.insert(path.to_path_buf(), id);
                id
            }
        };
        Ok(Box::new(FaultyFile { state: self.state.clone(), inode }))
    }

    fn open(&self, path: &Path) -> io::Result<Box<dyn DiskFile>> {
        let mut s = self.state.lock();
        s.call(Some(Call::Create))?;
        let inode = s.inode(path)?;
        Ok(Box::new(FaultyFile { state: self.state.clone(), inode }))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut s = self.state.lock();
        s.call(Some(Call::Rename))?;
        let id = s.inode(from)?;
        s.names.remove(from);
        s.names.insert(to.to_path_buf(), id);
        Ok(())
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        let mut s = self.state.lock();
        s.call(None)?;
        s.inode(path)?;
        s.names.remove(path);
        Ok(())
    }

    fn remove_all(&self, dir: &Path) -> io::Result<()> {
        let mut s = self.state.lock();
        s.call(None)?;
        // Inodes stay: a crash before the parent is synced brings the names back.
        s.names.retain(|p, _| !p.starts_with(dir));
        s.dirs.retain(|d| !d.starts_with(dir));
        Ok(())
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut s = self.state.lock();
        s.call(Some(Call::SyncDir))?;
        let in_dir = |p: &PathBuf| p.parent() == Some(dir);
        let names: Vec<(PathBuf, u64)> =
            s.names.iter().filter(|(p, _)| in_dir(p)).map(|(p, i)| (p.clone(), *i)).collect();
        s.durable_names.retain(|p, _| !in_dir(p));
        s.durable_names.extend(names);
        // A subdirectory removed whole (`remove_all`) is gone for good once its parent is
        // synced: nothing under it comes back in a crash.
        let s = &mut *s;
        let (live, dirs) = (&s.names, &s.dirs);
        s.durable_names.retain(|p, _| match p.ancestors().find(|a| a.parent() == Some(dir)) {
            Some(child) if child != p.as_path() => {
                live.keys().any(|n| n.starts_with(child)) || dirs.iter().any(|d| d.starts_with(child))
            }
            _ => true,
        });
        Ok(())
    }

    fn sync_time(&self) -> Duration {
        let mut s = self.state.lock();
        match s.sync_time {
            None => Duration::ZERO,
            Some((min, max)) if min == max => min,
            Some((min, max)) => s.rng.random_range(min..=max),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_crash_keeps_synced_bytes_and_synced_names_only() {
        let disk = FaultyDisk::new(1);
        let dir = Path::new("/d");
        disk.create_dir(dir).unwrap();
        let mut f = disk.create(&dir.join("a"), true).unwrap();
        f.write_at(b"hello", 0).unwrap();
        f.sync_data().unwrap();
        disk.sync_dir(dir).unwrap();
        f.write_at(b" world", 5).unwrap();
        let mut g = disk.create(&dir.join("b"), true).unwrap();
        g.write_at(b"unsynced name", 0).unwrap();
        g.sync_data().unwrap();
        disk.crash();
        let a = disk.read(&dir.join("a")).unwrap();
        assert!(a.starts_with(b"hello") && b"hello world".starts_with(&a), "a prefix of the writes: {a:?}");
        assert!(disk.read(&dir.join("b")).is_err(), "a name never synced into its directory is gone");
    }

    #[test]
    fn injected_faults_fail_calls_until_cleared_and_a_dead_process_makes_none() {
        let disk = FaultyDisk::new(2);
        let mut f = disk.create(Path::new("/f"), false).unwrap();
        disk.fail(Call::Sync, true);
        assert!(f.sync_data().unwrap_err().to_string().contains("Sync"));
        f.write_at(b"x", 0).unwrap();
        disk.fail(Call::Sync, false);
        f.sync_data().unwrap();
        disk.die_after(1);
        f.write_at(b"y", 1).unwrap();
        assert!(f.write_at(b"z", 2).is_err());
        assert!(disk.read(Path::new("/f")).is_err(), "every call fails once the process died");
        disk.crash();
        assert!(disk.read(Path::new("/f")).is_err(), "its name was never synced");
    }

    #[test]
    fn a_sync_takes_the_time_its_seed_draws_within_the_range_set() {
        assert_eq!(FaultyDisk::new(3).sync_time(), Duration::ZERO, "no time unless told");
        assert_eq!(os().sync_time(), Duration::ZERO, "a real disk's sync takes its own time");
        let (min, max) = (Duration::from_micros(500), Duration::from_millis(4));
        let draws = |seed| {
            let disk = FaultyDisk::new(seed);
            disk.set_sync_time(min, max);
            (0..50).map(|_| disk.sync_time()).collect::<Vec<_>>()
        };
        let first = draws(4);
        assert!(first.iter().all(|t| (min..=max).contains(t)), "{first:?}");
        assert!(first.iter().any(|t| *t != first[0]), "the times vary: {first:?}");
        assert_eq!(first, draws(4), "one seed, one sequence");
    }
}
