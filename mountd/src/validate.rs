//! Checks of every string a request names, before anything is done with it: ids and names,
//! paths, parameter maps. Errors name the field and say what is wrong.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use volfs_api::VolumeName;

use crate::error::{Error, Result};

/// The CSI spec's limit on strings a CO sends (names, ids, keys and values).
pub const MAX_STRING: usize = 128;
/// Node ids may be longer.
pub const MAX_NODE_ID: usize = 256;
/// A map (parameters, contexts) in total.
pub const MAX_MAP: usize = 4096;
/// A path.
pub const MAX_PATH: usize = 4096;

fn invalid(field: &str, why: impl std::fmt::Display) -> Error {
    Error::InvalidArgument(format!("{field} {why}"))
}

/// A required string: not empty, at most `max` bytes, no control characters.
pub fn text<'a>(field: &str, value: &'a str, max: usize) -> Result<&'a str> {
    if value.is_empty() {
        return Err(invalid(field, "is missing"));
    }
    if value.len() > max {
        return Err(invalid(field, format!("is {} bytes long; at most {max} are allowed", value.len())));
    }
    if let Some(c) = value.chars().find(|c| c.is_control()) {
        return Err(invalid(field, format!("holds the control character {c:?}")));
    }
    Ok(value)
}

/// An id mountd handed out (a volume or snapshot id); `what` names the kind in messages.
pub fn id<'a>(field: &str, value: &'a str) -> Result<&'a str> {
    text(field, value, MAX_STRING)
}

/// An absolute path without `..`, `.` or empty components, used only as a mountpoint.
pub fn path(field: &str, value: &str) -> Result<PathBuf> {
    let value = text(field, value, MAX_PATH)?;
    let p = Path::new(value);
    if !p.is_absolute() {
        return Err(invalid(field, format!("{value:?} is not an absolute path")));
    }
    let trimmed = value.trim_end_matches('/');
    if trimmed.is_empty() {
        return Err(invalid(field, format!("{value:?} is the root directory")));
    }
    if trimmed.split('/').skip(1).any(|c| c.is_empty() || c == "." || c == "..") {
        return Err(invalid(field, format!("{value:?} is not a plain path ('.', '..' and '//' are refused)")));
    }
    Ok(p.to_path_buf())
}

/// A string map: keys and values within the limits, the whole within `MAX_MAP`.
pub fn map(field: &str, m: &HashMap<String, String>) -> Result<BTreeMap<String, String>> {
    let mut total = 0;
    for (k, v) in m {
        text(&format!("{field} key"), k, MAX_STRING)?;
        if v.len() > MAX_MAP {
            return Err(invalid(&format!("{field}[{k:?}]"), format!("is {} bytes long", v.len())));
        }
        total += k.len() + v.len();
    }
    if total > MAX_MAP {
        return Err(invalid(field, format!("holds {total} bytes; at most {MAX_MAP} are allowed")));
    }
    Ok(m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
}

/// A subPath of a volume: relative, no `..` or `.`, no empty components.
pub fn subpath(field: &str, value: &str) -> Result<String> {
    let trimmed = value.trim_matches('/');
    if value.starts_with('/') || trimmed.split('/').any(|c| c.is_empty() || c == "." || c == "..") {
        return Err(invalid(field, format!("{value:?} must be a relative path inside the volume without '.' or '..'")));
    }
    text(field, trimmed, MAX_PATH).map(str::to_string)
}

/// The data-plane volume name for a CO's name: the name itself when it is a valid volume name
/// no one has, else `prefix` and a random suffix. `taken` says whether a name is in use.
pub fn data_plane_name(name: &str, prefix: &str, taken: impl Fn(&str) -> bool) -> String {
    if VolumeName::parse(name).is_ok() && name.len() <= 63 && !taken(name) {
        return name.to_string();
    }
    loop {
        let candidate = format!("{prefix}-{:016x}", random_u64());
        if !taken(&candidate) {
            return candidate;
        }
    }
}

fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    // RandomState is seeded from the OS's randomness; mixing in the time keeps calls apart.
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos());
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn texts_name_their_field() {
        assert!(text("name", "pvc-1", MAX_STRING).is_ok());
        for (bad, why) in [("", "missing"), ("a\nb", "control"), (&"x".repeat(129)[..], "129 bytes")] {
            let e = text("name", bad, MAX_STRING).unwrap_err().to_string();
            assert!(e.starts_with("name ") && e.contains(why), "{bad:?}: {e}");
        }
    }

    #[test]
    fn paths_are_absolute_and_plain() {
        assert_eq!(path("target_path", "/var/lib/x").unwrap(), PathBuf::from("/var/lib/x"));
        for bad in ["", "rel/x", "/a/../b", "/a/./b", "/a//b", "/", "//", "/.."] {
            assert!(matches!(path("target_path", bad), Err(Error::InvalidArgument(m)) if m.contains("target_path")));
        }
    }

    #[test]
    fn subpaths_stay_inside() {
        assert_eq!(subpath("subPath", "a/b/").unwrap(), "a/b");
        for bad in ["/a", "../a", "a/../../b", "a//b", "."] {
            assert!(subpath("subPath", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn data_plane_names_keep_valid_free_names() {
        assert_eq!(data_plane_name("pvc-1", "csi", |_| false), "pvc-1");
        let other = data_plane_name("pvc-1", "csi", |n| n == "pvc-1");
        assert!(other.starts_with("csi-") && other.len() == 20, "{other}");
        assert!(data_plane_name("Upper_Case", "docker", |_| false).starts_with("docker-"));
        let a = data_plane_name("X", "csi", |_| false);
        assert_ne!(a, data_plane_name("X", "csi", |_| false));
    }

    #[test]
    fn maps_are_bounded() {
        let big: HashMap<_, _> = (0..100).map(|i| (format!("key{i}"), "v".repeat(60))).collect();
        assert!(map("parameters", &big).unwrap_err().to_string().contains("at most 4096"));
    }
}
