//! The data store: one backing file per file content, named by its `DataId`, never by a user
//! path, so the kernel can be handed the file for passthrough I/O.

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::meta::DataId;

pub mod blocks;

pub struct DataStore {
    dir: PathBuf,
    /// Directories with entries created since they were last synced.
    unsynced_dirs: Mutex<HashSet<PathBuf>>,
}

impl DataStore {
    pub fn at(dir: &Path) -> io::Result<Self> {
        fs::create_dir_all(dir)?;
        spread_subdirectories(dir);
        Ok(DataStore { dir: dir.to_path_buf(), unsynced_dirs: Mutex::default() })
    }

    /// Data files made one after another share a directory (4096 ids each), which keeps
    /// their inodes together in the pool's filesystem.
    fn shard(&self, id: DataId) -> PathBuf {
        self.dir.join(format!("{:012x}", id.0 >> 12))
    }

    pub fn path(&self, id: DataId) -> PathBuf {
        self.shard(id).join(format!("{:016x}", id.0))
    }

    /// Creates an empty data file; an existing one (left by an interrupted create) is emptied.
    pub fn create(&self, id: DataId) -> io::Result<File> {
        let open =
            || OpenOptions::new().read(true).write(true).create(true).truncate(true).mode(0o600).open(self.path(id));
        let file = match open() {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::create_dir_all(self.shard(id))?;
                self.unsynced_dirs().insert(self.dir.clone());
                open()
            }
            other => other,
        }?;
        self.unsynced_dirs().insert(self.shard(id));
        Ok(file)
    }

    fn unsynced_dirs(&self) -> std::sync::MutexGuard<'_, HashSet<PathBuf>> {
        self.unsynced_dirs.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Opens a data file for reading and writing; the kernel has already checked the caller's
    /// access.
    pub fn open(&self, id: DataId) -> io::Result<File> {
        OpenOptions::new().read(true).write(true).custom_flags(libc::O_NOFOLLOW).open(self.path(id))
    }

    pub fn stat(&self, id: DataId) -> io::Result<fs::Metadata> {
        fs::symlink_metadata(self.path(id))
    }

    pub fn remove(&self, id: DataId) -> io::Result<()> {
        match fs::remove_file(self.path(id)) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            other => other,
        }
    }

    /// Makes the directory entries of every data file created so far durable.
    pub fn sync_dirs(&self) -> io::Result<()> {
        // Taken out before the sync: a file created meanwhile marks its directory again.
        let dirs: Vec<PathBuf> = self.unsynced_dirs().drain().collect();
        for (i, dir) in dirs.iter().enumerate() {
            if let Err(e) = File::open(dir).and_then(|d| d.sync_all()) {
                self.unsynced_dirs().extend(dirs[i..].iter().cloned());
                return Err(e);
            }
        }
        Ok(())
    }

    /// Every data file present, for fsck and recovery.
    pub fn all(&self) -> io::Result<Vec<DataId>> {
        let mut ids = Vec::new();
        for shard in fs::read_dir(&self.dir)? {
            let shard = shard?;
            if !shard.file_type()?.is_dir() {
                continue;
            }
            for file in fs::read_dir(shard.path())? {
                let file = file?;
                if let Some(id) = file.file_name().to_str().and_then(|n| u64::from_str_radix(n, 16).ok()) {
                    ids.push(DataId(id));
                }
            }
        }
        ids.sort();
        Ok(ids)
    }
}

/// Asks the pool's filesystem to place each shard directory in a block group of its own
/// (ext4's "top of a directory hierarchy" flag, `chattr +T`). New data files then land in
/// fresh groups instead of scanning past inodes freed moments ago in the same group, which
/// makes creation after mass deletion many times slower. Filesystems without the flag ignore it.
fn spread_subdirectories(dir: &Path) {
    use rustix::fs::{ioctl_getflags, ioctl_setflags, IFlags};
    let Ok(d) = File::open(dir) else { return };
    if let Ok(flags) = ioctl_getflags(&d) {
        if !flags.contains(IFlags::TOPDIR) {
            let _ = ioctl_setflags(&d, flags | IFlags::TOPDIR);
        }
    }
}
