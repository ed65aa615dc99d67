//! Parsing one request as read from /dev/fuse. Fixed-size arguments are copied out (the
//! buffer has no alignment guarantee); names and write data stay borrowed from it.
//! Malformed input is an error, never a panic: the kernel is trusted, but a bug there or
//! here should cost one request, not the daemon.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

use zerocopy::FromBytes;

use super::abi::*;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("{got} bytes, a FUSE request header needs 40")]
    ShortHeader { got: usize },
    #[error("header says {header} bytes, {got} were read")]
    LengthMismatch { header: u32, got: usize },
    #[error("extensions of {extlen} bytes exceed the request")]
    BadExtensions { extlen: usize },
    #[error("opcode {opcode}: arguments need {need} bytes, {got} given")]
    ShortArguments { opcode: u32, need: usize, got: usize },
    #[error("opcode {opcode}: name without terminating NUL")]
    MissingNul { opcode: u32 },
}

/// Connection settings that change how requests are laid out.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Layout {
    /// `init_flags::SETXATTR_EXT` was negotiated: SETXATTR carries the 16-byte `SetxattrIn`.
    pub setxattr_ext: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request<'a> {
    pub header: InHeader,
    pub op: Operation<'a>,
}

impl Request<'_> {
    /// The kernel sends a request again, with bit 63 of `unique` set, after `NOTIFY_RESEND`.
    pub fn is_resend(&self) -> bool {
        self.header.unique & UNIQUE_RESEND != 0
    }

    /// The `unique` an answer carries: the kernel's value as sent, resend bit included.
    pub fn unique(&self) -> u64 {
        self.header.unique
    }

    pub fn nodeid(&self) -> u64 {
        self.header.nodeid
    }

    /// FORGET and BATCH_FORGET get no answer.
    pub fn wants_reply(&self) -> bool {
        !matches!(self.op, Operation::Forget(_) | Operation::BatchForget(_))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Operation<'a> {
    Init(InitIn),
    Destroy,
    Lookup {
        name: &'a OsStr,
    },
    Forget(ForgetIn),
    BatchForget(Vec<ForgetOne>),
    Getattr(GetattrIn),
    Setattr(SetattrIn),
    Readlink,
    Symlink {
        name: &'a OsStr,
        target: &'a OsStr,
    },
    Mknod {
        arg: MknodIn,
        name: &'a OsStr,
    },
    Mkdir {
        arg: MkdirIn,
        name: &'a OsStr,
    },
    Unlink {
        name: &'a OsStr,
    },
    Rmdir {
        name: &'a OsStr,
    },
    Rename {
        arg: RenameIn,
        name: &'a OsStr,
        newname: &'a OsStr,
    },
    Rename2 {
        arg: Rename2In,
        name: &'a OsStr,
        newname: &'a OsStr,
    },
    Link {
        arg: LinkIn,
        newname: &'a OsStr,
    },
    Open(OpenIn),
    Read(ReadIn),
    Write {
        arg: WriteIn,
        data: &'a [u8],
    },
    Statfs,
    Release(ReleaseIn),
    Fsync(FsyncIn),
    /// Without `SETXATTR_EXT` the kernel sends the 8-byte form; `setxattr_flags` is 0 then.
    Setxattr {
        arg: SetxattrIn,
        name: &'a OsStr,
        value: &'a [u8],
    },
    Getxattr {
        arg: GetxattrIn,
        name: &'a OsStr,
    },
    Listxattr(GetxattrIn),
    Removexattr {
        name: &'a OsStr,
    },
    Flush(FlushIn),
    Opendir(OpenIn),
    Readdir(ReadIn),
    Releasedir(ReleaseIn),
    Fsyncdir(FsyncIn),
    Getlk(LkIn),
    Setlk(LkIn),
    Setlkw(LkIn),
    Access(AccessIn),
    Create {
        arg: CreateIn,
        name: &'a OsStr,
    },
    Interrupt(InterruptIn),
    Bmap(BmapIn),
    Ioctl {
        arg: IoctlIn,
        data: &'a [u8],
    },
    Poll(PollIn),
    Fallocate(FallocateIn),
    Readdirplus(ReadIn),
    Lseek(LseekIn),
    CopyFileRange(CopyFileRangeIn),
    CopyFileRange64(CopyFileRangeIn),
    Syncfs(SyncfsIn),
    Tmpfile(CreateIn),
    Statx(StatxIn),
    Unknown(u32),
}

impl Operation<'_> {
    /// The operation's name, for logs.
    pub fn name(&self) -> &'static str {
        match self {
            Operation::Init(_) => "init",
            Operation::Destroy => "destroy",
            Operation::Lookup { .. } => "lookup",
            Operation::Forget(_) => "forget",
            Operation::BatchForget(_) => "batch_forget",
            Operation::Getattr(_) => "getattr",
            Operation::Setattr(_) => "setattr",
            Operation::Readlink => "readlink",
            Operation::Symlink { .. } => "symlink",
            Operation::Mknod { .. } => "mknod",
            Operation::Mkdir { .. } => "mkdir",
            Operation::Unlink { .. } => "unlink",
            Operation::Rmdir { .. } => "rmdir",
            Operation::Rename { .. } => "rename",
            Operation::Rename2 { .. } => "rename2",
            Operation::Link { .. } => "link",
            Operation::Open(_) => "open",
            Operation::Read(_) => "read",
            Operation::Write { .. } => "write",
            Operation::Statfs => "statfs",
            Operation::Release(_) => "release",
            Operation::Fsync(_) => "fsync",
            Operation::Setxattr { .. } => "setxattr",
            Operation::Getxattr { .. } => "getxattr",
            Operation::Listxattr(_) => "listxattr",
            Operation::Removexattr { .. } => "removexattr",
            Operation::Flush(_) => "flush",
            Operation::Opendir(_) => "opendir",
            Operation::Readdir(_) => "readdir",
            Operation::Releasedir(_) => "releasedir",
            Operation::Fsyncdir(_) => "fsyncdir",
            Operation::Getlk(_) => "getlk",
            Operation::Setlk(_) => "setlk",
            Operation::Setlkw(_) => "setlkw",
            Operation::Access(_) => "access",
            Operation::Create { .. } => "create",
            Operation::Interrupt(_) => "interrupt",
            Operation::Bmap(_) => "bmap",
            Operation::Ioctl { .. } => "ioctl",
            Operation::Poll(_) => "poll",
            Operation::Fallocate(_) => "fallocate",
            Operation::Readdirplus(_) => "readdirplus",
            Operation::Lseek(_) => "lseek",
            Operation::CopyFileRange(_) => "copy_file_range",
            Operation::CopyFileRange64(_) => "copy_file_range_64",
            Operation::Syncfs(_) => "syncfs",
            Operation::Tmpfile(_) => "tmpfile",
            Operation::Statx(_) => "statx",
            Operation::Unknown(_) => "unknown",
        }
    }
}

/// Whether the request in `buf` is answered in microseconds: everything but what may wait
/// for the disk for long — reads, writes larger than 64 KiB, syncs, what allocates or frees
/// a file's space (fallocate, truncate, the unlink or rename that drops a file's last name),
/// copies and directory listings.
pub fn is_quick(buf: &[u8]) -> bool {
    use super::abi::opcode::*;
    const SMALL_WRITE: usize = 64 * 1024;
    let Ok((header, _)) = InHeader::read_from_prefix(buf) else { return false };
    match header.opcode {
        WRITE => buf.len() <= size_of::<InHeader>() + size_of::<WriteIn>() + SMALL_WRITE,
        READ | FSYNC | FSYNCDIR | SYNCFS | FALLOCATE | SETATTR | UNLINK | RMDIR | RENAME | RENAME2
        | COPY_FILE_RANGE | COPY_FILE_RANGE_64 | READDIR | READDIRPLUS | INIT | DESTROY => false,
        _ => true,
    }
}

/// Parses with the layout of a connection that negotiated nothing that changes it.
pub fn parse(buf: &[u8]) -> Result<Request<'_>, ParseError> {
    parse_with(buf, Layout::default())
}

pub fn parse_with(buf: &[u8], layout: Layout) -> Result<Request<'_>, ParseError> {
    let (header, _) = InHeader::read_from_prefix(buf).map_err(|_| ParseError::ShortHeader { got: buf.len() })?;
    if header.len as usize != buf.len() {
        return Err(ParseError::LengthMismatch { header: header.len, got: buf.len() });
    }
    let rest = &buf[size_of::<InHeader>()..];
    // Extensions follow the arguments; they are not parsed yet, so they are cut off.
    let extlen = header.total_extlen as usize * 8;
    let body_len = rest.len().checked_sub(extlen).ok_or(ParseError::BadExtensions { extlen })?;
    let mut args = Args { opcode: header.opcode, bytes: &rest[..body_len] };
    let op = args.operation(layout)?;
    Ok(Request { header, op })
}

/// The bytes after the header, consumed front to back.
struct Args<'a> {
    opcode: u32,
    bytes: &'a [u8],
}

impl<'a> Args<'a> {
    fn short(&self, need: usize) -> ParseError {
        ParseError::ShortArguments { opcode: self.opcode, need, got: self.bytes.len() }
    }

    fn fixed<T: FromBytes>(&mut self) -> Result<T, ParseError> {
        let (value, rest) = T::read_from_prefix(self.bytes).map_err(|_| self.short(size_of::<T>()))?;
        self.bytes = rest;
        Ok(value)
    }

    fn take(&mut self, len: usize) -> Result<&'a [u8], ParseError> {
        if self.bytes.len() < len {
            return Err(self.short(len));
        }
        let (taken, rest) = self.bytes.split_at(len);
        self.bytes = rest;
        Ok(taken)
    }

    /// A NUL-terminated name; the NUL is consumed, not returned.
    fn name(&mut self) -> Result<&'a OsStr, ParseError> {
        let end = self.bytes.iter().position(|&b| b == 0).ok_or(ParseError::MissingNul { opcode: self.opcode })?;
        let name = &self.bytes[..end];
        self.bytes = &self.bytes[end + 1..];
        Ok(OsStr::from_bytes(name))
    }

    fn init(&mut self) -> Result<InitIn, ParseError> {
        // Kernels before 7.36 send only the first 16 bytes.
        let compat: CompatInitIn = self.fixed()?;
        let mut init = InitIn {
            major: compat.major,
            minor: compat.minor,
            max_readahead: compat.max_readahead,
            flags: compat.flags,
            ..InitIn::default()
        };
        if let Ok((flags2, _)) = u32::read_from_prefix(self.bytes) {
            init.flags2 = flags2;
        }
        Ok(init)
    }

    fn setxattr(&mut self, layout: Layout) -> Result<Operation<'a>, ParseError> {
        let arg = if layout.setxattr_ext {
            self.fixed::<SetxattrIn>()?
        } else {
            let compat: CompatSetxattrIn = self.fixed()?;
            SetxattrIn { size: compat.size, flags: compat.flags, ..SetxattrIn::default() }
        };
        let name = self.name()?;
        let value = self.take(arg.size as usize)?;
        Ok(Operation::Setxattr { arg, name, value })
    }

    fn batch_forget(&mut self) -> Result<Operation<'a>, ParseError> {
        let arg: BatchForgetIn = self.fixed()?;
        let need = (arg.count as usize).saturating_mul(size_of::<ForgetOne>());
        let bytes = self.take(need)?;
        // Copied: the slice may be misaligned for a `&[ForgetOne]`.
        let forgets = bytes.chunks_exact(size_of::<ForgetOne>()).filter_map(|c| ForgetOne::read_from_bytes(c).ok());
        Ok(Operation::BatchForget(forgets.collect()))
    }

    fn operation(&mut self, layout: Layout) -> Result<Operation<'a>, ParseError> {
        use super::abi::opcode::*;
        Ok(match self.opcode {
            INIT => Operation::Init(self.init()?),
            DESTROY => Operation::Destroy,
            LOOKUP => Operation::Lookup { name: self.name()? },
            FORGET => Operation::Forget(self.fixed()?),
            BATCH_FORGET => self.batch_forget()?,
            GETATTR => Operation::Getattr(self.fixed()?),
            SETATTR => Operation::Setattr(self.fixed()?),
            READLINK => Operation::Readlink,
            SYMLINK => Operation::Symlink { name: self.name()?, target: self.name()? },
            MKNOD => Operation::Mknod { arg: self.fixed()?, name: self.name()? },
            MKDIR => Operation::Mkdir { arg: self.fixed()?, name: self.name()? },
            UNLINK => Operation::Unlink { name: self.name()? },
            RMDIR => Operation::Rmdir { name: self.name()? },
            RENAME => Operation::Rename { arg: self.fixed()?, name: self.name()?, newname: self.name()? },
            RENAME2 => Operation::Rename2 { arg: self.fixed()?, name: self.name()?, newname: self.name()? },
            LINK => Operation::Link { arg: self.fixed()?, newname: self.name()? },
            OPEN => Operation::Open(self.fixed()?),
            READ => Operation::Read(self.fixed()?),
            WRITE => {
                let arg: WriteIn = self.fixed()?;
                Operation::Write { arg, data: self.take(arg.size as usize)? }
            }
            STATFS => Operation::Statfs,
            RELEASE => Operation::Release(self.fixed()?),
            FSYNC => Operation::Fsync(self.fixed()?),
            SETXATTR => self.setxattr(layout)?,
            GETXATTR => Operation::Getxattr { arg: self.fixed()?, name: self.name()? },
            LISTXATTR => Operation::Listxattr(self.fixed()?),
            REMOVEXATTR => Operation::Removexattr { name: self.name()? },
            FLUSH => Operation::Flush(self.fixed()?),
            OPENDIR => Operation::Opendir(self.fixed()?),
            READDIR => Operation::Readdir(self.fixed()?),
            RELEASEDIR => Operation::Releasedir(self.fixed()?),
            FSYNCDIR => Operation::Fsyncdir(self.fixed()?),
            GETLK => Operation::Getlk(self.fixed()?),
            SETLK => Operation::Setlk(self.fixed()?),
            SETLKW => Operation::Setlkw(self.fixed()?),
            ACCESS => Operation::Access(self.fixed()?),
            CREATE => Operation::Create { arg: self.fixed()?, name: self.name()? },
            INTERRUPT => Operation::Interrupt(self.fixed()?),
            BMAP => Operation::Bmap(self.fixed()?),
            IOCTL => {
                let arg: IoctlIn = self.fixed()?;
                Operation::Ioctl { arg, data: self.take(arg.in_size as usize)? }
            }
            POLL => Operation::Poll(self.fixed()?),
            FALLOCATE => Operation::Fallocate(self.fixed()?),
            READDIRPLUS => Operation::Readdirplus(self.fixed()?),
            LSEEK => Operation::Lseek(self.fixed()?),
            COPY_FILE_RANGE => Operation::CopyFileRange(self.fixed()?),
            COPY_FILE_RANGE_64 => Operation::CopyFileRange64(self.fixed()?),
            SYNCFS => Operation::Syncfs(self.fixed()?),
            // The kernel also sends the dentry's placeholder name; a tmpfile has none.
            TMPFILE => Operation::Tmpfile(self.fixed()?),
            STATX => Operation::Statx(self.fixed()?),
            other => Operation::Unknown(other),
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;
    use zerocopy::IntoBytes;

    /// A request as the kernel lays it out: header, then the argument pieces.
    pub(crate) fn request(opcode: u32, unique: u64, nodeid: u64, pieces: &[&[u8]]) -> Vec<u8> {
        let body: Vec<u8> = pieces.concat();
        let header = InHeader {
            len: (size_of::<InHeader>() + body.len()) as u32,
            opcode,
            unique,
            nodeid,
            uid: 1000,
            gid: 1000,
            pid: 42,
            ..InHeader::default()
        };
        [header.as_bytes(), &body].concat()
    }

    fn op(opcode: u32, pieces: &[&[u8]]) -> Operation<'static> {
        let buf: &'static [u8] = Vec::leak(request(opcode, 7, 5, pieces));
        let parsed = parse(buf).unwrap();
        assert_eq!(parsed.header.opcode, opcode);
        assert_eq!(parsed.unique(), 7);
        assert_eq!(parsed.nodeid(), 5);
        parsed.op
    }

    fn name(s: &str) -> &OsStr {
        OsStr::new(s)
    }

    #[test]
    fn only_requests_that_may_wait_long_for_the_disk_are_not_quick() {
        let lookup = request(opcode::LOOKUP, 1, 1, &[b"x\0"]);
        let getattr = request(opcode::GETATTR, 1, 1, &[GetattrIn::default().as_bytes()]);
        let write = |size: usize| {
            let arg = WriteIn { size: size as u32, ..WriteIn::default() };
            request(opcode::WRITE, 1, 2, &[arg.as_bytes(), &vec![7u8; size]])
        };
        let fsync = request(opcode::FSYNC, 1, 2, &[FsyncIn::default().as_bytes()]);
        let read = request(opcode::READ, 1, 2, &[ReadIn { size: 4096, ..ReadIn::default() }.as_bytes()]);
        let mkdir = request(opcode::MKDIR, 1, 1, &[MkdirIn::default().as_bytes(), b"d\0"]);
        let unlink = request(opcode::UNLINK, 1, 1, &[b"f\0"]);
        for quick in [&lookup, &getattr, &mkdir, &write(4096), &write(64 * 1024)] {
            assert!(is_quick(quick), "opcode {}", parse(quick).unwrap().op.name());
        }
        for slow in [&fsync, &read, &unlink, &write(64 * 1024 + 1)] {
            assert!(!is_quick(slow), "opcode {}", parse(slow).unwrap().op.name());
        }
        assert!(!is_quick(&lookup[..10]), "a short buffer is no quick request");
    }

    #[test]
    fn header_fields_and_resend() {
        let buf = request(opcode::GETATTR, UNIQUE_RESEND | 9, 1, &[GetattrIn::default().as_bytes()]);
        let req = parse(&buf).unwrap();
        assert!(req.is_resend());
        assert_eq!(req.unique(), UNIQUE_RESEND | 9);
        assert_eq!((req.header.uid, req.header.gid, req.header.pid), (1000, 1000, 42));
        assert!(!parse(&request(opcode::STATFS, 9, 1, &[])).unwrap().is_resend());
    }

    #[test]
    fn short_or_inconsistent_buffers_are_errors() {
        assert_eq!(parse(&[0; 39]), Err(ParseError::ShortHeader { got: 39 }));
        assert_eq!(parse(&[]), Err(ParseError::ShortHeader { got: 0 }));
        let mut buf = request(opcode::STATFS, 1, 1, &[]);
        buf.push(0);
        assert_eq!(parse(&buf), Err(ParseError::LengthMismatch { header: 40, got: 41 }));
        // Every truncation of a valid request with fixed arguments fails to parse.
        let full = request(opcode::READ, 1, 1, &[ReadIn::default().as_bytes()]);
        for cut in 40..full.len() {
            let mut short = full[..cut].to_vec();
            short[..4].copy_from_slice(&(cut as u32).to_le_bytes());
            assert!(matches!(parse(&short), Err(ParseError::ShortArguments { opcode: 15, need: 40, .. })));
        }
    }

    #[test]
    fn extensions_are_cut_off() {
        let mut buf = request(opcode::LOOKUP, 1, 1, &[b"a\0", &[0; 6], &[1; 8]]);
        buf[36..38].copy_from_slice(&1u16.to_le_bytes());
        assert_eq!(parse(&buf).unwrap().op, Operation::Lookup { name: name("a") });
        buf[36..38].copy_from_slice(&3u16.to_le_bytes());
        assert_eq!(parse(&buf), Err(ParseError::BadExtensions { extlen: 24 }));
    }

    #[test]
    fn names_need_their_nul() {
        for opcode in [opcode::LOOKUP, opcode::UNLINK, opcode::RMDIR, opcode::REMOVEXATTR] {
            let buf = request(opcode, 1, 1, &[b"name"]);
            assert_eq!(parse(&buf), Err(ParseError::MissingNul { opcode }));
        }
        let buf = request(opcode::SYMLINK, 1, 1, &[b"link\0target"]);
        assert_eq!(parse(&buf), Err(ParseError::MissingNul { opcode: opcode::SYMLINK }));
        let buf = request(opcode::RENAME, 1, 1, &[RenameIn { newdir: 3 }.as_bytes(), b"a\0b"]);
        assert_eq!(parse(&buf), Err(ParseError::MissingNul { opcode: opcode::RENAME }));
        let buf = request(opcode::MKDIR, 1, 1, &[&[0; 4]]);
        assert!(matches!(parse(&buf), Err(ParseError::ShortArguments { need: 8, got: 4, .. })));
    }

    #[test]
    fn init_full_and_compat() {
        let init = InitIn { major: 7, minor: 45, max_readahead: 1 << 17, flags: 3, flags2: 0x80, ..InitIn::default() };
        assert_eq!(op(opcode::INIT, &[init.as_bytes()]), Operation::Init(init));
        let compat = CompatInitIn { major: 7, minor: 31, max_readahead: 4096, flags: 1 };
        let expected = InitIn { major: 7, minor: 31, max_readahead: 4096, flags: 1, ..InitIn::default() };
        assert_eq!(op(opcode::INIT, &[compat.as_bytes()]), Operation::Init(expected));
        assert!(parse(&request(opcode::INIT, 1, 0, &[&[0; 12]])).is_err());
    }

    #[test]
    fn operations_without_arguments() {
        assert_eq!(op(opcode::DESTROY, &[]), Operation::Destroy);
        assert_eq!(op(opcode::READLINK, &[]), Operation::Readlink);
        assert_eq!(op(opcode::STATFS, &[]), Operation::Statfs);
        assert_eq!(op(9999, &[b"whatever"]), Operation::Unknown(9999));
        assert_eq!(op(opcode::SETUPMAPPING, &[]), Operation::Unknown(opcode::SETUPMAPPING));
    }

    #[test]
    fn operations_with_names() {
        assert_eq!(op(opcode::LOOKUP, &[b"file.txt\0"]), Operation::Lookup { name: name("file.txt") });
        assert_eq!(op(opcode::UNLINK, &[b"x\0"]), Operation::Unlink { name: name("x") });
        assert_eq!(op(opcode::RMDIR, &[b"d\0"]), Operation::Rmdir { name: name("d") });
        assert_eq!(op(opcode::REMOVEXATTR, &[b"user.a\0"]), Operation::Removexattr { name: name("user.a") });
        assert_eq!(
            op(opcode::SYMLINK, &[b"link\0", b"../target\0"]),
            Operation::Symlink { name: name("link"), target: name("../target") }
        );
        let mknod = MknodIn { mode: 0o10644, rdev: 0, umask: 0o22, padding: 0 };
        assert_eq!(
            op(opcode::MKNOD, &[mknod.as_bytes(), b"fifo\0"]),
            Operation::Mknod { arg: mknod, name: name("fifo") }
        );
        let mkdir = MkdirIn { mode: 0o755, umask: 0o22 };
        assert_eq!(
            op(opcode::MKDIR, &[mkdir.as_bytes(), b"dir\0"]),
            Operation::Mkdir { arg: mkdir, name: name("dir") }
        );
        let rename = RenameIn { newdir: 9 };
        assert_eq!(
            op(opcode::RENAME, &[rename.as_bytes(), b"a\0b\0"]),
            Operation::Rename { arg: rename, name: name("a"), newname: name("b") }
        );
        let rename2 = Rename2In { newdir: 9, flags: 1, padding: 0 };
        assert_eq!(
            op(opcode::RENAME2, &[rename2.as_bytes(), b"a\0b\0"]),
            Operation::Rename2 { arg: rename2, name: name("a"), newname: name("b") }
        );
        let link = LinkIn { oldnodeid: 12 };
        assert_eq!(
            op(opcode::LINK, &[link.as_bytes(), b"hard\0"]),
            Operation::Link { arg: link, newname: name("hard") }
        );
        let create = CreateIn { flags: 0o101, mode: 0o644, umask: 0o22, open_flags: OPEN_KILL_SUIDGID };
        assert_eq!(
            op(opcode::CREATE, &[create.as_bytes(), b"new\0"]),
            Operation::Create { arg: create, name: name("new") }
        );
        assert_eq!(op(opcode::TMPFILE, &[create.as_bytes(), b"/\0"]), Operation::Tmpfile(create));
    }

    #[test]
    fn operations_with_fixed_arguments() {
        let forget = ForgetIn { nlookup: 3 };
        assert_eq!(op(opcode::FORGET, &[forget.as_bytes()]), Operation::Forget(forget));
        let getattr = GetattrIn { getattr_flags: GETATTR_FH, dummy: 0, fh: 4 };
        assert_eq!(op(opcode::GETATTR, &[getattr.as_bytes()]), Operation::Getattr(getattr));
        let setattr = SetattrIn { valid: fattr::SIZE | fattr::MODE, size: 100, mode: 0o600, ..SetattrIn::default() };
        assert_eq!(op(opcode::SETATTR, &[setattr.as_bytes()]), Operation::Setattr(setattr));
        let open = OpenIn { flags: 2, open_flags: 0 };
        assert_eq!(op(opcode::OPEN, &[open.as_bytes()]), Operation::Open(open));
        assert_eq!(op(opcode::OPENDIR, &[open.as_bytes()]), Operation::Opendir(open));
        let read = ReadIn { fh: 1, offset: 4096, size: 8192, ..ReadIn::default() };
        assert_eq!(op(opcode::READ, &[read.as_bytes()]), Operation::Read(read));
        assert_eq!(op(opcode::READDIR, &[read.as_bytes()]), Operation::Readdir(read));
        assert_eq!(op(opcode::READDIRPLUS, &[read.as_bytes()]), Operation::Readdirplus(read));
        let release = ReleaseIn { fh: 1, flags: 2, release_flags: RELEASE_FLUSH, lock_owner: 5 };
        assert_eq!(op(opcode::RELEASE, &[release.as_bytes()]), Operation::Release(release));
        assert_eq!(op(opcode::RELEASEDIR, &[release.as_bytes()]), Operation::Releasedir(release));
        let fsync = FsyncIn { fh: 1, fsync_flags: FSYNC_FDATASYNC, padding: 0 };
        assert_eq!(op(opcode::FSYNC, &[fsync.as_bytes()]), Operation::Fsync(fsync));
        assert_eq!(op(opcode::FSYNCDIR, &[fsync.as_bytes()]), Operation::Fsyncdir(fsync));
        let getxattr = GetxattrIn { size: 64, padding: 0 };
        assert_eq!(op(opcode::LISTXATTR, &[getxattr.as_bytes()]), Operation::Listxattr(getxattr));
        assert_eq!(
            op(opcode::GETXATTR, &[getxattr.as_bytes(), b"user.k\0"]),
            Operation::Getxattr { arg: getxattr, name: name("user.k") }
        );
        let flush = FlushIn { fh: 1, lock_owner: 8, ..FlushIn::default() };
        assert_eq!(op(opcode::FLUSH, &[flush.as_bytes()]), Operation::Flush(flush));
        let lk = LkIn { fh: 1, owner: 2, lk: FileLock { start: 0, end: 10, kind: 1, pid: 3 }, ..LkIn::default() };
        assert_eq!(op(opcode::GETLK, &[lk.as_bytes()]), Operation::Getlk(lk));
        assert_eq!(op(opcode::SETLK, &[lk.as_bytes()]), Operation::Setlk(lk));
        assert_eq!(op(opcode::SETLKW, &[lk.as_bytes()]), Operation::Setlkw(lk));
        let access = AccessIn { mask: 4, padding: 0 };
        assert_eq!(op(opcode::ACCESS, &[access.as_bytes()]), Operation::Access(access));
        let interrupt = InterruptIn { unique: 77 };
        assert_eq!(op(opcode::INTERRUPT, &[interrupt.as_bytes()]), Operation::Interrupt(interrupt));
        let bmap = BmapIn { block: 3, blocksize: 4096, padding: 0 };
        assert_eq!(op(opcode::BMAP, &[bmap.as_bytes()]), Operation::Bmap(bmap));
        let poll = PollIn { fh: 1, kh: 2, flags: POLL_SCHEDULE_NOTIFY, events: 1 };
        assert_eq!(op(opcode::POLL, &[poll.as_bytes()]), Operation::Poll(poll));
        let fallocate = FallocateIn { fh: 1, offset: 0, length: 1 << 20, mode: 0, padding: 0 };
        assert_eq!(op(opcode::FALLOCATE, &[fallocate.as_bytes()]), Operation::Fallocate(fallocate));
        let lseek = LseekIn { fh: 1, offset: 10, whence: 3, padding: 0 };
        assert_eq!(op(opcode::LSEEK, &[lseek.as_bytes()]), Operation::Lseek(lseek));
        let copy = CopyFileRangeIn { fh_in: 1, off_in: 2, nodeid_out: 3, fh_out: 4, off_out: 5, len: 6, flags: 0 };
        assert_eq!(op(opcode::COPY_FILE_RANGE, &[copy.as_bytes()]), Operation::CopyFileRange(copy));
        assert_eq!(op(opcode::COPY_FILE_RANGE_64, &[copy.as_bytes()]), Operation::CopyFileRange64(copy));
        assert_eq!(op(opcode::SYNCFS, &[SyncfsIn::default().as_bytes()]), Operation::Syncfs(SyncfsIn::default()));
        let statx = StatxIn { getattr_flags: 0, reserved: 0, fh: 0, sx_flags: 0, sx_mask: 0x7ff };
        assert_eq!(op(opcode::STATX, &[statx.as_bytes()]), Operation::Statx(statx));
    }

    #[test]
    fn write_borrows_its_data() {
        let write = WriteIn { fh: 1, offset: 0, size: 5, ..WriteIn::default() };
        let buf = request(opcode::WRITE, 1, 2, &[write.as_bytes(), b"hello"]);
        let req = parse(&buf).unwrap();
        let Operation::Write { arg, data } = req.op else { panic!("{:?}", req.op) };
        assert_eq!((arg, data), (write, &b"hello"[..]));
        assert_eq!(data.as_ptr(), buf[80..].as_ptr());
        // Fewer bytes than the write's size.
        let buf = request(opcode::WRITE, 1, 2, &[write.as_bytes(), b"hell"]);
        assert!(matches!(parse(&buf), Err(ParseError::ShortArguments { need: 5, got: 4, .. })));
    }

    #[test]
    fn ioctl_carries_its_input() {
        let ioctl = IoctlIn { fh: 1, cmd: 0x5401, in_size: 3, out_size: 0, ..IoctlIn::default() };
        assert_eq!(op(opcode::IOCTL, &[ioctl.as_bytes(), b"abc"]), Operation::Ioctl { arg: ioctl, data: b"abc" });
    }

    #[test]
    fn setxattr_both_layouts() {
        let compat = CompatSetxattrIn { size: 3, flags: 1 };
        let expected = SetxattrIn { size: 3, flags: 1, ..SetxattrIn::default() };
        assert_eq!(
            op(opcode::SETXATTR, &[compat.as_bytes(), b"user.k\0", b"v\0v"]),
            Operation::Setxattr { arg: expected, name: name("user.k"), value: b"v\0v" }
        );
        let ext = SetxattrIn { size: 2, flags: 0, setxattr_flags: SETXATTR_ACL_KILL_SGID, padding: 0 };
        let buf = request(opcode::SETXATTR, 1, 1, &[ext.as_bytes(), b"system.posix_acl_access\0", b"ab"]);
        let req = parse_with(&buf, Layout { setxattr_ext: true }).unwrap();
        assert_eq!(req.op, Operation::Setxattr { arg: ext, name: name("system.posix_acl_access"), value: b"ab" });
        let short = request(opcode::SETXATTR, 1, 1, &[compat.as_bytes(), b"user.k\0", b"v"]);
        assert!(matches!(parse(&short), Err(ParseError::ShortArguments { need: 3, got: 1, .. })));
    }

    #[test]
    fn batch_forget_lists_each_inode() {
        let forgets = [ForgetOne { nodeid: 2, nlookup: 1 }, ForgetOne { nodeid: 3, nlookup: 5 }];
        let head = BatchForgetIn { count: 2, dummy: 0 };
        let buf = request(opcode::BATCH_FORGET, 0, 0, &[head.as_bytes(), forgets.as_bytes()]);
        let req = parse(&buf).unwrap();
        assert!(!req.wants_reply());
        assert_eq!(req.op, Operation::BatchForget(forgets.to_vec()));
        let huge = BatchForgetIn { count: u32::MAX, dummy: 0 };
        let buf = request(opcode::BATCH_FORGET, 0, 0, &[huge.as_bytes(), forgets.as_bytes()]);
        assert!(matches!(parse(&buf), Err(ParseError::ShortArguments { .. })));
    }

    proptest! {
        #[test]
        fn parse_never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = parse(&bytes);
            let _ = parse_with(&bytes, Layout { setxattr_ext: true });
        }

        #[test]
        fn parse_never_panics_on_any_opcode_with_a_consistent_header(
            opcode in 0u32..60,
            extlen in 0u16..4,
            body in proptest::collection::vec(any::<u8>(), 0..200),
        ) {
            let mut buf = request(opcode, 1, 1, &[&body]);
            buf[36..38].copy_from_slice(&extlen.to_le_bytes());
            let _ = parse(&buf);
            let _ = parse_with(&buf, Layout { setxattr_ext: true });
        }
    }
}
