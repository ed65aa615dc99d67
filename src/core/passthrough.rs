//! Passthrough: which open files the kernel may read and write itself, straight on their data
//! files, and how the space of those files is counted (the daemon sees none of their writes).

use super::{Core, OpenFile};
use crate::data::blocks::allocated_total;
use crate::error::Result;
use crate::meta::{DataId, VolumeId};

/// A file the kernel reads and writes directly (passthrough): the daemon sees none of those
/// writes, so its blocks are counted again when it is closed, and on demand.
#[derive(Clone, Copy, Debug)]
pub(super) struct DirectWrites {
    pub(super) volume: VolumeId,
    pub(super) data: DataId,
    /// Bytes of blocks the file held when `used` last counted it.
    pub(super) counted: u64,
    handles: u32,
}

impl Core {
    /// Whether the kernel reads or writes any file of `volume` directly (passthrough).
    pub fn has_passthrough_files(&self, volume: VolumeId) -> bool {
        self.direct.iter().any(|d| d.volume == volume)
    }

    /// A handle the kernel reads and writes directly (passthrough) was opened on `file`.
    pub fn passthrough_opened(&self, file: &OpenFile) -> Result<()> {
        let _io = self.io_lock(file.ino);
        if let Some(mut d) = self.direct.get_mut(&file.ino) {
            d.handles += 1;
            return Ok(());
        }
        let data = Self::data_id(&self.inode(file.ino)?, file.ino)?;
        let counted = allocated_total(&file.file())?;
        self.direct.insert(file.ino, DirectWrites { volume: file.volume, data, counted, handles: 1 });
        Ok(())
    }

    /// A handle from `passthrough_opened` was closed: what the kernel wrote is counted.
    pub fn passthrough_closed(&self, file: &OpenFile) -> Result<()> {
        let _io = self.io_lock(file.ino);
        let now = allocated_total(&file.file())?;
        let Some(mut d) = self.direct.get_mut(&file.ino) else { return Ok(()) };
        let delta = now as i64 - d.counted as i64;
        d.counted = now;
        d.handles -= 1;
        let last = d.handles == 0;
        drop(d);
        if last {
            self.direct.remove(&file.ino);
        }
        self.charge(file.volume, delta);
        Ok(())
    }
}
