//! Output shaped like kubectl's: `get` tables (the same columns, ages, `-o wide`), `-o
//! json|yaml|name` (a single object as it is, several as a `List` that can be applied again),
//! and `describe` with the object's events.

use std::fmt::Write as _;

use serde_json::Value;

use super::object::{Kind, Object};
use super::store::Event;
use super::world::{annotation, ANN_DEFAULT_CLASS};

/// kubectl's short age: `45s`, `3m12s`, `25m`, `5h3m`, `2d4h`, `30d`, `1y20d`.
pub fn age(seconds: i64) -> String {
    let s = seconds.max(0);
    let (m, h, d) = (s / 60, s / 3600, s / 86400);
    if s < 120 {
        format!("{s}s")
    } else if m < 10 {
        if s % 60 == 0 {
            format!("{m}m")
        } else {
            format!("{m}m{}s", s % 60)
        }
    } else if h < 3 {
        format!("{m}m")
    } else if h < 8 {
        if m % 60 == 0 {
            format!("{h}h")
        } else {
            format!("{h}h{}m", m % 60)
        }
    } else if h < 48 {
        format!("{h}h")
    } else if d < 8 {
        if h % 24 == 0 {
            format!("{d}d")
        } else {
            format!("{d}d{}h", h % 24)
        }
    } else if d < 365 * 2 {
        format!("{d}d")
    } else if d < 365 * 8 {
        let y = d / 365;
        if d % 365 == 0 {
            format!("{y}y")
        } else {
            format!("{y}y{}d", d % 365)
        }
    } else {
        format!("{}y", d / 365)
    }
}

fn age_of(object: &Object, now: i64) -> String {
    object.meta().creation_timestamp.as_ref().map_or("<unknown>".into(), |t| age(now - t.0.as_second()))
}

fn modes(list: Option<&Vec<String>>) -> String {
    let short = |m: &String| match m.as_str() {
        "ReadWriteOnce" => "RWO".to_string(),
        "ReadOnlyMany" => "ROX".to_string(),
        "ReadWriteMany" => "RWX".to_string(),
        "ReadWriteOncePod" => "RWOP".to_string(),
        other => other.to_string(),
    };
    list.map(|l| l.iter().map(short).collect::<Vec<_>>().join(",")).unwrap_or_default()
}

fn or_unset(v: Option<&str>) -> String {
    v.filter(|s| !s.is_empty()).unwrap_or("<unset>").to_string()
}

fn storage(
    map: Option<&std::collections::BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>>,
) -> String {
    map.and_then(|m| m.get("storage")).map(|q| q.0.clone()).unwrap_or_default()
}

/// Aligns columns as kubectl's tabwriter does: three spaces between them.
fn table(rows: Vec<Vec<String>>) -> String {
    let widths: Vec<usize> = (0..rows.first().map_or(0, Vec::len))
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in rows {
        let last = row.len() - 1;
        for (i, cell) in row.iter().enumerate() {
            if i == last {
                out.push_str(cell);
            } else {
                let _ = write!(out, "{cell:<w$}   ", w = widths[i]);
            }
        }
        out.push('\n');
    }
    out
}

fn header(kind: Kind, wide: bool, namespaces: bool) -> Vec<String> {
    let mut h: Vec<&str> = match kind {
        Kind::StorageClass => {
            vec!["NAME", "PROVISIONER", "RECLAIMPOLICY", "VOLUMEBINDINGMODE", "ALLOWVOLUMEEXPANSION", "AGE"]
        }
        Kind::PersistentVolume => vec![
            "NAME",
            "CAPACITY",
            "ACCESS MODES",
            "RECLAIM POLICY",
            "STATUS",
            "CLAIM",
            "STORAGECLASS",
            "VOLUMEATTRIBUTESCLASS",
            "REASON",
            "AGE",
        ],
        Kind::PersistentVolumeClaim => {
            vec!["NAME", "STATUS", "VOLUME", "CAPACITY", "ACCESS MODES", "STORAGECLASS", "VOLUMEATTRIBUTESCLASS", "AGE"]
        }
        Kind::VolumeSnapshotClass => vec!["NAME", "DRIVER", "DELETIONPOLICY", "AGE"],
        Kind::VolumeSnapshot => vec![
            "NAME",
            "READYTOUSE",
            "SOURCEPVC",
            "SOURCESNAPSHOTCONTENT",
            "RESTORESIZE",
            "SNAPSHOTCLASS",
            "SNAPSHOTCONTENT",
            "CREATIONTIME",
            "AGE",
        ],
        Kind::VolumeSnapshotContent => vec![
            "NAME",
            "READYTOUSE",
            "RESTORESIZE",
            "DELETIONPOLICY",
            "DRIVER",
            "VOLUMESNAPSHOTCLASS",
            "VOLUMESNAPSHOT",
            "VOLUMESNAPSHOTNAMESPACE",
            "AGE",
        ],
        Kind::VolumeAttachment => vec!["NAME", "ATTACHER", "PV", "NODE", "ATTACHED", "AGE"],
        Kind::ConfigMap => vec!["NAME", "DATA", "AGE"],
        Kind::Secret => vec!["NAME", "TYPE", "DATA", "AGE"],
        Kind::Pod => vec!["NAME", "READY", "STATUS", "RESTARTS", "AGE"],
    };
    if wide {
        match kind {
            Kind::PersistentVolume | Kind::PersistentVolumeClaim => h.push("VOLUMEMODE"),
            Kind::Pod => h.extend(["IP", "NODE", "NOMINATED NODE", "READINESS GATES"]),
            _ => {}
        }
    }
    if namespaces {
        h.insert(0, "NAMESPACE");
    }
    h.into_iter().map(String::from).collect()
}

fn row(object: &Object, wide: bool, namespaces: bool, now: i64) -> Vec<String> {
    let name = object.name().to_string();
    let created = age_of(object, now);
    let mut r = match object {
        Object::StorageClass(c) => {
            let default = annotation(&c.metadata, ANN_DEFAULT_CLASS) == Some("true");
            vec![
                if default { format!("{name} (default)") } else { name },
                c.provisioner.clone(),
                c.reclaim_policy.clone().unwrap_or_else(|| "Delete".into()),
                c.volume_binding_mode.clone().unwrap_or_else(|| "Immediate".into()),
                c.allow_volume_expansion.unwrap_or(false).to_string(),
                created.clone(),
            ]
        }
        Object::PersistentVolume(v) => {
            let spec = v.spec.clone().unwrap_or_default();
            let claim = spec
                .claim_ref
                .as_ref()
                .map(|r| format!("{}/{}", r.namespace.clone().unwrap_or_default(), r.name.clone().unwrap_or_default()))
                .unwrap_or_default();
            let mut r = vec![
                name,
                storage(spec.capacity.as_ref()),
                modes(spec.access_modes.as_ref()),
                spec.persistent_volume_reclaim_policy.clone().unwrap_or_default(),
                phase_with_deletion(object, v.status.as_ref().and_then(|s| s.phase.as_deref())),
                claim,
                spec.storage_class_name.clone().unwrap_or_default(),
                or_unset(spec.volume_attributes_class_name.as_deref()),
                v.status.as_ref().and_then(|s| s.reason.clone()).unwrap_or_default(),
                created.clone(),
            ];
            if wide {
                r.push(spec.volume_mode.clone().unwrap_or_else(|| "Filesystem".into()));
            }
            r
        }
        Object::PersistentVolumeClaim(c) => {
            let spec = c.spec.clone().unwrap_or_default();
            let status = c.status.clone().unwrap_or_default();
            let bound = status.phase.as_deref() == Some("Bound");
            let mut r = vec![
                name,
                phase_with_deletion(object, status.phase.as_deref()),
                spec.volume_name.clone().unwrap_or_default(),
                if bound { storage(status.capacity.as_ref()) } else { String::new() },
                if bound { modes(status.access_modes.as_ref()) } else { String::new() },
                spec.storage_class_name.clone().unwrap_or_default(),
                or_unset(spec.volume_attributes_class_name.as_deref()),
                created.clone(),
            ];
            if wide {
                r.push(spec.volume_mode.clone().unwrap_or_else(|| "Filesystem".into()));
            }
            r
        }
        Object::VolumeSnapshotClass(c) => vec![name, c.driver.clone(), c.deletion_policy.clone(), created.clone()],
        Object::VolumeSnapshot(s) => {
            let status = s.status.clone().unwrap_or_default();
            vec![
                name,
                status.ready_to_use.map(|b| b.to_string()).unwrap_or_default(),
                s.spec.source.persistent_volume_claim_name.clone().unwrap_or_default(),
                s.spec.source.volume_snapshot_content_name.clone().unwrap_or_default(),
                status.restore_size.map(|q| q.0).unwrap_or_default(),
                s.spec.volume_snapshot_class_name.clone().unwrap_or_default(),
                status.bound_volume_snapshot_content_name.clone().unwrap_or_default(),
                status.creation_time.map(|t| age(now - t.0.as_second())).unwrap_or_default(),
                created.clone(),
            ]
        }
        Object::VolumeSnapshotContent(c) => {
            let status = c.status.clone().unwrap_or_default();
            vec![
                name,
                status.ready_to_use.map(|b| b.to_string()).unwrap_or_default(),
                status.restore_size.map(|b| b.to_string()).unwrap_or_default(),
                c.spec.deletion_policy.clone(),
                c.spec.driver.clone(),
                c.spec.volume_snapshot_class_name.clone().unwrap_or_default(),
                c.spec.volume_snapshot_ref.name.clone().unwrap_or_default(),
                c.spec.volume_snapshot_ref.namespace.clone().unwrap_or_default(),
                created.clone(),
            ]
        }
        Object::VolumeAttachment(a) => vec![
            name,
            a.spec.attacher.clone(),
            a.spec.source.persistent_volume_name.clone().unwrap_or_default(),
            a.spec.node_name.clone(),
            a.status.as_ref().is_some_and(|s| s.attached).to_string(),
            created.clone(),
        ],
        Object::ConfigMap(c) => {
            let n = c.data.as_ref().map_or(0, |d| d.len()) + c.binary_data.as_ref().map_or(0, |d| d.len());
            vec![name, n.to_string(), created.clone()]
        }
        Object::Secret(s) => vec![
            name,
            s.type_.clone().unwrap_or_else(|| "Opaque".into()),
            s.data.as_ref().map_or(0, |d| d.len()).to_string(),
            created.clone(),
        ],
        Object::Pod(p) => {
            let containers = p.spec.as_ref().map_or(0, |s| s.containers.len());
            let statuses = p.status.as_ref().and_then(|s| s.container_statuses.clone()).unwrap_or_default();
            let ready = statuses.iter().filter(|s| s.ready).count();
            let restarts: i32 = statuses.iter().map(|s| s.restart_count).sum();
            let phase = p.status.as_ref().and_then(|s| s.phase.clone()).unwrap_or_else(|| "Pending".into());
            let status = if object.meta().deletion_timestamp.is_some() {
                "Terminating".to_string()
            } else if phase == "Pending" && p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some() {
                "ContainerCreating".to_string()
            } else {
                phase
            };
            let mut r = vec![name, format!("{ready}/{containers}"), status, restarts.to_string(), created.clone()];
            if wide {
                r.extend([
                    "<none>".to_string(),
                    p.spec.as_ref().and_then(|s| s.node_name.clone()).unwrap_or_else(|| "<none>".into()),
                    "<none>".into(),
                    "<none>".into(),
                ]);
            }
            r
        }
    };
    if namespaces {
        r.insert(0, object.meta().namespace.clone().unwrap_or_default());
    }
    r
}

fn phase_with_deletion(object: &Object, phase: Option<&str>) -> String {
    if object.meta().deletion_timestamp.is_some() {
        return "Terminating".into();
    }
    phase.unwrap_or("Pending").to_string()
}

/// `get` output: the table, or a message when there is nothing.
pub fn get_table(kind: Kind, objects: &[Object], wide: bool, namespaces: bool, namespace: &str, now: i64) -> String {
    if objects.is_empty() {
        return if kind.namespaced() && !namespaces {
            format!("No resources found in {namespace} namespace.\n")
        } else {
            "No resources found\n".into()
        };
    }
    let mut rows = vec![header(kind, wide, namespaces)];
    rows.extend(objects.iter().map(|o| row(o, wide, namespaces, now)));
    table(rows)
}

/// `-o json|yaml`: one object as it is, several as a List (which apply takes back).
pub fn structured(objects: &[Object], single: bool, yaml: bool) -> Result<String, String> {
    let value = if single && objects.len() == 1 {
        objects[0].to_json()
    } else {
        serde_json::json!({"apiVersion": "v1", "kind": "List", "items": objects.iter().map(Object::to_json).collect::<Vec<Value>>(), "metadata": {"resourceVersion": ""}})
    };
    if yaml {
        serde_norway::to_string(&value).map_err(|e| e.to_string())
    } else {
        serde_json::to_string_pretty(&value).map(|s| s + "\n").map_err(|e| e.to_string())
    }
}

pub fn names(objects: &[Object]) -> String {
    objects.iter().map(|o| format!("{}/{}\n", o.kind().resource(), o.name())).collect()
}

/// `describe`: the object's fields that matter, then its events.
pub fn describe(object: &Object, events: &[Event], now: i64) -> String {
    let mut out = String::new();
    let meta = object.meta();
    let mut field = |k: &str, v: String| {
        let _ = writeln!(out, "{:<14}{}", format!("{k}:"), if v.is_empty() { "<none>".into() } else { v });
    };
    field("Name", object.name().into());
    if object.kind().namespaced() {
        field("Namespace", meta.namespace.clone().unwrap_or_default());
    }
    let pairs = |m: Option<&std::collections::BTreeMap<String, String>>| {
        m.map(|m| m.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("\n              "))
            .unwrap_or_default()
    };
    field("Labels", pairs(meta.labels.as_ref()));
    let annotations: std::collections::BTreeMap<String, String> = meta
        .annotations
        .clone()
        .unwrap_or_default()
        .into_iter()
        .filter(|(k, _)| k != super::pods::ANN_MOUNTS)
        .collect();
    field("Annotations", pairs(Some(&annotations)));
    field("Finalizers", meta.finalizers.as_ref().map(|f| format!("[{}]", f.join(" "))).unwrap_or_default());
    if let Some(t) = &meta.deletion_timestamp {
        field("Terminating", format!("since {}", t.0));
    }
    match object {
        Object::PersistentVolumeClaim(c) => {
            let spec = c.spec.clone().unwrap_or_default();
            let status = c.status.clone().unwrap_or_default();
            field("StorageClass", spec.storage_class_name.unwrap_or_default());
            field("Status", phase_with_deletion(object, status.phase.as_deref()));
            field("Volume", spec.volume_name.unwrap_or_default());
            field("Capacity", storage(status.capacity.as_ref()));
            field("Access Modes", modes(status.access_modes.as_ref()));
            field("VolumeMode", spec.volume_mode.unwrap_or_else(|| "Filesystem".into()));
            if let Some(ds) = spec.data_source {
                field("DataSource", format!("{}/{}", ds.kind, ds.name));
            }
        }
        Object::PersistentVolume(v) => {
            let spec = v.spec.clone().unwrap_or_default();
            field("StorageClass", spec.storage_class_name.clone().unwrap_or_default());
            field("Status", phase_with_deletion(object, v.status.as_ref().and_then(|s| s.phase.as_deref())));
            field(
                "Claim",
                spec.claim_ref
                    .as_ref()
                    .map(|r| {
                        format!("{}/{}", r.namespace.clone().unwrap_or_default(), r.name.clone().unwrap_or_default())
                    })
                    .unwrap_or_default(),
            );
            field("Reclaim Policy", spec.persistent_volume_reclaim_policy.clone().unwrap_or_default());
            field("Access Modes", modes(spec.access_modes.as_ref()));
            field("Capacity", storage(spec.capacity.as_ref()));
            field("Message", v.status.as_ref().and_then(|s| s.message.clone()).unwrap_or_default());
            if let Some(csi) = &spec.csi {
                field("Source", format!("CSI {} volumeHandle {}", csi.driver, csi.volume_handle));
            }
            if let Some(h) = &spec.host_path {
                field("Source", format!("HostPath {}", h.path));
            }
        }
        Object::Pod(p) => {
            field("Node", p.spec.as_ref().and_then(|s| s.node_name.clone()).unwrap_or_default());
            field("Status", p.status.as_ref().and_then(|s| s.phase.clone()).unwrap_or_else(|| "Pending".into()));
            let mounts = super::pods::mounts_of(p).unwrap_or_default();
            let lines: Vec<String> = mounts
                .iter()
                .map(|m| {
                    format!(
                        "{} {} from {} ({}) at {}",
                        m.container,
                        m.mount_path,
                        m.volume,
                        if m.read_only { "ro" } else { "rw" },
                        m.host_path.display()
                    )
                })
                .collect();
            field("Mounts", lines.join("\n              "));
        }
        other => {
            let mut value = other.to_json();
            if let Some(map) = value.as_object_mut() {
                for k in ["apiVersion", "kind", "metadata"] {
                    map.remove(k);
                }
                if other.kind() == Kind::Secret {
                    // Sizes only, as kubectl describe does.
                    if let Some(Value::Object(data)) = map.get_mut("data") {
                        for v in data.values_mut() {
                            *v = Value::String(format!("{} bytes", base64_len(v.as_str().unwrap_or(""))));
                        }
                    }
                }
            }
            let text = serde_norway::to_string(&value).unwrap_or_default();
            for line in text.lines() {
                let _ = writeln!(out, "{line}");
            }
        }
    }
    if events.is_empty() {
        let _ = writeln!(out, "Events:       <none>");
    } else {
        let _ = writeln!(out, "Events:");
        let mut rows = vec![vec!["Type".to_string(), "Reason".into(), "Age".into(), "From".into(), "Message".into()]];
        rows.push(vec!["----".to_string(), "------".into(), "----".into(), "----".into(), "-------".into()]);
        for e in events {
            let age = if e.count > 1 {
                format!("{} (x{} over {})", age(now - e.last_unix), e.count, age(now - e.first_unix))
            } else {
                age(now - e.last_unix)
            };
            rows.push(vec![e.kind.clone(), e.reason.clone(), age, e.source.clone(), e.message.clone()]);
        }
        for line in table(rows).lines() {
            let _ = writeln!(out, "  {line}");
        }
    }
    out
}

fn base64_len(encoded: &str) -> usize {
    let pad = encoded.bytes().rev().take_while(|b| *b == b'=').count();
    encoded.len() / 4 * 3 - pad.min(2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_as_kubectl_prints_them() {
        for (s, text) in [
            (5, "5s"),
            (119, "119s"),
            (192, "3m12s"),
            (600, "10m"),
            (3 * 3600 + 60, "3h1m"),
            (30 * 3600, "30h"),
            (3 * 86400 + 7200, "3d2h"),
            (40 * 86400, "40d"),
            (800 * 86400, "2y70d"),
        ] {
            assert_eq!(age(s), text, "{s}");
        }
    }

    #[test]
    fn claims_print_in_kubectl_columns() {
        let text = "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {name: data, namespace: default, creationTimestamp: '2026-01-01T00:00:00Z'}\nspec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Gi}}, storageClassName: fast, volumeName: pvc-1}\nstatus: {phase: Bound, capacity: {storage: 1Gi}, accessModes: [ReadWriteOnce]}\n";
        let objects = super::super::object::parse_manifests(text, "-").unwrap();
        let now = objects[0].meta().creation_timestamp.as_ref().unwrap().0.as_second() + 90;
        let out = get_table(Kind::PersistentVolumeClaim, &objects, false, false, "default", now);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(
            lines[0],
            "NAME   STATUS   VOLUME   CAPACITY   ACCESS MODES   STORAGECLASS   VOLUMEATTRIBUTESCLASS   AGE"
        );
        assert_eq!(
            lines[1],
            "data   Bound    pvc-1    1Gi        RWO            fast           <unset>                 90s"
        );
        assert_eq!(
            get_table(Kind::Pod, &[], false, false, "default", now),
            "No resources found in default namespace.\n"
        );
        let yaml = structured(&objects, true, true).unwrap();
        assert_eq!(super::super::object::parse_manifests(&yaml, "-").unwrap(), objects);
        let list = structured(&objects, false, false).unwrap();
        assert_eq!(super::super::object::parse_manifests(&list, "-").unwrap(), objects);
    }
}
