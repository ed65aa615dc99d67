//! Brings the node to what the records say, at start and whenever the data plane comes back:
//! `plan` decides from the records and the mounts that exist (a pure function, tested without
//! I/O), `at_start` acts through the driver.

use std::collections::HashSet;
use std::path::PathBuf;

use volfs_api::MountInfo;

use crate::driver::{detach_stale_mount, Driver};
use crate::records::{PublicationRecord, SnapshotRecord, State, VolumeRecord};

#[derive(Debug, PartialEq)]
pub enum Action {
    CreateVolume(VolumeRecord),
    DeleteVolume(VolumeRecord),
    CreateSnapshot(SnapshotRecord),
    DeleteSnapshot(SnapshotRecord),
    /// A publication whose mount is missing (the data plane restarted, or mountd died mid-way).
    Mount(PublicationRecord),
    Unpublish(PublicationRecord),
}

pub fn plan(
    volumes: Vec<VolumeRecord>,
    snapshots: Vec<SnapshotRecord>,
    publications: Vec<PublicationRecord>,
    mounts: &[MountInfo],
) -> Vec<Action> {
    let mut actions = Vec::new();
    for v in volumes {
        match v.state {
            State::Creating => actions.push(Action::CreateVolume(v)),
            State::Deleting => actions.push(Action::DeleteVolume(v)),
            State::Ready => {}
        }
    }
    for s in snapshots {
        match s.state {
            State::Creating => actions.push(Action::CreateSnapshot(s)),
            State::Deleting => actions.push(Action::DeleteSnapshot(s)),
            State::Ready => {}
        }
    }
    let mounted: HashSet<(&str, &PathBuf)> = mounts.iter().map(|m| (m.volume.as_str(), &m.mountpoint)).collect();
    for p in publications {
        match p.state {
            State::Deleting => actions.push(Action::Unpublish(p)),
            State::Creating | State::Ready if !mounted.contains(&(p.volume_id.as_str(), &p.target)) => {
                actions.push(Action::Mount(p))
            }
            State::Creating | State::Ready => {}
        }
    }
    actions
}

/// Finishes what the records left in flight; failures are logged and retried at the next pass.
pub async fn at_start(driver: &Driver) {
    let records = &driver.records;
    let (volumes, snapshots, publications) = match (records.all(), records.all(), records.all()) {
        (Ok(v), Ok(s), Ok(p)) => (v, s, p),
        _ => return tracing::error!("cannot read mountd's records"),
    };
    let mounts = match driver.data.client().list_mounts().await {
        Ok(m) => m,
        Err(e) => return tracing::warn!(error = %e, "cannot list the data plane's mounts"),
    };
    for action in plan(volumes, snapshots, publications, &mounts) {
        tracing::info!(?action, "reconciling");
        let done = match &action {
            Action::CreateVolume(v) => driver.create_volume(v).await.map(drop),
            Action::DeleteVolume(v) => driver.delete_volume(v).await,
            Action::CreateSnapshot(s) => driver.create_snapshot(s).await.map(drop),
            Action::DeleteSnapshot(s) => driver.delete_snapshot(s).await,
            Action::Mount(p) => {
                detach_stale_mount(&p.target);
                driver.publish(p).await.map(drop)
            }
            Action::Unpublish(p) => driver.unpublish(p).await,
        };
        if let Err(e) = done {
            tracing::warn!(?action, error = %e, "could not reconcile");
        }
    }
    crate::docker::finish_in_flight(driver).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn volume(id: &str, state: State) -> VolumeRecord {
        VolumeRecord {
            volume_id: id.into(),
            name: id.into(),
            capacity: Some(1 << 20),
            parameters: Default::default(),
            origin: None,
            ephemeral: false,
            state,
        }
    }

    fn publication(id: &str, target: &str, state: State) -> PublicationRecord {
        PublicationRecord {
            volume_id: id.into(),
            target: target.into(),
            readonly: false,
            mode: 1,
            subpath: None,
            state,
        }
    }

    fn mount(volume: &str, at: &str) -> MountInfo {
        MountInfo {
            volume: volume.into(),
            projected: false,
            subpath: String::new(),
            mountpoint: at.into(),
            read_only: false,
        }
    }

    #[test]
    fn records_in_flight_are_finished() {
        let volumes = vec![volume("a", State::Creating), volume("b", State::Ready), volume("c", State::Deleting)];
        let actions = plan(volumes, vec![], vec![], &[]);
        assert_eq!(
            actions,
            vec![
                Action::CreateVolume(volume("a", State::Creating)),
                Action::DeleteVolume(volume("c", State::Deleting))
            ]
        );
    }

    #[test]
    fn publications_without_their_mount_are_mounted_again() {
        let pubs = vec![
            publication("a", "/t/a", State::Ready),
            publication("b", "/t/b", State::Ready),
            publication("c", "/t/c", State::Creating),
            publication("d", "/t/d", State::Deleting),
        ];
        let mounts = [mount("a", "/t/a"), mount("x", "/t/b")];
        let actions = plan(vec![], vec![], pubs, &mounts);
        assert_eq!(
            actions,
            vec![
                Action::Mount(publication("b", "/t/b", State::Ready)),
                Action::Mount(publication("c", "/t/c", State::Creating)),
                Action::Unpublish(publication("d", "/t/d", State::Deleting)),
            ]
        );
    }

    #[test]
    fn nothing_to_do_when_records_match_the_mounts() {
        let pubs = vec![publication("a", "/t/a", State::Ready)];
        assert!(plan(vec![volume("a", State::Ready)], vec![], pubs, &[mount("a", "/t/a")]).is_empty());
    }
}
