//! The PersistentVolume controller: binds claims to volumes by Kubernetes' rules (§3 of the
//! storage reference: pre-bound first, then the access-mode group with the fewest modes, then
//! the smallest capacity that fits), asks for provisioning, and reclaims released volumes. A
//! pure function of the objects; it returns what to write and what to do.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::{
    ObjectReference, PersistentVolume, PersistentVolumeClaim, PersistentVolumeClaimStatus, PersistentVolumeStatus,
};
use volfs_api::quantity::Quantity;

use super::object::Object;
use super::selector::{label_selector_matches, node_affinity_matches};
use super::world::*;

const SOURCE: &str = "persistentvolume-controller";

pub fn plan(world: &World, node: &NodeInfo, now: i64) -> Vec<Action> {
    let mut actions = Vec::new();
    // Binds made in this pass are seen by the claims after them, as the controller's cache does.
    let mut volumes = world.volumes.clone();
    let mut claims = world.claims.clone();
    for claim in claims.iter_mut() {
        sync_claim(world, node, claim, &mut volumes, now, &mut actions);
    }
    for volume in volumes.iter_mut() {
        sync_volume(&claims, volume, now, &mut actions);
    }
    for (old, new) in world.claims.iter().zip(claims) {
        put_if_changed(&Object::PersistentVolumeClaim(old.clone()), Object::PersistentVolumeClaim(new), &mut actions);
    }
    for (old, new) in world.volumes.iter().zip(volumes) {
        put_if_changed(&Object::PersistentVolume(old.clone()), Object::PersistentVolume(new), &mut actions);
    }
    actions
}

fn claim_event(claim: &PersistentVolumeClaim, warning: bool, reason: &str, message: String, now: i64) -> Action {
    event(&Object::PersistentVolumeClaim(claim.clone()), warning, reason, message, SOURCE, now)
}

fn volume_event(volume: &PersistentVolume, warning: bool, reason: &str, message: String, now: i64) -> Action {
    event(&Object::PersistentVolume(volume.clone()), warning, reason, message, SOURCE, now)
}

fn name(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> &str {
    meta.name.as_deref().unwrap_or("")
}

fn namespace(claim: &PersistentVolumeClaim) -> &str {
    claim.metadata.namespace.as_deref().unwrap_or("default")
}

pub fn claim_class(claim: &PersistentVolumeClaim) -> &str {
    claim.spec.as_ref().and_then(|s| s.storage_class_name.as_deref()).unwrap_or("")
}

fn volume_class(volume: &PersistentVolume) -> &str {
    volume.spec.as_ref().and_then(|s| s.storage_class_name.as_deref()).unwrap_or("")
}

pub fn claim_phase(claim: &PersistentVolumeClaim) -> &str {
    claim.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("Pending")
}

pub fn volume_phase(volume: &PersistentVolume) -> &str {
    volume.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("Pending")
}

pub fn storage(
    map: Option<&std::collections::BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>>,
) -> Option<Quantity> {
    map?.get("storage").and_then(|q| Quantity::parse(&q.0).ok())
}

pub fn claim_request(claim: &PersistentVolumeClaim) -> Option<Quantity> {
    storage(claim.spec.as_ref()?.resources.as_ref()?.requests.as_ref())
}

pub fn volume_capacity(volume: &PersistentVolume) -> Option<Quantity> {
    storage(volume.spec.as_ref()?.capacity.as_ref())
}

fn modes(list: Option<&Vec<String>>) -> BTreeSet<String> {
    list.into_iter().flatten().cloned().collect()
}

fn claim_modes(claim: &PersistentVolumeClaim) -> BTreeSet<String> {
    modes(claim.spec.as_ref().and_then(|s| s.access_modes.as_ref()))
}

fn volume_modes(volume: &PersistentVolume) -> BTreeSet<String> {
    modes(volume.spec.as_ref().and_then(|s| s.access_modes.as_ref()))
}

fn volume_mode(mode: Option<&String>) -> &str {
    mode.map_or("Filesystem", String::as_str)
}

fn claim_ref(volume: &PersistentVolume) -> Option<&ObjectReference> {
    volume.spec.as_ref()?.claim_ref.as_ref()
}

/// Whether the volume's claimRef names this claim (its uid too, when the ref carries one).
fn refers_to(volume: &PersistentVolume, claim: &PersistentVolumeClaim) -> bool {
    claim_ref(volume).is_some_and(|r| {
        r.name.as_deref() == claim.metadata.name.as_deref()
            && r.namespace.as_deref().unwrap_or("default") == namespace(claim)
            && r.uid.as_deref().is_none_or(|uid| uid.is_empty() || Some(uid) == claim.metadata.uid.as_deref())
    })
}

/// The best volume for `claim` (§3.3), or None.
pub fn find_best_match<'a>(
    claim: &PersistentVolumeClaim,
    volumes: &'a [PersistentVolume],
    node: &NodeInfo,
    delay_binding: bool,
) -> Option<&'a PersistentVolume> {
    let wanted = claim_modes(claim);
    let request = claim_request(claim)?;
    let spec = claim.spec.as_ref()?;
    // Every access-mode set that holds the requested modes, fewest modes first.
    let mut groups: Vec<BTreeSet<String>> =
        volumes.iter().map(volume_modes).filter(|m| m.is_superset(&wanted)).collect();
    groups.sort_by_key(|m| (m.len(), m.iter().cloned().collect::<Vec<_>>()));
    groups.dedup();
    for group in groups {
        let mut best: Option<&PersistentVolume> = None;
        for volume in volumes.iter().filter(|v| volume_modes(v) == group) {
            if claim_ref(volume).is_some() && !refers_to(volume, claim) {
                continue;
            }
            if volume_capacity(volume).is_none_or(|c| c.cmp_value(&request).is_lt()) {
                continue;
            }
            let vspec = volume.spec.as_ref()?;
            if volume_mode(vspec.volume_mode.as_ref()) != volume_mode(spec.volume_mode.as_ref()) {
                continue;
            }
            if volume.metadata.deletion_timestamp.is_some() {
                continue;
            }
            // One node: a volume another node's affinity names can never be used here.
            if !node_affinity_matches(vspec.node_affinity.as_ref(), &node.name, &node.labels).unwrap_or(false) {
                continue;
            }
            if refers_to(volume, claim) {
                return Some(volume);
            }
            if delay_binding {
                continue;
            }
            if volume_phase(volume) != "Available" {
                continue;
            }
            if let Some(selector) = spec.selector.as_ref() {
                let labels = volume.metadata.labels.clone().unwrap_or_default();
                if !label_selector_matches(selector, &labels).unwrap_or(false) {
                    continue;
                }
            }
            if volume_class(volume) != claim_class(claim) {
                continue;
            }
            if best.is_none_or(|b| {
                volume_capacity(volume).zip(volume_capacity(b)).is_some_and(|(v, b)| v.cmp_value(&b).is_lt())
            }) {
                best = Some(volume);
            }
        }
        if best.is_some() {
            return best;
        }
    }
    None
}

/// Why a claim cannot have the volume it names (`checkVolumeSatisfyClaim`), or None.
fn mismatch(claim: &PersistentVolumeClaim, volume: &PersistentVolume) -> Option<String> {
    if volume.metadata.deletion_timestamp.is_some() {
        return Some("the volume is being deleted".into());
    }
    let (Some(request), Some(capacity)) = (claim_request(claim), volume_capacity(volume)) else {
        return Some("requested PV is too small".into());
    };
    if capacity.cmp_value(&request).is_lt() {
        return Some("requested PV is too small".into());
    }
    if volume_class(volume) != claim_class(claim) {
        return Some("storageClassName does not match".into());
    }
    let (cmode, vmode) = (
        claim.spec.as_ref().and_then(|s| s.volume_mode.as_ref()),
        volume.spec.as_ref().and_then(|s| s.volume_mode.as_ref()),
    );
    if volume_mode(cmode) != volume_mode(vmode) {
        return Some("incompatible volumeMode".into());
    }
    if !volume_modes(volume).is_superset(&claim_modes(claim)) {
        return Some("incompatible accessMode".into());
    }
    None
}

fn sync_claim(
    world: &World,
    node: &NodeInfo,
    claim: &mut PersistentVolumeClaim,
    volumes: &mut [PersistentVolume],
    now: i64,
    actions: &mut Vec<Action>,
) {
    add_finalizer(&mut claim.metadata, FINALIZER_PVC_PROTECTION);
    if claim_phase(claim) == "Lost" {
        return;
    }
    let volume_name = claim.spec.as_ref().and_then(|s| s.volume_name.clone()).unwrap_or_default();
    if annotation(&claim.metadata, ANN_BIND_COMPLETED).is_some() {
        return sync_bound_claim(claim, &volume_name, volumes, now, actions);
    }
    if claim.metadata.deletion_timestamp.is_some() {
        return;
    }
    // A claim without a class gets the default one, retroactively too.
    if claim.spec.as_ref().is_some_and(|s| s.storage_class_name.is_none()) {
        if let Some(default) = world.default_class() {
            claim.spec.get_or_insert_default().storage_class_name = default.metadata.name.clone();
        }
    }
    if volume_name.is_empty() {
        let class = world.class(claim_class(claim));
        let delay = class.is_some_and(|c| c.volume_binding_mode.as_deref() == Some("WaitForFirstConsumer"));
        let selected = annotation(&claim.metadata, ANN_SELECTED_NODE).is_some();
        if let Some(found) = find_best_match(claim, volumes, node, delay && !selected) {
            let found = name(&found.metadata).to_string();
            let volume = volumes.iter_mut().find(|v| name(&v.metadata) == found).expect("found among them");
            return bind(claim, volume, true);
        }
        set_claim_phase(claim, "Pending");
        let class_name = claim_class(claim).to_string();
        if delay && !selected {
            let message = "waiting for first consumer to be created before binding".into();
            return actions.push(claim_event(claim, false, "WaitForFirstConsumer", message, now));
        }
        if class_name.is_empty() {
            let message = "no persistent volumes available for this claim and no storage class is set".into();
            return actions.push(claim_event(claim, false, "FailedBinding", message, now));
        }
        let Some(class) = class else {
            let message = format!("storageclass.storage.k8s.io {class_name:?} not found");
            return actions.push(claim_event(claim, true, "ProvisioningFailed", message, now));
        };
        let provisioner = class.provisioner.clone();
        set_annotation(&mut claim.metadata, ANN_STORAGE_PROVISIONER, &provisioner);
        set_annotation(&mut claim.metadata, ANN_BETA_STORAGE_PROVISIONER, &provisioner);
        if provisioner == DRIVER {
            let uid = claim.metadata.uid.clone().unwrap_or_default();
            let pv_name = format!("pvc-{uid}");
            // The PV may already be there, pre-bound (a provision finished): bind it next pass.
            if volumes.iter().all(|v| name(&v.metadata) != pv_name) {
                actions.push(Action::Provision(Box::new(Provision {
                    claim: claim.clone(),
                    class: class.clone(),
                    pv_name,
                })));
            }
        } else if provisioner == "kubernetes.io/no-provisioner" {
            let message = "no volume plugin matched name: kubernetes.io/no-provisioner".into();
            actions.push(claim_event(claim, true, "ProvisioningFailed", message, now));
        } else {
            let message = format!(
                "Waiting for a volume to be created either by the external provisioner '{provisioner}' or manually by the system administrator. If volume creation is delayed, please verify that the provisioner is running and correctly registered."
            );
            actions.push(claim_event(claim, false, "ExternalProvisioning", message, now));
        }
        return;
    }
    // The user asked for a specific volume.
    set_claim_phase(claim, "Pending");
    let Some(volume) = volumes.iter_mut().find(|v| name(&v.metadata) == volume_name) else {
        return;
    };
    match claim_ref(volume) {
        None => match mismatch(claim, volume) {
            Some(why) => {
                let message = format!("Cannot bind to requested volume {volume_name:?}: {why}");
                actions.push(claim_event(claim, true, "VolumeMismatch", message, now));
            }
            None => bind(claim, volume, false),
        },
        Some(_) if refers_to(volume, claim) => bind(claim, volume, false),
        Some(_) => {
            let message = format!("volume {volume_name:?} already bound to a different claim.");
            actions.push(claim_event(claim, true, "FailedBinding", message, now));
        }
    }
}

fn sync_bound_claim(
    claim: &mut PersistentVolumeClaim,
    volume_name: &str,
    volumes: &mut [PersistentVolume],
    now: i64,
    actions: &mut Vec<Action>,
) {
    if volume_name.is_empty() {
        set_claim_phase(claim, "Lost");
        let message = "Bound claim has lost reference to PersistentVolume. Data on the volume is lost!".into();
        return actions.push(claim_event(claim, true, "ClaimLost", message, now));
    }
    let Some(volume) = volumes.iter_mut().find(|v| name(&v.metadata) == volume_name) else {
        set_claim_phase(claim, "Lost");
        let message = "Bound claim has lost its PersistentVolume. Data on the volume is lost!".into();
        return actions.push(claim_event(claim, true, "ClaimLost", message, now));
    };
    match claim_ref(volume) {
        None => bind(claim, volume, true),
        Some(_) if refers_to(volume, claim) => {
            bind(claim, volume, annotation(&claim.metadata, ANN_BOUND_BY_CONTROLLER).is_some())
        }
        Some(_) => {
            set_claim_phase(claim, "Lost");
            let message = "Two claims are bound to the same volume, this one is bound incorrectly".into();
            actions.push(claim_event(claim, true, "ClaimMisbound", message, now));
        }
    }
}

/// The two-pointer bind: the volume's claimRef, then the claim's volumeName, with statuses.
fn bind(claim: &mut PersistentVolumeClaim, volume: &mut PersistentVolume, by_controller: bool) {
    let vspec = volume.spec.get_or_insert_default();
    if vspec.claim_ref.is_none() {
        set_annotation(&mut volume.metadata, ANN_BOUND_BY_CONTROLLER, "yes");
    }
    vspec.claim_ref = Some(ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("PersistentVolumeClaim".into()),
        name: claim.metadata.name.clone(),
        namespace: Some(namespace(claim).to_string()),
        uid: claim.metadata.uid.clone(),
        ..Default::default()
    });
    set_volume_phase(volume, "Bound");
    let spec = claim.spec.get_or_insert_default();
    spec.volume_name = volume.metadata.name.clone();
    set_annotation(&mut claim.metadata, ANN_BIND_COMPLETED, "yes");
    if by_controller {
        set_annotation(&mut claim.metadata, ANN_BOUND_BY_CONTROLLER, "yes");
    }
    let status = claim.status.get_or_insert_with(PersistentVolumeClaimStatus::default);
    status.phase = Some("Bound".into());
    status.access_modes = volume.spec.as_ref().and_then(|s| s.access_modes.clone());
    // The claim shows the volume's size once bound; a resize in progress keeps its own.
    if status.capacity.is_none() {
        status.capacity = volume.spec.as_ref().and_then(|s| s.capacity.clone());
    }
}

fn set_claim_phase(claim: &mut PersistentVolumeClaim, phase: &str) {
    claim.status.get_or_insert_with(PersistentVolumeClaimStatus::default).phase = Some(phase.into());
}

fn set_volume_phase(volume: &mut PersistentVolume, phase: &str) {
    volume.status.get_or_insert_with(PersistentVolumeStatus::default).phase = Some(phase.into());
}

fn sync_volume(claims: &[PersistentVolumeClaim], volume: &mut PersistentVolume, now: i64, actions: &mut Vec<Action>) {
    add_finalizer(&mut volume.metadata, FINALIZER_PV_PROTECTION);
    let Some(reference) = claim_ref(volume).cloned() else {
        if volume_phase(volume) != "Failed" || volume.metadata.deletion_timestamp.is_none() {
            set_volume_phase(volume, "Available");
        }
        return;
    };
    let found = claims.iter().find(|c| {
        c.metadata.name == reference.name
            && Some(namespace(c)) == Some(reference.namespace.as_deref().unwrap_or("default"))
    });
    let uid = reference.uid.clone().unwrap_or_default();
    if uid.is_empty() {
        // Reserved for a claim of that name: Available until it binds.
        if found
            .is_none_or(|c| c.spec.as_ref().and_then(|s| s.volume_name.as_deref()) != volume.metadata.name.as_deref())
        {
            set_volume_phase(volume, "Available");
        }
        return;
    }
    let claim = found.filter(|c| c.metadata.uid.as_deref() == Some(uid.as_str()));
    match claim {
        Some(c) if c.spec.as_ref().and_then(|s| s.volume_name.as_deref()) == volume.metadata.name.as_deref() => {
            set_volume_phase(volume, "Bound");
        }
        // The claim has not finished binding to us yet (it will, next pass).
        Some(c) if c.spec.as_ref().and_then(|s| s.volume_name.as_deref()).unwrap_or("").is_empty() => {}
        Some(_) => {
            // The claim is bound to another volume.
            if annotation(&volume.metadata, ANN_BOUND_BY_CONTROLLER).is_some() {
                volume.spec.get_or_insert_default().claim_ref = None;
                set_volume_phase(volume, "Available");
            } else if let Some(r) = volume.spec.get_or_insert_default().claim_ref.as_mut() {
                r.uid = None;
                set_volume_phase(volume, "Available");
            }
        }
        None => {
            if volume_phase(volume) != "Failed" {
                set_volume_phase(volume, "Released");
            }
            reclaim(volume, now, actions);
        }
    }
}

fn reclaim(volume: &mut PersistentVolume, now: i64, actions: &mut Vec<Action>) {
    let policy = volume
        .spec
        .as_ref()
        .and_then(|s| s.persistent_volume_reclaim_policy.clone())
        .unwrap_or_else(|| "Retain".into());
    let ours = volume.spec.as_ref().and_then(|s| s.csi.as_ref()).is_some_and(|c| c.driver == DRIVER);
    let fail = |volume: &mut PersistentVolume, reason: &str, message: String, actions: &mut Vec<Action>| {
        if volume_phase(volume) != "Failed" {
            set_volume_phase(volume, "Failed");
            let status = volume.status.get_or_insert_with(PersistentVolumeStatus::default);
            status.message = Some(message.clone());
            actions.push(volume_event(volume, true, reason, message, now));
        }
    };
    match policy.as_str() {
        "Retain" => {}
        "Delete" if ours => actions.push(Action::DeleteVolume(Box::new(volume.clone()))),
        "Delete" => {
            let message = format!(
                "error getting deleter volume plugin for volume {:?}: no deletable volume plugin matched",
                name(&volume.metadata)
            );
            fail(volume, "VolumeFailedDelete", message, actions);
        }
        "Recycle" => {
            let message = format!(
                "No recycler plugin found for volume {:?}: recycling is deprecated; use Retain or Delete",
                name(&volume.metadata)
            );
            fail(volume, "VolumeFailedRecycle", message, actions);
        }
        other => {
            let message = format!("Volume has unrecognized PersistentVolumeReclaimPolicy {other:?}");
            fail(volume, "VolumeUnknownReclaimPolicy", message, actions);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::standalone::object::parse_manifests;
    use crate::standalone::store::Write;

    fn node() -> NodeInfo {
        NodeInfo {
            name: "n1".into(),
            labels: [("kubernetes.io/hostname".to_string(), "n1".to_string())].into(),
            state_dir: "/state".into(),
            runtime: false,
        }
    }

    fn pv(name: &str, size: &str, modes: &str, class: &str, extra: &str) -> PersistentVolume {
        let text = format!(
            "apiVersion: v1\nkind: PersistentVolume\nmetadata: {{name: {name}, uid: uid-{name}}}\nspec:\n  capacity: {{storage: {size}}}\n  accessModes: [{modes}]\n  storageClassName: \"{class}\"\n  persistentVolumeReclaimPolicy: Retain\n  csi: {{driver: csi.volfs.io, volumeHandle: {name}}}\n{extra}\nstatus: {{phase: Available}}\n"
        );
        match parse_manifests(&text, "pv").unwrap().remove(0) {
            Object::PersistentVolume(v) => v,
            _ => unreachable!(),
        }
    }

    fn pvc(name: &str, size: &str, modes: &str, class: Option<&str>, extra: &str) -> PersistentVolumeClaim {
        let class = class.map(|c| format!("  storageClassName: \"{c}\"\n")).unwrap_or_default();
        let text = format!(
            "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {{name: {name}, namespace: default, uid: uid-{name}}}\nspec:\n  accessModes: [{modes}]\n  resources: {{requests: {{storage: {size}}}}}\n{class}{extra}\n"
        );
        match parse_manifests(&text, "pvc").unwrap().remove(0) {
            Object::PersistentVolumeClaim(c) => c,
            _ => unreachable!(),
        }
    }

    fn class(name: &str, extra: &str) -> k8s_openapi::api::storage::v1::StorageClass {
        let text = format!("apiVersion: storage.k8s.io/v1\nkind: StorageClass\nmetadata: {{name: {name}}}\nprovisioner: csi.volfs.io\n{extra}\n");
        match parse_manifests(&text, "sc").unwrap().remove(0) {
            Object::StorageClass(c) => c,
            _ => unreachable!(),
        }
    }

    /// Runs passes until nothing is written; returns the world, and the events of every pass
    /// (once each) with the other actions of the last.
    fn settle(mut world: World) -> (World, Vec<Action>) {
        let mut events: Vec<Action> = Vec::new();
        for _ in 0..10 {
            let mut others = Vec::new();
            let actions = plan(&world, &node(), 0);
            let mut wrote = false;
            for action in actions {
                match action {
                    Action::Write(Write::Put(o)) if matches!(*o, Object::PersistentVolume(_)) => {
                        let Object::PersistentVolume(v) = *o else { unreachable!() };
                        wrote = true;
                        let slot = world.volumes.iter_mut().find(|o| o.metadata.name == v.metadata.name).unwrap();
                        *slot = v;
                    }
                    Action::Write(Write::Put(o)) if matches!(*o, Object::PersistentVolumeClaim(_)) => {
                        let Object::PersistentVolumeClaim(c) = *o else { unreachable!() };
                        wrote = true;
                        let slot = world.claims.iter_mut().find(|o| o.metadata.name == c.metadata.name).unwrap();
                        *slot = c;
                    }
                    Action::Write(Write::Event(e)) => {
                        let e = Action::Write(Write::Event(e));
                        if !events.contains(&e) {
                            events.push(e);
                        }
                    }
                    other => others.push(other),
                }
            }
            if !wrote {
                events.extend(others);
                return (world, events);
            }
        }
        panic!("the controller does not settle");
    }

    fn bound_to(world: &World, claim: &str) -> Option<String> {
        let c = world.claims.iter().find(|c| c.metadata.name.as_deref() == Some(claim)).unwrap();
        (claim_phase(c) == "Bound").then(|| c.spec.as_ref().unwrap().volume_name.clone().unwrap())
    }

    fn reasons(actions: &[Action]) -> Vec<String> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Write(Write::Event(e)) => Some(format!("{}: {}", e.reason, e.message)),
                _ => None,
            })
            .collect()
    }

    /// The matching rules of §3.3, one case each: the claim binds to the named volume, or none.
    #[test]
    fn matching_rules() {
        let affinity = |host: &str| {
            format!("  nodeAffinity: {{required: {{nodeSelectorTerms: [{{matchExpressions: [{{key: kubernetes.io/hostname, operator: In, values: [{host}]}}]}}]}}}}")
        };
        let cases: Vec<(&str, Vec<PersistentVolume>, PersistentVolumeClaim, Option<&str>)> = vec![
            (
                "the smallest volume that fits",
                vec![
                    pv("big", "10Gi", "ReadWriteOnce", "", ""),
                    pv("small", "2Gi", "ReadWriteOnce", "", ""),
                    pv("tiny", "1Gi", "ReadWriteOnce", "", ""),
                ],
                pvc("c", "1500Mi", "ReadWriteOnce", Some(""), ""),
                Some("small"),
            ),
            (
                "the group with the fewest modes wins over a smaller volume",
                vec![
                    pv("rwo", "100Gi", "ReadWriteOnce", "", ""),
                    pv("rwo-rwx", "10Gi", "ReadWriteOnce, ReadWriteMany", "", ""),
                ],
                pvc("c", "1Gi", "ReadWriteOnce", Some(""), ""),
                Some("rwo"),
            ),
            (
                "a volume pre-bound to the claim wins even when larger",
                vec![
                    pv("fits", "1Gi", "ReadWriteOnce", "", ""),
                    pv("mine", "50Gi", "ReadWriteOnce", "", "  claimRef: {namespace: default, name: c}"),
                ],
                pvc("c", "1Gi", "ReadWriteOnce", Some(""), ""),
                Some("mine"),
            ),
            (
                "a volume pre-bound to another claim is skipped",
                vec![pv("theirs", "1Gi", "ReadWriteOnce", "", "  claimRef: {namespace: default, name: other}")],
                pvc("c", "1Gi", "ReadWriteOnce", Some(""), ""),
                None,
            ),
            (
                "too small",
                vec![pv("small", "999Mi", "ReadWriteOnce", "", "")],
                pvc("c", "1Gi", "ReadWriteOnce", Some(""), ""),
                None,
            ),
            (
                "exactly the request (1Gi == 1073741824)",
                vec![pv("exact", "1073741824", "ReadWriteOnce", "", "")],
                pvc("c", "1Gi", "ReadWriteOnce", Some(""), ""),
                Some("exact"),
            ),
            (
                "missing access modes",
                vec![pv("rwo", "1Gi", "ReadWriteOnce", "", "")],
                pvc("c", "1Gi", "ReadWriteMany", Some(""), ""),
                None,
            ),
            (
                "the class must be equal",
                vec![pv("fast", "1Gi", "ReadWriteOnce", "fast", ""), pv("none", "5Gi", "ReadWriteOnce", "", "")],
                pvc("c", "1Gi", "ReadWriteOnce", Some("fast"), ""),
                Some("fast"),
            ),
            (
                "an empty class only matches volumes without one",
                vec![pv("fast", "1Gi", "ReadWriteOnce", "fast", "")],
                pvc("c", "1Gi", "ReadWriteOnce", Some(""), ""),
                None,
            ),
            (
                "the selector must match the volume's labels",
                vec![
                    {
                        let mut v = pv("labelled", "5Gi", "ReadWriteOnce", "", "");
                        v.metadata.labels = Some([("tier".to_string(), "gold".to_string())].into());
                        v
                    },
                    pv("plain", "1Gi", "ReadWriteOnce", "", ""),
                ],
                pvc("c", "1Gi", "ReadWriteOnce", Some(""), "  selector: {matchLabels: {tier: gold}}"),
                Some("labelled"),
            ),
            (
                "volumeMode must be equal (nil is Filesystem)",
                vec![
                    pv("block", "1Gi", "ReadWriteOnce", "", "  volumeMode: Block"),
                    pv("fs", "2Gi", "ReadWriteOnce", "", ""),
                ],
                pvc("c", "1Gi", "ReadWriteOnce", Some(""), "  volumeMode: Filesystem"),
                Some("fs"),
            ),
            (
                "node affinity to another node",
                vec![
                    pv("there", "1Gi", "ReadWriteOnce", "", &affinity("n2")),
                    pv("here", "2Gi", "ReadWriteOnce", "", &affinity("n1")),
                ],
                pvc("c", "1Gi", "ReadWriteOnce", Some(""), ""),
                Some("here"),
            ),
            (
                "a volume being deleted is skipped",
                vec![{
                    let mut v = pv("going", "1Gi", "ReadWriteOnce", "", "");
                    v.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                        k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
                    ));
                    v
                }],
                pvc("c", "1Gi", "ReadWriteOnce", Some(""), ""),
                None,
            ),
            (
                "a Released volume is not Available",
                vec![{
                    let mut v = pv("released", "1Gi", "ReadWriteOnce", "", "");
                    v.status.as_mut().unwrap().phase = Some("Released".into());
                    v
                }],
                pvc("c", "1Gi", "ReadWriteOnce", Some(""), ""),
                None,
            ),
        ];
        for (what, volumes, claim, expected) in cases {
            let found = find_best_match(&claim, &volumes, &node(), false).map(|v| v.metadata.name.clone().unwrap());
            assert_eq!(found.as_deref(), expected, "{what}");
        }
    }

    #[test]
    fn binding_writes_both_pointers_and_statuses() {
        let world = World {
            volumes: vec![pv("v", "5Gi", "ReadWriteOnce, ReadOnlyMany", "", "")],
            claims: vec![pvc("c", "1Gi", "ReadWriteOnce", Some(""), "")],
            ..World::default()
        };
        let (world, _) = settle(world);
        let (v, c) = (&world.volumes[0], &world.claims[0]);
        assert_eq!(volume_phase(v), "Bound");
        let r = claim_ref(v).unwrap();
        assert_eq!((r.name.as_deref(), r.uid.as_deref()), (Some("c"), Some("uid-c")));
        assert_eq!(annotation(&v.metadata, ANN_BOUND_BY_CONTROLLER), Some("yes"));
        assert_eq!(annotation(&c.metadata, ANN_BIND_COMPLETED), Some("yes"));
        let status = c.status.as_ref().unwrap();
        assert_eq!(status.capacity.as_ref().unwrap()["storage"].0, "5Gi");
        assert_eq!(status.access_modes.as_ref().unwrap(), &["ReadWriteOnce", "ReadOnlyMany"]);
        assert!(
            has_finalizer(&c.metadata, FINALIZER_PVC_PROTECTION) && has_finalizer(&v.metadata, FINALIZER_PV_PROTECTION)
        );
    }

    #[test]
    fn two_claims_never_get_one_volume() {
        let world = World {
            volumes: vec![pv("v", "5Gi", "ReadWriteOnce", "", "")],
            claims: vec![
                pvc("a", "1Gi", "ReadWriteOnce", Some(""), ""),
                pvc("b", "1Gi", "ReadWriteOnce", Some(""), ""),
            ],
            ..World::default()
        };
        let (world, actions) = settle(world);
        assert_eq!(bound_to(&world, "a").as_deref(), Some("v"));
        assert_eq!(bound_to(&world, "b"), None);
        assert!(reasons(&actions).iter().any(|r| r.starts_with("FailedBinding: no persistent volumes available")));
    }

    #[test]
    fn a_claim_naming_its_volume() {
        let world = World {
            volumes: vec![pv("v", "1Gi", "ReadWriteOnce", "", ""), pv("small", "1Mi", "ReadWriteOnce", "", "")],
            claims: vec![
                pvc("c", "1Gi", "ReadWriteOnce", Some(""), "  volumeName: v"),
                pvc("d", "1Gi", "ReadWriteOnce", Some(""), "  volumeName: small"),
            ],
            ..World::default()
        };
        let (world, actions) = settle(world);
        assert_eq!(bound_to(&world, "c").as_deref(), Some("v"));
        assert_eq!(annotation(&world.claims[0].metadata, ANN_BOUND_BY_CONTROLLER), None);
        assert_eq!(bound_to(&world, "d"), None);
        assert!(reasons(&actions).contains(
            &"VolumeMismatch: Cannot bind to requested volume \"small\": requested PV is too small".to_string()
        ));
    }

    #[test]
    fn retain_releases_and_never_rebinds_until_the_claim_ref_is_cleared() {
        let world = World {
            volumes: vec![pv("v", "1Gi", "ReadWriteOnce", "", "")],
            claims: vec![pvc("c", "1Gi", "ReadWriteOnce", Some(""), "")],
            ..World::default()
        };
        let (mut world, _) = settle(world);
        world.claims.clear();
        let (mut world, actions) = settle(world);
        assert_eq!(volume_phase(&world.volumes[0]), "Released");
        assert!(actions.is_empty(), "{actions:?}");
        // A new claim of the same name (a new uid) does not get the data.
        world.claims.push(pvc("c", "1Gi", "ReadWriteOnce", Some(""), ""));
        world.claims[0].metadata.uid = Some("uid-c2".into());
        let (mut world, _) = settle(world);
        assert_eq!(bound_to(&world, "c"), None);
        assert_eq!(volume_phase(&world.volumes[0]), "Released");
        // Clearing the uid reserves it for the claim of that name, which then binds.
        world.volumes[0].spec.as_mut().unwrap().claim_ref.as_mut().unwrap().uid = None;
        let (world, _) = settle(world);
        assert_eq!(bound_to(&world, "c").as_deref(), Some("v"));
        assert_eq!(claim_ref(&world.volumes[0]).unwrap().uid.as_deref(), Some("uid-c2"));
    }

    #[test]
    fn a_released_volume_with_its_claim_ref_removed_is_available_to_any_claim() {
        let mut v = pv("v", "1Gi", "ReadWriteOnce", "", "  claimRef: {namespace: default, name: gone, uid: old}");
        v.status.as_mut().unwrap().phase = Some("Released".into());
        let world = World {
            volumes: vec![v],
            claims: vec![pvc("new", "1Gi", "ReadWriteOnce", Some(""), "")],
            ..World::default()
        };
        let (mut world, _) = settle(world);
        assert_eq!(bound_to(&world, "new"), None);
        world.volumes[0].spec.as_mut().unwrap().claim_ref = None;
        let (world, _) = settle(world);
        assert_eq!(bound_to(&world, "new").as_deref(), Some("v"));
    }

    #[test]
    fn reclaim_policies() {
        let released = |policy: &str, csi: bool| {
            let mut v = pv("v", "1Gi", "ReadWriteOnce", "", "  claimRef: {namespace: default, name: gone, uid: old}");
            let spec = v.spec.as_mut().unwrap();
            spec.persistent_volume_reclaim_policy = Some(policy.into());
            if !csi {
                spec.csi = None;
                spec.host_path =
                    Some(k8s_openapi::api::core::v1::HostPathVolumeSource { path: "/mnt".into(), type_: None });
            }
            World { volumes: vec![v], ..World::default() }
        };
        let (_, actions) = settle(released("Delete", true));
        assert!(
            matches!(&actions[..], [Action::DeleteVolume(v)] if v.metadata.name.as_deref() == Some("v")),
            "{actions:?}"
        );
        let (world, actions) = settle(released("Retain", true));
        assert_eq!((volume_phase(&world.volumes[0]), actions.len()), ("Released", 0));
        for (policy, reason) in [
            ("Delete", "VolumeFailedDelete"),
            ("Recycle", "VolumeFailedRecycle"),
            ("Shred", "VolumeUnknownReclaimPolicy"),
        ] {
            let (world, actions) = settle(released(policy, policy != "Delete"));
            assert_eq!(volume_phase(&world.volumes[0]), "Failed", "{policy}");
            assert!(reasons(&actions)[0].starts_with(reason), "{policy}: {actions:?}");
        }
    }

    #[test]
    fn lost_claims() {
        let mut c = pvc("c", "1Gi", "ReadWriteOnce", Some(""), "  volumeName: gone");
        set_annotation(&mut c.metadata, ANN_BIND_COMPLETED, "yes");
        let (world, actions) = settle(World { claims: vec![c], ..World::default() });
        assert_eq!(claim_phase(&world.claims[0]), "Lost");
        assert!(reasons(&actions)[0].starts_with("ClaimLost: Bound claim has lost its PersistentVolume"));
    }

    #[test]
    fn dynamic_provisioning_and_its_refusals() {
        let fast = class("fast", "reclaimPolicy: Delete");
        let world = World {
            classes: vec![fast.clone()],
            claims: vec![pvc("c", "1Gi", "ReadWriteOnce", Some("fast"), "")],
            ..World::default()
        };
        let (world, actions) = settle(world);
        let [Action::Provision(p)] = &actions[..] else { panic!("{actions:?}") };
        assert_eq!(p.pv_name, "pvc-uid-c");
        assert_eq!(annotation(&world.claims[0].metadata, ANN_STORAGE_PROVISIONER), Some(DRIVER));

        // A claim without a class gets the default class and is provisioned from it.
        let mut default = class("std", "");
        set_annotation(&mut default.metadata, ANN_DEFAULT_CLASS, "true");
        let world = World {
            classes: vec![fast.clone(), default],
            claims: vec![pvc("c", "1Gi", "ReadWriteOnce", None, "")],
            ..World::default()
        };
        let (world, actions) = settle(world);
        assert_eq!(claim_class(&world.claims[0]), "std");
        assert!(matches!(&actions[..], [Action::Provision(p)] if p.class.metadata.name.as_deref() == Some("std")));

        // An empty class means static only.
        let world = World {
            classes: vec![fast.clone()],
            claims: vec![pvc("c", "1Gi", "ReadWriteOnce", Some(""), "")],
            ..World::default()
        };
        let (_, actions) = settle(world);
        assert_eq!(
            reasons(&actions),
            ["FailedBinding: no persistent volumes available for this claim and no storage class is set"]
        );

        let world = World { claims: vec![pvc("c", "1Gi", "ReadWriteOnce", Some("nope"), "")], ..World::default() };
        let (_, actions) = settle(world);
        assert_eq!(reasons(&actions), ["ProvisioningFailed: storageclass.storage.k8s.io \"nope\" not found"]);

        // WaitForFirstConsumer: nothing until a pod picks the node.
        let wffc = class("late", "volumeBindingMode: WaitForFirstConsumer");
        let world = World {
            classes: vec![wffc],
            volumes: vec![pv("free", "1Gi", "ReadWriteOnce", "late", "")],
            claims: vec![pvc("c", "1Gi", "ReadWriteOnce", Some("late"), "")],
            ..World::default()
        };
        let (mut world, actions) = settle(world);
        assert_eq!(
            reasons(&actions),
            ["WaitForFirstConsumer: waiting for first consumer to be created before binding"]
        );
        assert_eq!(bound_to(&world, "c"), None);
        set_annotation(&mut world.claims[0].metadata, ANN_SELECTED_NODE, "n1");
        let (world, _) = settle(world);
        assert_eq!(bound_to(&world, "c").as_deref(), Some("free"));
    }
}
