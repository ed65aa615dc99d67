//! Passthrough: which open files the kernel may read and write itself, straight on their data
//! files, and how the space of those files is counted (the daemon sees none of their writes).

use super::{kill_suidgid, Attr, Caller, Core, NodeSpec, OpenFile};
use crate::data::blocks::allocated_total;
use crate::error::{Error, Result};
use crate::meta::{DataId, Ino, VolumeId};

/// A regular file opened for the kernel, and, when the kernel reads and writes its data file
/// itself, `B`: the kernel's reference to that file (FUSE passthrough's backing id).
pub struct Opened<B> {
    pub file: OpenFile,
    pub passthrough: Option<B>,
}

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
    /// Opens regular file `ino` for `caller`; `writable` says the open may write. `pass` makes
    /// the kernel's reference to the open file's data file, and is asked only when the kernel
    /// may do the file's I/O itself (`pass_through`).
    ///
    /// The kernel serves all opens of an inode one way at a time (it fails an open that would
    /// mix them with EIO), so an open follows the ones already there. A write by an
    /// unprivileged caller to a setuid/setgid file must clear those bits, which only a write
    /// the daemon sees can: such an open stays with the daemon, unless the kernel already does
    /// the inode's I/O for another open; then the bits are cleared now, as its first write
    /// would.
    pub fn open_for_kernel<B>(
        &self,
        caller: &Caller,
        ino: Ino,
        writable: bool,
        pass: impl FnOnce(&OpenFile) -> Option<B>,
    ) -> Result<Opened<B>> {
        let (file, perm) = self.open_with_perm(ino)?;
        let must_clear = writable && caller.uid != 0 && perm != kill_suidgid(perm);
        let passed_through = self.direct.get(&ino).map_or(0, |d| d.handles);
        let opens = self.open_files.get(&ino).map_or(1, |n| *n);
        let served_by_daemon = opens > passed_through + 1;
        if must_clear && passed_through > 0 {
            if let Err(e) = self.write_kills_suidgid(ino) {
                let _ = self.release(ino);
                return Err(e);
            }
        }
        let allowed = !served_by_daemon && (!must_clear || passed_through > 0);
        Ok(self.pass_through(file, allowed, pass))
    }

    /// Creates regular file `name` in `parent` and opens it for the kernel, as `open_for_kernel`.
    pub fn create<B>(
        &self,
        caller: Caller,
        parent: Ino,
        name: &[u8],
        perm: u32,
        pass: impl FnOnce(&OpenFile) -> Option<B>,
    ) -> Result<(Attr, Opened<B>)> {
        let (attr, file) = self.make(caller, parent, name, NodeSpec::File, perm, true)?;
        let file = file.ok_or_else(|| Error::Corrupt(format!("creating inode {} made no data file", attr.ino.0)))?;
        Ok((attr, self.pass_through(file, true, pass)))
    }

    /// Hands the kernel `file`'s data file when it may change it directly: not when its volume
    /// has a capacity (the daemon holds writes to it), nor when a snapshot or clone shares the
    /// data file (it is copied before it changes). No snapshot is cut between choosing and
    /// counting the file among those the kernel writes.
    fn pass_through<B>(&self, file: OpenFile, allowed: bool, pass: impl FnOnce(&OpenFile) -> Option<B>) -> Opened<B> {
        let _cutting = self.changing_data();
        let may = allowed && !self.limits_writes(file.volume) && self.owns_data(&file).unwrap_or(false);
        let passthrough = if may { pass(&file) } else { None };
        if passthrough.is_some() {
            if let Err(e) = self.passthrough_opened(&file) {
                tracing::warn!(ino = file.ino.0, error = %e, "could not count a file's blocks");
            }
        }
        Opened { file, passthrough }
    }

    /// Closes a file `open_for_kernel` or `create` opened (`passthrough`: the kernel did its
    /// I/O): what the kernel wrote is counted, and the last close of an unlinked file removes it.
    pub fn close(&self, file: &OpenFile, passthrough: bool) -> Result<()> {
        if passthrough {
            if let Err(e) = self.passthrough_closed(file) {
                tracing::warn!(ino = file.ino.0, error = %e, "could not count a file's blocks");
            }
        }
        self.release(file.ino)
    }

    /// Whether the kernel reads or writes any file of `volume` directly (passthrough).
    pub fn has_passthrough_files(&self, volume: VolumeId) -> bool {
        self.direct.iter().any(|d| d.volume == volume)
    }

    /// A handle the kernel reads and writes directly (passthrough) was opened on `file`.
    fn passthrough_opened(&self, file: &OpenFile) -> Result<()> {
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
    fn passthrough_closed(&self, file: &OpenFile) -> Result<()> {
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
