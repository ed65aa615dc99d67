//! Snapshots and clones. Cutting one is O(1): the source's layers are frozen and shared, and
//! the source continues in a new, empty layer (see `meta::LayerId`). A data file stays shared
//! until a view that shares it changes the file; that view copies it first (`core::io`).
//!
//! Deleting a volume or snapshot drops the layers no remaining view reads, with the data files
//! they own, and merges a layer that only one newer layer still reads into that one, so the
//! space only the deleted view held comes back.

pub mod overlay;

use std::collections::{HashMap, HashSet};
use std::sync::{RwLockReadGuard, RwLockWriteGuard};

use super::Core;
use crate::error::{Error, Result};
use crate::meta::{
    decode_inode, encode_inode, DataId, Inode, LayerId, LayerTable, Level, Timestamp, Txn, Usage, Volume, VolumeId,
};
use crate::names::VolumeName;
use overlay::CHUNK;
use volfs_api::SnapshotInfo;

/// Where a new volume's content comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// Empty.
    Nothing,
    /// A clone of a volume as it is now.
    Volume(String),
    /// A restore of a snapshot (`VOLUME@SNAP`).
    Snapshot(String),
}

/// Splits `VOLUME@SNAP`, checking both names.
pub fn parse_snapshot_name(full: &str) -> Result<(VolumeName, VolumeName)> {
    let (volume, snap) = full
        .split_once('@')
        .ok_or_else(|| Error::Invalid(format!("snapshot {full:?} must be named VOLUME@SNAPSHOT")))?;
    let parse = |name: &str| VolumeName::parse(name).map_err(|e| Error::Invalid(format!("snapshot {full:?}: {e}")));
    Ok((parse(volume)?, parse(snap)?))
}

impl Core {
    /// Held while file data changes, or while the kernel is handed a data file to change.
    pub fn changing_data(&self) -> RwLockReadGuard<'_, ()> {
        self.cut.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Held while a snapshot or clone is cut (or fsck looks at data files): no file data
    /// changes meanwhile. Taken before the write lock.
    pub(crate) fn cutting(&self) -> RwLockWriteGuard<'_, ()> {
        self.cut.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Cuts a snapshot of `volume` named `volume@snap`: it holds every change completed before
    /// the call and none after. Refused while the kernel reads or writes a file of the volume
    /// directly (passthrough), since those writes could not be kept out of the snapshot.
    pub fn create_snapshot(&self, volume: &VolumeName, snap: &VolumeName) -> Result<Volume> {
        let name = format!("{volume}@{snap}");
        let _cutting = self.cutting();
        self.persist_overlays()?;
        let _w = self.lock();
        if self.meta.volume(&name)?.is_some() {
            return Err(Error::Exists(format!("snapshot {name}")));
        }
        let source = self.writable_volume(volume.as_str())?;
        self.cut(&source, &name, true, source.capacity, source.inodes)
    }

    /// Creates volume `name` from `source`: a clone of a volume or a restore of a snapshot,
    /// sharing its records and data until either side changes them. Without a capacity or an
    /// inode limit, it takes its source's. A capacity or inode limit below what the source
    /// holds is refused.
    pub fn create_volume_from(
        &self,
        name: &VolumeName,
        source: &Source,
        capacity: Option<u64>,
        inodes: Option<u64>,
    ) -> Result<Volume> {
        let source_name = match source {
            Source::Nothing => return self.create_volume(name, capacity.unwrap_or(0), inodes),
            Source::Volume(v) => v,
            Source::Snapshot(s) => s,
        };
        let _cutting = self.cutting();
        self.persist_overlays()?;
        let _w = self.lock();
        if self.meta.volume(name.as_str())?.is_some() {
            return Err(Error::Exists(format!("volume {name}")));
        }
        let from = match source {
            Source::Snapshot(s) => {
                parse_snapshot_name(s)?;
                self.volume(s)?
            }
            _ => self.writable_volume(source_name)?,
        };
        let capacity = capacity.unwrap_or(from.capacity);
        let held = self.space_of(from.id)?.used;
        if capacity > 0 && capacity < held {
            return Err(Error::Invalid(format!(
                "{source_name} holds {} ({held} bytes); a capacity of {capacity} bytes is less",
                crate::quantity::HumanBytes(held)
            )));
        }
        self.cut(&from, name.as_str(), false, capacity, inodes.or(from.inodes))
    }

    /// A volume (not a snapshot) by name.
    fn writable_volume(&self, name: &str) -> Result<Volume> {
        let volume = self.volume(name)?;
        if volume.is_snapshot() {
            return Err(Error::Invalid(format!("{name} is a snapshot; name a volume")));
        }
        Ok(volume)
    }

    /// Makes a new view `name` that shares everything `from` holds now: a read-only snapshot,
    /// or a writable volume. A writable source goes on in a new layer of its own. The caller
    /// holds the cut and write locks.
    fn cut(&self, from: &Volume, name: &str, snapshot: bool, capacity: u64, inodes: Option<u64>) -> Result<Volume> {
        if !from.is_snapshot() && self.has_passthrough_files(from.id) {
            return Err(Error::Busy(format!(
                "volume {} has files open with passthrough I/O (the kernel changes them directly); \
                 close them, or mount the volume with --no-passthrough or give it a capacity",
                from.name
            )));
        }
        let meta = &self.meta;
        let mut txn = Txn::default();
        let id = VolumeId(self.meta.alloc_id(&mut txn));
        let view = self.alloc_view(&mut txn)?;
        let mut layers = from.layers.clone();
        if !snapshot {
            layers.insert(0, self.meta.alloc_id(&mut txn));
        }
        if !from.is_snapshot() {
            let mut source = from.clone();
            source.layers.insert(0, self.meta.alloc_id(&mut txn));
            txn.put_volume(&source);
        }
        let new = Volume {
            id,
            name: name.to_string(),
            root: from.root.in_view(view),
            capacity,
            created: Timestamp::now(),
            view,
            layers,
            snapshot_of: snapshot.then(|| from.name.clone()),
            inodes,
        };
        let held_inodes = meta.usage(from.id)?.inodes;
        super::volumes::check_inodes_fit(&new, held_inodes)?;
        let used = self.space_of(from.id)?.used;
        // Files open but unlinked at the cut are orphans of the new view too: a clone reclaims
        // them at the next start, a snapshot keeps them until it goes.
        for orphan in meta.orphans()?.into_iter().filter(|o| o.view() == from.view) {
            txn.put_orphan(orphan.in_view(view));
        }
        txn.put_volume(&new);
        txn.put_usage(id, &Usage { inodes: held_inodes, bytes: used });
        meta.commit(txn)?;
        self.start_account(&new, used);
        tracing::info!(from = %from.name, to = %new.name, snapshot, "cut");
        Ok(new)
    }

    /// Every snapshot, or those of one volume, oldest first.
    pub fn snapshots(&self, of: Option<&str>) -> Result<Vec<SnapshotInfo>> {
        let meta = &self.meta;
        let mut snapshots: Vec<Volume> = meta
            .volumes()?
            .into_iter()
            .filter(|v| v.snapshot_of.as_deref().is_some_and(|s| of.is_none_or(|o| o == s)))
            .collect();
        if let Some(volume) = of {
            if snapshots.is_empty() {
                self.writable_volume(volume)?;
            }
        }
        snapshots.sort_by_key(|s| (s.created, s.name.clone()));
        // Which chunks a file holds of its own reaches its record at fsync or close; a write
        // just answered (its file's release still on its way) counts too.
        self.persist_overlays()?;
        let seen = self.sights()?;
        snapshots
            .iter()
            .map(|s| {
                let mut exclusive = 0;
                for (id, views) in seen.iter().filter(|(_, v)| v.contains_key(&s.id)) {
                    exclusive += self.unseen_bytes(*id, views.iter().filter(|(v, _)| **v != s.id).map(|(_, s)| s))?;
                }
                self.snapshot_info(s, exclusive)
            })
            .collect()
    }

    /// What each volume and snapshot sees of each data file: all of it (its own), or some
    /// chunks (a shared file under its own).
    fn sights(&self) -> Result<HashMap<DataId, HashMap<VolumeId, Sight>>> {
        let mut seen: HashMap<DataId, HashMap<VolumeId, Sight>> = HashMap::new();
        for (_, inode) in self.meta.all_inodes()? {
            for (id, sight) in sights(&inode) {
                seen.entry(id).or_default().entry(inode.volume).or_insert(Sight::Chunks(HashSet::new())).add(sight);
            }
        }
        Ok(seen)
    }

    /// Bytes of data file `id` in chunks none of `others` sees.
    fn unseen_bytes<'a>(&self, id: DataId, others: impl Iterator<Item = &'a Sight>) -> Result<u64> {
        let mut chunks = HashSet::new();
        for sight in others {
            match sight {
                Sight::All => return Ok(0),
                Sight::Chunks(c) => chunks.extend(c.iter().copied()),
            }
        }
        let file = self.data.open(id)?;
        let mut bytes = crate::data::blocks::allocated_total(&file)?;
        for c in chunks {
            bytes -= crate::data::blocks::allocated(&file, c * CHUNK, (c + 1) * CHUNK)?;
        }
        Ok(bytes)
    }

    /// What `volfs snapshot list` shows of `snapshot`, given the bytes only it holds (none at
    /// the moment it is cut).
    pub fn snapshot_info(&self, snapshot: &Volume, exclusive_bytes: u64) -> Result<SnapshotInfo> {
        Ok(SnapshotInfo {
            name: snapshot.name.clone(),
            volume: snapshot.snapshot_of.clone().unwrap_or_default(),
            created_unix: snapshot.created.secs,
            size_bytes: self.space_of(snapshot.id)?.used,
            exclusive_bytes,
        })
    }

    /// Deletes snapshot `VOLUME@SNAP`; the space only it held comes back.
    pub fn delete_snapshot(&self, full: &str) -> Result<()> {
        parse_snapshot_name(full)?;
        let snapshot = self.volume(full).map_err(|_| Error::NotFound(format!("snapshot {full}")))?;
        let _cutting = self.cutting();
        // Chunks the volume has replaced by now are freed with the snapshot, whether or not
        // their files were closed yet.
        self.persist_overlays()?;
        let _w = self.lock();
        self.drop_view(&snapshot)
    }

    /// Removes a view's record and its orphans, then collects the layers it leaves unread or
    /// read through a single newer layer. The caller holds the cut and write locks.
    pub(super) fn drop_view(&self, volume: &Volume) -> Result<()> {
        let meta = &self.meta;
        let mut txn = Txn::default();
        for ino in meta.orphans()?.into_iter().filter(|o| o.view() == volume.view) {
            txn.delete_orphan(ino);
        }
        txn.delete_volume(volume);
        meta.commit(txn)?;
        self.forget_account(volume.id);
        self.collect_layers(&volume.layers)?;
        // A layer several views still read may hold the only reference to a data file that
        // every one of them has replaced: no view sees it any more.
        let unseen = self.unreferenced_data()?;
        self.remove_unshared(&unseen);
        self.punch_unseen_chunks()
    }

    /// Frees the chunks of shared data files that no view sees any more (every view holds
    /// them in a newer data file of its own).
    fn punch_unseen_chunks(&self) -> Result<()> {
        let punch = rustix::fs::FallocateFlags::PUNCH_HOLE | rustix::fs::FallocateFlags::KEEP_SIZE;
        for (id, views) in self.sights()? {
            let mut sight = Sight::Chunks(HashSet::new());
            views.into_values().for_each(|v| sight.add(v));
            let Sight::Chunks(chunks) = sight else { continue };
            let file = std::fs::OpenOptions::new().write(true).open(self.data.path(id))?;
            for (start, end) in crate::data::blocks::allocated_ranges(&file, 0, u64::MAX >> 1)? {
                for c in (start / CHUNK..end.div_ceil(CHUNK)).filter(|c| !chunks.contains(c)) {
                    rustix::fs::fallocate(&file, punch, c * CHUNK, CHUNK)?;
                }
            }
        }
        Ok(())
    }

    /// Drops each of `candidates` that no view reads (with the data files it owns) and merges
    /// one that every view reading it reads through the same newer layer into that layer.
    fn collect_layers(&self, candidates: &[LayerId]) -> Result<()> {
        let mut pending: Vec<LayerId> = candidates.to_vec();
        while let Some(layer) = pending.pop() {
            let volumes = self.meta.volumes()?;
            let readers: Vec<&Volume> = volumes.iter().filter(|v| v.layers.contains(&layer)).collect();
            if readers.is_empty() {
                self.drop_layer(layer)?;
                continue;
            }
            let newer: HashSet<Option<LayerId>> = readers
                .iter()
                .map(|v| {
                    let at = v.layers.iter().position(|l| *l == layer).expect("reads the layer");
                    at.checked_sub(1).map(|i| v.layers[i])
                })
                .collect();
            // A view's own newest layer stays; so does one that views read through different layers.
            if let [Some(into)] = newer.into_iter().collect::<Vec<_>>()[..] {
                self.merge_layer(layer, into, &volumes)?;
                pending.push(into);
            }
        }
        Ok(())
    }

    /// Removes every record of a layer no view reads. Its data files go with the sweep that
    /// follows.
    fn drop_layer(&self, layer: LayerId) -> Result<()> {
        let meta = &self.meta;
        let mut txn = Txn::default();
        for table in LayerTable::ALL {
            for (key, _) in meta.layer_records(table, layer)? {
                txn.delete_layer_record(table, layer, &key);
            }
        }
        meta.commit(txn)
    }

    /// Moves the records of `layer` that `into` does not override into `into`, and drops the
    /// rest (their data files go with the sweep that follows). Every view reading `layer`
    /// reads `into` just before it, so none sees a difference. Data files made in `layer`
    /// belong to `into` from now on, in every record that names them.
    fn merge_layer(&self, layer: LayerId, into: LayerId, volumes: &[Volume]) -> Result<()> {
        let meta = &self.meta;
        let mut txn = Txn::default();
        let adopt = |record: &[u8]| -> Result<Option<Vec<u8>>> {
            let mut inode = decode_inode(record)?;
            Ok((inode.data_layer == layer).then(|| {
                inode.data_layer = into;
                encode_inode(&inode)
            }))
        };
        for table in LayerTable::ALL {
            for (key, record) in meta.layer_records(table, layer)? {
                txn.delete_layer_record(table, layer, &key);
                if meta.layer_record(table, into, &key)?.is_some() {
                    continue;
                }
                let moved = match (&record, table) {
                    (Some(r), LayerTable::Inodes) => Some(adopt(r)?.unwrap_or_else(|| r.clone())),
                    _ => record,
                };
                txn.put_layer_record(table, into, &key, moved);
            }
        }
        let newer: HashSet<LayerId> = volumes
            .iter()
            .filter_map(|v| v.layers.iter().position(|l| *l == layer).map(|at| &v.layers[..at]))
            .flatten()
            .copied()
            .collect();
        for above in newer {
            for (key, record) in meta.layer_records(LayerTable::Inodes, above)? {
                if let Some(adopted) = record.as_deref().map(adopt).transpose()?.flatten() {
                    txn.put_layer_record(LayerTable::Inodes, above, &key, Some(adopted));
                }
            }
        }
        for v in volumes.iter().filter(|v| v.layers.contains(&layer)) {
            let mut v = v.clone();
            v.layers.retain(|l| *l != layer);
            txn.put_volume(&v);
        }
        meta.commit(txn)
    }

    /// Removes data files no view reads any more (their blocks were in no volume's usage).
    fn remove_unshared(&self, ids: &[DataId]) {
        for &id in ids {
            if let Err(e) = self.data.remove(id) {
                // fsck --repair reclaims a data file left behind.
                tracing::warn!(data = id.0, error = %e, "could not remove data file");
            }
        }
    }
}

/// What a view sees of a data file.
enum Sight {
    All,
    Chunks(HashSet<u64>),
}

impl Sight {
    fn add(&mut self, more: Sight) {
        match (&mut *self, more) {
            (Sight::All, _) => {}
            (_, Sight::All) => *self = Sight::All,
            (Sight::Chunks(mine), Sight::Chunks(more)) => mine.extend(more),
        }
    }
}

/// What an inode shows of each of its data files: all of its own; of a shared one under it,
/// the chunks no newer level holds, up to where the newer levels cut it off.
fn sights(inode: &Inode) -> Vec<(DataId, Sight)> {
    let mut out: Vec<(DataId, Sight)> = inode.data.map(|id| (id, Sight::All)).into_iter().collect();
    let mut above: Vec<&Level> = vec![&inode.under.top];
    for (id, level) in &inode.under.lower {
        let limit = above.iter().map(|l| l.limit).min().unwrap_or(0);
        let chunks = (0..limit.div_ceil(CHUNK)).filter(|c| !above.iter().any(|l| l.held.contains(*c))).collect();
        out.push((*id, Sight::Chunks(chunks)));
        above.push(level);
    }
    out
}
