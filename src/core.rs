//! The filesystem core: POSIX semantics over the inodes of every volume in a pool — names,
//! links, renames, ownership and mode bookkeeping, timestamps, xattrs. It returns plain structs
//! and `Error`; it knows nothing of FUSE, so it runs (and is tested) without a kernel mount.
//!
//! Mutations take one write lock, read what they need, and commit one transaction. Reads take
//! no lock. Regular files keep their bytes, size, atime and mtime in their data file, which the
//! kernel may write directly.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, RwLock};
use std::time::SystemTime;

use dashmap::DashMap;

use crate::data::blocks::allocated_total;
use crate::data::DataStore;
use crate::error::{Error, Result};
use crate::meta::{DataId, Dirent, Ino, Inode, Kind, Meta, Timestamp, Txn, Under, ViewId, VolumeId};
use crate::names::check_component;

pub mod acl;
mod capacity;
mod io;
mod passthrough;
mod snapshot;
mod subpath;
mod volumes;
mod xattr;

use acl::Acl;
pub use capacity::Account;
pub use io::OpenFile;
use io::IO_LOCKS;
use passthrough::DirectWrites;
pub use passthrough::Opened;
pub use snapshot::overlay::CHUNK;
pub use snapshot::{parse_snapshot_name, Source};

/// Most hard links one inode may have, as on ext4.
pub const LINK_MAX: u32 = 65_000;
/// The block size reported to applications.
pub const BLOCK_SIZE: u32 = 4096;

/// Who asks: ownership of new inodes comes from here, and the umask their mode loses when
/// the parent directory has no default ACL.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Caller {
    pub uid: u32,
    pub gid: u32,
    pub umask: u32,
}

impl Caller {
    pub const ROOT: Caller = Caller { uid: 0, gid: 0, umask: 0 };
}

/// The attributes of an inode, as `stat` shows them.
#[derive(Clone, Debug, PartialEq)]
pub struct Attr {
    pub ino: Ino,
    pub kind: Kind,
    pub perm: u32,
    pub nlink: u32,
    pub uid: u32,
    pub gid: u32,
    pub rdev: u32,
    pub size: u64,
    pub blocks: u64,
    pub atime: SystemTime,
    pub mtime: SystemTime,
    pub ctime: SystemTime,
    pub crtime: SystemTime,
}

/// A time to set: the present (UTIME_NOW) or a given one.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum TimeSet {
    Now,
    At(Timestamp),
}

/// The changes a setattr asks for; `None` leaves a field as it is.
#[derive(Clone, Debug, Default)]
pub struct SetAttr {
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub size: Option<u64>,
    pub atime: Option<TimeSet>,
    pub mtime: Option<TimeSet>,
    /// The caller set ctime: a chown to -1 -1 asks only this, and clears setuid/setgid as
    /// any chown does.
    pub ctime: bool,
    /// The caller is not root: its truncate clears setuid/setgid.
    pub unprivileged: bool,
}

impl SetAttr {
    /// Whether this change clears setuid, and setgid where group execute is set (not for
    /// directories): a chown (by anyone, also to -1 -1), and a truncate by an unprivileged
    /// caller. The kernel leaves this to the daemon (HANDLE_KILLPRIV_V2).
    fn kills_suidgid(&self) -> bool {
        let owners = self.uid.is_some() || self.gid.is_some();
        let chown = owners && self.mode.is_none();
        let bare_chown = self.ctime && !owners && self.mode.is_none() && self.size.is_none();
        chown || bare_chown || (self.size.is_some() && self.unprivileged)
    }
}

/// Clears setuid, and setgid where group execute is set (without it, setgid marks mandatory
/// locking and stays): the kernel's rule for writes, truncates and chown.
pub fn kill_suidgid(perm: u32) -> u32 {
    let mut perm = perm & !libc::S_ISUID;
    if perm & libc::S_IXGRP != 0 {
        perm &= !libc::S_ISGID;
    }
    perm
}

/// What a new inode is.
#[derive(Clone, Debug)]
pub enum NodeSpec {
    File,
    Dir,
    Symlink(Vec<u8>),
    Special(Kind, u32),
}

impl NodeSpec {
    fn kind(&self) -> Kind {
        match self {
            NodeSpec::File => Kind::File,
            NodeSpec::Dir => Kind::Dir,
            NodeSpec::Symlink(_) => Kind::Symlink,
            NodeSpec::Special(kind, _) => *kind,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RenameMode {
    /// Replace an existing target (plain rename).
    Replace,
    /// Fail with EEXIST if the target exists (RENAME_NOREPLACE).
    NoReplace,
    /// Swap source and target, both of which must exist (RENAME_EXCHANGE).
    Exchange,
}

/// One directory entry as readdir returns it; `offset` is where the next call resumes.
#[derive(Clone, Debug, PartialEq)]
pub struct DirEntry {
    pub ino: Ino,
    pub offset: u64,
    pub kind: Kind,
    pub name: Vec<u8>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StatFs {
    pub blocks: u64,
    pub bfree: u64,
    pub bavail: u64,
    pub files: u64,
    pub ffree: u64,
    pub bsize: u32,
    pub namelen: u32,
}

/// setxattr's XATTR_CREATE / XATTR_REPLACE.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XattrMode {
    Any,
    Create,
    Replace,
}

const READDIR_BATCH: usize = 256;

/// A data file and the volume whose space it takes.
#[derive(Clone, Debug)]
pub(crate) struct DataFile {
    pub volume: VolumeId,
    /// The inode it belonged to.
    pub ino: Ino,
    pub id: DataId,
    /// The shared data files under it.
    pub under: Under,
    /// Another view (a snapshot or clone) may still read it.
    pub shared: bool,
}

/// The filesystem core over one pool's metadata and data.
pub struct Core {
    meta: Meta,
    data: DataStore,
    pool_dir: PathBuf,
    write: Mutex<()>,
    /// How many opens each open inode has.
    open_files: DashMap<Ino, u32>,
    space: DashMap<VolumeId, Account>,
    direct: DashMap<Ino, DirectWrites>,
    /// The stacks of open files whose data a snapshot or clone shares in part, by inode, with
    /// the data file on top.
    overlays: DashMap<Ino, (DataId, io::SharedOverlay)>,
    /// Make measure-change-measure of one file's blocks atomic.
    io_locks: Vec<Mutex<()>>,
    /// The pool filesystem's block size: the unit of allocation.
    block: u64,
    /// Changes to file data hold it shared; cutting a snapshot or clone holds it alone, so a
    /// change is wholly before or wholly after the cut.
    cut: RwLock<()>,
}

const NEXT_VIEW: &str = "next_view";

impl Core {
    pub fn new(pool_dir: &Path, meta: Meta, data: DataStore) -> Result<Self> {
        let space = DashMap::new();
        for volume in meta.volumes()? {
            let used = meta.usage(volume.id)?.bytes;
            let inodes = volume.inode_limit();
            space.insert(volume.id, Account { capacity: volume.capacity, used, reserved: 0, inodes });
        }
        let block = statvfs(pool_dir)?.f_bsize.max(512);
        Ok(Core {
            meta,
            data,
            pool_dir: pool_dir.to_path_buf(),
            write: Mutex::new(()),
            open_files: DashMap::new(),
            space,
            direct: DashMap::new(),
            overlays: DashMap::new(),
            io_locks: (0..IO_LOCKS).map(|_| Mutex::new(())).collect(),
            block,
            cut: RwLock::new(()),
        })
    }

    pub fn meta(&self) -> &Meta {
        &self.meta
    }

    pub fn data(&self) -> &DataStore {
        &self.data
    }

    /// Serialises writers. Poisoning only means another writer panicked before committing,
    /// which leaves the store as it was, so the lock stays usable.
    pub(crate) fn lock(&self) -> MutexGuard<'_, ()> {
        self.write.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A fresh view id, recorded in `txn`; one per transaction. The caller holds the write lock.
    pub(crate) fn alloc_view(&self, txn: &mut Txn) -> Result<ViewId> {
        let next = self.meta.counter(NEXT_VIEW)?.max(1);
        if next > u64::from(ViewId::MAX) {
            return Err(Error::NoSpace(format!("the pool has used all {} volume and snapshot ids", ViewId::MAX)));
        }
        txn.put_counter(NEXT_VIEW, next + 1);
        Ok(ViewId(next as u32))
    }

    pub(crate) fn inode(&self, ino: Ino) -> Result<Inode> {
        self.meta.inode(ino)?.ok_or_else(|| Error::NotFound(format!("inode {}", ino.0)))
    }

    fn dir_inode(&self, ino: Ino) -> Result<Inode> {
        let inode = self.inode(ino)?;
        if inode.kind != Kind::Dir {
            return Err(Error::NotDir(format!("inode {}", ino.0)));
        }
        if inode.nlink == 0 {
            return Err(Error::NotFound(format!("directory {} was removed", ino.0)));
        }
        Ok(inode)
    }

    fn data_id(inode: &Inode, ino: Ino) -> Result<DataId> {
        inode.data.ok_or_else(|| Error::Corrupt(format!("regular file {} has no data file", ino.0)))
    }

    fn attr_of(&self, ino: Ino, inode: &Inode) -> Result<Attr> {
        let mut attr = Attr {
            ino,
            kind: inode.kind,
            perm: inode.perm,
            nlink: inode.nlink,
            uid: inode.uid,
            gid: inode.gid,
            rdev: inode.rdev,
            size: 0,
            blocks: 0,
            atime: inode.atime.to_system_time(),
            mtime: inode.mtime.to_system_time(),
            ctime: inode.ctime.to_system_time(),
            crtime: inode.crtime.to_system_time(),
        };
        match inode.kind {
            Kind::File => {
                let st = self.data.stat(Self::data_id(inode, ino)?)?;
                attr.size = st.size();
                attr.blocks = st.blocks();
                attr.atime = Timestamp { secs: st.atime(), nanos: st.atime_nsec() as u32 }.to_system_time();
                attr.mtime = Timestamp { secs: st.mtime(), nanos: st.mtime_nsec() as u32 }.to_system_time();
                let data_ctime = Timestamp { secs: st.ctime(), nanos: st.ctime_nsec() as u32 };
                attr.ctime = inode.ctime.max(data_ctime).to_system_time();
            }
            Kind::Dir => {
                attr.size = u64::from(BLOCK_SIZE);
                attr.blocks = u64::from(BLOCK_SIZE / 512);
            }
            Kind::Symlink => attr.size = inode.target.len() as u64,
            Kind::Fifo | Kind::Socket | Kind::CharDev | Kind::BlockDev => {}
        }
        Ok(attr)
    }

    pub fn getattr(&self, ino: Ino) -> Result<Attr> {
        let inode = self.inode(ino)?;
        self.attr_of(ino, &inode)
    }

    pub fn lookup(&self, parent: Ino, name: &[u8]) -> Result<Attr> {
        check_component(name)?;
        self.dir_inode(parent)?;
        let entry = self.meta.dirent(parent, name)?.ok_or_else(|| Error::NotFound(lossy(name)))?;
        self.getattr(entry.ino)
    }

    fn change_usage(&self, txn: &mut Txn, volume: VolumeId, inodes: i64) -> Result<()> {
        let mut usage = self.meta.usage(volume)?;
        usage.inodes = usage.inodes.saturating_add_signed(inodes);
        usage.bytes = self.account(volume).used;
        txn.put_usage(volume, &usage);
        Ok(())
    }

    /// Creates a new inode named `name` in `parent` (mknod, mkdir, symlink; `create` also
    /// opens a new regular file).
    pub fn make_node(&self, caller: Caller, parent: Ino, name: &[u8], spec: NodeSpec, perm: u32) -> Result<Attr> {
        self.make(caller, parent, name, spec, perm, false).map(|(attr, _)| attr)
    }

    /// `make_node`; with `open`, a new regular file comes back open for reading and writing.
    fn make(
        &self,
        caller: Caller,
        parent: Ino,
        name: &[u8],
        spec: NodeSpec,
        perm: u32,
        open: bool,
    ) -> Result<(Attr, Option<OpenFile>)> {
        check_component(name)?;
        let _w = self.lock();
        let mut dir = self.dir_inode(parent)?;
        if self.meta.dirent(parent, name)?.is_some() {
            return Err(Error::Exists(lossy(name)));
        }
        self.check_inode_room(dir.volume)?;
        let now = Timestamp::now();
        let kind = spec.kind();
        let mut perm = perm & 0o7777;
        let gid = if dir.perm & libc::S_ISGID != 0 {
            if kind == Kind::Dir {
                perm |= libc::S_ISGID;
            }
            dir.gid
        } else {
            caller.gid
        };
        let mut txn = Txn::default();
        let ino = Ino::new(parent.view(), self.meta.alloc_id(&mut txn));
        let default_acl = match kind {
            Kind::Symlink => None,
            _ => self.meta.xattr(parent, acl::DEFAULT)?,
        };
        match default_acl {
            // The parent's default ACL takes the umask's place (posix_acl_create).
            Some(default) => {
                let mut inherited = Acl::parse(&default)
                    .map_err(|e| Error::Corrupt(format!("default ACL of directory {}: {e}", parent.0)))?;
                let (mode, needs_acl) = inherited.create(perm);
                perm = mode;
                if needs_acl {
                    txn.put_xattr(ino, acl::ACCESS, &inherited.to_xattr());
                }
                if kind == Kind::Dir {
                    txn.put_xattr(ino, acl::DEFAULT, &default);
                }
            }
            None => perm &= !caller.umask,
        }
        let mut inode = Inode::new(dir.volume, kind, perm, (caller.uid, gid), parent, now);
        let mut file = None;
        match spec {
            NodeSpec::File => {
                let id = DataId(self.meta.alloc_id(&mut txn));
                inode.data = Some(id);
                inode.data_layer = self.meta.view(parent.view())?.head();
                let data = self.data.create(id)?;
                if open {
                    file = Some(self.new_open_file(ino, &inode, data)?);
                }
            }
            NodeSpec::Symlink(target) => inode.target = target,
            NodeSpec::Special(_, rdev) => inode.rdev = rdev,
            NodeSpec::Dir => {}
        }
        let cookie = dir.next_cookie;
        dir.next_cookie += 1;
        dir.entries += 1;
        if kind == Kind::Dir {
            dir.nlink += 1;
        }
        dir.mtime = now;
        dir.ctime = now;
        txn.put_inode(ino, &inode);
        txn.put_inode(parent, &dir);
        txn.put_dirent(parent, name, Dirent { ino, kind, cookie });
        self.change_usage(&mut txn, inode.volume, 1)?;
        if let Err(e) = self.meta.commit(txn) {
            if let Some(id) = inode.data {
                let _ = self.data.remove(id);
            }
            return Err(e);
        }
        if file.is_some() {
            self.open_files.entry(ino).and_modify(|n| *n += 1).or_insert(1);
        }
        Ok((self.attr_of(ino, &inode)?, file))
    }

    pub fn readlink(&self, ino: Ino) -> Result<Vec<u8>> {
        let inode = self.inode(ino)?;
        if inode.kind != Kind::Symlink {
            return Err(Error::Invalid(format!("inode {} is not a symbolic link", ino.0)));
        }
        Ok(inode.target)
    }

    pub fn link(&self, ino: Ino, new_parent: Ino, new_name: &[u8]) -> Result<Attr> {
        check_component(new_name)?;
        let _w = self.lock();
        let mut inode = self.inode(ino)?;
        if inode.kind == Kind::Dir {
            return Err(Error::NotPermitted("hard links to directories".into()));
        }
        if inode.nlink == 0 {
            return Err(Error::NotFound(format!("inode {} was removed", ino.0)));
        }
        if inode.nlink >= LINK_MAX {
            return Err(Error::TooManyLinks);
        }
        let mut dir = self.dir_inode(new_parent)?;
        if dir.volume != inode.volume {
            return Err(Error::CrossVolume);
        }
        if self.meta.dirent(new_parent, new_name)?.is_some() {
            return Err(Error::Exists(lossy(new_name)));
        }
        let now = Timestamp::now();
        inode.nlink += 1;
        inode.ctime = now;
        let cookie = dir.next_cookie;
        dir.next_cookie += 1;
        dir.entries += 1;
        dir.mtime = now;
        dir.ctime = now;
        let mut txn = Txn::default();
        txn.put_inode(ino, &inode);
        txn.put_inode(new_parent, &dir);
        txn.put_dirent(new_parent, new_name, Dirent { ino, kind: inode.kind, cookie });
        self.meta.commit(txn)?;
        self.attr_of(ino, &inode)
    }

    /// Drops one link of `inode` inside `txn`. When none is left the inode goes, unless it is
    /// still open: then it waits, recorded as an orphan, for its last release. Returns the data
    /// file to remove once `txn` has committed.
    fn unlink_inode(&self, txn: &mut Txn, ino: Ino, inode: &mut Inode, now: Timestamp) -> Result<Option<DataFile>> {
        inode.nlink = inode.nlink.saturating_sub(1);
        inode.ctime = now;
        if inode.nlink > 0 {
            txn.put_inode(ino, inode);
            return Ok(None);
        }
        if self.open_files.get(&ino).is_some_and(|n| *n > 0) {
            txn.put_inode(ino, inode);
            txn.put_orphan(ino);
            return Ok(None);
        }
        self.delete_inode(txn, ino, inode)
    }

    /// Removes an inode with no links and no opener, with its xattrs. Returns its data file.
    fn delete_inode(&self, txn: &mut Txn, ino: Ino, inode: &Inode) -> Result<Option<DataFile>> {
        txn.delete_inode(ino);
        txn.delete_orphan(ino);
        for name in self.meta.xattr_names(ino)? {
            txn.delete_xattr(ino, &name);
        }
        self.change_usage(txn, inode.volume, -1)?;
        let owned = inode.data_layer == self.meta.view(ino.view())?.head();
        Ok(inode.data.map(|id| DataFile { volume: inode.volume, ino, id, under: inode.under.clone(), shared: !owned }))
    }

    /// Volumes let go of data files: their blocks leave the volumes' usage, then each file
    /// goes unless another view (a snapshot or clone) still reads it. All are counted before
    /// any goes, since several may share one.
    pub(crate) fn remove_data(&self, data: impl IntoIterator<Item = DataFile>) {
        let data: Vec<DataFile> = data.into_iter().collect();
        for DataFile { volume, id, under, .. } in &data {
            match self.file_usage(*id, under) {
                Ok(bytes) => self.charge(*volume, -(bytes as i64)),
                Err(e) => tracing::warn!(data = id.0, error = %e, "could not count the blocks of a data file"),
            }
        }
        for DataFile { ino, id, under, shared, .. } in data {
            // The shared files under it, and it too when shared, may still be another view's.
            let maybe_seen = under.lower.iter().map(|(d, _)| (*d, true));
            for (id, shared) in std::iter::once((id, shared)).chain(maybe_seen) {
                if shared {
                    match self.seen_elsewhere(ino, id) {
                        Ok(false) => tracing::debug!(data = id.0, "no view reads a shared data file any more"),
                        Ok(true) => continue,
                        Err(e) => {
                            // Kept: the next delete of a view, or fsck --repair, reclaims it.
                            tracing::warn!(data = id.0, error = %e, "could not tell whether another view reads a data file");
                            continue;
                        }
                    }
                }
                if let Err(e) = self.data.remove(id) {
                    // fsck --repair reclaims a data file left behind.
                    tracing::warn!(data = id.0, error = %e, "could not remove data file");
                }
            }
        }
    }

    /// Bytes of data blocks a file with data file `id` and `under` it holds: its own where it
    /// holds the chunk, the shared files' below elsewhere.
    pub(crate) fn file_usage(&self, id: DataId, under: &Under) -> Result<u64> {
        let top = self.data.open(id)?;
        if under.is_empty() {
            return Ok(allocated_total(&top)?);
        }
        Ok(snapshot::overlay::Overlay::load(&self.data, under)?.allocated_total(&top)?)
    }

    /// Whether a view other than that of `ino` still sees data file `id` as the inode's data.
    /// Only the views of one lineage share inode numbers, so asking each view is enough.
    pub(super) fn seen_elsewhere(&self, ino: Ino, id: DataId) -> Result<bool> {
        for (&view, _) in self.meta.views().iter() {
            if view == ino.view() {
                continue;
            }
            if self.meta.inode(ino.in_view(view))?.is_some_and(|i| i.data_files().any(|d| d == id)) {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Removes a name; returns the inode that lost a link.
    pub fn unlink(&self, parent: Ino, name: &[u8]) -> Result<Ino> {
        check_component(name)?;
        let _w = self.lock();
        let mut dir = self.dir_inode(parent)?;
        let entry = self.meta.dirent(parent, name)?.ok_or_else(|| Error::NotFound(lossy(name)))?;
        if entry.kind == Kind::Dir {
            return Err(Error::IsDir(lossy(name)));
        }
        let mut inode = self.inode(entry.ino)?;
        let now = Timestamp::now();
        let mut txn = Txn::default();
        txn.delete_dirent(parent, name, entry);
        dir.entries -= 1;
        dir.mtime = now;
        dir.ctime = now;
        txn.put_inode(parent, &dir);
        let data = self.unlink_inode(&mut txn, entry.ino, &mut inode, now)?;
        self.meta.commit(txn)?;
        self.remove_data(data);
        Ok(entry.ino)
    }

    pub fn rmdir(&self, parent: Ino, name: &[u8]) -> Result<()> {
        check_component(name)?;
        let _w = self.lock();
        let mut dir = self.dir_inode(parent)?;
        let entry = self.meta.dirent(parent, name)?.ok_or_else(|| Error::NotFound(lossy(name)))?;
        if entry.kind != Kind::Dir {
            return Err(Error::NotDir(lossy(name)));
        }
        let child = self.inode(entry.ino)?;
        if child.entries > 0 {
            return Err(Error::NotEmpty(lossy(name)));
        }
        let now = Timestamp::now();
        let mut txn = Txn::default();
        txn.delete_dirent(parent, name, entry);
        dir.entries -= 1;
        dir.nlink -= 1;
        dir.mtime = now;
        dir.ctime = now;
        txn.put_inode(parent, &dir);
        self.delete_inode(&mut txn, entry.ino, &child)?;
        self.meta.commit(txn)
    }

    /// Fails with EINVAL if `dir` lies inside the subtree of `moved` (or is it).
    fn check_not_inside(&self, dir: Ino, moved: Ino) -> Result<()> {
        let mut cur = dir;
        loop {
            if cur == moved {
                return Err(Error::Invalid("cannot move a directory into itself".into()));
            }
            let inode = self.inode(cur)?;
            if inode.parent == cur {
                return Ok(());
            }
            cur = inode.parent;
        }
    }

    /// Renames; returns the inodes whose attributes changed, besides the two directories.
    pub fn rename(
        &self,
        parent: Ino,
        name: &[u8],
        new_parent: Ino,
        new_name: &[u8],
        mode: RenameMode,
    ) -> Result<Vec<Ino>> {
        check_component(name)?;
        check_component(new_name)?;
        let _w = self.lock();
        let src_dir = self.dir_inode(parent)?;
        let dst_dir = if new_parent == parent { src_dir.clone() } else { self.dir_inode(new_parent)? };
        if src_dir.volume != dst_dir.volume {
            return Err(Error::CrossVolume);
        }
        let src = self.meta.dirent(parent, name)?.ok_or_else(|| Error::NotFound(lossy(name)))?;
        let dst = self.meta.dirent(new_parent, new_name)?;
        let now = Timestamp::now();
        // Directories touched, by inode number, written once at the end.
        let mut dirs: Vec<(Ino, Inode)> = vec![(parent, src_dir)];
        if new_parent != parent {
            dirs.push((new_parent, dst_dir));
        }
        let mut txn = Txn::default();
        let mut removed_data = None;
        match (mode, dst) {
            (RenameMode::NoReplace, Some(_)) => return Err(Error::Exists(lossy(new_name))),
            (RenameMode::Exchange, None) => return Err(Error::NotFound(lossy(new_name))),
            (RenameMode::Exchange, Some(dst)) => {
                if src.ino == dst.ino {
                    return Ok(Vec::new());
                }
                if src.kind == Kind::Dir {
                    self.check_not_inside(new_parent, src.ino)?;
                }
                if dst.kind == Kind::Dir {
                    self.check_not_inside(parent, dst.ino)?;
                }
                txn.put_dirent(parent, name, Dirent { cookie: src.cookie, ..dst });
                txn.put_dirent(new_parent, new_name, Dirent { cookie: dst.cookie, ..src });
                for (moved, to) in [(src, new_parent), (dst, parent)] {
                    let mut inode = self.inode(moved.ino)?;
                    inode.ctime = now;
                    if moved.kind == Kind::Dir && parent != new_parent {
                        inode.parent = to;
                        let from = if to == parent { new_parent } else { parent };
                        adjust_dir(&mut dirs, from, |d| d.nlink -= 1);
                        adjust_dir(&mut dirs, to, |d| d.nlink += 1);
                    }
                    txn.put_inode(moved.ino, &inode);
                }
            }
            (_, dst) => {
                if let Some(dst) = dst {
                    if dst.ino == src.ino {
                        // Two names of one file: POSIX says do nothing.
                        return Ok(Vec::new());
                    }
                    match (src.kind == Kind::Dir, dst.kind == Kind::Dir) {
                        (true, false) => return Err(Error::NotDir(lossy(new_name))),
                        (false, true) => return Err(Error::IsDir(lossy(new_name))),
                        _ => {}
                    }
                    if src.kind == Kind::Dir {
                        self.check_not_inside(new_parent, src.ino)?;
                    }
                    let mut victim = self.inode(dst.ino)?;
                    if dst.kind == Kind::Dir {
                        if victim.entries > 0 {
                            return Err(Error::NotEmpty(lossy(new_name)));
                        }
                        adjust_dir(&mut dirs, new_parent, |d| d.nlink -= 1);
                        self.delete_inode(&mut txn, dst.ino, &victim)?;
                    } else {
                        removed_data = self.unlink_inode(&mut txn, dst.ino, &mut victim, now)?;
                    }
                    txn.delete_dirent(new_parent, new_name, dst);
                    adjust_dir(&mut dirs, new_parent, |d| d.entries -= 1);
                } else if src.kind == Kind::Dir {
                    self.check_not_inside(new_parent, src.ino)?;
                }
                let cookie = {
                    let d = &mut dirs.iter_mut().find(|(i, _)| *i == new_parent).expect("target dir loaded").1;
                    d.next_cookie += 1;
                    d.entries += 1;
                    d.next_cookie - 1
                };
                txn.delete_dirent(parent, name, src);
                adjust_dir(&mut dirs, parent, |d| d.entries -= 1);
                txn.put_dirent(new_parent, new_name, Dirent { cookie, ..src });
                let mut inode = self.inode(src.ino)?;
                inode.ctime = now;
                if src.kind == Kind::Dir && parent != new_parent {
                    inode.parent = new_parent;
                    adjust_dir(&mut dirs, parent, |d| d.nlink -= 1);
                    adjust_dir(&mut dirs, new_parent, |d| d.nlink += 1);
                }
                txn.put_inode(src.ino, &inode);
            }
        }
        for (ino, dir) in &mut dirs {
            dir.mtime = now;
            dir.ctime = now;
            txn.put_inode(*ino, dir);
        }
        self.meta.commit(txn)?;
        self.remove_data(removed_data);
        Ok(std::iter::once(src.ino).chain(dst.map(|d| d.ino)).collect())
    }

    pub fn setattr(&self, ino: Ino, set: &SetAttr, file: Option<&OpenFile>) -> Result<Attr> {
        let sets_times = set.atime.is_some() || set.mtime.is_some();
        if set.size.is_some() || sets_times {
            match self.inode(ino)?.kind {
                // A regular file keeps its size and times in its data file.
                Kind::File => self.change_data(ino, set, file)?,
                _ if set.size.is_none() => {}
                Kind::Dir => return Err(Error::IsDir(format!("inode {}", ino.0))),
                _ => return Err(Error::Invalid(format!("cannot truncate inode {}", ino.0))),
            }
        }
        let _w = self.lock();
        let mut inode = self.inode(ino)?;
        let mut txn = Txn::default();
        if let Some(mode) = set.mode {
            inode.perm = mode & 0o7777;
            // The access ACL follows the mode (posix_acl_chmod).
            if let Some(value) = self.meta.xattr(ino, acl::ACCESS)? {
                let mut access =
                    Acl::parse(&value).map_err(|e| Error::Corrupt(format!("access ACL of inode {}: {e}", ino.0)))?;
                access.chmod(inode.perm);
                txn.put_xattr(ino, acl::ACCESS, &access.to_xattr());
            }
        }
        if set.kills_suidgid() && inode.kind != Kind::Dir {
            inode.perm = kill_suidgid(inode.perm);
        }
        if let Some(uid) = set.uid {
            inode.uid = uid;
        }
        if let Some(gid) = set.gid {
            inode.gid = gid;
        }
        if sets_times && inode.kind != Kind::File {
            let resolve = |t: TimeSet| match t {
                TimeSet::Now => Timestamp::now(),
                TimeSet::At(t) => t,
            };
            if let Some(t) = set.atime {
                inode.atime = resolve(t);
            }
            if let Some(t) = set.mtime {
                inode.mtime = resolve(t);
            }
        }
        inode.ctime = Timestamp::now();
        txn.put_inode(ino, &inode);
        self.meta.commit(txn)?;
        self.attr_of(ino, &inode)
    }

    /// Entries of a directory after `offset` (0 = from the start, including `.` and `..`).
    pub fn readdir(&self, ino: Ino, offset: u64) -> Result<Vec<DirEntry>> {
        let dir = self.inode(ino)?;
        if dir.kind != Kind::Dir {
            return Err(Error::NotDir(format!("inode {}", ino.0)));
        }
        let mut out = Vec::new();
        if offset < 1 {
            out.push(DirEntry { ino, offset: 1, kind: Kind::Dir, name: b".".to_vec() });
        }
        if offset < 2 {
            out.push(DirEntry { ino: dir.parent, offset: 2, kind: Kind::Dir, name: b"..".to_vec() });
        }
        for (name, e) in self.meta.entries_after(ino, offset.max(2), READDIR_BATCH)? {
            out.push(DirEntry { ino: e.ino, offset: e.cookie, kind: e.kind, name });
        }
        Ok(out)
    }
}

fn adjust_dir(dirs: &mut [(Ino, Inode)], ino: Ino, change: impl FnOnce(&mut Inode)) {
    if let Some((_, d)) = dirs.iter_mut().find(|(i, _)| *i == ino) {
        change(d);
    }
}

fn to_off(v: u64) -> Result<i64> {
    i64::try_from(v).map_err(|_| Error::TooLarge)
}

fn lossy(name: &[u8]) -> String {
    String::from_utf8_lossy(name).into_owned()
}

pub fn statvfs(path: &Path) -> Result<rustix::fs::StatVfs> {
    Ok(rustix::fs::statvfs(path)?)
}
