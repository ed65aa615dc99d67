//! What the CSI services and the Docker plugin share: the records, the data plane, the
//! in-flight guard, and the actions that change anything. Every action writes its record
//! first (state `Creating` or `Deleting`), acts, then records the outcome, so a crash in
//! between leaves a record that `reconcile` finishes at the next start.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};

use volfs_api::{ErrorKind, MountInfo, Request, SnapshotInfo, SnapshotRef, VolumeInfo, VolumeSource};

use crate::dataplane::DataPlane;
use crate::error::{Error, Result};
use crate::inflight::InFlight;
use crate::records::{Origin, PublicationRecord, Record, Records, SnapshotRecord, State, VolumeRecord};

pub struct Driver {
    pub node_id: String,
    pub records: Records,
    pub data: DataPlane,
    pub inflight: InFlight,
    pub state_dir: PathBuf,
    pub max_volumes_per_node: i64,
    /// Requests answered, for `--metrics-addr`.
    pub metrics: std::sync::Arc<crate::metrics::Metrics>,
    /// The pid of the data plane last seen, to notice a restart.
    data_plane_pid: AtomicU32,
}

impl Driver {
    pub fn new(node_id: String, records: Records, data: DataPlane, state_dir: PathBuf, max_volumes: i64) -> Self {
        Driver {
            node_id,
            records,
            data,
            inflight: InFlight::default(),
            state_dir,
            max_volumes_per_node: max_volumes,
            metrics: Default::default(),
            data_plane_pid: AtomicU32::new(0),
        }
    }

    /// Whether the data plane answering now is another process than the one seen before.
    pub fn data_plane_restarted(&self, pid: u32) -> bool {
        self.data_plane_pid.swap(pid, Ordering::SeqCst) != pid
    }

    /// The data plane's volume `id`; NOT_FOUND naming it when there is none.
    pub async fn existing_volume(&self, id: &str) -> Result<VolumeInfo> {
        match self.data.client().inspect_volume(id).await {
            Ok(info) => Ok(info),
            Err(e) if e.kind == ErrorKind::NotFound => Err(Error::NotFound(format!("volume {id} does not exist"))),
            Err(e) => Err(e.into()),
        }
    }

    /// Whether a data-plane volume of this name exists or is recorded (by CSI or Docker).
    pub async fn volume_name_taken(&self, name: &str) -> Result<bool> {
        if self.records.get::<VolumeRecord>(name)?.is_some() {
            return Ok(true);
        }
        match self.data.client().inspect_volume(name).await {
            Ok(_) => Ok(true),
            Err(e) if e.kind == ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Creates the volume `record` describes (recorded first), or finishes creating it.
    pub async fn create_volume(&self, record: &VolumeRecord) -> Result<VolumeInfo> {
        let mut record = record.clone();
        if record.state != State::Ready {
            record.state = State::Creating;
            self.records.put(&record)?;
        }
        let from = match &record.origin {
            None => None,
            Some(Origin::Volume(v)) => Some(VolumeSource::Volume(v.clone())),
            Some(Origin::Snapshot(s)) => Some(VolumeSource::Snapshot(snapshot_ref(s)?)),
        };
        let info = self.data.client().create_volume(&record.volume_id, record.capacity, from).await?;
        if record.state != State::Ready {
            record.state = State::Ready;
            self.records.put(&record)?;
        }
        Ok(info)
    }

    /// Deletes a volume and its record; a volume the data plane no longer has is deleted.
    pub async fn delete_volume(&self, record: &VolumeRecord) -> Result<()> {
        let mut record = record.clone();
        record.state = State::Deleting;
        self.records.put(&record)?;
        match self.data.client().delete_volume(&record.volume_id).await {
            Ok(()) => {}
            Err(e) if e.kind == ErrorKind::NotFound => {}
            Err(e) => return Err(e.into()),
        }
        self.records.remove::<VolumeRecord>(&record.volume_id)?;
        tracing::info!(volume = %record.volume_id, name = %record.name, "deleted volume");
        Ok(())
    }

    /// Cuts the snapshot `record` describes (recorded first), or finishes cutting it.
    pub async fn create_snapshot(&self, record: &SnapshotRecord) -> Result<(SnapshotRecord, SnapshotInfo)> {
        let mut record = record.clone();
        record.state = State::Creating;
        self.records.put(&record)?;
        let info = self.data.client().create_snapshot(&snapshot_ref(&record.snapshot_id)?).await?;
        record.created_unix = info.created_unix;
        record.state = State::Ready;
        self.records.put(&record)?;
        Ok((record, info))
    }

    pub async fn delete_snapshot(&self, record: &SnapshotRecord) -> Result<()> {
        let mut record = record.clone();
        record.state = State::Deleting;
        self.records.put(&record)?;
        match self.data.client().delete_snapshot(&snapshot_ref(&record.snapshot_id)?).await {
            Ok(()) => {}
            Err(e) if e.kind == ErrorKind::NotFound => {}
            Err(e) => return Err(e.into()),
        }
        self.records.remove::<SnapshotRecord>(&record.snapshot_id)?;
        Ok(())
    }

    /// Mounts a volume at `record.target` (made if missing; its parent must exist), recorded first.
    pub async fn publish(&self, record: &PublicationRecord) -> Result<MountInfo> {
        let mut record = record.clone();
        record.state = State::Creating;
        self.records.put(&record)?;
        match std::fs::create_dir(&record.target) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => {
                self.records.remove::<PublicationRecord>(&record.key())?;
                return Err(Error::InvalidArgument(format!("cannot make target {}: {e}", record.target.display())));
            }
        }
        let request = Request::Mount {
            volume: record.volume_id.clone(),
            snapshot: None,
            mountpoint: record.target.clone(),
            read_only: record.readonly,
            passthrough: true,
            subpath: record.subpath.clone(),
            // As the kubelet does for a pod's subPath, a missing directory is made.
            create: record.subpath.is_some(),
        };
        let mounted = match self.data.client().mount(request).await {
            Ok(m) => m,
            Err(e) => {
                // Nothing is mounted: the record goes, the CO's retry starts afresh.
                self.records.remove::<PublicationRecord>(&record.key())?;
                return Err(e.into());
            }
        };
        record.state = State::Ready;
        self.records.put(&record)?;
        tracing::info!(volume = %record.volume_id, target = %record.target.display(), readonly = record.readonly, "published");
        Ok(mounted)
    }

    /// Unmounts `record.target`, removes the directory and the record.
    pub async fn unpublish(&self, record: &PublicationRecord) -> Result<()> {
        let mut record = record.clone();
        record.state = State::Deleting;
        self.records.put(&record)?;
        match self.data.client().umount(&record.target).await {
            Ok(()) => {}
            Err(e) if e.kind == ErrorKind::NotFound => detach_stale_mount(&record.target),
            Err(e) => return Err(e.into()),
        }
        match std::fs::remove_dir(&record.target) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!(target = %record.target.display(), error = %e, "target left in place"),
        }
        self.records.remove::<PublicationRecord>(&record.key())?;
        tracing::info!(volume = %record.volume_id, target = %record.target.display(), "unpublished");
        Ok(())
    }

    /// The publications of one volume.
    pub fn publications_of(&self, volume_id: &str) -> Result<Vec<PublicationRecord>> {
        self.records.with_prefix(&crate::records::pair_key(volume_id, ""))
    }
}

/// A snapshot id is the data plane's `VOLUME@SNAP`.
pub fn snapshot_ref(snapshot_id: &str) -> Result<SnapshotRef> {
    SnapshotRef::parse(snapshot_id).map_err(|_| Error::NotFound(format!("snapshot {snapshot_id} does not exist")))
}

/// A mount the data plane no longer serves (it restarted) may still sit at `target`, answering
/// ENOTCONN: take it off lazily so the path can be used again.
pub fn detach_stale_mount(target: &std::path::Path) {
    // EINVAL (nothing mounted there) is the usual answer.
    if rustix::mount::unmount(target, rustix::mount::UnmountFlags::DETACH).is_ok() {
        tracing::info!(target = %target.display(), "detached a mount the data plane no longer serves");
    }
}
