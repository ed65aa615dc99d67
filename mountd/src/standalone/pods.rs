//! Pods: what the scheduler's volume checks, the attach/detach controller and the kubelet's
//! volume manager do for a pod's volumes. `plan` (pure) schedules a pod onto this node once its
//! claims allow it (ReadWriteOncePod, WaitForFirstConsumer's selected node), records the mounts
//! it will make, and asks for setup, refresh (configMap and secret changes) or teardown;
//! `carry_out` makes the calls: ControllerPublish (with its VolumeAttachment), NodeStage and
//! NodePublish for claims, inline volumes for emptyDir, projected trees for configMap, secret,
//! downwardAPI and projected volumes. Every container mount is a directory of its own under
//! the state dir, subPath included, served by the data plane.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{
    Container, PersistentVolume, PersistentVolumeClaim, Pod, PodCondition, PodStatus, Volume, VolumeMount,
};
use k8s_openapi::api::storage::v1::{
    VolumeAttachment, VolumeAttachmentSource, VolumeAttachmentSpec, VolumeAttachmentStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use serde::{Deserialize, Serialize};
use volfs_api::{Request, SpecText};

use super::binder::claim_class;
use super::engine::{capability, csi_mode, new_uid, rpc_error, Engine};
use super::object::{Kind, Object};
use super::store::Write;
use super::world::*;
use crate::csi::v1::controller_server::Controller as _;
use crate::csi::v1::node_server::Node as _;
use crate::csi::v1::volume_capability::access_mode::Mode;
use crate::csi::v1::*;

/// The mounts a pod has (planned before they are made, so a crash in between is undone).
pub const ANN_MOUNTS: &str = "volfs.io/mounts";
/// A digest of each projected volume's inputs, to notice a configMap or secret change.
const ANN_PROJECTIONS: &str = "volfs.io/projections";

/// One container mount.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodMount {
    pub container: String,
    pub volume: String,
    pub mount_path: String,
    /// Where it is on the node: what a runtime binds at `mountPath`.
    pub host_path: PathBuf,
    pub read_only: bool,
    pub source: MountSource,
}

/// What serves a mount.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "type")]
pub enum MountSource {
    /// A claim's volfs volume, published by NodePublish.
    Claim { claim: String, pv: String, volume_id: String, mode: String, subpath: Option<String> },
    /// An emptyDir: an inline volume of the pod, deleted with it.
    EmptyDir { volume_id: String, size: Option<u64>, subpath: Option<String> },
    /// An emptyDir of medium Memory: a volume of the memory pool, deleted with the pod.
    MemoryDir { volume_id: String, size: Option<u64>, subpath: Option<String> },
    /// configMap, secret, downwardAPI, projected: a projected tree.
    Projected { subpath: Option<String> },
    /// A directory of the node, checked by type.
    HostPath,
}

/// A pod's work for `carry_out`.
#[derive(Clone, Debug, PartialEq)]
pub enum PodStep {
    Setup(Pod),
    Refresh(Pod),
    /// Read the containers' statuses back (with a runtime).
    Observe(Pod),
    Teardown(Pod),
}

fn pod_name(pod: &Pod) -> (&str, &str) {
    (pod.metadata.namespace.as_deref().unwrap_or("default"), pod.metadata.name.as_deref().unwrap_or(""))
}

fn phase(pod: &Pod) -> &str {
    pod.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("Pending")
}

pub fn mounts_of(pod: &Pod) -> Option<Vec<PodMount>> {
    serde_json::from_str(annotation(&pod.metadata, ANN_MOUNTS)?).ok()
}

fn claims_of(pod: &Pod) -> Vec<&str> {
    pod.spec
        .iter()
        .flat_map(|s| s.volumes.iter().flatten())
        .filter_map(|v| v.persistent_volume_claim.as_ref())
        .map(|c| c.claim_name.as_str())
        .collect()
}

/// Refuses, at apply, what cannot work: a claim of a class that does not exist, a pod naming
/// a claim that does not exist, a resize the class does not allow or that shrinks.
pub fn check_references(
    object: &Object,
    stored: Option<&Object>,
    world: &World,
    batch: &[Object],
) -> Result<(), String> {
    let in_batch = |kind: Kind, ns: &str, name: &str| {
        let namespace = |o: &Object| o.meta().namespace.clone().unwrap_or_else(|| "default".into());
        batch.iter().any(|o| o.kind() == kind && o.name() == name && (!kind.namespaced() || namespace(o) == ns))
    };
    let what = format!("{} {:?}", object.kind(), object.name());
    match object {
        Object::PersistentVolumeClaim(c) => {
            let class = claim_class(c);
            if !class.is_empty() && world.class(class).is_none() && !in_batch(Kind::StorageClass, "", class) {
                return Err(format!(
                    "{what} is invalid: spec.storageClassName: Not found: {class:?} (apply the StorageClass first)"
                ));
            }
            if let Some(Object::PersistentVolumeClaim(old)) = stored {
                check_resize(&what, c, old, world)?;
            }
            Ok(())
        }
        Object::Pod(p) if stored.is_none() => {
            let ns = p.metadata.namespace.as_deref().unwrap_or("default");
            for (i, v) in p.spec.iter().flat_map(|s| s.volumes.iter().flatten()).enumerate() {
                let Some(claim) = &v.persistent_volume_claim else { continue };
                let found = world.claim(ns, &claim.claim_name);
                if found.is_none() && !in_batch(Kind::PersistentVolumeClaim, ns, &claim.claim_name) {
                    return Err(format!(
                        "{what} is invalid: spec.volumes[{i}].persistentVolumeClaim.claimName: Not found: {:?}",
                        claim.claim_name
                    ));
                }
                if found.is_some_and(|c| c.metadata.deletion_timestamp.is_some()) {
                    return Err(format!(
                        "{what} is invalid: spec.volumes[{i}].persistentVolumeClaim.claimName: persistentvolumeclaim {:?} is being deleted",
                        claim.claim_name
                    ));
                }
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

fn check_resize(
    what: &str,
    new: &PersistentVolumeClaim,
    old: &PersistentVolumeClaim,
    world: &World,
) -> Result<(), String> {
    let (Some(wanted), Some(before)) = (super::binder::claim_request(new), super::binder::claim_request(old)) else {
        return Ok(());
    };
    if wanted.cmp_value(&before).is_eq() {
        return Ok(());
    }
    let field = "spec.resources.requests[storage]";
    if old.status.as_ref().and_then(|s| s.phase.as_deref()) != Some("Bound") {
        return Err(format!("{what} is invalid: spec: Forbidden: spec is immutable after creation except resources.requests and volumeAttributesClassName for bound claims"));
    }
    let expandable = world.class(claim_class(old)).and_then(|c| c.allow_volume_expansion).unwrap_or(false);
    if !expandable {
        return Err(format!(
            "persistentvolumeclaims {:?} is forbidden: only dynamically provisioned pvc can be resized and the storageclass that provisions the pvc must support resize",
            old.metadata.name.as_deref().unwrap_or("")
        ));
    }
    let capacity = super::binder::storage(old.status.as_ref().and_then(|s| s.capacity.as_ref()));
    if wanted.cmp_value(&before).is_lt() && capacity.is_none_or(|c| wanted.cmp_value(&c).is_le()) {
        return Err(format!("{what} is invalid: {field}: Forbidden: field can not be less than status.capacity"));
    }
    Ok(())
}

pub fn plan(world: &World, node: &NodeInfo, now: i64) -> Vec<Action> {
    let mut actions = Vec::new();
    // ReadWriteOncePod claims taken by pods scheduled earlier in this pass.
    let mut taken: BTreeSet<(String, String)> = BTreeSet::new();
    for pod in &world.pods {
        let (ns, _) = pod_name(pod);
        if pod.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some() && pod.metadata.deletion_timestamp.is_none() {
            for claim in claims_of(pod) {
                taken.insert((ns.to_string(), claim.to_string()));
            }
        }
    }
    for pod in &world.pods {
        let object = Object::Pod(pod.clone());
        if pod.metadata.deletion_timestamp.is_some() {
            actions.push(Action::Pod(Box::new(PodStep::Teardown(pod.clone()))));
            continue;
        }
        if pod.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_none() {
            schedule(world, node, pod, &mut taken, now, &mut actions);
            continue;
        }
        match mounts_of(pod) {
            None => match plan_mounts(world, pod, &node.state_dir) {
                Ok(mounts) => {
                    let mut new = pod.clone();
                    set_annotation(&mut new.metadata, ANN_MOUNTS, &serde_json::to_string(&mounts).unwrap_or_default());
                    put_if_changed(&object, Object::Pod(new), &mut actions);
                }
                Err(message) => actions.push(event(&object, true, "FailedMount", message, "kubelet", now)),
            },
            Some(_) if phase(pod) == "Pending" => actions.push(Action::Pod(Box::new(PodStep::Setup(pod.clone())))),
            Some(_) => {
                if annotation(&pod.metadata, ANN_PROJECTIONS) != Some(projection_digest(world, pod).as_str()) {
                    actions.push(Action::Pod(Box::new(PodStep::Refresh(pod.clone()))));
                }
                if node.runtime && phase(pod) == "Running" {
                    actions.push(Action::Pod(Box::new(PodStep::Observe(pod.clone()))));
                }
            }
        }
    }
    actions
}

/// The scheduler's volume checks for this one node.
fn schedule(
    world: &World,
    node: &NodeInfo,
    pod: &Pod,
    taken: &mut BTreeSet<(String, String)>,
    now: i64,
    actions: &mut Vec<Action>,
) {
    let object = Object::Pod(pod.clone());
    let (ns, name) = pod_name(pod);
    let unschedulable = |why: String| {
        event(&object, true, "FailedScheduling", format!("0/1 nodes are available: {why}. preemption: 0/1 nodes are available: 1 Preemption is not helpful for scheduling."), "default-scheduler", now)
    };
    let mut unbound_late = Vec::new();
    for claim_name in claims_of(pod) {
        let Some(claim) = world.claim(ns, claim_name) else {
            return actions.push(unschedulable(format!("persistentvolumeclaim {claim_name:?} not found")));
        };
        if claim.metadata.deletion_timestamp.is_some() {
            return actions.push(unschedulable(format!("persistentvolumeclaim {claim_name:?} is being deleted")));
        }
        let rwop = claim.spec.iter().flat_map(|s| s.access_modes.iter().flatten()).any(|m| m == "ReadWriteOncePod");
        if rwop && taken.contains(&(ns.to_string(), claim_name.to_string())) {
            return actions.push(unschedulable(
                "1 node has pod using PersistentVolumeClaim with the same name and ReadWriteOncePod access mode".into(),
            ));
        }
        let bound = claim.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound");
        if !bound {
            let late = world
                .class(claim_class(claim))
                .is_some_and(|c| c.volume_binding_mode.as_deref() == Some("WaitForFirstConsumer"));
            if !late {
                return actions.push(unschedulable("pod has unbound immediate PersistentVolumeClaims".into()));
            }
            unbound_late.push(claim.clone());
            continue;
        }
        let volume = claim.spec.as_ref().and_then(|s| s.volume_name.as_deref()).and_then(|v| world.volume(v));
        let reachable = volume.is_some_and(|v| {
            super::selector::node_affinity_matches(
                v.spec.as_ref().and_then(|s| s.node_affinity.as_ref()),
                &node.name,
                &node.labels,
            )
            .unwrap_or(false)
        });
        if !reachable {
            return actions.push(unschedulable("1 node(s) had volume node affinity conflict".into()));
        }
    }
    if !unbound_late.is_empty() {
        // As the scheduler does: pick the node for the claims, and wait for them to bind.
        for claim in unbound_late {
            if annotation(&claim.metadata, ANN_SELECTED_NODE).is_none() {
                let mut new = claim.clone();
                set_annotation(&mut new.metadata, ANN_SELECTED_NODE, &node.name);
                put_if_changed(&Object::PersistentVolumeClaim(claim), Object::PersistentVolumeClaim(new), actions);
            }
        }
        return;
    }
    for claim in claims_of(pod) {
        taken.insert((ns.to_string(), claim.to_string()));
    }
    let mut new = pod.clone();
    new.spec.get_or_insert_default().node_name = Some(node.name.clone());
    let status = new.status.get_or_insert_with(PodStatus::default);
    status.phase = Some("Pending".into());
    status.conditions =
        Some(vec![PodCondition { type_: "PodScheduled".into(), status: "True".into(), ..Default::default() }]);
    actions.push(Action::Write(Write::Put(Box::new(Object::Pod(new)))));
    actions.push(event(
        &object,
        false,
        "Scheduled",
        format!("Successfully assigned {ns}/{name} to {}", node.name),
        "default-scheduler",
        now,
    ));
}

/// Every container mount of a pod, with where it goes on the node.
fn plan_mounts(world: &World, pod: &Pod, state_dir: &Path) -> Result<Vec<PodMount>, String> {
    let spec = pod.spec.as_ref().ok_or("the pod has no spec")?;
    let (ns, _) = pod_name(pod);
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let volumes: BTreeMap<&str, &Volume> = spec.volumes.iter().flatten().map(|v| (v.name.as_str(), v)).collect();
    let containers = spec.init_containers.iter().flatten().chain(spec.containers.iter());
    let mut mounts = Vec::new();
    for container in containers {
        for (index, m) in container.volume_mounts.iter().flatten().enumerate() {
            let volume =
                volumes.get(m.name.as_str()).ok_or_else(|| format!("volume {:?} is not in the pod", m.name))?;
            let subpath = subpath_of(container, m)?;
            let host_path = state_dir
                .join(pod_dir(&uid))
                .join("volumes")
                .join(&m.name)
                .join(&container.name)
                .join(index.to_string());
            let mut read_only = m.read_only.unwrap_or(false);
            let source = if let Some(c) = &volume.persistent_volume_claim {
                read_only |= c.read_only.unwrap_or(false);
                let claim = world
                    .claim(ns, &c.claim_name)
                    .ok_or_else(|| format!("persistentvolumeclaim {:?} not found", c.claim_name))?;
                let pv_name = claim.spec.as_ref().and_then(|s| s.volume_name.clone()).unwrap_or_default();
                let pv = world.volume(&pv_name).ok_or_else(|| format!("persistentvolume {pv_name:?} not found"))?;
                claim_source(&c.claim_name, pv, subpath)?
            } else if let Some(e) = &volume.empty_dir {
                let size = e.size_limit.as_ref().map(|q| volfs_api::quantity::parse_size(&q.0)).transpose()?;
                let volume_id = format!("emptydir-{uid}-{}", m.name);
                if e.medium.as_deref() == Some("Memory") {
                    MountSource::MemoryDir { volume_id, size, subpath }
                } else {
                    MountSource::EmptyDir { volume_id, size, subpath }
                }
            } else if let Some(h) = &volume.host_path {
                let path = match &subpath {
                    Some(s) => Path::new(&h.path).join(s),
                    None => PathBuf::from(&h.path),
                };
                mounts.push(PodMount {
                    container: container.name.clone(),
                    volume: m.name.clone(),
                    mount_path: m.mount_path.clone(),
                    host_path: path,
                    read_only,
                    source: MountSource::HostPath,
                });
                continue;
            } else {
                // configMap, secret, downwardAPI and projected volumes are always read-only.
                read_only = true;
                MountSource::Projected { subpath }
            };
            mounts.push(PodMount {
                container: container.name.clone(),
                volume: m.name.clone(),
                mount_path: m.mount_path.clone(),
                host_path,
                read_only,
                source,
            });
        }
    }
    Ok(mounts)
}

fn claim_source(claim: &str, pv: &PersistentVolume, subpath: Option<String>) -> Result<MountSource, String> {
    let pv_name = pv.metadata.name.clone().unwrap_or_default();
    let spec = pv.spec.as_ref().ok_or("the volume has no spec")?;
    let Some(csi) = spec.csi.as_ref().filter(|c| c.driver == DRIVER) else {
        return Err(format!(
            "persistentvolume {pv_name:?} is not a volfs volume (csi driver {DRIVER}); volfs mounts only its own"
        ));
    };
    // A static PV may itself be a subPath mount; the mount's subPath is inside it.
    let base = csi.volume_attributes.as_ref().and_then(|a| a.get("subPath")).cloned();
    let subpath = match (base, subpath) {
        (Some(b), Some(s)) => Some(format!("{}/{s}", b.trim_end_matches('/'))),
        (b, s) => b.or(s),
    };
    let modes = spec.access_modes.clone().unwrap_or_default();
    let mode = if modes.iter().any(|m| m == "ReadWriteOncePod") {
        "ReadWriteOncePod"
    } else {
        modes.first().map_or("ReadWriteOnce", String::as_str)
    };
    Ok(MountSource::Claim {
        claim: claim.into(),
        pv: pv_name,
        volume_id: csi.volume_handle.clone(),
        mode: mode.into(),
        subpath,
    })
}

/// A mount's subPath, with subPathExpr expanded from the container's env as the kubelet does.
fn subpath_of(container: &Container, m: &VolumeMount) -> Result<Option<String>, String> {
    if let Some(expr) = m.sub_path_expr.as_deref().filter(|e| !e.is_empty()) {
        let env: BTreeMap<&str, &str> =
            container.env.iter().flatten().filter_map(|e| Some((e.name.as_str(), e.value.as_deref()?))).collect();
        let mut out = String::new();
        let mut missing = Vec::new();
        let mut rest = expr;
        while let Some(start) = rest.find("$(") {
            out.push_str(&rest[..start]);
            let Some(end) = rest[start..].find(')') else { break };
            let var = &rest[start + 2..start + end];
            match env.get(var).filter(|v| !v.is_empty()) {
                Some(v) => out.push_str(v),
                None => missing.push(var.to_string()),
            }
            rest = &rest[start + end + 1..];
        }
        out.push_str(rest);
        if !missing.is_empty() {
            return Err(format!(
                "failed to prepare subPath for volumeMount {:?} of container {:?}: missing value for {}",
                m.name,
                container.name,
                missing.join(", ")
            ));
        }
        return checked_subpath(container, m, &out).map(Some);
    }
    match m.sub_path.as_deref().filter(|s| !s.is_empty()) {
        Some(s) => checked_subpath(container, m, s).map(Some),
        None => Ok(None),
    }
}

fn checked_subpath(container: &Container, m: &VolumeMount, path: &str) -> Result<String, String> {
    if path.starts_with('/') {
        return Err(format!(
            "error SubPath `{path}` must not be an absolute path (volumeMount {:?} of container {:?})",
            m.name, container.name
        ));
    }
    if path.split('/').any(|c| c == "..") {
        return Err(format!(
            "unable to provision SubPath `{path}`: must not contain '..' (volumeMount {:?} of container {:?})",
            m.name, container.name
        ));
    }
    let clean: Vec<&str> = path.split('/').filter(|c| !c.is_empty() && *c != ".").collect();
    Ok(clean.join("/"))
}

/// Where a pod's mounts live, under the state dir: `pods/UID`.
fn pod_dir(uid: &str) -> PathBuf {
    PathBuf::from("pods").join(uid)
}

/// The inputs of a pod's projected volumes (configMaps, secrets, the pod's own metadata), as
/// a digest; secret bytes go into the hash only.
fn projection_digest(world: &World, pod: &Pod) -> String {
    let mut hasher = blake3::Hasher::new();
    for volume in pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()) {
        if let Some(spec) = projection_spec(world, pod, volume) {
            hasher.update(volume.name.as_bytes());
            hasher.update(&[0]);
            hasher.update(spec.as_bytes());
            hasher.update(&[0]);
        }
    }
    hasher.finalize().to_hex()[..32].to_string()
}

/// The data plane's SPEC for a configMap, secret, downwardAPI or projected volume: the
/// projected source, then the objects it reads.
fn projection_spec(world: &World, pod: &Pod, volume: &Volume) -> Option<String> {
    use serde_json::{json, Value};
    let (ns, _) = pod_name(pod);
    let source = if let Some(c) = &volume.config_map {
        json!({"sources": [{"configMap": {"name": c.name, "items": c.items, "optional": c.optional}}], "defaultMode": c.default_mode})
    } else if let Some(s) = &volume.secret {
        json!({"sources": [{"secret": {"name": s.secret_name, "items": s.items, "optional": s.optional}}], "defaultMode": s.default_mode})
    } else if let Some(d) = &volume.downward_api {
        json!({"sources": [{"downwardAPI": {"items": d.items}}], "defaultMode": d.default_mode})
    } else if let Some(p) = &volume.projected {
        json!({"sources": p.sources, "defaultMode": p.default_mode})
    } else {
        return None;
    };
    let mut docs = vec![strip_nulls(source)];
    // Only the objects the volume names: other secrets of the namespace stay out of its tree.
    let (maps, secrets) = sources_of(volume);
    let named = |meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta, names: &BTreeSet<String>| {
        meta.namespace.as_deref() == Some(ns) && meta.name.as_ref().is_some_and(|n| names.contains(n))
    };
    for c in world.config_maps.iter().filter(|c| named(&c.metadata, &maps)) {
        docs.push(
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": c.metadata.name, "namespace": ns},
            "data": c.data, "binaryData": c.binary_data}),
        );
    }
    for s in world.secrets.iter().filter(|s| named(&s.metadata, &secrets)) {
        docs.push(json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": s.metadata.name, "namespace": ns}, "data": s.data}));
    }
    let spec = pod.spec.clone().unwrap_or_default();
    let container = |c: &Container| {
        json!({"name": c.name, "resources": {"limits": c.resources.as_ref().and_then(|r| r.limits.clone()), "requests": c.resources.as_ref().and_then(|r| r.requests.clone())},
        "securityContext": {"runAsUser": c.security_context.as_ref().and_then(|s| s.run_as_user)}})
    };
    let security = spec.security_context.as_ref();
    docs.push(json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": pod.metadata.name, "namespace": ns, "uid": pod.metadata.uid, "labels": pod.metadata.labels, "annotations": user_annotations(pod)},
        "spec": {"securityContext": {"fsGroup": security.and_then(|s| s.fs_group), "runAsUser": security.and_then(|s| s.run_as_user)},
                 "containers": spec.containers.iter().map(container).collect::<Vec<Value>>(),
                 "initContainers": spec.init_containers.iter().flatten().map(container).collect::<Vec<Value>>()}}));
    let text: Vec<String> = docs.into_iter().map(|d| strip_nulls(d).to_string()).collect();
    Some(text.join("\n---\n"))
}

/// The configMaps and secrets a volume reads, by name.
fn sources_of(volume: &Volume) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut maps: BTreeSet<String> = volume.config_map.iter().map(|c| c.name.clone()).collect();
    let mut secrets: BTreeSet<String> = volume.secret.iter().filter_map(|s| s.secret_name.clone()).collect();
    for source in volume.projected.iter().flat_map(|p| p.sources.iter().flatten()) {
        maps.extend(source.config_map.as_ref().map(|c| c.name.clone()));
        secrets.extend(source.secret.as_ref().map(|s| s.name.clone()));
    }
    (maps, secrets)
}

/// The pod's annotations without mountd's own (which change as its mounts are made).
fn user_annotations(pod: &Pod) -> BTreeMap<String, String> {
    pod.metadata
        .annotations
        .clone()
        .unwrap_or_default()
        .into_iter()
        .filter(|(k, _)| !k.starts_with("volfs.io/"))
        .collect()
}

fn strip_nulls(value: serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match value {
        Value::Object(map) => {
            Value::Object(map.into_iter().filter(|(_, v)| !v.is_null()).map(|(k, v)| (k, strip_nulls(v))).collect())
        }
        Value::Array(items) => Value::Array(items.into_iter().map(strip_nulls).collect()),
        other => other,
    }
}

/// A VolumeAttachment's name, as the attach/detach controller makes it.
fn attachment_name(pv: &str, node: &str) -> String {
    let digest = blake3::hash(format!("{pv}{DRIVER}{node}").as_bytes()).to_hex();
    format!("csi-{}", &digest[..64])
}

fn staging_path(engine: &Engine, pv: &str) -> PathBuf {
    engine.driver.state_dir.join("plugins").join(DRIVER).join(pv).join("globalmount")
}

/// Carries out one pod step; the writes record what was done.
pub async fn carry_out(engine: &Engine, world: &World, step: PodStep, now: i64) -> Vec<Write> {
    match step {
        PodStep::Setup(pod) => setup(engine, world, pod, now).await,
        PodStep::Refresh(pod) => refresh(engine, world, pod, now).await,
        PodStep::Observe(pod) => observe(engine, pod).await,
        PodStep::Teardown(pod) => teardown(engine, world, pod, now).await,
    }
}

async fn setup(engine: &Engine, world: &World, pod: Pod, now: i64) -> Vec<Write> {
    let object = Object::Pod(pod.clone());
    let mounts = mounts_of(&pod).unwrap_or_default();
    let mut writes = Vec::new();
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let _ = std::fs::create_dir_all(engine.driver.state_dir.join(pod_dir(&uid)));
    let mut attached = BTreeSet::new();
    for m in &mounts {
        if let Err(message) = mount_one(engine, world, &pod, m, &mut attached, &mut writes, now).await {
            writes.push(failed_mount(&object, &m.volume, &message, now));
            return writes;
        }
    }
    if let Some(fs_group) = pod.spec.as_ref().and_then(|s| s.security_context.as_ref()?.fs_group) {
        for m in mounts.iter().filter(|m| super::runtime::owned_by_fs_group(m)) {
            if let Err(e) = super::runtime::set_volume_ownership(&m.host_path, fs_group as u32) {
                writes.push(failed_mount(&object, &m.volume, &format!("applying fsGroup {fs_group}: {e}"), now));
                return writes;
            }
        }
    }
    let mut new = pod.clone();
    if let Some(docker) = &engine.runtime {
        if let Err(e) = docker.start(&pod, &mounts, &world.config_maps).await {
            writes.push(event_write(&object, true, "Failed", format!("Error: {e}"), "kubelet", now));
            return writes;
        }
        for c in pod.spec.iter().flat_map(|s| s.containers.iter()) {
            writes.push(event_write(
                &object,
                false,
                "Started",
                format!("Started container {}", c.name),
                "kubelet",
                now,
            ));
        }
        new.status.get_or_insert_with(PodStatus::default).container_statuses = docker.statuses(&pod).await.ok();
    }
    set_annotation(&mut new.metadata, ANN_PROJECTIONS, &projection_digest(world, &pod));
    let status = new.status.get_or_insert_with(PodStatus::default);
    status.phase = Some("Running".into());
    status.start_time = Some(Time(Timestamp::now()));
    let conditions = ["PodScheduled", "Initialized", "ContainersReady", "Ready"];
    status.conditions = Some(
        conditions
            .iter()
            .map(|t| PodCondition { type_: t.to_string(), status: "True".into(), ..Default::default() })
            .collect(),
    );
    writes.push(Write::Put(Box::new(Object::Pod(new))));
    writes
}

async fn mount_one(
    engine: &Engine,
    world: &World,
    pod: &Pod,
    m: &PodMount,
    attached: &mut BTreeSet<String>,
    writes: &mut Vec<Write>,
    now: i64,
) -> Result<(), String> {
    let object = Object::Pod(pod.clone());
    let target = m.host_path.clone();
    if !matches!(m.source, MountSource::HostPath) {
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).map_err(|e| format!("making {}: {e}", parent.display()))?;
        }
    }
    match &m.source {
        MountSource::Claim { pv, volume_id, mode, subpath, .. } => {
            let capability = capability(csi_mode(mode));
            let staged = engine
                .driver
                .records
                .get::<crate::records::StageRecord>(volume_id)
                .map_err(|e| e.to_string())?
                .is_some();
            if attached.insert(pv.clone()) && !staged {
                attach(engine, world, pod, pv, volume_id, &capability, writes, now).await?;
                let staging = staging_path(engine, pv);
                let req = NodeStageVolumeRequest {
                    volume_id: volume_id.clone(),
                    staging_target_path: staging.to_string_lossy().into(),
                    volume_capability: Some(capability.clone()),
                    ..Default::default()
                };
                engine.node.node_stage_volume(tonic::Request::new(req)).await.map_err(rpc_error)?;
                writes.push(event_write(
                    &object,
                    false,
                    "SuccessfulMountVolume",
                    format!(
                        "MountVolume.MountDevice succeeded for volume {pv:?} device mount path {:?}",
                        staging.display().to_string()
                    ),
                    "kubelet",
                    now,
                ));
            }
            let mut context: std::collections::HashMap<String, String> = world
                .volume(pv)
                .and_then(|v| v.spec.as_ref()?.csi.as_ref()?.volume_attributes.clone())
                .unwrap_or_default()
                .into_iter()
                .collect();
            context.remove("subPath");
            if let Some(s) = subpath {
                context.insert("subPath".into(), s.clone());
            }
            // A pod's containers share a claim; ReadWriteOncePod is held per pod by the scheduler.
            let publish_mode =
                if mode == "ReadOnlyMany" { Mode::SingleNodeReaderOnly } else { Mode::SingleNodeMultiWriter };
            let req = NodePublishVolumeRequest {
                volume_id: volume_id.clone(),
                staging_target_path: staging_path(engine, pv).to_string_lossy().into(),
                target_path: target.to_string_lossy().into(),
                volume_capability: Some(super::engine::capability(publish_mode)),
                readonly: m.read_only,
                volume_context: context,
                ..Default::default()
            };
            publish(engine, req).await?;
        }
        MountSource::EmptyDir { volume_id, size, subpath } => {
            let mut context =
                std::collections::HashMap::from([("csi.storage.k8s.io/ephemeral".to_string(), "true".to_string())]);
            if let Some(size) = size {
                context.insert("size".into(), size.to_string());
            }
            if let Some(s) = subpath {
                context.insert("subPath".into(), s.clone());
            }
            let req = NodePublishVolumeRequest {
                volume_id: volume_id.clone(),
                target_path: target.to_string_lossy().into(),
                volume_capability: Some(super::engine::capability(Mode::SingleNodeMultiWriter)),
                readonly: m.read_only,
                volume_context: context,
                ..Default::default()
            };
            publish(engine, req).await?;
        }
        MountSource::MemoryDir { volume_id, size, subpath } => {
            let client = engine.memory.ready().await?;
            client.create_volume(volume_id, *size, None).await.map_err(|e| e.to_string())?;
            if !target.exists() {
                std::fs::create_dir(&target).map_err(|e| format!("making {}: {e}", target.display()))?;
            }
            let request = Request::Mount {
                volume: volume_id.clone(),
                snapshot: None,
                mountpoint: target.clone(),
                read_only: m.read_only,
                passthrough: true,
                subpath: subpath.clone(),
                create: subpath.is_some(),
            };
            match client.mount(request.clone()).await {
                Ok(_) => {}
                Err(e) if e.message.contains(NEEDS_FILE) => {
                    file_target(&target)?;
                    client.mount(request).await.map_err(|e| e.to_string())?;
                }
                Err(e) => return Err(e.to_string()),
            }
        }
        MountSource::Projected { subpath } => {
            let volume = pod
                .spec
                .iter()
                .flat_map(|s| s.volumes.iter().flatten())
                .find(|v| v.name == m.volume)
                .ok_or("volume not in the pod")?;
            let spec = projection_spec(world, pod, volume).ok_or("not a projected volume")?;
            match std::fs::create_dir(&target) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(format!("making {}: {e}", target.display())),
            }
            let request =
                Request::ProjectMount { spec: SpecText(spec), mountpoint: target.clone(), subpath: subpath.clone() };
            let client = engine.driver.data.client();
            match client.call(&request).await {
                Ok(_) => {}
                // A subPath naming one file is mounted on a file, as the kubelet binds it.
                Err(e) if e.message.contains("is a file: mounting it needs a regular file") => {
                    file_target(&target)?;
                    client.call(&request).await.map_err(|e| e.to_string())?;
                }
                Err(e) => return Err(e.to_string()),
            }
        }
        MountSource::HostPath => host_path(pod, m)?,
    }
    Ok(())
}

/// Mounts again those of a running pod's projected trees (with `projected`) and memory
/// emptyDirs that no data plane serves any more (ENOTCONN, or nothing mounted there). Claims
/// and disk emptyDirs are CSI publications, which `reconcile` mounts again.
pub async fn remount_dead(engine: &Engine, world: &World, pod: &Pod, projected: bool, now: i64) -> Vec<Write> {
    if pod.metadata.deletion_timestamp.is_some() || phase(pod) != "Running" {
        return Vec::new();
    }
    let mut writes = Vec::new();
    for m in mounts_of(pod).unwrap_or_default() {
        let ours = match m.source {
            MountSource::Projected { .. } => projected,
            MountSource::MemoryDir { .. } => true,
            _ => false,
        };
        if !ours || served(&m.host_path) {
            continue;
        }
        crate::driver::detach_stale_mount(&m.host_path);
        let result = mount_one(engine, world, pod, &m, &mut BTreeSet::new(), &mut writes, now).await;
        let object = Object::Pod(pod.clone());
        match result {
            Ok(()) => tracing::info!(target = %m.host_path.display(), "mounted again after its data plane restarted"),
            Err(e) => writes.push(failed_mount(&object, &m.volume, &e, now)),
        }
    }
    writes
}

/// Whether a live FUSE mount is at `path`: statfs reaches its daemon (a stat may be answered
/// from the kernel's cache); a dead one answers ENOTCONN, no mount another filesystem's magic.
fn served(path: &Path) -> bool {
    const FUSE_SUPER_MAGIC: i64 = 0x6573_5546;
    rustix::fs::statfs(path).is_ok_and(|st| st.f_type == FUSE_SUPER_MAGIC)
}

/// The kubelet's event for a volume it could not set up.
fn failed_mount(pod: &Object, volume: &str, why: &str, now: i64) -> Write {
    event_write(
        pod,
        true,
        "FailedMount",
        format!("MountVolume.SetUp failed for volume {volume:?} : {why}"),
        "kubelet",
        now,
    )
}

/// What the data plane says when a mount of one file is asked for on a directory.
const NEEDS_FILE: &str = "is not a regular file";

/// NodePublish; a subPath naming one file is published on a regular file instead of the
/// directory made for it, as the kubelet binds a file.
async fn publish(engine: &Engine, req: NodePublishVolumeRequest) -> Result<(), String> {
    match engine.node.node_publish_volume(tonic::Request::new(req.clone())).await {
        Ok(_) => Ok(()),
        Err(s) if s.message().contains(NEEDS_FILE) => {
            file_target(Path::new(&req.target_path))?;
            engine.node.node_publish_volume(tonic::Request::new(req)).await.map(drop).map_err(rpc_error)
        }
        Err(s) => Err(rpc_error(s)),
    }
}

/// Replaces the (empty) directory made as a mount target with an empty regular file.
fn file_target(target: &Path) -> Result<(), String> {
    std::fs::remove_dir(target).map_err(|e| format!("replacing {}: {e}", target.display()))?;
    std::fs::File::create(target).map(drop).map_err(|e| format!("making {}: {e}", target.display()))
}

/// ControllerPublish, recorded as the VolumeAttachment the attach/detach controller makes.
#[allow(clippy::too_many_arguments)]
async fn attach(
    engine: &Engine,
    world: &World,
    pod: &Pod,
    pv: &str,
    volume_id: &str,
    capability: &VolumeCapability,
    writes: &mut Vec<Write>,
    now: i64,
) -> Result<(), String> {
    let name = attachment_name(pv, &engine.info.name);
    let existing = world.attachments.iter().find(|a| a.metadata.name.as_deref() == Some(name.as_str()));
    if existing.and_then(|a| a.status.as_ref()).is_some_and(|s| s.attached) {
        return Ok(());
    }
    let mut attachment = existing.cloned().unwrap_or_else(|| VolumeAttachment {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            uid: Some(new_uid()),
            creation_timestamp: Some(Time(Timestamp::now())),
            ..Default::default()
        },
        spec: VolumeAttachmentSpec {
            attacher: DRIVER.into(),
            node_name: engine.info.name.clone(),
            source: VolumeAttachmentSource { persistent_volume_name: Some(pv.into()), ..Default::default() },
        },
        status: None,
    });
    // Recorded before the call: a crash in between is finished (or undone) from the record.
    engine_commit(engine, Write::Put(Box::new(Object::VolumeAttachment(attachment.clone()))))?;
    let req = ControllerPublishVolumeRequest {
        volume_id: volume_id.into(),
        node_id: engine.driver.node_id.clone(),
        volume_capability: Some(capability.clone()),
        ..Default::default()
    };
    let published = engine.controller.controller_publish_volume(tonic::Request::new(req)).await;
    let object = Object::Pod(pod.clone());
    match published {
        Ok(r) => {
            attachment.status = Some(VolumeAttachmentStatus {
                attached: true,
                attachment_metadata: Some(r.into_inner().publish_context.into_iter().collect()),
                ..Default::default()
            });
            writes.push(Write::Put(Box::new(Object::VolumeAttachment(attachment))));
            writes.push(event_write(
                &object,
                false,
                "SuccessfulAttachVolume",
                format!("AttachVolume.Attach succeeded for volume {pv:?}"),
                "attachdetach-controller",
                now,
            ));
            Ok(())
        }
        Err(s) => {
            let message = format!("AttachVolume.Attach failed for volume {pv:?} : {}", rpc_error(s));
            writes.push(event_write(
                &object,
                true,
                "FailedAttachVolume",
                message.clone(),
                "attachdetach-controller",
                now,
            ));
            Err(message)
        }
    }
}

fn engine_commit(engine: &Engine, write: Write) -> Result<(), String> {
    engine.commit(vec![write]).map_err(|e| e.to_string())
}

/// hostPath's type checks (§6.2), creating what `...OrCreate` asks for.
fn host_path(pod: &Pod, m: &PodMount) -> Result<(), String> {
    use std::os::unix::fs::{DirBuilderExt, FileTypeExt, OpenOptionsExt};
    let volume = pod
        .spec
        .iter()
        .flat_map(|s| s.volumes.iter().flatten())
        .find(|v| v.name == m.volume)
        .and_then(|v| v.host_path.clone())
        .ok_or("not a hostPath volume")?;
    let path = Path::new(&volume.path);
    let meta = std::fs::metadata(path);
    let failed = |what: &str| format!("hostPath type check failed: {} is not a {what}", volume.path);
    match volume.type_.as_deref().unwrap_or("") {
        "" => Ok(()),
        "DirectoryOrCreate" if meta.is_err() => std::fs::DirBuilder::new()
            .mode(0o755)
            .recursive(true)
            .create(path)
            .map_err(|e| format!("creating {}: {e}", volume.path)),
        "FileOrCreate" if meta.is_err() => std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o644)
            .open(path)
            .map(|_| ())
            .map_err(|e| format!("creating {}: {e}", volume.path)),
        "Directory" | "DirectoryOrCreate" => {
            meta.ok().filter(|m| m.is_dir()).map(|_| ()).ok_or_else(|| failed("directory"))
        }
        "File" | "FileOrCreate" => meta.ok().filter(|m| m.is_file()).map(|_| ()).ok_or_else(|| failed("file")),
        "Socket" => meta.ok().filter(|m| m.file_type().is_socket()).map(|_| ()).ok_or_else(|| failed("socket file")),
        "CharDevice" => {
            meta.ok().filter(|m| m.file_type().is_char_device()).map(|_| ()).ok_or_else(|| failed("character device"))
        }
        "BlockDevice" => {
            meta.ok().filter(|m| m.file_type().is_block_device()).map(|_| ()).ok_or_else(|| failed("block device"))
        }
        other => Err(format!("hostPath type {other:?} is not known")),
    }
}

/// A configMap, secret or the pod's metadata changed: every projected mount of the pod gets
/// the new generation at once (subPath mounts too).
async fn refresh(engine: &Engine, world: &World, pod: Pod, now: i64) -> Vec<Write> {
    let object = Object::Pod(pod.clone());
    let mut writes = Vec::new();
    for m in mounts_of(&pod).unwrap_or_default() {
        if !matches!(m.source, MountSource::Projected { .. }) {
            continue;
        }
        let Some(volume) = pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()).find(|v| v.name == m.volume) else {
            continue;
        };
        let Some(spec) = projection_spec(world, &pod, volume) else { continue };
        let request = Request::ProjectUpdate { mountpoint: m.host_path.clone(), spec: SpecText(spec) };
        if let Err(e) = engine.driver.data.client().call(&request).await {
            writes.push(failed_mount(&object, &m.volume, &e.to_string(), now));
            return writes;
        }
    }
    let mut new = pod.clone();
    set_annotation(&mut new.metadata, ANN_PROJECTIONS, &projection_digest(world, &pod));
    writes.push(Write::Put(Box::new(Object::Pod(new))));
    writes
}

/// The containers' statuses, and the pod's phase from them: Succeeded or Failed once every
/// container has ended for good.
async fn observe(engine: &Engine, pod: Pod) -> Vec<Write> {
    let Some(docker) = &engine.runtime else { return vec![] };
    let Ok(statuses) = docker.statuses(&pod).await else { return vec![] };
    let policy = pod.spec.as_ref().and_then(|s| s.restart_policy.clone()).unwrap_or_else(|| "Always".into());
    let codes: Vec<Option<i32>> =
        statuses.iter().map(|s| s.state.as_ref().and_then(|st| st.terminated.as_ref()).map(|t| t.exit_code)).collect();
    let all_ended = !codes.is_empty() && codes.iter().all(Option::is_some);
    let all_zero = codes.iter().all(|c| *c == Some(0));
    let phase = match (all_ended, policy.as_str()) {
        (true, "Never") if all_zero => "Succeeded",
        (true, "Never") => "Failed",
        (true, "OnFailure") if all_zero => "Succeeded",
        _ => "Running",
    };
    let mut new = pod.clone();
    let status = new.status.get_or_insert_with(PodStatus::default);
    status.container_statuses = Some(statuses);
    status.phase = Some(phase.into());
    if new == pod {
        return vec![];
    }
    vec![Write::Put(Box::new(Object::Pod(new)))]
}

/// Unmounts everything the pod had (planned mounts included), detaches claims no other pod
/// uses, deletes emptyDirs, then the pod object.
async fn teardown(engine: &Engine, world: &World, pod: Pod, now: i64) -> Vec<Write> {
    let object = Object::Pod(pod.clone());
    if let Some(docker) = &engine.runtime {
        if let Err(e) = docker.remove(&pod).await {
            return vec![event_write(
                &object,
                true,
                "FailedKillPod",
                format!("error killing pod: {e}"),
                "kubelet",
                now,
            )];
        }
    }
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let mounts = mounts_of(&pod).unwrap_or_default();
    let mut result: Result<(), String> = Ok(());
    for m in &mounts {
        let target = m.host_path.clone();
        let done = match &m.source {
            MountSource::Claim { volume_id, .. } | MountSource::EmptyDir { volume_id, .. } => {
                let req = NodeUnpublishVolumeRequest {
                    volume_id: volume_id.clone(),
                    target_path: target.to_string_lossy().into(),
                };
                engine.node.node_unpublish_volume(tonic::Request::new(req)).await.map(|_| ()).map_err(rpc_error)
            }
            MountSource::Projected { .. } => not_found_is_done(engine.driver.data.client().umount(&target).await),
            MountSource::MemoryDir { .. } => match engine.memory.running().await {
                Some(client) => not_found_is_done(client.umount(&target).await),
                None => Ok(()),
            },
            MountSource::HostPath => Ok(()),
        };
        if let Err(e) = done {
            result = Err(format!("UnmountVolume.TearDown failed for volume {:?} : {e}", m.volume));
            break;
        }
        if !matches!(m.source, MountSource::HostPath) {
            let _ = std::fs::remove_dir(&target).or_else(|_| std::fs::remove_file(&target));
        }
    }
    if result.is_ok() {
        result = detach_unused(engine, world, &pod, &mounts).await;
    }
    if result.is_ok() {
        result = delete_memory_dirs(engine, &mounts).await;
    }
    if let Err(message) = result {
        return vec![event_write(&object, true, "FailedUnmount", message, "kubelet", now)];
    }
    let _ = std::fs::remove_dir_all(engine.driver.state_dir.join(pod_dir(&uid)));
    vec![Write::Remove(object.key())]
}

fn not_found_is_done(r: Result<(), volfs_api::ApiError>) -> Result<(), String> {
    match r {
        Err(e) if e.kind != volfs_api::ErrorKind::NotFound => Err(e.to_string()),
        _ => Ok(()),
    }
}

/// The pod's memory emptyDirs, once none of its mounts shows them.
async fn delete_memory_dirs(engine: &Engine, mounts: &[PodMount]) -> Result<(), String> {
    let ids: BTreeSet<&String> = mounts
        .iter()
        .filter_map(|m| match &m.source {
            MountSource::MemoryDir { volume_id, .. } => Some(volume_id),
            _ => None,
        })
        .collect();
    let Some(client) = engine.memory.running().await.filter(|_| !ids.is_empty()) else { return Ok(()) };
    for id in ids {
        not_found_is_done(client.delete_volume(id).await)?;
    }
    Ok(())
}

/// NodeUnstage and ControllerUnpublish of the claims of `pod` that no other pod on the node has.
async fn detach_unused(engine: &Engine, world: &World, pod: &Pod, mounts: &[PodMount]) -> Result<(), String> {
    let others: BTreeSet<String> = world
        .pods
        .iter()
        .filter(|p| p.metadata.uid != pod.metadata.uid)
        .flat_map(|p| mounts_of(p).unwrap_or_default())
        .filter_map(|m| match m.source {
            MountSource::Claim { pv, .. } => Some(pv),
            _ => None,
        })
        .collect();
    let mut done = BTreeSet::new();
    for m in mounts {
        let MountSource::Claim { pv, volume_id, .. } = &m.source else { continue };
        if others.contains(pv) || !done.insert(pv.clone()) {
            continue;
        }
        let staging = staging_path(engine, pv);
        let req = NodeUnstageVolumeRequest {
            volume_id: volume_id.clone(),
            staging_target_path: staging.to_string_lossy().into(),
        };
        engine.node.node_unstage_volume(tonic::Request::new(req)).await.map_err(rpc_error)?;
        let req = ControllerUnpublishVolumeRequest {
            volume_id: volume_id.clone(),
            node_id: engine.driver.node_id.clone(),
            ..Default::default()
        };
        engine.controller.controller_unpublish_volume(tonic::Request::new(req)).await.map_err(rpc_error)?;
        let name = attachment_name(pv, &engine.info.name);
        engine_commit(engine, Write::Remove(super::object::ObjectKey::new(Kind::VolumeAttachment, "", &name)))?;
        let _ = std::fs::remove_dir_all(staging.parent().unwrap_or(&staging));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::standalone::object::parse_manifests;

    #[test]
    fn a_projected_tree_carries_only_the_objects_its_volume_names() {
        let text = "apiVersion: v1\nkind: Pod\nmetadata: {name: p, namespace: default}\nspec:\n  containers: [{name: c}]\n  volumes:\n  - {name: conf, configMap: {name: conf}}\n  - {name: both, projected: {sources: [{secret: {name: used}}, {configMap: {name: conf}}]}}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: conf, namespace: default}\ndata: {k: v}\n---\napiVersion: v1\nkind: Secret\nmetadata: {name: used, namespace: default}\nstringData: {a: b}\n---\napiVersion: v1\nkind: Secret\nmetadata: {name: unrelated, namespace: default}\nstringData: {x: y}\n";
        let mut objects = parse_manifests(text, "-").unwrap();
        for o in objects.iter_mut() {
            if let Object::Secret(s) = o {
                // As admission stores them: stringData folded into data.
                let data = s
                    .string_data
                    .take()
                    .unwrap()
                    .into_iter()
                    .map(|(k, v)| (k, k8s_openapi::ByteString(v.into_bytes())));
                s.data = Some(data.collect());
            }
        }
        let world = World::from_objects(objects);
        let pod = &world.pods[0];
        let volumes = pod.spec.as_ref().unwrap().volumes.as_ref().unwrap();
        let conf = projection_spec(&world, pod, &volumes[0]).unwrap();
        assert!(conf.contains("\"conf\"") && !conf.contains("used") && !conf.contains("unrelated"), "{conf}");
        let both = projection_spec(&world, pod, &volumes[1]).unwrap();
        assert!(both.contains("\"used\"") && both.contains("\"conf\"") && !both.contains("unrelated"), "{both}");
    }
}
