//! Projected volumes: configMap, secret, downwardAPI and serviceAccountToken sources merged by
//! the kubelet's rules into one read-only tree held in memory. No FUSE here: `spec` reads the
//! YAML documents, `rules` applies the kubelet's rules to them, `downward` computes downward
//! API values, and `live` serves generations of the tree with the kubelet's visible layout
//! (`..data` → `..<timestamp>.<n>`, one symlink per top-level name). `crate::fuse::projected`
//! puts `live` in front of the kernel.
//!
//! Contents never touch the disk and never reach a log: `Debug` shows sizes only.

mod downward;
pub mod live;
mod rules;
mod spec;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

pub use spec::SpecError;

/// A validated projected volume: the payload tree with its final modes and owners (after the
/// fsGroup ownership pass), and the modes of what the layout adds around it.
#[derive(Clone, Debug)]
pub struct Projection {
    root: Dir,
    layout: Layout,
}

/// Modes and owners of the volume root, the timestamped directory and the symlinks, which the
/// payload does not decide.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    /// The volume root: tmpfs's 01777, plus setgid and the read-only mask with fsGroup.
    pub root_mode: u32,
    /// The timestamped directory (and every directory in the payload): 0755, or 02755 with fsGroup.
    pub dir_mode: u32,
    /// Group of every directory and symlink: fsGroup, else root.
    pub gid: u32,
    pub fs_group: Option<u32>,
}

/// A directory of the payload.
#[derive(Clone, PartialEq, Eq)]
pub struct Dir {
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub entries: BTreeMap<String, Node>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Node {
    File(File),
    Dir(Dir),
}

/// A file of the payload.
#[derive(Clone, PartialEq, Eq)]
pub struct File {
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub content: Content,
}

/// The bytes of a file, shared: a generation, an open file and the spec all hold the same
/// allocation, so a file opened before an update keeps its bytes. `Debug` shows the size only.
#[derive(Clone)]
pub struct Content {
    bytes: Arc<Bytes>,
}

enum Bytes {
    Plain(Box<[u8]>),
    /// A Secret's or a token's bytes: never swapped out, zeroed when the last holder lets go.
    Secret(SecretBytes),
}

impl Content {
    pub fn new(bytes: &[u8], secret: bool) -> Self {
        let bytes = if secret { Bytes::Secret(SecretBytes::new(bytes)) } else { Bytes::Plain(bytes.into()) };
        Content { bytes: Arc::new(bytes) }
    }

    pub fn bytes(&self) -> &[u8] {
        match &*self.bytes {
            Bytes::Plain(b) => b,
            Bytes::Secret(s) => s.as_slice(),
        }
    }

    pub fn len(&self) -> usize {
        self.bytes().len()
    }

    pub fn is_empty(&self) -> bool {
        self.bytes().is_empty()
    }

    /// Whether the bytes come from a Secret or a token.
    pub fn is_secret(&self) -> bool {
        matches!(*self.bytes, Bytes::Secret(_))
    }
}

impl PartialEq for Content {
    fn eq(&self, other: &Self) -> bool {
        self.is_secret() == other.is_secret() && self.bytes() == other.bytes()
    }
}

impl Eq for Content {}

/// Secret bytes in pages of their own, locked in memory (mlock: never written to swap) and
/// zeroed before they are freed. Whole pages, so that unlocking them never unlocks another
/// allocation's bytes.
struct SecretBytes {
    ptr: std::ptr::NonNull<u8>,
    len: usize,
    layout: std::alloc::Layout,
}

// SAFETY: the buffer is owned, never aliased mutably, and only read after construction.
unsafe impl Send for SecretBytes {}
// SAFETY: as above; shared access is read-only.
unsafe impl Sync for SecretBytes {}

impl SecretBytes {
    fn new(bytes: &[u8]) -> Self {
        let page = rustix::param::page_size();
        let size = bytes.len().div_ceil(page).max(1) * page;
        let layout = std::alloc::Layout::from_size_align(size, page).expect("a page-aligned layout");
        // SAFETY: a non-zero size; the result is checked for null.
        let raw = unsafe { std::alloc::alloc_zeroed(layout) };
        let ptr = std::ptr::NonNull::new(raw).unwrap_or_else(|| std::alloc::handle_alloc_error(layout));
        // SAFETY: `size` >= `bytes.len()` bytes were just allocated at `ptr`, apart from `bytes`.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), ptr.as_ptr(), bytes.len()) };
        // SAFETY: the pages of our own live allocation.
        if unsafe { libc::mlock(ptr.as_ptr().cast(), size) } != 0 {
            let error = std::io::Error::last_os_error();
            tracing::warn!(%error, "cannot lock secret bytes in memory; they may be swapped out");
        }
        SecretBytes { ptr, len: bytes.len(), layout }
    }

    fn as_slice(&self) -> &[u8] {
        // SAFETY: `len` initialised bytes at `ptr`, alive as long as `self`.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for SecretBytes {
    fn drop(&mut self) {
        // SAFETY: the allocation is ours, of `layout.size()` bytes, and no longer shared.
        let all = unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.layout.size()) };
        zeroize::Zeroize::zeroize(all);
        // SAFETY: unlocks and frees what `new` locked and allocated with this layout.
        unsafe {
            libc::munlock(self.ptr.as_ptr().cast(), self.layout.size());
            std::alloc::dealloc(self.ptr.as_ptr(), self.layout);
        }
    }
}

impl fmt::Debug for Dir {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Dir")
            .field("mode", &format_args!("{:04o}", self.mode))
            .field("uid", &self.uid)
            .field("gid", &self.gid)
            .field("entries", &self.entries)
            .finish()
    }
}

impl fmt::Debug for File {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("File")
            .field("mode", &format_args!("{:04o}", self.mode))
            .field("uid", &self.uid)
            .field("gid", &self.gid)
            .field("content", &self.content)
            .finish()
    }
}

impl fmt::Debug for Content {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_secret() {
            write!(f, "<{} bytes, secret redacted>", self.len())
        } else {
            write!(f, "<{} bytes>", self.len())
        }
    }
}

/// Checks a path of the payload named from outside (a subPath mount) by the rules item paths
/// follow, and returns it cleaned.
pub fn check_subpath(path: &str) -> Result<String, String> {
    rules::check_path(path)?;
    Ok(rules::clean(path))
}

impl Projection {
    /// Parses a multi-document SPEC (the projected volume source, then the objects it names)
    /// and applies the kubelet's rules. Any error leaves nothing half-built.
    pub fn from_yaml(text: &str) -> Result<Projection, SpecError> {
        let docs = spec::Documents::parse(text)?;
        rules::project(&docs)
    }

    /// The payload: what the timestamped directory holds.
    pub fn root(&self) -> &Dir {
        &self.root
    }

    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// The node at a slash-separated path of the payload.
    pub fn get(&self, path: &str) -> Option<&Node> {
        let mut parts = path.split('/').filter(|p| !p.is_empty() && *p != ".").peekable();
        let mut dir = &self.root;
        loop {
            let node = dir.entries.get(parts.next()?)?;
            match node {
                _ if parts.peek().is_none() => return Some(node),
                Node::Dir(d) => dir = d,
                Node::File(_) => return None,
            }
        }
    }

    /// Every file of the payload with its path, in path order.
    pub fn files(&self) -> Vec<(String, &File)> {
        fn walk<'a>(dir: &'a Dir, prefix: &str, out: &mut Vec<(String, &'a File)>) {
            for (name, node) in &dir.entries {
                let path = if prefix.is_empty() { name.clone() } else { format!("{prefix}/{name}") };
                match node {
                    Node::File(f) => out.push((path, f)),
                    Node::Dir(d) => walk(d, &path, out),
                }
            }
        }
        let mut out = Vec::new();
        walk(&self.root, "", &mut out);
        out
    }

    /// Whether both payloads hold the same paths with the same bytes. Modes and owners are not
    /// compared, as the kubelet compares content only when it decides whether to write.
    pub fn same_content(&self, other: &Projection) -> bool {
        fn same(a: &Dir, b: &Dir) -> bool {
            a.entries.len() == b.entries.len()
                && a.entries.iter().zip(&b.entries).all(|((na, a), (nb, b))| {
                    na == nb
                        && match (a, b) {
                            (Node::File(a), Node::File(b)) => a.content.bytes() == b.content.bytes(),
                            (Node::Dir(a), Node::Dir(b)) => same(a, b),
                            _ => false,
                        }
                })
        }
        same(&self.root, &other.root)
    }
}

#[cfg(test)]
mod tests;
