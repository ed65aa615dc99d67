//! The snapshot controller and the external-snapshotter's work: a VolumeSnapshot of a claim is
//! cut by CSI CreateSnapshot and bound to a VolumeSnapshotContent; a pre-provisioned content is
//! bound to the snapshot that names it; deletion follows the content's `deletionPolicy`.

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;

use super::engine::{bytes_quantity, new_uid, rpc_error, Engine};
use super::object::Object;
use super::snapshot::*;
use super::store::Write;
use super::world::*;
use crate::csi::v1::controller_server::Controller as _;
use crate::csi::v1::{CreateSnapshotRequest, DeleteSnapshotRequest};

const ANN_DEFAULT_SNAPSHOT_CLASS: &str = "snapshot.storage.kubernetes.io/is-default-class";
const SOURCE: &str = "snapshot-controller";

#[derive(Clone, Debug, PartialEq)]
pub enum SnapshotStep {
    /// CreateSnapshot of the claim's volume, then the content and the snapshot's status.
    Cut { snapshot: Box<VolumeSnapshot>, class: Box<VolumeSnapshotClass>, volume_handle: String },
    /// DeleteSnapshot (policy Delete), then the content goes.
    DeleteContent(Box<VolumeSnapshotContent>),
}

fn snapshot_object(s: &VolumeSnapshot) -> Object {
    Object::VolumeSnapshot(s.clone())
}

fn name_of(meta: &ObjectMeta) -> &str {
    meta.name.as_deref().unwrap_or("")
}

/// The snapshot handle of a ready snapshot `namespace/name`, for a restore.
pub fn ready_handle(world: &World, namespace: &str, name: &str) -> Result<String, String> {
    let snapshot = world
        .snapshots
        .iter()
        .find(|s| s.metadata.namespace.as_deref() == Some(namespace) && name_of(&s.metadata) == name)
        .ok_or_else(|| format!("volumesnapshot {name:?} not found"))?;
    let status = snapshot
        .status
        .as_ref()
        .filter(|s| s.ready_to_use == Some(true))
        .ok_or_else(|| format!("volumesnapshot {name:?} is not ready to use yet"))?;
    let content = status
        .bound_volume_snapshot_content_name
        .as_deref()
        .and_then(|c| world.snapshot_contents.iter().find(|x| name_of(&x.metadata) == c));
    content
        .and_then(|c| {
            c.status.as_ref().and_then(|s| s.snapshot_handle.clone()).or_else(|| c.spec.source.snapshot_handle.clone())
        })
        .ok_or_else(|| format!("volumesnapshot {name:?} has no bound content"))
}

fn class_for<'a>(world: &'a World, snapshot: &VolumeSnapshot) -> Result<&'a VolumeSnapshotClass, String> {
    match snapshot.spec.volume_snapshot_class_name.as_deref() {
        Some(name) => world
            .snapshot_classes
            .iter()
            .find(|c| name_of(&c.metadata) == name)
            .ok_or_else(|| format!("volumesnapshotclass.snapshot.storage.k8s.io {name:?} not found")),
        None => {
            let defaults: Vec<_> = world
                .snapshot_classes
                .iter()
                .filter(|c| c.driver == DRIVER && annotation(&c.metadata, ANN_DEFAULT_SNAPSHOT_CLASS) == Some("true"))
                .collect();
            match defaults[..] {
                [one] => Ok(one),
                [] => Err("Failed to get snapshot class with error cannot find default snapshot class".into()),
                _ => Err(format!(
                    "Failed to get snapshot class with error {} default snapshot classes were found",
                    defaults.len()
                )),
            }
        }
    }
}

pub fn plan(world: &World, now: i64) -> Vec<Action> {
    let mut actions = Vec::new();
    for snapshot in &world.snapshots {
        let object = snapshot_object(snapshot);
        let ns = snapshot.metadata.namespace.as_deref().unwrap_or("default");
        let bound = snapshot.status.as_ref().and_then(|s| s.bound_volume_snapshot_content_name.clone());
        let content = bound.as_deref().and_then(|b| world.snapshot_contents.iter().find(|c| name_of(&c.metadata) == b));
        if snapshot.metadata.deletion_timestamp.is_some() {
            match content {
                Some(c) if c.spec.deletion_policy == "Delete" => {
                    actions.push(Action::Snapshot(Box::new(SnapshotStep::DeleteContent(Box::new(c.clone())))))
                }
                Some(c) => {
                    // Retain: the content stays, no longer bound.
                    let mut kept = c.clone();
                    kept.spec.volume_snapshot_ref.uid = None;
                    put_if_changed(
                        &Object::VolumeSnapshotContent(c.clone()),
                        Object::VolumeSnapshotContent(kept),
                        &mut actions,
                    );
                    actions.push(Action::Write(Write::Remove(object.key())));
                }
                None => actions.push(Action::Write(Write::Remove(object.key()))),
            }
            continue;
        }
        if bound.is_some() {
            continue;
        }
        if let Some(claim_name) = &snapshot.spec.source.persistent_volume_claim_name {
            let claim = match world.claim(ns, claim_name) {
                Some(c) => c,
                None => {
                    actions.push(event(
                        &object,
                        true,
                        "SnapshotCreationFailed",
                        format!("Failed to create snapshot: persistentvolumeclaim {claim_name:?} not found"),
                        SOURCE,
                        now,
                    ));
                    continue;
                }
            };
            let handle = claim
                .spec
                .as_ref()
                .and_then(|s| s.volume_name.as_deref())
                .and_then(|v| world.volume(v))
                .filter(|_| claim.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound"))
                .and_then(|v| v.spec.as_ref()?.csi.as_ref())
                .map(|c| c.volume_handle.clone());
            let Some(volume_handle) = handle else {
                let message = format!(
                    "Failed to create snapshot: the source persistentvolumeclaim {claim_name:?} is not bound yet"
                );
                actions.push(event(&object, true, "SnapshotCreationFailed", message, SOURCE, now));
                continue;
            };
            match class_for(world, snapshot) {
                Ok(class) => actions.push(Action::Snapshot(Box::new(SnapshotStep::Cut {
                    snapshot: Box::new(snapshot.clone()),
                    class: Box::new(class.clone()),
                    volume_handle,
                }))),
                Err(message) => actions.push(event(&object, true, "SnapshotCreationFailed", message, SOURCE, now)),
            }
        } else if let Some(content_name) = &snapshot.spec.source.volume_snapshot_content_name {
            // Pre-provisioned: bind to the content that names this snapshot.
            let found = world.snapshot_contents.iter().find(|c| name_of(&c.metadata) == content_name);
            let refers = found.is_some_and(|c| {
                c.spec.volume_snapshot_ref.name.as_deref() == snapshot.metadata.name.as_deref()
                    && c.spec.volume_snapshot_ref.namespace.as_deref() == Some(ns)
            });
            let Some(content) = found.filter(|_| refers) else {
                let message = format!("VolumeSnapshotContent {content_name:?} is missing or does not name this snapshot in spec.volumeSnapshotRef");
                actions.push(event(&object, true, "SnapshotContentCheckandUpdateFailed", message, SOURCE, now));
                continue;
            };
            let mut new = snapshot.clone();
            new.status = Some(VolumeSnapshotStatus {
                bound_volume_snapshot_content_name: Some(content_name.clone()),
                creation_time: content
                    .status
                    .as_ref()
                    .and_then(|s| s.creation_time)
                    .and_then(|ns| Timestamp::from_nanosecond(ns.into()).ok())
                    .map(Time),
                ready_to_use: Some(true),
                restore_size: content.status.as_ref().and_then(|s| s.restore_size).map(|b| bytes_quantity(b as u64)),
                error: None,
            });
            put_if_changed(&object, Object::VolumeSnapshot(new), &mut actions);
        }
    }
    for content in world.snapshot_contents.iter().filter(|c| c.metadata.deletion_timestamp.is_some()) {
        let in_use = world.snapshots.iter().any(|s| {
            s.status.as_ref().and_then(|st| st.bound_volume_snapshot_content_name.as_deref())
                == content.metadata.name.as_deref()
                && s.metadata.deletion_timestamp.is_none()
        });
        if in_use {
            continue;
        }
        if content.spec.deletion_policy == "Delete" {
            actions.push(Action::Snapshot(Box::new(SnapshotStep::DeleteContent(Box::new(content.clone())))));
        } else {
            actions.push(Action::Write(Write::Remove(Object::VolumeSnapshotContent(content.clone()).key())));
        }
    }
    actions
}

pub async fn carry_out(engine: &Engine, step: SnapshotStep, now: i64) -> Vec<Write> {
    match step {
        SnapshotStep::Cut { snapshot, class, volume_handle } => {
            cut(engine, *snapshot, *class, volume_handle, now).await
        }
        SnapshotStep::DeleteContent(content) => {
            let object = Object::VolumeSnapshotContent((*content).clone());
            let handle = content.status.as_ref().and_then(|s| s.snapshot_handle.clone()).or(content
                .spec
                .source
                .snapshot_handle
                .clone());
            if let Some(handle) = handle {
                let req = DeleteSnapshotRequest { snapshot_id: handle, ..Default::default() };
                if let Err(s) = engine.controller.delete_snapshot(tonic::Request::new(req)).await {
                    let message = format!("Failed to delete snapshot: {}", rpc_error(s));
                    return vec![event_write(&object, true, "SnapshotDeleteError", message, SOURCE, now)];
                }
            }
            let mut writes = vec![Write::Remove(object.key())];
            // The snapshot that was bound to it (being deleted) goes with it.
            let r = &content.spec.volume_snapshot_ref;
            if let (Some(ns), Some(name)) = (&r.namespace, &r.name) {
                let key = super::object::ObjectKey::new(super::object::Kind::VolumeSnapshot, ns, name);
                if engine.get_one(&key).is_some_and(|s| s.meta().deletion_timestamp.is_some()) {
                    writes.push(Write::Remove(key));
                }
            }
            writes
        }
    }
}

async fn cut(
    engine: &Engine,
    snapshot: VolumeSnapshot,
    class: VolumeSnapshotClass,
    volume_handle: String,
    now: i64,
) -> Vec<Write> {
    let object = snapshot_object(&snapshot);
    let ns = snapshot.metadata.namespace.clone().unwrap_or_default();
    let name = name_of(&snapshot.metadata).to_string();
    let uid = snapshot.metadata.uid.clone().unwrap_or_default();
    let mut writes = vec![event_write(
        &object,
        false,
        "CreatingSnapshot",
        format!("Waiting for a snapshot {ns}/{name} to be created by the CSI driver."),
        SOURCE,
        now,
    )];
    let req = CreateSnapshotRequest {
        source_volume_id: volume_handle.clone(),
        name: format!("snapshot-{uid}"),
        parameters: class.parameters.clone().unwrap_or_default().into_iter().collect(),
        ..Default::default()
    };
    let created = match engine.controller.create_snapshot(tonic::Request::new(req)).await {
        Ok(r) => r.into_inner().snapshot.unwrap_or_default(),
        Err(s) => {
            let message = format!(
                "Failed to create snapshot: failed to take snapshot of the volume {volume_handle}: {}",
                rpc_error(s)
            );
            let mut failed = snapshot.clone();
            let status = failed.status.get_or_insert_with(Default::default);
            status.ready_to_use = Some(false);
            status.error =
                Some(VolumeSnapshotError { time: Some(Time(Timestamp::now())), message: Some(message.clone()) });
            writes.push(Write::Put(Box::new(Object::VolumeSnapshot(failed))));
            writes.push(event_write(&object, true, "SnapshotCreationFailed", message, SOURCE, now));
            return writes;
        }
    };
    let content_name = format!("snapcontent-{uid}");
    let created_ns = created
        .creation_time
        .as_ref()
        .map(|t| t.seconds * 1_000_000_000 + i64::from(t.nanos))
        .unwrap_or(now * 1_000_000_000);
    let content = VolumeSnapshotContent {
        metadata: ObjectMeta {
            name: Some(content_name.clone()),
            uid: Some(new_uid()),
            creation_timestamp: Some(Time(Timestamp::now())),
            ..Default::default()
        },
        spec: VolumeSnapshotContentSpec {
            volume_snapshot_ref: ObjectReference {
                api_version: Some("snapshot.storage.k8s.io/v1".into()),
                kind: Some("VolumeSnapshot".into()),
                namespace: Some(ns.clone()),
                name: Some(name.clone()),
                uid: Some(uid.clone()),
                ..Default::default()
            },
            deletion_policy: class.deletion_policy.clone(),
            driver: DRIVER.into(),
            volume_snapshot_class_name: class.metadata.name.clone(),
            source: VolumeSnapshotContentSource { volume_handle: Some(volume_handle), snapshot_handle: None },
            source_volume_mode: Some("Filesystem".into()),
        },
        status: Some(VolumeSnapshotContentStatus {
            snapshot_handle: Some(created.snapshot_id.clone()),
            creation_time: Some(created_ns),
            restore_size: Some(created.size_bytes),
            ready_to_use: Some(created.ready_to_use),
            error: None,
        }),
    };
    let mut bound = snapshot.clone();
    bound.status = Some(VolumeSnapshotStatus {
        bound_volume_snapshot_content_name: Some(content_name),
        creation_time: Timestamp::from_nanosecond(created_ns.into()).ok().map(Time),
        ready_to_use: Some(created.ready_to_use),
        restore_size: Some(bytes_quantity(created.size_bytes.max(0) as u64)),
        error: None,
    });
    writes.push(Write::Put(Box::new(Object::VolumeSnapshotContent(content))));
    writes.push(Write::Put(Box::new(Object::VolumeSnapshot(bound))));
    writes.push(event_write(
        &object,
        false,
        "SnapshotCreated",
        format!("Snapshot {ns}/{name} was successfully created by the CSI driver."),
        SOURCE,
        now,
    ));
    writes.push(event_write(
        &object,
        false,
        "SnapshotReady",
        format!("Snapshot {ns}/{name} is ready to use."),
        SOURCE,
        now,
    ));
    writes
}
