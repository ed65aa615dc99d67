//! Open regular files: the daemon's own reads and writes of data files, held to each volume's
//! capacity, and the copy a view makes of a data file it shares with a snapshot or clone
//! before it changes it.

use std::fs::File;

use rustix::fs::{FallocateFlags, SeekFrom};
use std::os::unix::fs::FileExt;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use super::capacity::Fit;
use super::snapshot::overlay::{Overlay, CHUNK, MAX_DEPTH};
use super::{kill_suidgid, to_off, Core, SetAttr, TimeSet};
use crate::data::blocks::{allocated, allocated_total};
use crate::error::{Error, Result};
use crate::meta::{DataId, Ino, Inode, Kind, LayerId, Level, Timestamp, Txn, Under, VolumeId};

/// A regular file opened through the core. It names the inode, whose data file may change
/// while it is open (a view copies a data file it shares before changing it), and the volume
/// its writes are charged to.
#[derive(Debug)]
pub struct OpenFile {
    pub ino: Ino,
    pub volume: VolumeId,
    bound: RwLock<Bound>,
}

/// The data file an open file uses now, and the layer that owned it when it was bound: while
/// that is still its view's newest layer, the data file cannot have changed. With the shared
/// data files under it, if any.
#[derive(Clone, Debug)]
pub(super) struct Bound {
    id: DataId,
    layer: LayerId,
    pub(super) file: Arc<File>,
    pub(super) overlay: Option<SharedOverlay>,
}

/// The stack of an open inode, shared by its open files.
pub(super) type SharedOverlay = Arc<Mutex<Overlay>>;

impl OpenFile {
    fn new(ino: Ino, volume: VolumeId, bound: Bound) -> Self {
        OpenFile { ino, volume, bound: RwLock::new(bound) }
    }

    /// The data file as last bound; what the kernel is handed for passthrough.
    pub fn file(&self) -> Arc<File> {
        self.bound().file.clone()
    }

    fn bound(&self) -> Bound {
        self.bound.read().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// What an operation does with a file's data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Use {
    Read,
    /// Writes, truncates, allocates or sets times: needs a data file its view owns.
    Change,
}

/// How many locks serialise allocation accounting per file (an inode picks one by number).
pub(super) const IO_LOCKS: usize = 64;

impl Core {
    /// Opens a regular file's data for the daemon's own I/O and counts the opener, so an unlink
    /// keeps the inode until the last release.
    pub fn open(&self, ino: Ino) -> Result<OpenFile> {
        self.open_with_perm(ino).map(|(file, _)| file)
    }

    /// `open`, and the file's permission bits as they were when it was opened.
    pub(super) fn open_with_perm(&self, ino: Ino) -> Result<(OpenFile, u32)> {
        let _w = self.lock();
        let inode = self.inode(ino)?;
        match inode.kind {
            Kind::File => {}
            Kind::Dir => return Err(Error::IsDir(format!("inode {}", ino.0))),
            _ => return Err(Error::Invalid(format!("inode {} is not a regular file", ino.0))),
        }
        let bound = self.bind(ino, &inode)?;
        self.open_files.entry(ino).and_modify(|n| *n += 1).or_insert(1);
        Ok((OpenFile::new(ino, inode.volume, bound), inode.perm))
    }

    /// An open file of a new regular file.
    pub(super) fn new_open_file(&self, ino: Ino, inode: &Inode, file: File) -> Result<OpenFile> {
        let id = Self::data_id(inode, ino)?;
        Ok(OpenFile::new(ino, inode.volume, Bound { id, layer: inode.data_layer, file: Arc::new(file), overlay: None }))
    }

    /// What an open file of `ino` uses, as its record says now.
    fn bind(&self, ino: Ino, inode: &Inode) -> Result<Bound> {
        let id = Self::data_id(inode, ino)?;
        Ok(Bound {
            id,
            layer: inode.data_layer,
            file: Arc::new(self.data.open(id)?),
            overlay: self.overlay_of(ino, id, &inode.under)?,
        })
    }

    /// The stack state of `ino` whose own data file is `id`: the one its open files share, or
    /// loaded from `under`. None for a file that holds all its data itself.
    fn overlay_of(&self, ino: Ino, id: DataId, under: &Under) -> Result<Option<SharedOverlay>> {
        if under.is_empty() {
            return Ok(None);
        }
        if let Some(entry) = self.overlays.get(&ino).filter(|e| e.0 == id) {
            return Ok(Some(entry.1.clone()));
        }
        let overlay = Arc::new(Mutex::new(Overlay::load(&self.data, under)?));
        self.overlays.insert(ino, (id, overlay.clone()));
        Ok(Some(overlay))
    }

    /// Writes which chunks the top of `ino`'s stack holds into its record, once the top's data
    /// is durable, so the record never names a chunk the disk may lack.
    pub(super) fn persist_overlay(&self, ino: Ino) -> Result<()> {
        let Some((id, overlay)) = self.overlays.get(&ino).map(|e| e.clone()) else { return Ok(()) };
        let mut overlay = lock(&overlay);
        if !overlay.dirty {
            return Ok(());
        }
        self.data.open(id)?.sync_data()?;
        let _w = self.lock();
        let mut inode = self.inode(ino)?;
        if inode.data == Some(id) {
            inode.under = overlay.under();
            let mut txn = Txn::default();
            txn.put_inode(ino, &inode);
            self.meta.commit(txn)?;
        }
        overlay.dirty = false;
        Ok(())
    }

    /// Before a cut: every stack's top is written into its record.
    pub(crate) fn persist_overlays(&self) -> Result<()> {
        let inos: Vec<Ino> = self.overlays.iter().map(|e| *e.key()).collect();
        inos.into_iter().try_for_each(|ino| self.persist_overlay(ino))
    }

    /// The last release of an unlinked file removes it.
    pub fn release(&self, ino: Ino) -> Result<()> {
        if self.open_files.get(&ino).is_some_and(|n| *n == 1) {
            self.persist_overlay(ino)?;
        }
        let _w = self.lock();
        let last = match self.open_files.get_mut(&ino) {
            Some(mut n) => {
                *n -= 1;
                *n == 0
            }
            None => false,
        };
        if !last {
            return Ok(());
        }
        self.open_files.remove(&ino);
        self.overlays.remove(&ino);
        let inode = match self.meta.inode(ino)? {
            Some(inode) if inode.nlink == 0 => inode,
            _ => return Ok(()),
        };
        let mut txn = Txn::default();
        let data = self.delete_inode(&mut txn, ino, &inode)?;
        self.meta.commit(txn)?;
        self.remove_data(data);
        Ok(())
    }

    pub fn read(&self, file: &OpenFile, offset: u64, size: u32) -> Result<Vec<u8>> {
        let bound = self.data_of(file, Use::Read)?;
        if let Some(overlay) = &bound.overlay {
            let end = bound.file.metadata()?.len().min(offset.saturating_add(u64::from(size)));
            let mut buf = vec![0u8; end.saturating_sub(offset) as usize];
            lock(overlay).read(&bound.file, offset, &mut buf)?;
            return Ok(buf);
        }
        let file = bound.file;
        let mut buf = vec![0u8; size as usize];
        let mut done = 0;
        while done < buf.len() {
            match file.read_at(&mut buf[done..], offset + done as u64) {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
        buf.truncate(done);
        Ok(buf)
    }

    /// Clears the setuid and setgid bits a write by an unprivileged caller must clear; commits
    /// only when there is something to clear.
    pub fn write_kills_suidgid(&self, ino: Ino) -> Result<()> {
        let _w = self.lock();
        let mut inode = self.inode(ino)?;
        if inode.perm == kill_suidgid(inode.perm) {
            return Ok(());
        }
        inode.perm = kill_suidgid(inode.perm);
        inode.ctime = Timestamp::now();
        let mut txn = Txn::default();
        txn.put_inode(ino, &inode);
        self.meta.commit(txn)
    }

    /// Writes as much of `data` as the volume has room for: a write that would take the volume
    /// past its capacity stops at the last block that fits, and one with no room fails ENOSPC.
    pub fn write(&self, file: &OpenFile, offset: u64, data: &[u8]) -> Result<u32> {
        let len = u64::try_from(data.len()).map_err(|_| Error::TooLarge)?;
        offset.checked_add(len).filter(|end| *end <= i64::MAX as u64).ok_or(Error::TooLarge)?;
        let written = self.allocating(file, offset, len, Fit::Prefix, |f, fits| {
            f.write_all_at(&data[..fits as usize], offset)?;
            Ok(fits)
        })?;
        Ok(written as u32)
    }

    /// Makes the top of a stack hold the chunks `[start, end)` touches, charging the volume
    /// what that changes (holes and zeros are not copied).
    pub(super) fn copy_up(&self, of: &OpenFile, top: &File, overlay: &mut Overlay, start: u64, end: u64) -> Result<()> {
        if start >= end {
            // Nothing to hold, and no chunk to measure either.
            return Ok(());
        }
        let (from, to) = (start / CHUNK * CHUNK, end.div_ceil(CHUNK) * CHUNK);
        let before = overlay.allocated(top, from, to)?;
        overlay.copy_up(top, start, end)?;
        let after = allocated(top, from, to)?;
        self.charge_file(of.ino, of.volume, after as i64 - before as i64);
        Ok(())
    }

    /// Runs `op`, which may free or allocate blocks anywhere in `file` but needs no promise of
    /// room (shrinking, punching holes), and charges the volume the difference. `op` also gets
    /// the file's stack, if it has one.
    pub(super) fn measured(
        &self,
        of: &OpenFile,
        op: impl FnOnce(&File, Option<&mut Overlay>) -> Result<()>,
    ) -> Result<()> {
        let _cutting = self.changing_data();
        let bound = self.data_of(of, Use::Change)?;
        let file = &*bound.file;
        let _io = self.io_lock(of.ino);
        let mut overlay = bound.overlay.as_ref().map(|o| lock(o));
        let held = |overlay: &Option<MutexGuard<'_, Overlay>>| match overlay {
            Some(o) => o.allocated_total(file),
            None => allocated_total(file),
        };
        let before = held(&overlay)?;
        let result = op(file, overlay.as_deref_mut());
        let after = held(&overlay)?;
        self.charge_file(of.ino, of.volume, after as i64 - before as i64);
        result
    }

    pub(super) fn io_lock(&self, ino: Ino) -> MutexGuard<'_, ()> {
        self.io_locks[(ino.0 % IO_LOCKS as u64) as usize].lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes a file's data and all metadata committed so far durable.
    pub fn fsync(&self, file: &OpenFile, datasync: bool) -> Result<()> {
        self.persist_overlay(file.ino)?;
        let file = self.data_of(file, Use::Read)?.file;
        if datasync {
            file.sync_data()?;
        } else {
            file.sync_all()?;
        }
        self.sync_metadata()
    }

    /// Makes every committed metadata change durable, with the names of the data files it
    /// refers to (fsyncdir, syncfs).
    pub fn sync_metadata(&self) -> Result<()> {
        self.data.sync_dirs()?;
        self.meta.sync()
    }

    /// Preallocation and zeroing need room for the whole range or fail ENOSPC; punching,
    /// collapsing and inserting ranges only move or free blocks.
    pub fn fallocate(&self, file: &OpenFile, offset: u64, length: u64, mode: i32) -> Result<()> {
        to_off(offset)?.checked_add(to_off(length)?).ok_or(Error::TooLarge)?;
        let flags = FallocateFlags::from_bits_retain(mode as u32);
        let call = |file: &File| Ok(rustix::fs::fallocate(file, flags, offset, length)?);
        const MOVES_OR_FREES: i32 =
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_COLLAPSE_RANGE | libc::FALLOC_FL_INSERT_RANGE;
        const SHIFTS: i32 = libc::FALLOC_FL_COLLAPSE_RANGE | libc::FALLOC_FL_INSERT_RANGE;
        if mode & MOVES_OR_FREES != 0 || length == 0 {
            self.measured(file, |f, overlay| {
                if let Some(overlay) = overlay {
                    // A shift moves everything after it: the top takes all of the file first,
                    // and nothing below shows any more.
                    let (start, end) =
                        if mode & SHIFTS != 0 { (0, f.metadata()?.len()) } else { (offset, offset + length) };
                    overlay.copy_up(f, start, end)?;
                    if mode & SHIFTS != 0 {
                        overlay.truncated(0);
                    }
                }
                call(f)
            })
        } else {
            self.allocating(file, offset, length, Fit::Whole, |f, _| {
                // Where preallocated blocks cannot be seen (tmpfs: memory volumes), they could
                // not be counted against the capacity: refuse, as filesystems without
                // preallocation do (posix_fallocate then writes the blocks, which count).
                if !crate::data::blocks::maps_extents(f)? {
                    return Err(Error::NotSupported("preallocation on a memory volume".into()));
                }
                call(f).map(|()| length)
            })
            .map(drop)
        }
    }

    pub fn lseek(&self, file: &OpenFile, offset: i64, whence: i32) -> Result<i64> {
        let bound = self.data_of(file, Use::Read)?;
        if bound.overlay.is_some() && matches!(whence, libc::SEEK_DATA | libc::SEEK_HOLE) {
            // Data and holes of a stack are not tracked: all of it counts as data, as POSIX
            // allows.
            let size = bound.file.metadata()?.len() as i64;
            return match whence {
                _ if offset < 0 => Err(Error::Invalid(format!("seek to {offset}"))),
                _ if offset >= size => Err(Error::NoData),
                libc::SEEK_DATA => Ok(offset),
                _ => Ok(size),
            };
        }
        // It moves only this open file's offset, which the daemon's I/O never uses.
        let from = |offset: i64| u64::try_from(offset).map_err(|_| Error::Invalid(format!("seek to {offset}")));
        let to = match whence {
            libc::SEEK_SET => SeekFrom::Start(from(offset)?),
            libc::SEEK_CUR => SeekFrom::Current(offset),
            libc::SEEK_END => SeekFrom::End(offset),
            libc::SEEK_DATA => SeekFrom::Data(from(offset)?),
            libc::SEEK_HOLE => SeekFrom::Hole(from(offset)?),
            _ => return Err(Error::Invalid(format!("seek whence {whence}"))),
        };
        to_off(rustix::fs::seek(&*bound.file, to)?)
    }

    /// Copies as much as the destination's volume has room for, like `write`.
    pub fn copy_file_range(
        &self,
        src: &OpenFile,
        src_offset: u64,
        dst: &OpenFile,
        dst_offset: u64,
        len: u64,
    ) -> Result<u64> {
        to_off(src_offset)?;
        to_off(dst_offset)?;
        let (mut off_in, mut off_out) = (src_offset, dst_offset);
        let len = len.min((i64::MAX as u64).saturating_sub(dst_offset));
        let source = self.data_of(src, Use::Read)?;
        if source.overlay.is_some() {
            // Bytes of a stack come from several files: read them, then write them.
            const MOST: u64 = 8 << 20;
            let bytes = self.read(src, src_offset, len.min(MOST) as u32)?;
            return self.write(dst, dst_offset, &bytes).map(u64::from);
        }
        let src = source.file;
        self.allocating(dst, dst_offset, len, Fit::Prefix, |dst, fits| {
            let n = rustix::fs::copy_file_range(&*src, Some(&mut off_in), dst, Some(&mut off_out), fits as usize)?;
            Ok(n as u64)
        })
    }

    /// Truncates a regular file and sets its times, which live in its data file: one its view
    /// owns. Without an open file, opens one for the while.
    pub(super) fn change_data(&self, ino: Ino, set: &SetAttr, file: Option<&OpenFile>) -> Result<()> {
        let opened = match file {
            Some(_) => None,
            None => Some(self.open(ino)?),
        };
        let file = file.or(opened.as_ref()).expect("an open file");
        let result = (|| {
            if let Some(size) = set.size {
                // Growing leaves a hole, which costs nothing; shrinking frees blocks.
                self.measured(file, |f, overlay| {
                    f.set_len(size)?;
                    if let Some(overlay) = overlay {
                        overlay.truncated(size);
                    }
                    Ok(())
                })?;
            }
            if set.atime.is_some() || set.mtime.is_some() {
                let _cutting = self.changing_data();
                set_times(&self.data_of(file, Use::Change)?.file, set.atime, set.mtime)?;
            }
            Ok(())
        })();
        if opened.is_some() {
            self.release(ino)?;
        }
        result
    }

    /// Whether the view of `file` owns its data file (no snapshot or clone shares it), so the
    /// kernel may write it directly.
    pub(super) fn owns_data(&self, file: &OpenFile) -> Result<bool> {
        let bound = file.bound();
        Ok(bound.overlay.is_none() && bound.layer == self.meta.view(file.ino.view())?.head())
    }

    /// The data file `file` must use now, with its stack. For a change, one its view owns: a
    /// shared data file gets a data file of the view's own on top first, once for every open
    /// file of the inode.
    pub(super) fn data_of(&self, file: &OpenFile, usage: Use) -> Result<Bound> {
        let view = self.meta.view(file.ino.view())?;
        if usage == Use::Change && view.read_only {
            return Err(Error::ReadOnly(format!("inode {} belongs to a snapshot", file.ino.0)));
        }
        let head = view.head();
        let bound = file.bound();
        if bound.layer == head {
            return Ok(bound);
        }
        if usage == Use::Change {
            self.own_data(file.ino, head)?;
        }
        let inode = self.inode(file.ino)?;
        let mut bound = file.bound.write().unwrap_or_else(|p| p.into_inner());
        if bound.id != Self::data_id(&inode, file.ino)? {
            *bound = self.bind(file.ino, &inode)?;
        }
        bound.layer = inode.data_layer;
        Ok(bound.clone())
    }

    /// Gives the view of `ino` a data file of its own, with the shared one under it: a new,
    /// empty top of the file's stack, which takes chunks as they change. A stack already
    /// `MAX_DEPTH` deep is copied into the new file whole instead (holes stay holes). The new
    /// file is durable before the inode points to it. One inode at a time; the write lock only
    /// for the commit.
    pub(super) fn own_data(&self, ino: Ino, head: LayerId) -> Result<()> {
        let _io = self.io_lock(ino);
        let inode = self.inode(ino)?;
        let shared = Self::data_id(&inode, ino)?;
        if inode.data_layer == head {
            return Ok(());
        }
        if self.meta.view(ino.view())?.read_only {
            return Err(Error::ReadOnly(format!("inode {} belongs to a snapshot", ino.0)));
        }
        let mut txn = Txn::default();
        let id = DataId(self.meta.alloc_id(&mut txn));
        let flatten = inode.under.lower.len() >= MAX_DEPTH;
        let made = self.data.create(id).map_err(Error::from).and_then(|top| {
            let src = self.data.open(shared)?;
            let st = src.metadata()?;
            let under = if flatten {
                Overlay::load(&self.data, &inode.under)?.copy_whole(&src, &top, st.len())?;
                Under::default()
            } else {
                top.set_len(st.len())?;
                let mut lower = vec![(shared, inode.under.top.clone())];
                lower.extend(inode.under.lower.iter().cloned());
                Under { top: Level { held: Default::default(), limit: st.len() }, lower }
            };
            top.set_times(std::fs::FileTimes::new().set_accessed(st.accessed()?).set_modified(st.modified()?))?;
            top.sync_all()?;
            Ok(under)
        });
        let committed = made.and_then(|under| {
            let _w = self.lock();
            // Re-read: other fields may have changed meanwhile.
            let mut inode = self.inode(ino)?;
            let replaced = std::mem::replace(&mut inode.under, under);
            inode.data = Some(id);
            inode.data_layer = head;
            // What the view holds may differ: blocks past the end, or zeros, are not carried.
            let was = self.file_usage(shared, &replaced)?;
            let now = self.file_usage(id, &inode.under)?;
            txn.put_inode(ino, &inode);
            self.meta.commit(txn)?;
            self.charge_file(ino, inode.volume, now as i64 - was as i64);
            if flatten {
                // The view lets go of the old stack; what no other view reads goes.
                for old in std::iter::once(shared).chain(replaced.lower.iter().map(|(d, _)| *d)) {
                    if !self.seen_elsewhere(ino, old)? {
                        self.data.remove(old)?;
                    }
                }
            }
            Ok(inode)
        });
        let inode = match committed {
            Ok(inode) => inode,
            Err(e) => {
                let _ = self.data.remove(id);
                return Err(e);
            }
        };
        self.overlays.remove(&ino);
        self.overlay_of(ino, id, &inode.under)?;
        tracing::debug!(ino = ino.0, shared = shared.0, own = id.0, flatten, "a view took a data file of its own");
        Ok(())
    }
}

/// futimens with UTIME_NOW and UTIME_OMIT, as utimensat(2) takes them.
fn set_times(file: &File, atime: Option<TimeSet>, mtime: Option<TimeSet>) -> Result<()> {
    use rustix::fs::{Timespec, Timestamps, UTIME_NOW, UTIME_OMIT};
    let spec = |t: Option<TimeSet>| match t {
        None => Timespec { tv_sec: 0, tv_nsec: UTIME_OMIT },
        Some(TimeSet::Now) => Timespec { tv_sec: 0, tv_nsec: UTIME_NOW },
        Some(TimeSet::At(t)) => Timespec { tv_sec: t.secs, tv_nsec: t.nanos.into() },
    };
    Ok(rustix::fs::futimens(file, &Timestamps { last_access: spec(atime), last_modification: spec(mtime) })?)
}

/// Locks a stack; a panic elsewhere leaves its state as consistent as any crash would.
pub(super) fn lock(overlay: &SharedOverlay) -> MutexGuard<'_, Overlay> {
    overlay.lock().unwrap_or_else(|p| p.into_inner())
}
