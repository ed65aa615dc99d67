//! The Kubernetes objects standalone mode keeps, read from the YAML (or JSON) a Kubernetes user
//! writes: `apiVersion`/`kind` dispatch to the maintained API types (`k8s-openapi`; the snapshot
//! types, which are CRDs, in `snapshot`), and any field the type does not know is an error that
//! names it, as `kubectl apply --validate=strict` reports it.

use std::fmt;

use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolume, PersistentVolumeClaim, Pod, Secret};
use k8s_openapi::api::storage::v1::{StorageClass, VolumeAttachment};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::{Deserialize, Serialize};

use super::snapshot::{VolumeSnapshot, VolumeSnapshotClass, VolumeSnapshotContent};

/// A kind of object, with its API group and how `get` may name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Kind {
    StorageClass,
    PersistentVolume,
    PersistentVolumeClaim,
    VolumeSnapshotClass,
    VolumeSnapshot,
    VolumeSnapshotContent,
    VolumeAttachment,
    ConfigMap,
    Secret,
    Pod,
}

impl Kind {
    pub const ALL: [Kind; 10] = [
        Kind::StorageClass,
        Kind::PersistentVolume,
        Kind::PersistentVolumeClaim,
        Kind::VolumeSnapshotClass,
        Kind::VolumeSnapshot,
        Kind::VolumeSnapshotContent,
        Kind::VolumeAttachment,
        Kind::ConfigMap,
        Kind::Secret,
        Kind::Pod,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kind::StorageClass => "StorageClass",
            Kind::PersistentVolume => "PersistentVolume",
            Kind::PersistentVolumeClaim => "PersistentVolumeClaim",
            Kind::VolumeSnapshotClass => "VolumeSnapshotClass",
            Kind::VolumeSnapshot => "VolumeSnapshot",
            Kind::VolumeSnapshotContent => "VolumeSnapshotContent",
            Kind::VolumeAttachment => "VolumeAttachment",
            Kind::ConfigMap => "ConfigMap",
            Kind::Secret => "Secret",
            Kind::Pod => "Pod",
        }
    }

    pub fn api_version(self) -> &'static str {
        match self {
            Kind::StorageClass | Kind::VolumeAttachment => "storage.k8s.io/v1",
            Kind::VolumeSnapshotClass | Kind::VolumeSnapshot | Kind::VolumeSnapshotContent => {
                "snapshot.storage.k8s.io/v1"
            }
            Kind::PersistentVolume | Kind::PersistentVolumeClaim | Kind::ConfigMap | Kind::Secret | Kind::Pod => "v1",
        }
    }

    pub fn namespaced(self) -> bool {
        matches!(self, Kind::PersistentVolumeClaim | Kind::VolumeSnapshot | Kind::ConfigMap | Kind::Secret | Kind::Pod)
    }

    /// The lower-case plural kubectl prints in `kind/name` and `"name" deleted` lines.
    pub fn resource(self) -> &'static str {
        match self {
            Kind::StorageClass => "storageclass.storage.k8s.io",
            Kind::PersistentVolume => "persistentvolume",
            Kind::PersistentVolumeClaim => "persistentvolumeclaim",
            Kind::VolumeSnapshotClass => "volumesnapshotclass.snapshot.storage.k8s.io",
            Kind::VolumeSnapshot => "volumesnapshot.snapshot.storage.k8s.io",
            Kind::VolumeSnapshotContent => "volumesnapshotcontent.snapshot.storage.k8s.io",
            Kind::VolumeAttachment => "volumeattachment.storage.k8s.io",
            Kind::ConfigMap => "configmap",
            Kind::Secret => "secret",
            Kind::Pod => "pod",
        }
    }

    /// Every name kubectl accepts for the kind: singular, plural and short names.
    fn aliases(self) -> &'static [&'static str] {
        match self {
            Kind::StorageClass => &["storageclass", "storageclasses", "sc"],
            Kind::PersistentVolume => &["persistentvolume", "persistentvolumes", "pv"],
            Kind::PersistentVolumeClaim => &["persistentvolumeclaim", "persistentvolumeclaims", "pvc"],
            Kind::VolumeSnapshotClass => &["volumesnapshotclass", "volumesnapshotclasses", "vsclass", "vsclasses"],
            Kind::VolumeSnapshot => &["volumesnapshot", "volumesnapshots", "vs"],
            Kind::VolumeSnapshotContent => &["volumesnapshotcontent", "volumesnapshotcontents", "vsc", "vscs"],
            Kind::VolumeAttachment => &["volumeattachment", "volumeattachments"],
            Kind::ConfigMap => &["configmap", "configmaps", "cm"],
            Kind::Secret => &["secret", "secrets"],
            Kind::Pod => &["pod", "pods", "po"],
        }
    }

    /// A kind as named on the command line (`pvc`, `persistentvolumeclaims`, `PersistentVolumeClaim`).
    pub fn from_cli(text: &str) -> Result<Kind, String> {
        let lower = text.to_ascii_lowercase();
        let bare = lower.split_once('.').map_or(lower.as_str(), |(k, _)| k);
        Kind::ALL
            .into_iter()
            .find(|k| k.aliases().contains(&bare))
            .ok_or_else(|| format!("the server doesn't have a resource type {text:?} (volfs keeps: {})", Kind::list()))
    }

    fn from_manifest(api_version: &str, kind: &str) -> Result<Kind, String> {
        let found = Kind::ALL.into_iter().find(|k| k.name() == kind).ok_or_else(|| {
            format!("no matches for kind {kind:?} in version {api_version:?} (volfs keeps: {})", Kind::list())
        })?;
        if found.api_version() != api_version {
            return Err(format!(
                "no matches for kind {kind:?} in version {api_version:?} (it is served as {:?})",
                found.api_version()
            ));
        }
        Ok(found)
    }

    fn list() -> String {
        Kind::ALL.map(Kind::name).join(", ")
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Where an object is filed: its kind, namespace (empty for cluster-scoped kinds) and name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ObjectKey {
    pub kind: Kind,
    pub namespace: String,
    pub name: String,
}

impl ObjectKey {
    /// A namespaced kind without a namespace is in `default`, as the API server puts it.
    pub fn new(kind: Kind, namespace: &str, name: &str) -> ObjectKey {
        let namespace = match (kind.namespaced(), namespace) {
            (false, _) => "",
            (true, "") => "default",
            (true, ns) => ns,
        };
        ObjectKey { kind, namespace: namespace.to_string(), name: name.to_string() }
    }

    /// The store's key: `Kind/namespace/name`.
    pub fn encode(&self) -> String {
        format!("{}/{}/{}", self.kind.name(), self.namespace, self.name)
    }
}

impl fmt::Display for ObjectKey {
    /// As kubectl names objects in messages: `persistentvolumeclaim "ns/name"` style.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.namespace.is_empty() {
            write!(f, "{} {:?}", self.kind, self.name)
        } else {
            write!(f, "{} \"{}/{}\"", self.kind, self.namespace, self.name)
        }
    }
}

/// One object of a kind volfs keeps.
#[derive(Clone, Debug, PartialEq)]
pub enum Object {
    StorageClass(StorageClass),
    PersistentVolume(PersistentVolume),
    PersistentVolumeClaim(PersistentVolumeClaim),
    VolumeSnapshotClass(VolumeSnapshotClass),
    VolumeSnapshot(VolumeSnapshot),
    VolumeSnapshotContent(VolumeSnapshotContent),
    VolumeAttachment(VolumeAttachment),
    ConfigMap(ConfigMap),
    Secret(Secret),
    Pod(Pod),
}

/// Applies `$body` to the typed object inside any variant.
macro_rules! each {
    ($object:expr, $o:ident => $body:expr) => {
        match $object {
            Object::StorageClass($o) => $body,
            Object::PersistentVolume($o) => $body,
            Object::PersistentVolumeClaim($o) => $body,
            Object::VolumeSnapshotClass($o) => $body,
            Object::VolumeSnapshot($o) => $body,
            Object::VolumeSnapshotContent($o) => $body,
            Object::VolumeAttachment($o) => $body,
            Object::ConfigMap($o) => $body,
            Object::Secret($o) => $body,
            Object::Pod($o) => $body,
        }
    };
}

impl Object {
    pub fn kind(&self) -> Kind {
        match self {
            Object::StorageClass(_) => Kind::StorageClass,
            Object::PersistentVolume(_) => Kind::PersistentVolume,
            Object::PersistentVolumeClaim(_) => Kind::PersistentVolumeClaim,
            Object::VolumeSnapshotClass(_) => Kind::VolumeSnapshotClass,
            Object::VolumeSnapshot(_) => Kind::VolumeSnapshot,
            Object::VolumeSnapshotContent(_) => Kind::VolumeSnapshotContent,
            Object::VolumeAttachment(_) => Kind::VolumeAttachment,
            Object::ConfigMap(_) => Kind::ConfigMap,
            Object::Secret(_) => Kind::Secret,
            Object::Pod(_) => Kind::Pod,
        }
    }

    pub fn meta(&self) -> &ObjectMeta {
        each!(self, o => &o.metadata)
    }

    pub fn meta_mut(&mut self) -> &mut ObjectMeta {
        each!(self, o => &mut o.metadata)
    }

    pub fn name(&self) -> &str {
        self.meta().name.as_deref().unwrap_or("")
    }

    pub fn key(&self) -> ObjectKey {
        ObjectKey::new(self.kind(), self.meta().namespace.as_deref().unwrap_or(""), self.name())
    }

    /// The object as the API serves it, `apiVersion` and `kind` first.
    pub fn to_json(&self) -> serde_json::Value {
        let body = each!(self, o => serde_json::to_value(o));
        let mut out = serde_json::Map::new();
        out.insert("apiVersion".into(), self.kind().api_version().into());
        out.insert("kind".into(), self.kind().name().into());
        if let Ok(serde_json::Value::Object(fields)) = body {
            out.extend(fields.into_iter().filter(|(k, _)| k != "apiVersion" && k != "kind"));
        }
        serde_json::Value::Object(out)
    }

    /// A typed object from its JSON form; every field it does not know is named in the error.
    pub fn from_json(value: serde_json::Value) -> Result<Object, String> {
        let field = |name: &str| value.get(name).and_then(|v| v.as_str()).unwrap_or("").to_string();
        let (api_version, kind_name) = (field("apiVersion"), field("kind"));
        if kind_name.is_empty() {
            return Err("Object 'Kind' is missing".into());
        }
        if api_version.is_empty() {
            return Err(format!("{kind_name}: apiVersion is missing"));
        }
        let kind = Kind::from_manifest(&api_version, &kind_name)?;
        let name = value.pointer("/metadata/name").and_then(|v| v.as_str()).unwrap_or("").to_string();
        let what = format!("{kind} {name:?}");
        // Checked above; the snapshot CRD types do not carry the two fields.
        let mut value = value;
        if let Some(fields) = value.as_object_mut() {
            fields.remove("apiVersion");
            fields.remove("kind");
        }
        let mut unknown = Vec::new();
        let parsed = match kind {
            Kind::StorageClass => typed(value, &mut unknown).map(Object::StorageClass),
            Kind::PersistentVolume => typed(value, &mut unknown).map(Object::PersistentVolume),
            Kind::PersistentVolumeClaim => typed(value, &mut unknown).map(Object::PersistentVolumeClaim),
            Kind::VolumeSnapshotClass => typed(value, &mut unknown).map(Object::VolumeSnapshotClass),
            Kind::VolumeSnapshot => typed(value, &mut unknown).map(Object::VolumeSnapshot),
            Kind::VolumeSnapshotContent => typed(value, &mut unknown).map(Object::VolumeSnapshotContent),
            Kind::VolumeAttachment => typed(value, &mut unknown).map(Object::VolumeAttachment),
            Kind::ConfigMap => typed(value, &mut unknown).map(Object::ConfigMap),
            Kind::Secret => typed(value, &mut unknown).map(Object::Secret),
            Kind::Pod => typed(value, &mut unknown).map(Object::Pod),
        }
        .map_err(|e| format!("{what} is invalid: {e}"))?;
        if !unknown.is_empty() {
            let fields = unknown.join(", ");
            return Err(format!("{what} is invalid: unknown field {fields}"));
        }
        if parsed.name().is_empty() {
            return Err(format!("{kind} is invalid: metadata.name: Required value: name is required"));
        }
        Ok(parsed)
    }
}

/// Deserializes, collecting the paths of the fields the type ignored (`spec.storageClasName`).
fn typed<T: serde::de::DeserializeOwned>(value: serde_json::Value, unknown: &mut Vec<String>) -> Result<T, String> {
    let mut ignored = |path: serde_ignored::Path<'_>| {
        let text = path.to_string();
        let cleaned: Vec<&str> = text.split('.').filter(|part| *part != "?").collect();
        unknown.push(cleaned.join("."));
    };
    serde_ignored::deserialize(value, &mut ignored).map_err(|e| e.to_string())
}

/// Every object in a manifest: YAML or JSON, several documents, `kind: List` of items.
/// `source` names the input in errors (a file name, or `-`).
pub fn parse_manifests(text: &str, source: &str) -> Result<Vec<Object>, String> {
    let mut objects = Vec::new();
    for (index, document) in serde_norway::Deserializer::from_str(text).enumerate() {
        let at = format!("{source} (document {})", index + 1);
        let yaml = serde_norway::Value::deserialize(document).map_err(|e| format!("{at}: not YAML: {e}"))?;
        if yaml.is_null() {
            continue;
        }
        let json = serde_json::to_value(&yaml).map_err(|e| format!("{at}: {e}"))?;
        collect(json, &at, &mut objects)?;
    }
    Ok(objects)
}

/// File modes as Kubernetes reads manifests (YAML 1.1): an unquoted `0644` is octal. The YAML
/// parser hands such scalars over as text; mode fields are integers, so the text is converted.
fn octal_modes(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, v) in map.iter_mut() {
                let octal = v
                    .as_str()
                    .filter(|t| t.len() > 1 && t.starts_with('0') && t.bytes().all(|b| (b'0'..=b'7').contains(&b)));
                if let (true, Some(text)) = (key == "defaultMode" || key == "mode", octal) {
                    if let Ok(n) = i64::from_str_radix(text, 8) {
                        *v = n.into();
                    }
                } else {
                    octal_modes(v);
                }
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(octal_modes),
        _ => {}
    }
}

fn collect(mut json: serde_json::Value, at: &str, objects: &mut Vec<Object>) -> Result<(), String> {
    octal_modes(&mut json);
    if !json.is_object() {
        return Err(format!("{at}: a manifest is a mapping with apiVersion, kind and metadata"));
    }
    if json.get("kind").and_then(|k| k.as_str()).is_some_and(|k| k == "List" || k.ends_with("List")) {
        let items = json.get("items").and_then(|i| i.as_array()).cloned().unwrap_or_default();
        for item in items {
            collect(item, at, objects)?;
        }
        return Ok(());
    }
    objects.push(Object::from_json(json).map_err(|e| format!("{at}: {e}"))?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifests_from_the_kubernetes_docs_parse() {
        let text = r#"
apiVersion: v1
kind: PersistentVolume
metadata:
  name: task-pv-volume
  labels:
    type: local
spec:
  storageClassName: manual
  capacity:
    storage: 10Gi
  accessModes:
    - ReadWriteOnce
  csi:
    driver: csi.volfs.io
    volumeHandle: data
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata:
  name: task-pv-claim
spec:
  storageClassName: manual
  accessModes: [ReadWriteOnce]
  resources:
    requests:
      storage: 3Gi
---
"#;
        let objects = parse_manifests(text, "pv.yaml").unwrap();
        assert_eq!(objects.len(), 2);
        assert_eq!(objects[0].key(), ObjectKey::new(Kind::PersistentVolume, "", "task-pv-volume"));
        assert_eq!(objects[1].kind(), Kind::PersistentVolumeClaim);
        let round = Object::from_json(objects[1].to_json()).unwrap();
        assert_eq!(round, objects[1]);
    }

    #[test]
    fn unknown_fields_kinds_and_versions_are_named() {
        let cases = [
            (
                "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {name: a}\nspec: {storageClasName: x}\n",
                "unknown field spec.storageClasName",
            ),
            ("apiVersion: v1\nkind: Pod\nmetadata: {name: a, lables: {}}\n", "unknown field metadata.lables"),
            ("apiVersion: v1\nkind: Deployment\nmetadata: {name: a}\n", "no matches for kind \"Deployment\""),
            ("apiVersion: v1\nkind: StorageClass\nmetadata: {name: a}\n", "served as \"storage.k8s.io/v1\""),
            ("kind: Pod\nmetadata: {name: a}\n", "apiVersion is missing"),
            ("apiVersion: v1\nkind: Pod\nmetadata: {}\n", "metadata.name: Required value"),
            ("- a\n- b\n", "a manifest is a mapping"),
            ("apiVersion: v1\nkind: Pod\nmetadata: {name: a}\nspec: {containers: 3}\n", "Pod \"a\" is invalid"),
        ];
        for (text, expected) in cases {
            let err = parse_manifests(text, "f.yaml").unwrap_err();
            assert!(err.contains(expected), "{text}: {err}");
            assert!(err.starts_with("f.yaml (document 1)"), "{err}");
        }
    }

    #[test]
    fn unquoted_octal_modes_are_octal_as_in_kubernetes() {
        let text = "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers: [{name: c}]\n  volumes: [{name: s, secret: {secretName: s, defaultMode: 0400, items: [{key: k, path: k, mode: 0644}]}}, {name: c, configMap: {name: c, defaultMode: 420}}]\n";
        let Object::Pod(pod) = parse_manifests(text, "-").unwrap().remove(0) else { panic!() };
        let volumes = pod.spec.unwrap().volumes.unwrap();
        let secret = volumes[0].secret.as_ref().unwrap();
        assert_eq!(secret.default_mode, Some(0o400));
        assert_eq!(secret.items.as_ref().unwrap()[0].mode, Some(0o644));
        assert_eq!(volumes[1].config_map.as_ref().unwrap().default_mode, Some(420));
    }

    #[test]
    fn lists_from_kubectl_get_parse() {
        let text = r#"{"apiVersion":"v1","kind":"List","items":[
            {"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"a","namespace":"default"},"data":{"k":"v"}},
            {"apiVersion":"storage.k8s.io/v1","kind":"StorageClass","metadata":{"name":"fast"},"provisioner":"csi.volfs.io"}
        ]}"#;
        let objects = parse_manifests(text, "-").unwrap();
        assert_eq!(objects.iter().map(Object::kind).collect::<Vec<_>>(), [Kind::ConfigMap, Kind::StorageClass]);
    }

    #[test]
    fn kinds_by_any_kubectl_name() {
        for (text, kind) in [
            ("pvc", Kind::PersistentVolumeClaim),
            ("PersistentVolumes", Kind::PersistentVolume),
            ("sc", Kind::StorageClass),
            ("volumesnapshots.snapshot.storage.k8s.io", Kind::VolumeSnapshot),
            ("po", Kind::Pod),
        ] {
            assert_eq!(Kind::from_cli(text), Ok(kind));
        }
        assert!(Kind::from_cli("deployments").unwrap_err().contains("doesn't have a resource type"));
    }
}
