//! The kubelet's rules, from documents to a `Projection`:
//! - the API server's validation of the projected source: one type per source, paths relative
//!   without `..` and not starting with `..`, modes 0–0777, explicit item paths unique;
//! - each source's payload: every key of `data`/`binaryData` as a file, or only `items` at
//!   their paths; a missing object or key fails the projection unless the source is optional;
//! - the merge in source order, the later source winning a path; the kubelet's own path checks
//!   and cleaning; a path that is a file for one entry and a directory for another fails;
//! - modes and owners: `defaultMode` 0644, per-item `mode`, token files 0600 when the pod has
//!   fsUser or fsGroup, and the fsGroup ownership pass (group fsGroup; files OR 0440, the
//!   volume being read-only; directories also setgid and 0110).

use std::collections::BTreeMap;

use super::downward::{field_value, resource_value, validate_field_path, validate_resource_ref};
use super::spec::{Doc, Documents, ObjectMeta, ObjectSource, PodDoc, ProjectedSource, SpecError};
use super::{Content, Dir, File, Layout, Node, Projection};

/// `defaultMode` when the source sets none (API defaulting).
const DEFAULT_MODE: u32 = 0o644;
/// Payload directories, made by `MkdirAll(0777)` under the kubelet's umask 022; and the
/// timestamped directory, chmod'ed to 0755.
const DIR_MODE: u32 = 0o755;
/// The volume root: a tmpfs root.
const ROOT_MODE: u32 = 0o1777;
/// The ownership pass for a read-only volume: files and directories OR this in...
const RO_MASK: u32 = 0o440;
/// ...and directories also this, plus setgid.
const DIR_EXEC_MASK: u32 = 0o110;
const MAX_PATH: usize = 4096;
const MAX_NAME: usize = 255;
const MAX_ID: i64 = 2_147_483_647;

/// One file of the payload before the tree is built: what it holds and which field made it.
struct Entry {
    origin: String,
    content: Content,
    mode: u32,
    uid: Option<u32>,
}

/// The merged payload, by clean path; a later insert replaces an earlier one.
type Payload = BTreeMap<String, Entry>;

pub(crate) fn project(docs: &Documents) -> Result<Projection, SpecError> {
    validate_objects(docs)?;
    let pod = PodContext::new(docs.pod.as_ref());
    validate_source(docs)?;
    let payload = collect(docs, &pod)?;
    let layout = match pod.fs_group {
        Some(gid) => Layout {
            root_mode: ROOT_MODE | RO_MASK | DIR_EXEC_MASK | libc::S_ISGID,
            dir_mode: DIR_MODE | RO_MASK | DIR_EXEC_MASK | libc::S_ISGID,
            gid,
            fs_group: Some(gid),
        },
        None => Layout { root_mode: ROOT_MODE, dir_mode: DIR_MODE, gid: 0, fs_group: None },
    };
    let root = build_tree(&docs.projected, payload, layout)?;
    Ok(Projection { root, layout })
}

// ---------------------------------------------------------------------------------------------
// Paths.

/// A path a source writes to, checked by both layers: the API server's (not absolute, no `..`
/// element, not starting with `..`) and the kubelet's (at most 4096 bytes, names of at most
/// 255), and it must name something below the volume's root.
pub(crate) fn check_path(path: &str) -> Result<(), String> {
    if path.is_empty() {
        return Err("required".into());
    }
    if path.starts_with('/') {
        return Err(format!("must be a relative path (got {path:?})"));
    }
    if path.split('/').any(|p| p == "..") {
        return Err(format!("must not contain '..' (got {path:?})"));
    }
    if path.starts_with("..") {
        return Err(format!("must not start with '..' (got {path:?})"));
    }
    if path.len() > MAX_PATH {
        return Err(format!("must be at most {MAX_PATH} bytes (got {})", path.len()));
    }
    if path.split('/').any(|p| p.len() > MAX_NAME) {
        return Err(format!("file names must be at most {MAX_NAME} bytes (got {path:?})"));
    }
    if path.contains('\0') {
        return Err("must not contain a NUL byte".into());
    }
    if clean(path) == "." {
        return Err(format!("must name a file below the volume's root (got {path:?})"));
    }
    Ok(())
}

/// `path.Clean` for a checked relative path: no empty or `.` elements, no trailing slash.
pub(crate) fn clean(path: &str) -> String {
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty() && *p != ".").collect();
    if parts.is_empty() {
        ".".into()
    } else {
        parts.join("/")
    }
}

/// A key of a ConfigMap or Secret (`IsConfigMapKey`).
fn check_key(key: &str) -> Result<(), String> {
    if key.len() > 253 {
        return Err("must be no more than 253 characters".into());
    }
    if key.is_empty() || !key.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b)) {
        return Err(format!(
            "invalid key {key:?}: a valid config key must consist of alphanumeric characters, '-', '_' or '.' \
             (e.g. 'key.name', or 'KEY_NAME', or 'key-name')"
        ));
    }
    match key {
        "." => Err("must not be '.'".into()),
        ".." => Err("must not be '..'".into()),
        k if k.starts_with("..") => Err(format!("must not start with '..' (got {k:?})")),
        _ => Ok(()),
    }
}

// ---------------------------------------------------------------------------------------------
// Validation of the objects and the source.

fn validate_objects(docs: &Documents) -> Result<(), SpecError> {
    for doc in &docs.config_maps {
        let cm = &doc.value;
        if cm.metadata.name.is_empty() {
            return Err(doc.error("metadata.name", "required"));
        }
        for key in cm.data.keys() {
            check_key(key).map_err(|m| doc.error(format!("data[{key}]"), m))?;
        }
        for key in cm.binary_data.keys() {
            check_key(key).map_err(|m| doc.error(format!("binaryData[{key}]"), m))?;
            if cm.data.contains_key(key) {
                return Err(doc.error(format!("binaryData[{key}]"), "duplicate of key present in data"));
            }
        }
    }
    for doc in &docs.secrets {
        let secret = &doc.value;
        if secret.metadata.name.is_empty() {
            return Err(doc.error("metadata.name", "required"));
        }
        for key in secret.data.keys() {
            check_key(key).map_err(|m| doc.error(format!("data[{key}]"), m))?;
        }
        for key in secret.string_data.keys() {
            check_key(key).map_err(|m| doc.error(format!("stringData[{key}]"), m))?;
        }
    }
    if let Some(doc) = &docs.pod {
        let spec = &doc.value.spec;
        let containers = spec.containers.iter().map(|c| ("containers", c));
        let inits = spec.init_containers.iter().map(|c| ("initContainers", c));
        for (i, (list, c)) in containers.chain(inits).enumerate() {
            let i = if list == "containers" { i } else { i - spec.containers.len() };
            let at = format!("spec.{list}[{i}]");
            if c.name.is_empty() {
                return Err(doc.error(format!("{at}.name"), "required"));
            }
            for (side, map) in [("limits", &c.resources.limits), ("requests", &c.resources.requests)] {
                if let Some((name, _)) = map.iter().find(|(_, q)| q.is_negative()) {
                    return Err(
                        doc.error(format!("{at}.resources.{side}.{name}"), "must be greater than or equal to 0")
                    );
                }
            }
            if let Some(uid) = c.security_context.run_as_user {
                check_id(uid).map_err(|m| doc.error(format!("{at}.securityContext.runAsUser"), m))?;
            }
        }
        let sc = &spec.security_context;
        if let Some(gid) = sc.fs_group {
            check_id(gid).map_err(|m| doc.error("spec.securityContext.fsGroup", m))?;
        }
        if let Some(uid) = sc.run_as_user {
            check_id(uid).map_err(|m| doc.error("spec.securityContext.runAsUser", m))?;
        }
    }
    if let Some(doc) = &docs.node {
        if let Some((name, _)) = doc.value.status.allocatable.iter().find(|(_, q)| q.is_negative()) {
            return Err(doc.error(format!("status.allocatable.{name}"), "must be greater than or equal to 0"));
        }
    }
    Ok(())
}

fn check_id(id: i64) -> Result<(), String> {
    if (0..=MAX_ID).contains(&id) {
        Ok(())
    } else {
        Err(format!("must be between 0 and {MAX_ID}, inclusive (got {id})"))
    }
}

/// Records an explicit item path; the same path twice is an error (the API server's check).
fn claim<'a>(
    doc: &Doc<ProjectedSource>,
    explicit: &mut BTreeMap<&'a str, String>,
    path: &'a str,
    at: String,
) -> Result<(), SpecError> {
    if let Some(first) = explicit.get(path) {
        return Err(doc.error(at, format!("conflicting duplicate paths: {path:?} is also {first}")));
    }
    explicit.insert(path, at);
    Ok(())
}

/// The projected source as the API server validates it, before anything is read.
fn validate_source(docs: &Documents) -> Result<(), SpecError> {
    let doc = &docs.projected;
    // Explicit item paths, exactly as written, with the field that wrote each.
    let mut explicit: BTreeMap<&str, String> = BTreeMap::new();
    for (i, source) in doc.value.sources.iter().enumerate() {
        let at = format!("sources[{i}]");
        if source.cluster_trust_bundle.is_some() {
            return Err(doc.error(format!("{at}.clusterTrustBundle"), "source type not supported by volfs"));
        }
        if source.pod_certificate.is_some() {
            return Err(doc.error(format!("{at}.podCertificate"), "source type not supported by volfs"));
        }
        let set = [
            source.config_map.is_some(),
            source.secret.is_some(),
            source.downward_api.is_some(),
            source.service_account_token.is_some(),
        ];
        match set.iter().filter(|s| **s).count() {
            0 => {
                return Err(doc
                    .error(at, "must specify one volume type: configMap, secret, downwardAPI or serviceAccountToken"))
            }
            1 => {}
            _ => return Err(doc.error(at, "may not specify more than 1 volume type")),
        }
        for (kind, object) in [("configMap", &source.config_map), ("secret", &source.secret)] {
            let Some(object) = object else { continue };
            let at = format!("{at}.{kind}");
            if object.name.is_empty() {
                return Err(doc.error(format!("{at}.name"), "required"));
            }
            for (j, item) in object.items.iter().enumerate() {
                let at = format!("{at}.items[{j}]");
                if item.key.is_empty() {
                    return Err(doc.error(format!("{at}.key"), "required"));
                }
                check_path(&item.path).map_err(|m| doc.error(format!("{at}.path"), m))?;
                claim(doc, &mut explicit, &item.path, format!("{at}.path"))?;
            }
        }
        if let Some(downward) = &source.downward_api {
            for (j, item) in downward.items.iter().enumerate() {
                let at = format!("{at}.downwardAPI.items[{j}]");
                check_path(&item.path).map_err(|m| doc.error(format!("{at}.path"), m))?;
                match (&item.field_ref, &item.resource_field_ref) {
                    (Some(_), Some(_)) => {
                        return Err(doc.error(at, "fieldRef and resourceFieldRef can not be specified simultaneously"))
                    }
                    (None, None) => return Err(doc.error(at, "one of fieldRef and resourceFieldRef is required")),
                    (Some(f), None) => {
                        if let Some(v) = f.api_version.as_deref().filter(|v| !v.is_empty() && *v != "v1") {
                            return Err(doc.error(
                                format!("{at}.fieldRef.apiVersion"),
                                format!("unsupported version {v:?}: only v1"),
                            ));
                        }
                        if f.field_path.is_empty() {
                            return Err(doc.error(format!("{at}.fieldRef.fieldPath"), "required"));
                        }
                        validate_field_path(&f.field_path)
                            .map_err(|m| doc.error(format!("{at}.fieldRef.fieldPath"), m))?;
                    }
                    (None, Some(r)) => validate_resource_ref(r)
                        .map_err(|(field, m)| doc.error(format!("{at}.resourceFieldRef.{field}"), m))?,
                }
                claim(doc, &mut explicit, &item.path, format!("{at}.path"))?;
            }
        }
        if let Some(token) = &source.service_account_token {
            let at = format!("{at}.serviceAccountToken");
            check_path(&token.path).map_err(|m| doc.error(format!("{at}.path"), m))?;
            match token.expiration_seconds {
                Some(s) if s < 600 => {
                    return Err(
                        doc.error(format!("{at}.expirationSeconds"), "may not specify a duration less than 10 minutes")
                    )
                }
                Some(s) if s > 1 << 32 => {
                    return Err(doc.error(
                        format!("{at}.expirationSeconds"),
                        "may not specify a duration larger than 2^32 seconds",
                    ))
                }
                _ => {}
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Payload.

/// What the pod contributes to ownership: fsGroup, and fsUser, the one runAsUser every
/// container runs as (the kubelet's `FsUserFrom`), which owns token files.
struct PodContext<'a> {
    pod: Option<&'a Doc<PodDoc>>,
    fs_group: Option<u32>,
    fs_user: Option<u32>,
}

impl<'a> PodContext<'a> {
    fn new(pod: Option<&'a Doc<PodDoc>>) -> Self {
        let Some(doc) = pod else { return PodContext { pod, fs_group: None, fs_user: None } };
        let spec = &doc.value.spec;
        let fs_group = spec.security_context.fs_group.map(|g| g as u32);
        let pod_user = spec.security_context.run_as_user;
        let mut fs_user: Option<i64> = None;
        for c in spec.init_containers.iter().chain(&spec.containers) {
            match (c.security_context.run_as_user.or(pod_user), fs_user) {
                (None, _) => {
                    fs_user = None;
                    break;
                }
                (Some(u), Some(prev)) if u != prev => {
                    fs_user = None;
                    break;
                }
                (Some(u), _) => fs_user = Some(u),
            }
        }
        PodContext { pod, fs_group, fs_user: fs_user.map(|u| u as u32) }
    }
}

/// Every source's files, merged in source order (`collectData`).
fn collect(docs: &Documents, pod: &PodContext) -> Result<Payload, SpecError> {
    let doc = &docs.projected;
    let default_mode = doc.value.default_mode.map_or(DEFAULT_MODE, |m| m.0);
    let mut payload = Payload::new();
    for (i, source) in doc.value.sources.iter().enumerate() {
        let at = format!("sources[{i}]");
        if let Some(cm) = &source.config_map {
            let at = format!("{at}.configMap");
            let found = docs.config_maps.iter().find(|d| matches(&d.value.metadata, cm, pod));
            let object = found.map(|d| {
                let text = d.value.data.iter().map(|(k, v)| (k.clone(), Content::new(v.as_bytes(), false)));
                let binary = d.value.binary_data.iter().map(|(k, v)| (k.clone(), Content::new(v.0.as_slice(), false)));
                text.chain(binary).collect::<BTreeMap<_, _>>()
            });
            object_payload(doc, &at, "configmap", cm, object, default_mode, &mut payload)?;
        }
        if let Some(secret) = &source.secret {
            let at = format!("{at}.secret");
            let found = docs.secrets.iter().find(|d| matches(&d.value.metadata, secret, pod));
            let object = found.map(|d| {
                let mut data: BTreeMap<String, Content> =
                    d.value.data.iter().map(|(k, v)| (k.clone(), Content::new(v.0.as_slice(), true))).collect();
                // stringData is merged over data, as the API server does on write.
                for (k, v) in &d.value.string_data {
                    data.insert(k.clone(), Content::new(v.0.as_bytes(), true));
                }
                data
            });
            object_payload(doc, &at, "secret", secret, object, default_mode, &mut payload)?;
        }
        if let Some(downward) = &source.downward_api {
            for (j, item) in downward.items.iter().enumerate() {
                let at = format!("{at}.downwardAPI.items[{j}]");
                let Some(pod_doc) = pod.pod else {
                    return Err(doc.error(&at, "needs a Pod document (kind: Pod) to read the pod's fields from"));
                };
                let text = match (&item.field_ref, &item.resource_field_ref) {
                    (Some(f), _) => field_value(&pod_doc.value, &f.field_path),
                    (None, Some(r)) => resource_value(&pod_doc.value, docs.node.as_ref().map(|n| &n.value), r)
                        .map_err(|m| doc.error(format!("{at}.resourceFieldRef.containerName"), m))?,
                    (None, None) => String::new(),
                };
                let mode = item.mode.map_or(default_mode, |m| m.0);
                let content = Content::new(text.as_bytes(), false);
                insert(
                    doc,
                    &mut payload,
                    &item.path,
                    Entry { origin: format!("{at}.path"), content, mode, uid: None },
                )?;
            }
        }
        if let Some(token) = &source.service_account_token {
            let at = format!("{at}.serviceAccountToken");
            let audience = token.audience.as_deref().filter(|a| !a.is_empty());
            let found = docs
                .tokens
                .iter()
                .find(|t| t.value.audience.as_deref().filter(|a| !a.is_empty()) == audience)
                .or_else(|| docs.tokens.iter().find(|t| t.value.audience.as_deref().is_none_or(str::is_empty)));
            let Some(found) = found else {
                let wanted = audience.map_or("the default audience".to_string(), |a| format!("audience {a:?}"));
                return Err(doc.error(
                    &at,
                    format!("no ServiceAccountToken document (kind: ServiceAccountToken, token: ...) for {wanted}"),
                ));
            };
            // With fsUser or fsGroup the token is 0600; the ownership pass then makes it 0640.
            let mode = if pod.fs_user.is_some() || pod.fs_group.is_some() { 0o600 } else { default_mode };
            let content = Content::new(found.value.token.0.as_bytes(), true);
            let entry = Entry { origin: format!("{at}.path"), content, mode, uid: pod.fs_user };
            insert(doc, &mut payload, &token.path, entry)?;
        }
    }
    Ok(payload)
}

/// Whether an object document is the one a source names: same name, in the pod's namespace
/// (an object or pod without a namespace matches any).
fn matches(meta: &ObjectMeta, source: &ObjectSource, pod: &PodContext) -> bool {
    let pod_ns = pod.pod.and_then(|p| p.value.metadata.namespace.as_deref());
    meta.name == source.name && (meta.namespace.is_none() || pod_ns.is_none() || meta.namespace.as_deref() == pod_ns)
}

/// A configMap or secret source's files (`MakePayload`): all keys, or the listed items.
fn object_payload(
    doc: &Doc<ProjectedSource>,
    at: &str,
    what: &str,
    source: &ObjectSource,
    object: Option<BTreeMap<String, Content>>,
    default_mode: u32,
    payload: &mut Payload,
) -> Result<(), SpecError> {
    let optional = source.optional.is_some_and(|o| o.0);
    let object = match object {
        Some(object) => object,
        // A missing optional object is an empty one.
        None if optional => BTreeMap::new(),
        None => {
            let kind = if what == "configmap" { "ConfigMap" } else { "Secret" };
            return Err(doc.error(
                format!("{at}.name"),
                format!(
                    "{what} {:?} not found: no {kind} document with that name (set optional: true to allow this)",
                    source.name
                ),
            ));
        }
    };
    if source.items.is_empty() {
        for (key, content) in object {
            let origin = format!("{at} (key {key:?})");
            insert(doc, payload, &key.clone(), Entry { origin, content, mode: default_mode, uid: None })?;
        }
        return Ok(());
    }
    for (j, item) in source.items.iter().enumerate() {
        let at = format!("{at}.items[{j}]");
        let Some(content) = object.get(&item.key) else {
            if optional {
                continue;
            }
            return Err(doc.error(
                format!("{at}.key"),
                format!("{what} references non-existent {} key: {}", key_word(what), item.key),
            ));
        };
        let mode = item.mode.map_or(default_mode, |m| m.0);
        let entry = Entry { origin: format!("{at}.path"), content: content.clone(), mode, uid: None };
        insert(doc, payload, &item.path, entry)?;
    }
    Ok(())
}

fn key_word(what: &str) -> &'static str {
    if what == "configmap" {
        "config"
    } else {
        "secret"
    }
}

/// The kubelet's path check and cleaning, then the merge: a later entry replaces an earlier one.
fn insert(doc: &Doc<ProjectedSource>, payload: &mut Payload, path: &str, entry: Entry) -> Result<(), SpecError> {
    check_path(path).map_err(|m| doc.error(&entry.origin, m))?;
    payload.insert(clean(path), entry);
    Ok(())
}

/// The payload as a tree. A path that one entry makes a file and another a directory fails,
/// as the kubelet's write does.
fn build_tree(doc: &Doc<ProjectedSource>, payload: Payload, layout: Layout) -> Result<Dir, SpecError> {
    let new_dir = || Dir { mode: layout.dir_mode, uid: 0, gid: layout.gid, entries: BTreeMap::new() };
    let mut root = new_dir();
    let origins: BTreeMap<&str, &str> = payload.iter().map(|(p, e)| (p.as_str(), e.origin.as_str())).collect();
    for (path, entry) in &payload {
        let parts: Vec<&str> = path.split('/').collect();
        let (name, parents) = parts.split_last().unwrap_or((&"", &[]));
        let mut dir = &mut root;
        for (depth, part) in parents.iter().enumerate() {
            let node = dir.entries.entry(part.to_string()).or_insert_with(|| Node::Dir(new_dir()));
            dir = match node {
                Node::Dir(d) => d,
                Node::File(_) => {
                    let file = parts[..=depth].join("/");
                    let other = origins.get(file.as_str()).copied().unwrap_or("another source");
                    return Err(doc.error(
                        &entry.origin,
                        format!("{path:?} needs {file:?} to be a directory, but {other} makes it a file"),
                    ));
                }
            };
        }
        if dir.entries.contains_key(*name) {
            return Err(
                doc.error(&entry.origin, format!("{path:?} is a file here, but another entry makes it a directory"))
            );
        }
        let mode = if layout.fs_group.is_some() { entry.mode | RO_MASK } else { entry.mode };
        let file = File { mode, uid: entry.uid.unwrap_or(0), gid: layout.gid, content: entry.content.clone() };
        dir.entries.insert(name.to_string(), Node::File(file));
    }
    Ok(root)
}
