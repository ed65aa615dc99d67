//! The metadata engine: typed records (inodes, directory entries, xattrs, volumes, usage) over a
//! transactional key-value store. `KvStore` is the seam where another store (a distributed one,
//! when a pool spans machines) plugs in; `FjallStore` is the embedded, crash-safe default.
//!
//! Writers are serialised by the caller (the core holds one write lock), read what they need,
//! and commit all their changes as one atomic `Txn`. Readers never block and always see whole
//! transactions.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{de::DeserializeOwned, Deserialize, Serialize};

use crate::error::{Error, Result};

/// A pool-wide inode number. Stable for the life of the inode, across remounts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Ino(pub u64);

/// A volume's identity; names can be reused after a delete, ids never are.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct VolumeId(pub u64);

/// The id of a data file in the data store.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct DataId(pub u64);

/// Seconds and nanoseconds since the epoch; may be before it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, Default)]
pub struct Timestamp {
    pub secs: i64,
    pub nanos: u32,
}

impl Timestamp {
    pub fn now() -> Self {
        Self::from(SystemTime::now())
    }

    pub fn to_system_time(self) -> SystemTime {
        if self.secs >= 0 {
            UNIX_EPOCH + Duration::new(self.secs as u64, self.nanos)
        } else {
            UNIX_EPOCH - Duration::from_secs(self.secs.unsigned_abs()) + Duration::from_nanos(self.nanos.into())
        }
    }
}

impl From<SystemTime> for Timestamp {
    fn from(t: SystemTime) -> Self {
        match t.duration_since(UNIX_EPOCH) {
            Ok(d) => Timestamp { secs: d.as_secs() as i64, nanos: d.subsec_nanos() },
            Err(e) => {
                let d = e.duration();
                let (mut secs, mut nanos) = (-(d.as_secs() as i64), d.subsec_nanos());
                if nanos > 0 {
                    secs -= 1;
                    nanos = 1_000_000_000 - nanos;
                }
                Timestamp { secs, nanos }
            }
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Kind {
    File,
    Dir,
    Symlink,
    Fifo,
    Socket,
    CharDev,
    BlockDev,
}

/// One inode. For regular files the data file is the authority for size, blocks, atime and
/// mtime (the kernel may write to it directly); the record keeps everything else.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Inode {
    pub volume: VolumeId,
    pub kind: Kind,
    /// Permission bits including setuid, setgid and sticky (07777).
    pub perm: u32,
    pub uid: u32,
    pub gid: u32,
    pub nlink: u32,
    pub rdev: u32,
    pub atime: Timestamp,
    pub mtime: Timestamp,
    pub ctime: Timestamp,
    pub crtime: Timestamp,
    /// Directories: the directory holding this one (the root points to itself).
    pub parent: Ino,
    /// Regular files: the data file.
    pub data: Option<DataId>,
    /// Symbolic links: the target, as given.
    pub target: Vec<u8>,
    /// Directories: the readdir cookie the next entry receives (cookies 1 and 2 are `.`, `..`).
    pub next_cookie: u64,
    /// Directories: how many entries they hold.
    pub entries: u64,
}

/// A directory entry's value: where the name points and the cookie readdir resumes after.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dirent {
    pub ino: Ino,
    pub kind: Kind,
    pub cookie: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Volume {
    pub id: VolumeId,
    pub name: String,
    pub root: Ino,
    /// Bytes the volume may hold; 0 means limited only by the pool.
    pub capacity: u64,
    pub created: Timestamp,
}

/// Per-volume counters, kept exact in the same transactions that change them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub inodes: u64,
}

/// The tables of the engine. Keys are big-endian so scans run in numeric order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Table {
    /// ino → Inode
    Inodes,
    /// parent ino + name → Dirent
    Dirents,
    /// parent ino + cookie → name (readdir order, stable under inserts and removals)
    Cookies,
    /// ino + name → value
    Xattrs,
    /// volume name → Volume
    Volumes,
    /// volume id → Usage
    Usage,
    /// ino → () for inodes with no links left that were still open
    Orphans,
    /// counter name → u64
    Counters,
}

impl Table {
    pub const ALL: [Table; 8] = [
        Table::Inodes,
        Table::Dirents,
        Table::Cookies,
        Table::Xattrs,
        Table::Volumes,
        Table::Usage,
        Table::Orphans,
        Table::Counters,
    ];

    fn name(self) -> &'static str {
        match self {
            Table::Inodes => "inodes",
            Table::Dirents => "dirents",
            Table::Cookies => "cookies",
            Table::Xattrs => "xattrs",
            Table::Volumes => "volumes",
            Table::Usage => "usage",
            Table::Orphans => "orphans",
            Table::Counters => "counters",
        }
    }
}

/// One change in a transaction.
#[derive(Debug)]
pub enum Op {
    Put(Table, Vec<u8>, Vec<u8>),
    Delete(Table, Vec<u8>),
}

/// A transactional key-value store. Implementations must apply a `commit` atomically (all or
/// none, also across a crash) and make it visible to readers at once.
pub trait KvStore: Send + Sync {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>>;
    /// Entries whose key starts with `prefix` and is greater than or equal to `from`, in order,
    /// at most `limit`.
    fn scan(&self, table: Table, prefix: &[u8], from: &[u8], limit: usize) -> Result<Vec<(Vec<u8>, Vec<u8>)>>;
    /// Applies the operations atomically. Survives the process being killed once it returns.
    fn commit(&self, ops: Vec<Op>) -> Result<()>;
    /// Makes every committed transaction durable against power loss.
    fn sync(&self) -> Result<()>;
}

/// The embedded store: fjall, a log-structured engine with an atomic, checksummed journal.
pub struct FjallStore {
    db: fjall::Database,
    tables: Vec<fjall::Keyspace>,
}

impl FjallStore {
    pub fn open(dir: &Path) -> Result<Self> {
        let db = fjall::Database::builder(dir).open()?;
        let tables = Table::ALL
            .iter()
            .map(|t| db.keyspace(t.name(), fjall::KeyspaceCreateOptions::default))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        Ok(FjallStore { db, tables })
    }

    fn table(&self, t: Table) -> &fjall::Keyspace {
        &self.tables[t as usize]
    }
}

impl KvStore for FjallStore {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.table(table).get(key)?.map(|v| v.to_vec()))
    }

    fn scan(&self, table: Table, prefix: &[u8], from: &[u8], limit: usize) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut out = Vec::new();
        let start = if from > prefix { from } else { prefix };
        for item in self.table(table).range(start..) {
            let (k, v) = item.into_inner()?;
            if !k.starts_with(prefix) || out.len() >= limit {
                break;
            }
            out.push((k.to_vec(), v.to_vec()));
        }
        Ok(out)
    }

    fn commit(&self, ops: Vec<Op>) -> Result<()> {
        let mut batch = self.db.batch().durability(Some(fjall::PersistMode::Buffer));
        for op in ops {
            match op {
                Op::Put(t, k, v) => batch.insert(self.table(t), k, v),
                Op::Delete(t, k) => batch.remove(self.table(t), k),
            }
        }
        batch.commit()?;
        Ok(())
    }

    fn sync(&self) -> Result<()> {
        self.db.persist(fjall::PersistMode::SyncAll)?;
        Ok(())
    }
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    postcard::to_stdvec(value).expect("metadata records always serialise")
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    Ok(postcard::from_bytes(bytes)?)
}

fn ino_key(ino: Ino) -> Vec<u8> {
    ino.0.to_be_bytes().to_vec()
}

fn child_key(parent: Ino, name: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(8 + name.len());
    k.extend_from_slice(&parent.0.to_be_bytes());
    k.extend_from_slice(name);
    k
}

fn cookie_key(parent: Ino, cookie: u64) -> Vec<u8> {
    let mut k = parent.0.to_be_bytes().to_vec();
    k.extend_from_slice(&cookie.to_be_bytes());
    k
}

/// Typed access to the tables.
pub struct Meta {
    store: Box<dyn KvStore>,
    /// Transactions committed, and how many of them a sync has made durable: a sync with
    /// nothing new to make durable costs nothing.
    committed: AtomicU64,
    synced: AtomicU64,
}

/// Changes to commit together; built by a writer while it holds the core's write lock.
#[derive(Default, Debug)]
pub struct Txn {
    ops: Vec<Op>,
}

impl Txn {
    pub fn put_inode(&mut self, ino: Ino, inode: &Inode) {
        self.ops.push(Op::Put(Table::Inodes, ino_key(ino), encode(inode)));
    }

    pub fn delete_inode(&mut self, ino: Ino) {
        self.ops.push(Op::Delete(Table::Inodes, ino_key(ino)));
    }

    pub fn put_dirent(&mut self, parent: Ino, name: &[u8], entry: Dirent) {
        self.ops.push(Op::Put(Table::Dirents, child_key(parent, name), encode(&entry)));
        self.ops.push(Op::Put(Table::Cookies, cookie_key(parent, entry.cookie), name.to_vec()));
    }

    pub fn delete_dirent(&mut self, parent: Ino, name: &[u8], entry: Dirent) {
        self.ops.push(Op::Delete(Table::Dirents, child_key(parent, name)));
        self.ops.push(Op::Delete(Table::Cookies, cookie_key(parent, entry.cookie)));
    }

    pub fn put_xattr(&mut self, ino: Ino, name: &[u8], value: &[u8]) {
        self.ops.push(Op::Put(Table::Xattrs, child_key(ino, name), value.to_vec()));
    }

    pub fn delete_xattr(&mut self, ino: Ino, name: &[u8]) {
        self.ops.push(Op::Delete(Table::Xattrs, child_key(ino, name)));
    }

    pub fn put_volume(&mut self, volume: &Volume) {
        self.ops.push(Op::Put(Table::Volumes, volume.name.as_bytes().to_vec(), encode(volume)));
    }

    pub fn delete_volume(&mut self, volume: &Volume) {
        self.ops.push(Op::Delete(Table::Volumes, volume.name.as_bytes().to_vec()));
        self.ops.push(Op::Delete(Table::Usage, volume.id.0.to_be_bytes().to_vec()));
    }

    pub fn put_usage(&mut self, volume: VolumeId, usage: &Usage) {
        self.ops.push(Op::Put(Table::Usage, volume.0.to_be_bytes().to_vec(), encode(usage)));
    }

    pub fn put_orphan(&mut self, ino: Ino) {
        self.ops.push(Op::Put(Table::Orphans, ino_key(ino), Vec::new()));
    }

    pub fn delete_orphan(&mut self, ino: Ino) {
        self.ops.push(Op::Delete(Table::Orphans, ino_key(ino)));
    }

    pub fn put_counter(&mut self, name: &str, value: u64) {
        self.ops.push(Op::Put(Table::Counters, name.as_bytes().to_vec(), value.to_be_bytes().to_vec()));
    }
}

/// How many entries one scan call brings back at most when a caller wants them all.
const SCAN_BATCH: usize = 1024;

impl Meta {
    pub fn new(store: Box<dyn KvStore>) -> Self {
        Meta { store, committed: AtomicU64::new(0), synced: AtomicU64::new(0) }
    }

    pub fn open(dir: &Path) -> Result<Self> {
        Ok(Meta::new(Box::new(FjallStore::open(dir)?)))
    }

    pub fn commit(&self, txn: Txn) -> Result<()> {
        if txn.ops.is_empty() {
            return Ok(());
        }
        self.store.commit(txn.ops)?;
        self.committed.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    /// Makes every transaction committed so far durable against power loss.
    pub fn sync(&self) -> Result<()> {
        let committed = self.committed.load(Ordering::SeqCst);
        if self.synced.load(Ordering::SeqCst) >= committed {
            return Ok(());
        }
        self.store.sync()?;
        self.synced.fetch_max(committed, Ordering::SeqCst);
        Ok(())
    }

    pub fn inode(&self, ino: Ino) -> Result<Option<Inode>> {
        self.store.get(Table::Inodes, &ino_key(ino))?.map(|v| decode(&v)).transpose()
    }

    pub fn dirent(&self, parent: Ino, name: &[u8]) -> Result<Option<Dirent>> {
        self.store.get(Table::Dirents, &child_key(parent, name))?.map(|v| decode(&v)).transpose()
    }

    /// Entries of `dir` whose cookie is greater than `after`, in cookie order, at most `limit`.
    pub fn entries_after(&self, dir: Ino, after: u64, limit: usize) -> Result<Vec<(Vec<u8>, Dirent)>> {
        let prefix = dir.0.to_be_bytes();
        let from = cookie_key(dir, after.saturating_add(1));
        let mut out = Vec::new();
        for (_, name) in self.store.scan(Table::Cookies, &prefix, &from, limit)? {
            let entry = self
                .dirent(dir, &name)?
                .ok_or_else(|| Error::Corrupt(format!("cookie without entry in directory {}", dir.0)))?;
            out.push((name, entry));
        }
        Ok(out)
    }

    /// Every entry of `dir` in cookie order.
    pub fn all_entries(&self, dir: Ino) -> Result<Vec<(Vec<u8>, Dirent)>> {
        let mut out: Vec<(Vec<u8>, Dirent)> = Vec::new();
        loop {
            let after = out.last().map_or(0, |(_, e)| e.cookie);
            let batch = self.entries_after(dir, after, SCAN_BATCH)?;
            let done = batch.len() < SCAN_BATCH;
            out.extend(batch);
            if done {
                return Ok(out);
            }
        }
    }

    pub fn xattr(&self, ino: Ino, name: &[u8]) -> Result<Option<Vec<u8>>> {
        self.store.get(Table::Xattrs, &child_key(ino, name))
    }

    pub fn xattr_names(&self, ino: Ino) -> Result<Vec<Vec<u8>>> {
        let prefix = ino_key(ino);
        let mut names: Vec<Vec<u8>> = Vec::new();
        loop {
            let from = names.last().map_or_else(
                || prefix.clone(),
                |n| {
                    let mut k = child_key(ino, n);
                    k.push(0);
                    k
                },
            );
            let batch = self.store.scan(Table::Xattrs, &prefix, &from, SCAN_BATCH)?;
            let done = batch.len() < SCAN_BATCH;
            names.extend(batch.into_iter().map(|(k, _)| k[8..].to_vec()));
            if done {
                return Ok(names);
            }
        }
    }

    pub fn volume(&self, name: &str) -> Result<Option<Volume>> {
        self.store.get(Table::Volumes, name.as_bytes())?.map(|v| decode(&v)).transpose()
    }

    pub fn volumes(&self) -> Result<Vec<Volume>> {
        self.store.scan(Table::Volumes, &[], &[], usize::MAX)?.iter().map(|(_, v)| decode(v)).collect()
    }

    pub fn usage(&self, volume: VolumeId) -> Result<Usage> {
        Ok(self.store.get(Table::Usage, &volume.0.to_be_bytes())?.map(|v| decode(&v)).transpose()?.unwrap_or_default())
    }

    pub fn orphans(&self) -> Result<Vec<Ino>> {
        Ok(self
            .store
            .scan(Table::Orphans, &[], &[], usize::MAX)?
            .iter()
            .map(|(k, _)| Ino(u64::from_be_bytes(k[..8].try_into().expect("8-byte key"))))
            .collect())
    }

    /// Every inode, for fsck.
    pub fn all_inodes(&self) -> Result<Vec<(Ino, Inode)>> {
        self.store
            .scan(Table::Inodes, &[], &[], usize::MAX)?
            .iter()
            .map(|(k, v)| Ok((Ino(u64::from_be_bytes(k[..8].try_into().expect("8-byte key"))), decode(v)?)))
            .collect()
    }

    pub fn counter(&self, name: &str) -> Result<u64> {
        Ok(self
            .store
            .get(Table::Counters, name.as_bytes())?
            .map(|v| u64::from_be_bytes(v[..8].try_into().unwrap_or([0; 8])))
            .unwrap_or(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_round_trip_before_and_after_the_epoch() {
        for t in [
            Timestamp { secs: 1_700_000_000, nanos: 5 },
            Timestamp { secs: -1, nanos: 999_999_999 },
            Timestamp { secs: -100, nanos: 0 },
        ] {
            assert_eq!(Timestamp::from(t.to_system_time()), t);
        }
    }

    #[test]
    fn readdir_order_survives_removals_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let parent = Ino(7);
        {
            let meta = Meta::open(dir.path()).unwrap();
            let mut txn = Txn::default();
            for (i, name) in ["b", "a", "c"].iter().enumerate() {
                let entry = Dirent { ino: Ino(100 + i as u64), kind: Kind::File, cookie: 3 + i as u64 };
                txn.put_dirent(parent, name.as_bytes(), entry);
            }
            meta.commit(txn).unwrap();
            let mut txn = Txn::default();
            txn.delete_dirent(parent, b"a", meta.dirent(parent, b"a").unwrap().unwrap());
            meta.commit(txn).unwrap();
            meta.sync().unwrap();
        }
        let meta = Meta::open(dir.path()).unwrap();
        let names: Vec<_> = meta.all_entries(parent).unwrap().into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, vec![b"b".to_vec(), b"c".to_vec()]);
        let after_b = meta.entries_after(parent, 3, 10).unwrap();
        assert_eq!(after_b.len(), 1);
        assert_eq!(after_b[0].0, b"c");
    }
}
