//! A pool: the directory on the node that holds every volume. It owns the lock that makes one
//! daemon its only writer, the metadata engine and the data store, recovery after an unclean
//! stop, and the volume table.
//!
//! Layout: `volfs-pool` (format marker), `lock` (flock, holder's pid), `clean` (present only
//! after an orderly close), `meta/` (metadata engine), `data/` (data files).

use std::collections::{HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::core::{Core, DataFile};
use crate::data::DataStore;
use crate::error::{Error, Result};
use crate::meta::{DataId, Ino, Inode, Kind, KvStore, Meta, Timestamp, Txn, Under, Usage, Volume, VolumeId};
use crate::names::VolumeName;
pub use volfs_api::{SnapshotInfo, VolumeInfo};

mod snapshots;

pub use snapshots::{parse_snapshot_name, Source};

const FORMAT_FILE: &str = "volfs-pool";
const FORMAT: &str = "volfs pool format 2\n";
const CLEAN_MARK: &str = "clean";

/// Whether opening may create a pool that does not exist yet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpenMode {
    /// Create the pool when the directory is missing or empty.
    CreateIfMissing,
    /// The pool must exist already.
    Existing,
}

pub struct Pool {
    dir: PathBuf,
    core: Core,
    lock: File,
    /// Whether the pool is known consistent (recovered, or closed cleanly before), so that
    /// closing it may mark it clean. An unrecovered pool after an unclean stop stays unclean.
    consistent: bool,
    /// Whether opening it recovered from an unclean stop.
    recovered: bool,
}

impl Pool {
    /// Opens the pool at `dir`, taking its lock. After an unclean stop, reclaims what
    /// interrupted operations left behind (the pool is consistent either way).
    pub fn open(dir: &Path, mode: OpenMode) -> Result<Pool> {
        Pool::open_with(dir, mode, None)
    }

    /// `open`, with the metadata in `store` instead of the pool's own engine (`meta/`): tests
    /// use an in-memory store, or one that crashes at a chosen commit.
    pub fn open_with(dir: &Path, mode: OpenMode, store: Option<Box<dyn KvStore>>) -> Result<Pool> {
        let mut pool = Pool::unrecovered(dir, mode, store)?;
        let was_clean = fs::remove_file(pool.dir.join(CLEAN_MARK)).is_ok();
        let _w = pool.core.lock();
        // Nothing is open right after a start, so every orphan inode can go.
        let orphans = pool.core.meta().orphans()?;
        let data = if was_clean { Vec::new() } else { pool.unreferenced_data()? };
        pool.reclaim(&data, &orphans)?;
        if !was_clean {
            pool.core.recount_space()?;
        }
        if !orphans.is_empty() || !data.is_empty() {
            tracing::info!(
                pool = %pool.dir.display(),
                inodes = orphans.len(),
                data_files = data.len(),
                "reclaimed leftovers of interrupted operations"
            );
        }
        drop(_w);
        pool.consistent = true;
        pool.recovered = !was_clean;
        Ok(pool)
    }

    /// Opens the pool without any recovery, as fsck wants to see it.
    pub fn open_unrecovered(dir: &Path, mode: OpenMode) -> Result<Pool> {
        Pool::unrecovered(dir, mode, None)
    }

    fn unrecovered(dir: &Path, mode: OpenMode, store: Option<Box<dyn KvStore>>) -> Result<Pool> {
        prepare_dir(dir, mode)?;
        make_private(dir)?;
        let lock = take_lock(dir)?;
        let meta = match store {
            Some(store) => Meta::new(store)?,
            None => Meta::open(&dir.join("meta"))?,
        };
        let data = DataStore::at(&dir.join("data"))?;
        let core = Core::new(dir, meta, data)?;
        let consistent = dir.join(CLEAN_MARK).exists();
        Ok(Pool { dir: dir.to_path_buf(), core, lock, consistent, recovered: false })
    }

    /// Whether the pool was closed in order last time (and has not been opened for serving
    /// since): its usage records are then exact.
    pub fn closed_cleanly(&self) -> bool {
        self.dir.join(CLEAN_MARK).exists()
    }

    /// Whether this open recovered from an unclean stop (a crash or SIGKILL).
    pub fn recovered(&self) -> bool {
        self.recovered
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn core(&self) -> &Core {
        &self.core
    }

    /// Removes data files no inode refers to and orphan inodes no one has open. The caller
    /// holds the core's write lock.
    pub(crate) fn reclaim(&self, data: &[DataId], orphans: &[Ino]) -> Result<()> {
        let meta = self.core.meta();
        let mut txn = Txn::default();
        let mut freed: Vec<DataFile> = Vec::new();
        let mut usage: HashMap<VolumeId, Usage> = HashMap::new();
        for &ino in orphans {
            // A snapshot keeps what was open at its cut until it is deleted.
            if meta.view(ino.view()).is_ok_and(|v| v.read_only) {
                continue;
            }
            txn.delete_orphan(ino);
            let Some(inode) = meta.inode(ino).or_else(|e| match e {
                Error::NotFound(_) => Ok(None),
                e => Err(e),
            })?
            else {
                continue;
            };
            if inode.nlink > 0 {
                continue;
            }
            txn.delete_inode(ino);
            for name in meta.xattr_names(ino)? {
                txn.delete_xattr(ino, &name);
            }
            let u = match usage.entry(inode.volume) {
                std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::hash_map::Entry::Vacant(e) => e.insert(meta.usage(inode.volume)?),
            };
            u.inodes = u.inodes.saturating_sub(1);
            let shared = inode.data_layer != meta.view(ino.view())?.head();
            let under = inode.under.clone();
            freed.extend(inode.data.map(|id| DataFile { volume: inode.volume, ino, id, under, shared }));
        }
        for (volume, u) in &usage {
            txn.put_usage(*volume, u);
        }
        meta.commit(txn)?;
        self.core.remove_data(freed);
        for &id in data {
            self.core.data().remove(id)?;
        }
        meta.sync()
    }

    /// Data files no inode refers to: left when a create or unlink was cut short. The caller
    /// holds the core's write lock, so no create is half done.
    pub fn unreferenced_data(&self) -> Result<Vec<DataId>> {
        let referenced: HashSet<_> =
            self.core.meta().all_inodes()?.iter().flat_map(|(_, i)| i.data_files().collect::<Vec<_>>()).collect();
        Ok(self.core.data().all()?.into_iter().filter(|id| !referenced.contains(id)).collect())
    }

    /// Creates an empty volume with `capacity` bytes (0: bounded by the pool) and at most
    /// `inodes` inodes (None: `Volume::inode_limit`'s default).
    pub fn create_volume(&self, name: &VolumeName, capacity: u64, inodes: Option<u64>) -> Result<Volume> {
        let core = &self.core;
        let _w = core.lock();
        if core.meta().volume(name.as_str())?.is_some() {
            return Err(Error::Exists(format!("volume {name}")));
        }
        let mut txn = Txn::default();
        let id = VolumeId(core.meta().alloc_id(&mut txn));
        let view = core.alloc_view(&mut txn)?;
        let layer = core.meta().alloc_id(&mut txn);
        let root = Ino::new(view, core.meta().alloc_id(&mut txn));
        let now = Timestamp::now();
        let inode = Inode {
            volume: id,
            kind: Kind::Dir,
            perm: 0o777,
            uid: 0,
            gid: 0,
            nlink: 2,
            rdev: 0,
            atime: now,
            mtime: now,
            ctime: now,
            crtime: now,
            parent: root,
            data: None,
            data_layer: 0,
            under: Under::default(),
            target: Vec::new(),
            next_cookie: 3,
            entries: 0,
        };
        let volume = Volume {
            id,
            name: name.to_string(),
            root,
            capacity,
            created: now,
            view,
            layers: vec![layer],
            snapshot_of: None,
            inodes,
        };
        txn.put_volume(&volume);
        txn.put_inode(root, &inode);
        txn.put_usage(id, &Usage { inodes: 1, bytes: 0 });
        core.meta().commit(txn)?;
        core.set_limits(&volume);
        Ok(volume)
    }

    pub fn volume(&self, name: &str) -> Result<Volume> {
        self.core.meta().volume(name)?.ok_or_else(|| Error::NotFound(format!("volume {name}")))
    }

    pub fn volume_info(&self, volume: &Volume) -> Result<VolumeInfo> {
        let usage = self.core.meta().usage(volume.id)?;
        let df = self.core.statfs(volume)?;
        Ok(VolumeInfo {
            name: volume.name.clone(),
            id: volume.id.0,
            capacity: (volume.capacity > 0).then_some(volume.capacity),
            used_bytes: self.core.space_of(volume.id)?.used,
            available_bytes: df.bavail * u64::from(df.bsize),
            inodes: usage.inodes,
            inodes_free: df.ffree,
            inode_limit: volume.inode_limit(),
            created_unix: volume.created.secs,
            mounts: Vec::new(),
        })
    }

    /// Every volume (not the snapshots).
    pub fn volumes(&self) -> Result<Vec<VolumeInfo>> {
        self.core.meta().volumes()?.iter().filter(|v| !v.is_snapshot()).map(|v| self.volume_info(v)).collect()
    }

    /// Calls `visit(parent, name, ino, inode)` for every inode below `root` (each hard-linked
    /// inode once per name), depth first.
    pub fn walk(&self, root: Ino, mut visit: impl FnMut(Ino, &[u8], Ino, &Inode)) -> Result<()> {
        let mut stack = vec![root];
        while let Some(dir) = stack.pop() {
            for (name, entry) in self.core.meta().all_entries(dir)? {
                let Some(inode) = self.core.meta().inode(entry.ino)? else { continue };
                if inode.kind == Kind::Dir {
                    stack.push(entry.ino);
                }
                visit(dir, &name, entry.ino, &inode);
            }
        }
        Ok(())
    }

    /// Sets a volume's capacity; mounts report it at once. Refuses a capacity below what the
    /// volume's files occupy, and a first capacity while the kernel writes files of the
    /// volume directly.
    pub fn resize_volume(&self, name: &str, capacity: u64) -> Result<Volume> {
        // No file is opened for passthrough meanwhile (opens decide under the other side).
        let (_cutting, _w) = (self.core.cutting(), self.core.lock());
        let mut volume = self.volume(name)?;
        if volume.is_snapshot() {
            return Err(Error::Invalid(format!("{name} is a snapshot, which cannot be resized")));
        }
        if volume.capacity == 0 && self.core.has_passthrough_files(volume.id) {
            // The kernel writes those files directly: nothing could hold them to a capacity.
            return Err(Error::Busy(format!(
                "volume {name} has files open with passthrough I/O (the kernel changes them directly); \
                 close them before giving it a capacity"
            )));
        }
        let used = self.volume_info(&volume)?.used_bytes;
        if capacity < used {
            return Err(Error::Invalid(format!(
                "volume {name} holds {} ({used} bytes); a capacity of {capacity} bytes is less",
                crate::quantity::HumanBytes(used)
            )));
        }
        volume.capacity = capacity;
        check_inodes_fit(&volume, self.core.meta().usage(volume.id)?.inodes)?;
        let mut txn = Txn::default();
        txn.put_volume(&volume);
        self.core.meta().commit(txn)?;
        self.core.set_limits(&volume);
        Ok(volume)
    }

    /// Deletes a volume and everything in it that no snapshot or clone shares; its snapshots
    /// stay. The caller makes sure it is not mounted.
    pub fn delete_volume(&self, name: &str) -> Result<()> {
        let (_cutting, _w) = (self.core.cutting(), self.core.lock());
        let volume = self.volume(name)?;
        if volume.is_snapshot() {
            return Err(Error::Invalid(format!("{name} is a snapshot; delete it with `volfs snapshot delete`")));
        }
        self.drop_view(&volume)
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        // An orderly close: everything durable, and the next open may skip the data scan.
        let recorded =
            if self.consistent { self.core.persist_overlays().and_then(|()| self.core.record_space()) } else { Ok(()) };
        match recorded.and_then(|()| self.core.sync_metadata()) {
            Ok(()) if !self.consistent => {}
            Ok(()) => {
                if let Err(e) = File::create(self.dir.join(CLEAN_MARK)).and_then(|f| f.sync_all()) {
                    tracing::warn!(error = %e, "could not mark the pool clean");
                }
            }
            Err(e) => tracing::error!(error = %e, "could not sync metadata on close"),
        }
        // SAFETY: plain syscall on our own descriptor; closing it would release the lock too.
        unsafe { libc::flock(self.lock.as_raw_fd(), libc::LOCK_UN) };
    }
}

fn prepare_dir(dir: &Path, mode: OpenMode) -> Result<()> {
    let format = dir.join(FORMAT_FILE);
    if format.exists() {
        let text = fs::read_to_string(&format)?;
        if text != FORMAT {
            return Err(Error::Invalid(format!("{} holds an unknown pool format: {:?}", dir.display(), text.trim())));
        }
        return Ok(());
    }
    let missing = !dir.exists();
    if mode == OpenMode::Existing {
        return Err(Error::NotFound(if missing {
            format!("no volfs pool at {} (the directory does not exist)", dir.display())
        } else {
            format!("{} is not a volfs pool", dir.display())
        }));
    }
    if !missing && fs::read_dir(dir)?.next().is_some() {
        return Err(Error::Invalid(format!("{} is not empty and is not a volfs pool", dir.display())));
    }
    if let Some(parent) = dir.parent() {
        fs::create_dir_all(parent)?;
    }
    if missing {
        fs::DirBuilder::new().mode(0o700).create(dir)?;
    }
    let tmp = dir.join(".volfs-pool.tmp");
    let mut f = File::create(&tmp)?;
    f.write_all(FORMAT.as_bytes())?;
    f.sync_all()?;
    fs::rename(&tmp, &format)?;
    // A brand-new pool has nothing to recover.
    File::create(dir.join(CLEAN_MARK))?;
    File::open(dir)?.sync_all()?;
    Ok(())
}

/// Only root may enter the pool: names, xattrs and symlink targets of every volume live in its
/// metadata. A pool found open to others is closed, with a warning.
fn make_private(dir: &Path) -> Result<()> {
    let mode = fs::metadata(dir)?.permissions().mode() & 0o7777;
    if mode != 0o700 {
        tracing::warn!(pool = %dir.display(), mode = format!("{mode:o}"), "the pool was open to other users; now 0700");
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

/// Takes the pool's exclusive lock, or names the daemon that holds it.
fn take_lock(dir: &Path) -> Result<File> {
    let mut lock = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(dir.join("lock"))?;
    // SAFETY: plain syscall on our own descriptor.
    if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let mut holder = String::new();
        let _ = lock.read_to_string(&mut holder);
        return Err(Error::Busy(format!(
            "pool {} is in use by another volfs process (pid {})",
            dir.display(),
            holder.trim()
        )));
    }
    lock.set_len(0)?;
    lock.rewind()?;
    writeln!(lock, "{}", std::process::id())?;
    Ok(lock)
}

/// Refuses limits that would leave a volume holding more inodes than it may: a capacity whose
/// default inode limit (one per 16 KiB) is below what it holds, or an explicit limit below it.
fn check_inodes_fit(volume: &Volume, held: u64) -> Result<()> {
    match volume.inode_limit() {
        Some(limit) if limit < held => Err(Error::Invalid(format!(
            "volume {} holds {held} inodes; {} allows only {limit}",
            volume.name,
            match volume.inodes {
                Some(_) => "its inode limit".to_string(),
                None => format!("a capacity of {} bytes (one inode per 16 KiB)", volume.capacity),
            }
        ))),
        _ => Ok(()),
    }
}
