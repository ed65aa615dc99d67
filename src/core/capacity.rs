//! Capacity: each volume's space and inodes, exact in memory — what the daemon's own changes
//! allocate and free, what the kernel wrote into passthrough files — held to the volume's
//! capacity and inode limit, shown by statfs and kept in the usage records.
//!
//! A change that may allocate blocks is promised room first (`allocating`): a write that would
//! take the volume past its capacity stops at the last block that fits, and one with no room
//! fails ENOSPC, as on a local disk.

use std::fs::File;

use super::io::{lock, Use};
use super::{statvfs, Core, OpenFile, StatFs, BLOCK_SIZE};
use crate::data::blocks::{allocated, allocated_ranges, allocated_total, Range};
use crate::error::{Error, Result};
use crate::meta::{DataId, Ino, Txn, Usage, Volume, VolumeId};

/// The space of one volume. `used` is exact in memory at all times; the usage records hold it
/// after an orderly close and are recounted from the data files after an unclean stop.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Account {
    /// Bytes the volume may hold; 0 means bounded only by the pool's free space.
    pub capacity: u64,
    /// Bytes of data blocks its files hold, as last counted.
    pub used: u64,
    /// Bytes promised to writes in flight.
    pub(super) reserved: u64,
    /// The most inodes it may hold (`Volume::inode_limit`).
    pub inodes: Option<u64>,
}

impl Core {
    /// Adds `delta` bytes to a volume's usage.
    pub(super) fn charge(&self, volume: VolumeId, delta: i64) {
        let mut account = self.space.entry(volume).or_default();
        account.used = account.used.saturating_add_signed(delta);
    }

    /// Adds what the daemon changed in a file to its volume. A file the kernel also writes
    /// directly is counted whole when it is closed (or looked at), which includes this change.
    pub(super) fn charge_file(&self, ino: Ino, volume: VolumeId, delta: i64) {
        if !self.direct.contains_key(&ino) {
            self.charge(volume, delta);
        }
    }

    /// Space and inodes of a volume. Used is the volume's own usage; the size is its capacity,
    /// or, without one, its usage plus what the pool's filesystem has free. Free space is
    /// bounded by both.
    pub fn statfs(&self, volume: &Volume) -> Result<StatFs> {
        let pool = statvfs(&self.pool_dir)?;
        let bsize = u64::from(BLOCK_SIZE);
        let pool_free = pool.f_bavail * pool.f_frsize / bsize;
        let account = self.space_of(volume.id)?;
        let used = account.used.div_ceil(bsize);
        let blocks = if account.capacity > 0 { account.capacity / bsize } else { used + pool_free };
        let free = pool_free.min(blocks.saturating_sub(used));
        let usage: Usage = self.meta.usage(volume.id)?;
        let (files, ffree) = match account.inodes {
            Some(limit) => (limit, limit.saturating_sub(usage.inodes)),
            None => {
                let ffree = pool.f_ffree.max(1 << 20);
                (usage.inodes + ffree, ffree)
            }
        };
        Ok(StatFs {
            blocks,
            bfree: free,
            bavail: free,
            files,
            ffree,
            bsize: BLOCK_SIZE,
            namelen: crate::names::NAME_MAX as u32,
        })
    }

    /// A volume's space now, counting what the kernel has written directly into files still
    /// open for it.
    pub fn space_of(&self, volume: VolumeId) -> Result<Account> {
        let pending: Vec<(DataId, u64)> =
            self.direct.iter().filter(|d| d.volume == volume).map(|d| (d.data, d.counted)).collect();
        let mut account = self.account(volume);
        for (id, counted) in pending {
            let file = match self.data.open(id) {
                Ok(file) => file,
                // Closed and removed meanwhile (an unlinked file's last close): its release
                // has settled what it held.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e.into()),
            };
            let now = allocated_total(&file)?;
            account.used = (account.used + now).saturating_sub(counted);
        }
        Ok(account)
    }

    pub(super) fn account(&self, volume: VolumeId) -> Account {
        self.space.get(&volume).map(|a| *a).unwrap_or_default()
    }

    /// Stops accounting for a deleted volume; idempotent.
    pub(crate) fn forget_account(&self, volume: VolumeId) {
        self.space.remove(&volume);
    }

    /// Whether any file of `volume` is open.
    pub fn has_open_files(&self, volume: VolumeId) -> Result<bool> {
        let open: Vec<Ino> = self.open_files.iter().map(|e| *e.key()).collect();
        for ino in open {
            if self.meta.inode(ino)?.is_some_and(|i| i.volume == volume) {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Starts accounting for a new volume that already holds `used` bytes (a snapshot or clone).
    pub(crate) fn start_account(&self, volume: &Volume, used: u64) {
        let (capacity, inodes) = (volume.capacity, volume.inode_limit());
        self.space.insert(volume.id, Account { capacity, used, reserved: 0, inodes });
    }

    /// Sets a volume's capacity and inode limit for every change from now on (starting its
    /// account if new).
    pub(crate) fn set_limits(&self, volume: &Volume) {
        let mut account = self.space.entry(volume.id).or_default();
        account.capacity = volume.capacity;
        account.inodes = volume.inode_limit();
    }

    /// Fails with ENOSPC when a volume holds all the inodes it may. The caller holds the
    /// write lock, so the count cannot move before its transaction commits.
    pub(super) fn check_inode_room(&self, volume: VolumeId) -> Result<()> {
        let Some(limit) = self.account(volume).inodes else { return Ok(()) };
        if self.meta.usage(volume)?.inodes >= limit {
            return Err(Error::NoSpace(format!("volume {} holds all the {limit} inodes it may", volume.0)));
        }
        Ok(())
    }

    /// Whether a volume's writes must go through the daemon, which keeps them within its
    /// capacity: the kernel writing straight into a data file could not.
    pub(super) fn limits_writes(&self, volume: VolumeId) -> bool {
        self.account(volume).capacity > 0
    }

    /// Counts every volume's usage again from the data files (after an unclean stop, when the
    /// usage records may be behind) and records it.
    pub(crate) fn recount_space(&self) -> Result<()> {
        let mut used: std::collections::HashMap<VolumeId, u64> = std::collections::HashMap::new();
        for (_, inode) in self.meta.all_inodes()? {
            if let Some(id) = inode.data {
                *used.entry(inode.volume).or_default() += self.file_usage(id, &inode.under)?;
            }
        }
        for mut account in self.space.iter_mut() {
            account.used = used.get(account.key()).copied().unwrap_or(0);
        }
        self.record_space()
    }

    /// Writes every volume's usage into its record.
    pub(crate) fn record_space(&self) -> Result<()> {
        let mut txn = Txn::default();
        for volume in self.meta.volumes()? {
            let mut usage = self.meta.usage(volume.id)?;
            usage.bytes = self.space_of(volume.id)?.used;
            txn.put_usage(volume.id, &usage);
        }
        self.meta.commit(txn)
    }

    /// Runs `op` on a range that may allocate blocks, once the volume has promised room for
    /// them; `op` gets the length that fits (all of it, or with `Fit::Prefix` possibly less)
    /// and returns the length it covered. The volume is charged what the blocks really became.
    pub(super) fn allocating(
        &self,
        file: &OpenFile,
        offset: u64,
        len: u64,
        fit: Fit,
        op: impl FnOnce(&File, u64) -> Result<u64>,
    ) -> Result<u64> {
        let of = file;
        let _cutting = self.changing_data();
        let bound = self.data_of(of, Use::Change)?;
        let file = &*bound.file;
        let _io = self.io_lock(of.ino);
        if let Some(overlay) = &bound.overlay {
            self.copy_up(of, file, &mut lock(overlay), offset, offset.saturating_add(len))?;
        }
        let range = block_range(offset, len, self.block);
        let before = allocated_ranges(file, range.0, range.1)?;
        let before_bytes: u64 = before.iter().map(|(s, e)| e - s).sum();
        let (fits, promised) = {
            let mut account = self.space.entry(of.volume).or_default();
            let (fits, need) = if account.capacity == 0 {
                (len, 0)
            } else {
                let room = account.capacity.saturating_sub(account.used + account.reserved);
                fitting_prefix(&before, range, offset, len, room, self.block)
            };
            if len > 0 && (fits == 0 || (fits < len && fit == Fit::Whole)) {
                return Err(Error::NoSpace(format!(
                    "volume {} has {} of its {} capacity free",
                    of.volume.0,
                    crate::quantity::HumanBytes(account.capacity.saturating_sub(account.used + account.reserved)),
                    crate::quantity::HumanBytes(account.capacity)
                )));
            }
            account.reserved += need;
            (fits, need)
        };
        let result = op(file, fits);
        let after = allocated(file, range.0, range.1);
        if let Some(mut account) = self.space.get_mut(&of.volume) {
            account.reserved -= promised;
        }
        let after = after?;
        self.charge_file(of.ino, of.volume, after as i64 - before_bytes as i64);
        result
    }
}

/// Whether an allocating operation may do part of its range when the volume lacks room for
/// all of it (a write may come back short; fallocate may not).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Fit {
    Prefix,
    Whole,
}

/// `[offset, offset + len)` widened to whole blocks of `block` bytes.
fn block_range(offset: u64, len: u64, block: u64) -> Range {
    let start = offset / block * block;
    let end = (offset + len).div_ceil(block) * block;
    (start, end)
}

/// Within the block-aligned `range` whose allocated parts are `allocated` (sorted, inside
/// it), how much of a write of `len` bytes at `offset` fits when at most `budget` bytes of new
/// blocks may be allocated: returns the bytes that fit and the new blocks' bytes they need.
fn fitting_prefix(allocated: &[Range], range: Range, offset: u64, len: u64, budget: u64, block: u64) -> (u64, u64) {
    let mut gaps: Vec<Range> = Vec::with_capacity(allocated.len() + 1);
    let mut cursor = range.0;
    for &(s, e) in allocated {
        if cursor < s {
            gaps.push((cursor, s));
        }
        cursor = cursor.max(e);
    }
    if cursor < range.1 {
        gaps.push((cursor, range.1));
    }
    let mut need = 0;
    for (s, e) in gaps {
        if need + (e - s) > budget {
            // The write stops at the first block of this hole that no longer fits.
            let fits_until = s + (budget - need) / block * block;
            let written = fits_until.saturating_sub(offset).min(len);
            return (written, need + fits_until.saturating_sub(s));
        }
        need += e - s;
    }
    (len, need)
}

#[cfg(test)]
mod tests {
    use super::*;

    const B: u64 = 4096;

    #[test]
    fn a_write_is_cut_at_the_last_block_that_fits() {
        // Blocks 1 and 3 allocated in the range of blocks 0..5.
        let alloc = [(B, 2 * B), (3 * B, 4 * B)];
        let range = (0, 5 * B);
        assert_eq!(fitting_prefix(&alloc, range, 0, 5 * B, 10 * B, B), (5 * B, 3 * B));
        // Two new blocks may be allocated: blocks 0 and 2, so the write stops at block 4.
        assert_eq!(fitting_prefix(&alloc, range, 0, 5 * B, 2 * B, B), (4 * B, 2 * B));
        assert_eq!(fitting_prefix(&alloc, range, 100, 5 * B - 100, 0, B), (0, 0));
        assert_eq!(fitting_prefix(&alloc, (B, 2 * B), B + 5, 10, 0, B), (10, 0), "overwrites are free");
    }
}
