//! The metadata engine: typed records (inodes, directory entries, xattrs, volumes, usage) over a
//! transactional key-value store. `KvStore` is the seam where another store (a distributed one,
//! when a pool spans machines) plugs in; `FjallStore` is the embedded, crash-safe default.
//!
//! Writers are serialised by the caller (the core holds one write lock), read what they need,
//! and commit all their changes as one atomic `Txn`. Readers never block and always see whole
//! transactions.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{de::DeserializeOwned, Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::stats::Histogram;

pub mod memory;

/// A pool-wide inode number: the view it is seen through (a volume, or a snapshot of one) in
/// the top 24 bits and the inode within that view's records below. A volume and its snapshots
/// and clones share records, and the kernel still sees a distinct inode in each. Stable for the
/// life of the inode, across remounts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Ino(pub u64);

impl Ino {
    const LOCAL_BITS: u32 = 40;
    /// The largest inode number within a view.
    pub const LOCAL_MAX: u64 = (1 << Self::LOCAL_BITS) - 1;

    pub const fn new(view: ViewId, local: u64) -> Ino {
        Ino(((view.0 as u64) << Self::LOCAL_BITS) | (local & Self::LOCAL_MAX))
    }

    pub const fn view(self) -> ViewId {
        ViewId((self.0 >> Self::LOCAL_BITS) as u32)
    }

    pub const fn local(self) -> u64 {
        self.0 & Self::LOCAL_MAX
    }

    /// The same inode seen through another view.
    pub const fn in_view(self, view: ViewId) -> Ino {
        Ino::new(view, self.local())
    }
}

/// A volume's or snapshot's window onto the records: it reads a chain of layers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ViewId(pub u32);

impl ViewId {
    /// The most views a pool can have had (ids are never reused).
    pub const MAX: u32 = (1 << 24) - 1;
}

/// A generation of records. A view reads its layers newest first and the first record found
/// for a key wins (a tombstone hides the key); it writes only into its newest layer. Cutting a
/// snapshot freezes a volume's layers for the snapshot and gives the volume a new, empty layer
/// on top, so the two share every record neither changes afterwards.
pub type LayerId = u64;

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

    /// Year, month, day, hour, minute and second in UTC.
    pub fn utc(self) -> [i64; 6] {
        let t =
            jiff::Timestamp::from_second(self.secs).unwrap_or(jiff::Timestamp::MIN).to_zoned(jiff::tz::TimeZone::UTC);
        let i = i64::from;
        [i64::from(t.year()), i(t.month()), i(t.day()), i(t.hour()), i(t.minute()), i(t.second())]
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
    /// Regular files: the layer whose views may change the data file. A view whose newest
    /// layer is another one shares it with a snapshot or clone, and puts a data file of its
    /// own over it before a change.
    pub data_layer: LayerId,
    /// Regular files: the shared data files under the data file, if any (`core::overlay`).
    pub under: Under,
    /// Symbolic links: the target, as given.
    pub target: Vec<u8>,
    /// Directories: the readdir cookie the next entry receives (cookies 1 and 2 are `.`, `..`).
    pub next_cookie: u64,
    /// Directories: how many entries they hold.
    pub entries: u64,
}

/// A data file's place in a stack of data files: the chunks it holds over the files below
/// it, and where the files below stop showing (the file was truncated there since).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Level {
    pub held: ChunkSet,
    pub limit: u64,
}

/// What lies under a file's own data file: its own level, and the shared data files below,
/// newest first (the last one holds everything it was given).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Under {
    pub top: Level,
    pub lower: Vec<(DataId, Level)>,
}

impl Under {
    pub fn is_empty(&self) -> bool {
        self.lower.is_empty()
    }
}

/// A set of chunk numbers, as a bitmap.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkSet(Vec<u8>);

impl ChunkSet {
    pub fn contains(&self, chunk: u64) -> bool {
        usize::try_from(chunk / 8).ok().and_then(|i| self.0.get(i)).is_some_and(|b| b & (1 << (chunk % 8)) != 0)
    }

    pub fn insert(&mut self, chunk: u64) {
        let i = (chunk / 8) as usize;
        if self.0.len() <= i {
            self.0.resize(i + 1, 0);
        }
        self.0[i] |= 1 << (chunk % 8);
    }
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
    pub view: ViewId,
    /// The layers its records live in, newest (the one it writes) first.
    pub layers: Vec<LayerId>,
    /// For a snapshot (named `VOLUME@SNAP`, read-only): the volume it was cut from.
    pub snapshot_of: Option<String>,
    /// The most inodes it may hold, when given (`--inodes`); see `inode_limit`.
    pub inodes: Option<u64>,
}

/// A volume record as written before volumes had an inode limit; read as one without.
#[derive(Serialize, Deserialize)]
struct VolumeWithoutInodes {
    id: VolumeId,
    name: String,
    root: Ino,
    capacity: u64,
    created: Timestamp,
    view: ViewId,
    layers: Vec<LayerId>,
    snapshot_of: Option<String>,
}

fn decode_volume(bytes: &[u8]) -> Result<Volume> {
    decode(bytes).or_else(|e| {
        let v: VolumeWithoutInodes = decode(bytes).map_err(|_| e)?;
        Ok(Volume {
            id: v.id,
            name: v.name,
            root: v.root,
            capacity: v.capacity,
            created: v.created,
            view: v.view,
            layers: v.layers,
            snapshot_of: v.snapshot_of,
            inodes: None,
        })
    })
}

impl Inode {
    /// A new inode of `volume` made `now`, owned by `uid`:`gid`, empty: a directory (in
    /// `parent`; a root names itself) with no entries, or a file, symlink or device whose
    /// content the caller fills in.
    pub fn new(volume: VolumeId, kind: Kind, perm: u32, (uid, gid): (u32, u32), parent: Ino, now: Timestamp) -> Inode {
        let dir = kind == Kind::Dir;
        Inode {
            volume,
            kind,
            perm,
            uid,
            gid,
            nlink: if dir { 2 } else { 1 },
            rdev: 0,
            atime: now,
            mtime: now,
            ctime: now,
            crtime: now,
            parent: if dir { parent } else { Ino(0) },
            data: None,
            data_layer: 0,
            under: Under::default(),
            target: Vec::new(),
            next_cookie: 3,
            entries: 0,
        }
    }

    /// Every data file the inode's content comes from: its own, then the shared ones under it.
    pub fn data_files(&self) -> impl Iterator<Item = DataId> + '_ {
        self.data.into_iter().chain(self.under.lower.iter().map(|(id, _)| *id))
    }
}

impl Volume {
    /// Bytes of capacity per inode when no limit is given: mke2fs's default inode_ratio.
    pub const BYTES_PER_INODE: u64 = 16 * 1024;

    pub fn is_snapshot(&self) -> bool {
        self.snapshot_of.is_some()
    }

    /// The most inodes the volume may hold: as given, or one per 16 KiB of its capacity, as
    /// ext4 makes them. None without either: like its bytes, its inodes are bounded by the
    /// pool alone.
    pub fn inode_limit(&self) -> Option<u64> {
        self.inodes.or((self.capacity > 0).then(|| (self.capacity / Self::BYTES_PER_INODE).max(1)))
    }
}

/// Per-volume counters, kept exact in the same transactions that change them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub inodes: u64,
    /// Bytes of data blocks; exact after an orderly close (see `core::Account`).
    pub bytes: u64,
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
    /// Tables whose records belong to layers (and so to views) rather than to the pool.
    fn is_layered(self) -> bool {
        matches!(self, Table::Inodes | Table::Dirents | Table::Cookies | Table::Xattrs)
    }

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

/// The tables whose records belong to layers, for work on layers as stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LayerTable {
    /// key: local ino
    Inodes,
    /// key: parent's local ino + name
    Dirents,
    /// key: parent's local ino + cookie
    Cookies,
    /// key: local ino + name
    Xattrs,
}

impl LayerTable {
    pub const ALL: [LayerTable; 4] = [LayerTable::Inodes, LayerTable::Dirents, LayerTable::Cookies, LayerTable::Xattrs];

    fn table(self) -> Table {
        match self {
            LayerTable::Inodes => Table::Inodes,
            LayerTable::Dirents => Table::Dirents,
            LayerTable::Cookies => Table::Cookies,
            LayerTable::Xattrs => Table::Xattrs,
        }
    }
}

/// A record as a layer stores it: its key within the layer, and the record (None: a tombstone).
pub type LayerRecord = (Vec<u8>, Option<Vec<u8>>);

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
        // Bounded by the end of the prefix: an open range walks every tombstone between the
        // prefix and the next live key (the xattrs and entries of deleted inodes), so a scan
        // that finds nothing would cost as much as the deletes after it.
        let items = match prefix_end(prefix) {
            Some(end) if start >= end.as_slice() => return Ok(out),
            Some(end) => self.table(table).range(start.to_vec()..end),
            None => self.table(table).range(start..),
        };
        for item in items {
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

/// The least key greater than every key that starts with `prefix`; None when there is none
/// (an empty prefix, or one of 0xff bytes only).
fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

/// An inode record as stored in a layer.
pub fn encode_inode(inode: &Inode) -> Vec<u8> {
    encode(inode)
}

/// An inode record from its stored form (its volume and parent as stored, not as a view sees
/// them).
pub fn decode_inode(bytes: &[u8]) -> Result<Inode> {
    decode(bytes)
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    postcard::to_stdvec(value).expect("metadata records always serialise")
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    Ok(postcard::from_bytes(bytes)?)
}

/// A record of a layered table, as a transaction names it: the view it is written through,
/// then the key within the view (the inode's local number, then the rest). The commit puts it
/// into the view's newest layer.
fn view_key(ino: Ino, rest: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(12 + rest.len());
    k.extend_from_slice(&ino.view().0.to_be_bytes());
    k.extend_from_slice(&ino.local().to_be_bytes());
    k.extend_from_slice(rest);
    k
}

/// Where a record of a layered table is stored: its layer, then the key within the view.
fn layer_key(layer: LayerId, key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(8 + key.len());
    k.extend_from_slice(&layer.to_be_bytes());
    k.extend_from_slice(key);
    k
}

/// Values of layered tables start with a tag: a record, or a tombstone hiding older layers'.
const PRESENT: u8 = 1;
const TOMBSTONE: u8 = 0;

fn present(value: Vec<u8>) -> Vec<u8> {
    let mut v = Vec::with_capacity(1 + value.len());
    v.push(PRESENT);
    v.extend(value);
    v
}

/// The record a stored layered value holds; None for a tombstone.
fn unwrap_present(mut stored: Vec<u8>) -> Option<Vec<u8>> {
    match stored.first() {
        Some(&PRESENT) => {
            stored.remove(0);
            Some(stored)
        }
        _ => None,
    }
}

fn u64_at(bytes: &[u8]) -> u64 {
    u64::from_be_bytes(bytes[..8].try_into().expect("8-byte key part"))
}

/// Typed access to the tables.
pub struct Meta {
    store: Box<dyn KvStore>,
    /// Transactions committed, and how many of them a sync has made durable: a sync with
    /// nothing new to make durable costs nothing.
    committed: AtomicU64,
    synced: AtomicU64,
    /// Every view's layers, from the volume records; replaced whole when they change.
    views: RwLock<Arc<HashMap<ViewId, View>>>,
    /// The one sequence inodes, data files, volumes and layers take their ids from.
    next_id: AtomicU64,
    /// Where the sequence starts after a restart, as last committed. Held while a transaction
    /// that took ids commits, so the record only ever grows: transactions may commit in
    /// another order than they took their ids.
    ids_recorded: Mutex<u64>,
    /// How long the store took to commit, and to make commits durable.
    commit_latency: Histogram,
    sync_latency: Histogram,
}

const NEXT_ID: &str = "next_id";
/// Ids below are never handed out.
const FIRST_ID: u64 = 16;

/// What a view reads and where it writes.
#[derive(Clone, Debug)]
pub struct View {
    /// The volume (or snapshot) whose view it is; inodes read through it belong to it.
    pub volume: VolumeId,
    /// Newest first; writes go to the first.
    pub layers: Arc<[LayerId]>,
    /// A snapshot's view: nothing may be written through it.
    pub read_only: bool,
}

impl View {
    fn of(v: &Volume) -> View {
        View { volume: v.id, layers: v.layers.clone().into(), read_only: v.is_snapshot() }
    }

    /// The layer the view writes into.
    pub fn head(&self) -> LayerId {
        self.layers[0]
    }
}

/// Changes to commit together; built by a writer while it holds the core's write lock.
#[derive(Default, Debug)]
pub struct Txn {
    ops: Vec<Op>,
    /// Whether volumes (and so views) change.
    views_change: bool,
    /// Changes to layers as stored, past any view (merging and dropping layers).
    layer_ops: Vec<Op>,
    /// The highest id the transaction's records hold.
    max_id: Option<u64>,
}

impl Txn {
    pub fn put_inode(&mut self, ino: Ino, inode: &Inode) {
        self.ops.push(Op::Put(Table::Inodes, view_key(ino, &[]), present(encode(inode))));
    }

    pub fn delete_inode(&mut self, ino: Ino) {
        self.ops.push(Op::Delete(Table::Inodes, view_key(ino, &[])));
    }

    pub fn put_dirent(&mut self, parent: Ino, name: &[u8], entry: Dirent) {
        self.ops.push(Op::Put(Table::Dirents, view_key(parent, name), present(encode(&entry))));
        self.ops.push(Op::Put(Table::Cookies, view_key(parent, &entry.cookie.to_be_bytes()), present(name.to_vec())));
    }

    pub fn delete_dirent(&mut self, parent: Ino, name: &[u8], entry: Dirent) {
        self.ops.push(Op::Delete(Table::Dirents, view_key(parent, name)));
        self.ops.push(Op::Delete(Table::Cookies, view_key(parent, &entry.cookie.to_be_bytes())));
    }

    pub fn put_xattr(&mut self, ino: Ino, name: &[u8], value: &[u8]) {
        self.ops.push(Op::Put(Table::Xattrs, view_key(ino, name), present(value.to_vec())));
    }

    pub fn delete_xattr(&mut self, ino: Ino, name: &[u8]) {
        self.ops.push(Op::Delete(Table::Xattrs, view_key(ino, name)));
    }

    pub fn put_volume(&mut self, volume: &Volume) {
        self.views_change = true;
        self.ops.push(Op::Put(Table::Volumes, volume.name.as_bytes().to_vec(), encode(volume)));
    }

    pub fn delete_volume(&mut self, volume: &Volume) {
        self.views_change = true;
        self.ops.push(Op::Delete(Table::Volumes, volume.name.as_bytes().to_vec()));
        self.ops.push(Op::Delete(Table::Usage, volume.id.0.to_be_bytes().to_vec()));
    }

    pub fn put_usage(&mut self, volume: VolumeId, usage: &Usage) {
        self.ops.push(Op::Put(Table::Usage, volume.0.to_be_bytes().to_vec(), encode(usage)));
    }

    pub fn put_orphan(&mut self, ino: Ino) {
        self.ops.push(Op::Put(Table::Orphans, ino.0.to_be_bytes().to_vec(), Vec::new()));
    }

    pub fn delete_orphan(&mut self, ino: Ino) {
        self.ops.push(Op::Delete(Table::Orphans, ino.0.to_be_bytes().to_vec()));
    }

    /// Stores `record` (None: a tombstone) under `key` of `layer`, past any view.
    pub fn put_layer_record(&mut self, table: LayerTable, layer: LayerId, key: &[u8], record: Option<Vec<u8>>) {
        let value = record.map_or_else(|| vec![TOMBSTONE], present);
        self.layer_ops.push(Op::Put(table.table(), layer_key(layer, key), value));
    }

    /// Removes whatever `layer` holds under `key`, past any view.
    pub fn delete_layer_record(&mut self, table: LayerTable, layer: LayerId, key: &[u8]) {
        self.layer_ops.push(Op::Delete(table.table(), layer_key(layer, key)));
    }

    pub fn put_counter(&mut self, name: &str, value: u64) {
        self.ops.push(Op::Put(Table::Counters, name.as_bytes().to_vec(), value.to_be_bytes().to_vec()));
    }
}

/// How many entries one scan call brings back at most when a caller wants them all.
const SCAN_BATCH: usize = 1024;

impl Meta {
    pub fn new(store: Box<dyn KvStore>) -> Result<Self> {
        let mut meta = Meta {
            store,
            committed: AtomicU64::new(0),
            synced: AtomicU64::new(0),
            views: RwLock::default(),
            next_id: AtomicU64::new(0),
            ids_recorded: Mutex::new(0),
            commit_latency: Histogram::default(),
            sync_latency: Histogram::default(),
        };
        let next = meta.counter(NEXT_ID)?.max(FIRST_ID);
        meta.next_id = AtomicU64::new(next);
        meta.ids_recorded = Mutex::new(next);
        meta.load_views()?;
        Ok(meta)
    }

    pub fn open(dir: &Path) -> Result<Self> {
        Meta::new(Box::new(FjallStore::open(dir)?))
    }

    /// Transactions committed since the pool opened, with the time each took.
    pub fn commit_latency(&self) -> volfs_api::Latency {
        self.commit_latency.snapshot()
    }

    /// Syncs that made commits durable, with the time each took.
    pub fn sync_latency(&self) -> volfs_api::Latency {
        self.sync_latency.snapshot()
    }

    fn load_views(&self) -> Result<()> {
        let views = self.volumes()?.into_iter().map(|v| (v.view, View::of(&v))).collect();
        *self.views.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(views);
        Ok(())
    }

    pub fn view(&self, view: ViewId) -> Result<View> {
        self.views
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&view)
            .cloned()
            .ok_or_else(|| Error::NotFound(format!("view {} (its volume was deleted)", view.0)))
    }

    /// Every view and its layers.
    pub fn views(&self) -> Arc<HashMap<ViewId, View>> {
        self.views.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// A fresh id, for records `txn` writes. An id taken but never committed names nothing
    /// that outlives a restart.
    pub fn alloc_id(&self, txn: &mut Txn) -> u64 {
        let id = self.next_id.fetch_add(1, Ordering::SeqCst);
        txn.max_id = txn.max_id.max(Some(id));
        id
    }

    pub fn commit(&self, txn: Txn) -> Result<()> {
        if txn.ops.is_empty() && txn.layer_ops.is_empty() {
            return Ok(());
        }
        let mut views = self.views();
        if txn.views_change {
            // Records may be written through a view this transaction creates.
            let mut with_new = (*views).clone();
            for op in &txn.ops {
                if let Op::Put(Table::Volumes, _, v) = op {
                    let v = decode_volume(v)?;
                    with_new.insert(v.view, View::of(&v));
                }
            }
            views = Arc::new(with_new);
        }
        let mut ops = Vec::with_capacity(txn.ops.len());
        for op in txn.ops {
            ops.push(match op {
                Op::Put(t, k, v) if t.is_layered() => Op::Put(t, Self::stored_key(&views, &k)?.0, v),
                Op::Delete(t, k) if t.is_layered() => match Self::stored_key(&views, &k)? {
                    // Older layers may hold the key: hide it there.
                    (key, true) => Op::Put(t, key, vec![TOMBSTONE]),
                    (key, false) => Op::Delete(t, key),
                },
                other => other,
            });
        }
        ops.extend(txn.layer_ops);
        // A restart resumes the id sequence past every id a committed record holds.
        let recorded = txn.max_id.map(|id| (id + 1, self.ids_recorded.lock().unwrap_or_else(|p| p.into_inner())));
        if let Some((next, recorded)) = &recorded {
            if next > &**recorded {
                ops.push(Op::Put(Table::Counters, NEXT_ID.as_bytes().to_vec(), next.to_be_bytes().to_vec()));
            }
        }
        let start = Instant::now();
        self.store.commit(ops)?;
        self.commit_latency.observe(start.elapsed());
        if let Some((next, mut recorded)) = recorded {
            *recorded = next.max(*recorded);
        }
        self.committed.fetch_add(1, Ordering::SeqCst);
        if txn.views_change {
            self.load_views()?;
        }
        Ok(())
    }

    /// Where a transaction's record of a layered table goes (its view's newest layer), and
    /// whether the view has older layers.
    fn stored_key(views: &HashMap<ViewId, View>, view_key: &[u8]) -> Result<(Vec<u8>, bool)> {
        let view = ViewId(u32::from_be_bytes(view_key[..4].try_into().expect("4-byte view")));
        let v = views.get(&view).ok_or_else(|| Error::NotFound(format!("view {}", view.0)))?;
        if v.read_only {
            return Err(Error::ReadOnly(format!("view {} is a snapshot's", view.0)));
        }
        Ok((layer_key(v.head(), &view_key[4..]), v.layers.len() > 1))
    }

    /// Makes every transaction committed so far durable against power loss.
    pub fn sync(&self) -> Result<()> {
        let committed = self.committed.load(Ordering::SeqCst);
        if self.synced.load(Ordering::SeqCst) >= committed {
            return Ok(());
        }
        let start = Instant::now();
        self.store.sync()?;
        self.sync_latency.observe(start.elapsed());
        self.synced.fetch_max(committed, Ordering::SeqCst);
        Ok(())
    }

    /// The record for `rest` of inode `ino` in a layered table, as `ino`'s view sees it.
    fn get_layered(&self, table: Table, ino: Ino, rest: &[u8]) -> Result<Option<Vec<u8>>> {
        let view = self.view(ino.view())?;
        let key = view_key(ino, rest);
        for &layer in view.layers.iter() {
            if let Some(stored) = self.store.get(table, &layer_key(layer, &key[4..]))? {
                return Ok(unwrap_present(stored));
            }
        }
        Ok(None)
    }

    /// The records of inode `ino` in a layered table whose rest of key is at least `from`, in
    /// key order, as `ino`'s view sees them: at least one if any exist, at most about `limit`.
    fn scan_layered(&self, table: Table, ino: Ino, from: &[u8], limit: usize) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let view = self.view(ino.view())?;
        let inode_key = ino.local().to_be_bytes();
        let mut from = from.to_vec();
        loop {
            // The newest layer's record of a key wins; a layer that filled its batch may hold
            // more records, so only keys up to its last are settled.
            let mut merged: std::collections::BTreeMap<Vec<u8>, Option<Vec<u8>>> = Default::default();
            let mut settled_to: Option<Vec<u8>> = None;
            for &layer in view.layers.iter() {
                let prefix = layer_key(layer, &inode_key);
                let mut start = prefix.clone();
                start.extend_from_slice(&from);
                let batch = self.store.scan(table, &prefix, &start, limit)?;
                if batch.len() == limit {
                    let last = batch[batch.len() - 1].0[prefix.len()..].to_vec();
                    if settled_to.as_ref().is_none_or(|s| last < *s) {
                        settled_to = Some(last);
                    }
                }
                for (k, v) in batch {
                    merged.entry(k[prefix.len()..].to_vec()).or_insert_with(|| unwrap_present(v));
                }
            }
            let out: Vec<(Vec<u8>, Vec<u8>)> = merged
                .into_iter()
                .take_while(|(k, _)| settled_to.as_ref().is_none_or(|s| k <= s))
                .filter_map(|(k, v)| v.map(|v| (k, v)))
                .collect();
            match settled_to {
                // Everything up to the settled key was hidden: look further.
                Some(mut last) if out.is_empty() => {
                    last.push(0);
                    from = last;
                }
                _ => return Ok(out),
            }
        }
    }

    pub fn inode(&self, ino: Ino) -> Result<Option<Inode>> {
        let Some(value) = self.get_layered(Table::Inodes, ino, &[])? else { return Ok(None) };
        Ok(Some(self.seen_through(ino, decode(&value)?)?))
    }

    /// An inode record as the view of `ino` sees it: its volume and parent are the view's.
    fn seen_through(&self, ino: Ino, mut inode: Inode) -> Result<Inode> {
        inode.volume = self.view(ino.view())?.volume;
        inode.parent = inode.parent.in_view(ino.view());
        Ok(inode)
    }

    pub fn dirent(&self, parent: Ino, name: &[u8]) -> Result<Option<Dirent>> {
        let Some(value) = self.get_layered(Table::Dirents, parent, name)? else { return Ok(None) };
        let mut entry: Dirent = decode(&value)?;
        entry.ino = entry.ino.in_view(parent.view());
        Ok(Some(entry))
    }

    /// Entries of `dir` whose cookie is greater than `after`, in cookie order, at most `limit`.
    pub fn entries_after(&self, dir: Ino, after: u64, limit: usize) -> Result<Vec<(Vec<u8>, Dirent)>> {
        let from = after.saturating_add(1).to_be_bytes();
        let mut out = Vec::new();
        for (_, name) in self.scan_layered(Table::Cookies, dir, &from, limit)?.into_iter().take(limit) {
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
        self.get_layered(Table::Xattrs, ino, name)
    }

    pub fn xattr_names(&self, ino: Ino) -> Result<Vec<Vec<u8>>> {
        let mut names: Vec<Vec<u8>> = Vec::new();
        loop {
            let from = names.last().map_or_else(Vec::new, |n| {
                let mut k = n.clone();
                k.push(0);
                k
            });
            let batch = self.scan_layered(Table::Xattrs, ino, &from, SCAN_BATCH)?;
            let done = batch.len() < SCAN_BATCH;
            names.extend(batch.into_iter().map(|(name, _)| name));
            if done {
                return Ok(names);
            }
        }
    }

    pub fn volume(&self, name: &str) -> Result<Option<Volume>> {
        self.store.get(Table::Volumes, name.as_bytes())?.map(|v| decode_volume(&v)).transpose()
    }

    pub fn volumes(&self) -> Result<Vec<Volume>> {
        self.store.scan(Table::Volumes, &[], &[], usize::MAX)?.iter().map(|(_, v)| decode_volume(v)).collect()
    }

    pub fn usage(&self, volume: VolumeId) -> Result<Usage> {
        Ok(self.store.get(Table::Usage, &volume.0.to_be_bytes())?.map(|v| decode(&v)).transpose()?.unwrap_or_default())
    }

    pub fn orphans(&self) -> Result<Vec<Ino>> {
        Ok(self.store.scan(Table::Orphans, &[], &[], usize::MAX)?.iter().map(|(k, _)| Ino(u64_at(k))).collect())
    }

    /// Every inode every view sees, for fsck and recovery.
    pub fn all_inodes(&self) -> Result<Vec<(Ino, Inode)>> {
        let mut out = Vec::new();
        for (&view, v) in self.views().iter() {
            let mut seen: std::collections::BTreeMap<u64, Option<Vec<u8>>> = Default::default();
            for &layer in v.layers.iter() {
                for (k, value) in self.store.scan(Table::Inodes, &layer.to_be_bytes(), &[], usize::MAX)? {
                    seen.entry(u64_at(&k[8..])).or_insert_with(|| unwrap_present(value));
                }
            }
            for (local, value) in seen {
                if let Some(value) = value {
                    let ino = Ino::new(view, local);
                    out.push((ino, self.seen_through(ino, decode(&value)?)?));
                }
            }
        }
        Ok(out)
    }

    /// Every record `layer` holds in `table`, as stored: key within the layer, and the record
    /// (None: a tombstone).
    pub fn layer_records(&self, table: LayerTable, layer: LayerId) -> Result<Vec<LayerRecord>> {
        let prefix = layer.to_be_bytes();
        Ok(self
            .store
            .scan(table.table(), &prefix, &prefix, usize::MAX)?
            .into_iter()
            .map(|(k, v)| (k[8..].to_vec(), unwrap_present(v)))
            .collect())
    }

    /// What `layer` holds under `key` of `table`: nothing, a tombstone (Some(None)) or a record.
    pub fn layer_record(&self, table: LayerTable, layer: LayerId, key: &[u8]) -> Result<Option<Option<Vec<u8>>>> {
        Ok(self.store.get(table.table(), &layer_key(layer, key))?.map(unwrap_present))
    }

    /// Every layer that holds any record, for fsck.
    pub fn layers_with_records(&self) -> Result<std::collections::BTreeSet<LayerId>> {
        let mut layers = std::collections::BTreeSet::new();
        for table in LayerTable::ALL {
            let mut from = Vec::new();
            // One probe per layer: jump past each layer found.
            while let Some((k, _)) = self.store.scan(table.table(), &[], &from, 1)?.pop() {
                let layer = u64_at(&k);
                layers.insert(layer);
                match layer.checked_add(1) {
                    Some(next) => from = next.to_be_bytes().to_vec(),
                    None => break,
                }
            }
        }
        Ok(layers)
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
    fn fjall_scans_stay_within_their_prefix_past_deleted_keys() {
        assert_eq!(prefix_end(b"ab"), Some(b"ac".to_vec()));
        assert_eq!(prefix_end(&[1, 0xff]), Some(vec![2]));
        assert_eq!(prefix_end(&[0xff, 0xff]), None);
        assert_eq!(prefix_end(b""), None);
        let dir = tempfile::tempdir().unwrap();
        let store = FjallStore::open(dir.path()).unwrap();
        let put = |k: &[u8]| Op::Put(Table::Xattrs, k.to_vec(), k.to_vec());
        let keys: [&[u8]; 6] = [&[1], &[1, 0], &[1, 0xff], &[2], &[0xff], &[0xff, 0xff]];
        store.commit(keys.into_iter().map(put).collect()).unwrap();
        // Deleted keys between two prefixes, as deleted inodes leave them.
        store.commit((0..100u8).map(|i| put(&[1, 0xff, i])).collect()).unwrap();
        store.commit((0..100u8).map(|i| Op::Delete(Table::Xattrs, vec![1, 0xff, i])).collect()).unwrap();
        let scan = |prefix: &[u8], from: &[u8]| -> Vec<Vec<u8>> {
            store.scan(Table::Xattrs, prefix, from, 100).unwrap().into_iter().map(|(k, _)| k).collect()
        };
        assert_eq!(scan(&[1], &[]), [vec![1], vec![1, 0], vec![1, 0xff]]);
        assert_eq!(scan(&[1], &[1, 0, 0]), [vec![1, 0xff]]);
        assert_eq!(scan(&[1, 0xff], &[]), [vec![1, 0xff]]);
        assert_eq!(scan(&[0xff], &[]), [vec![0xff], vec![0xff, 0xff]]);
        assert_eq!(scan(&[1], &[3]), Vec::<Vec<u8>>::new());
        assert_eq!(scan(&[], &[2]).len(), 3);
        assert!(store.scan(Table::Inodes, &[1], &[], 100).unwrap().is_empty());
    }

    #[test]
    fn timestamps_read_as_utc_calendar_dates() {
        let utc = |secs| Timestamp { secs, nanos: 0 }.utc();
        assert_eq!(utc(0), [1970, 1, 1, 0, 0, 0]);
        assert_eq!(utc(-1), [1969, 12, 31, 23, 59, 59]);
        assert_eq!(utc(951_782_400), [2000, 2, 29, 0, 0, 0]);
        assert_eq!(utc(1_700_000_000), [2023, 11, 14, 22, 13, 20]);
    }

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

    fn volume(name: &str, view: u32, layers: Vec<LayerId>) -> Volume {
        Volume {
            id: VolumeId(u64::from(view)),
            name: name.into(),
            root: Ino::new(ViewId(view), 1),
            capacity: 0,
            created: Timestamp::now(),
            view: ViewId(view),
            layers,
            snapshot_of: name.split_once('@').map(|(v, _)| v.to_string()),
            inodes: None,
        }
    }

    #[test]
    fn volume_records_from_before_inode_limits_read_as_without_one() {
        let v = Volume { capacity: 1 << 30, ..volume("old", 3, vec![7]) };
        let old = VolumeWithoutInodes {
            id: v.id,
            name: v.name.clone(),
            root: v.root,
            capacity: v.capacity,
            created: v.created,
            view: v.view,
            layers: v.layers.clone(),
            snapshot_of: None,
        };
        assert_eq!(decode_volume(&encode(&old)).unwrap(), v);
        assert_eq!(v.inode_limit(), Some(65_536), "one per 16 KiB");
        let given = Volume { inodes: Some(10), ..v };
        assert_eq!(decode_volume(&encode(&given)).unwrap(), given);
        assert_eq!(volume("none", 4, vec![8]).inode_limit(), None);
    }

    fn commit(meta: &Meta, build: impl FnOnce(&mut Txn)) {
        let mut txn = Txn::default();
        build(&mut txn);
        meta.commit(txn).unwrap();
    }

    /// Every name of `dir`, read in pages of `page` entries.
    fn names_paged(meta: &Meta, dir: Ino, page: usize) -> Vec<String> {
        let mut out: Vec<(Vec<u8>, Dirent)> = Vec::new();
        loop {
            let after = out.last().map_or(2, |(_, e)| e.cookie);
            let batch = meta.entries_after(dir, after, page).unwrap();
            if batch.is_empty() {
                return out.into_iter().map(|(n, _)| String::from_utf8(n).unwrap()).collect();
            }
            out.extend(batch);
        }
    }

    #[test]
    fn a_restart_never_hands_out_a_committed_id_whatever_order_transactions_commit_in() {
        let dir = tempfile::tempdir().unwrap();
        let inode = |i: u64| Ino::new(ViewId(1), i);
        let (early, late) = {
            let meta = Meta::open(dir.path()).unwrap();
            // A copy-up takes its id outside the write lock, then commits after a create
            // that took a later id.
            let mut slow = Txn::default();
            let early = meta.alloc_id(&mut slow);
            let mut fast = Txn::default();
            let late = meta.alloc_id(&mut fast);
            fast.put_orphan(inode(late));
            meta.commit(fast).unwrap();
            slow.put_orphan(inode(early));
            meta.commit(slow).unwrap();
            // Taken and dropped: names nothing, so a restart may hand it out again.
            meta.alloc_id(&mut Txn::default());
            meta.sync().unwrap();
            (early, late)
        };
        assert!(early < late);
        let meta = Meta::open(dir.path()).unwrap();
        assert_eq!(meta.orphans().unwrap().len(), 2);
        assert_eq!(meta.alloc_id(&mut Txn::default()), late + 1);
    }

    #[test]
    fn readdir_order_survives_removals_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let parent = Ino::new(ViewId(1), 7);
        {
            let meta = Meta::open(dir.path()).unwrap();
            commit(&meta, |t| t.put_volume(&volume("v", 1, vec![50])));
            commit(&meta, |t| {
                for (i, name) in ["b", "a", "c"].iter().enumerate() {
                    let entry =
                        Dirent { ino: Ino::new(ViewId(1), 100 + i as u64), kind: Kind::File, cookie: 3 + i as u64 };
                    t.put_dirent(parent, name.as_bytes(), entry);
                }
            });
            let a = meta.dirent(parent, b"a").unwrap().unwrap();
            commit(&meta, |t| t.delete_dirent(parent, b"a", a));
            meta.sync().unwrap();
        }
        let meta = Meta::open(dir.path()).unwrap();
        assert_eq!(names_paged(&meta, parent, 1024), ["b", "c"]);
        let after_b = meta.entries_after(parent, 3, 10).unwrap();
        assert_eq!(after_b.len(), 1);
        assert_eq!(after_b[0].0, b"c");
    }

    #[test]
    fn a_view_reads_its_layers_newest_first_and_tombstones_hide_older_records() {
        let tmp = tempfile::tempdir().unwrap();
        let meta = Meta::open(tmp.path()).unwrap();
        let (vol, snap) = (ViewId(1), ViewId(2));
        let dir = Ino::new(vol, 7);
        let name = |i: u64| format!("n{i:02}");
        commit(&meta, |t| t.put_volume(&volume("v", 1, vec![10])));
        commit(&meta, |t| {
            for i in 0..26 {
                t.put_dirent(
                    dir,
                    name(i).as_bytes(),
                    Dirent { ino: Ino::new(vol, 100 + i), kind: Kind::File, cookie: 3 + i },
                );
            }
            t.put_xattr(dir, b"user.k", b"old");
        });
        // Freeze layer 10 for a snapshot; the volume goes on in layer 20.
        commit(&meta, |t| {
            t.put_volume(&volume("v@s", 2, vec![10]));
            t.put_volume(&volume("v", 1, vec![20, 10]));
        });
        commit(&meta, |t| {
            for i in (0..26).step_by(2) {
                let e = meta.dirent(dir, name(i).as_bytes()).unwrap().unwrap();
                t.delete_dirent(dir, name(i).as_bytes(), e);
            }
            t.put_dirent(dir, b"new", Dirent { ino: Ino::new(vol, 200), kind: Kind::File, cookie: 29 });
            t.put_xattr(dir, b"user.k", b"new");
            t.put_xattr(dir, b"user.only-new", b"x");
        });
        let odd: Vec<String> = (1..26).step_by(2).map(name).chain(["new".to_string()]).collect();
        let all: Vec<String> = (0..26).map(name).collect();
        for page in [1, 2, 3, 1024] {
            assert_eq!(names_paged(&meta, dir, page), odd, "volume, pages of {page}");
            assert_eq!(names_paged(&meta, dir.in_view(snap), page), all, "snapshot, pages of {page}");
        }
        assert_eq!(meta.dirent(dir.in_view(snap), b"n03").unwrap().unwrap().ino, Ino::new(snap, 103));
        assert!(meta.dirent(dir.in_view(snap), b"new").unwrap().is_none());
        assert_eq!(meta.xattr(dir, b"user.k").unwrap().unwrap(), b"new");
        assert_eq!(meta.xattr(dir.in_view(snap), b"user.k").unwrap().unwrap(), b"old");
        assert_eq!(meta.xattr_names(dir).unwrap(), [b"user.k".to_vec(), b"user.only-new".to_vec()]);
        assert_eq!(meta.xattr_names(dir.in_view(snap)).unwrap(), [b"user.k".to_vec()]);
    }
}
