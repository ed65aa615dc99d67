//! Deletion as Kubernetes does it for storage objects: a claim stays Terminating while a pod
//! uses it (`kubernetes.io/pvc-protection`), a volume while a claim is bound to it
//! (`kubernetes.io/pv-protection`); a provisioned volume deleted with policy `Delete` has its
//! backing volume deleted first (the provisioner's finalizer). Pure: objects in, actions out.

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Pod};

use super::binder::volume_phase;
use super::object::{Kind, Object};
use super::store::Write;
use super::world::*;

/// Kinds whose deletion waits for something: they are marked, and go once it lets go.
pub fn finalized(kind: Kind) -> bool {
    matches!(
        kind,
        Kind::PersistentVolumeClaim
            | Kind::PersistentVolume
            | Kind::Pod
            | Kind::VolumeSnapshot
            | Kind::VolumeSnapshotContent
    )
}

/// The pods (not being deleted themselves, or still holding mounts) that use a claim.
pub fn pods_using<'a>(world: &'a World, claim: &PersistentVolumeClaim) -> Vec<&'a Pod> {
    let namespace = claim.metadata.namespace.as_deref().unwrap_or("default");
    let name = claim.metadata.name.as_deref().unwrap_or("");
    world
        .pods
        .iter()
        .filter(|p| p.metadata.namespace.as_deref() == Some(namespace))
        .filter(|p| {
            p.spec
                .iter()
                .flat_map(|s| s.volumes.iter().flatten())
                .any(|v| v.persistent_volume_claim.as_ref().is_some_and(|c| c.claim_name == name))
        })
        .collect()
}

fn bound_claim<'a>(world: &'a World, volume: &PersistentVolume) -> Option<&'a PersistentVolumeClaim> {
    let r = volume.spec.as_ref()?.claim_ref.as_ref()?;
    let claim = world.claim(r.namespace.as_deref().unwrap_or("default"), r.name.as_deref()?)?;
    (r.uid.is_none() || r.uid == claim.metadata.uid).then_some(claim)
}

/// What a deletion waits for, said to the user who asked for it.
pub fn why_waiting(object: &Object, world: &World) -> Vec<String> {
    match object {
        Object::PersistentVolumeClaim(c) => {
            let pods: Vec<String> =
                pods_using(world, c).iter().map(|p| p.metadata.name.clone().unwrap_or_default()).collect();
            if pods.is_empty() {
                return vec![];
            }
            vec![format!(
                "persistentvolumeclaim {:?} is in use by pod {}: it stays Terminating, with its data and mounts untouched, until no pod uses it (kubernetes.io/pvc-protection)",
                object.name(),
                pods.join(", ")
            )]
        }
        Object::PersistentVolume(v) if volume_phase(v) == "Bound" && bound_claim(world, v).is_some() => {
            vec![format!(
                "persistentvolume {:?} is bound to a claim: it stays Terminating until the claim is deleted (kubernetes.io/pv-protection)",
                object.name()
            )]
        }
        _ => vec![],
    }
}

pub fn plan(world: &World) -> Vec<Action> {
    let mut actions = Vec::new();
    for claim in world.claims.iter().filter(|c| c.metadata.deletion_timestamp.is_some()) {
        if pods_using(world, claim).is_empty() {
            let key = Object::PersistentVolumeClaim(claim.clone()).key();
            actions.push(Action::Write(Write::Remove(key)));
        }
    }
    for volume in world.volumes.iter().filter(|v| v.metadata.deletion_timestamp.is_some()) {
        if volume_phase(volume) == "Bound" && bound_claim(world, volume).is_some() {
            continue;
        }
        let provisioned = has_finalizer(&volume.metadata, FINALIZER_PROVISIONER);
        let delete = volume.spec.as_ref().and_then(|s| s.persistent_volume_reclaim_policy.as_deref()) == Some("Delete");
        if provisioned && delete {
            actions.push(Action::DeleteVolume(Box::new(volume.clone())));
        } else {
            actions.push(Action::Write(Write::Remove(Object::PersistentVolume(volume.clone()).key())));
        }
    }
    actions
}
