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
use fuser::{
    Errno, FileAttr, FileHandle, FileType, FopenFlags, Generation, INodeNo, InitFlags, KernelConfig, LockOwner,
    Notifier, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry,
    ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};

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
    notifier: Notifier,
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

enum Handle {
    File(Arc<Node>),
    Dir(Vec<(INodeNo, FileType, String)>),
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

fn file_type(kind: Kind) -> FileType {
    match kind {
        Kind::Dir => FileType::Directory,
        Kind::File => FileType::RegularFile,
        Kind::Symlink => FileType::Symlink,
    }
}

fn file_attr(a: &Attr, ino: INodeNo) -> FileAttr {
    FileAttr {
        ino,
        size: a.size,
        blocks: a.size.div_ceil(512),
        atime: a.mtime,
        mtime: a.mtime,
        ctime: a.mtime,
        crtime: a.mtime,
        kind: file_type(a.kind),
        perm: (a.perm & 0o7777) as u16,
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

    /// Mounts the tree at `mountpoint`, read-only, and serves it on worker threads until
    /// unmounted. With `subpath`, the mount shows that directory or file of the payload
    /// instead, following `..data` on every request, so it sees updates; a file needs a
    /// regular file as mountpoint, a directory a directory.
    pub fn mount(mut self, mountpoint: &Path, subpath: Option<&str>) -> io::Result<fuser::BackgroundSession> {
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
        use fuser::MountOption as O;
        let mut config = fuser::Config::default();
        config.mount_options = vec![
            O::FSName("volfs:projected".into()),
            O::Subtype("volfs".into()),
            O::DefaultPermissions,
            O::NoDev,
            O::NoSuid,
            O::RO,
        ];
        config.acl = fuser::SessionACL::All;
        config.n_threads = Some(4);
        config.clone_fd = true;
        let (shared, id, shows) = (self.shared.clone(), self.id, self.shows.clone());
        let session = fuser::spawn_mount(self, mountpoint, &config)?;
        shared.mounts.lock().unwrap_or_else(|p| p.into_inner()).push(Mounted {
            id,
            shows,
            notifier: session.notifier(),
        });
        Ok(session)
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
    fn node(&self, ino: INodeNo) -> Result<Arc<Node>, Error> {
        self.known.get(&ino.0).map(|k| k.node.clone()).ok_or_else(|| Error::NotFound(format!("inode {}", ino.0)))
    }

    /// Replies with `node` and counts the kernel's new reference to it.
    fn entry(&self, reply: ReplyEntry, node: Arc<Node>, entry_ttl: Duration) {
        let attr = node.attr();
        self.known.entry(node.ino()).and_modify(|k| k.lookups += 1).or_insert(Known { node, lookups: 1 });
        reply.entry_with_ttls(&TTL, &entry_ttl, &file_attr(&attr, INodeNo(attr.ino)), Generation(0));
    }

    fn new_fh(&self, handle: Handle) -> FileHandle {
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        self.handles.insert(fh, handle);
        FileHandle(fh)
    }

    /// A directory's entries as `readdir` returns them.
    fn listing(&self, ino: INodeNo) -> Result<Vec<(INodeNo, FileType, String)>, Error> {
        let children: Vec<(String, Arc<Node>)> = if ino == INodeNo::ROOT {
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
            let children = node.children().ok_or_else(|| Error::NotDir(format!("inode {}", ino.0)))?;
            children.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
        };
        let mut list =
            vec![(ino, FileType::Directory, ".".to_string()), (INodeNo::ROOT, FileType::Directory, "..".into())];
        list.extend(children.into_iter().map(|(name, n)| (INodeNo(n.ino()), file_type(n.kind()), name)));
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
    let root = INodeNo::ROOT;
    let entry = |name: &str| {
        if let Err(e) = m.notifier.inval_entry(root, OsStr::new(name)) {
            tracing::debug!(mount = m.id, name, error = %e, "invalidation not delivered");
        }
    };
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
    if let Err(e) = m.notifier.inval_inode(root, offset, 0) {
        tracing::debug!(mount = m.id, error = %e, "invalidation not delivered");
    }
}

impl fuser::Filesystem for ProjectedFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> io::Result<()> {
        // DIRECT_IO_ALLOW_MMAP: a file mount's root is opened with direct I/O and may be mmapped.
        let wanted = InitFlags::FUSE_PARALLEL_DIROPS | InitFlags::FUSE_DIRECT_IO_ALLOW_MMAP;
        let _ = config.add_capabilities(wanted & config.capabilities());
        Ok(())
    }

    fn destroy(&mut self) {
        let mut mounts = self.shared.mounts.lock().unwrap_or_else(|p| p.into_inner());
        mounts.retain(|m| m.id != self.id);
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let Some(name) = name.to_str() else { return fail!(reply, "lookup", Error::NotFound(format!("{name:?}"))) };
        if parent == INodeNo::ROOT {
            let found = match self.shows {
                Shows::Tree => {
                    self.shared.tree.lookup_root(name).map(|f| (f.node, if f.stable { TTL } else { Duration::ZERO }))
                }
                Shows::Dir(_) => self.subpath_node().and_then(|r| r.child(name).cloned()).map(|n| (n, Duration::ZERO)),
                Shows::File(_) => {
                    return fail!(reply, "lookup", Error::NotDir("the root of a mount of one file".into()))
                }
            };
            // Names in the root come and go with updates: no negative entry.
            return match found {
                Some((node, ttl)) => self.entry(reply, node, ttl),
                None => fail!(reply, "lookup", Error::NotFound(name.to_string())),
            };
        }
        let parent = match self.node(parent) {
            Ok(p) => p,
            Err(e) => return fail!(reply, "lookup", e),
        };
        let Some(children) = parent.children() else {
            return fail!(reply, "lookup", Error::NotDir(format!("inode {}", parent.ino())));
        };
        match children.get(name) {
            Some(node) => self.entry(reply, node.clone(), TTL),
            // A generation's directories never change: the kernel may remember a missing name.
            None => reply.entry(&TTL, &file_attr(&absent_root(Kind::File), INodeNo(0)), Generation(0)),
        }
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        if let dashmap::Entry::Occupied(mut k) = self.known.entry(ino.0) {
            let known = k.get_mut();
            known.lookups = known.lookups.saturating_sub(nlookup);
            if known.lookups == 0 {
                k.remove();
            }
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, fh: Option<FileHandle>, reply: ReplyAttr) {
        let open = fh.and_then(|fh| match self.handles.get(&fh.0).as_deref() {
            Some(Handle::File(node)) => Some(node.clone()),
            _ => None,
        });
        if ino == INodeNo::ROOT {
            let attr = match self.shows {
                Shows::Tree => return reply.attr(&ROOT_ATTR_TTL, &file_attr(&self.shared.tree.root_attr(), ino)),
                _ => open.or_else(|| self.subpath_node()).map_or_else(|| absent_root(self.root_kind()), |n| n.attr()),
            };
            return reply.attr(&Duration::ZERO, &file_attr(&attr, ino));
        }
        match open.map_or_else(|| self.node(ino), Ok) {
            Ok(node) => reply.attr(&TTL, &file_attr(&node.attr(), ino)),
            Err(e) => fail!(reply, "getattr", e),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match self.node(ino) {
            Ok(node) => match node.target() {
                Some(target) => reply.data(target.as_bytes()),
                None => fail!(reply, "readlink", Error::Invalid(format!("inode {} is not a symlink", ino.0))),
            },
            Err(e) => fail!(reply, "readlink", e),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        if flags.0 & libc::O_ACCMODE != libc::O_RDONLY || flags.0 & libc::O_TRUNC != 0 {
            return fail!(reply, "open", read_only("open for writing"));
        }
        let (node, open_flags) = if ino == INodeNo::ROOT {
            match self.shows {
                Shows::File(_) => match self.subpath_node() {
                    // The root inode shows each generation's file in turn: no shared page cache.
                    Some(node) => (node, FopenFlags::FOPEN_DIRECT_IO),
                    None => return fail!(reply, "open", Error::NotFound("the file this mount shows".into())),
                },
                _ => return fail!(reply, "open", Error::IsDir("the root".into())),
            }
        } else {
            match self.node(ino) {
                // A node's bytes never change: keep the page cache across opens.
                Ok(node) => (node, FopenFlags::FOPEN_KEEP_CACHE),
                Err(e) => return fail!(reply, "open", e),
            }
        };
        if node.content().is_none() {
            return fail!(reply, "open", Error::IsDir(format!("inode {}", ino.0)));
        }
        let fh = self.new_fh(Handle::File(node));
        reply.opened(fh, open_flags | FopenFlags::FOPEN_NOFLUSH);
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let Some(handle) = self.handles.get(&fh.0) else { return fail!(reply, "read", Error::BadHandle(fh.0)) };
        let Handle::File(node) = &*handle else {
            return fail!(reply, "read", Error::IsDir(format!("handle {}", fh.0)));
        };
        let bytes = node.content().map(|c| c.bytes()).unwrap_or_default();
        let start = usize::try_from(offset).unwrap_or(usize::MAX).min(bytes.len());
        let end = start.saturating_add(size as usize).min(bytes.len());
        reply.data(&bytes[start..end]);
    }

    fn flush(&self, _req: &Request, _ino: INodeNo, _fh: FileHandle, _lock_owner: LockOwner, reply: ReplyEmpty) {
        reply.ok();
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.handles.remove(&fh.0);
        reply.ok();
    }

    fn fsync(&self, _req: &Request, _ino: INodeNo, _fh: FileHandle, _datasync: bool, reply: ReplyEmpty) {
        reply.ok();
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.listing(ino) {
            Ok(list) => reply.opened(self.new_fh(Handle::Dir(list)), FopenFlags::empty()),
            Err(e) => fail!(reply, "opendir", e),
        }
    }

    fn readdir(&self, _req: &Request, _ino: INodeNo, fh: FileHandle, offset: u64, mut reply: ReplyDirectory) {
        let Some(handle) = self.handles.get(&fh.0) else { return fail!(reply, "readdir", Error::BadHandle(fh.0)) };
        let Handle::Dir(list) = &*handle else {
            return fail!(reply, "readdir", Error::NotDir(format!("handle {}", fh.0)));
        };
        for (i, (ino, kind, name)) in list.iter().enumerate().skip(offset as usize) {
            if reply.add(*ino, i as u64 + 1, *kind, name) {
                break;
            }
        }
        reply.ok();
    }

    fn releasedir(&self, _req: &Request, _ino: INodeNo, fh: FileHandle, _flags: OpenFlags, reply: ReplyEmpty) {
        self.handles.remove(&fh.0);
        reply.ok();
    }

    fn fsyncdir(&self, _req: &Request, _ino: INodeNo, _fh: FileHandle, _datasync: bool, reply: ReplyEmpty) {
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let (bytes, nodes) = self.shared.tree.usage();
        reply.statfs(bytes.div_ceil(BLOCK), 0, 0, nodes, 0, BLOCK as u32, 255, BLOCK as u32);
    }

    fn getxattr(&self, _req: &Request, _ino: INodeNo, _name: &OsStr, _size: u32, reply: ReplyXattr) {
        fail!(reply, "getxattr", Error::NoAttr)
    }

    fn listxattr(&self, _req: &Request, _ino: INodeNo, size: u32, reply: ReplyXattr) {
        if size == 0 {
            reply.size(0);
        } else {
            reply.data(&[]);
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        _size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<std::time::SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<std::time::SystemTime>,
        _chgtime: Option<std::time::SystemTime>,
        _bkuptime: Option<std::time::SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        fail!(reply, "setattr", read_only("setattr"))
    }

    fn mknod(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _mode: u32,
        _umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        fail!(reply, "mknod", read_only("mknod"))
    }

    fn mkdir(&self, _req: &Request, _parent: INodeNo, _name: &OsStr, _mode: u32, _umask: u32, reply: ReplyEntry) {
        fail!(reply, "mkdir", read_only("mkdir"))
    }

    fn unlink(&self, _req: &Request, _parent: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        fail!(reply, "unlink", read_only("unlink"))
    }

    fn rmdir(&self, _req: &Request, _parent: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        fail!(reply, "rmdir", read_only("rmdir"))
    }

    fn symlink(&self, _req: &Request, _parent: INodeNo, _link_name: &OsStr, _target: &Path, reply: ReplyEntry) {
        fail!(reply, "symlink", read_only("symlink"))
    }

    fn rename(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _newparent: INodeNo,
        _newname: &OsStr,
        _flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        fail!(reply, "rename", read_only("rename"))
    }

    fn link(&self, _req: &Request, _ino: INodeNo, _newparent: INodeNo, _newname: &OsStr, reply: ReplyEntry) {
        fail!(reply, "link", read_only("link"))
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _offset: u64,
        _data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        fail!(reply, "write", read_only("write"))
    }

    fn setxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _value: &[u8],
        _flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        fail!(reply, "setxattr", read_only("setxattr"))
    }

    fn removexattr(&self, _req: &Request, _ino: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        fail!(reply, "removexattr", read_only("removexattr"))
    }

    fn create(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _mode: u32,
        _umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        fail!(reply, "create", read_only("create"))
    }

    fn fallocate(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _offset: u64,
        _length: u64,
        _mode: i32,
        reply: ReplyEmpty,
    ) {
        fail!(reply, "fallocate", read_only("fallocate"))
    }

    fn copy_file_range(
        &self,
        _req: &Request,
        _ino_in: INodeNo,
        _fh_in: FileHandle,
        _offset_in: u64,
        _ino_out: INodeNo,
        _fh_out: FileHandle,
        _offset_out: u64,
        _len: u64,
        _flags: fuser::CopyFileRangeFlags,
        reply: ReplyWrite,
    ) {
        fail!(reply, "copy_file_range", read_only("copy_file_range"))
    }
}
