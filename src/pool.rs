//! A pool: the directory on the node that holds every volume. It owns the lock that makes one
//! daemon its only writer, the metadata engine and the data store, recovery after an unclean
//! stop, and the volume table.
//!
//! Layout: `volfs-pool` (format marker), `lock` (flock, holder's pid), `clean` (present only
//! after an orderly close), `meta/` (metadata engine), `data/` (data files).

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rustix::fs::FlockOperation;

use crate::core::Core;
use crate::data::DataStore;
use crate::error::{Error, Result};
use crate::meta::{KvStore, Meta};
pub use volfs_api::{SnapshotInfo, VolumeInfo};

pub use crate::core::{parse_snapshot_name, Source};

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
        let data = if was_clean { Vec::new() } else { pool.core.unreferenced_data()? };
        pool.core.reclaim(&data, &orphans)?;
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
}

/// An open pool is its core (volumes, snapshots, files) behind the pool's lock.
impl std::ops::Deref for Pool {
    type Target = Core;

    fn deref(&self) -> &Core {
        &self.core
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
        // Closing the descriptor would release the lock too; this says so at once.
        let _ = rustix::fs::flock(&self.lock, FlockOperation::Unlock);
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
    if rustix::fs::flock(&lock, FlockOperation::NonBlockingLockExclusive).is_err() {
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
