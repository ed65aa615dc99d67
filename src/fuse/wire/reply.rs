//! Encoding answers and notifications: each function returns the complete message, an
//! `OutHeader` whose `len` counts every byte followed by the body, ready for one `write`.
//! `data_header` serves `writev` when the data should not be copied.

use zerocopy::IntoBytes;

use super::abi::*;

/// The kernel rejects errors outside 1..=511 (`-ERESTARTSYS` and below) with EINVAL and
/// fails the request anyway; EIO at least says what happened.
const MAX_ERRNO: i32 = 511;

fn message(unique: u64, error: i32, body: &[&[u8]]) -> Vec<u8> {
    let body_len: usize = body.iter().map(|part| part.len()).sum();
    let len = size_of::<OutHeader>() + body_len;
    let mut out = Vec::with_capacity(len);
    out.extend_from_slice(OutHeader { len: len as u32, error, unique }.as_bytes());
    for part in body {
        out.extend_from_slice(part);
    }
    out
}

fn ok_with(unique: u64, body: &[&[u8]]) -> Vec<u8> {
    message(unique, 0, body)
}

/// A failed request; `errno` is positive (`libc::ENOENT`), the wire carries its negation.
pub fn error(unique: u64, errno: i32) -> Vec<u8> {
    let errno = if (1..=MAX_ERRNO).contains(&errno) { errno } else { libc::EIO };
    message(unique, -errno, &[])
}

/// Success without a body: unlink, rmdir, rename, release, flush, fsync, setxattr, ...
pub fn empty(unique: u64) -> Vec<u8> {
    ok_with(unique, &[])
}

pub fn entry(unique: u64, entry: &EntryOut) -> Vec<u8> {
    ok_with(unique, &[entry.as_bytes()])
}

pub fn attr(unique: u64, attr: &AttrOut) -> Vec<u8> {
    ok_with(unique, &[attr.as_bytes()])
}

pub fn statx(unique: u64, statx: &StatxOut) -> Vec<u8> {
    ok_with(unique, &[statx.as_bytes()])
}

/// OPEN and OPENDIR. `backing_id` counts only with `fopen::PASSTHROUGH` in `open_flags`.
pub fn open(unique: u64, fh: u64, open_flags: u32, backing_id: i32) -> Vec<u8> {
    ok_with(unique, &[OpenOut { fh, open_flags, backing_id }.as_bytes()])
}

pub fn create(unique: u64, entry: &EntryOut, open: &OpenOut) -> Vec<u8> {
    ok_with(unique, &[entry.as_bytes(), open.as_bytes()])
}

/// READ, READLINK (the target without NUL), GETXATTR and LISTXATTR with a buffer size.
pub fn data(unique: u64, data: &[u8]) -> Vec<u8> {
    ok_with(unique, &[data])
}

/// The header of a data answer whose `len` bytes follow in further iovecs.
pub fn data_header(unique: u64, len: usize) -> [u8; size_of::<OutHeader>()] {
    let len = (size_of::<OutHeader>() + len) as u32;
    let mut out = [0; size_of::<OutHeader>()];
    out.copy_from_slice(OutHeader { len, error: 0, unique }.as_bytes());
    out
}

pub fn readlink(unique: u64, target: &[u8]) -> Vec<u8> {
    data(unique, target)
}

/// WRITE and COPY_FILE_RANGE.
pub fn write(unique: u64, size: u32) -> Vec<u8> {
    ok_with(unique, &[WriteOut { size, padding: 0 }.as_bytes()])
}

pub fn copy_file_range_64(unique: u64, bytes_copied: u64) -> Vec<u8> {
    ok_with(unique, &[CopyFileRangeOut { bytes_copied }.as_bytes()])
}

pub fn statfs(unique: u64, st: &Kstatfs) -> Vec<u8> {
    ok_with(unique, &[StatfsOut { st: *st }.as_bytes()])
}

/// GETXATTR and LISTXATTR asked with size 0: the size a buffer needs.
pub fn xattr_size(unique: u64, size: u32) -> Vec<u8> {
    ok_with(unique, &[GetxattrOut { size, padding: 0 }.as_bytes()])
}

pub fn xattr_data(unique: u64, value: &[u8]) -> Vec<u8> {
    data(unique, value)
}

pub fn lseek(unique: u64, offset: u64) -> Vec<u8> {
    ok_with(unique, &[LseekOut { offset }.as_bytes()])
}

pub fn lock(unique: u64, lk: &FileLock) -> Vec<u8> {
    ok_with(unique, &[LkOut { lk: *lk }.as_bytes()])
}

pub fn bmap(unique: u64, block: u64) -> Vec<u8> {
    ok_with(unique, &[BmapOut { block }.as_bytes()])
}

pub fn poll(unique: u64, revents: u32) -> Vec<u8> {
    ok_with(unique, &[PollOut { revents, padding: 0 }.as_bytes()])
}

/// What the daemon asks for at INIT; flags the kernel does not offer are dropped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InitConfig {
    /// `init_flags` bits, low and high word alike.
    pub wanted: u64,
    pub max_write: u32,
    pub max_readahead: u32,
    /// Pages per request; 0 keeps the kernel's default (32).
    pub max_pages: u16,
    pub time_gran: u32,
    /// Stacking depth of passthrough backing files; counts only with `PASSTHROUGH`.
    pub max_stack_depth: u32,
    pub max_background: u16,
    pub congestion_threshold: u16,
    /// Seconds after which the kernel aborts the connection on an unanswered request;
    /// 0 for none.
    pub request_timeout: u16,
}

/// The connection as agreed at INIT.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Negotiated {
    pub minor: u32,
    /// Agreed `init_flags`, both words.
    pub flags: u64,
    pub max_write: u32,
    pub max_readahead: u32,
    pub max_pages: u16,
    pub time_gran: u32,
    pub max_stack_depth: u32,
    pub max_background: u16,
    pub congestion_threshold: u16,
    pub request_timeout: u16,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum InitError {
    /// Answer `error(unique, libc::EPROTO)`.
    #[error("kernel speaks FUSE {0}, before 7")]
    OldMajor(u32),
    /// Answer `init_major_only`; the kernel then sends INIT again for major 7.
    #[error("kernel speaks FUSE {0}; asking for 7")]
    NewerMajor(u32),
}

impl Negotiated {
    pub fn new(kernel: &InitIn, ours: &InitConfig) -> Result<Self, InitError> {
        use init_flags::*;
        match kernel.major {
            KERNEL_VERSION => {}
            major if major < KERNEL_VERSION => return Err(InitError::OldMajor(major)),
            major => return Err(InitError::NewerMajor(major)),
        }
        let mut offered = u64::from(kernel.flags);
        if offered & INIT_EXT != 0 {
            offered |= u64::from(kernel.flags2) << 32;
        }
        let mut wanted = ours.wanted;
        // Bits that only announce a field of the answer follow from the field.
        if ours.max_pages != 0 {
            wanted |= MAX_PAGES;
        }
        if ours.request_timeout != 0 {
            wanted |= REQUEST_TIMEOUT;
        }
        // Without INIT_EXT in the answer the kernel ignores flags2.
        if wanted >> 32 != 0 {
            wanted |= INIT_EXT;
        }
        let flags = wanted & offered;
        let has = |bit: u64| flags & bit != 0;
        Ok(Negotiated {
            minor: kernel.minor.min(KERNEL_MINOR_VERSION),
            flags,
            max_write: ours.max_write.max(4096),
            max_readahead: ours.max_readahead.min(kernel.max_readahead),
            max_pages: if has(MAX_PAGES) { ours.max_pages } else { 0 },
            time_gran: ours.time_gran,
            max_stack_depth: if has(PASSTHROUGH) { ours.max_stack_depth } else { 0 },
            max_background: ours.max_background,
            congestion_threshold: ours.congestion_threshold,
            request_timeout: if has(REQUEST_TIMEOUT) { ours.request_timeout } else { 0 },
        })
    }

    pub fn has(&self, flag: u64) -> bool {
        self.flags & flag == flag
    }

    /// The layout of requests on this connection.
    pub fn layout(&self) -> super::request::Layout {
        super::request::Layout { setxattr_ext: self.has(init_flags::SETXATTR_EXT) }
    }
}

pub fn init(unique: u64, agreed: &Negotiated) -> Vec<u8> {
    let out = InitOut {
        major: KERNEL_VERSION,
        minor: agreed.minor,
        max_readahead: agreed.max_readahead,
        flags: agreed.flags as u32,
        flags2: (agreed.flags >> 32) as u32,
        max_background: agreed.max_background,
        congestion_threshold: agreed.congestion_threshold,
        max_write: agreed.max_write,
        time_gran: agreed.time_gran,
        max_pages: agreed.max_pages,
        max_stack_depth: agreed.max_stack_depth,
        request_timeout: agreed.request_timeout,
        ..InitOut::default()
    };
    // Older kernels reject an answer longer than the struct they know.
    let size = match agreed.minor {
        0..5 => COMPAT_INIT_OUT_SIZE,
        5..23 => COMPAT_22_INIT_OUT_SIZE,
        _ => size_of::<InitOut>(),
    };
    ok_with(unique, &[&out.as_bytes()[..size]])
}

/// The answer to an INIT of a newer major version: only the major we speak.
pub fn init_major_only(unique: u64) -> Vec<u8> {
    let out = InitOut { major: KERNEL_VERSION, minor: KERNEL_MINOR_VERSION, ..InitOut::default() };
    ok_with(unique, &[&out.as_bytes()[..COMPAT_INIT_OUT_SIZE]])
}

/// The `Dirent::kind` of a file mode (`DT_REG`, `DT_DIR`, ...).
pub fn dirent_kind(mode: u32) -> u32 {
    (mode & libc::S_IFMT) >> 12
}

/// The answer to READDIR or READDIRPLUS: entries packed at 8-byte boundaries up to the
/// size the kernel asked for. Once an entry does not fit the buffer is full and takes no
/// more, so the listing resumes at that entry's offset with the next request.
#[derive(Debug)]
pub struct DirBuffer {
    out: Vec<u8>,
    limit: usize,
    full: bool,
}

impl DirBuffer {
    /// `size` is `ReadIn::size` of the request.
    pub fn new(unique: u64, size: u32) -> Self {
        let limit = size_of::<OutHeader>() + size as usize;
        let mut out = Vec::with_capacity(limit.min(1 << 20));
        out.extend_from_slice(OutHeader { len: 0, error: 0, unique }.as_bytes());
        DirBuffer { out, limit, full: false }
    }

    /// A READDIR entry; `offset` is where the listing continues after it. False when the
    /// entry does not fit, and for every entry after that.
    pub fn add(&mut self, ino: u64, offset: u64, kind: u32, name: &[u8]) -> bool {
        let dirent = Dirent { ino, off: offset, namelen: name.len() as u32, kind };
        self.push(&[], &dirent, name)
    }

    /// A READDIRPLUS entry: the lookup's answer for the name comes with it.
    pub fn add_plus(&mut self, entry: &EntryOut, offset: u64, kind: u32, name: &[u8]) -> bool {
        let dirent = Dirent { ino: entry.attr.ino, off: offset, namelen: name.len() as u32, kind };
        self.push(entry.as_bytes(), &dirent, name)
    }

    fn push(&mut self, entry: &[u8], dirent: &Dirent, name: &[u8]) -> bool {
        let unpadded = entry.len() + size_of::<Dirent>() + name.len();
        let len = dirent_align(unpadded);
        if self.full || self.out.len() + len > self.limit {
            self.full = true;
            return false;
        }
        self.out.extend_from_slice(entry);
        self.out.extend_from_slice(dirent.as_bytes());
        self.out.extend_from_slice(name);
        self.out.resize(self.out.len() + len - unpadded, 0);
        true
    }

    pub fn is_full(&self) -> bool {
        self.full
    }

    pub fn is_empty(&self) -> bool {
        self.out.len() == size_of::<OutHeader>()
    }

    /// The message; an empty one tells the kernel the listing has ended.
    pub fn finish(mut self) -> Vec<u8> {
        let len = self.out.len() as u32;
        self.out[..4].copy_from_slice(&len.to_le_bytes());
        self.out
    }
}

fn notification(code: i32, body: &[&[u8]]) -> Vec<u8> {
    message(0, code, body)
}

/// Drops the inode's cached attributes and the data in `offset..offset+len`
/// (`len` 0: to the end; `offset` negative: attributes only).
pub fn notify_inval_inode(ino: u64, offset: i64, len: i64) -> Vec<u8> {
    notification(notify::INVAL_INODE, &[NotifyInvalInodeOut { ino, off: offset, len }.as_bytes()])
}

/// Drops the dentry `name` in `parent`; `flags` may hold `EXPIRE_ONLY`.
pub fn notify_inval_entry(parent: u64, name: &[u8], flags: u32) -> Vec<u8> {
    let out = NotifyInvalEntryOut { parent, namelen: name.len() as u32, flags };
    // The kernel reads namelen + 1 bytes: the name goes with its NUL.
    notification(notify::INVAL_ENTRY, &[out.as_bytes(), name, &[0]])
}

/// Like `notify_inval_entry`, and the kernel also drops `child`'s dentry if it is `name`.
pub fn notify_delete(parent: u64, child: u64, name: &[u8]) -> Vec<u8> {
    let out = NotifyDeleteOut { parent, child, namelen: name.len() as u32, padding: 0 };
    notification(notify::DELETE, &[out.as_bytes(), name, &[0]])
}

/// Asks the kernel to send every request still waiting for an answer again, marked with
/// `UNIQUE_RESEND`; for a daemon taking over a connection (needs `HAS_RESEND`).
pub fn notify_resend() -> Vec<u8> {
    notification(notify::RESEND, &[])
}

/// Invalidates every dentry of the connection that was looked up before (7.44).
pub fn notify_inc_epoch() -> Vec<u8> {
    notification(notify::INC_EPOCH, &[])
}

pub fn notify_poll_wakeup(kh: u64) -> Vec<u8> {
    notification(notify::POLL, &[NotifyPollWakeupOut { kh }.as_bytes()])
}

#[cfg(test)]
mod tests {
    use super::*;
    use zerocopy::FromBytes;

    fn header(message: &[u8]) -> OutHeader {
        let header = OutHeader::read_from_prefix(message).unwrap().0;
        assert_eq!(header.len as usize, message.len(), "len counts every byte");
        header
    }

    fn body<T: FromBytes>(message: &[u8]) -> T {
        T::read_from_bytes(&message[size_of::<OutHeader>()..]).unwrap()
    }

    #[test]
    fn errors_are_negative_and_bounded() {
        let out = error(5, libc::ENOENT);
        assert_eq!(header(&out), OutHeader { len: 16, error: -libc::ENOENT, unique: 5 });
        assert_eq!(header(&error(5, 0)).error, -libc::EIO);
        assert_eq!(header(&error(5, -2)).error, -libc::EIO);
        assert_eq!(header(&error(5, 512)).error, -libc::EIO);
        assert_eq!(header(&error(5, 511)).error, -511);
        assert_eq!(header(&empty(6)), OutHeader { len: 16, error: 0, unique: 6 });
    }

    #[test]
    fn resent_requests_are_answered_with_their_unique() {
        let unique = UNIQUE_RESEND | 3;
        assert_eq!(header(&empty(unique)).unique, unique);
    }

    #[test]
    fn fixed_bodies() {
        let attr_ = Attr { ino: 9, size: 100, mode: libc::S_IFREG | 0o644, nlink: 1, ..Attr::default() };
        let entry_ =
            EntryOut { nodeid: 9, generation: 1, entry_valid: 1, attr_valid: 1, attr: attr_, ..EntryOut::default() };
        let out = entry(1, &entry_);
        assert_eq!(header(&out).len, 16 + 128);
        assert_eq!(body::<EntryOut>(&out), entry_);

        let attr_out = AttrOut { attr_valid: 2, attr_valid_nsec: 5, dummy: 0, attr: attr_ };
        let out = attr(1, &attr_out);
        assert_eq!(header(&out).len, 16 + 104);
        assert_eq!(body::<AttrOut>(&out), attr_out);

        let out = open(1, 77, fopen::PASSTHROUGH | fopen::KEEP_CACHE, 3);
        assert_eq!(header(&out).len, 32);
        assert_eq!(
            body::<OpenOut>(&out),
            OpenOut { fh: 77, open_flags: fopen::PASSTHROUGH | fopen::KEEP_CACHE, backing_id: 3 }
        );

        let open_out = OpenOut { fh: 8, open_flags: fopen::DIRECT_IO, backing_id: 0 };
        let out = create(1, &entry_, &open_out);
        assert_eq!(header(&out).len, 16 + 128 + 16);
        assert_eq!(EntryOut::read_from_prefix(&out[16..]).unwrap().0, entry_);
        assert_eq!(OpenOut::read_from_bytes(&out[16 + 128..]).unwrap(), open_out);

        assert_eq!(body::<WriteOut>(&write(1, 4096)), WriteOut { size: 4096, padding: 0 });
        assert_eq!(body::<CopyFileRangeOut>(&copy_file_range_64(1, 1 << 33)).bytes_copied, 1 << 33);
        let st = Kstatfs {
            blocks: 10,
            bfree: 5,
            bavail: 5,
            files: 3,
            ffree: 1,
            bsize: 4096,
            namelen: 255,
            frsize: 4096,
            ..Kstatfs::default()
        };
        let out = statfs(1, &st);
        assert_eq!(header(&out).len, 16 + 80);
        assert_eq!(body::<StatfsOut>(&out).st, st);
        assert_eq!(body::<GetxattrOut>(&xattr_size(1, 12)).size, 12);
        assert_eq!(body::<LseekOut>(&lseek(1, 4096)).offset, 4096);
        assert_eq!(body::<BmapOut>(&bmap(1, 7)).block, 7);
        assert_eq!(body::<PollOut>(&poll(1, 1)).revents, 1);
        let lk = FileLock { start: 1, end: 2, kind: 1, pid: 4 };
        assert_eq!(body::<LkOut>(&lock(1, &lk)).lk, lk);
        let sx = StatxOut { attr_valid: 1, ..StatxOut::default() };
        assert_eq!(header(&statx(1, &sx)).len, 16 + 288);
    }

    #[test]
    fn data_answers() {
        let out = data(4, b"hello");
        assert_eq!(header(&out).len, 21);
        assert_eq!(&out[16..], b"hello");
        assert_eq!(readlink(4, b"../t"), data(4, b"../t"));
        assert_eq!(xattr_data(4, b"v"), data(4, b"v"));
        assert_eq!(header(&data(4, b"")).len, 16);
        let head = data_header(4, 5);
        assert_eq!(head[..], data(4, b"hello")[..16]);
    }

    fn kernel_init(flags: u64) -> InitIn {
        InitIn {
            major: 7,
            minor: 45,
            max_readahead: 128 * 1024,
            flags: flags as u32 | init_flags::INIT_EXT as u32,
            flags2: (flags >> 32) as u32,
            ..InitIn::default()
        }
    }

    #[test]
    fn init_agrees_on_the_intersection() {
        use init_flags::*;
        let kernel = kernel_init(ASYNC_READ | DO_READDIRPLUS | PARALLEL_DIROPS | MAX_PAGES | HAS_RESEND | PASSTHROUGH);
        let ours = InitConfig {
            wanted: DO_READDIRPLUS | PARALLEL_DIROPS | POSIX_ACL | PASSTHROUGH | HAS_RESEND,
            max_write: 1 << 20,
            max_readahead: 1 << 20,
            max_pages: 256,
            time_gran: 1,
            max_stack_depth: 1,
            max_background: 64,
            congestion_threshold: 48,
            request_timeout: 30,
        };
        let agreed = Negotiated::new(&kernel, &ours).unwrap();
        let expected_flags = DO_READDIRPLUS | PARALLEL_DIROPS | PASSTHROUGH | HAS_RESEND | MAX_PAGES | INIT_EXT;
        assert_eq!(agreed.flags, expected_flags);
        assert!(agreed.has(PASSTHROUGH) && !agreed.has(POSIX_ACL));
        assert_eq!(agreed.max_readahead, 128 * 1024);
        // REQUEST_TIMEOUT was not offered, so no timeout.
        assert_eq!(agreed.request_timeout, 0);
        assert_eq!(agreed.max_stack_depth, 1);
        assert_eq!(agreed.minor, 45);

        let out = init(3, &agreed);
        assert_eq!(header(&out).len, 16 + 64);
        let init_out = body::<InitOut>(&out);
        assert_eq!((init_out.major, init_out.minor), (7, 45));
        assert_eq!(init_out.flags, expected_flags as u32);
        assert_eq!(init_out.flags2, (expected_flags >> 32) as u32);
        assert_eq!(init_out.max_write, 1 << 20);
        assert_eq!(init_out.max_pages, 256);
        assert_eq!(init_out.max_stack_depth, 1);
        assert_eq!((init_out.max_background, init_out.congestion_threshold), (64, 48));
        assert_eq!(init_out.time_gran, 1);
    }

    #[test]
    fn init_without_ext_ignores_flags2() {
        use init_flags::*;
        let mut kernel = kernel_init(PASSTHROUGH | REQUEST_TIMEOUT);
        kernel.flags &= !(INIT_EXT as u32);
        let ours = InitConfig { wanted: PASSTHROUGH, max_stack_depth: 1, request_timeout: 20, ..InitConfig::default() };
        let agreed = Negotiated::new(&kernel, &ours).unwrap();
        assert_eq!(agreed.flags, 0);
        assert_eq!((agreed.max_stack_depth, agreed.request_timeout, agreed.max_write), (0, 0, 4096));

        let agreed = Negotiated::new(&kernel_init(PASSTHROUGH | REQUEST_TIMEOUT), &ours).unwrap();
        assert_eq!(agreed.flags, PASSTHROUGH | REQUEST_TIMEOUT | INIT_EXT);
        assert_eq!(body::<InitOut>(&init(1, &agreed)).request_timeout, 20);
    }

    #[test]
    fn init_versions() {
        let ours = InitConfig::default();
        let old = InitIn { major: 7, minor: 19, ..InitIn::default() };
        let agreed = Negotiated::new(&old, &ours).unwrap();
        assert_eq!(agreed.minor, 19);
        assert_eq!(header(&init(1, &agreed)).len as usize, 16 + COMPAT_22_INIT_OUT_SIZE);
        let newer_minor = InitIn { major: 7, minor: 99, ..InitIn::default() };
        assert_eq!(Negotiated::new(&newer_minor, &ours).unwrap().minor, KERNEL_MINOR_VERSION);
        assert_eq!(Negotiated::new(&InitIn { major: 8, ..InitIn::default() }, &ours), Err(InitError::NewerMajor(8)));
        assert_eq!(Negotiated::new(&InitIn { major: 6, ..InitIn::default() }, &ours), Err(InitError::OldMajor(6)));
        let out = init_major_only(1);
        assert_eq!(header(&out).len, 24);
        assert_eq!(u32::read_from_bytes(&out[16..20]).unwrap(), 7);
    }

    #[test]
    fn negotiated_layout_follows_setxattr_ext() {
        let kernel = kernel_init(init_flags::SETXATTR_EXT);
        let ours = InitConfig { wanted: init_flags::SETXATTR_EXT, ..InitConfig::default() };
        assert!(Negotiated::new(&kernel, &ours).unwrap().layout().setxattr_ext);
        assert!(!Negotiated::new(&kernel, &InitConfig::default()).unwrap().layout().setxattr_ext);
    }

    /// The entries of a READDIR answer, read back the way the kernel does.
    fn dirents(out: &[u8]) -> Vec<(Dirent, Vec<u8>)> {
        let mut rest = &out[16..];
        let mut entries = Vec::new();
        while !rest.is_empty() {
            let (dirent, after) = Dirent::read_from_prefix(rest).unwrap();
            let name = after[..dirent.namelen as usize].to_vec();
            let len = dirent_align(size_of::<Dirent>() + name.len());
            assert!(after[name.len()..len - size_of::<Dirent>()].iter().all(|&b| b == 0), "zero padding");
            entries.push((dirent, name));
            rest = &rest[len..];
        }
        entries
    }

    #[test]
    fn readdir_aligns_entries() {
        let mut dir = DirBuffer::new(9, 4096);
        assert!(dir.is_empty());
        assert!(dir.add(1, 1, dirent_kind(libc::S_IFDIR), b"."));
        assert!(dir.add(1, 2, dirent_kind(libc::S_IFDIR), b".."));
        assert!(dir.add(5, 3, dirent_kind(libc::S_IFREG), b"eight888"));
        assert!(dir.add(6, 4, dirent_kind(libc::S_IFLNK), b"nine99999"));
        assert!(!dir.is_full() && !dir.is_empty());
        let out = dir.finish();
        assert_eq!(header(&out).unique, 9);
        assert_eq!(out.len(), 16 + 32 + 32 + 32 + 40);
        let entries = dirents(&out);
        assert_eq!(entries.len(), 4);
        assert_eq!(entries[0].0, Dirent { ino: 1, off: 1, namelen: 1, kind: libc::DT_DIR as u32 });
        assert_eq!(entries[2].1, b"eight888");
        assert_eq!(entries[3].0.kind, libc::DT_LNK as u32);
        assert_eq!(entries[3].0.off, 4);
    }

    #[test]
    fn readdir_stops_at_the_first_entry_that_does_not_fit() {
        // 80 bytes: two 32-byte entries fit, a third does not, nor anything after it.
        let mut dir = DirBuffer::new(1, 80);
        assert!(dir.add(2, 1, 8, b"a"));
        assert!(dir.add(3, 2, 8, b"b"));
        assert!(!dir.add(4, 3, 8, b"c"));
        assert!(dir.is_full());
        assert!(!dir.add(5, 4, 8, b""), "a later, smaller entry would skip one");
        let out = dir.finish();
        assert_eq!(out.len(), 16 + 64);
        assert_eq!(dirents(&out).len(), 2);

        // Exactly full is not full yet: the next entry decides.
        let mut dir = DirBuffer::new(1, 64);
        assert!(dir.add(2, 1, 8, b"a") && dir.add(3, 2, 8, b"b"));
        assert!(!dir.is_full());
        assert!(!dir.add(4, 3, 8, b"c") && dir.is_full());

        let mut dir = DirBuffer::new(1, 16);
        assert!(!dir.add(2, 1, 8, b"a"));
        assert!(dir.is_full() && dir.is_empty());
        assert_eq!(dir.finish().len(), 16);
    }

    #[test]
    fn readdirplus_entries_carry_the_lookup() {
        let attr_ = Attr { ino: 42, mode: libc::S_IFREG | 0o600, ..Attr::default() };
        let entry_ = EntryOut { nodeid: 42, attr: attr_, ..EntryOut::default() };
        let mut dir = DirBuffer::new(2, 400);
        assert!(dir.add_plus(&entry_, 1, dirent_kind(attr_.mode), b"file"));
        assert!(dir.add_plus(&entry_, 2, dirent_kind(attr_.mode), b"0123456789abcdef"));
        // 160 + 168 = 328; a third of 160 would need 488.
        assert!(!dir.add_plus(&entry_, 3, dirent_kind(attr_.mode), b"x"));
        let out = dir.finish();
        assert_eq!(out.len(), 16 + 160 + 168);
        let (plus, rest) = Direntplus::read_from_prefix(&out[16..]).unwrap();
        assert_eq!(plus.entry_out, entry_);
        assert_eq!(plus.dirent, Dirent { ino: 42, off: 1, namelen: 4, kind: libc::DT_REG as u32 });
        assert_eq!(&rest[..4], b"file");
        assert_eq!(&rest[4..8], &[0; 4]);
        let (second, _) = Direntplus::read_from_prefix(&out[16 + 160..]).unwrap();
        assert_eq!(second.dirent.off, 2);
    }

    proptest::proptest! {
        #[test]
        fn dir_buffers_stay_within_size_and_alignment(
            size in 0u32..2048,
            names in proptest::collection::vec(proptest::collection::vec(1u8..=255, 1..300), 0..40),
        ) {
            let mut dir = DirBuffer::new(1, size);
            let mut added = 0;
            for (i, name) in names.iter().enumerate() {
                if !dir.add(i as u64 + 2, i as u64 + 1, 8, name) {
                    break;
                }
                added += 1;
            }
            let full = dir.is_full();
            let out = dir.finish();
            proptest::prop_assert!(out.len() <= 16 + size as usize);
            proptest::prop_assert_eq!(out.len() % 8, 0);
            proptest::prop_assert_eq!(full, added < names.len());
            let entries = dirents(&out);
            proptest::prop_assert_eq!(entries.len(), added);
            for (i, (dirent, name)) in entries.iter().enumerate() {
                proptest::prop_assert_eq!(dirent.off, i as u64 + 1);
                proptest::prop_assert_eq!(name, &names[i]);
            }
        }
    }

    #[test]
    fn notifications_have_unique_zero_and_their_code() {
        let out = notify_inval_inode(7, 0, -1);
        assert_eq!(header(&out), OutHeader { len: 16 + 24, error: notify::INVAL_INODE, unique: 0 });
        assert_eq!(body::<NotifyInvalInodeOut>(&out), NotifyInvalInodeOut { ino: 7, off: 0, len: -1 });

        let out = notify_inval_entry(1, b"name", EXPIRE_ONLY);
        assert_eq!(header(&out), OutHeader { len: 16 + 16 + 5, error: notify::INVAL_ENTRY, unique: 0 });
        let (inval, name) = NotifyInvalEntryOut::read_from_prefix(&out[16..]).unwrap();
        assert_eq!(inval, NotifyInvalEntryOut { parent: 1, namelen: 4, flags: EXPIRE_ONLY });
        assert_eq!(name, b"name\0");

        let out = notify_delete(1, 9, b"gone");
        assert_eq!(header(&out), OutHeader { len: 16 + 24 + 5, error: notify::DELETE, unique: 0 });
        let (delete, name) = NotifyDeleteOut::read_from_prefix(&out[16..]).unwrap();
        assert_eq!((delete.parent, delete.child, delete.namelen), (1, 9, 4));
        assert_eq!(name, b"gone\0");

        assert_eq!(header(&notify_resend()), OutHeader { len: 16, error: 7, unique: 0 });
        assert_eq!(header(&notify_inc_epoch()), OutHeader { len: 16, error: 8, unique: 0 });
        assert_eq!(body::<NotifyPollWakeupOut>(&notify_poll_wakeup(3)).kh, 3);
    }
}
