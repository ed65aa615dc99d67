//! Downward API values as the kubelet writes them: pod metadata (`key="value"` lines for labels
//! and annotations, Go-quoted and sorted), and container resources through `resourceFieldRef`
//! with a divisor, rounded up.

use std::collections::BTreeMap;

use volfs_api::quantity::{ceil_div, Quantity};

use super::spec::{Container, NodeDoc, PodDoc, ResourceFieldRef};

// ---------------------------------------------------------------------------------------------
// Validation of downwardAPI items, as the API server does it.

const METADATA_FIELDS: [&str; 5] =
    ["metadata.name", "metadata.namespace", "metadata.labels", "metadata.annotations", "metadata.uid"];

/// `fieldRef.fieldPath`: one of the metadata fields a volume may read, or one label or
/// annotation as `metadata.labels['key']`.
pub(crate) fn validate_field_path(path: &str) -> Result<(), String> {
    if let Some((field, key)) = split_subscript(path) {
        return match field {
            "metadata.labels" | "metadata.annotations" => validate_qualified_name(key),
            _ => Err(format!("{path:?}: a subscript is only supported on metadata.labels and metadata.annotations")),
        };
    }
    if METADATA_FIELDS.contains(&path) {
        Ok(())
    } else {
        Err(format!("unsupported value {path:?}: supported values: \"{}\"", METADATA_FIELDS.join("\", \"")))
    }
}

/// Splits `metadata.labels['key']` into (`metadata.labels`, `key`).
fn split_subscript(path: &str) -> Option<(&str, &str)> {
    let inner = path.strip_suffix("']")?;
    let (field, key) = inner.split_once("['")?;
    (!field.is_empty()).then_some((field, key))
}

/// A label or annotation key: an optional DNS-subdomain prefix and `/`, then a name of at most
/// 63 characters of alphanumerics, `-`, `_` and `.`, starting and ending alphanumeric.
fn validate_qualified_name(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    let name_ok = !name.is_empty()
        && name.len() <= 63
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name.as_bytes()[name.len() - 1].is_ascii_alphanumeric();
    let prefix_ok = prefix.is_none_or(|p| {
        !p.is_empty()
            && p.len() <= 253
            && p.split('.').all(|l| {
                !l.is_empty()
                    && l.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                    && !l.starts_with('-')
                    && !l.ends_with('-')
            })
    });
    if name_ok && prefix_ok {
        Ok(())
    } else {
        Err(format!("{key:?} is not a valid label or annotation key (a qualified name such as example.com/my-key)"))
    }
}

const CPU_DIVISORS: [&str; 2] = ["1m", "1"];
const BYTE_DIVISORS: [&str; 13] = ["1", "1k", "1M", "1G", "1T", "1P", "1E", "1Ki", "1Mi", "1Gi", "1Ti", "1Pi", "1Ei"];

/// `resourceFieldRef`: the resource and its divisor. Returns the field that is wrong and why.
pub(crate) fn validate_resource_ref(r: &ResourceFieldRef) -> Result<(), (&'static str, String)> {
    if r.container_name.is_empty() {
        return Err(("containerName", "required in a volume".into()));
    }
    let kind = resource_kind(&r.resource).ok_or_else(|| {
        (
            "resource",
            format!(
                "unsupported value {:?}: supported values: limits.cpu, limits.memory, limits.ephemeral-storage, \
                 requests.cpu, requests.memory, requests.ephemeral-storage, limits.hugepages-<size>, \
                 requests.hugepages-<size>",
                r.resource
            ),
        )
    })?;
    let Some(divisor) = r.divisor.as_ref().filter(|d| !d.is_zero()) else { return Ok(()) };
    let (allowed, what): (&[&str], &str) = match kind {
        ResourceKind::Cpu => (&CPU_DIVISORS, "the cpu resource"),
        ResourceKind::Memory => (&BYTE_DIVISORS, "the memory resource"),
        ResourceKind::EphemeralStorage => (&BYTE_DIVISORS, "the local ephemeral storage resource"),
        ResourceKind::HugePages => (&BYTE_DIVISORS, "the hugepages resource"),
    };
    if divisor.canonical_in(allowed) {
        Ok(())
    } else {
        Err(("divisor", format!("{divisor}: only divisor's values {} are supported with {what}", allowed.join(", "))))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ResourceKind {
    Cpu,
    Memory,
    EphemeralStorage,
    HugePages,
}

fn resource_kind(resource: &str) -> Option<ResourceKind> {
    let (_, name) = resource.split_once('.').filter(|(side, _)| *side == "limits" || *side == "requests")?;
    match name {
        "cpu" => Some(ResourceKind::Cpu),
        "memory" => Some(ResourceKind::Memory),
        "ephemeral-storage" => Some(ResourceKind::EphemeralStorage),
        n if n.strip_prefix("hugepages-").is_some_and(|size| Quantity::parse(size).is_ok()) => {
            Some(ResourceKind::HugePages)
        }
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------------
// Values.

/// The text of a `fieldRef` (already validated).
pub(crate) fn field_value(pod: &PodDoc, path: &str) -> String {
    let meta = &pod.metadata;
    if let Some((field, key)) = split_subscript(path) {
        let map = if field == "metadata.labels" { &meta.labels } else { &meta.annotations };
        return map.get(key).cloned().unwrap_or_default();
    }
    match path {
        "metadata.name" => meta.name.clone(),
        "metadata.namespace" => meta.namespace.clone().unwrap_or_else(|| "default".into()),
        "metadata.uid" => meta.uid.clone(),
        "metadata.labels" => format_map(&meta.labels),
        "metadata.annotations" => format_map(&meta.annotations),
        _ => String::new(),
    }
}

/// `key="value"` lines in key order, values quoted as Go's `%q` does, no final newline.
pub(crate) fn format_map(map: &BTreeMap<String, String>) -> String {
    map.iter().map(|(k, v)| format!("{k}={}", go_quote(v))).collect::<Vec<_>>().join("\n")
}

/// Go's `strconv.Quote`: `"` and `\` escaped, control and non-printable characters as `\n`,
/// `\x01`, `\u00a0`, `\U000e0001`; other characters as they are.
pub(crate) fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{b}' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => out.push_str(&format!("\\x{:02x}", c as u32)),
            c if go_printable(c) => out.push(c),
            c if (c as u32) < 0x10000 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push_str(&format!("\\U{:08x}", c as u32)),
        }
    }
    out.push('"');
    out
}

/// Go's `unicode.IsPrint` for what Rust can tell: no control characters, no space other
/// than U+0020, no format characters.
fn go_printable(c: char) -> bool {
    if c == ' ' {
        return true;
    }
    if c.is_control() || c.is_whitespace() {
        return false;
    }
    !matches!(c as u32,
        0xad | 0x600..=0x605 | 0x61c | 0x6dd | 0x70f | 0x180e | 0x200b..=0x200f | 0x202a..=0x202e
        | 0x2060..=0x2064 | 0x2066..=0x206f | 0xfeff | 0xfff9..=0xfffb | 0xe0001 | 0xe0020..=0xe007f
        | 0xd800..=0xdfff | 0xe000..=0xf8ff | 0xf0000..=0x10ffff | 0xfdd0..=0xfdef)
        && (c as u32 & 0xfffe) != 0xfffe
}

/// The text of a `resourceFieldRef` (already validated): the container's limit or request,
/// divided by the divisor and rounded up. Requests default to limits, as the API server
/// defaults them; unset cpu, memory and ephemeral-storage limits are the node's allocatable.
pub(crate) fn resource_value(pod: &PodDoc, node: Option<&NodeDoc>, r: &ResourceFieldRef) -> Result<String, String> {
    let container = find_container(pod, &r.container_name)
        .ok_or_else(|| format!("container {} not found in the Pod document", r.container_name))?;
    let (side, name) = r.resource.split_once('.').unwrap_or(("", ""));
    let limits = &container.resources.limits;
    let value = match side {
        "requests" => container.resources.requests.get(name).or_else(|| limits.get(name)).cloned(),
        _ => match limits.get(name).filter(|q| !q.is_zero()) {
            Some(q) => Some(q.clone()),
            None if ["cpu", "memory", "ephemeral-storage"].contains(&name) => match node {
                Some(n) => n.status.allocatable.get(name).cloned(),
                None => machine_allocatable(name),
            },
            None => None,
        },
    };
    let value = value.unwrap_or_else(|| Quantity::from_integer(0));
    let one = Quantity::from_integer(1);
    let divisor = r.divisor.as_ref().filter(|d| !d.is_zero()).unwrap_or(&one);
    let n = match resource_kind(&r.resource) {
        Some(ResourceKind::Cpu) => ceil_div(value.milli_value(), divisor.milli_value()),
        _ => ceil_div(value.value(), divisor.value()),
    };
    Ok(n.to_string())
}

fn find_container<'a>(pod: &'a PodDoc, name: &str) -> Option<&'a Container> {
    pod.spec.containers.iter().chain(&pod.spec.init_containers).find(|c| c.name == name)
}

/// This machine's cpu count, memory and root filesystem size, for a pod without a Node document.
fn machine_allocatable(name: &str) -> Option<Quantity> {
    // SAFETY: sysconf and statvfs only read system values into plain integers.
    let value = unsafe {
        match name {
            "cpu" => u64::try_from(libc::sysconf(libc::_SC_NPROCESSORS_ONLN)).ok()?,
            "memory" => {
                let pages = u64::try_from(libc::sysconf(libc::_SC_PHYS_PAGES)).ok()?;
                let size = u64::try_from(libc::sysconf(libc::_SC_PAGESIZE)).ok()?;
                pages * size
            }
            "ephemeral-storage" => {
                let mut st: libc::statvfs = std::mem::zeroed();
                if libc::statvfs(c"/".as_ptr(), &mut st) != 0 {
                    return None;
                }
                st.f_blocks * st.f_frsize
            }
            _ => return None,
        }
    };
    Some(Quantity::from_integer(value))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(text: &str) -> Quantity {
        Quantity::parse(text).unwrap()
    }

    #[test]
    fn divisors_compare_canonical_forms() {
        assert!(q("1m").canonical_in(&CPU_DIVISORS));
        assert!(q("1000m").canonical_in(&CPU_DIVISORS));
        assert!(!q("10m").canonical_in(&CPU_DIVISORS));
        assert!(q("1Mi").canonical_in(&BYTE_DIVISORS));
        assert!(q("1024Ki").canonical_in(&BYTE_DIVISORS));
        assert!(q("1000").canonical_in(&BYTE_DIVISORS));
        assert!(!q("1024").canonical_in(&BYTE_DIVISORS));
        assert!(!q("1e3").canonical_in(&BYTE_DIVISORS));
    }

    #[test]
    fn maps_are_go_quoted_sorted_lines() {
        let map: BTreeMap<String, String> = [("b", "x\"y"), ("a", "1\n2"), ("c", "é\u{a0}\u{1}")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        assert_eq!(format_map(&map), "a=\"1\\n2\"\nb=\"x\\\"y\"\nc=\"é\\u00a0\\x01\"");
        assert_eq!(format_map(&BTreeMap::new()), "");
    }

    #[test]
    fn field_paths() {
        assert!(validate_field_path("metadata.name").is_ok());
        assert!(validate_field_path("metadata.labels['app.kubernetes.io/name']").is_ok());
        assert!(validate_field_path("metadata.annotations['x']").is_ok());
        assert!(validate_field_path("spec.nodeName").is_err());
        assert!(validate_field_path("metadata.name['x']").is_err());
        assert!(validate_field_path("metadata.labels['-bad']").is_err());
    }
}
