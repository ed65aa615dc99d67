//! What the controllers read (every object, this node) and what they decide (`Action`s): pure
//! data, so each controller is a function tested without a store, a data plane or a clock.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolume, PersistentVolumeClaim, Pod, Secret};
use k8s_openapi::api::storage::v1::{StorageClass, VolumeAttachment};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::object::Object;
use super::selector::Labels;
use super::snapshot::{VolumeSnapshot, VolumeSnapshotClass, VolumeSnapshotContent};
use super::store::{Event, Write};

/// The CSI driver name standalone mode provisions with (a StorageClass's `provisioner`).
pub const DRIVER: &str = "csi.volfs.io";

pub const ANN_BIND_COMPLETED: &str = "pv.kubernetes.io/bind-completed";
pub const ANN_BOUND_BY_CONTROLLER: &str = "pv.kubernetes.io/bound-by-controller";
pub const ANN_PROVISIONED_BY: &str = "pv.kubernetes.io/provisioned-by";
pub const ANN_STORAGE_PROVISIONER: &str = "volume.kubernetes.io/storage-provisioner";
pub const ANN_BETA_STORAGE_PROVISIONER: &str = "volume.beta.kubernetes.io/storage-provisioner";
pub const ANN_SELECTED_NODE: &str = "volume.kubernetes.io/selected-node";
pub const ANN_DEFAULT_CLASS: &str = "storageclass.kubernetes.io/is-default-class";
pub const FINALIZER_PVC_PROTECTION: &str = "kubernetes.io/pvc-protection";
pub const FINALIZER_PV_PROTECTION: &str = "kubernetes.io/pv-protection";
pub const FINALIZER_PROVISIONER: &str = "external-provisioner.volume.kubernetes.io/finalizer";

/// The node standalone mode runs on.
#[derive(Clone, Debug, Default)]
pub struct NodeInfo {
    pub name: String,
    pub labels: Labels,
    /// mountd's state dir: pods' mounts are made under it.
    pub state_dir: std::path::PathBuf,
    /// Whether pods' containers are run (`--runtime docker`).
    pub runtime: bool,
}

/// Every object, by kind.
#[derive(Clone, Debug, Default)]
pub struct World {
    pub classes: Vec<StorageClass>,
    pub volumes: Vec<PersistentVolume>,
    pub claims: Vec<PersistentVolumeClaim>,
    pub snapshot_classes: Vec<VolumeSnapshotClass>,
    pub snapshots: Vec<VolumeSnapshot>,
    pub snapshot_contents: Vec<VolumeSnapshotContent>,
    pub attachments: Vec<VolumeAttachment>,
    pub config_maps: Vec<ConfigMap>,
    pub secrets: Vec<Secret>,
    pub pods: Vec<Pod>,
}

impl World {
    pub fn from_objects(objects: impl IntoIterator<Item = Object>) -> World {
        let mut w = World::default();
        for object in objects {
            match object {
                Object::StorageClass(o) => w.classes.push(o),
                Object::PersistentVolume(o) => w.volumes.push(o),
                Object::PersistentVolumeClaim(o) => w.claims.push(o),
                Object::VolumeSnapshotClass(o) => w.snapshot_classes.push(o),
                Object::VolumeSnapshot(o) => w.snapshots.push(o),
                Object::VolumeSnapshotContent(o) => w.snapshot_contents.push(o),
                Object::VolumeAttachment(o) => w.attachments.push(o),
                Object::ConfigMap(o) => w.config_maps.push(o),
                Object::Secret(o) => w.secrets.push(o),
                Object::Pod(o) => w.pods.push(o),
            }
        }
        w
    }

    pub fn class(&self, name: &str) -> Option<&StorageClass> {
        self.classes.iter().find(|c| c.metadata.name.as_deref() == Some(name))
    }

    /// The default class: the newest of those annotated as default, as the API server picks.
    pub fn default_class(&self) -> Option<&StorageClass> {
        self.classes
            .iter()
            .filter(|c| annotation(&c.metadata, ANN_DEFAULT_CLASS) == Some("true"))
            .max_by_key(|c| (c.metadata.creation_timestamp.as_ref().map(|t| t.0), c.metadata.name.clone()))
    }

    pub fn claim(&self, namespace: &str, name: &str) -> Option<&PersistentVolumeClaim> {
        self.claims
            .iter()
            .find(|c| c.metadata.namespace.as_deref() == Some(namespace) && c.metadata.name.as_deref() == Some(name))
    }

    pub fn volume(&self, name: &str) -> Option<&PersistentVolume> {
        self.volumes.iter().find(|v| v.metadata.name.as_deref() == Some(name))
    }
}

/// A provision the external-provisioner would make: CreateVolume, then the PV, pre-bound.
#[derive(Clone, Debug, PartialEq)]
pub struct Provision {
    pub claim: PersistentVolumeClaim,
    pub class: StorageClass,
    pub pv_name: String,
}

/// What a controller decided.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    Write(Write),
    Provision(Box<Provision>),
    /// CSI DeleteVolume of the PV's volume, then the PV goes (reclaim policy `Delete`).
    DeleteVolume(Box<PersistentVolume>),
    Pod(Box<super::pods::PodStep>),
    Snapshot(Box<super::snapshots::SnapshotStep>),
    Expand(Box<super::resizer::Expansion>),
}

pub fn annotation<'a>(meta: &'a ObjectMeta, key: &str) -> Option<&'a str> {
    meta.annotations.as_ref()?.get(key).map(String::as_str)
}

pub fn set_annotation(meta: &mut ObjectMeta, key: &str, value: &str) {
    meta.annotations.get_or_insert_with(BTreeMap::new).insert(key.into(), value.into());
}

pub fn has_finalizer(meta: &ObjectMeta, name: &str) -> bool {
    meta.finalizers.iter().flatten().any(|f| f == name)
}

pub fn add_finalizer(meta: &mut ObjectMeta, name: &str) {
    if !has_finalizer(meta, name) {
        meta.finalizers.get_or_insert_with(Vec::new).push(name.into());
    }
}

pub fn remove_finalizer(meta: &mut ObjectMeta, name: &str) {
    if let Some(f) = meta.finalizers.as_mut() {
        f.retain(|x| x != name);
    }
}

/// An event about `object` from `source`.
pub fn event(object: &Object, warning: bool, reason: &str, message: String, source: &str, now: i64) -> Action {
    Action::Write(event_write(object, warning, reason, message, source, now))
}

/// The same event as a write, for the steps that commit what they did.
pub fn event_write(object: &Object, warning: bool, reason: &str, message: String, source: &str, now: i64) -> Write {
    Write::Event(Event {
        object: object.key(),
        uid: object.meta().uid.clone().unwrap_or_default(),
        kind: if warning { "Warning" } else { "Normal" }.into(),
        reason: reason.into(),
        message,
        source: source.into(),
        first_unix: now,
        last_unix: now,
        count: 1,
    })
}

/// `Put` of `new` when it differs from `old`.
pub fn put_if_changed(old: &Object, new: Object, actions: &mut Vec<Action>) {
    if *old != new {
        actions.push(Action::Write(Write::Put(Box::new(new))));
    }
}
