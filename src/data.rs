//! The data store: one backing file per file content, named by its `DataId`, never by a user
//! path, so the kernel can be handed the file for passthrough I/O.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::meta::DataId;

pub struct DataStore {
    dir: PathBuf,
}

impl DataStore {
    pub fn at(dir: &Path) -> io::Result<Self> {
        fs::create_dir_all(dir)?;
        Ok(DataStore { dir: dir.to_path_buf() })
    }

    fn shard(&self, id: DataId) -> PathBuf {
        self.dir.join(format!("{:02x}", id.0 & 0xff))
    }

    pub fn path(&self, id: DataId) -> PathBuf {
        self.shard(id).join(format!("{:016x}", id.0))
    }

    /// Creates an empty data file; an existing one (left by an interrupted create) is emptied.
    pub fn create(&self, id: DataId) -> io::Result<File> {
        let open =
            || OpenOptions::new().read(true).write(true).create(true).truncate(true).mode(0o600).open(self.path(id));
        match open() {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::create_dir_all(self.shard(id))?;
                open()
            }
            other => other,
        }
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

    /// Makes the directory entry of a data file durable (after its creation).
    pub fn sync_dir_of(&self, id: DataId) -> io::Result<()> {
        File::open(self.shard(id))?.sync_all()
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
