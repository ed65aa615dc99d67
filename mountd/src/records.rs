//! mountd's records, in an embedded transactional store (redb) in the state dir: every CSI
//! volume, snapshot, attachment, stage and publication, and every Docker volume. A record is
//! written before the action it describes and updated after, so a restart finds what was in
//! flight (`State`) and finishes it. Each commit is durable before the call returns.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::Result;

/// Where an action described by a record stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Recorded, maybe not done yet.
    Creating,
    /// Done.
    Ready,
    /// Being undone; the record goes once it is.
    Deleting,
}

/// A kind of record: its table, and the key it is filed under.
pub trait Record: Serialize + DeserializeOwned {
    const TABLE: TableDefinition<'static, &'static str, &'static [u8]>;
    fn key(&self) -> String;
}

/// What a volume was created from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    Snapshot(String),
    Volume(String),
}

/// A CSI volume: the CO's name for it and the data-plane volume (`volume_id`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VolumeRecord {
    pub volume_id: String,
    pub name: String,
    /// `None`: the volume has no capacity.
    pub capacity: Option<u64>,
    pub parameters: BTreeMap<String, String>,
    pub origin: Option<Origin>,
    /// Made by NodePublish for an inline (ephemeral) volume; deleted by NodeUnpublish.
    pub ephemeral: bool,
    pub state: State,
}

impl Record for VolumeRecord {
    const TABLE: TableDefinition<'static, &'static str, &'static [u8]> = TableDefinition::new("volumes");
    fn key(&self) -> String {
        self.volume_id.clone()
    }
}

/// A CSI snapshot: the CO's name, and `volume@snap` in the data plane.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SnapshotRecord {
    pub snapshot_id: String,
    pub name: String,
    pub source_volume_id: String,
    /// The smallest volume it restores into: its source's capacity at the cut, else its size.
    pub size_bytes: u64,
    pub created_unix: i64,
    pub state: State,
}

impl Record for SnapshotRecord {
    const TABLE: TableDefinition<'static, &'static str, &'static [u8]> = TableDefinition::new("snapshots");
    fn key(&self) -> String {
        self.snapshot_id.clone()
    }
}

/// ControllerPublish: a volume attached to a node.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AttachmentRecord {
    pub volume_id: String,
    pub node_id: String,
    pub readonly: bool,
    /// The CSI access mode it was attached with.
    pub mode: i32,
}

impl Record for AttachmentRecord {
    const TABLE: TableDefinition<'static, &'static str, &'static [u8]> = TableDefinition::new("attachments");
    fn key(&self) -> String {
        pair_key(&self.volume_id, &self.node_id)
    }
}

/// NodeStage: a volume made ready on this node at its staging path.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StageRecord {
    pub volume_id: String,
    pub staging_path: PathBuf,
    pub mode: i32,
}

impl Record for StageRecord {
    const TABLE: TableDefinition<'static, &'static str, &'static [u8]> = TableDefinition::new("stages");
    fn key(&self) -> String {
        self.volume_id.clone()
    }
}

/// A FUSE mount mountd asked for: a CSI NodePublish target, or a Docker volume's mountpoint.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PublicationRecord {
    pub volume_id: String,
    pub target: PathBuf,
    pub readonly: bool,
    pub mode: i32,
    /// A subPath mount of this directory of the volume (static PVs' `subPath` attribute).
    pub subpath: Option<String>,
    pub state: State,
}

impl Record for PublicationRecord {
    const TABLE: TableDefinition<'static, &'static str, &'static [u8]> = TableDefinition::new("publications");
    fn key(&self) -> String {
        pair_key(&self.volume_id, &self.target.to_string_lossy())
    }
}

/// A Docker volume: Docker's name, the data-plane volume, and the containers that mount it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DockerRecord {
    pub name: String,
    pub volume_id: String,
    pub opts: BTreeMap<String, String>,
    /// The ids of the containers that have it mounted (Docker's Mount/Unmount `ID`).
    pub mounted_by: BTreeSet<String>,
    pub state: State,
}

impl Record for DockerRecord {
    const TABLE: TableDefinition<'static, &'static str, &'static [u8]> = TableDefinition::new("docker");
    fn key(&self) -> String {
        self.name.clone()
    }
}

/// Two ids in one key; NUL appears in neither (they are validated).
pub fn pair_key(a: &str, b: &str) -> String {
    format!("{a}\0{b}")
}

pub struct Records {
    db: redb::Database,
}

impl Records {
    /// Opens (or creates) the store in `state_dir`.
    pub fn open(state_dir: &Path) -> Result<Self> {
        let db = redb::Database::create(state_dir.join("records.redb"))?;
        let txn = db.begin_write()?;
        open_tables(&txn)?;
        txn.commit()?;
        Ok(Records { db })
    }

    pub fn get<R: Record>(&self, key: &str) -> Result<Option<R>> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(R::TABLE)?;
        let value = table.get(key)?;
        Ok(value.map(|v| serde_json::from_slice(v.value())).transpose()?)
    }

    /// Writes `record`, durably.
    pub fn put<R: Record>(&self, record: &R) -> Result<()> {
        let bytes = serde_json::to_vec(record)?;
        let txn = self.db.begin_write()?;
        txn.open_table(R::TABLE)?.insert(record.key().as_str(), bytes.as_slice())?;
        txn.commit()?;
        Ok(())
    }

    pub fn remove<R: Record>(&self, key: &str) -> Result<()> {
        let txn = self.db.begin_write()?;
        txn.open_table(R::TABLE)?.remove(key)?;
        txn.commit()?;
        Ok(())
    }

    /// Every record of a kind, in key order.
    pub fn all<R: Record>(&self) -> Result<Vec<R>> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(R::TABLE)?;
        let mut all = Vec::new();
        for entry in table.iter()? {
            let (_, v) = entry?;
            all.push(serde_json::from_slice(v.value())?);
        }
        Ok(all)
    }

    /// The records of a kind whose key starts with `prefix`.
    pub fn with_prefix<R: Record>(&self, prefix: &str) -> Result<Vec<R>> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(R::TABLE)?;
        let mut found = Vec::new();
        for entry in table.range(prefix..)? {
            let (k, v) = entry?;
            if !k.value().starts_with(prefix) {
                break;
            }
            found.push(serde_json::from_slice(v.value())?);
        }
        Ok(found)
    }
}

fn open_tables(txn: &redb::WriteTransaction) -> Result<()> {
    txn.open_table(VolumeRecord::TABLE)?;
    txn.open_table(SnapshotRecord::TABLE)?;
    txn.open_table(AttachmentRecord::TABLE)?;
    txn.open_table(StageRecord::TABLE)?;
    txn.open_table(PublicationRecord::TABLE)?;
    txn.open_table(DockerRecord::TABLE)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn publication(volume: &str, target: &str) -> PublicationRecord {
        PublicationRecord {
            volume_id: volume.into(),
            target: target.into(),
            readonly: false,
            mode: 1,
            subpath: None,
            state: State::Ready,
        }
    }

    #[test]
    fn records_survive_reopening_and_list_by_prefix() {
        let dir = tempfile::tempdir().unwrap();
        {
            let records = Records::open(dir.path()).unwrap();
            for (v, t) in [("a", "/t1"), ("a", "/t2"), ("ab", "/t3")] {
                records.put(&publication(v, t)).unwrap();
            }
            records.remove::<PublicationRecord>(&pair_key("a", "/t2")).unwrap();
        }
        let records = Records::open(dir.path()).unwrap();
        let of_a: Vec<_> = records.with_prefix::<PublicationRecord>(&pair_key("a", "")).unwrap();
        assert_eq!(of_a, vec![publication("a", "/t1")]);
        assert_eq!(records.all::<PublicationRecord>().unwrap().len(), 2);
        assert_eq!(records.get::<PublicationRecord>(&pair_key("ab", "/t3")).unwrap(), Some(publication("ab", "/t3")));
        assert!(records.get::<VolumeRecord>("a").unwrap().is_none());
    }
}
