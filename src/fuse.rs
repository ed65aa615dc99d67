//! The FUSE adapters: a volume's mounts (`VolumeFs`, here) and projected trees
//! (`projected`), both served by the daemon's one pool of workers (`session`) and speaking the
//! kernel protocol through `wire`. Each request is parsed, answered by one method that calls
//! the filesystem core and returns the answer's bytes or an `Error`, and sent; errors become
//! errnos through `Error::errno`. The only modules that know kernel flags and structs.

pub mod coherence;
pub mod projected;
pub mod session;
pub mod wire;

use std::ffi::OsStr;
use std::io::IoSlice;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime};

use dashmap::DashMap;

use crate::core::{Attr, Caller, NodeSpec, OpenFile, Opened, RenameMode, SetAttr, TimeSet, XattrMode};
use crate::error::Error;
use crate::meta::{Ino, Kind, Timestamp, Volume};
use crate::pool::Pool;
use crate::stats::{Op, VolumeCounters};
use coherence::{Change, Coherence};
use session::{Backing, Connection, Handler, Sessions};
use wire::abi::{self, fattr, fopen, init_flags, AttrOut, EntryOut, Kstatfs, OpenOut};
use wire::reply;
use wire::request::{parse_with, Layout, Operation, Request};

/// What a request was answered with.
pub(crate) enum Answer {
    /// The whole message.
    Bytes(Vec<u8>),
    /// File data, sent after its header without being copied.
    Data(Vec<u8>),
    /// Nothing goes back (FORGET, INTERRUPT).
    Nothing,
}

/// What an answer's failure is logged as, and counted against (nowhere, for a request named
/// only by a string).
pub(crate) trait Answering {
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

/// Parses one request. A malformed one is answered EIO here, when its header names it: the
/// kernel would wait for an answer forever.
pub(crate) fn parse_request<'a>(conn: &Connection, bytes: &'a [u8], layout: Layout) -> Option<Request<'a>> {
    match parse_with(bytes, layout) {
        Ok(req) => Some(req),
        Err(e) => {
            tracing::warn!(error = %e, "malformed FUSE request");
            if let Ok((header, _)) = <abi::InHeader as zerocopy::FromBytes>::read_from_prefix(bytes) {
                send(conn, &reply::error(header.unique, libc::EIO));
            }
            None
        }
    }
}

/// Sends the answer to request `unique`: `result`'s bytes, or its error's errno, logged at a
/// level that fits it and counted against `op`.
pub(crate) fn respond(conn: &Connection, unique: u64, op: &impl Answering, result: Result<Answer, Error>) {
    match result {
        Ok(Answer::Bytes(bytes)) => send(conn, &bytes),
        Ok(Answer::Data(data)) => {
            let header = reply::data_header(unique, data.len());
            if let Err(e) = conn.send(&[IoSlice::new(&header), IoSlice::new(&data)]) {
                tracing::debug!(error = %e, "answer not delivered");
            }
        }
        Ok(Answer::Nothing) => {}
        Err(err) => {
            if err.is_routine() {
                tracing::debug!(op = op.op_name(), error = %err);
            } else {
                tracing::warn!(op = op.op_name(), error = %err);
            }
            op.failed(err.errno());
            send(conn, &reply::error(unique, err.errno()));
        }
    }
}

fn send(conn: &Connection, bytes: &[u8]) {
    if let Err(e) = conn.send(&[IoSlice::new(bytes)]) {
        tracing::debug!(error = %e, "answer not delivered");
    }
}

/// A duration as the kernel's (seconds, nanoseconds) of validity.
fn valid(ttl: Duration) -> (u64, u32) {
    (ttl.as_secs(), ttl.subsec_nanos())
}

fn attr_out(ttl: Duration, attr: abi::Attr) -> AttrOut {
    let (attr_valid, attr_valid_nsec) = valid(ttl);
    AttrOut { attr_valid, attr_valid_nsec, attr, ..AttrOut::default() }
}

/// A lookup's answer; node id 0 is a negative entry (the kernel remembers the name is absent).
fn entry_out(nodeid: u64, entry_ttl: Duration, attr_ttl: Duration, attr: abi::Attr) -> EntryOut {
    let ((attr_valid, attr_valid_nsec), (entry_valid, entry_valid_nsec)) = (valid(attr_ttl), valid(entry_ttl));
    EntryOut { nodeid, generation: 0, entry_valid, attr_valid, entry_valid_nsec, attr_valid_nsec, attr }
}

/// How long the kernel may trust names and attributes. volfs is the only writer of a volume's
/// metadata and tells every other mount of a volume what one mount changed (`coherence`), so
/// the kernel may keep them long. The exception: a regular file's size and times, while its
/// volume has several mounts, since passthrough writes in one mount bypass the daemon.
const TTL: Duration = Duration::from_secs(3600);

/// Every open file: no FLUSH round trip on close, since closing has nothing to write back or
/// report here. Daemon-served files also keep their page cache across opens: another mount's
/// changes drop it (coherence, and AUTO_INVAL_DATA when size or mtime moves).
const OPEN_FLAGS: u32 = fopen::NOFLUSH;

/// How a volume is mounted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MountOptions {
    pub read_only: bool,
    /// Let the kernel do file I/O straight on the data files (FUSE passthrough) when it can.
    pub passthrough: bool,
}

impl Default for MountOptions {
    fn default() -> Self {
        MountOptions { read_only: false, passthrough: true }
    }
}

/// An open file: the data file the daemon reads and writes, and, with passthrough, the
/// kernel's reference to it (kept alive until release).
struct Handle {
    ino: Ino,
    writable: bool,
    file: OpenFile,
    backing: Option<Arc<Backing>>,
}

pub struct VolumeFs {
    pool: Arc<Pool>,
    volume: Volume,
    /// The directory the kernel sees as the mount's root.
    root: Ino,
    options: MountOptions,
    /// Settled at INIT: whether the kernel passes file I/O through, opens directories without
    /// asking (NO_OPENDIR_SUPPORT), and sends SETXATTR with its extended arguments.
    passthrough: AtomicBool,
    no_opendir: AtomicBool,
    setxattr_ext: AtomicBool,
    /// Open files. Callers clone a handle out, so that no map guard is held across a call into
    /// the core (which may do I/O).
    handles: DashMap<u64, Arc<Handle>>,
    next_fh: AtomicU64,
    /// The kernel accepts one backing file per inode at a time, so every open of an inode
    /// shares it while any is open.
    backings: DashMap<Ino, Weak<Backing>>,
    /// Serialises making a backing file with checking for one.
    backing_lock: Mutex<()>,
    coherence: Arc<Coherence>,
    session: u64,
    /// The volume's request counters, shared with its other mounts.
    counters: Arc<VolumeCounters>,
}

fn mode_type(kind: Kind) -> u32 {
    match kind {
        Kind::File => libc::S_IFREG,
        Kind::Dir => libc::S_IFDIR,
        Kind::Symlink => libc::S_IFLNK,
        Kind::Fifo => libc::S_IFIFO,
        Kind::Socket => libc::S_IFSOCK,
        Kind::CharDev => libc::S_IFCHR,
        Kind::BlockDev => libc::S_IFBLK,
    }
}

/// The kernel leaves the umask to us (DONT_MASK): a parent's default ACL replaces it.
fn caller(header: &abi::InHeader, umask: u32) -> Caller {
    Caller { uid: header.uid, gid: header.gid, umask }
}

/// A time as the kernel sends it: seconds since the epoch (signed) and nanoseconds.
fn kernel_time(secs: u64, nanos: u32) -> Timestamp {
    Timestamp { secs: secs as i64, nanos }
}

/// The kernel's (seconds, nanoseconds) of a time, before 1970 too.
fn wire_time(t: SystemTime) -> (u64, u32) {
    let t = Timestamp::from(t);
    (t.secs as u64, t.nanos)
}

/// What the request counters count `op` as; None for what they do not list.
fn counted(op: &Operation<'_>) -> Option<Op> {
    Some(match op {
        Operation::Lookup { .. } => Op::Lookup,
        Operation::Forget(_) | Operation::BatchForget(_) => Op::Forget,
        Operation::Getattr(_) => Op::Getattr,
        Operation::Setattr(_) => Op::Setattr,
        Operation::Readlink => Op::Readlink,
        Operation::Symlink { .. } => Op::Symlink,
        Operation::Mknod { .. } => Op::Mknod,
        Operation::Mkdir { .. } => Op::Mkdir,
        Operation::Unlink { .. } => Op::Unlink,
        Operation::Rmdir { .. } => Op::Rmdir,
        Operation::Rename { .. } | Operation::Rename2 { .. } => Op::Rename,
        Operation::Link { .. } => Op::Link,
        Operation::Open(_) => Op::Open,
        Operation::Read(_) => Op::Read,
        Operation::Write { .. } => Op::Write,
        Operation::Flush(_) => Op::Flush,
        Operation::Release(_) => Op::Release,
        Operation::Fsync(_) => Op::Fsync,
        Operation::Opendir(_) => Op::Opendir,
        Operation::Readdir(_) => Op::Readdir,
        Operation::Readdirplus(_) => Op::Readdirplus,
        Operation::Releasedir(_) => Op::Releasedir,
        Operation::Fsyncdir(_) => Op::Fsyncdir,
        Operation::Statfs => Op::Statfs,
        Operation::Setxattr { .. } => Op::Setxattr,
        Operation::Getxattr { .. } => Op::Getxattr,
        Operation::Listxattr(_) => Op::Listxattr,
        Operation::Removexattr { .. } => Op::Removexattr,
        Operation::Create { .. } => Op::Create,
        Operation::Ioctl { .. } => Op::Ioctl,
        Operation::Fallocate(_) => Op::Fallocate,
        Operation::Lseek(_) => Op::Lseek,
        Operation::CopyFileRange(_) | Operation::CopyFileRange64(_) => Op::CopyFileRange,
        _ => return None,
    })
}

/// getxattr/listxattr: size 0 asks for the length; a buffer too small is ERANGE.
fn xattr_answer(unique: u64, value: &[u8], size: u32) -> Result<Vec<u8>, Error> {
    if size == 0 {
        Ok(reply::xattr_size(unique, value.len() as u32))
    } else if value.len() > size as usize {
        Err(Error::Range(size as usize))
    } else {
        Ok(reply::xattr_data(unique, value))
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
        VolumeFs {
            pool,
            volume,
            root,
            passthrough: AtomicBool::new(options.passthrough),
            options,
            no_opendir: AtomicBool::new(false),
            setxattr_ext: AtomicBool::new(false),
            handles: DashMap::new(),
            next_fh: AtomicU64::new(1),
            backings: DashMap::new(),
            backing_lock: Mutex::new(()),
            coherence,
            session,
            counters,
        }
    }

    /// Mounts the volume at `mountpoint`, served by `sessions` until unmounted.
    pub fn mount(self, sessions: &Sessions, mountpoint: &Path) -> std::io::Result<Arc<Connection>> {
        use rustix::mount::MountFlags;
        let flags = if self.options.read_only { MountFlags::RDONLY } else { MountFlags::empty() };
        let source = format!("volfs:{}", self.volume.name);
        let device = session::mount(mountpoint, &source, flags, "default_permissions,allow_other")?;
        sessions.add(device, Arc::new(self))
    }

    /// A directory's entries after `offset`. The mount's root lists itself as its parent:
    /// nothing above the root of a subPath mount may be named from inside it.
    fn listing(&self, dir: Ino, offset: u64) -> crate::Result<Vec<crate::core::DirEntry>> {
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

    fn core(&self) -> &crate::core::Core {
        self.pool.core()
    }

    /// The kernel calls the mount's root 1; everywhere else inode numbers are the pool's.
    fn ino(&self, ino: u64) -> Ino {
        if ino == abi::ROOT_ID {
            self.root
        } else {
            Ino(ino)
        }
    }

    fn kernel_ino(&self, ino: Ino) -> u64 {
        if ino == self.root {
            abi::ROOT_ID
        } else {
            ino.0
        }
    }

    fn wire_attr(&self, a: &Attr) -> abi::Attr {
        let ((atime, atimensec), (mtime, mtimensec), (ctime, ctimensec)) =
            (wire_time(a.atime), wire_time(a.mtime), wire_time(a.ctime));
        abi::Attr {
            ino: self.kernel_ino(a.ino),
            size: a.size,
            blocks: a.blocks,
            atime,
            mtime,
            ctime,
            atimensec,
            mtimensec,
            ctimensec,
            mode: mode_type(a.kind) | (a.perm & 0o7777),
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

    fn entry(&self, attr: &Attr) -> EntryOut {
        entry_out(self.kernel_ino(attr.ino), TTL, self.attr_ttl(attr), self.wire_attr(attr))
    }

    fn attr(&self, unique: u64, attr: &Attr) -> Vec<u8> {
        reply::attr(unique, &attr_out(self.attr_ttl(attr), self.wire_attr(attr)))
    }

    /// An open handle.
    fn handle(&self, fh: u64) -> Result<Arc<Handle>, Error> {
        self.handles.get(&fh).map(|h| h.clone()).ok_or(Error::BadHandle(fh))
    }

    /// The kernel's reference to the data file of `file` for passthrough I/O, asked for when
    /// the core allows it: the one every open of the inode shares, or a new one. None when
    /// this connection cannot pass through (then the daemon serves reads and writes).
    fn backing(&self, conn: &Arc<Connection>, file: &OpenFile) -> Option<Arc<Backing>> {
        if !self.passthrough.load(Ordering::Relaxed) {
            return None;
        }
        let _making = self.backing_lock.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(shared) = self.backings.get(&file.ino).and_then(|w| w.upgrade()) {
            return Some(shared);
        }
        match conn.open_backing(&file.file()) {
            Ok(backing) => {
                let backing = Arc::new(backing);
                self.backings.insert(file.ino, Arc::downgrade(&backing));
                Some(backing)
            }
            Err(e) => {
                tracing::warn!(volume = %self.volume.name, error = %e, "passthrough unavailable; serving file I/O in the daemon");
                self.passthrough.store(false, Ordering::Relaxed);
                None
            }
        }
    }

    /// Keeps an open file until release; returns what the kernel is told of it.
    fn opened(&self, ino: Ino, writable: bool, opened: Opened<Arc<Backing>>) -> OpenOut {
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        let (open_flags, backing_id) = match &opened.passthrough {
            Some(backing) => {
                VolumeCounters::add(&self.counters.passthrough_opens, 1);
                (fopen::PASSTHROUGH | OPEN_FLAGS, backing.id())
            }
            None => (OPEN_FLAGS | fopen::KEEP_CACHE, 0),
        };
        let handle = Handle { ino, writable, file: opened.file, backing: opened.passthrough };
        self.handles.insert(fh, Arc::new(handle));
        OpenOut { fh, open_flags, backing_id }
    }

    /// Forgets the backing file of `ino` once no open file uses it.
    fn dropbacking(&self, ino: Ino) {
        let _making = self.backing_lock.lock().unwrap_or_else(|p| p.into_inner());
        self.backings.remove_if(&ino, |_, w| w.strong_count() == 0);
    }

    /// INIT. AUTO_INVAL_DATA: a file's cached pages go when its size or mtime changes, which
    /// is how another mount's writes reach this one in daemon-served I/O. POSIX_ACL: the
    /// kernel enforces the access ACLs it reads through getxattr; the core applies default
    /// ACLs and the umask on create (DONT_MASK) and keeps mode and ACL in step; SETXATTR_EXT
    /// brings the kernel's verdict on clearing setgid when an access ACL is set.
    fn init(&self, unique: u64, init: &abi::InitIn) -> Result<Vec<u8>, Error> {
        use init_flags::*;
        let mut wanted = ASYNC_READ
            | BIG_WRITES
            | PARALLEL_DIROPS
            | DO_READDIRPLUS
            | READDIRPLUS_AUTO
            | AUTO_INVAL_DATA
            | HANDLE_KILLPRIV_V2
            | POSIX_ACL
            | DONT_MASK
            | NO_OPENDIR_SUPPORT
            | SETXATTR_EXT;
        if self.options.passthrough {
            wanted |= PASSTHROUGH;
        }
        let ours = reply::InitConfig {
            wanted,
            max_write: 1 << 20,
            max_readahead: 1 << 20,
            max_pages: 256,
            time_gran: 1,
            max_stack_depth: 1,
            max_background: 16,
            congestion_threshold: 12,
            ..Default::default()
        };
        let agreed = match reply::Negotiated::new(init, &ours) {
            Ok(agreed) => agreed,
            Err(reply::InitError::NewerMajor(_)) => return Ok(reply::init_major_only(unique)),
            Err(e) => return Err(Error::NotSupported(e.to_string())),
        };
        self.no_opendir.store(agreed.has(NO_OPENDIR_SUPPORT), Ordering::Relaxed);
        self.setxattr_ext.store(agreed.has(SETXATTR_EXT), Ordering::Relaxed);
        if self.options.passthrough && !agreed.has(PASSTHROUGH) {
            tracing::info!(volume = %self.volume.name, "kernel offers no FUSE passthrough");
            self.passthrough.store(false, Ordering::Relaxed);
        }
        Ok(reply::init(unique, &agreed))
    }
}

impl Handler for VolumeFs {
    fn request(&self, conn: &Arc<Connection>, bytes: &[u8]) {
        let layout = Layout { setxattr_ext: self.setxattr_ext.load(Ordering::Relaxed) };
        let Some(req) = parse_request(conn, bytes, layout) else { return };
        let unique = req.unique();
        match counted(&req.op) {
            Some(op) => {
                let served = self.counters.request(op);
                respond(conn, unique, &served, self.answer(conn, &req));
            }
            None => respond(conn, unique, &req.op.name(), self.answer(conn, &req)),
        }
    }

    /// The kernel releases every open file before it ends a connection; whatever is left
    /// (an aborted connection) goes now.
    fn ended(&self, _conn: &Connection) {
        self.handles.clear();
        self.backings.clear();
    }
}

impl VolumeFs {
    /// The answer to one request.
    fn answer(&self, conn: &Arc<Connection>, req: &Request<'_>) -> Result<Answer, Error> {
        let (unique, header) = (req.unique(), &req.header);
        let ino = self.ino(header.nodeid);
        Ok(Answer::Bytes(match &req.op {
            Operation::Init(init) => self.init(unique, init)?,
            Operation::Destroy | Operation::Flush(_) | Operation::Releasedir(_) => reply::empty(unique),
            // Lookup counts are not kept: every inode is found again from the pool.
            Operation::Forget(_) | Operation::BatchForget(_) | Operation::Interrupt(_) => return Ok(Answer::Nothing),
            Operation::Lookup { name } => match self.core().lookup(ino, name.as_bytes()) {
                Ok(a) => reply::entry(unique, &self.entry(&a)),
                Err(Error::NotFound(_)) => reply::entry(unique, &entry_out(0, TTL, TTL, abi::Attr::default())),
                Err(e) => return Err(e),
            },
            Operation::Getattr(_) => self.attr(unique, &self.core().getattr(ino)?),
            Operation::Setattr(arg) => self.setattr(unique, header, ino, arg)?,
            Operation::Readlink => reply::readlink(unique, &self.core().readlink(ino)?),
            Operation::Symlink { name, target } => {
                let spec = NodeSpec::Symlink(target.as_bytes().to_vec());
                self.make_node(unique, caller(header, 0), ino, name, spec, 0o777)?
            }
            Operation::Mknod { arg, name } => {
                let spec = match arg.mode & libc::S_IFMT {
                    libc::S_IFREG | 0 => NodeSpec::File,
                    libc::S_IFIFO => NodeSpec::Special(Kind::Fifo, 0),
                    libc::S_IFSOCK => NodeSpec::Special(Kind::Socket, 0),
                    libc::S_IFCHR => NodeSpec::Special(Kind::CharDev, arg.rdev),
                    libc::S_IFBLK => NodeSpec::Special(Kind::BlockDev, arg.rdev),
                    t => return Err(Error::Invalid(format!("file type {t:o}"))),
                };
                self.make_node(unique, caller(header, arg.umask), ino, name, spec, arg.mode)?
            }
            Operation::Mkdir { arg, name } => {
                self.make_node(unique, caller(header, arg.umask), ino, name, NodeSpec::Dir, arg.mode)?
            }
            Operation::Unlink { name } => {
                let gone = self.core().unlink(ino, name.as_bytes())?;
                self.publish(|| {
                    vec![Change::Entry(ino, name.as_bytes().to_vec()), Change::Attr(ino), Change::Attr(gone)]
                });
                reply::empty(unique)
            }
            Operation::Rmdir { name } => {
                self.core().rmdir(ino, name.as_bytes())?;
                self.publish(|| vec![Change::Entry(ino, name.as_bytes().to_vec()), Change::Attr(ino)]);
                reply::empty(unique)
            }
            Operation::Rename { arg, name, newname } => self.rename(unique, ino, name, arg.newdir, newname, 0)?,
            Operation::Rename2 { arg, name, newname } => {
                self.rename(unique, ino, name, arg.newdir, newname, arg.flags)?
            }
            Operation::Link { arg, newname } => {
                let (target, newparent) = (self.ino(arg.oldnodeid), ino);
                let a = self.core().link(target, newparent, newname.as_bytes())?;
                self.publish(|| {
                    let entry = Change::Entry(newparent, newname.as_bytes().to_vec());
                    vec![entry, Change::Attr(newparent), Change::Attr(target)]
                });
                reply::entry(unique, &self.entry(&a))
            }
            Operation::Open(arg) => {
                let writable = arg.flags as i32 & libc::O_ACCMODE != libc::O_RDONLY;
                let pass = |f: &OpenFile| self.backing(conn, f);
                let opened = self.core().open_for_kernel(&caller(header, 0), ino, writable, pass)?;
                let open = self.opened(ino, writable, opened);
                reply::open(unique, open.fh, open.open_flags, open.backing_id)
            }
            Operation::Create { arg, name } => {
                let pass = |f: &OpenFile| self.backing(conn, f);
                let (attr, opened) =
                    self.core().create(caller(header, arg.umask), ino, name.as_bytes(), arg.mode, pass)?;
                self.publish_new_entry(ino, name);
                let open = self.opened(attr.ino, true, opened);
                reply::create(unique, &self.entry(&attr), &open)
            }
            Operation::Read(arg) => {
                let data = self.core().read(&self.handle(arg.fh)?.file, arg.offset, arg.size)?;
                VolumeCounters::add(&self.counters.read_bytes, data.len() as u64);
                return Ok(Answer::Data(data));
            }
            Operation::Write { arg, data } => {
                let handle = self.handle(arg.fh)?;
                if arg.write_flags & abi::WRITE_KILL_SUIDGID != 0 {
                    self.core().write_kills_suidgid(handle.ino)?;
                }
                let n = self.core().write(&handle.file, arg.offset, data)?;
                VolumeCounters::add(&self.counters.written_bytes, u64::from(n));
                reply::write(unique, n)
            }
            Operation::Release(arg) => {
                let (_, handle) = self.handles.remove(&arg.fh).ok_or(Error::BadHandle(arg.fh))?;
                let (ino, writable, passthrough) = (handle.ino, handle.writable, handle.backing.is_some());
                let closed = self.core().close(&handle.file, passthrough);
                drop(handle);
                if passthrough {
                    self.dropbacking(ino);
                }
                if writable {
                    self.publish(|| vec![Change::Data(ino)]);
                }
                closed?;
                reply::empty(unique)
            }
            Operation::Fsync(arg) => {
                let datasync = arg.fsync_flags & abi::FSYNC_FDATASYNC != 0;
                self.core().fsync(&self.handle(arg.fh)?.file, datasync)?;
                reply::empty(unique)
            }
            // Directories need no open: with NO_OPENDIR_SUPPORT the first ENOSYS ends opendir
            // and releasedir requests for the mount. Either way the kernel keeps a directory's
            // listing from one open to the next (CACHE_DIR with KEEP_CACHE, what it assumes
            // without opendir): it drops it when the directory changes through this mount, and
            // when its mtime moves once another mount's change (`coherence`) has made it fetch
            // the attributes again.
            Operation::Opendir(_) if self.no_opendir.load(Ordering::Relaxed) => {
                return Err(Error::NotImplemented("opendir"))
            }
            Operation::Opendir(_) => reply::open(unique, 0, fopen::CACHE_DIR | fopen::KEEP_CACHE, 0),
            Operation::Readdir(arg) => {
                let mut buffer = reply::DirBuffer::new(unique, arg.size);
                for e in self.listing(ino, arg.offset)? {
                    if !buffer.add(self.kernel_ino(e.ino), e.offset, reply::dirent_kind(mode_type(e.kind)), &e.name) {
                        break;
                    }
                }
                buffer.finish()
            }
            Operation::Readdirplus(arg) => {
                let mut buffer = reply::DirBuffer::new(unique, arg.size);
                for e in self.listing(ino, arg.offset)? {
                    // An entry removed since the listing was read is skipped, as if read later.
                    let Ok(attr) = self.core().getattr(e.ino) else { continue };
                    let kind = reply::dirent_kind(mode_type(e.kind));
                    if !buffer.add_plus(&self.entry(&attr), e.offset, kind, &e.name) {
                        break;
                    }
                }
                buffer.finish()
            }
            Operation::Fsyncdir(_) => {
                self.core().sync_metadata()?;
                reply::empty(unique)
            }
            Operation::Statfs => {
                // The volume's record as it is now: a resize shows at once.
                let s = self.core().statfs(&self.pool.volume(&self.volume.name)?)?;
                let st = Kstatfs {
                    blocks: s.blocks,
                    bfree: s.bfree,
                    bavail: s.bavail,
                    files: s.files,
                    ffree: s.ffree,
                    bsize: s.bsize,
                    namelen: s.namelen,
                    frsize: s.bsize,
                    ..Kstatfs::default()
                };
                reply::statfs(unique, &st)
            }
            Operation::Setxattr { arg, name, value } => {
                let mode = match arg.flags as i32 {
                    0 => XattrMode::Any,
                    libc::XATTR_CREATE => XattrMode::Create,
                    libc::XATTR_REPLACE => XattrMode::Replace,
                    flags => return Err(Error::Invalid(format!("setxattr flags {flags}"))),
                };
                let kill_sgid = arg.setxattr_flags & abi::SETXATTR_ACL_KILL_SGID != 0;
                self.core().setxattr(ino, name.as_bytes(), value, mode, kill_sgid)?;
                self.publish(|| vec![Change::Attr(ino)]);
                reply::empty(unique)
            }
            Operation::Getxattr { arg, name } => {
                xattr_answer(unique, &self.core().getxattr(ino, name.as_bytes())?, arg.size)?
            }
            Operation::Listxattr(arg) => xattr_answer(unique, &self.core().listxattr(ino)?, arg.size)?,
            Operation::Removexattr { name } => {
                self.core().removexattr(ino, name.as_bytes())?;
                self.publish(|| vec![Change::Attr(ino)]);
                reply::empty(unique)
            }
            // No ioctls; isatty() and friends ask routinely.
            Operation::Ioctl { .. } => return Err(Error::NoIoctl),
            Operation::Fallocate(arg) => {
                let handle = self.handle(arg.fh)?;
                self.core().fallocate(&handle.file, arg.offset, arg.length, arg.mode as i32)?;
                self.publish(|| vec![Change::Data(handle.ino)]);
                reply::empty(unique)
            }
            Operation::Lseek(arg) => {
                let at = self.core().lseek(&self.handle(arg.fh)?.file, arg.offset as i64, arg.whence as i32)?;
                reply::lseek(unique, at as u64)
            }
            Operation::CopyFileRange(arg) => {
                // The answer counts in 32 bits; copy no more than fits.
                let n = self.copy_file_range(arg, arg.len.min(u64::from(!0xfffu32)))?;
                reply::write(unique, n as u32)
            }
            Operation::CopyFileRange64(arg) => reply::copy_file_range_64(unique, self.copy_file_range(arg, arg.len)?),
            op => return Err(Error::NotImplemented(op.name())),
        }))
    }

    fn make_node(
        &self,
        unique: u64,
        caller: Caller,
        parent: Ino,
        name: &OsStr,
        spec: NodeSpec,
        mode: u32,
    ) -> Result<Vec<u8>, Error> {
        let attr = self.core().make_node(caller, parent, name.as_bytes(), spec, mode)?;
        self.publish_new_entry(parent, name);
        Ok(reply::entry(unique, &self.entry(&attr)))
    }

    fn setattr(&self, unique: u64, header: &abi::InHeader, ino: Ino, arg: &abi::SetattrIn) -> Result<Vec<u8>, Error> {
        let has = |bit: u32| arg.valid & bit != 0;
        let time = |now: u32, secs: u64, nanos: u32| {
            if has(now) {
                TimeSet::Now
            } else {
                TimeSet::At(kernel_time(secs, nanos))
            }
        };
        let set = SetAttr {
            mode: has(fattr::MODE).then_some(arg.mode),
            uid: has(fattr::UID).then_some(arg.uid),
            gid: has(fattr::GID).then_some(arg.gid),
            size: has(fattr::SIZE).then_some(arg.size),
            atime: has(fattr::ATIME).then(|| time(fattr::ATIME_NOW, arg.atime, arg.atimensec)),
            mtime: has(fattr::MTIME).then(|| time(fattr::MTIME_NOW, arg.mtime, arg.mtimensec)),
            ctime: has(fattr::CTIME),
            unprivileged: header.uid != 0,
        };
        let handle = if has(fattr::FH) { self.handles.get(&arg.fh).map(|h| h.clone()) } else { None };
        let attr = self.core().setattr(ino, &set, handle.as_ref().map(|h| &h.file))?;
        self.publish(|| vec![if set.size.is_some() { Change::Data(ino) } else { Change::Attr(ino) }]);
        Ok(self.attr(unique, &attr))
    }

    fn rename(
        &self,
        unique: u64,
        parent: Ino,
        name: &OsStr,
        newparent: u64,
        newname: &OsStr,
        flags: u32,
    ) -> Result<Vec<u8>, Error> {
        let mode = match flags {
            0 => RenameMode::Replace,
            libc::RENAME_EXCHANGE => RenameMode::Exchange,
            libc::RENAME_NOREPLACE => RenameMode::NoReplace,
            _ => return Err(Error::Invalid(format!("rename flags {flags:#x}"))),
        };
        let newparent = self.ino(newparent);
        let changed = self.core().rename(parent, name.as_bytes(), newparent, newname.as_bytes(), mode)?;
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
        Ok(reply::empty(unique))
    }

    fn copy_file_range(&self, arg: &abi::CopyFileRangeIn, len: u64) -> Result<u64, Error> {
        let (src, dst) = (self.handle(arg.fh_in)?, self.handle(arg.fh_out)?);
        let n = self.core().copy_file_range(&src.file, arg.off_in, &dst.file, arg.off_out, len)?;
        VolumeCounters::add(&self.counters.read_bytes, n);
        VolumeCounters::add(&self.counters.written_bytes, n);
        self.publish(|| vec![Change::Data(dst.ino)]);
        Ok(n)
    }
}
