//! Generations of a projected tree as readers see them, with the kubelet's visible layout: the
//! volume root holds `..data` (a symlink to the current timestamped directory), that directory
//! `..YYYY_MM_DD_HH_MM_SS.<n>` with the payload, and one symlink `name -> ..data/name` per
//! top-level name of the payload.
//!
//! A generation never changes once built; an update builds a whole new one and swaps it in
//! under one lock, so every path resolution lands entirely in one generation. Nodes are shared
//! (`Arc`), so whoever holds one (an open file, the kernel's reference to an inode) keeps its
//! generation's bytes. Every node has an inode number no other node ever had. The retired
//! generation's directory stays reachable by its name (not listed) for `RETIRED_GRACE`, so a
//! reader that read `..data` just before an update still finds the directory it named.

use std::collections::hash_map::RandomState;
use std::collections::BTreeMap;
use std::fmt;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use super::{Content, Dir, Layout, Projection};

/// The inode number of the volume root.
pub const ROOT_INO: u64 = 1;
/// The symlink that names the current generation's directory.
pub const DATA_LINK: &str = "..data";
/// How long a retired generation's directory can still be looked up by name.
pub const RETIRED_GRACE: Duration = Duration::from_secs(10);
/// What `stat` shows as a directory's size.
const DIR_SIZE: u64 = 4096;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Dir,
    File,
    Symlink,
}

/// What `stat` shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Attr {
    pub ino: u64,
    pub kind: Kind,
    /// Permission bits with setgid and sticky.
    pub perm: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub nlink: u32,
    pub mtime: SystemTime,
}

/// One immutable node of a generation (or a visible symlink of the root).
pub struct Node {
    ino: u64,
    perm: u32,
    uid: u32,
    gid: u32,
    mtime: SystemTime,
    body: Body,
}

enum Body {
    Dir(BTreeMap<String, Arc<Node>>),
    File(Content),
    Symlink(String),
}

impl fmt::Debug for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Node");
        d.field("ino", &self.ino).field("perm", &format_args!("{:o}", self.perm));
        match &self.body {
            Body::Dir(children) => d.field("children", &children.keys().collect::<Vec<_>>()),
            Body::File(content) => d.field("content", content),
            Body::Symlink(target) => d.field("target", target),
        };
        d.finish()
    }
}

impl Node {
    pub fn ino(&self) -> u64 {
        self.ino
    }

    pub fn kind(&self) -> Kind {
        match self.body {
            Body::Dir(_) => Kind::Dir,
            Body::File(_) => Kind::File,
            Body::Symlink(_) => Kind::Symlink,
        }
    }

    pub fn attr(&self) -> Attr {
        let (size, nlink) = match &self.body {
            Body::Dir(children) => {
                let subdirs = children.values().filter(|c| c.kind() == Kind::Dir).count() as u32;
                (DIR_SIZE, 2 + subdirs)
            }
            Body::File(content) => (content.len() as u64, 1),
            Body::Symlink(target) => (target.len() as u64, 1),
        };
        Attr {
            ino: self.ino,
            kind: self.kind(),
            perm: self.perm,
            uid: self.uid,
            gid: self.gid,
            size,
            nlink,
            mtime: self.mtime,
        }
    }

    pub fn children(&self) -> Option<&BTreeMap<String, Arc<Node>>> {
        match &self.body {
            Body::Dir(children) => Some(children),
            _ => None,
        }
    }

    pub fn child(&self, name: &str) -> Option<&Arc<Node>> {
        self.children()?.get(name)
    }

    pub fn content(&self) -> Option<&Content> {
        match &self.body {
            Body::File(content) => Some(content),
            _ => None,
        }
    }

    pub fn target(&self) -> Option<&str> {
        match &self.body {
            Body::Symlink(target) => Some(target),
            _ => None,
        }
    }

    /// The node at a slash-separated relative path below this one (this one for `.` or empty).
    pub fn resolve(self: &Arc<Self>, path: &str) -> Option<Arc<Node>> {
        let mut node = self.clone();
        for part in path.split('/').filter(|p| !p.is_empty() && *p != ".") {
            node = node.child(part)?.clone();
        }
        Some(node)
    }
}

/// One complete version of the tree.
struct Generation {
    name: String,
    data_link: Arc<Node>,
    dir: Arc<Node>,
    layout: Layout,
    mtime: SystemTime,
    bytes: u64,
    nodes: u64,
}

struct State {
    current: Arc<Generation>,
    retired: Vec<(Arc<Generation>, Instant)>,
    /// The visible symlinks, one per top-level name; they outlive generations.
    links: BTreeMap<String, Arc<Node>>,
}

/// A projected tree: its current generation and what readers may still reach.
pub struct Tree {
    state: RwLock<State>,
    next_ino: AtomicU64,
    /// One update at a time.
    updating: Mutex<()>,
}

/// A name of the root and whether the kernel may keep it: `..data` and retired directories
/// must be looked up again each time.
pub struct Found {
    pub node: Arc<Node>,
    pub stable: bool,
}

/// What an update changed, for telling the kernel.
#[derive(Debug)]
pub struct Update {
    /// False when the new projection has the same content as the current generation, which
    /// then stays (as the kubelet keeps its directory when nothing differs).
    pub changed: bool,
    /// The current generation's directory name after the update.
    pub generation: String,
    /// The previous generation's directory name and inode, and its `..data` inode.
    pub old_generation: String,
    pub old_dir: Arc<Node>,
    pub old_data_link: u64,
    pub new_dir: Arc<Node>,
    /// Top-level names that appeared, and that went (with the inode of their symlink).
    pub added: Vec<String>,
    pub removed: Vec<(String, u64)>,
    /// Top-level names whose symlink was replaced (its owner changed).
    pub replaced: Vec<(String, u64)>,
}

impl Tree {
    pub fn new(projection: &Projection) -> Tree {
        let next_ino = AtomicU64::new(ROOT_INO + 1);
        let current = Arc::new(build(&next_ino, projection, &[]));
        let links = current
            .dir
            .children()
            .into_iter()
            .flatten()
            .map(|(name, _)| (name.clone(), link(&next_ino, name, &current)))
            .collect();
        Tree { state: RwLock::new(State { current, retired: Vec::new(), links }), next_ino, updating: Mutex::new(()) }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Swaps in a generation built from `projection`, in one step, unless its content is the
    /// current one's.
    pub fn update(&self, projection: &Projection) -> Update {
        let _one = self.updating.lock().unwrap_or_else(|p| p.into_inner());
        let (old, old_names) = {
            let state = self.read();
            let names: Vec<String> = std::iter::once(&state.current)
                .chain(state.retired.iter().map(|(g, _)| g))
                .map(|g| g.name.clone())
                .collect();
            (state.current.clone(), names)
        };
        if same_content(projection.root(), &old.dir) {
            return Update {
                changed: false,
                generation: old.name.clone(),
                old_generation: old.name.clone(),
                old_dir: old.dir.clone(),
                old_data_link: old.data_link.ino,
                new_dir: old.dir.clone(),
                added: Vec::new(),
                removed: Vec::new(),
                replaced: Vec::new(),
            };
        }
        // Built outside the lock: readers never wait for a build.
        let new = Arc::new(build(&self.next_ino, projection, &old_names));
        let mut state = self.state.write().unwrap_or_else(|p| p.into_inner());
        let names: Vec<String> = new.dir.children().into_iter().flatten().map(|(n, _)| n.clone()).collect();
        let mut added = Vec::new();
        let mut replaced = Vec::new();
        let mut links = BTreeMap::new();
        for name in &names {
            match state.links.get(name) {
                Some(l) if l.gid == new.layout.gid => {
                    links.insert(name.clone(), l.clone());
                }
                Some(l) => {
                    replaced.push((name.clone(), l.ino));
                    links.insert(name.clone(), link(&self.next_ino, name, &new));
                }
                None => {
                    added.push(name.clone());
                    links.insert(name.clone(), link(&self.next_ino, name, &new));
                }
            }
        }
        let removed =
            state.links.iter().filter(|(n, _)| !links.contains_key(*n)).map(|(n, l)| (n.clone(), l.ino)).collect();
        let now = Instant::now();
        state.retired.retain(|(_, at)| now.duration_since(*at) < RETIRED_GRACE);
        state.retired.push((old.clone(), now));
        state.current = new.clone();
        state.links = links;
        drop(state);
        Update {
            changed: true,
            generation: new.name.clone(),
            old_generation: old.name.clone(),
            old_dir: old.dir.clone(),
            old_data_link: old.data_link.ino,
            new_dir: new.dir.clone(),
            added,
            removed,
            replaced,
        }
    }

    /// The current generation's directory name.
    pub fn generation(&self) -> String {
        self.read().current.name.clone()
    }

    /// The volume root.
    pub fn root_attr(&self) -> Attr {
        let state = self.read();
        let g = &state.current;
        Attr {
            ino: ROOT_INO,
            kind: Kind::Dir,
            perm: g.layout.root_mode,
            uid: 0,
            gid: g.layout.gid,
            size: DIR_SIZE,
            nlink: 3,
            mtime: g.mtime,
        }
    }

    /// A name in the volume root.
    pub fn lookup_root(&self, name: &str) -> Option<Found> {
        let state = self.read();
        let current = &state.current;
        if name == DATA_LINK {
            return Some(Found { node: current.data_link.clone(), stable: false });
        }
        if name == current.name {
            return Some(Found { node: current.dir.clone(), stable: true });
        }
        if let Some(l) = state.links.get(name) {
            return Some(Found { node: l.clone(), stable: true });
        }
        let now = Instant::now();
        state
            .retired
            .iter()
            .find(|(g, at)| g.name == name && now.duration_since(*at) < RETIRED_GRACE)
            .map(|(g, _)| Found { node: g.dir.clone(), stable: false })
    }

    /// The volume root's entries, in name order.
    pub fn list_root(&self) -> Vec<(String, Arc<Node>)> {
        let state = self.read();
        let current = &state.current;
        let mut list =
            vec![(current.name.clone(), current.dir.clone()), (DATA_LINK.to_string(), current.data_link.clone())];
        list.extend(state.links.iter().map(|(n, l)| (n.clone(), l.clone())));
        list.sort_by(|a, b| a.0.cmp(&b.0));
        list
    }

    /// The current generation's directory (the payload).
    pub fn payload(&self) -> Arc<Node> {
        self.read().current.dir.clone()
    }

    /// Bytes in files and number of nodes of the current generation.
    pub fn usage(&self) -> (u64, u64) {
        let state = self.read();
        (state.current.bytes, state.current.nodes)
    }
}

/// Whether a projection's payload holds the same paths and bytes as a generation's directory.
fn same_content(dir: &Dir, node: &Node) -> bool {
    let Some(children) = node.children() else { return false };
    dir.entries.len() == children.len()
        && dir.entries.iter().zip(children).all(|((na, a), (nb, b))| {
            na == nb
                && match (a, b.content()) {
                    (super::Node::File(f), Some(c)) => f.content.bytes() == c.bytes(),
                    (super::Node::Dir(d), None) => same_content(d, b),
                    _ => false,
                }
        })
}

fn next(inos: &AtomicU64) -> u64 {
    inos.fetch_add(1, Ordering::Relaxed)
}

/// The visible symlink `name -> ..data/name`.
fn link(inos: &AtomicU64, name: &str, generation: &Generation) -> Arc<Node> {
    Arc::new(Node {
        ino: next(inos),
        perm: 0o777,
        uid: 0,
        gid: generation.layout.gid,
        mtime: generation.mtime,
        body: Body::Symlink(format!("{DATA_LINK}/{name}")),
    })
}

/// A generation with a directory name none of `taken` has.
fn build(inos: &AtomicU64, projection: &Projection, taken: &[String]) -> Generation {
    let mtime = SystemTime::now();
    let layout = projection.layout();
    let mut bytes = 0;
    let mut nodes = 0;
    let dir = build_dir(inos, projection.root(), layout.dir_mode, mtime, &mut bytes, &mut nodes);
    let stamp = utc_stamp(mtime);
    let random = RandomState::new();
    let name = (0u64..)
        .map(|i| format!("..{stamp}.{}", random.hash_one(i) as u32))
        .find(|n| !taken.contains(n))
        .unwrap_or_default();
    let data_link = Arc::new(Node {
        ino: next(inos),
        perm: 0o777,
        uid: 0,
        gid: layout.gid,
        mtime,
        body: Body::Symlink(name.clone()),
    });
    Generation { name, data_link, dir, layout, mtime, bytes, nodes }
}

fn build_dir(inos: &AtomicU64, dir: &Dir, mode: u32, mtime: SystemTime, bytes: &mut u64, nodes: &mut u64) -> Arc<Node> {
    let ino = next(inos);
    *nodes += 1;
    let children = dir
        .entries
        .iter()
        .map(|(name, node)| {
            let child = match node {
                super::Node::Dir(d) => build_dir(inos, d, d.mode, mtime, bytes, nodes),
                super::Node::File(f) => {
                    *bytes += f.content.len() as u64;
                    *nodes += 1;
                    Arc::new(Node {
                        ino: next(inos),
                        perm: f.mode,
                        uid: f.uid,
                        gid: f.gid,
                        mtime,
                        body: Body::File(f.content.clone()),
                    })
                }
            };
            (name.clone(), child)
        })
        .collect();
    Arc::new(Node { ino, perm: mode, uid: dir.uid, gid: dir.gid, mtime, body: Body::Dir(children) })
}

/// `YYYY_MM_DD_HH_MM_SS` in UTC, the kubelet's layout for its directory names.
pub fn utc_stamp(t: SystemTime) -> String {
    let [year, month, day, h, m, sec] = crate::meta::Timestamp::from(t).utc();
    format!("{year:04}_{month:02}_{day:02}_{h:02}_{m:02}_{sec:02}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_are_utc_in_kubelet_layout() {
        assert_eq!(utc_stamp(SystemTime::UNIX_EPOCH), "1970_01_01_00_00_00");
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_454_339_045);
        assert_eq!(utc_stamp(t), "2016_02_01_15_04_05");
        let leap = SystemTime::UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(utc_stamp(leap), "2000_02_29_00_00_00");
    }
}
