//! The FUSE adapter for projected trees: a read-only filesystem in memory serving the
//! generations of a `projected::live::Tree`. Each callback asks the tree once and replies; every
//! write-ish operation fails with EROFS.
//!
//! What the kernel may cache follows from what can change: nodes of a generation never change,
//! so their names and attributes are cached long; `..data`, a retired directory, and the names
//! under the root of a subPath mount are looked up again every time, so a reader sees an
//! update as soon as it is swapped in. Symlink targets are never cached (FUSE_CACHE_SYMLINKS is
//! not requested). After an update the kernel is told to drop what changed in the root.

use std::ffi::OsStr;
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dashmap::DashMap;

use super::session::{Connection, Handler, Sessions};
use super::wire::abi::{self, EntryOut, Kstatfs};
use super::wire::reply;
use super::wire::request::{Layout, Operation};
use super::{attr_out, entry_out, parse_request, respond, Answer};
use crate::error::Error;
use crate::projected::live::{Attr, Kind, Node, Tree, Update, DATA_LINK, ROOT_INO};
use crate::projected::Projection;

/// How long the kernel may keep what never changes.
const TTL: Duration = Duration::from_secs(3600);
/// The volume root's attributes change on update (mtime); they are also invalidated then.
const ROOT_ATTR_TTL: Duration = Duration::from_secs(1);
const BLOCK: u64 = 4096;

/// What a mount shows.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Shows {
    /// The whole tree with the kubelet's layout.
    Tree,
    /// A directory of the payload, found through `..data` on every request to the mount's root.
    Dir(String),
    /// A file of the payload, likewise.
    File(String),
}

/// A mount of the tree, for telling its kernel what an update changed.
struct Mounted {
    id: u64,
    shows: Shows,
    connection: Arc<Connection>,
}

struct Shared {
    tree: Tree,
    mounts: Mutex<Vec<Mounted>>,
    next_id: AtomicU64,
}

/// An inode the kernel holds, and how many lookups it has not yet forgotten.
struct Known {
    node: Arc<Node>,
    lookups: u64,
}

/// The kernel's name for the mount's root.
const ROOT: u64 = 1;

/// A directory entry as readdir returns it: inode, type (`abi` dirent kind) and name.
type Listed = (u64, u32, String);

enum Handle {
    File(Arc<Node>),
    Dir(Vec<Listed>),
}

/// One mount of a projected tree.
pub struct ProjectedFs {
    shared: Arc<Shared>,
    id: u64,
    shows: Shows,
    known: DashMap<u64, Known>,
    handles: DashMap<u64, Handle>,
    next_fh: AtomicU64,
}

/// Swaps new generations into a projected tree and tells its mounts.
#[derive(Clone)]
pub struct ProjectedUpdater {
    shared: Arc<Shared>,
}

fn read_only(op: &str) -> Error {
    Error::ReadOnly(format!("{op}: projected volumes are read-only"))
}

fn mode_type(kind: Kind) -> u32 {
    match kind {
        Kind::Dir => libc::S_IFDIR,
        Kind::File => libc::S_IFREG,
        Kind::Symlink => libc::S_IFLNK,
    }
}

fn wire_attr(a: &Attr, ino: u64) -> abi::Attr {
    let since = a.mtime.duration_since(std::time::SystemTime::UNIX_EPOCH).unwrap_or_default();
    let (secs, nanos) = (since.as_secs(), since.subsec_nanos());
    abi::Attr {
        ino,
        size: a.size,
        blocks: a.size.div_ceil(512),
        atime: secs,
        mtime: secs,
        ctime: secs,
        atimensec: nanos,
        mtimensec: nanos,
        ctimensec: nanos,
        mode: mode_type(a.kind) | (a.perm & 0o7777),
        nlink: a.nlink,
        uid: a.uid,
        gid: a.gid,
        rdev: 0,
        blksize: BLOCK as u32,
        flags: 0,
    }
}

/// The attributes of a subPath mount's root while the current generation lacks its subpath:
/// an empty directory, or a file that cannot be opened.
fn absent_root(kind: Kind) -> Attr {
    let (perm, nlink, size) = if kind == Kind::Dir { (0o755, 2, BLOCK) } else { (0, 1, 0) };
    Attr { ino: ROOT_INO, kind, perm, uid: 0, gid: 0, size, nlink, mtime: std::time::SystemTime::UNIX_EPOCH }
}

impl ProjectedFs {
    /// A filesystem serving `projection`, and the updater that replaces it.
    pub fn new(projection: Projection) -> (ProjectedFs, ProjectedUpdater) {
        let shared = Arc::new(Shared {
            tree: Tree::new(&projection),
            mounts: Mutex::new(Vec::new()),
            next_id: AtomicU64::new(1),
        });
        let updater = ProjectedUpdater { shared: shared.clone() };
        (ProjectedFs::over(shared), updater)
    }

    fn over(shared: Arc<Shared>) -> ProjectedFs {
        let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
        ProjectedFs {
            shared,
            id,
            shows: Shows::Tree,
            known: DashMap::new(),
            handles: DashMap::new(),
            next_fh: AtomicU64::new(1),
        }
    }

    /// Mounts the tree at `mountpoint`, read-only, served by `sessions` until unmounted. With
    /// `subpath`, the mount shows that directory or file of the payload instead, following
    /// `..data` on every request, so it sees updates; a file needs a regular file as
    /// mountpoint, a directory a directory.
    pub fn mount(
        mut self,
        sessions: &Sessions,
        mountpoint: &Path,
        subpath: Option<&str>,
    ) -> io::Result<Arc<Connection>> {
        self.shows = match subpath {
            None => Shows::Tree,
            Some(text) => {
                let path = crate::projected::check_subpath(text)
                    .map_err(|m| io::Error::new(io::ErrorKind::InvalidInput, format!("subpath {text:?}: {m}")))?;
                match self.shared.tree.payload().resolve(&path).map(|n| n.kind()) {
                    Some(Kind::Dir) => Shows::Dir(path),
                    Some(Kind::File) => Shows::File(path),
                    _ => {
                        return Err(io::Error::new(
                            io::ErrorKind::NotFound,
                            format!("subpath {text:?} is not in the projected tree"),
                        ))
                    }
                }
            }
        };
        let meta = std::fs::metadata(mountpoint)?;
        match &self.shows {
            Shows::File(p) if !meta.is_file() => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "{p:?} is a file: mounting it needs a regular file as mountpoint, not {}",
                        mountpoint.display()
                    ),
                ))
            }
            Shows::Tree | Shows::Dir(_) if !meta.is_dir() => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("a projected directory needs a directory as mountpoint, not {}", mountpoint.display()),
                ))
            }
            _ => {}
        }
        use rustix::mount::MountFlags;
        let flags = MountFlags::RDONLY | MountFlags::NODEV | MountFlags::NOSUID;
        let device = super::session::mount(mountpoint, "volfs:projected", flags, "default_permissions,allow_other")?;
        let (shared, id, shows) = (self.shared.clone(), self.id, self.shows.clone());
        let connection = sessions.add(device, Arc::new(self))?;
        shared.mounts.lock().unwrap_or_else(|p| p.into_inner()).push(Mounted {
            id,
            shows,
            connection: connection.clone(),
        });
        Ok(connection)
    }

    /// The current node at this mount's subpath, if it has one and it is still there
    /// with the same kind.
    fn subpath_node(&self) -> Option<Arc<Node>> {
        let (path, kind) = match &self.shows {
            Shows::Tree => return None,
            Shows::Dir(p) => (p, Kind::Dir),
            Shows::File(p) => (p, Kind::File),
        };
        self.shared.tree.payload().resolve(path).filter(|n| n.kind() == kind)
    }

    fn root_kind(&self) -> Kind {
        if matches!(self.shows, Shows::File(_)) {
            Kind::File
        } else {
            Kind::Dir
        }
    }

    /// A node the kernel holds.
    fn node(&self, ino: u64) -> Result<Arc<Node>, Error> {
        self.known.get(&ino).map(|k| k.node.clone()).ok_or_else(|| Error::NotFound(format!("inode {ino}")))
    }

    /// The entry of `node`, counting the kernel's new reference to it.
    fn entry(&self, node: Arc<Node>, entry_ttl: Duration) -> EntryOut {
        let attr = node.attr();
        self.known.entry(node.ino()).and_modify(|k| k.lookups += 1).or_insert(Known { node, lookups: 1 });
        entry_out(attr.ino, entry_ttl, TTL, wire_attr(&attr, attr.ino))
    }

    fn new_fh(&self, handle: Handle) -> u64 {
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        self.handles.insert(fh, handle);
        fh
    }

    /// A directory's entries as `readdir` returns them.
    fn listing(&self, ino: u64) -> Result<Vec<Listed>, Error> {
        let children: Vec<(String, Arc<Node>)> = if ino == ROOT {
            match self.shows {
                Shows::Tree => self.shared.tree.list_root(),
                Shows::Dir(_) => self
                    .subpath_node()
                    .and_then(|n| n.children().map(|c| c.iter().map(|(k, v)| (k.clone(), v.clone())).collect()))
                    .unwrap_or_default(),
                Shows::File(_) => return Err(Error::NotDir("the root of a mount of one file".into())),
            }
        } else {
            let node = self.node(ino)?;
            let children = node.children().ok_or_else(|| Error::NotDir(format!("inode {ino}")))?;
            children.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
        };
        let dir = reply::dirent_kind(libc::S_IFDIR);
        let mut list = vec![(ino, dir, ".".to_string()), (ROOT, dir, "..".into())];
        list.extend(children.into_iter().map(|(name, n)| (n.ino(), reply::dirent_kind(mode_type(n.kind())), name)));
        Ok(list)
    }
}

impl ProjectedUpdater {
    /// Swaps in a generation built from `projection` in one step and tells every mount what
    /// changed. A projection with the current content keeps the current generation.
    pub fn update(&self, projection: Projection) -> Update {
        let update = self.shared.tree.update(&projection);
        if update.changed {
            tracing::info!(generation = %update.generation, "projected tree updated");
            let mounts = self.shared.mounts.lock().unwrap_or_else(|p| p.into_inner());
            for m in mounts.iter() {
                invalidate(m, &update);
            }
        }
        update
    }

    /// The name of the current generation's directory (`..data`'s target).
    pub fn generation(&self) -> String {
        self.shared.tree.generation()
    }

    /// Another filesystem over the same tree, to mount elsewhere (a subPath mount, say).
    pub fn another_mount(&self) -> ProjectedFs {
        ProjectedFs::over(self.shared.clone())
    }
}

/// Tells one mount's kernel to drop what an update changed in its root.
fn invalidate(m: &Mounted, update: &Update) {
    let notify = |what: &str, bytes: Vec<u8>| {
        if let Err(e) = m.connection.send(&[io::IoSlice::new(&bytes)]) {
            tracing::debug!(mount = m.id, what, error = %e, "invalidation not delivered");
        }
    };
    let entry = |name: &str| notify(name, reply::notify_inval_entry(ROOT, name.as_bytes(), 0));
    match &m.shows {
        Shows::Tree => {
            entry(&update.old_generation);
            entry(DATA_LINK);
            let names = update.added.iter().chain(update.removed.iter().map(|(n, _)| n));
            for name in names.chain(update.replaced.iter().map(|(n, _)| n)) {
                entry(name);
            }
        }
        Shows::Dir(path) => {
            let mut names: Vec<String> = [&update.old_dir, &update.new_dir]
                .iter()
                .filter_map(|d| d.resolve(path))
                .flat_map(|n| n.children().map(|c| c.keys().cloned().collect::<Vec<_>>()).unwrap_or_default())
                .collect();
            names.sort();
            names.dedup();
            for name in &names {
                entry(name);
            }
        }
        Shows::File(_) => {}
    }
    // Attributes; for a mount of one file its cached pages too.
    let offset = if matches!(m.shows, Shows::File(_)) { 0 } else { -1 };
    notify("the root", reply::notify_inval_inode(ROOT, offset, 0));
}

impl Handler for ProjectedFs {
    fn request(&self, conn: &Arc<Connection>, bytes: &[u8]) {
        let Some(req) = parse_request(conn, bytes, Layout::default()) else { return };
        let (unique, ino, name) = (req.unique(), req.header.nodeid, req.op.name());
        let answer = match req.op {
            Operation::Forget(f) => {
                self.forget(ino, f.nlookup);
                Ok(Answer::Nothing)
            }
            Operation::BatchForget(list) => {
                list.iter().for_each(|f| self.forget(f.nodeid, f.nlookup));
                Ok(Answer::Nothing)
            }
            Operation::Interrupt(_) => Ok(Answer::Nothing),
            op => self.answer(unique, ino, op).map(Answer::Bytes),
        };
        respond(conn, unique, &name, answer);
    }

    fn ended(&self, _conn: &Connection) {
        let mut mounts = self.shared.mounts.lock().unwrap_or_else(|p| p.into_inner());
        mounts.retain(|m| m.id != self.id);
    }
}

impl ProjectedFs {
    /// The answer to one request.
    fn answer(&self, unique: u64, ino: u64, op: Operation<'_>) -> Result<Vec<u8>, Error> {
        Ok(match op {
            Operation::Init(init) => {
                use abi::init_flags::{ASYNC_READ, DIRECT_IO_ALLOW_MMAP, PARALLEL_DIROPS};
                // DIRECT_IO_ALLOW_MMAP: a file mount's root is opened with direct I/O and may be mmapped.
                let ours = reply::InitConfig {
                    wanted: ASYNC_READ | PARALLEL_DIROPS | DIRECT_IO_ALLOW_MMAP,
                    max_write: 1 << 20,
                    max_readahead: 1 << 20,
                    time_gran: 1,
                    ..Default::default()
                };
                match reply::Negotiated::new(&init, &ours) {
                    Ok(agreed) => reply::init(unique, &agreed),
                    Err(reply::InitError::NewerMajor(_)) => reply::init_major_only(unique),
                    Err(e) => return Err(Error::Invalid(e.to_string())),
                }
            }
            Operation::Destroy => reply::empty(unique),
            Operation::Lookup { name } => self.lookup(unique, ino, name)?,
            Operation::Getattr(arg) => {
                let fh = (arg.getattr_flags & abi::GETATTR_FH != 0).then_some(arg.fh);
                let (ttl, attr) = self.getattr(ino, fh)?;
                reply::attr(unique, &attr_out(ttl, attr))
            }
            Operation::Readlink => {
                let node = self.node(ino)?;
                let target = node.target().ok_or_else(|| Error::Invalid(format!("inode {ino} is not a symlink")))?;
                reply::readlink(unique, target.as_bytes())
            }
            Operation::Open(arg) => {
                let (fh, flags) = self.open(ino, arg.flags as i32)?;
                reply::open(unique, fh, flags | abi::fopen::NOFLUSH, 0)
            }
            Operation::Read(arg) => {
                let handle = self.handles.get(&arg.fh).ok_or(Error::BadHandle(arg.fh))?;
                let Handle::File(node) = &*handle else { return Err(Error::IsDir(format!("handle {}", arg.fh))) };
                let bytes = node.content().map(|c| c.bytes()).unwrap_or_default();
                let start = usize::try_from(arg.offset).unwrap_or(usize::MAX).min(bytes.len());
                let end = start.saturating_add(arg.size as usize).min(bytes.len());
                reply::data(unique, &bytes[start..end])
            }
            Operation::Flush(_) | Operation::Fsync(_) | Operation::Fsyncdir(_) => reply::empty(unique),
            Operation::Release(arg) | Operation::Releasedir(arg) => {
                self.handles.remove(&arg.fh);
                reply::empty(unique)
            }
            Operation::Opendir(_) => reply::open(unique, self.new_fh(Handle::Dir(self.listing(ino)?)), 0, 0),
            Operation::Readdir(arg) => {
                let handle = self.handles.get(&arg.fh).ok_or(Error::BadHandle(arg.fh))?;
                let Handle::Dir(list) = &*handle else { return Err(Error::NotDir(format!("handle {}", arg.fh))) };
                let mut buffer = reply::DirBuffer::new(unique, arg.size);
                for (i, (ino, kind, name)) in list.iter().enumerate().skip(arg.offset as usize) {
                    if buffer.add(*ino, i as u64 + 1, *kind, name.as_bytes()) {
                        break;
                    }
                }
                buffer.finish()
            }
            Operation::Statfs => {
                let (bytes, nodes) = self.shared.tree.usage();
                let bsize = BLOCK as u32;
                let st = Kstatfs {
                    blocks: bytes.div_ceil(BLOCK),
                    files: nodes,
                    bsize,
                    namelen: 255,
                    frsize: bsize,
                    ..Kstatfs::default()
                };
                reply::statfs(unique, &st)
            }
            Operation::Getxattr { .. } => return Err(Error::NoAttr),
            Operation::Listxattr(arg) if arg.size == 0 => reply::xattr_size(unique, 0),
            Operation::Listxattr(_) => reply::xattr_data(unique, &[]),
            Operation::Setattr(_) => return Err(read_only("setattr")),
            Operation::Symlink { .. }
            | Operation::Mknod { .. }
            | Operation::Mkdir { .. }
            | Operation::Unlink { .. }
            | Operation::Rmdir { .. }
            | Operation::Rename { .. }
            | Operation::Rename2 { .. }
            | Operation::Link { .. }
            | Operation::Create { .. }
            | Operation::Tmpfile(_) => return Err(read_only("changing names")),
            Operation::Write { .. }
            | Operation::Setxattr { .. }
            | Operation::Removexattr { .. }
            | Operation::Fallocate(_)
            | Operation::CopyFileRange(_)
            | Operation::CopyFileRange64(_) => return Err(read_only("changing files")),
            op => return Err(Error::NotImplemented(op.name())),
        })
    }

    fn lookup(&self, unique: u64, parent: u64, name: &OsStr) -> Result<Vec<u8>, Error> {
        let Some(name) = name.to_str() else { return Err(Error::NotFound(format!("{name:?}"))) };
        if parent == ROOT {
            let found = match self.shows {
                Shows::Tree => {
                    self.shared.tree.lookup_root(name).map(|f| (f.node, if f.stable { TTL } else { Duration::ZERO }))
                }
                Shows::Dir(_) => self.subpath_node().and_then(|r| r.child(name).cloned()).map(|n| (n, Duration::ZERO)),
                Shows::File(_) => return Err(Error::NotDir("the root of a mount of one file".into())),
            };
            // Names in the root come and go with updates: no negative entry.
            let (node, ttl) = found.ok_or_else(|| Error::NotFound(name.to_string()))?;
            return Ok(reply::entry(unique, &self.entry(node, ttl)));
        }
        let parent = self.node(parent)?;
        let children = parent.children().ok_or_else(|| Error::NotDir(format!("inode {}", parent.ino())))?;
        Ok(match children.get(name) {
            Some(node) => reply::entry(unique, &self.entry(node.clone(), TTL)),
            // A generation's directories never change: the kernel may remember a missing name.
            None => reply::entry(unique, &entry_out(0, TTL, TTL, abi::Attr::default())),
        })
    }

    fn forget(&self, ino: u64, nlookup: u64) {
        if let dashmap::Entry::Occupied(mut k) = self.known.entry(ino) {
            let known = k.get_mut();
            known.lookups = known.lookups.saturating_sub(nlookup);
            if known.lookups == 0 {
                k.remove();
            }
        }
    }

    fn getattr(&self, ino: u64, fh: Option<u64>) -> Result<(Duration, abi::Attr), Error> {
        let open = fh.and_then(|fh| match self.handles.get(&fh).as_deref() {
            Some(Handle::File(node)) => Some(node.clone()),
            _ => None,
        });
        if ino == ROOT {
            return Ok(match self.shows {
                Shows::Tree => (ROOT_ATTR_TTL, wire_attr(&self.shared.tree.root_attr(), ROOT)),
                _ => {
                    let node = open.or_else(|| self.subpath_node());
                    let attr = node.map_or_else(|| absent_root(self.root_kind()), |n| n.attr());
                    (Duration::ZERO, wire_attr(&attr, ROOT))
                }
            });
        }
        let node = open.map_or_else(|| self.node(ino), Ok)?;
        Ok((TTL, wire_attr(&node.attr(), ino)))
    }

    fn open(&self, ino: u64, flags: i32) -> Result<(u64, u32), Error> {
        if flags & libc::O_ACCMODE != libc::O_RDONLY || flags & libc::O_TRUNC != 0 {
            return Err(read_only("open for writing"));
        }
        let (node, open_flags) = if ino == ROOT {
            match self.shows {
                Shows::File(_) => match self.subpath_node() {
                    // The root inode shows each generation's file in turn: no shared page cache.
                    Some(node) => (node, abi::fopen::DIRECT_IO),
                    None => return Err(Error::NotFound("the file this mount shows".into())),
                },
                _ => return Err(Error::IsDir("the root".into())),
            }
        } else {
            // A node's bytes never change: keep the page cache across opens.
            (self.node(ino)?, abi::fopen::KEEP_CACHE)
        };
        if node.content().is_none() {
            return Err(Error::IsDir(format!("inode {ino}")));
        }
        Ok((self.new_fh(Handle::File(node)), open_flags))
    }
}
