//! The volume table: creating, resizing and deleting volumes (snapshots and clones are in
//! `snapshot`), what `volume inspect` shows, and reclaiming what interrupted operations left.

use std::collections::HashSet;

use super::Core;
use crate::error::{Error, Result};
use crate::meta::{DataId, Ino, Inode, Kind, Timestamp, Txn, Usage, Volume, VolumeId};
use crate::names::VolumeName;
use volfs_api::VolumeInfo;

impl Core {
    /// Removes data files no inode refers to and orphan inodes no one has open, as their
    /// last release would have. The caller holds the write lock.
    pub fn reclaim(&self, data: &[DataId], orphans: &[Ino]) -> Result<()> {
        for &ino in orphans {
            // A snapshot keeps what was open at its cut until it is deleted.
            if self.meta.view(ino.view()).is_ok_and(|v| v.read_only) {
                continue;
            }
            let mut txn = Txn::default();
            txn.delete_orphan(ino);
            // An orphan record may outlive its view's inode table.
            let inode = self.meta.inode(ino).or_else(|e| match e {
                Error::NotFound(_) => Ok(None),
                e => Err(e),
            })?;
            let freed = match inode {
                Some(inode) if inode.nlink == 0 => self.delete_inode(&mut txn, ino, &inode)?,
                _ => None,
            };
            self.meta.commit(txn)?;
            self.remove_data(freed);
        }
        for &id in data {
            self.data.remove(id)?;
        }
        self.meta.sync()
    }

    /// Data files no inode refers to: left when a create or unlink was cut short. The caller
    /// holds the core's write lock, so no create is half done.
    pub fn unreferenced_data(&self) -> Result<Vec<DataId>> {
        let referenced: HashSet<_> =
            self.meta.all_inodes()?.iter().flat_map(|(_, i)| i.data_files().collect::<Vec<_>>()).collect();
        Ok(self.data.all()?.into_iter().filter(|id| !referenced.contains(id)).collect())
    }

    /// Creates an empty volume with `capacity` bytes (0: bounded by the pool) and at most
    /// `inodes` inodes (None: `Volume::inode_limit`'s default).
    pub fn create_volume(&self, name: &VolumeName, capacity: u64, inodes: Option<u64>) -> Result<Volume> {
        let _w = self.lock();
        if self.meta.volume(name.as_str())?.is_some() {
            return Err(Error::Exists(format!("volume {name}")));
        }
        let mut txn = Txn::default();
        let id = VolumeId(self.meta.alloc_id(&mut txn));
        let view = self.alloc_view(&mut txn)?;
        let layer = self.meta.alloc_id(&mut txn);
        let root = Ino::new(view, self.meta.alloc_id(&mut txn));
        let now = Timestamp::now();
        let inode = Inode::new(id, Kind::Dir, 0o777, (0, 0), root, now);
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
        self.meta.commit(txn)?;
        self.set_limits(&volume);
        Ok(volume)
    }

    pub fn volume(&self, name: &str) -> Result<Volume> {
        self.meta.volume(name)?.ok_or_else(|| Error::NotFound(format!("volume {name}")))
    }

    pub fn volume_info(&self, volume: &Volume) -> Result<VolumeInfo> {
        let usage = self.meta.usage(volume.id)?;
        let df = self.statfs(volume)?;
        Ok(VolumeInfo {
            name: volume.name.clone(),
            id: volume.id.0,
            capacity: (volume.capacity > 0).then_some(volume.capacity),
            used_bytes: self.space_of(volume.id)?.used,
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
        self.meta.volumes()?.iter().filter(|v| !v.is_snapshot()).map(|v| self.volume_info(v)).collect()
    }

    /// Calls `visit(parent, name, ino, inode)` for every inode below `root` (each hard-linked
    /// inode once per name), depth first.
    pub fn walk(&self, root: Ino, mut visit: impl FnMut(Ino, &[u8], Ino, &Inode)) -> Result<()> {
        let mut stack = vec![root];
        while let Some(dir) = stack.pop() {
            for (name, entry) in self.meta.all_entries(dir)? {
                let Some(inode) = self.meta.inode(entry.ino)? else { continue };
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
        let (_cutting, _w) = (self.cutting(), self.lock());
        let mut volume = self.volume(name)?;
        if volume.is_snapshot() {
            return Err(Error::Invalid(format!("{name} is a snapshot, which cannot be resized")));
        }
        if volume.capacity == 0 && self.has_passthrough_files(volume.id) {
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
        check_inodes_fit(&volume, self.meta.usage(volume.id)?.inodes)?;
        let mut txn = Txn::default();
        txn.put_volume(&volume);
        self.meta.commit(txn)?;
        self.set_limits(&volume);
        Ok(volume)
    }

    /// Deletes a volume and everything in it that no snapshot or clone shares; its snapshots
    /// stay. The caller makes sure it is not mounted.
    pub fn delete_volume(&self, name: &str) -> Result<()> {
        let (_cutting, _w) = (self.cutting(), self.lock());
        let volume = self.volume(name)?;
        if volume.is_snapshot() {
            return Err(Error::Invalid(format!("{name} is a snapshot; delete it with `volfs snapshot delete`")));
        }
        self.drop_view(&volume)
    }
}

/// Refuses limits that would leave a volume holding more inodes than it may: a capacity whose
/// default inode limit (one per 16 KiB) is below what it holds, or an explicit limit below it.
pub(super) fn check_inodes_fit(volume: &Volume, held: u64) -> Result<()> {
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
