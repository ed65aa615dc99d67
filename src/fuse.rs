//! The FUSE adapter: one session per mounted volume. Each callback converts the kernel's
//! arguments, calls the filesystem core once and replies; errors become errnos through
//! `Error::errno`. The only module that knows fuser types or kernel flags.

/// Replies with the core's error, logged at a level that fits it and counted against the
/// request (`Answering`). Declared before the submodules so that every adapter uses it.
macro_rules! fail {
    ($reply:expr, $op:expr, $err:expr) => {{
        let err: Error = $err;
        let op = &$op;
        if err.is_routine() {
            tracing::debug!(op = $crate::fuse::Answering::op_name(op), error = %err);
        } else {
            tracing::warn!(op = $crate::fuse::Answering::op_name(op), error = %err);
        }
        $crate::fuse::Answering::failed(op, err.errno());
        $reply.error(Errno::from_i32(err.errno()))
    }};
}

/// What `fail!` needs of the request it answers: a name for the log, and where its failure
/// counts (nowhere, for a request named only by a string).
pub trait Answering {
    fn op_name(&self) -> &'static str;
    fn failed(&self, errno: i32);
}

impl Answering for &'static str {
    fn op_name(&self) -> &'static str {
        self
    }

    fn failed(&self, _errno: i32) {}
}

impl Answering for crate::stats::Request<'_> {
    fn op_name(&self) -> &'static str {
        self.op().name()
    }

    fn failed(&self, errno: i32) {
        crate::stats::Request::failed(self, errno)
    }
}

pub mod coherence;
pub mod projected;
pub mod session;
pub mod wire;

use std::ffi::OsStr;
use std::fs::File;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime};

use dashmap::DashMap;
use fuser::{
    BackingId, Errno, FileAttr, FileHandle, FileType, FopenFlags, Generation, INodeNo, InitFlags, KernelConfig,
    LockOwner, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyDirectoryPlus,
    ReplyEmpty, ReplyEntry, ReplyLseek, ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};

use crate::core::{Attr, Caller, NodeSpec, OpenFile, Opened, RenameMode, SetAttr, TimeSet, XattrMode};
use crate::error::Error;
use crate::meta::{Ino, Kind, Timestamp, Volume};
use crate::pool::Pool;
use crate::stats::{Op, VolumeCounters};
use coherence::{Change, Coherence};

/// How long the kernel may trust names and attributes. volfs is the only writer of a volume's
/// metadata and tells every other mount of a volume what one mount changed (`coherence`), so
/// the kernel may keep them long. The exception: a regular file's size and times, while its
/// volume has several mounts, since passthrough writes in one mount bypass the daemon.
const TTL: Duration = Duration::from_secs(3600);

/// Every open file: no FLUSH round trip on close, since closing has nothing to write back or
/// report here. Daemon-served files also keep their page cache across opens: another mount's
/// changes drop it (coherence, and AUTO_INVAL_DATA when size or mtime moves).
const OPEN_FLAGS: FopenFlags = FopenFlags::FOPEN_NOFLUSH;

/// How a volume is mounted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MountOptions {
    pub read_only: bool,
    /// Let the kernel do file I/O straight on the data files (FUSE passthrough) when it can.
    pub passthrough: bool,
    pub threads: usize,
}

impl Default for MountOptions {
    fn default() -> Self {
        MountOptions { read_only: false, passthrough: true, threads: 4 }
    }
}

/// An open file: the data file the daemon reads and writes, and, with passthrough, the
/// kernel's reference to it (kept alive until release).
struct Handle {
    ino: Ino,
    writable: bool,
    file: OpenFile,
    backing: Option<Arc<BackingId>>,
}

pub struct VolumeFs {
    pool: Arc<Pool>,
    volume: Volume,
    /// The directory the kernel sees as the mount's root.
    root: Ino,
    options: MountOptions,
    passthrough: AtomicBool,
    /// The kernel opens directories without asking (NO_OPENDIR_SUPPORT).
    no_opendir: bool,
    /// Open files. Callers clone a handle out, so that no map guard is held across a call into
    /// the core (which may do I/O).
    handles: DashMap<u64, Arc<Handle>>,
    next_fh: AtomicU64,
    /// The kernel accepts one backing file per inode at a time, so every open of an inode
    /// shares it while any is open.
    backings: DashMap<Ino, Weak<BackingId>>,
    /// Serialises making a backing file with checking for one.
    backing_lock: Mutex<()>,
    coherence: Arc<Coherence>,
    session: u64,
    /// The volume's request counters, shared with its other mounts.
    counters: Arc<VolumeCounters>,
}

/// Runs a core call and replies with its value or its error.
macro_rules! reply {
    ($reply:ident, $op:expr, $call:expr, |$v:pat_param| $ok:expr) => {
        match $call {
            Ok($v) => $ok,
            Err(e) => fail!($reply, $op, e),
        }
    };
}

fn file_type(kind: Kind) -> FileType {
    match kind {
        Kind::File => FileType::RegularFile,
        Kind::Dir => FileType::Directory,
        Kind::Symlink => FileType::Symlink,
        Kind::Fifo => FileType::NamedPipe,
        Kind::Socket => FileType::Socket,
        Kind::CharDev => FileType::CharDevice,
        Kind::BlockDev => FileType::BlockDevice,
    }
}

/// The kernel leaves the umask to us (DONT_MASK): a parent's default ACL replaces it.
fn caller(req: &Request, umask: u32) -> Caller {
    Caller { uid: req.uid(), gid: req.gid(), umask }
}

/// Whether the caller may keep a file's setgid bit: root, or a member of the file's group,
/// also through a supplementary group (which requests do not carry: read from /proc).
fn in_group_or_root(req: &Request, gid: u32) -> bool {
    if req.uid() == 0 || req.gid() == gid {
        return true;
    }
    let status = std::fs::read_to_string(format!("/proc/{}/status", req.pid())).unwrap_or_default();
    let groups = status.lines().find_map(|l| l.strip_prefix("Groups:")).unwrap_or("");
    groups.split_whitespace().any(|g| g.parse() == Ok(gid))
}

fn time_set(t: TimeOrNow) -> TimeSet {
    match t {
        TimeOrNow::Now => TimeSet::Now,
        TimeOrNow::SpecificTime(t) => TimeSet::At(kernel_time(t)),
    }
}

/// Undoes fuser's reading of a time before 1970: it builds (-s, ns) as epoch - (s + ns)
/// where epoch - s + ns is meant, so the seconds and nanoseconds below the epoch are exact.
fn kernel_time(t: SystemTime) -> Timestamp {
    match SystemTime::UNIX_EPOCH.duration_since(t) {
        Ok(before) if !before.is_zero() => Timestamp { secs: -(before.as_secs() as i64), nanos: before.subsec_nanos() },
        _ => Timestamp::from(t),
    }
}

impl VolumeFs {
    /// A filesystem for one mount of `volume` whose root is the directory `root` (the volume's
    /// root, or the directory a subPath mount shows); `session` tells it apart from the volume's other
    /// mounts in `coherence`; it counts the requests it serves in `counters`.
    pub fn new(
        pool: Arc<Pool>,
        volume: Volume,
        root: Ino,
        options: MountOptions,
        coherence: Arc<Coherence>,
        session: u64,
        counters: Arc<VolumeCounters>,
    ) -> Self {
        let passthrough = AtomicBool::new(options.passthrough);
        VolumeFs {
            pool,
            volume,
            root,
            options,
            passthrough,
            no_opendir: false,
            handles: DashMap::new(),
            next_fh: AtomicU64::new(1),
            backings: DashMap::new(),
            backing_lock: Mutex::new(()),
            coherence,
            session,
            counters,
        }
    }

    /// A directory's entries after `offset`. The mount's root lists itself as its parent:
    /// nothing above the root of a subPath mount may be named from inside it.
    fn listing(&self, ino: INodeNo, offset: u64) -> crate::Result<Vec<crate::core::DirEntry>> {
        let dir = self.ino(ino);
        let mut entries = self.core().readdir(dir, offset)?;
        if dir == self.root {
            for e in entries.iter_mut().filter(|e| e.name == b"..") {
                e.ino = self.root;
            }
        }
        Ok(entries)
    }

    /// Tells the volume's other mounts what this one changed.
    fn publish(&self, changes: impl FnOnce() -> Vec<Change>) {
        self.coherence.publish(self.volume.id, self.session, changes);
    }

    /// A name created in `parent`.
    fn publish_new_entry(&self, parent: Ino, name: &OsStr) {
        self.publish(|| vec![Change::Entry(parent, name.as_bytes().to_vec()), Change::Attr(parent)]);
    }

    /// Mounts the volume at `mountpoint` and serves it on worker threads until unmounted.
    pub fn mount(self, mountpoint: &Path) -> std::io::Result<fuser::BackgroundSession> {
        use fuser::MountOption as O;
        let mut config = fuser::Config::default();
        config.mount_options = vec![
            O::FSName(format!("volfs:{}", self.volume.name)),
            O::Subtype("volfs".into()),
            O::DefaultPermissions,
            O::Dev,
            O::Suid,
            if self.options.read_only { O::RO } else { O::RW },
        ];
        config.acl = fuser::SessionACL::All;
        config.n_threads = Some(self.options.threads.max(1));
        config.clone_fd = true;
        fuser::spawn_mount(self, mountpoint, &config)
    }

    fn core(&self) -> &crate::core::Core {
        self.pool.core()
    }

    /// The kernel calls the mount's root 1; everywhere else inode numbers are the pool's.
    fn ino(&self, ino: INodeNo) -> Ino {
        if ino == INodeNo::ROOT {
            self.root
        } else {
            Ino(ino.0)
        }
    }

    fn kernel_ino(&self, ino: Ino) -> INodeNo {
        if ino == self.root {
            INodeNo::ROOT
        } else {
            INodeNo(ino.0)
        }
    }

    fn file_attr(&self, a: &Attr) -> FileAttr {
        FileAttr {
            ino: self.kernel_ino(a.ino),
            size: a.size,
            blocks: a.blocks,
            atime: a.atime,
            mtime: a.mtime,
            ctime: a.ctime,
            crtime: a.crtime,
            kind: file_type(a.kind),
            perm: (a.perm & 0o7777) as u16,
            nlink: a.nlink,
            uid: a.uid,
            gid: a.gid,
            rdev: a.rdev,
            blksize: crate::core::BLOCK_SIZE,
            flags: 0,
        }
    }

    /// How long the kernel may keep these attributes.
    fn attr_ttl(&self, attr: &Attr) -> Duration {
        if attr.kind == Kind::File && self.coherence.is_shared(self.volume.id) {
            Duration::ZERO
        } else {
            TTL
        }
    }

    fn entry(&self, reply: ReplyEntry, attr: &Attr) {
        reply.entry_with_ttls(&self.attr_ttl(attr), &TTL, &self.file_attr(attr), Generation(0));
    }

    fn attr(&self, reply: ReplyAttr, attr: &Attr) {
        reply.attr(&self.attr_ttl(attr), &self.file_attr(attr));
    }

    fn new_fh(&self) -> FileHandle {
        FileHandle(self.next_fh.fetch_add(1, Ordering::Relaxed))
    }

    /// Runs `f` on the data file of an open handle.
    fn with_file<T>(&self, fh: FileHandle, f: impl FnOnce(&Handle) -> crate::Result<T>) -> crate::Result<T> {
        let handle = self.handles.get(&fh.0).map(|h| h.clone()).ok_or(Error::BadHandle(fh.0))?;
        f(&handle)
    }

    /// The kernel's reference to the data file of `file` for passthrough I/O, asked for when
    /// the core allows it: the one every open of the inode shares, or a new one. None when
    /// this connection cannot pass through (then the daemon serves reads and writes).
    fn backing(
        &self,
        file: &OpenFile,
        openbacking: impl FnOnce(&File) -> std::io::Result<BackingId>,
    ) -> Option<Arc<BackingId>> {
        if !self.passthrough.load(Ordering::Relaxed) {
            return None;
        }
        let _making = self.backing_lock.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(shared) = self.backings.get(&file.ino).and_then(|w| w.upgrade()) {
            return Some(shared);
        }
        match openbacking(&file.file()) {
            Ok(id) => {
                let id = Arc::new(id);
                self.backings.insert(file.ino, Arc::downgrade(&id));
                Some(id)
            }
            Err(e) => {
                tracing::warn!(volume = %self.volume.name, error = %e, "passthrough unavailable; serving file I/O in the daemon");
                self.passthrough.store(false, Ordering::Relaxed);
                None
            }
        }
    }

    /// Keeps an open file until release; returns its handle and the flags the kernel gets.
    fn opened(&self, ino: Ino, writable: bool, opened: Opened<Arc<BackingId>>) -> (FileHandle, FopenFlags) {
        let fh = self.new_fh();
        let flags = match opened.passthrough {
            Some(_) => {
                VolumeCounters::add(&self.counters.passthrough_opens, 1);
                FopenFlags::FOPEN_PASSTHROUGH | OPEN_FLAGS
            }
            None => OPEN_FLAGS | FopenFlags::FOPEN_KEEP_CACHE,
        };
        let handle = Handle { ino, writable, file: opened.file, backing: opened.passthrough };
        self.handles.insert(fh.0, Arc::new(handle));
        (fh, flags)
    }

    /// Forgets the backing file of `ino` once no open file uses it.
    fn dropbacking(&self, ino: Ino) {
        let _making = self.backing_lock.lock().unwrap_or_else(|p| p.into_inner());
        self.backings.remove_if(&ino, |_, w| w.strong_count() == 0);
    }
}

impl fuser::Filesystem for VolumeFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        // AUTO_INVAL_DATA: a file's cached pages go when its size or mtime changes, which is
        // how another mount's writes reach this one in daemon-served I/O. POSIX_ACL: the kernel
        // enforces the access ACLs it reads through getxattr; the core applies default ACLs
        // and the umask on create (DONT_MASK) and keeps mode and ACL in step.
        let wanted = InitFlags::FUSE_PARALLEL_DIROPS
            | InitFlags::FUSE_DO_READDIRPLUS
            | InitFlags::FUSE_READDIRPLUS_AUTO
            | InitFlags::FUSE_AUTO_INVAL_DATA
            | InitFlags::FUSE_HANDLE_KILLPRIV_V2
            | InitFlags::FUSE_POSIX_ACL
            | InitFlags::FUSE_DONT_MASK
            | InitFlags::FUSE_NO_OPENDIR_SUPPORT;
        let _ = config.add_capabilities(wanted & config.capabilities());
        self.no_opendir = config.capabilities().contains(InitFlags::FUSE_NO_OPENDIR_SUPPORT);
        if self.options.passthrough {
            let ok = config.capabilities().contains(InitFlags::FUSE_PASSTHROUGH)
                && config.add_capabilities(InitFlags::FUSE_PASSTHROUGH).is_ok()
                && config.set_max_stack_depth(1).is_ok();
            if !ok {
                tracing::info!(volume = %self.volume.name, "kernel offers no FUSE passthrough");
                self.passthrough.store(false, Ordering::Relaxed);
            }
        }
        let _ = config.set_max_write(1 << 20);
        let _ = config.set_max_readahead(1 << 20);
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let served = self.counters.request(Op::Lookup);
        match self.core().lookup(self.ino(parent), name.as_bytes()) {
            Ok(a) => self.entry(reply, &a),
            // Inode 0 is a negative entry: the kernel remembers the name does not exist.
            Err(Error::NotFound(_)) => reply.entry(&TTL, &negative_attr(), Generation(0)),
            Err(e) => fail!(reply, served, e),
        }
    }

    // forget and releasedir do what fuser does by default; served here so that they are
    // counted (fuser hands each inode of a BATCH_FORGET to `forget`: one count per inode).
    fn forget(&self, _req: &Request, _ino: INodeNo, _nlookup: u64) {
        let _served = self.counters.request(Op::Forget);
    }

    /// Directories need no open: with NO_OPENDIR_SUPPORT the first ENOSYS ends opendir and
    /// releasedir requests for the mount. Either way the kernel keeps a directory's listing
    /// from one open to the next (CACHE_DIR with KEEP_CACHE, what it assumes without opendir):
    /// it drops it when the directory changes through this mount, and when its mtime moves
    /// once another mount's change (`coherence`) has made it fetch the attributes again.
    fn opendir(&self, _req: &Request, _ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let served = self.counters.request(Op::Opendir);
        if self.no_opendir {
            served.failed(libc::ENOSYS);
            return reply.error(Errno::ENOSYS);
        }
        reply.opened(FileHandle(0), FopenFlags::FOPEN_CACHE_DIR | FopenFlags::FOPEN_KEEP_CACHE);
    }

    fn releasedir(&self, _req: &Request, _ino: INodeNo, _fh: FileHandle, _flags: OpenFlags, reply: ReplyEmpty) {
        let _served = self.counters.request(Op::Releasedir);
        reply.ok();
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let served = self.counters.request(Op::Getattr);
        reply!(reply, served, self.core().getattr(self.ino(ino)), |a| self.attr(reply, &a))
    }

    fn setattr(
        &self,
        req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let served = self.counters.request(Op::Setattr);
        let (atime, mtime) = (atime.map(time_set), mtime.map(time_set));
        let (ctime, unprivileged) = (ctime.is_some(), req.uid() != 0);
        let set = SetAttr { mode, uid, gid, size, atime, mtime, ctime, unprivileged };
        let ino = self.ino(ino);
        let handle = fh.and_then(|fh| self.handles.get(&fh.0).map(|h| h.clone()));
        let result = self.core().setattr(ino, &set, handle.as_ref().map(|h| &h.file));
        reply!(reply, served, result, |a| {
            self.publish(|| vec![if size.is_some() { Change::Data(ino) } else { Change::Attr(ino) }]);
            self.attr(reply, &a)
        })
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        let served = self.counters.request(Op::Readlink);
        reply!(reply, served, self.core().readlink(self.ino(ino)), |t| reply.data(&t))
    }

    fn mknod(&self, req: &Request, parent: INodeNo, name: &OsStr, mode: u32, umask: u32, rdev: u32, reply: ReplyEntry) {
        let served = self.counters.request(Op::Mknod);
        let spec = match mode & libc::S_IFMT {
            libc::S_IFREG | 0 => NodeSpec::File,
            libc::S_IFIFO => NodeSpec::Special(Kind::Fifo, 0),
            libc::S_IFSOCK => NodeSpec::Special(Kind::Socket, 0),
            libc::S_IFCHR => NodeSpec::Special(Kind::CharDev, rdev),
            libc::S_IFBLK => NodeSpec::Special(Kind::BlockDev, rdev),
            _ => return fail!(reply, served, Error::Invalid(format!("file type {:o}", mode & libc::S_IFMT))),
        };
        let result = self.core().make_node(caller(req, umask), self.ino(parent), name.as_bytes(), spec, mode);
        reply!(reply, served, result, |attr| {
            self.publish_new_entry(self.ino(parent), name);
            self.entry(reply, &attr)
        })
    }

    fn mkdir(&self, req: &Request, parent: INodeNo, name: &OsStr, mode: u32, umask: u32, reply: ReplyEntry) {
        let served = self.counters.request(Op::Mkdir);
        let result = self.core().make_node(caller(req, umask), self.ino(parent), name.as_bytes(), NodeSpec::Dir, mode);
        reply!(reply, served, result, |a| {
            self.publish_new_entry(self.ino(parent), name);
            self.entry(reply, &a)
        })
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let served = self.counters.request(Op::Unlink);
        let parent = self.ino(parent);
        reply!(reply, served, self.core().unlink(parent, name.as_bytes()), |ino| {
            self.publish(|| {
                vec![Change::Entry(parent, name.as_bytes().to_vec()), Change::Attr(parent), Change::Attr(ino)]
            });
            reply.ok()
        })
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let served = self.counters.request(Op::Rmdir);
        let parent = self.ino(parent);
        reply!(reply, served, self.core().rmdir(parent, name.as_bytes()), |_v| {
            self.publish(|| vec![Change::Entry(parent, name.as_bytes().to_vec()), Change::Attr(parent)]);
            reply.ok()
        })
    }

    fn symlink(&self, req: &Request, parent: INodeNo, link_name: &OsStr, target: &Path, reply: ReplyEntry) {
        let served = self.counters.request(Op::Symlink);
        let spec = NodeSpec::Symlink(target.as_os_str().as_bytes().to_vec());
        let result = self.core().make_node(caller(req, 0), self.ino(parent), link_name.as_bytes(), spec, 0o777);
        reply!(reply, served, result, |a| {
            self.publish_new_entry(self.ino(parent), link_name);
            self.entry(reply, &a)
        })
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let served = self.counters.request(Op::Rename);
        let mode = if flags.contains(RenameFlags::RENAME_EXCHANGE) {
            RenameMode::Exchange
        } else if flags.contains(RenameFlags::RENAME_NOREPLACE) {
            RenameMode::NoReplace
        } else if flags.is_empty() {
            RenameMode::Replace
        } else {
            return fail!(reply, served, Error::Invalid(format!("rename flags {flags}")));
        };
        let (parent, newparent) = (self.ino(parent), self.ino(newparent));
        let result = self.core().rename(parent, name.as_bytes(), newparent, newname.as_bytes(), mode);
        reply!(reply, served, result, |changed| {
            if parent != newparent {
                // A directory moved to another parent lists a new `..`: every mount's kernel,
                // this one's too, drops its cached listing (and, for a file, nothing it needs).
                self.coherence.publish(self.volume.id, 0, || changed.iter().map(|i| Change::Data(*i)).collect());
            }
            self.publish(|| {
                let mut changes = vec![
                    Change::Entry(parent, name.as_bytes().to_vec()),
                    Change::Entry(newparent, newname.as_bytes().to_vec()),
                    Change::Attr(parent),
                    Change::Attr(newparent),
                ];
                changes.extend(changed.into_iter().map(Change::Attr));
                changes
            });
            reply.ok()
        })
    }

    fn link(&self, _req: &Request, ino: INodeNo, newparent: INodeNo, newname: &OsStr, reply: ReplyEntry) {
        let served = self.counters.request(Op::Link);
        let (ino, newparent) = (self.ino(ino), self.ino(newparent));
        let result = self.core().link(ino, newparent, newname.as_bytes());
        reply!(reply, served, result, |a| {
            self.publish(|| {
                vec![Change::Entry(newparent, newname.as_bytes().to_vec()), Change::Attr(newparent), Change::Attr(ino)]
            });
            self.entry(reply, &a)
        })
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let served = self.counters.request(Op::Open);
        let ino = self.ino(ino);
        let writable = flags.0 & libc::O_ACCMODE != libc::O_RDONLY;
        let pass = |f: &OpenFile| self.backing(f, |f| reply.open_backing(f));
        let opened = match self.core().open_for_kernel(&caller(req, 0), ino, writable, pass) {
            Ok(opened) => opened,
            Err(e) => return fail!(reply, served, e),
        };
        let backing = opened.passthrough.clone();
        let (fh, flags) = self.opened(ino, writable, opened);
        match backing {
            Some(id) => reply.opened_passthrough(fh, flags, &id),
            None => reply.opened(fh, flags),
        }
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
        let served = self.counters.request(Op::Read);
        reply!(reply, served, self.with_file(fh, |h| self.core().read(&h.file, offset, size)), |d| {
            VolumeCounters::add(&self.counters.read_bytes, d.len() as u64);
            reply.data(&d)
        })
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let served = self.counters.request(Op::Write);
        let result = self.with_file(fh, |h| {
            if write_flags.contains(WriteFlags::FUSE_WRITE_KILL_SUIDGID) {
                self.core().write_kills_suidgid(h.ino)?;
            }
            self.core().write(&h.file, offset, data)
        });
        reply!(reply, served, result, |n| {
            VolumeCounters::add(&self.counters.written_bytes, u64::from(n));
            reply.written(n)
        })
    }

    fn flush(&self, _req: &Request, _ino: INodeNo, _fh: FileHandle, _lock_owner: LockOwner, reply: ReplyEmpty) {
        let _served = self.counters.request(Op::Flush);
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
        let served = self.counters.request(Op::Release);
        let Some((_, handle)) = self.handles.remove(&fh.0) else {
            return fail!(reply, served, Error::BadHandle(fh.0));
        };
        let (ino, writable, passthrough) = (handle.ino, handle.writable, handle.backing.is_some());
        let closed = self.core().close(&handle.file, passthrough);
        drop(handle);
        if passthrough {
            self.dropbacking(ino);
        }
        if writable {
            self.publish(|| vec![Change::Data(ino)]);
        }
        reply!(reply, served, closed, |_v| reply.ok())
    }

    fn fsync(&self, _req: &Request, _ino: INodeNo, fh: FileHandle, datasync: bool, reply: ReplyEmpty) {
        let served = self.counters.request(Op::Fsync);
        let result = self.with_file(fh, |h| self.core().fsync(&h.file, datasync));
        reply!(reply, served, result, |_v| reply.ok())
    }

    fn readdir(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, offset: u64, mut reply: ReplyDirectory) {
        let served = self.counters.request(Op::Readdir);
        reply!(reply, served, self.listing(ino, offset), |entries| {
            for e in entries {
                if reply.add(self.kernel_ino(e.ino), e.offset, file_type(e.kind), OsStr::from_bytes(&e.name)) {
                    break;
                }
            }
            reply.ok()
        })
    }

    fn readdirplus(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, offset: u64, mut reply: ReplyDirectoryPlus) {
        let served = self.counters.request(Op::Readdirplus);
        reply!(reply, served, self.listing(ino, offset), |entries| {
            for e in entries {
                // An entry removed since the listing was read is skipped, as if read later.
                let Ok(attr) = self.core().getattr(e.ino) else { continue };
                let name = OsStr::from_bytes(&e.name);
                if reply.add(
                    self.kernel_ino(e.ino),
                    e.offset,
                    name,
                    &self.attr_ttl(&attr),
                    &self.file_attr(&attr),
                    Generation(0),
                ) {
                    break;
                }
            }
            reply.ok()
        })
    }

    fn fsyncdir(&self, _req: &Request, _ino: INodeNo, _fh: FileHandle, _datasync: bool, reply: ReplyEmpty) {
        let served = self.counters.request(Op::Fsyncdir);
        reply!(reply, served, self.core().sync_metadata(), |_v| reply.ok())
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let served = self.counters.request(Op::Statfs);
        // The volume's record as it is now: a resize shows at once.
        let statfs = self.pool.volume(&self.volume.name).and_then(|v| self.core().statfs(&v));
        reply!(reply, served, statfs, |s| reply
            .statfs(s.blocks, s.bfree, s.bavail, s.files, s.ffree, s.bsize, s.namelen, s.bsize))
    }

    fn setxattr(
        &self,
        req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        let served = self.counters.request(Op::Setxattr);
        let mode = match flags {
            0 => XattrMode::Any,
            libc::XATTR_CREATE => XattrMode::Create,
            libc::XATTR_REPLACE => XattrMode::Replace,
            _ => return fail!(reply, served, Error::Invalid(format!("setxattr flags {flags}"))),
        };
        let ino = self.ino(ino);
        // The kernel's FUSE_SETXATTR_ACL_KILL_SGID, which fuser does not pass on: decided here
        // by the same rule.
        let kill_sgid = name.as_bytes() == crate::core::acl::ACCESS
            && self.core().getattr(ino).is_ok_and(|a| !in_group_or_root(req, a.gid));
        let result = self.core().setxattr(ino, name.as_bytes(), value, mode, kill_sgid);
        reply!(reply, served, result, |_v| {
            self.publish(|| vec![Change::Attr(ino)]);
            reply.ok()
        })
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        let served = self.counters.request(Op::Getxattr);
        reply!(reply, served, self.core().getxattr(self.ino(ino), name.as_bytes()), |v| reply_sized(reply, &v, size))
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        let served = self.counters.request(Op::Listxattr);
        reply!(reply, served, self.core().listxattr(self.ino(ino)), |v| reply_sized(reply, &v, size))
    }

    fn removexattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let served = self.counters.request(Op::Removexattr);
        let ino = self.ino(ino);
        reply!(reply, served, self.core().removexattr(ino, name.as_bytes()), |_v| {
            self.publish(|| vec![Change::Attr(ino)]);
            reply.ok()
        })
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        let served = self.counters.request(Op::Create);
        let parent = self.ino(parent);
        let pass = |f: &OpenFile| self.backing(f, |f| reply.open_backing(f));
        let made = self.core().create(caller(req, umask), parent, name.as_bytes(), mode, pass);
        let (attr, opened) = match made {
            Ok(made) => made,
            Err(e) => return fail!(reply, served, e),
        };
        self.publish_new_entry(parent, name);
        let backing = opened.passthrough.clone();
        let (fh, flags) = self.opened(attr.ino, true, opened);
        let (ttl, fattr) = (self.attr_ttl(&attr), self.file_attr(&attr));
        match backing {
            Some(id) => reply.created_passthrough(&ttl, &fattr, Generation(0), fh, flags, &id),
            None => reply.created(&ttl, &fattr, Generation(0), fh, flags),
        }
    }

    fn ioctl(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _flags: fuser::IoctlFlags,
        _cmd: u32,
        _in_data: &[u8],
        _out_size: u32,
        reply: fuser::ReplyIoctl,
    ) {
        let served = self.counters.request(Op::Ioctl);
        // No ioctls; isatty() and friends ask routinely.
        served.failed(libc::ENOTTY);
        reply.error(Errno::ENOTTY);
    }

    fn fallocate(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        let served = self.counters.request(Op::Fallocate);
        let result = self.with_file(fh, |h| self.core().fallocate(&h.file, offset, length, mode).map(|()| h.ino));
        reply!(reply, served, result, |ino| {
            self.publish(|| vec![Change::Data(ino)]);
            reply.ok()
        })
    }

    fn lseek(&self, _req: &Request, _ino: INodeNo, fh: FileHandle, offset: i64, whence: i32, reply: ReplyLseek) {
        let served = self.counters.request(Op::Lseek);
        reply!(reply, served, self.with_file(fh, |h| self.core().lseek(&h.file, offset, whence)), |p| reply.offset(p))
    }

    fn copy_file_range(
        &self,
        _req: &Request,
        _ino_in: INodeNo,
        fh_in: FileHandle,
        offset_in: u64,
        _ino_out: INodeNo,
        fh_out: FileHandle,
        offset_out: u64,
        len: u64,
        _flags: fuser::CopyFileRangeFlags,
        reply: ReplyWrite,
    ) {
        let served = self.counters.request(Op::CopyFileRange);
        let result = self.with_file(fh_in, |src| {
            self.with_file(fh_out, |dst| {
                // The kernel caps one reply at u32 bytes; copy no more than fits.
                let len = len.min(u64::from(!0xfffu32));
                self.core().copy_file_range(&src.file, offset_in, &dst.file, offset_out, len).map(|n| (n, dst.ino))
            })
        });
        reply!(reply, served, result, |(n, ino)| {
            VolumeCounters::add(&self.counters.read_bytes, n);
            VolumeCounters::add(&self.counters.written_bytes, n);
            self.publish(|| vec![Change::Data(ino)]);
            reply.written(n as u32)
        })
    }
}

fn negative_attr() -> FileAttr {
    FileAttr {
        ino: INodeNo(0),
        size: 0,
        blocks: 0,
        atime: SystemTime::UNIX_EPOCH,
        mtime: SystemTime::UNIX_EPOCH,
        ctime: SystemTime::UNIX_EPOCH,
        crtime: SystemTime::UNIX_EPOCH,
        kind: FileType::RegularFile,
        perm: 0,
        nlink: 0,
        uid: 0,
        gid: 0,
        rdev: 0,
        blksize: 0,
        flags: 0,
    }
}

/// getxattr/listxattr: size 0 asks for the length; a buffer too small is ERANGE.
fn reply_sized(reply: ReplyXattr, value: &[u8], size: u32) {
    if size == 0 {
        reply.size(value.len() as u32);
    } else if value.len() > size as usize {
        reply.error(Errno::ERANGE);
    } else {
        reply.data(value);
    }
}
