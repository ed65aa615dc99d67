//! Each volume's space, exact in memory: what the daemon's own changes allocate and free, what
//! the kernel wrote into passthrough files, statfs, and the usage records.

use super::{statvfs, Core, OpenFile, StatFs, BLOCK_SIZE};
use crate::error::{Error, Result};
use crate::meta::{DataId, Ino, Txn, Usage, Volume, VolumeId};
use crate::space::allocated_total;

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

/// A file the kernel reads and writes directly (passthrough): the daemon sees none of those
/// writes, so its blocks are counted again when it is closed, and on demand.
#[derive(Clone, Copy, Debug)]
pub(super) struct DirectWrites {
    volume: VolumeId,
    data: DataId,
    /// Bytes of blocks the file held when `used` last counted it.
    counted: u64,
    handles: u32,
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

    /// Whether the kernel reads or writes any file of `volume` directly (passthrough).
    pub fn has_passthrough_files(&self, volume: VolumeId) -> bool {
        self.direct.iter().any(|d| d.volume == volume)
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
    pub fn limits_writes(&self, volume: VolumeId) -> bool {
        self.account(volume).capacity > 0
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
}
