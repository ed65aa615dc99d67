//! What the API server does to an object before it is stored: defaults, validation (errors
//! shaped like the API server's: `Kind "name" is invalid: field: why`), and the merge of a
//! re-applied object with the stored one, which keeps what controllers own (status, bindings,
//! uids, finalizers, their annotations) and refuses changes to immutable fields.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Pod, Volume};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use k8s_openapi::ByteString;
use volfs_api::quantity::Quantity;

use super::object::Object;
use super::world::*;

/// What applying did to the object, as kubectl reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verb {
    Created,
    Configured,
    Unchanged,
}

impl Verb {
    pub fn as_str(self) -> &'static str {
        match self {
            Verb::Created => "created",
            Verb::Configured => "configured",
            Verb::Unchanged => "unchanged",
        }
    }
}

const ACCESS_MODES: [&str; 4] = ["ReadWriteOnce", "ReadOnlyMany", "ReadWriteMany", "ReadWriteOncePod"];
/// Annotation prefixes controllers own: kept when a re-applied manifest lacks them.
const CONTROLLER_ANNOTATIONS: [&str; 4] =
    ["pv.kubernetes.io/", "volume.kubernetes.io/", "volume.beta.kubernetes.io/", "volfs.io/"];

/// The object to store for `applied`, given what is stored under its key, and the verb.
pub fn admit(applied: Object, stored: Option<&Object>, uid: String, now: Timestamp) -> Result<(Object, Verb), String> {
    let mut object = applied;
    let what = format!("{} {:?}", object.kind(), object.name());
    let invalid = |field: &str, why: &str| format!("{what} is invalid: {field}: {why}");
    normalize_meta(&mut object);
    validate_name(object.name()).map_err(|why| invalid("metadata.name", &why))?;
    if let Some(ns) = object.meta().namespace.as_deref() {
        validate_label_name(ns).map_err(|why| invalid("metadata.namespace", &why))?;
    }
    validate(&mut object).map_err(|(field, why)| invalid(&field, &why))?;
    let Some(stored) = stored else {
        let meta = object.meta_mut();
        meta.uid = Some(uid);
        meta.creation_timestamp = Some(Time(now));
        meta.resource_version = None;
        meta.deletion_timestamp = None;
        meta.finalizers = None;
        meta.generation = Some(1);
        clear_status(&mut object);
        return Ok((object, Verb::Created));
    };
    if stored.meta().deletion_timestamp.is_some() {
        return Err(format!("{what} is being deleted; apply it again once it is gone"));
    }
    keep_owned(&mut object, stored).map_err(|(field, why)| invalid(&field, &why))?;
    let mut unchanged = stored.clone();
    unchanged.meta_mut().resource_version = None;
    object.meta_mut().resource_version = None;
    if object == unchanged {
        return Ok((stored.clone(), Verb::Unchanged));
    }
    Ok((object, Verb::Configured))
}

fn normalize_meta(object: &mut Object) {
    let namespaced = object.kind().namespaced();
    let meta = object.meta_mut();
    meta.managed_fields = None;
    meta.self_link = None;
    if namespaced {
        meta.namespace.get_or_insert_with(|| "default".into());
    } else {
        meta.namespace = None;
    }
    // kubectl's bookkeeping, not the object's.
    if let Some(a) = meta.annotations.as_mut() {
        a.remove("kubectl.kubernetes.io/last-applied-configuration");
        if a.is_empty() {
            meta.annotations = None;
        }
    }
}

fn clear_status(object: &mut Object) {
    match object {
        Object::PersistentVolume(o) => o.status = None,
        Object::PersistentVolumeClaim(o) => o.status = None,
        Object::Pod(o) => o.status = None,
        Object::VolumeSnapshot(o) => o.status = None,
        Object::VolumeSnapshotContent(o) => o.status = None,
        Object::VolumeAttachment(o) => o.status = None,
        _ => {}
    }
}

/// An object name: a DNS-1123 subdomain.
pub fn validate_name(name: &str) -> Result<(), String> {
    volfs_api::VolumeName::parse(name).map(|_| ()).map_err(|e| {
        let why = e.split_once(": ").map_or(e.as_str(), |(_, w)| w).to_string();
        format!("Invalid value: {name:?}: {why}")
    })
}

fn validate_label_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "Invalid value: {name:?}: a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character"
        ))
    }
}

type FieldError = (String, String);

fn required(field: &str) -> FieldError {
    (field.into(), "Required value".into())
}

fn unsupported(field: &str, value: &str, allowed: &[&str]) -> FieldError {
    let allowed = allowed.iter().map(|a| format!("{a:?}")).collect::<Vec<_>>().join(", ");
    (field.into(), format!("Unsupported value: {value:?}: supported values: {allowed}"))
}

fn quantity(
    field: &str,
    value: Option<&k8s_openapi::apimachinery::pkg::api::resource::Quantity>,
) -> Result<Quantity, FieldError> {
    let value = value.ok_or_else(|| required(field))?;
    let q = Quantity::parse(&value.0).map_err(|e| (field.to_string(), format!("Invalid value: {:?}: {e}", value.0)))?;
    if q.is_negative() || q.is_zero() {
        return Err((field.into(), format!("Invalid value: {:?}: must be greater than zero", value.0)));
    }
    Ok(q)
}

fn access_modes(field: &str, modes: Option<&Vec<String>>) -> Result<(), FieldError> {
    let modes = modes.filter(|m| !m.is_empty()).ok_or_else(|| required(field))?;
    for (i, m) in modes.iter().enumerate() {
        if !ACCESS_MODES.contains(&m.as_str()) {
            return Err(unsupported(&format!("{field}[{i}]"), m, &ACCESS_MODES));
        }
    }
    if modes.iter().any(|m| m == "ReadWriteOncePod") && modes.len() > 1 {
        return Err((field.into(), "Forbidden: may not use ReadWriteOncePod with other access modes".into()));
    }
    Ok(())
}

fn volume_mode(field: &str, mode: Option<&String>) -> Result<(), FieldError> {
    match mode.map(String::as_str) {
        None | Some("Filesystem") => Ok(()),
        Some("Block") => Err((field.into(), "Unsupported value: \"Block\": volfs serves filesystems only".into())),
        Some(other) => Err(unsupported(field, other, &["Block", "Filesystem"])),
    }
}

fn validate(object: &mut Object) -> Result<(), FieldError> {
    match object {
        Object::StorageClass(c) => {
            if c.provisioner.is_empty() {
                return Err(required("provisioner"));
            }
            let policy = c.reclaim_policy.get_or_insert_with(|| "Delete".into());
            if !["Delete", "Retain"].contains(&policy.as_str()) {
                return Err(unsupported("reclaimPolicy", policy, &["Delete", "Retain"]));
            }
            let mode = c.volume_binding_mode.get_or_insert_with(|| "Immediate".into());
            if !["Immediate", "WaitForFirstConsumer"].contains(&mode.as_str()) {
                return Err(unsupported("volumeBindingMode", mode, &["Immediate", "WaitForFirstConsumer"]));
            }
            Ok(())
        }
        Object::PersistentVolume(v) => validate_volume(v),
        Object::PersistentVolumeClaim(c) => validate_claim(c),
        Object::Pod(p) => validate_pod(p),
        Object::Secret(s) => {
            // The API server folds stringData into data.
            if let Some(strings) = s.string_data.take() {
                let data = s.data.get_or_insert_with(Default::default);
                for (k, v) in strings {
                    data.insert(k, ByteString(v.into_bytes()));
                }
            }
            for key in s.data.iter().flat_map(|d| d.keys()) {
                config_key("data", key)?;
            }
            s.type_.get_or_insert_with(|| "Opaque".into());
            Ok(())
        }
        Object::ConfigMap(c) => {
            let keys = c.data.iter().flat_map(|d| d.keys()).chain(c.binary_data.iter().flat_map(|d| d.keys()));
            let mut seen = BTreeSet::new();
            for key in keys {
                config_key("data", key)?;
                if !seen.insert(key) {
                    return Err((
                        "data".into(),
                        format!("Invalid value: {key:?}: duplicate of key present in binaryData"),
                    ));
                }
            }
            Ok(())
        }
        Object::VolumeSnapshotClass(c) => {
            if !["Delete", "Retain"].contains(&c.deletion_policy.as_str()) {
                return Err(unsupported("deletionPolicy", &c.deletion_policy, &["Delete", "Retain"]));
            }
            Ok(())
        }
        Object::VolumeSnapshot(s) => {
            let source = &s.spec.source;
            match (&source.persistent_volume_claim_name, &source.volume_snapshot_content_name) {
                (Some(_), None) | (None, Some(_)) => {}
                _ => return Err((
                    "spec.source".into(),
                    "Invalid value: exactly one of persistentVolumeClaimName and volumeSnapshotContentName must be set"
                        .into(),
                )),
            }
            if s.spec.volume_snapshot_class_name.as_deref() == Some("") {
                return Err(("spec.volumeSnapshotClassName".into(), "Invalid value: \"\": must not be empty".into()));
            }
            Ok(())
        }
        Object::VolumeSnapshotContent(c) => {
            if !["Delete", "Retain"].contains(&c.spec.deletion_policy.as_str()) {
                return Err(unsupported("spec.deletionPolicy", &c.spec.deletion_policy, &["Delete", "Retain"]));
            }
            match (&c.spec.source.volume_handle, &c.spec.source.snapshot_handle) {
                (Some(_), None) | (None, Some(_)) => Ok(()),
                _ => Err((
                    "spec.source".into(),
                    "Invalid value: exactly one of volumeHandle and snapshotHandle must be set".into(),
                )),
            }
        }
        Object::VolumeAttachment(_) => {
            Err(("kind".into(), "Forbidden: VolumeAttachments are made by mountd when a pod needs a volume".into()))
        }
    }
}

fn config_key(field: &str, key: &str) -> Result<(), FieldError> {
    let ok = !key.is_empty()
        && key.len() <= 253
        && key.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        && key != "."
        && key != ".."
        && !key.starts_with("..");
    if ok {
        Ok(())
    } else {
        Err((
            field.into(),
            format!(
                "Invalid value: {key:?}: a valid config key must consist of alphanumeric characters, '-', '_' or '.'"
            ),
        ))
    }
}

fn validate_volume(v: &mut PersistentVolume) -> Result<(), FieldError> {
    let spec = v.spec.as_mut().ok_or_else(|| required("spec"))?;
    quantity("spec.capacity[storage]", spec.capacity.as_ref().and_then(|c| c.get("storage")))?;
    access_modes("spec.accessModes", spec.access_modes.as_ref())?;
    volume_mode("spec.volumeMode", spec.volume_mode.as_ref())?;
    let sources = [spec.csi.is_some(), spec.host_path.is_some(), spec.local.is_some()].iter().filter(|s| **s).count();
    if sources == 0 {
        return Err(("spec".into(), "Required value: must specify a volume type (volfs serves csi with driver csi.volfs.io, hostPath and local)".into()));
    }
    if sources > 1 {
        return Err(("spec".into(), "Forbidden: may not specify more than 1 volume type".into()));
    }
    if let Some(csi) = &spec.csi {
        if csi.driver.is_empty() {
            return Err(required("spec.csi.driver"));
        }
        if csi.volume_handle.is_empty() {
            return Err(required("spec.csi.volumeHandle"));
        }
    }
    for (field, path) in [
        ("spec.hostPath.path", spec.host_path.as_ref().map(|h| &h.path)),
        ("spec.local.path", spec.local.as_ref().map(|l| &l.path)),
    ] {
        if let Some(path) = path {
            if !path.starts_with('/') {
                return Err((field.into(), format!("Invalid value: {path:?}: must be an absolute path")));
            }
        }
    }
    let policy = spec.persistent_volume_reclaim_policy.get_or_insert_with(|| "Retain".into());
    if !["Delete", "Retain", "Recycle"].contains(&policy.as_str()) {
        return Err(unsupported("spec.persistentVolumeReclaimPolicy", policy, &["Delete", "Recycle", "Retain"]));
    }
    Ok(())
}

fn validate_claim(c: &mut PersistentVolumeClaim) -> Result<(), FieldError> {
    let spec = c.spec.as_ref().ok_or_else(|| required("spec"))?;
    access_modes("spec.accessModes", spec.access_modes.as_ref())?;
    volume_mode("spec.volumeMode", spec.volume_mode.as_ref())?;
    let requests = spec.resources.as_ref().and_then(|r| r.requests.as_ref());
    quantity("spec.resources.requests[storage]", requests.and_then(|r| r.get("storage")))?;
    if let Some(source) = &spec.data_source {
        let snapshot =
            source.kind == "VolumeSnapshot" && source.api_group.as_deref() == Some("snapshot.storage.k8s.io");
        let clone = source.kind == "PersistentVolumeClaim" && source.api_group.as_deref().unwrap_or("").is_empty();
        if !snapshot && !clone {
            return Err((
                "spec.dataSource".into(),
                format!("Invalid value: {:?}: volfs restores from a VolumeSnapshot (apiGroup snapshot.storage.k8s.io) or clones a PersistentVolumeClaim", source.kind),
            ));
        }
        if source.name.is_empty() {
            return Err(required("spec.dataSource.name"));
        }
    }
    Ok(())
}

const VOLUME_TYPES: &str = "persistentVolumeClaim, emptyDir, hostPath, configMap, secret, downwardAPI, projected, csi";

fn volume_kind(v: &Volume) -> Vec<&'static str> {
    let mut kinds = Vec::new();
    let known = [
        (v.persistent_volume_claim.is_some(), "persistentVolumeClaim"),
        (v.empty_dir.is_some(), "emptyDir"),
        (v.host_path.is_some(), "hostPath"),
        (v.config_map.is_some(), "configMap"),
        (v.secret.is_some(), "secret"),
        (v.downward_api.is_some(), "downwardAPI"),
        (v.projected.is_some(), "projected"),
        (v.csi.is_some(), "csi"),
    ];
    kinds.extend(known.iter().filter(|(set, _)| *set).map(|(_, k)| *k));
    kinds
}

fn validate_pod(p: &Pod) -> Result<(), FieldError> {
    let spec = p.spec.as_ref().ok_or_else(|| required("spec"))?;
    let mut volumes = BTreeSet::new();
    for (i, v) in spec.volumes.iter().flatten().enumerate() {
        let field = format!("spec.volumes[{i}]");
        validate_label_name(&v.name).map_err(|why| (format!("{field}.name"), why))?;
        if !volumes.insert(v.name.as_str()) {
            return Err((format!("{field}.name"), format!("Duplicate value: {:?}", v.name)));
        }
        let kinds = volume_kind(v);
        if kinds.len() > 1 {
            return Err((field, "Forbidden: may not specify more than 1 volume type".into()));
        }
        if kinds.is_empty() {
            return Err((field, format!("Required value: must specify a volume type volfs serves ({VOLUME_TYPES})")));
        }
        if let Some(claim) = &v.persistent_volume_claim {
            if claim.claim_name.is_empty() {
                return Err(required(&format!("{field}.persistentVolumeClaim.claimName")));
            }
        }
        if let Some(size) = v.empty_dir.as_ref().and_then(|e| e.size_limit.as_ref()) {
            quantity(&format!("{field}.emptyDir.sizeLimit"), Some(size))?;
        }
        if let Some(medium) = v.empty_dir.as_ref().and_then(|e| e.medium.as_deref()) {
            if !["", "Memory"].contains(&medium) {
                return Err(unsupported(&format!("{field}.emptyDir.medium"), medium, &["", "Memory"]));
            }
        }
        if let Some(h) = &v.host_path {
            if !h.path.starts_with('/') {
                return Err((
                    format!("{field}.hostPath.path"),
                    format!("Invalid value: {:?}: must be an absolute path", h.path),
                ));
            }
            const TYPES: [&str; 8] =
                ["", "DirectoryOrCreate", "Directory", "FileOrCreate", "File", "Socket", "CharDevice", "BlockDevice"];
            let t = h.type_.as_deref().unwrap_or("");
            if !TYPES.contains(&t) {
                return Err(unsupported(&format!("{field}.hostPath.type"), t, &TYPES));
            }
        }
    }
    let containers = spec
        .containers
        .iter()
        .map(|c| ("containers", c))
        .chain(spec.init_containers.iter().flatten().map(|c| ("initContainers", c)));
    let mut names = BTreeSet::new();
    if spec.containers.is_empty() {
        return Err(required("spec.containers"));
    }
    for (i, (list, c)) in containers.enumerate() {
        let field = format!("spec.{list}[{i}]");
        validate_label_name(&c.name).map_err(|why| (format!("{field}.name"), why))?;
        if !names.insert(c.name.as_str()) {
            return Err((format!("{field}.name"), format!("Duplicate value: {:?}", c.name)));
        }
        let mut paths = BTreeSet::new();
        for (j, m) in c.volume_mounts.iter().flatten().enumerate() {
            let field = format!("{field}.volumeMounts[{j}]");
            if !volumes.contains(m.name.as_str()) {
                return Err((format!("{field}.name"), format!("Not found: {:?}", m.name)));
            }
            if !m.mount_path.starts_with('/') {
                return Err((
                    format!("{field}.mountPath"),
                    format!("Invalid value: {:?}: must be an absolute path", m.mount_path),
                ));
            }
            if !paths.insert(m.mount_path.as_str()) {
                return Err((
                    format!("{field}.mountPath"),
                    format!("Invalid value: {:?}: must be unique", m.mount_path),
                ));
            }
            if m.sub_path.is_some() && m.sub_path_expr.is_some() {
                return Err((
                    format!("{field}.subPathExpr"),
                    "Invalid value: subPathExpr and subPath are mutually exclusive".into(),
                ));
            }
            if let Some(sub) = m.sub_path.as_deref().filter(|s| !s.is_empty()) {
                descending_path(&format!("{field}.subPath"), sub)?;
            }
            if let Some(expr) = m.sub_path_expr.as_deref().filter(|s| !s.is_empty()) {
                if expr.starts_with('/') {
                    return Err((
                        format!("{field}.subPathExpr"),
                        format!("Invalid value: {expr:?}: must be a relative path"),
                    ));
                }
            }
        }
    }
    Ok(())
}

/// `validateLocalDescendingPath`: relative, no `..` element.
pub fn descending_path(field: &str, path: &str) -> Result<(), FieldError> {
    if path.starts_with('/') {
        return Err((field.into(), format!("Invalid value: {path:?}: must be a relative path")));
    }
    if path.split('/').any(|c| c == "..") {
        return Err((field.into(), format!("Invalid value: {path:?}: must not contain '..'")));
    }
    Ok(())
}

/// Keeps, in a re-applied object, what the stored one has that only controllers set, and
/// refuses changes the API server refuses.
fn keep_owned(object: &mut Object, stored: &Object) -> Result<(), FieldError> {
    let old = stored.meta();
    let meta = object.meta_mut();
    meta.uid = old.uid.clone();
    meta.creation_timestamp = old.creation_timestamp.clone();
    meta.finalizers = old.finalizers.clone();
    meta.generation = old.generation;
    for (k, v) in old.annotations.iter().flatten() {
        if CONTROLLER_ANNOTATIONS.iter().any(|p| k.starts_with(p)) && annotation(meta, k).is_none() {
            set_annotation(meta, k, v);
        }
    }
    match (object, stored) {
        (Object::StorageClass(new), Object::StorageClass(old)) => {
            for (field, same) in [
                ("parameters", new.parameters == old.parameters),
                ("provisioner", new.provisioner == old.provisioner),
                ("reclaimPolicy", new.reclaim_policy == old.reclaim_policy),
                ("volumeBindingMode", new.volume_binding_mode == old.volume_binding_mode),
            ] {
                if !same {
                    return Err((field.into(), format!("Forbidden: updates to {field} are forbidden.")));
                }
            }
        }
        (Object::PersistentVolume(new), Object::PersistentVolume(old)) => {
            new.status = old.status.clone();
            let (spec, old_spec) = (new.spec.get_or_insert_default(), old.spec.clone().unwrap_or_default());
            // A bound volume keeps its claim when the manifest does not name one; a released
            // one applied without claimRef is free again (the documented way to reuse it).
            if spec.claim_ref.is_none() && old.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound") {
                spec.claim_ref = old_spec.claim_ref.clone();
            }
            if spec.csi != old_spec.csi || spec.host_path != old_spec.host_path || spec.local != old_spec.local {
                return Err((
                    "spec.persistentvolumesource".into(),
                    "Forbidden: spec.persistentvolumesource is immutable after creation".into(),
                ));
            }
        }
        (Object::PersistentVolumeClaim(new), Object::PersistentVolumeClaim(old)) => {
            new.status = old.status.clone();
            let old_spec = old.spec.clone().unwrap_or_default();
            let spec = new.spec.get_or_insert_default();
            if spec.volume_name.is_none() {
                spec.volume_name = old_spec.volume_name.clone();
            }
            if spec.storage_class_name.is_none() {
                spec.storage_class_name = old_spec.storage_class_name.clone();
            }
            let mut same = spec.clone();
            same.resources = old_spec.resources.clone();
            same.volume_attributes_class_name = old_spec.volume_attributes_class_name.clone();
            if same != old_spec {
                return Err((
                    "spec".into(),
                    "Forbidden: spec is immutable after creation except resources.requests and volumeAttributesClassName for bound claims".into(),
                ));
            }
        }
        (Object::Pod(new), Object::Pod(old)) => {
            new.status = old.status.clone();
            let mut spec = new.spec.clone().unwrap_or_default();
            let old_spec = old.spec.clone().unwrap_or_default();
            if spec.node_name.is_none() {
                spec.node_name = old_spec.node_name.clone();
            }
            if spec != old_spec {
                return Err(("spec".into(), "Forbidden: pod updates may not change fields other than `spec.containers[*].image`, `spec.initContainers[*].image`, `spec.activeDeadlineSeconds`, `spec.tolerations` (only additions to existing tolerations), `spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)".into()));
            }
            new.spec = Some(spec);
        }
        (Object::VolumeSnapshot(new), Object::VolumeSnapshot(old)) => {
            new.status = old.status.clone();
            if new.spec.source != old.spec.source {
                return Err(("spec.source".into(), "Invalid value: spec.source is immutable".into()));
            }
        }
        (Object::VolumeSnapshotContent(new), Object::VolumeSnapshotContent(old)) => {
            new.status = old.status.clone();
        }
        _ => {}
    }
    Ok(())
}
