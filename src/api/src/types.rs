//! Requests and the answers to them.

use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::error::ApiError;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    Ping,
    /// A new volume: empty, a clone of a volume, or a restore of a snapshot. Without a
    /// capacity, a clone or restore takes its source's, a new volume has none. Asking again
    /// for a volume that exists with the same capacity answers that volume.
    CreateVolume {
        name: String,
        #[serde(default)]
        capacity: Option<u64>,
        /// The most inodes it may hold; without it, one per 16 KiB of capacity (a clone or
        /// restore takes its source's), or no limit but the pool's without a capacity.
        #[serde(default)]
        inodes: Option<u64>,
        #[serde(default)]
        from: Option<VolumeSource>,
    },
    /// Cut a snapshot; asking again for one that exists answers it.
    CreateSnapshot {
        snapshot: SnapshotRef,
    },
    /// Every snapshot, or those of one volume.
    ListSnapshots {
        #[serde(default)]
        volume: Option<String>,
    },
    DeleteSnapshot {
        snapshot: SnapshotRef,
    },
    ListVolumes,
    InspectVolume {
        name: String,
    },
    DeleteVolume {
        name: String,
    },
    ResizeVolume {
        name: String,
        capacity: u64,
    },
    /// Mount a volume, or a snapshot of it (read-only). Asking again for the same mount at the
    /// same mountpoint answers that mount.
    Mount {
        volume: String,
        #[serde(default)]
        snapshot: Option<String>,
        mountpoint: PathBuf,
        read_only: bool,
        passthrough: bool,
        /// Show only this directory of the volume (a subPath mount).
        #[serde(default)]
        subpath: Option<String>,
        /// Make the subpath's missing directories.
        #[serde(default)]
        create: bool,
    },
    Umount {
        mountpoint: PathBuf,
    },
    /// Mount a projected tree built from `spec` (its text: the CLI reads the file).
    ProjectMount {
        spec: SpecText,
        mountpoint: PathBuf,
        #[serde(default)]
        subpath: Option<String>,
    },
    /// Swap a new generation built from `spec` into the projected tree at `mountpoint`.
    ProjectUpdate {
        mountpoint: PathBuf,
        spec: SpecText,
    },
    ListMounts,
    /// What the daemon has counted: requests by operation, bytes, usage (`PoolStats`). With
    /// `snapshot_bytes`, also each snapshot's exclusive bytes (a walk of every inode).
    Stats {
        #[serde(default)]
        snapshot_bytes: bool,
    },
    Fsck {
        repair: bool,
    },
    Shutdown,
}

/// A snapshot: `name` of `volume`, written `VOLUME@NAME` for people.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotRef {
    pub volume: String,
    pub name: String,
}

impl SnapshotRef {
    /// Splits `VOLUME@SNAP`.
    pub fn parse(full: &str) -> Result<Self, ApiError> {
        match full.split_once('@') {
            Some((volume, name)) if !name.contains('@') => {
                Ok(SnapshotRef { volume: volume.to_string(), name: name.to_string() })
            }
            _ => Err(ApiError::invalid(format!("snapshot {full:?} must be named VOLUME@SNAPSHOT"))),
        }
    }
}

impl fmt::Display for SnapshotRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.volume, self.name)
    }
}

/// What a new volume starts from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum VolumeSource {
    /// Clone this volume as it is now.
    Volume(String),
    /// Restore this snapshot.
    Snapshot(SnapshotRef),
}

/// The text of a projection SPEC. It may hold secrets, so `Debug` shows only its size.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SpecText(pub String);

impl fmt::Debug for SpecText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<spec, {} bytes>", self.0.len())
    }
}

/// The answer on the wire.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Response {
    Ok(serde_json::Value),
    Error(ApiError),
}

/// A volume, as `volume list` and `inspect` show it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VolumeInfo {
    pub name: String,
    pub id: u64,
    /// `None`: no capacity, the volume may fill the pool.
    pub capacity: Option<u64>,
    pub used_bytes: u64,
    /// What `df` on a mount shows as available.
    pub available_bytes: u64,
    /// Inodes it holds.
    pub inodes: u64,
    pub inodes_free: u64,
    /// `None`: no inode limit of its own, bounded by the pool.
    #[serde(default)]
    pub inode_limit: Option<u64>,
    pub created_unix: i64,
    /// Where it is mounted (filled in by `InspectVolume`).
    #[serde(default)]
    pub mounts: Vec<MountInfo>,
}

/// A snapshot, as `snapshot list` shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SnapshotInfo {
    /// `VOLUME@SNAP`
    pub name: String,
    pub volume: String,
    pub created_unix: i64,
    /// Bytes of data blocks its files hold.
    pub size_bytes: u64,
    /// Bytes of data blocks no volume or other snapshot shares: what deleting it frees.
    pub exclusive_bytes: u64,
}

/// A mount the daemon serves.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MountInfo {
    /// The volume (or `VOLUME@SNAP`); empty for a projected tree.
    pub volume: String,
    pub projected: bool,
    /// The directory shown, for a subPath mount; empty for the whole volume or tree.
    pub subpath: String,
    pub mountpoint: PathBuf,
    pub read_only: bool,
}

/// Who answered a ping.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Pong {
    pub pid: u32,
    pub pool: PathBuf,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip_and_reject_unknown_fields() {
        let r = Request::Mount {
            volume: "a".into(),
            snapshot: Some("s".into()),
            mountpoint: "/m".into(),
            read_only: true,
            passthrough: false,
            subpath: Some("x/y".into()),
            create: true,
        };
        let text = serde_json::to_string(&r).unwrap();
        assert_eq!(serde_json::from_str::<Request>(&text).unwrap(), r);
        assert!(serde_json::from_str::<Request>(r#"{"op":"umount","mountpoint":"/m","extra":1}"#).is_err());
    }

    #[test]
    fn spec_text_is_redacted_in_debug() {
        let r = Request::ProjectUpdate { mountpoint: "/m".into(), spec: SpecText("password: hunter2".into()) };
        let shown = format!("{r:?}");
        assert!(!shown.contains("hunter2") && shown.contains("17 bytes"), "{shown}");
    }

    #[test]
    fn snapshot_names_split_at_one_at_sign() {
        let s = SnapshotRef::parse("vol@snap").unwrap();
        assert_eq!((s.volume.as_str(), s.name.as_str()), ("vol", "snap"));
        assert_eq!(s.to_string(), "vol@snap");
        for bad in ["vol", "a@b@c"] {
            assert!(SnapshotRef::parse(bad).unwrap_err().message.contains("VOLUME@SNAPSHOT"));
        }
    }

    #[test]
    fn errors_travel_with_their_kind() {
        let r = Response::Error(ApiError::exists("volume a"));
        let back: Response = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
        assert!(matches!(back, Response::Error(e) if e.kind == crate::ErrorKind::Exists && e.message == "volume a"));
    }
}
