//! The Linux FUSE kernel ABI, protocol 7.45 (include/uapi/linux/fuse.h of kernel 6.18),
//! in Rust names: `struct fuse_entry_out` is `EntryOut`, `FUSE_LOOKUP` is `opcode::LOOKUP`.
//! Every struct is `#[repr(C)]` without implicit padding, so zerocopy converts it to and
//! from bytes. Fields the kernel calls padding, unused or dummy keep their names.

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

pub const KERNEL_VERSION: u32 = 7;
pub const KERNEL_MINOR_VERSION: u32 = 45;
pub const ROOT_ID: u64 = 1;
/// The kernel refuses reads of /dev/fuse into smaller buffers.
pub const MIN_READ_BUFFER: usize = 8192;

/// `InHeader::uid`/`gid` with `ALLOW_IDMAP` when the caller's ids have no mapping.
pub const INVALID_UIDGID: u32 = u32::MAX;

/// Set in `InHeader::unique` of a request the kernel sends again after `NOTIFY_RESEND`.
pub const UNIQUE_RESEND: u64 = 1 << 63;

pub mod opcode {
    pub const LOOKUP: u32 = 1;
    pub const FORGET: u32 = 2; // no reply
    pub const GETATTR: u32 = 3;
    pub const SETATTR: u32 = 4;
    pub const READLINK: u32 = 5;
    pub const SYMLINK: u32 = 6;
    pub const MKNOD: u32 = 8;
    pub const MKDIR: u32 = 9;
    pub const UNLINK: u32 = 10;
    pub const RMDIR: u32 = 11;
    pub const RENAME: u32 = 12;
    pub const LINK: u32 = 13;
    pub const OPEN: u32 = 14;
    pub const READ: u32 = 15;
    pub const WRITE: u32 = 16;
    pub const STATFS: u32 = 17;
    pub const RELEASE: u32 = 18;
    pub const FSYNC: u32 = 20;
    pub const SETXATTR: u32 = 21;
    pub const GETXATTR: u32 = 22;
    pub const LISTXATTR: u32 = 23;
    pub const REMOVEXATTR: u32 = 24;
    pub const FLUSH: u32 = 25;
    pub const INIT: u32 = 26;
    pub const OPENDIR: u32 = 27;
    pub const READDIR: u32 = 28;
    pub const RELEASEDIR: u32 = 29;
    pub const FSYNCDIR: u32 = 30;
    pub const GETLK: u32 = 31;
    pub const SETLK: u32 = 32;
    pub const SETLKW: u32 = 33;
    pub const ACCESS: u32 = 34;
    pub const CREATE: u32 = 35;
    pub const INTERRUPT: u32 = 36;
    pub const BMAP: u32 = 37;
    pub const DESTROY: u32 = 38;
    pub const IOCTL: u32 = 39;
    pub const POLL: u32 = 40;
    pub const NOTIFY_REPLY: u32 = 41;
    pub const BATCH_FORGET: u32 = 42; // no reply
    pub const FALLOCATE: u32 = 43;
    pub const READDIRPLUS: u32 = 44;
    pub const RENAME2: u32 = 45;
    pub const LSEEK: u32 = 46;
    pub const COPY_FILE_RANGE: u32 = 47;
    pub const SETUPMAPPING: u32 = 48;
    pub const REMOVEMAPPING: u32 = 49;
    pub const SYNCFS: u32 = 50;
    pub const TMPFILE: u32 = 51;
    pub const STATX: u32 = 52;
    pub const COPY_FILE_RANGE_64: u32 = 53;
    pub const CUSE_INIT: u32 = 4096;
}

/// Codes of unsolicited messages, sent in `OutHeader::error` with `unique` 0.
pub mod notify {
    pub const POLL: i32 = 1;
    pub const INVAL_INODE: i32 = 2;
    pub const INVAL_ENTRY: i32 = 3;
    pub const STORE: i32 = 4;
    pub const RETRIEVE: i32 = 5;
    pub const DELETE: i32 = 6;
    pub const RESEND: i32 = 7;
    pub const INC_EPOCH: i32 = 8;
    pub const PRUNE: i32 = 9;
}

/// INIT flags. Bits 32 and up travel in `flags2` and count only with `INIT_EXT`.
pub mod init_flags {
    pub const ASYNC_READ: u64 = 1 << 0;
    pub const POSIX_LOCKS: u64 = 1 << 1;
    pub const FILE_OPS: u64 = 1 << 2;
    pub const ATOMIC_O_TRUNC: u64 = 1 << 3;
    pub const EXPORT_SUPPORT: u64 = 1 << 4;
    pub const BIG_WRITES: u64 = 1 << 5;
    pub const DONT_MASK: u64 = 1 << 6;
    pub const SPLICE_WRITE: u64 = 1 << 7;
    pub const SPLICE_MOVE: u64 = 1 << 8;
    pub const SPLICE_READ: u64 = 1 << 9;
    pub const FLOCK_LOCKS: u64 = 1 << 10;
    pub const HAS_IOCTL_DIR: u64 = 1 << 11;
    pub const AUTO_INVAL_DATA: u64 = 1 << 12;
    pub const DO_READDIRPLUS: u64 = 1 << 13;
    pub const READDIRPLUS_AUTO: u64 = 1 << 14;
    pub const ASYNC_DIO: u64 = 1 << 15;
    pub const WRITEBACK_CACHE: u64 = 1 << 16;
    pub const NO_OPEN_SUPPORT: u64 = 1 << 17;
    pub const PARALLEL_DIROPS: u64 = 1 << 18;
    pub const HANDLE_KILLPRIV: u64 = 1 << 19;
    pub const POSIX_ACL: u64 = 1 << 20;
    pub const ABORT_ERROR: u64 = 1 << 21;
    pub const MAX_PAGES: u64 = 1 << 22;
    pub const CACHE_SYMLINKS: u64 = 1 << 23;
    pub const NO_OPENDIR_SUPPORT: u64 = 1 << 24;
    pub const EXPLICIT_INVAL_DATA: u64 = 1 << 25;
    pub const MAP_ALIGNMENT: u64 = 1 << 26;
    pub const SUBMOUNTS: u64 = 1 << 27;
    pub const HANDLE_KILLPRIV_V2: u64 = 1 << 28;
    pub const SETXATTR_EXT: u64 = 1 << 29;
    pub const INIT_EXT: u64 = 1 << 30;
    pub const INIT_RESERVED: u64 = 1 << 31;
    pub const SECURITY_CTX: u64 = 1 << 32;
    pub const HAS_INODE_DAX: u64 = 1 << 33;
    pub const CREATE_SUPP_GROUP: u64 = 1 << 34;
    pub const HAS_EXPIRE_ONLY: u64 = 1 << 35;
    pub const DIRECT_IO_ALLOW_MMAP: u64 = 1 << 36;
    pub const PASSTHROUGH: u64 = 1 << 37;
    pub const NO_EXPORT_SUPPORT: u64 = 1 << 38;
    pub const HAS_RESEND: u64 = 1 << 39;
    pub const ALLOW_IDMAP: u64 = 1 << 40;
    pub const OVER_IO_URING: u64 = 1 << 41;
    pub const REQUEST_TIMEOUT: u64 = 1 << 42;
}

/// `OpenOut::open_flags`.
pub mod fopen {
    pub const DIRECT_IO: u32 = 1 << 0;
    pub const KEEP_CACHE: u32 = 1 << 1;
    pub const NONSEEKABLE: u32 = 1 << 2;
    pub const CACHE_DIR: u32 = 1 << 3;
    pub const STREAM: u32 = 1 << 4;
    pub const NOFLUSH: u32 = 1 << 5;
    pub const PARALLEL_DIRECT_WRITES: u32 = 1 << 6;
    pub const PASSTHROUGH: u32 = 1 << 7;
}

/// `SetattrIn::valid`.
pub mod fattr {
    pub const MODE: u32 = 1 << 0;
    pub const UID: u32 = 1 << 1;
    pub const GID: u32 = 1 << 2;
    pub const SIZE: u32 = 1 << 3;
    pub const ATIME: u32 = 1 << 4;
    pub const MTIME: u32 = 1 << 5;
    pub const FH: u32 = 1 << 6;
    pub const ATIME_NOW: u32 = 1 << 7;
    pub const MTIME_NOW: u32 = 1 << 8;
    pub const LOCKOWNER: u32 = 1 << 9;
    pub const CTIME: u32 = 1 << 10;
    pub const KILL_SUIDGID: u32 = 1 << 11;
}

/// `OpenIn::open_flags` and `CreateIn::open_flags`.
pub const OPEN_KILL_SUIDGID: u32 = 1 << 0;
pub const GETATTR_FH: u32 = 1 << 0;
pub const RELEASE_FLUSH: u32 = 1 << 0;
pub const RELEASE_FLOCK_UNLOCK: u32 = 1 << 1;
pub const LK_FLOCK: u32 = 1 << 0;
pub const WRITE_CACHE: u32 = 1 << 0;
pub const WRITE_LOCKOWNER: u32 = 1 << 1;
pub const WRITE_KILL_SUIDGID: u32 = 1 << 2;
pub const READ_LOCKOWNER: u32 = 1 << 1;
pub const FSYNC_FDATASYNC: u32 = 1 << 0;
pub const SETXATTR_ACL_KILL_SGID: u32 = 1 << 0;
pub const POLL_SCHEDULE_NOTIFY: u32 = 1 << 0;
pub const ATTR_SUBMOUNT: u32 = 1 << 0;
pub const ATTR_DAX: u32 = 1 << 1;
/// `NotifyInvalEntryOut::flags`: let the entry time out instead of dropping it.
pub const EXPIRE_ONLY: u32 = 1 << 0;
pub const IOCTL_COMPAT: u32 = 1 << 0;
pub const IOCTL_UNRESTRICTED: u32 = 1 << 1;
pub const IOCTL_RETRY: u32 = 1 << 2;
pub const IOCTL_32BIT: u32 = 1 << 3;
pub const IOCTL_DIR: u32 = 1 << 4;
pub const IOCTL_COMPAT_X32: u32 = 1 << 5;
pub const IOCTL_MAX_IOV: u32 = 256;

/// Sizes older kernels send or accept, for the structs that grew.
pub const COMPAT_ENTRY_OUT_SIZE: usize = 120;
pub const COMPAT_ATTR_OUT_SIZE: usize = 96;
pub const COMPAT_MKNOD_IN_SIZE: usize = 8;
pub const COMPAT_WRITE_IN_SIZE: usize = 24;
pub const COMPAT_STATFS_SIZE: usize = 48;
pub const COMPAT_SETXATTR_IN_SIZE: usize = 8;
pub const COMPAT_INIT_OUT_SIZE: usize = 8;
pub const COMPAT_22_INIT_OUT_SIZE: usize = 24;

/// ioctl numbers on /dev/fuse, encoded as asm-generic/ioctl.h does.
const IOC_WRITE: u32 = 1;
const IOC_READ: u32 = 2;
const fn ioc(dir: u32, kind: u32, nr: u32, size: u32) -> u32 {
    (dir << 30) | (size << 16) | (kind << 8) | nr
}
pub const DEV_IOC_MAGIC: u32 = 229;
/// `_IOR(229, 0, uint32_t)`: the new fd serves the same connection as the fd passed.
pub const DEV_IOC_CLONE: u32 = ioc(IOC_READ, DEV_IOC_MAGIC, 0, 4);
/// `_IOW(229, 1, struct fuse_backing_map)`: returns a backing id for `OpenOut`.
pub const DEV_IOC_BACKING_OPEN: u32 = ioc(IOC_WRITE, DEV_IOC_MAGIC, 1, size_of::<BackingMap>() as u32);
/// `_IOW(229, 2, uint32_t)`.
pub const DEV_IOC_BACKING_CLOSE: u32 = ioc(IOC_WRITE, DEV_IOC_MAGIC, 2, 4);
/// `_IO(229, 3)`.
pub const DEV_IOC_SYNC_INIT: u32 = ioc(0, DEV_IOC_MAGIC, 3, 0);

macro_rules! abi_struct {
    ($(#[$meta:meta])* $name:ident { $($field:ident : $ty:ty),* $(,)? }) => {
        $(#[$meta])*
        #[repr(C)]
        #[derive(Debug, Default, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
        pub struct $name {
            $(pub $field: $ty),*
        }
    };
}

abi_struct!(Attr {
    ino: u64,
    size: u64,
    blocks: u64,
    atime: u64,
    mtime: u64,
    ctime: u64,
    atimensec: u32,
    mtimensec: u32,
    ctimensec: u32,
    mode: u32,
    nlink: u32,
    uid: u32,
    gid: u32,
    rdev: u32,
    blksize: u32,
    flags: u32,
});

abi_struct!(SxTime { tv_sec: i64, tv_nsec: u32, reserved: i32 });

abi_struct!(Statx {
    mask: u32,
    blksize: u32,
    attributes: u64,
    nlink: u32,
    uid: u32,
    gid: u32,
    mode: u16,
    spare0: [u16; 1],
    ino: u64,
    size: u64,
    blocks: u64,
    attributes_mask: u64,
    atime: SxTime,
    btime: SxTime,
    ctime: SxTime,
    mtime: SxTime,
    rdev_major: u32,
    rdev_minor: u32,
    dev_major: u32,
    dev_minor: u32,
    spare2: [u64; 14],
});

abi_struct!(Kstatfs {
    blocks: u64,
    bfree: u64,
    bavail: u64,
    files: u64,
    ffree: u64,
    bsize: u32,
    namelen: u32,
    frsize: u32,
    padding: u32,
    spare: [u32; 6],
});

abi_struct!(FileLock { start: u64, end: u64, kind: u32, pid: u32 });

abi_struct!(EntryOut {
    nodeid: u64,
    generation: u64,
    entry_valid: u64,
    attr_valid: u64,
    entry_valid_nsec: u32,
    attr_valid_nsec: u32,
    attr: Attr,
});

abi_struct!(ForgetIn { nlookup: u64 });
abi_struct!(ForgetOne { nodeid: u64, nlookup: u64 });
abi_struct!(BatchForgetIn { count: u32, dummy: u32 });
abi_struct!(GetattrIn { getattr_flags: u32, dummy: u32, fh: u64 });
abi_struct!(AttrOut { attr_valid: u64, attr_valid_nsec: u32, dummy: u32, attr: Attr });
abi_struct!(StatxIn { getattr_flags: u32, reserved: u32, fh: u64, sx_flags: u32, sx_mask: u32 });
abi_struct!(StatxOut { attr_valid: u64, attr_valid_nsec: u32, flags: u32, spare: [u64; 2], stat: Statx });
abi_struct!(MknodIn { mode: u32, rdev: u32, umask: u32, padding: u32 });
abi_struct!(MkdirIn { mode: u32, umask: u32 });
abi_struct!(RenameIn { newdir: u64 });
abi_struct!(Rename2In { newdir: u64, flags: u32, padding: u32 });
abi_struct!(LinkIn { oldnodeid: u64 });

abi_struct!(SetattrIn {
    valid: u32,
    padding: u32,
    fh: u64,
    size: u64,
    lock_owner: u64,
    atime: u64,
    mtime: u64,
    ctime: u64,
    atimensec: u32,
    mtimensec: u32,
    ctimensec: u32,
    mode: u32,
    unused4: u32,
    uid: u32,
    gid: u32,
    unused5: u32,
});

abi_struct!(OpenIn { flags: u32, open_flags: u32 });
abi_struct!(CreateIn { flags: u32, mode: u32, umask: u32, open_flags: u32 });
abi_struct!(
    /// `backing_id` names a file registered with `DEV_IOC_BACKING_OPEN` when
    /// `open_flags` has `fopen::PASSTHROUGH`.
    OpenOut { fh: u64, open_flags: u32, backing_id: i32 }
);
abi_struct!(ReleaseIn { fh: u64, flags: u32, release_flags: u32, lock_owner: u64 });
abi_struct!(FlushIn { fh: u64, unused: u32, padding: u32, lock_owner: u64 });
abi_struct!(ReadIn { fh: u64, offset: u64, size: u32, read_flags: u32, lock_owner: u64, flags: u32, padding: u32 });
abi_struct!(WriteIn { fh: u64, offset: u64, size: u32, write_flags: u32, lock_owner: u64, flags: u32, padding: u32 });
abi_struct!(WriteOut { size: u32, padding: u32 });
abi_struct!(StatfsOut { st: Kstatfs });
abi_struct!(FsyncIn { fh: u64, fsync_flags: u32, padding: u32 });
abi_struct!(SetxattrIn { size: u32, flags: u32, setxattr_flags: u32, padding: u32 });
abi_struct!(
    /// The `SetxattrIn` of kernels, or connections, without `SETXATTR_EXT`.
    CompatSetxattrIn { size: u32, flags: u32 }
);
abi_struct!(GetxattrIn { size: u32, padding: u32 });
abi_struct!(GetxattrOut { size: u32, padding: u32 });
abi_struct!(LkIn { fh: u64, owner: u64, lk: FileLock, lk_flags: u32, padding: u32 });
abi_struct!(LkOut { lk: FileLock });
abi_struct!(AccessIn { mask: u32, padding: u32 });
abi_struct!(InitIn { major: u32, minor: u32, max_readahead: u32, flags: u32, flags2: u32, unused: [u32; 11] });
abi_struct!(
    /// The first 16 bytes of `InitIn`, all that kernels before 7.36 send.
    CompatInitIn { major: u32, minor: u32, max_readahead: u32, flags: u32 }
);
abi_struct!(InitOut {
    major: u32,
    minor: u32,
    max_readahead: u32,
    flags: u32,
    max_background: u16,
    congestion_threshold: u16,
    max_write: u32,
    time_gran: u32,
    max_pages: u16,
    map_alignment: u16,
    flags2: u32,
    max_stack_depth: u32,
    request_timeout: u16,
    unused: [u16; 11],
});
abi_struct!(InterruptIn { unique: u64 });
abi_struct!(BmapIn { block: u64, blocksize: u32, padding: u32 });
abi_struct!(BmapOut { block: u64 });
abi_struct!(IoctlIn { fh: u64, flags: u32, cmd: u32, arg: u64, in_size: u32, out_size: u32 });
abi_struct!(IoctlIovec { base: u64, len: u64 });
abi_struct!(IoctlOut { result: i32, flags: u32, in_iovs: u32, out_iovs: u32 });
abi_struct!(PollIn { fh: u64, kh: u64, flags: u32, events: u32 });
abi_struct!(PollOut { revents: u32, padding: u32 });
abi_struct!(NotifyPollWakeupOut { kh: u64 });
abi_struct!(FallocateIn { fh: u64, offset: u64, length: u64, mode: u32, padding: u32 });

abi_struct!(
    /// `total_extlen` counts 8-byte units of extensions (security context, supplementary
    /// group) that follow the operation's arguments.
    InHeader {
        len: u32, opcode: u32, unique: u64, nodeid: u64, uid: u32, gid: u32, pid: u32,
        total_extlen: u16, padding: u16,
    }
);
abi_struct!(OutHeader { len: u32, error: i32, unique: u64 });

abi_struct!(
    /// Followed by `namelen` bytes of name, padded with zeros to 8 bytes.
    Dirent { ino: u64, off: u64, namelen: u32, kind: u32 }
);
abi_struct!(Direntplus { entry_out: EntryOut, dirent: Dirent });

abi_struct!(NotifyInvalInodeOut { ino: u64, off: i64, len: i64 });
abi_struct!(NotifyInvalEntryOut { parent: u64, namelen: u32, flags: u32 });
abi_struct!(NotifyDeleteOut { parent: u64, child: u64, namelen: u32, padding: u32 });
abi_struct!(NotifyStoreOut { nodeid: u64, offset: u64, size: u32, padding: u32 });
abi_struct!(NotifyRetrieveOut { notify_unique: u64, nodeid: u64, offset: u64, size: u32, padding: u32 });
abi_struct!(NotifyRetrieveIn { dummy1: u64, offset: u64, size: u32, dummy2: u32, dummy3: u64, dummy4: u64 });
abi_struct!(NotifyPruneOut { count: u32, padding: u32, spare: u64 });
abi_struct!(BackingMap { fd: i32, flags: u32, padding: u64 });
abi_struct!(LseekIn { fh: u64, offset: u64, whence: u32, padding: u32 });
abi_struct!(LseekOut { offset: u64 });
abi_struct!(CopyFileRangeIn {
    fh_in: u64,
    off_in: u64,
    nodeid_out: u64,
    fh_out: u64,
    off_out: u64,
    len: u64,
    flags: u64,
});
abi_struct!(
    /// The answer to `COPY_FILE_RANGE_64`; `COPY_FILE_RANGE` is answered with `WriteOut`.
    CopyFileRangeOut { bytes_copied: u64 }
);
abi_struct!(SyncfsIn { padding: u64 });
abi_struct!(
    /// Header of the extensions after a request's arguments (`InHeader::total_extlen`).
    ExtHeader { size: u32, kind: u32 }
);
abi_struct!(SuppGroups { nr_groups: u32, groups: [u32; 0] });

/// Extension kinds of `ExtHeader::kind`.
pub const EXT_GROUPS: u32 = 32; // FUSE_MAX_NR_SECCTX + 1

/// `FUSE_DIRENT_ALIGN`: directory entries start at 8-byte boundaries.
pub const fn dirent_align(len: usize) -> usize {
    (len + 7) & !7
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn struct_sizes_are_the_kernels() {
        // Sizes as laid out by include/uapi/linux/fuse.h on every architecture.
        let sizes = [
            (size_of::<Attr>(), 88),
            (size_of::<SxTime>(), 16),
            (size_of::<Statx>(), 256),
            (size_of::<Kstatfs>(), 80),
            (size_of::<FileLock>(), 24),
            (size_of::<EntryOut>(), 128),
            (size_of::<ForgetIn>(), 8),
            (size_of::<ForgetOne>(), 16),
            (size_of::<BatchForgetIn>(), 8),
            (size_of::<GetattrIn>(), 16),
            (size_of::<AttrOut>(), 104),
            (size_of::<StatxIn>(), 24),
            (size_of::<StatxOut>(), 288),
            (size_of::<MknodIn>(), 16),
            (size_of::<MkdirIn>(), 8),
            (size_of::<RenameIn>(), 8),
            (size_of::<Rename2In>(), 16),
            (size_of::<LinkIn>(), 8),
            (size_of::<SetattrIn>(), 88),
            (size_of::<OpenIn>(), 8),
            (size_of::<CreateIn>(), 16),
            (size_of::<OpenOut>(), 16),
            (size_of::<ReleaseIn>(), 24),
            (size_of::<FlushIn>(), 24),
            (size_of::<ReadIn>(), 40),
            (size_of::<WriteIn>(), 40),
            (size_of::<WriteOut>(), 8),
            (size_of::<StatfsOut>(), 80),
            (size_of::<FsyncIn>(), 16),
            (size_of::<SetxattrIn>(), 16),
            (size_of::<CompatSetxattrIn>(), COMPAT_SETXATTR_IN_SIZE),
            (size_of::<GetxattrIn>(), 8),
            (size_of::<GetxattrOut>(), 8),
            (size_of::<LkIn>(), 48),
            (size_of::<LkOut>(), 24),
            (size_of::<AccessIn>(), 8),
            (size_of::<InitIn>(), 64),
            (size_of::<CompatInitIn>(), 16),
            (size_of::<InitOut>(), 64),
            (size_of::<InterruptIn>(), 8),
            (size_of::<BmapIn>(), 16),
            (size_of::<BmapOut>(), 8),
            (size_of::<IoctlIn>(), 32),
            (size_of::<IoctlIovec>(), 16),
            (size_of::<IoctlOut>(), 16),
            (size_of::<PollIn>(), 24),
            (size_of::<PollOut>(), 8),
            (size_of::<NotifyPollWakeupOut>(), 8),
            (size_of::<FallocateIn>(), 32),
            (size_of::<InHeader>(), 40),
            (size_of::<OutHeader>(), 16),
            (size_of::<Dirent>(), 24),
            (size_of::<Direntplus>(), 152),
            (size_of::<NotifyInvalInodeOut>(), 24),
            (size_of::<NotifyInvalEntryOut>(), 16),
            (size_of::<NotifyDeleteOut>(), 24),
            (size_of::<NotifyStoreOut>(), 24),
            (size_of::<NotifyRetrieveOut>(), 32),
            (size_of::<NotifyRetrieveIn>(), 40),
            (size_of::<NotifyPruneOut>(), 16),
            (size_of::<BackingMap>(), 16),
            (size_of::<LseekIn>(), 24),
            (size_of::<LseekOut>(), 8),
            (size_of::<CopyFileRangeIn>(), 56),
            (size_of::<CopyFileRangeOut>(), 8),
            (size_of::<SyncfsIn>(), 8),
            (size_of::<ExtHeader>(), 8),
            (size_of::<SuppGroups>(), 4),
        ];
        for (i, (ours, kernels)) in sizes.iter().enumerate() {
            assert_eq!(ours, kernels, "entry {i}");
        }
    }

    #[test]
    fn compat_sizes_are_prefixes() {
        assert_eq!(std::mem::offset_of!(EntryOut, attr) + 80, COMPAT_ENTRY_OUT_SIZE);
        assert_eq!(std::mem::offset_of!(AttrOut, attr) + 80, COMPAT_ATTR_OUT_SIZE);
        assert_eq!(std::mem::offset_of!(InitOut, time_gran), COMPAT_22_INIT_OUT_SIZE);
        assert_eq!(std::mem::offset_of!(InitIn, flags2), size_of::<CompatInitIn>());
        assert_eq!(std::mem::offset_of!(WriteIn, lock_owner), COMPAT_WRITE_IN_SIZE);
        assert_eq!(std::mem::offset_of!(Direntplus, dirent), size_of::<EntryOut>());
        assert_eq!(std::mem::offset_of!(InHeader, total_extlen), 36);
        assert_eq!(std::mem::offset_of!(InitOut, flags2), 32);
        assert_eq!(std::mem::offset_of!(InitOut, max_stack_depth), 36);
        assert_eq!(std::mem::offset_of!(InitOut, request_timeout), 40);
    }

    #[test]
    fn ioctl_numbers_are_the_kernels() {
        assert_eq!(DEV_IOC_CLONE, 0x8004_E500);
        assert_eq!(DEV_IOC_BACKING_OPEN, 0x4010_E501);
        assert_eq!(DEV_IOC_BACKING_CLOSE, 0x4004_E502);
        assert_eq!(DEV_IOC_SYNC_INIT, 0x0000_E503);
    }

    #[test]
    fn flags_above_32_bits_are_flags2() {
        assert_eq!(init_flags::PASSTHROUGH >> 32, 1 << 5);
        assert_eq!(init_flags::HAS_RESEND >> 32, 1 << 7);
        assert_eq!(init_flags::REQUEST_TIMEOUT >> 32, 1 << 10);
        assert_eq!(UNIQUE_RESEND, 0x8000_0000_0000_0000);
    }

    #[test]
    fn dirent_alignment() {
        assert_eq!(dirent_align(24 + 1), 32);
        assert_eq!(dirent_align(24 + 8), 32);
        assert_eq!(dirent_align(24 + 9), 40);
        assert_eq!(dirent_align(0), 0);
    }
}
