//! The data store: one backing file per file content, named by its `DataId`, never by a user
//! path, so the kernel can be handed the file for passthrough I/O.

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Sender, SyncSender};
use std::sync::Mutex;
use std::thread::JoinHandle;

use crate::meta::DataId;

pub struct DataStore {
    dir: PathBuf,
    reaper: Mutex<Option<(Sender<Reap>, JoinHandle<()>)>>,
    /// Directories with entries created since they were last synced.
    unsynced_dirs: Mutex<HashSet<PathBuf>>,
}

/// Work for the reaper thread, which removes data files off the request path.
enum Reap {
    Remove(DataId),
    /// Answered once every removal queued before it is done.
    Barrier(SyncSender<()>),
}

impl DataStore {
    pub fn at(dir: &Path) -> io::Result<Self> {
        fs::create_dir_all(dir)?;
        let (tx, rx) = mpsc::channel::<Reap>();
        let reaper_dir = dir.to_path_buf();
        let thread = std::thread::Builder::new().name("volfs-reaper".into()).spawn(move || {
            let store = DataStore { dir: reaper_dir, reaper: Mutex::new(None), unsynced_dirs: Mutex::default() };
            for job in rx {
                match job {
                    Reap::Remove(id) => {
                        if let Err(e) = store.remove(id) {
                            // fsck --repair reclaims a data file left behind.
                            tracing::warn!(data = id.0, error = %e, "could not remove data file");
                        }
                    }
                    Reap::Barrier(done) => {
                        let _ = done.send(());
                    }
                }
            }
        })?;
        Ok(DataStore {
            dir: dir.to_path_buf(),
            reaper: Mutex::new(Some((tx, thread))),
            unsynced_dirs: Mutex::default(),
        })
    }

    /// Removes a data file no inode refers to any more, in the background. A crash before it
    /// is gone leaves an unreferenced data file, which recovery reclaims.
    pub fn remove_later(&self, id: DataId) {
        let reaper = self.reaper.lock().unwrap_or_else(|p| p.into_inner());
        let queued = reaper.as_ref().is_some_and(|(tx, _)| tx.send(Reap::Remove(id)).is_ok());
        drop(reaper);
        if !queued {
            if let Err(e) = self.remove(id) {
                tracing::warn!(data = id.0, error = %e, "could not remove data file");
            }
        }
    }

    /// Waits until every removal queued so far is done.
    pub fn drain(&self) {
        let (done, wait) = mpsc::sync_channel(1);
        let reaper = self.reaper.lock().unwrap_or_else(|p| p.into_inner());
        let queued = reaper.as_ref().is_some_and(|(tx, _)| tx.send(Reap::Barrier(done)).is_ok());
        drop(reaper);
        if queued {
            let _ = wait.recv();
        }
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

impl Drop for DataStore {
    fn drop(&mut self) {
        let reaper = self.reaper.get_mut().unwrap_or_else(|p| p.into_inner()).take();
        if let Some((tx, thread)) = reaper {
            drop(tx);
            let _ = thread.join();
        }
    }
}
