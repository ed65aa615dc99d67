//! subPath: the directory (or file) inside a volume that a mount shows as its root, found
//! without following a symbolic link, as the kubelet requires of a pod's subPath.

use super::{Caller, Core, NodeSpec};
use crate::error::{Error, Result};
use crate::meta::{Ino, Kind};

impl Core {
    /// Resolves `path`, relative to the directory `root`, to a directory (or, as its last
    /// component, a regular file) without ever following a symbolic link: a symlink anywhere
    /// on the way is an error naming it, as are an absolute path and any `..`. With `create`, missing directories are made with `root`'s mode (the
    /// kubelet's rule for subPath), owned by root.
    pub fn resolve_subpath(&self, root: Ino, path: &str, create: bool) -> Result<Ino> {
        if path.starts_with('/') {
            return Err(Error::Invalid(format!("subpath {path:?} must be relative")));
        }
        let parts: Vec<&str> = path.split('/').filter(|c| !c.is_empty() && *c != ".").collect();
        if parts.contains(&"..") {
            return Err(Error::Invalid(format!("subpath {path:?} must not contain '..'")));
        }
        let mode = self.dir_inode(root)?.perm;
        let mut cur = root;
        for (i, part) in parts.iter().enumerate() {
            let so_far = parts[..=i].join("/");
            let entry = match self.meta.dirent(cur, part.as_bytes())? {
                Some(entry) => entry,
                None if create => {
                    match self.make_node(Caller::ROOT, cur, part.as_bytes(), NodeSpec::Dir, mode) {
                        // Someone made it meanwhile: look again.
                        Ok(_) | Err(Error::Exists(_)) => {}
                        Err(e) => return Err(e),
                    }
                    self.meta
                        .dirent(cur, part.as_bytes())?
                        .ok_or_else(|| Error::NotFound(format!("subpath {so_far:?} vanished while it was made")))?
                }
                None => return Err(Error::NotFound(format!("subpath {so_far:?} does not exist"))),
            };
            let last = i + 1 == parts.len();
            match entry.kind {
                Kind::Dir => cur = entry.ino,
                // A view of one file, as a pod's subPath may name one.
                Kind::File if last => cur = entry.ino,
                Kind::Symlink => {
                    return Err(Error::Invalid(format!(
                        "subpath {so_far:?} is a symbolic link; links are not followed"
                    )))
                }
                _ if last => {
                    return Err(Error::Invalid(format!("subpath {so_far:?} is neither a directory nor a regular file")))
                }
                _ => return Err(Error::NotDir(format!("subpath {so_far:?} is not a directory"))),
            }
        }
        Ok(cur)
    }
}
