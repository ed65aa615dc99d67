//! Where standalone mode's decisions meet the world: the API's writes (admission, then the
//! store), and reconcile passes that run the controllers over every object, commit what they
//! decided in one transaction, then carry out their actions through the CSI services, exactly
//! the calls a cluster's sidecars and kubelet would make. Every action is idempotent and keyed
//! by the objects (a PV is named after its claim's uid), so a crash between committing and
//! acting is finished by the next pass.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{CSIPersistentVolumeSource, ObjectReference, PersistentVolume, PersistentVolumeSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use tokio::sync::{Mutex, Notify};

use super::admission::{admit, Verb};
use super::binder::{self, claim_request};
use super::object::{parse_manifests, Kind, Object, ObjectKey};
use super::store::{Event, Store, Write};
use super::world::*;
use super::{pods, protection, resizer, snapshots};
use crate::capability::{topology, TOPOLOGY_KEY};
use crate::csi::v1::controller_server::Controller as _;
use crate::csi::v1::volume_capability::{access_mode::Mode, AccessMode, AccessType, MountVolume};
use crate::csi::v1::*;
use crate::driver::Driver;

/// How often a pass runs when nothing wakes it: retries of failed actions.
const RESYNC: Duration = Duration::from_secs(2);
/// Passes in a row while objects keep changing (a bind takes two).
const MAX_PASSES: usize = 16;

pub struct Engine {
    store: Store,
    pub(super) driver: Arc<Driver>,
    pub(super) controller: crate::controller::Controller,
    pub(super) node: crate::node::Node,
    pub(super) info: NodeInfo,
    pub(super) runtime: Option<super::runtime::Docker>,
    pub(super) memory: super::memory::MemoryPool,
    /// Set when the disk data plane was started again.
    disk_restarted: std::sync::atomic::AtomicBool,
    /// API writes and reconcile passes take turns.
    turn: Mutex<()>,
    wake: Notify,
}

/// What `describe` shows: the object and its events.
pub struct Described {
    pub object: Object,
    pub events: Vec<Event>,
}

pub fn now_unix() -> i64 {
    Timestamp::now().as_second()
}

impl Engine {
    pub fn new(
        store: Store,
        driver: Arc<Driver>,
        mut info: NodeInfo,
        runtime: Option<super::runtime::Docker>,
        memory: super::memory::MemoryPool,
    ) -> Engine {
        info.runtime = runtime.is_some();
        Engine {
            runtime,
            memory,
            disk_restarted: Default::default(),
            store,
            controller: crate::controller::Controller::new(driver.clone()),
            node: crate::node::Node::new(driver.clone()),
            driver,
            info,
            turn: Mutex::new(()),
            wake: Notify::new(),
        }
    }

    /// Applies every object in `text`, all or none: one invalid object changes nothing.
    pub async fn apply(&self, text: &str, source: &str) -> Result<Vec<String>, String> {
        let objects = parse_manifests(text, source)?;
        if objects.is_empty() {
            return Err(format!("{source}: no objects passed to apply"));
        }
        let _turn = self.turn.lock().await;
        let world = self.world().map_err(|e| e.to_string())?;
        let now = Timestamp::now();
        let mut writes = Vec::new();
        let mut lines = Vec::new();
        for object in &objects {
            let key = object.key();
            let stored = self.store.get(&key).map_err(|e| e.to_string())?;
            let uid = new_uid();
            let (admitted, verb) = admit(object.clone(), stored.as_ref(), uid, now)?;
            pods::check_references(&admitted, stored.as_ref(), &world, &objects)?;
            lines.push(format!("{}/{} {}", key.kind.resource(), key.name, verb.as_str()));
            if verb != Verb::Unchanged {
                writes.push(Write::Put(Box::new(admitted)));
            }
        }
        self.store.commit(writes).map_err(|e| e.to_string())?;
        self.wake.notify_one();
        Ok(lines)
    }

    /// Deletes an object: at once, or (claims, volumes, pods, snapshots) once what protects it
    /// lets go. The answer says which.
    pub async fn delete(&self, key: &ObjectKey) -> Result<Vec<String>, String> {
        let _turn = self.turn.lock().await;
        let Some(mut object) = self.store.get(key).map_err(|e| e.to_string())? else {
            return Err(format!("{} {:?} not found", key.kind.resource(), key.name));
        };
        let mut lines = vec![format!("{} {:?} deleted", key.kind.resource(), key.name)];
        let write = if protection::finalized(key.kind) {
            if object.meta().deletion_timestamp.is_none() {
                object.meta_mut().deletion_timestamp = Some(Time(Timestamp::now()));
            }
            let world = self.world().map_err(|e| e.to_string())?;
            lines.extend(protection::why_waiting(&object, &world));
            Write::Put(Box::new(object))
        } else {
            Write::Remove(key.clone())
        };
        self.store.commit(vec![write]).map_err(|e| e.to_string())?;
        self.wake.notify_one();
        Ok(lines)
    }

    pub fn get(&self, kind: Kind, namespace: Option<&str>, name: Option<&str>) -> Result<Vec<Object>, String> {
        let all = self.store.list(kind).map_err(|e| e.to_string())?;
        let found: Vec<Object> = all
            .into_iter()
            .filter(|o| !kind.namespaced() || namespace.is_none_or(|ns| o.meta().namespace.as_deref() == Some(ns)))
            .filter(|o| name.is_none_or(|n| o.name() == n))
            .collect();
        if let (Some(name), true) = (name, found.is_empty()) {
            return Err(format!("{} {name:?} not found", kind.resource()));
        }
        Ok(found)
    }

    pub fn describe(&self, key: &ObjectKey) -> Result<Described, String> {
        let object = self
            .store
            .get(key)
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("{} {:?} not found", key.kind.resource(), key.name))?;
        let events = self.store.events(key, object.meta().uid.as_deref().unwrap_or("")).map_err(|e| e.to_string())?;
        Ok(Described { object, events })
    }

    pub(super) fn commit(&self, writes: Vec<Write>) -> crate::error::Result<()> {
        self.store.commit(writes)
    }

    pub(super) fn get_one(&self, key: &ObjectKey) -> Option<Object> {
        self.store.get(key).ok().flatten()
    }

    fn world(&self) -> crate::error::Result<World> {
        let mut objects = Vec::new();
        for kind in Kind::ALL {
            objects.extend(self.store.list(kind)?);
        }
        Ok(World::from_objects(objects))
    }

    /// Runs passes whenever woken, and every `RESYNC`.
    pub async fn run(self: Arc<Self>) {
        // Mounts a data plane that died while mountd was away no longer serves.
        self.remount(true).await;
        loop {
            let disk = self.disk_restarted.swap(false, std::sync::atomic::Ordering::SeqCst);
            let memory = self.memory.restarted().await;
            if disk || memory {
                self.remount(disk).await;
            }
            self.reconcile().await;
            let _ = tokio::time::timeout(RESYNC, self.wake.notified()).await;
        }
    }

    /// The data plane came back (its CSI publications are mounted again by `reconcile`): the
    /// pods' projected trees and memory emptyDirs it served are made again.
    pub fn data_plane_restarted(&self) {
        self.disk_restarted.store(true, std::sync::atomic::Ordering::SeqCst);
        self.wake.notify_one();
    }

    /// Mounts again every pod mount that a data plane no longer serves.
    async fn remount(&self, projected: bool) {
        let _turn = self.turn.lock().await;
        let Ok(world) = self.world() else { return };
        let now = now_unix();
        let mut writes = Vec::new();
        for pod in &world.pods {
            writes.extend(pods::remount_dead(self, &world, pod, projected, now).await);
        }
        if let Err(e) = self.store.commit(writes) {
            tracing::warn!(error = %e, "recording remounts failed");
        }
    }

    /// Passes until objects stop changing.
    pub async fn reconcile(&self) {
        let _turn = self.turn.lock().await;
        for _ in 0..MAX_PASSES {
            match self.pass().await {
                Ok(true) => continue,
                Ok(false) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "reconcile pass failed");
                    break;
                }
            }
        }
    }

    /// One pass; whether any object changed.
    async fn pass(&self) -> crate::error::Result<bool> {
        let world = self.world()?;
        let now = now_unix();
        let mut actions = binder::plan(&world, &self.info, now);
        actions.extend(protection::plan(&world));
        actions.extend(pods::plan(&world, &self.info, now));
        actions.extend(snapshots::plan(&world, now));
        actions.extend(resizer::plan(&world));
        let mut writes = Vec::new();
        let mut effects = Vec::new();
        for action in actions {
            match action {
                Action::Write(w) => writes.push(w),
                other => effects.push(other),
            }
        }
        let mut changed = writes.iter().any(|w| !matches!(w, Write::Event(_)));
        self.store.commit(writes)?;
        for effect in effects {
            let writes = match effect {
                Action::Write(_) => unreachable!("split above"),
                Action::Provision(p) => self.provision(&world, &p, now).await,
                Action::DeleteVolume(pv) => self.delete_volume(&pv, now).await,
                Action::Pod(step) => pods::carry_out(self, &world, *step, now).await,
                Action::Snapshot(step) => snapshots::carry_out(self, *step, now).await,
                Action::Expand(e) => resizer::carry_out(self, *e, now).await,
            };
            changed |= writes.iter().any(|w| !matches!(w, Write::Event(_)));
            self.store.commit(writes)?;
        }
        Ok(changed)
    }

    /// The external-provisioner's work: CreateVolume named after the claim, then the PV.
    async fn provision(&self, world: &World, p: &Provision, now: i64) -> Vec<Write> {
        let claim = Object::PersistentVolumeClaim(p.claim.clone());
        let (namespace, name) = (claim.meta().namespace.clone().unwrap_or_default(), claim.name().to_string());
        let source = "csi.volfs.io_external-provisioner";
        let mut writes = vec![event_write(
            &claim,
            false,
            "Provisioning",
            format!("External provisioner is provisioning volume for claim \"{namespace}/{name}\""),
            source,
            now,
        )];
        let class_name = p.class.metadata.name.clone().unwrap_or_default();
        let failed = |message: String| {
            event_write(
                &claim,
                true,
                "ProvisioningFailed",
                format!("failed to provision volume with StorageClass {class_name:?}: {message}"),
                source,
                now,
            )
        };
        let spec = p.claim.spec.clone().unwrap_or_default();
        let modes = spec.access_modes.clone().unwrap_or_default();
        let request = claim_request(&p.claim).map(|q| q.value().max(0) as i64).unwrap_or(0);
        let content_source = match Self::content_source(world, &p.claim) {
            Ok(s) => s,
            Err(message) => {
                writes.push(failed(message));
                return writes;
            }
        };
        let req = CreateVolumeRequest {
            name: p.pv_name.clone(),
            capacity_range: Some(CapacityRange { required_bytes: request, limit_bytes: 0 }),
            volume_capabilities: modes.iter().map(|m| capability(csi_mode(m))).collect(),
            parameters: p.class.parameters.clone().unwrap_or_default().into_iter().collect(),
            volume_content_source: content_source,
            accessibility_requirements: Some(TopologyRequirement {
                requisite: vec![topology(&self.info.name)],
                preferred: vec![topology(&self.info.name)],
            }),
            ..Default::default()
        };
        let created = match self.controller.create_volume(tonic::Request::new(req)).await {
            Ok(r) => r.into_inner().volume.unwrap_or_default(),
            Err(status) => {
                writes.push(failed(rpc_error(status)));
                return writes;
            }
        };
        let mut meta = ObjectMeta { name: Some(p.pv_name.clone()), uid: Some(new_uid()), ..Default::default() };
        meta.creation_timestamp = Some(Time(Timestamp::now()));
        set_annotation(&mut meta, ANN_PROVISIONED_BY, DRIVER);
        add_finalizer(&mut meta, FINALIZER_PV_PROTECTION);
        add_finalizer(&mut meta, FINALIZER_PROVISIONER);
        let capacity = if created.capacity_bytes > 0 { created.capacity_bytes as u64 } else { request as u64 };
        let volume = PersistentVolume {
            metadata: meta,
            spec: Some(PersistentVolumeSpec {
                access_modes: Some(modes),
                capacity: Some([("storage".to_string(), bytes_quantity(capacity))].into()),
                claim_ref: Some(ObjectReference {
                    api_version: Some("v1".into()),
                    kind: Some("PersistentVolumeClaim".into()),
                    namespace: Some(namespace),
                    name: Some(name),
                    uid: p.claim.metadata.uid.clone(),
                    ..Default::default()
                }),
                csi: Some(CSIPersistentVolumeSource {
                    driver: DRIVER.into(),
                    volume_handle: created.volume_id.clone(),
                    volume_attributes: Some(created.volume_context.into_iter().collect()),
                    ..Default::default()
                }),
                persistent_volume_reclaim_policy: p.class.reclaim_policy.clone().or(Some("Delete".into())),
                storage_class_name: Some(class_name),
                mount_options: p.class.mount_options.clone(),
                volume_mode: spec.volume_mode.clone(),
                node_affinity: Some(node_affinity(&self.info.name)),
                ..Default::default()
            }),
            status: None,
        };
        writes.push(Write::Put(Box::new(Object::PersistentVolume(volume))));
        writes.push(event_write(
            &claim,
            false,
            "ProvisioningSucceeded",
            format!("Successfully provisioned volume {}", p.pv_name),
            source,
            now,
        ));
        writes
    }

    /// A claim's `dataSource` as a CSI content source (a snapshot's handle, a claim's volume).
    fn content_source(
        world: &World,
        claim: &k8s_openapi::api::core::v1::PersistentVolumeClaim,
    ) -> Result<Option<VolumeContentSource>, String> {
        use volume_content_source::{SnapshotSource, Type, VolumeSource};
        let Some(source) = claim.spec.as_ref().and_then(|s| s.data_source.clone()) else { return Ok(None) };
        let namespace = claim.metadata.namespace.clone().unwrap_or_default();
        let kind = match source.kind.as_str() {
            "PersistentVolumeClaim" => {
                let from = world
                    .claim(&namespace, &source.name)
                    .ok_or_else(|| format!("persistentvolumeclaim {:?} not found", source.name))?;
                let handle = from
                    .spec
                    .as_ref()
                    .and_then(|s| s.volume_name.as_deref())
                    .and_then(|v| world.volume(v))
                    .and_then(|v| v.spec.as_ref()?.csi.as_ref())
                    .map(|c| c.volume_handle.clone())
                    .ok_or_else(|| {
                        format!("persistentvolumeclaim {:?} is not bound to a volfs volume yet", source.name)
                    })?;
                Type::Volume(VolumeSource { volume_id: handle })
            }
            _ => {
                let handle = super::snapshots::ready_handle(world, &namespace, &source.name)?;
                Type::Snapshot(SnapshotSource { snapshot_id: handle })
            }
        };
        Ok(Some(VolumeContentSource { r#type: Some(kind) }))
    }

    /// Reclaim policy `Delete`: DeleteVolume, then the PV goes.
    async fn delete_volume(&self, volume: &PersistentVolume, now: i64) -> Vec<Write> {
        let object = Object::PersistentVolume(volume.clone());
        let Some(handle) = volume.spec.as_ref().and_then(|s| s.csi.as_ref()).map(|c| c.volume_handle.clone()) else {
            return vec![];
        };
        let req = DeleteVolumeRequest { volume_id: handle, ..Default::default() };
        match self.controller.delete_volume(tonic::Request::new(req)).await {
            Ok(_) => vec![Write::Remove(object.key())],
            Err(status) => vec![event_write(
                &object,
                true,
                "VolumeFailedDelete",
                rpc_error(status),
                "csi.volfs.io_external-provisioner",
                now,
            )],
        }
    }
}

/// A failed CSI call as the sidecars and the kubelet report it.
pub fn rpc_error(status: tonic::Status) -> String {
    format!("rpc error: code = {:?} desc = {}", status.code(), status.message())
}

/// A uid as the API server makes them (a random UUID v4).
pub fn new_uid() -> String {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).expect("the kernel gives random bytes");
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!("{}-{}-{}-{}-{}", &h[0..8], &h[8..12], &h[12..16], &h[16..20], &h[20..32])
}

/// Bytes as the provisioner writes a capacity: the largest binary unit that divides it.
pub fn bytes_quantity(bytes: u64) -> k8s_openapi::apimachinery::pkg::api::resource::Quantity {
    const UNITS: [(&str, u64); 5] =
        [("Pi", 1 << 50), ("Ti", 1 << 40), ("Gi", 1 << 30), ("Mi", 1 << 20), ("Ki", 1 << 10)];
    let text = UNITS
        .iter()
        .find(|(_, size)| bytes >= *size && bytes.is_multiple_of(*size))
        .map_or_else(|| bytes.to_string(), |(unit, size)| format!("{}{unit}", bytes / size));
    k8s_openapi::apimachinery::pkg::api::resource::Quantity(text)
}

/// Kubernetes' access modes as CSI modes, for a node plugin with SINGLE_NODE_MULTI_WRITER.
/// Standalone mode is one node: "many" means the pods of this node.
pub fn csi_mode(mode: &str) -> Mode {
    match mode {
        "ReadOnlyMany" => Mode::SingleNodeReaderOnly,
        "ReadWriteMany" => Mode::SingleNodeMultiWriter,
        "ReadWriteOncePod" => Mode::SingleNodeSingleWriter,
        _ => Mode::SingleNodeMultiWriter,
    }
}

pub fn capability(mode: Mode) -> VolumeCapability {
    VolumeCapability {
        access_type: Some(AccessType::Mount(MountVolume::default())),
        access_mode: Some(AccessMode { mode: mode as i32 }),
    }
}

fn node_affinity(node: &str) -> k8s_openapi::api::core::v1::VolumeNodeAffinity {
    use k8s_openapi::api::core::v1::{NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, VolumeNodeAffinity};
    VolumeNodeAffinity {
        required: Some(NodeSelector {
            node_selector_terms: vec![NodeSelectorTerm {
                match_expressions: Some(vec![NodeSelectorRequirement {
                    key: TOPOLOGY_KEY.into(),
                    operator: "In".into(),
                    values: Some(vec![node.into()]),
                }]),
                match_fields: None,
            }],
        }),
    }
}

/// The labels a node has: the ones given, plus the hostname and volfs' topology key.
pub fn node_labels(name: &str, given: HashMap<String, String>) -> super::selector::Labels {
    let mut labels: super::selector::Labels = given.into_iter().collect();
    labels.entry("kubernetes.io/hostname".into()).or_insert_with(|| name.into());
    labels.insert(TOPOLOGY_KEY.into(), name.into());
    labels
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capacities_read_as_the_provisioner_writes_them() {
        assert_eq!(bytes_quantity(1 << 30).0, "1Gi");
        assert_eq!(bytes_quantity(1536 << 20).0, "1536Mi");
        assert_eq!(bytes_quantity(1000).0, "1000");
        assert_eq!(bytes_quantity(4096).0, "4Ki");
    }

    #[test]
    fn uids_are_uuids() {
        let u = new_uid();
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "4");
        assert_ne!(u, new_uid());
    }
}
