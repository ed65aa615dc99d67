//! Volumes mounted through the kernel by the `volfs` binary, exercised with ordinary syscalls.
//! Every test asserts exact results and errno values. The file data tests run twice, once with
//! FUSE passthrough and once with the daemon serving file I/O (`passthrough::*` and
//! `no_passthrough::*`), and must give the same bytes and errors.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ffi::{CStr, CString};
use std::fs::{self, File, Metadata, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{symlink, FileExt, FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use common::{as_user, cpath, cvt, errno_of, is_mountpoint, Mode, MountOpts, TestPool};

const KIB: u64 = 1024;
const MIB: u64 = 1024 * 1024;
const GIB: u64 = 1024 * MIB;

// ---------------------------------------------------------------------------------------------
// Small wrappers over the syscalls std does not offer.

fn perm_of(p: &Path) -> u32 {
    fs::symlink_metadata(p).unwrap_or_else(|e| panic!("lstat {}: {e}", p.display())).mode() & 0o7777
}

fn lstat(p: &Path) -> Metadata {
    fs::symlink_metadata(p).unwrap_or_else(|e| panic!("lstat {}: {e}", p.display()))
}

fn ino(p: &Path) -> u64 {
    lstat(p).ino()
}

fn chmod(p: &Path, mode: u32) {
    fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap_or_else(|e| panic!("chmod {}: {e}", p.display()));
}

fn chown(p: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::chown(p, Some(uid), Some(gid)).unwrap_or_else(|e| panic!("chown {}: {e}", p.display()));
}

fn mknod(p: &Path, mode: u32, dev: libc::dev_t) -> io::Result<()> {
    // SAFETY: a valid C string and integer arguments.
    cvt(unsafe { libc::mknod(cpath(p).as_ptr(), mode, dev) }).map(drop)
}

fn rename2(from: &Path, to: &Path, flags: libc::c_uint) -> io::Result<()> {
    let (a, b) = (cpath(from), cpath(to));
    // SAFETY: two valid C strings.
    cvt(unsafe { libc::renameat2(libc::AT_FDCWD, a.as_ptr(), libc::AT_FDCWD, b.as_ptr(), flags) }).map(drop)
}

fn ts(sec: i64, nsec: i64) -> libc::timespec {
    libc::timespec { tv_sec: sec, tv_nsec: nsec }
}

const UTIME_NOW: libc::timespec = libc::timespec { tv_sec: 0, tv_nsec: libc::UTIME_NOW };
const UTIME_OMIT: libc::timespec = libc::timespec { tv_sec: 0, tv_nsec: libc::UTIME_OMIT };

fn utimens(p: &Path, atime: libc::timespec, mtime: libc::timespec, flags: libc::c_int) -> io::Result<()> {
    let times = [atime, mtime];
    // SAFETY: a valid C string and two timespecs.
    cvt(unsafe { libc::utimensat(libc::AT_FDCWD, cpath(p).as_ptr(), times.as_ptr(), flags) }).map(drop)
}

/// Nanoseconds since the epoch.
fn ns(secs: i64, nsec: i64) -> i128 {
    i128::from(secs) * 1_000_000_000 + i128::from(nsec)
}

fn atime_ns(md: &Metadata) -> i128 {
    ns(md.atime(), md.atime_nsec())
}

fn mtime_ns(md: &Metadata) -> i128 {
    ns(md.mtime(), md.mtime_nsec())
}

fn ctime_ns(md: &Metadata) -> i128 {
    ns(md.ctime(), md.ctime_nsec())
}

fn now_ns() -> i128 {
    let d = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock after 1970");
    ns(d.as_secs() as i64, i64::from(d.subsec_nanos()))
}

fn cname(name: &str) -> CString {
    CString::new(name).expect("no NUL")
}

fn setxattr(p: &Path, name: &str, value: &[u8], flags: libc::c_int) -> io::Result<()> {
    let (path, name) = (cpath(p), cname(name));
    // SAFETY: valid C strings and a buffer of the given length.
    cvt(unsafe { libc::lsetxattr(path.as_ptr(), name.as_ptr(), value.as_ptr().cast(), value.len(), flags) }).map(drop)
}

/// getxattr into a buffer of exactly `size` bytes (0 asks for the length).
fn getxattr(p: &Path, name: &str, size: usize) -> io::Result<(usize, Vec<u8>)> {
    let (path, name) = (cpath(p), cname(name));
    let mut buf = vec![0u8; size];
    // SAFETY: valid C strings and a buffer of `size` bytes.
    let n = cvt(unsafe { libc::lgetxattr(path.as_ptr(), name.as_ptr(), buf.as_mut_ptr().cast(), size) })?;
    let n = n as usize;
    buf.truncate(n.min(size));
    Ok((n, buf))
}

fn listxattr(p: &Path) -> io::Result<BTreeSet<String>> {
    let path = cpath(p);
    // SAFETY: a size query with no buffer.
    let len = cvt(unsafe { libc::llistxattr(path.as_ptr(), std::ptr::null_mut(), 0) })? as usize;
    let mut buf = vec![0u8; len];
    // SAFETY: a buffer of `len` bytes.
    let n = cvt(unsafe { libc::llistxattr(path.as_ptr(), buf.as_mut_ptr().cast(), len) })? as usize;
    buf.truncate(n);
    Ok(buf.split(|b| *b == 0).filter(|s| !s.is_empty()).map(|s| String::from_utf8_lossy(s).into_owned()).collect())
}

fn removexattr(p: &Path, name: &str) -> io::Result<()> {
    let (path, name) = (cpath(p), cname(name));
    // SAFETY: valid C strings.
    cvt(unsafe { libc::lremovexattr(path.as_ptr(), name.as_ptr()) }).map(drop)
}

fn fallocate(f: &File, mode: libc::c_int, offset: u64, len: u64) -> io::Result<()> {
    // SAFETY: plain syscall on an open descriptor.
    cvt(unsafe { libc::fallocate(f.as_raw_fd(), mode, offset as i64, len as i64) }).map(drop)
}

fn lseek(f: &File, offset: u64, whence: libc::c_int) -> io::Result<u64> {
    // SAFETY: plain syscall on an open descriptor.
    cvt(unsafe { libc::lseek(f.as_raw_fd(), offset as i64, whence) }).map(|p| p as u64)
}

/// copy_file_range with explicit offsets, repeated until `len` bytes are copied or it returns 0.
fn copy_range(src: &File, off_in: u64, dst: &File, off_out: u64, len: u64) -> io::Result<u64> {
    let (mut i, mut o) = (off_in as i64, off_out as i64);
    let mut done = 0;
    while done < len {
        // SAFETY: open descriptors and offsets we own.
        let n = cvt(unsafe {
            libc::copy_file_range(src.as_raw_fd(), &mut i, dst.as_raw_fd(), &mut o, (len - done) as usize, 0)
        })?;
        if n == 0 {
            break;
        }
        done += n as u64;
    }
    Ok(done)
}

fn statvfs(p: &Path) -> libc::statvfs {
    // SAFETY: a valid C string; the struct is written by the call.
    unsafe {
        let mut st: libc::statvfs = std::mem::zeroed();
        cvt(libc::statvfs(cpath(p).as_ptr(), &mut st)).expect("statvfs");
        st
    }
}

/// The whole content of an open file, read from offset 0 to EOF through the descriptor.
fn content(f: &File) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = f.read_at(&mut buf, out.len() as u64).expect("read through the descriptor");
        if n == 0 {
            return out;
        }
        out.extend_from_slice(&buf[..n]);
    }
}

/// Bytes that differ from position to position and from seed to seed.
fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| ((i * 31 + i / 251) as u8).wrapping_add(seed)).collect()
}

/// A zeroed buffer whose address is aligned to 4096 bytes, for O_DIRECT.
struct Aligned {
    storage: Vec<u8>,
    start: usize,
    len: usize,
}

impl Aligned {
    fn new(len: usize) -> Self {
        let storage = vec![0u8; len + 4096];
        let start = storage.as_ptr().align_offset(4096);
        Aligned { storage, start, len }
    }

    fn bytes(&mut self) -> &mut [u8] {
        &mut self.storage[self.start..self.start + self.len]
    }
}

/// A directory read with libc's opendir/readdir.
struct Dir(*mut libc::DIR);

impl Dir {
    fn open(p: &Path) -> Dir {
        // SAFETY: a valid C string.
        let d = unsafe { libc::opendir(cpath(p).as_ptr()) };
        assert!(!d.is_null(), "opendir {}: {}", p.display(), io::Error::last_os_error());
        Dir(d)
    }

    /// The next entry: name, inode number and d_type.
    fn next(&mut self) -> Option<(String, u64, u8)> {
        // SAFETY: errno is thread-local; readdir64 reads from our open DIR and returns an entry
        // valid until the next call, which we copy out at once.
        unsafe {
            *libc::__errno_location() = 0;
            let e = libc::readdir64(self.0);
            if e.is_null() {
                let errno = *libc::__errno_location();
                assert_eq!(errno, 0, "readdir: {}", io::Error::from_raw_os_error(errno));
                return None;
            }
            let name = CStr::from_ptr((*e).d_name.as_ptr()).to_string_lossy().into_owned();
            Some((name, (*e).d_ino, (*e).d_type))
        }
    }

    fn all(p: &Path) -> Vec<(String, u64, u8)> {
        let mut d = Dir::open(p);
        std::iter::from_fn(|| d.next()).collect()
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        // SAFETY: closes the DIR opened in `open`, once.
        unsafe { libc::closedir(self.0) };
    }
}

/// Names in a directory, without `.` and `..`, sorted.
fn names(p: &Path) -> Vec<String> {
    let mut v: Vec<String> =
        fs::read_dir(p).expect("read_dir").map(|e| e.expect("entry").file_name().to_string_lossy().into()).collect();
    v.sort();
    v
}

/// In passthrough mode the daemon must really hand files to the kernel, not fall back.
fn assert_mode_in_effect(pool: &TestPool, mode: Mode) {
    if mode == Mode::Passthrough {
        let log = pool.daemon_log();
        assert!(
            !log.contains("passthrough unavailable") && !log.contains("offers no FUSE passthrough"),
            "passthrough was asked for but the daemon fell back:\n{log}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// File data, in both modes.

/// Generates `passthrough::NAME` and `no_passthrough::NAME` tests calling `NAME(mode)`.
macro_rules! in_both_modes {
    ($($name:ident),* $(,)?) => {
        mod passthrough {
            $( #[test] fn $name() { super::$name(super::Mode::Passthrough) } )*
        }
        mod no_passthrough {
            $( #[test] fn $name() { super::$name(super::Mode::NoPassthrough) } )*
        }
    };
}

in_both_modes!(
    a_file_open_twice_at_once_serves_both_descriptors,
    create_write_read_and_overwrite,
    o_append_writes_at_the_end,
    o_trunc_empties_the_file,
    o_direct_writes_and_reads_aligned_blocks,
    truncate_shrinks_and_extends_with_zeros,
    shared_mmap_writes_reach_read,
    fallocate_allocates_and_extends,
    fallocate_keep_size_allocates_without_growing,
    punch_hole_reads_zeros_and_frees_blocks,
    zero_range_reads_zeros,
    seek_data_and_seek_hole_find_the_extents,
    copy_file_range_copies_between_files,
    sparse_file_beyond_4gib,
    write_by_non_owner_clears_suid_and_sgid,
    two_mounts_see_writes_at_once,
);

fn create_write_read_and_overwrite(mode: Mode) {
    let pool = TestPool::new();
    let m = pool.mount("v", MountOpts::mode(mode));
    let p = m.join("f");
    let data = pattern(100_000, 1);
    let mut f = File::create(&p).unwrap();
    f.write_all(&data).unwrap();
    drop(f);
    assert_eq!(fs::metadata(&p).unwrap().len(), 100_000);
    assert_eq!(fs::read(&p).unwrap(), data);

    let f = OpenOptions::new().read(true).write(true).open(&p).unwrap();
    f.write_all_at(b"XYZ", 5000).unwrap();
    let mut expect = data.clone();
    expect[5000..5003].copy_from_slice(b"XYZ");
    let mut buf = [0u8; 10];
    f.read_exact_at(&mut buf, 4998).unwrap();
    assert_eq!(buf[..], expect[4998..5008]);
    assert_eq!(f.read_at(&mut buf, 100_000).unwrap(), 0, "read at EOF");
    assert_eq!(f.read_at(&mut buf, 99_995).unwrap(), 5, "short read before EOF");
    // Writing past the end leaves zeros between.
    f.write_all_at(b"end", 100_010).unwrap();
    expect.extend_from_slice(&[0; 10]);
    expect.extend_from_slice(b"end");
    drop(f);
    assert_eq!(fs::metadata(&p).unwrap().len(), 100_013);
    assert_eq!(fs::read(&p).unwrap(), expect);

    // A descriptor's access mode is enforced.
    let mut ro = File::open(&p).unwrap();
    assert_eq!(errno_of("write on O_RDONLY", ro.write(b"x")), libc::EBADF);
    drop(ro);
    let mut wo = OpenOptions::new().write(true).open(&p).unwrap();
    assert_eq!(errno_of("read on O_WRONLY", wo.read(&mut buf)), libc::EBADF);
    drop(wo);
    assert_mode_in_effect(&pool, mode);
}

fn o_append_writes_at_the_end(mode: Mode) {
    let pool = TestPool::new();
    let m = pool.mount("v", MountOpts::mode(mode));
    let p = m.join("log");
    fs::write(&p, b"abc").unwrap();
    let mut a = OpenOptions::new().append(true).open(&p).unwrap();
    a.write_all(b"def").unwrap();
    a.write_all(b"ghi").unwrap();
    // A seek does not move where O_APPEND writes go.
    a.seek(SeekFrom::Start(0)).unwrap();
    a.write_all(b"jkl").unwrap();
    assert_eq!(a.stream_position().unwrap(), 12);
    drop(a);
    assert_eq!(fs::read(&p).unwrap(), b"abcdefghijkl");
    // A write through another descriptor in between moves the end.
    OpenOptions::new().write(true).open(&p).unwrap().write_all_at(b"mno", 12).unwrap();
    let mut b = OpenOptions::new().append(true).open(&p).unwrap();
    b.write_all(b"pqr").unwrap();
    drop(b);
    assert_eq!(fs::read(&p).unwrap(), b"abcdefghijklmnopqr");
    assert_eq!(fs::metadata(&p).unwrap().len(), 18);
    // O_APPEND with O_CREAT on a new file.
    let q = m.join("new");
    let mut c = OpenOptions::new().append(true).create(true).open(&q).unwrap();
    c.write_all(b"1").unwrap();
    c.write_all(b"2").unwrap();
    drop(c);
    assert_eq!(fs::read(&q).unwrap(), b"12");
    assert_mode_in_effect(&pool, mode);
}

fn o_trunc_empties_the_file(mode: Mode) {
    let pool = TestPool::new();
    let m = pool.mount("v", MountOpts::mode(mode));
    let p = m.join("f");
    fs::write(&p, pattern(10_000, 2)).unwrap();
    let mut f = OpenOptions::new().read(true).write(true).truncate(true).open(&p).unwrap();
    assert_eq!(f.metadata().unwrap().len(), 0);
    assert_eq!(fs::metadata(&p).unwrap().len(), 0);
    assert_eq!(content(&f), b"");
    f.write_all(b"new").unwrap();
    drop(f);
    assert_eq!(fs::read(&p).unwrap(), b"new");
    assert_mode_in_effect(&pool, mode);
}

fn o_direct_writes_and_reads_aligned_blocks(mode: Mode) {
    let pool = TestPool::new();
    let m = pool.mount("v", MountOpts::mode(mode));
    let p = m.join("direct");
    let f = OpenOptions::new().read(true).write(true).create_new(true).custom_flags(libc::O_DIRECT).open(&p).unwrap();
    let data = pattern(8192, 3);
    let mut w = Aligned::new(8192);
    w.bytes().copy_from_slice(&data);
    f.write_all_at(w.bytes(), 0).unwrap();
    f.write_all_at(w.bytes(), 16384).unwrap();
    assert_eq!(f.metadata().unwrap().len(), 24576);
    let mut expect = data.clone();
    expect.extend_from_slice(&[0; 8192]);
    expect.extend_from_slice(&data);
    let mut r = Aligned::new(24576);
    f.read_exact_at(r.bytes(), 0).unwrap();
    assert_eq!(r.bytes(), &expect[..]);
    let mut tail = Aligned::new(8192);
    assert_eq!(f.read_at(tail.bytes(), 24576).unwrap(), 0, "O_DIRECT read at EOF");
    drop(f);
    // The same bytes through the page cache.
    assert_eq!(fs::read(&p).unwrap(), expect);
    assert_mode_in_effect(&pool, mode);
}

fn truncate_shrinks_and_extends_with_zeros(mode: Mode) {
    let pool = TestPool::new();
    let m = pool.mount("v", MountOpts::mode(mode));
    let p = m.join("f");
    let data = pattern(10_000, 4);
    fs::write(&p, &data).unwrap();
    let f = OpenOptions::new().read(true).write(true).open(&p).unwrap();
    f.set_len(100).unwrap();
    assert_eq!(content(&f), data[..100]);
    drop(f);
    assert_eq!(fs::read(&p).unwrap(), data[..100]);
    // truncate(2) by path, growing.
    // SAFETY: a valid C string.
    cvt(unsafe { libc::truncate(cpath(&p).as_ptr(), 5000) }).unwrap();
    let mut expect = data[..100].to_vec();
    expect.resize(5000, 0);
    assert_eq!(fs::metadata(&p).unwrap().len(), 5000);
    assert_eq!(fs::read(&p).unwrap(), expect);
    OpenOptions::new().write(true).open(&p).unwrap().set_len(0).unwrap();
    assert_eq!(fs::read(&p).unwrap(), b"");
    fs::create_dir(m.join("d")).unwrap();
    // SAFETY: a valid C string.
    let r = cvt(unsafe { libc::truncate(cpath(&m.join("d")).as_ptr(), 0) });
    assert_eq!(errno_of("truncate a directory", r), libc::EISDIR);
    assert_mode_in_effect(&pool, mode);
}

fn shared_mmap_writes_reach_read(mode: Mode) {
    let pool = TestPool::new();
    let m = pool.mount("v", MountOpts::mode(mode));
    let p = m.join("mapped");
    let f = OpenOptions::new().read(true).write(true).create_new(true).open(&p).unwrap();
    f.set_len(8192).unwrap();
    let data = pattern(8192, 5);
    // SAFETY: maps 8192 bytes of a file that is that long; unmapped below before `f` closes.
    let map = unsafe {
        libc::mmap(std::ptr::null_mut(), 8192, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_SHARED, f.as_raw_fd(), 0)
    };
    assert_ne!(map, libc::MAP_FAILED, "mmap: {}", io::Error::last_os_error());
    // SAFETY: the mapping is 8192 bytes long, readable and writable, and only used here.
    let bytes = unsafe { std::slice::from_raw_parts_mut(map.cast::<u8>(), 8192) };
    bytes.copy_from_slice(&data);
    // SAFETY: the mapping made above.
    cvt(unsafe { libc::msync(map, 8192, libc::MS_SYNC) }).unwrap();
    let mut buf = vec![0u8; 8192];
    f.read_exact_at(&mut buf, 0).unwrap();
    assert_eq!(buf, data, "read() after msync");
    // And the other way: write() is seen through the map.
    f.write_all_at(b"via write", 100).unwrap();
    assert_eq!(&bytes[100..109], b"via write");
    // SAFETY: the mapping made above; `bytes` is not used after this.
    cvt(unsafe { libc::munmap(map, 8192) }).unwrap();
    drop(f);
    let mut expect = data;
    expect[100..109].copy_from_slice(b"via write");
    assert_eq!(fs::read(&p).unwrap(), expect, "read after close");
    assert_mode_in_effect(&pool, mode);
}

fn fallocate_allocates_and_extends(mode: Mode) {
    let pool = TestPool::new();
    let m = pool.mount("v", MountOpts::mode(mode));
    let p = m.join("f");
    let f = OpenOptions::new().read(true).write(true).create_new(true).open(&p).unwrap();
    fallocate(&f, 0, 0, MIB).unwrap();
    let md = fs::metadata(&p).unwrap();
    assert_eq!(md.len(), MIB);
    assert!(md.blocks() >= MIB / 512, "blocks {} after allocating 1 MiB", md.blocks());
    assert_eq!(content(&f), vec![0u8; MIB as usize]);
    drop(f);
    assert_eq!(fs::read(&p).unwrap(), vec![0u8; MIB as usize]);
    assert_mode_in_effect(&pool, mode);
}

fn fallocate_keep_size_allocates_without_growing(mode: Mode) {
    let pool = TestPool::new();
    let m = pool.mount("v", MountOpts::mode(mode));
    let p = m.join("f");
    let f = OpenOptions::new().read(true).write(true).create_new(true).open(&p).unwrap();
    f.write_all_at(b"data", 0).unwrap();
    fallocate(&f, libc::FALLOC_FL_KEEP_SIZE, 0, MIB).unwrap();
    let md = fs::metadata(&p).unwrap();
    assert_eq!(md.len(), 4);
    assert!(md.blocks() >= MIB / 512, "blocks {} after allocating 1 MiB", md.blocks());
    assert_eq!(content(&f), b"data");
    drop(f);
    assert_eq!(fs::read(&p).unwrap(), b"data");
    assert_mode_in_effect(&pool, mode);
}

fn punch_hole_reads_zeros_and_frees_blocks(mode: Mode) {
    let pool = TestPool::new();
    let m = pool.mount("v", MountOpts::mode(mode));
    let p = m.join("f");
    let f = OpenOptions::new().read(true).write(true).create_new(true).open(&p).unwrap();
    f.write_all_at(&vec![0xab; MIB as usize], 0).unwrap();
    f.sync_all().unwrap();
    let before = fs::metadata(&p).unwrap().blocks();
    fallocate(&f, libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE, 256 * KIB, 256 * KIB).unwrap();
    let md = fs::metadata(&p).unwrap();
    assert_eq!(md.len(), MIB);
    assert!(md.blocks() + 512 <= before, "blocks {before} -> {} after punching 256 KiB", md.blocks());
    let mut expect = vec![0xab; MIB as usize];
    expect[256 * KIB as usize..512 * KIB as usize].fill(0);
    assert_eq!(content(&f), expect, "read through the open descriptor");
    let r = fallocate(&f, libc::FALLOC_FL_PUNCH_HOLE, 0, 4096);
    assert_eq!(errno_of("PUNCH_HOLE without KEEP_SIZE", r), libc::EOPNOTSUPP);
    drop(f);
    assert_eq!(fs::read(&p).unwrap(), expect);
    assert_mode_in_effect(&pool, mode);
}

fn zero_range_reads_zeros(mode: Mode) {
    let pool = TestPool::new();
    let m = pool.mount("v", MountOpts::mode(mode));
    let p = m.join("f");
    let f = OpenOptions::new().read(true).write(true).create_new(true).open(&p).unwrap();
    f.write_all_at(&[0xcd; 65536], 0).unwrap();
    fallocate(&f, libc::FALLOC_FL_ZERO_RANGE, 4096, 8192).unwrap();
    let mut expect = vec![0xcdu8; 65536];
    expect[4096..12288].fill(0);
    assert_eq!(fs::metadata(&p).unwrap().len(), 65536);
    assert_eq!(content(&f), expect);
    // Past the end and without KEEP_SIZE it grows the file.
    fallocate(&f, libc::FALLOC_FL_ZERO_RANGE, 61440, 8192).unwrap();
    expect[61440..].fill(0);
    expect.resize(69632, 0);
    assert_eq!(fs::metadata(&p).unwrap().len(), 69632);
    assert_eq!(content(&f), expect);
    drop(f);
    assert_eq!(fs::read(&p).unwrap(), expect);
    assert_mode_in_effect(&pool, mode);
}

fn seek_data_and_seek_hole_find_the_extents(mode: Mode) {
    let pool = TestPool::new();
    let m = pool.mount("v", MountOpts::mode(mode));
    let p = m.join("sparse");
    let mut f = OpenOptions::new().read(true).write(true).create_new(true).open(&p).unwrap();
    f.write_all_at(&[1; 4096], 0).unwrap();
    f.write_all_at(&[2; 4096], MIB).unwrap();
    f.set_len(2 * MIB).unwrap();
    assert_eq!(lseek(&f, 0, libc::SEEK_DATA).unwrap(), 0);
    assert_eq!(lseek(&f, 0, libc::SEEK_HOLE).unwrap(), 4096);
    assert_eq!(lseek(&f, 4096, libc::SEEK_DATA).unwrap(), MIB);
    assert_eq!(lseek(&f, MIB, libc::SEEK_HOLE).unwrap(), MIB + 4096);
    assert_eq!(lseek(&f, MIB + 4096, libc::SEEK_HOLE).unwrap(), MIB + 4096);
    assert_eq!(errno_of("SEEK_DATA after the last data", lseek(&f, MIB + 4096, libc::SEEK_DATA)), libc::ENXIO);
    assert_eq!(errno_of("SEEK_DATA at EOF", lseek(&f, 2 * MIB, libc::SEEK_DATA)), libc::ENXIO);
    assert_eq!(errno_of("SEEK_HOLE at EOF", lseek(&f, 2 * MIB, libc::SEEK_HOLE)), libc::ENXIO);
    // The descriptor's position is where the last successful lseek left it.
    assert_eq!(lseek(&f, 4096, libc::SEEK_DATA).unwrap(), MIB);
    let mut buf = [0u8; 4];
    f.read_exact(&mut buf).unwrap();
    assert_eq!(buf, [2; 4]);
    assert_mode_in_effect(&pool, mode);
}

fn copy_file_range_copies_between_files(mode: Mode) {
    let pool = TestPool::new();
    let m = pool.mount("v", MountOpts::mode(mode));
    let data = pattern(100_000, 6);
    fs::write(m.join("src"), &data).unwrap();
    fs::write(m.join("dst"), b"0123456789").unwrap();
    let src = File::open(m.join("src")).unwrap();
    let dst = OpenOptions::new().read(true).write(true).open(m.join("dst")).unwrap();
    assert_eq!(copy_range(&src, 1000, &dst, 5, 50_000).unwrap(), 50_000);
    let mut expect = b"01234".to_vec();
    expect.extend_from_slice(&data[1000..51_000]);
    assert_eq!(fs::metadata(m.join("dst")).unwrap().len(), 50_005);
    assert_eq!(content(&dst), expect, "read through the descriptor open during the copy");
    // From EOF nothing is copied.
    assert_eq!(copy_range(&src, 100_000, &dst, 0, 10).unwrap(), 0);
    drop(dst);
    assert_eq!(fs::read(m.join("dst")).unwrap(), expect);
    // The destination must be open for writing.
    let ro = File::open(m.join("dst")).unwrap();
    assert_eq!(errno_of("copy into an O_RDONLY descriptor", copy_range(&src, 0, &ro, 0, 10)), libc::EBADF);
    assert_mode_in_effect(&pool, mode);
}

fn sparse_file_beyond_4gib(mode: Mode) {
    let pool = TestPool::new();
    let m = pool.mount("v", MountOpts::mode(mode));
    let p = m.join("big");
    let f = OpenOptions::new().read(true).write(true).create_new(true).open(&p).unwrap();
    f.write_all_at(b"Z", 5 * GIB).unwrap();
    drop(f);
    let md = fs::metadata(&p).unwrap();
    assert_eq!(md.len(), 5 * GIB + 1);
    assert!(md.blocks() < 1024, "a 1-byte extent took {} blocks", md.blocks());
    let f = File::open(&p).unwrap();
    let mut b = [0u8; 2];
    assert_eq!(f.read_at(&mut b, 5 * GIB).unwrap(), 1);
    assert_eq!(b[0], b'Z');
    let mut zeros = vec![0xffu8; 4096];
    f.read_exact_at(&mut zeros, 4 * GIB + 4096).unwrap();
    assert_eq!(zeros, vec![0u8; 4096]);
    assert_eq!(f.read_at(&mut b, 5 * GIB + 1).unwrap(), 0);
    assert_mode_in_effect(&pool, mode);
}

fn write_by_non_owner_clears_suid_and_sgid(mode: Mode) {
    let pool = TestPool::new();
    let m = pool.mount("v", MountOpts::mode(mode));
    let p = m.join("setid");
    fs::write(&p, b"x").unwrap();
    chmod(&p, 0o6777);
    assert_eq!(perm_of(&p), 0o6777);
    as_user(1000, 1000, || OpenOptions::new().write(true).open(&p)?.write_all(b"y")).unwrap();
    assert_eq!(fs::read(&p).unwrap(), b"y");
    assert_eq!(perm_of(&p), 0o777, "a write by uid 1000 must clear S_ISUID and S_ISGID");
    assert_mode_in_effect(&pool, mode);
}

fn a_file_open_twice_at_once_serves_both_descriptors(mode: Mode) {
    let pool = TestPool::new();
    let m = pool.mount("v", MountOpts::mode(mode));
    let p = m.join("f");
    // The descriptor from create stays open while the file is opened again.
    let mut created = File::create(&p).unwrap();
    created.write_all(b"abc").unwrap();
    let reader = File::open(&p).unwrap();
    let writer = OpenOptions::new().read(true).write(true).open(&p).unwrap();
    let mut appender = OpenOptions::new().append(true).open(&p).unwrap();
    writer.write_all_at(b"ABC", 0).unwrap();
    appender.write_all(b"def").unwrap();
    created.write_all(b"ghi").unwrap();
    assert_eq!(content(&reader), b"ABCghi", "the third write goes at the creator's offset");
    appender.write_all(b"jkl").unwrap();
    assert_eq!(content(&reader), b"ABCghijkl");
    writer.sync_all().unwrap();
    reader.sync_all().unwrap();
    drop((created, writer, appender));
    assert_eq!(content(&reader), b"ABCghijkl");
    assert_eq!(fs::read(&p).unwrap(), b"ABCghijkl");
    assert_mode_in_effect(&pool, mode);
}

fn two_mounts_see_writes_at_once(mode: Mode) {
    let pool = TestPool::new();
    let a = pool.mount("v", MountOpts::mode(mode));
    let b = pool.mount("v", MountOpts::mode(mode));
    fs::write(a.join("f"), b"one").unwrap();
    // b reads first, so anything it caches is from before the write.
    assert_eq!(fs::read(b.join("f")).unwrap(), b"one");
    assert_eq!(fs::metadata(b.join("f")).unwrap().len(), 3);
    let open_in_b = File::open(b.join("f")).unwrap();
    let w = OpenOptions::new().write(true).open(a.join("f")).unwrap();
    w.write_all_at(b"ONE-two", 0).unwrap();
    assert_eq!(fs::metadata(b.join("f")).unwrap().len(), 7, "size seen through the other mount");
    assert_eq!(fs::read(b.join("f")).unwrap(), b"ONE-two", "content seen through the other mount");
    let mut buf = [0u8; 16];
    let n = open_in_b.read_at(&mut buf, 0).unwrap();
    assert_eq!(&buf[..n], b"ONE-two", "content read through a descriptor open before the write");
    assert_mode_in_effect(&pool, mode);
}

/// What a fixed sequence of data operations returns: bytes, sizes and errnos.
fn data_transcript(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut note = |what: &str, r: io::Result<String>| {
        out.push(match r {
            Ok(v) => format!("{what}: {v}"),
            Err(e) => format!("{what}: errno {}", e.raw_os_error().unwrap_or(-1)),
        })
    };
    let p = dir.join("t");
    let f = OpenOptions::new().read(true).write(true).create_new(true).open(&p).unwrap();
    note("pwrite", f.write_at(&pattern(70_000, 9), 3).map(|n| n.to_string()));
    note("size", f.metadata().map(|m| m.len().to_string()));
    let mut buf = vec![0u8; 200];
    note("pread mid", f.read_at(&mut buf, 65_500).map(|n| format!("{n} {:?}", &buf[..n.min(16)])));
    note("pread tail", f.read_at(&mut buf, 69_950).map(|n| format!("{n} {:?}", &buf[..n])));
    note(
        "fallocate punch",
        fallocate(&f, libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE, 8192, 8192).map(|_| "ok".into()),
    );
    note("fallocate punch alone", fallocate(&f, libc::FALLOC_FL_PUNCH_HOLE, 0, 4096).map(|_| "ok".into()));
    note("fallocate bad mode", fallocate(&f, 0x4000_0000, 0, 4096).map(|_| "ok".into()));
    note("seek data", lseek(&f, 8192, libc::SEEK_DATA).map(|o| o.to_string()));
    note("seek hole", lseek(&f, 0, libc::SEEK_HOLE).map(|o| o.to_string()));
    note("seek data past end", lseek(&f, 80_000, libc::SEEK_DATA).map(|o| o.to_string()));
    note("zero range", fallocate(&f, libc::FALLOC_FL_ZERO_RANGE, 100, 50).map(|_| "ok".into()));
    let q = dir.join("u");
    let g = OpenOptions::new().read(true).write(true).create_new(true).open(&q).unwrap();
    note("copy", copy_range(&f, 50, &g, 7, 30_000).map(|n| n.to_string()));
    note("copy overlapping self", copy_range(&f, 0, &f, 100, 1000).map(|n| n.to_string()));
    note("truncate", f.set_len(12_345).map(|_| "ok".into()));
    note("pwrite negative", {
        // SAFETY: a write from a valid buffer; the offset is what is tested.
        cvt(unsafe { libc::pwrite(f.as_raw_fd(), b"x".as_ptr().cast(), 1, -1) }).map(|n| n.to_string())
    });
    drop((f, g));
    note("append", {
        let mut a = OpenOptions::new().append(true).open(&p).unwrap();
        a.write_all(b"tail").and_then(|_| a.stream_position()).map(|o| o.to_string())
    });
    let ro = File::open(&p).unwrap();
    note("write on O_RDONLY", (&ro).write(b"x").map(|n| n.to_string()));
    note("fallocate on O_RDONLY", fallocate(&ro, 0, 0, 4096).map(|_| "ok".into()));
    drop(ro);
    note("content t", fs::read(&p).map(|d| format!("{} {:x}", d.len(), digest(&d))));
    note("content u", fs::read(&q).map(|d| format!("{} {:x}", d.len(), digest(&d))));
    out
}

fn digest(d: &[u8]) -> u64 {
    d.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3))
}

#[test]
fn data_results_are_identical_in_both_modes() {
    let pool = TestPool::new();
    let with = pool.mount("with", MountOpts::mode(Mode::Passthrough));
    let without = pool.mount("without", MountOpts::mode(Mode::NoPassthrough));
    let a = data_transcript(with.path());
    let b = data_transcript(without.path());
    assert_eq!(a, b, "passthrough (left) and daemon I/O (right) differ");
    assert_mode_in_effect(&pool, Mode::Passthrough);
}

// ---------------------------------------------------------------------------------------------
// Names and directories.

#[test]
fn o_excl_on_existing_name_is_eexist() {
    let pool = TestPool::new();
    let m = pool.mount("v", MountOpts::default());
    let p = m.join("f");
    fs::write(&p, b"keep").unwrap();
    let r = OpenOptions::new().write(true).create_new(true).open(&p);
    assert_eq!(errno_of("O_CREAT|O_EXCL on a file", r), libc::EEXIST);
    assert_eq!(fs::read(&p).unwrap(), b"keep");
    fs::create_dir(m.join("d")).unwrap();
    let r = OpenOptions::new().write(true).create_new(true).open(m.join("d"));
    assert_eq!(errno_of("O_CREAT|O_EXCL on a directory", r), libc::EEXIST);
    // O_EXCL does not follow a symlink, even a dangling one.
    symlink("missing", m.join("dangling")).unwrap();
    let r = OpenOptions::new().write(true).create_new(true).open(m.join("dangling"));
    assert_eq!(errno_of("O_CREAT|O_EXCL on a dangling symlink", r), libc::EEXIST);
    assert!(!m.join("missing").exists());
}

#[test]
fn mkdir_on_existing_name_is_eexist() {
    let pool = TestPool::new();
    let m = pool.mount("v", MountOpts::default());
    fs::create_dir(m.join("d")).unwrap();
    fs::write(m.join("f"), b"").unwrap();
    assert_eq!(errno_of("mkdir over a dir", fs::create_dir(m.join("d"))), libc::EEXIST);
    assert_eq!(errno_of("mkdir over a file", fs::create_dir(m.join("f"))), libc::EEXIST);
    assert!(lstat(&m.join("f")).is_file());
}

#[test]
fn mkdir_and_rmdir_count_parent_links() {
    let pool = TestPool::new();
    let m = pool.mount("v", MountOpts::default());
    let d = m.join("d");
    fs::create_dir(&d).unwrap();
    assert_eq!(lstat(&d).nlink(), 2);
    fs::create_dir(d.join("a")).unwrap();
    fs::create_dir(d.join("b")).unwrap();
    fs::write(d.join("f"), b"").unwrap();
    assert_eq!(lstat(&d).nlink(), 4);
    fs::remove_dir(d.join("a")).unwrap();
    assert_eq!(lstat(&d).nlink(), 3);
    assert_eq!(errno_of("stat a removed dir", fs::symlink_metadata(d.join("a"))), libc::ENOENT);
    assert_eq!(names(&d), ["b", "f"]);
}

#[test]
fn rmdir_of_non_empty_dir_is_enotempty() {
    let pool = TestPool::new();
    let m = pool.mount("v", MountOpts::default());
    let d = m.join("d");
    fs::create_dir(&d).unwrap();
    fs::write(d.join("f"), b"x").unwrap();
    assert_eq!(errno_of("rmdir non-empty", fs::remove_dir(&d)), libc::ENOTEMPTY);
    assert_eq!(fs::read(d.join("f")).unwrap(), b"x");
    fs::remove_file(d.join("f")).unwrap();
    fs::remove_dir(&d).unwrap();
    assert_eq!(errno_of("stat after rmdir", fs::symlink_metadata(&d)), libc::ENOENT);
}

#[test]
fn rmdir_of_file_is_enotdir() {
    let pool = TestPool::new();
    let m = pool.mount("v", MountOpts::default());
    fs::write(m.join("f"), b"x").unwrap();
    assert_eq!(errno_of("rmdir a file", fs::remove_dir(m.join("f"))), libc::ENOTDIR);
    assert_eq!(fs::read(m.join("f")).unwrap(), b"x");
    assert_eq!(errno_of("rmdir missing", fs::remove_dir(m.join("nope"))), libc::ENOENT);
}

#[test]
fn path_through_a_file_is_enotdir() {
    let pool = TestPool::new();
    let m = pool.mount("v", MountOpts::default());
    fs::write(m.join("f"), b"x").unwrap();
    assert_eq!(errno_of("stat f/x", fs::symlink_metadata(m.join("f/x"))), libc::ENOTDIR);
    assert_eq!(errno_of("mkdir f/x", fs::create_dir(m.join("f/x"))), libc::ENOTDIR);
    assert_eq!(errno_of("create f/x", File::create(m.join("f/x"))), libc::ENOTDIR);
}

#[test]
fn unlink_of_directory_is_eisdir() {
    let pool = TestPool::new();
    let m = pool.mount("v", MountOpts::default());
    fs::create_dir(m.join("d")).unwrap();
    assert_eq!(errno_of("unlink a dir", fs::remove_file(m.join("d"))), libc::EISDIR);
    assert!(lstat(&m.join("d")).is_dir());
    assert_eq!(errno_of("unlink missing", fs::remove_file(m.join("nope"))), libc::ENOENT);
}

#[test]
fn unlinked_open_file_keeps_its_data_until_closed() {
    let pool = TestPool::new();
    let m = pool.mount("v", MountOpts::default());
    let p = m.join("f");
    fs::write(&p, b"still here").unwrap();
    let f = OpenOptions::new().read(true).write(true).open(&p).unwrap();
    fs::remove_file(&p).unwrap();
    assert_eq!(errno_of("stat after unlink", fs::symlink_metadata(&p)), libc::ENOENT);
    assert_eq!(f.metadata().unwrap().nlink(), 0);
    f.write_all_at(b"STILL", 0).unwrap();
    let mut buf = [0u8; 10];
    f.read_exact_at(&mut buf, 0).unwrap();
    assert_eq!(&buf, b"STILL here");
    drop(f);
    assert!(names(m.path()).is_empty());
    // The name can be reused for a new file at once.
    fs::write(&p, b"new").unwrap();
    assert_eq!(fs::read(&p).unwrap(), b"new");
}

#[test]
fn symlink_and_readlink_round_trip() {
    let pool = TestPool::new();
    let m = pool.mount("v", MountOpts::default());
    fs::write(m.join("target"), b"t").unwrap();
    symlink("target", m.join("l")).unwrap();
    assert_eq!(fs::read_link(m.join("l")).unwrap(), Path::new("target"));
    let md = lstat(&m.join("l"));
    assert!(md.file_type().is_symlink());
    assert_eq!(md.len(), 6);
    assert_eq!(fs::metadata(m.join("l")).unwrap().len(), 1);
    assert_eq!(fs::read(m.join("l")).unwrap(), b"t");
    let long = "x/".repeat(1000) + "end";
    symlink(&long, m.join("long")).unwrap();
    assert_eq!(fs::read_link(m.join("long")).unwrap(), Path::new(&long));
    assert_eq!(lstat(&m.join("long")).len(), long.len() as u64);
    symlink("nowhere", m.join("dangling")).unwrap();
    assert_eq!(errno_of("stat a dangling symlink", fs::metadata(m.join("dangling"))), libc::ENOENT);
    assert_eq!(errno_of("readlink a file", fs::read_link(m.join("target"))), libc::EINVAL);
    assert_eq!(errno_of("symlink over a name", symlink("x", m.join("target"))), libc::EEXIST);
}

#[test]
fn hard_links_share_the_inode_and_count_links() {
    let pool = TestPool::new();
    let m = pool.mount("v", MountOpts::default());
    let (a, b) = (m.join("a"), m.join("b"));
    fs::write(&a, b"data").unwrap();
    assert_eq!(lstat(&a).nlink(), 1);
    fs::hard_link(&a, &b).unwrap();
    assert_eq!(ino(&a), ino(&b));
    assert_eq!(lstat(&a).nlink(), 2);
    assert_eq!(lstat(&b).nlink(), 2);
    fs::create_dir(m.join("d")).unwrap();
    fs::hard_link(&a, m.join("d/c")).unwrap();
    assert_eq!(lstat(&b).nlink(), 3);
    OpenOptions::new().write(true).open(&b).unwrap().write_all_at(b"DA", 0).unwrap();
    assert_eq!(fs::read(&a).unwrap(), b"DAta");
    fs::remove_file(&a).unwrap();
    assert_eq!(lstat(&b).nlink(), 2);
    fs::remove_file(m.join("d/c")).unwrap();
    assert_eq!(lstat(&b).nlink(), 1);
    assert_eq!(fs::read(&b).unwrap(), b"DAta");
    assert_eq!(errno_of("link a dir", fs::hard_link(m.join("d"), m.join("d2"))), libc::EPERM);
    fs::write(m.join("other"), b"").unwrap();
    assert_eq!(errno_of("link over a name", fs::hard_link(&b, m.join("other"))), libc::EEXIST);
    assert_eq!(errno_of("link a missing name", fs::hard_link(&a, m.join("x"))), libc::ENOENT);
}

#[test]
fn rename_replaces_an_existing_file() {
    let pool = TestPool::new();
    let m = pool.mount("v", MountOpts::default());
    let (a, b) = (m.join("a"), m.join("b"));
    fs::write(&a, b"A").unwrap();
    fs::write(&b, b"B").unwrap();
    let ino_a = ino(&a);
    fs::rename(&a, &b).unwrap();
    assert_eq!(fs::read(&b).unwrap(), b"A");
    assert_eq!(ino(&b), ino_a);
    assert_eq!(lstat(&b).nlink(), 1);
    assert_eq!(errno_of("stat the old name", fs::symlink_metadata(&a)), libc::ENOENT);
    assert_eq!(names(m.path()), ["b"]);
    assert_eq!(errno_of("rename a missing name", fs::rename(&a, m.join("c"))), libc::ENOENT);
}

#[test]
fn rename_noreplace_on_existing_target_is_eexist() {
    let pool = TestPool::new();
    let m = pool.mount("v", MountOpts::default());
    let (a, b) = (m.join("a"), m.join("b"));
    fs::write(&a, b"A").unwrap();
    fs::write(&b, b"B").unwrap();
    assert_eq!(errno_of("RENAME_NOREPLACE", rename2(&a, &b, libc::RENAME_NOREPLACE)), libc::EEXIST);
    assert_eq!(fs::read(&a).unwrap(), b"A");
    assert_eq!(fs::read(&b).unwrap(), b"B");
    rename2(&a, &m.join("c"), libc::RENAME_NOREPLACE).unwrap();
    assert_eq!(names(m.path()), ["b", "c"]);
    assert_eq!(fs::read(m.join("c")).unwrap(), b"A");
}

#[test]
fn rename_exchange_swaps_file_and_dir_both_ways() {
    let pool = TestPool::new();
    let m = pool.mount("v", MountOpts::default());
    let (d1, d2) = (m.join("d1"), m.join("d2"));
    fs::create_dir(&d1).unwrap();
    fs::create_dir(&d2).unwrap();
    fs::write(d1.join("f"), b"file").unwrap();
    fs::create_dir(d2.join("sub")).unwrap();
    fs::write(d2.join("sub/inner"), b"in").unwrap();
    let (ino_f, ino_sub, ino_d1, ino_d2) = (ino(&d1.join("f")), ino(&d2.join("sub")), ino(&d1), ino(&d2));
    assert_eq!((lstat(&d1).nlink(), lstat(&d2).nlink()), (2, 3));

    // File as the source, directory as the target.
    rename2(&d1.join("f"), &d2.join("sub"), libc::RENAME_EXCHANGE).unwrap();
    assert!(lstat(&d1.join("f")).is_dir());
    assert_eq!(ino(&d1.join("f")), ino_sub);
    assert_eq!(fs::read(d1.join("f/inner")).unwrap(), b"in");
    assert_eq!(ino(&d2.join("sub")), ino_f);
    assert_eq!(fs::read(d2.join("sub")).unwrap(), b"file");
    assert_eq!((lstat(&d1).nlink(), lstat(&d2).nlink()), (3, 2));
    let dotdot = Dir::all(&d1.join("f")).into_iter().find(|e| e.0 == "..").expect("a .. entry");
    assert_eq!(dotdot.1, ino_d1, "the moved directory's .. names its new parent");

    // Directory as the source, file as the target: back as it was.
    rename2(&d1.join("f"), &d2.join("sub"), libc::RENAME_EXCHANGE).unwrap();
    assert_eq!(ino(&d1.join("f")), ino_f);
    assert_eq!(ino(&d2.join("sub")), ino_sub);
    assert_eq!(fs::read(d1.join("f")).unwrap(), b"file");
    assert_eq!(fs::read(d2.join("sub/inner")).unwrap(), b"in");
    assert_eq!((lstat(&d1).nlink(), lstat(&d2).nlink()), (2, 3));
    let dotdot = Dir::all(&d2.join("sub")).into_iter().find(|e| e.0 == "..").expect("a .. entry");
    assert_eq!(dotdot.1, ino_d2);

    // Two files in one directory.
    fs::write(d1.join("g"), b"gee").unwrap();
    rename2(&d1.join("f"), &d1.join("g"), libc::RENAME_EXCHANGE).unwrap();
    assert_eq!(fs::read(d1.join("f")).unwrap(), b"gee");
    assert_eq!(fs::read(d1.join("g")).unwrap(), b"file");

    let r = rename2(&d1.join("f"), &d1.join("missing"), libc::RENAME_EXCHANGE);
    assert_eq!(errno_of("RENAME_EXCHANGE with a missing target", r), libc::ENOENT);
    assert_eq!(names(&d1), ["f", "g"]);
}

#[test]
fn rename_dir_over_non_empty_dir_is_enotempty() {
    let pool = TestPool::new();
    let m = pool.mount("v", MountOpts::default());
    fs::create_dir(m.join("a")).unwrap();
    fs::create_dir(m.join("b")).unwrap();
    fs::write(m.join("b/f"), b"x").unwrap();
    let r = fs::rename(m.join("a"), m.join("b"));
    assert_eq!(errno_of("rename dir over non-empty dir", r), libc::ENOTEMPTY);
    assert!(lstat(&m.join("a")).is_dir());
    assert_eq!(fs::read(m.join("b/f")).unwrap(), b"x");
}

#[test]
fn rename_dir_over_empty_dir_replaces_it() {
    let pool = TestPool::new();
    let m = pool.mount("v", MountOpts::default());
    fs::create_dir_all(m.join("x/a")).unwrap();
    fs::write(m.join("x/a/f"), b"x").unwrap();
    fs::create_dir_all(m.join("y/b")).unwrap();
    let ino_a = ino(&m.join("x/a"));
    fs::rename(m.join("x/a"), m.join("y/b")).unwrap();
    assert_eq!(ino(&m.join("y/b")), ino_a);
    assert_eq!(fs::read(m.join("y/b/f")).unwrap(), b"x");
    assert_eq!(lstat(&m.join("x")).nlink(), 2);
    assert_eq!(lstat(&m.join("y")).nlink(), 3);
    assert!(names(&m.join("x")).is_empty());
    let dotdot = Dir::all(&m.join("y/b")).into_iter().find(|e| e.0 == "..").expect("a .. entry");
    assert_eq!(dotdot.1, ino(&m.join("y")));
}

#[test]
fn rename_dir_over_file_is_enotdir() {
    let pool = TestPool::new();
    let m = pool.mount("v", MountOpts::default());
    fs::create_dir(m.join("d")).unwrap();
    fs::write(m.join("f"), b"x").unwrap();
    assert_eq!(errno_of("rename dir over file", fs::rename(m.join("d"), m.join("f"))), libc::ENOTDIR);
    assert!(lstat(&m.join("d")).is_dir());
    assert_eq!(fs::read(m.join("f")).unwrap(), b"x");
}

#[test]
fn rename_file_over_dir_is_eisdir() {
    let pool = TestPool::new();
    let m = pool.mount("v", MountOpts::default());
    fs::create_dir(m.join("d")).unwrap();
    fs::write(m.join("f"), b"x").unwrap();
    assert_eq!(errno_of("rename file over dir", fs::rename(m.join("f"), m.join("d"))), libc::EISDIR);
    assert!(lstat(&m.join("d")).is_dir());
    assert_eq!(fs::read(m.join("f")).unwrap(), b"x");
}

#[test]
fn rename_dir_into_its_own_subdir_is_einval() {
    let pool = TestPool::new();
    let m = pool.mount("v", MountOpts::default());
    fs::create_dir_all(m.join("a/b")).unwrap();
    assert_eq!(errno_of("rename a into a/b/c", fs::rename(m.join("a"), m.join("a/b/c"))), libc::EINVAL);
    assert_eq!(errno_of("rename a into a/c", fs::rename(m.join("a"), m.join("a/c"))), libc::EINVAL);
    let r = rename2(&m.join("a"), &m.join("a/b"), libc::RENAME_EXCHANGE);
    assert_eq!(errno_of("exchange a with a/b", r), libc::EINVAL);
    assert_eq!(names(m.path()), ["a"]);
    assert_eq!(names(&m.join("a")), ["b"]);
}

#[test]
fn rename_to_the_same_name_changes_nothing() {
    let pool = TestPool::new();
    let m = pool.mount("v", MountOpts::default());
    let a = m.join("a");
    fs::write(&a, b"A").unwrap();
    let before = ino(&a);
    fs::rename(&a, &a).unwrap();
    assert_eq!(fs::read(&a).unwrap(), b"A");
    assert_eq!(ino(&a), before);
    // Two names of one file: POSIX says rename does nothing.
    fs::hard_link(&a, m.join("b")).unwrap();
    fs::rename(&a, m.join("b")).unwrap();
    assert_eq!(names(m.path()), ["a", "b"]);
    assert_eq!(lstat(&a).nlink(), 2);
    fs::create_dir(m.join("d")).unwrap();
    fs::rename(m.join("d"), m.join("d")).unwrap();
    assert!(lstat(&m.join("d")).is_dir());
}

#[test]
fn rename_and_link_change_the_inode_ctime() {
    let pool = TestPool::new();
    let m = pool.mount("v", MountOpts::default());
    let a = m.join("a");
    fs::write(&a, b"A").unwrap();
    let c0 = ctime_ns(&lstat(&a));
    fs::rename(&a, m.join("b")).unwrap();
    let c1 = ctime_ns(&lstat(&m.join("b")));
    assert!(c1 > c0, "rename: ctime {c0} -> {c1}");
    fs::hard_link(m.join("b"), m.join("c")).unwrap();
    let c2 = ctime_ns(&lstat(&m.join("b")));
    assert!(c2 > c1, "link: ctime {c1} -> {c2}");
    fs::remove_file(m.join("c")).unwrap();
    let c3 = ctime_ns(&lstat(&m.join("b")));
    assert!(c3 > c2, "unlink of the other name: ctime {c2} -> {c3}");
}

#[test]
fn namespace_changes_update_parent_mtime_and_ctime() {
    let pool = TestPool::new();
    let m = pool.mount("v", MountOpts::default());
    let (d, e) = (m.join("d"), m.join("e"));
    fs::create_dir(&d).unwrap();
    fs::create_dir(&e).unwrap();
    fs::write(e.join("moving"), b"").unwrap();
    type Op = Box<dyn Fn(&Path, &Path) -> io::Result<()>>;
    let ops: Vec<(&str, Op)> = vec![
        ("create", Box::new(|d, _| File::create(d.join("f")).map(drop))),
        ("mkdir", Box::new(|d, _| fs::create_dir(d.join("sub")))),
        ("symlink", Box::new(|d, _| symlink("f", d.join("s")))),
        ("mknod", Box::new(|d, _| mknod(&d.join("fifo"), libc::S_IFIFO | 0o644, 0))),
        ("link", Box::new(|d, _| fs::hard_link(d.join("f"), d.join("f2")))),
        ("rename within", Box::new(|d, _| fs::rename(d.join("f2"), d.join("f3")))),
        ("rename in", Box::new(|d, e| fs::rename(e.join("moving"), d.join("moved")))),
        ("rename out", Box::new(|d, e| fs::rename(d.join("moved"), e.join("moving")))),
        ("unlink", Box::new(|d, _| fs::remove_file(d.join("f3")))),
        ("rmdir", Box::new(|d, _| fs::remove_dir(d.join("sub")))),
    ];
    let past = ts(946_684_800, 0);
    for (what, op) in ops {
        utimens(&d, past, past, 0).unwrap();
        utimens(&e, past, past, 0).unwrap();
        let (cd, ce) = (ctime_ns(&lstat(&d)), ctime_ns(&lstat(&e)));
        op(&d, &e).unwrap_or_else(|err| panic!("{what}: {err}"));
        let md = lstat(&d);
        assert!(mtime_ns(&md) > ns(946_684_800, 0), "{what}: parent mtime unchanged");
        assert!(ctime_ns(&md) > cd, "{what}: parent ctime unchanged");
        if what.starts_with("rename in") || what.starts_with("rename out") {
            let me = lstat(&e);
            assert!(mtime_ns(&me) > ns(946_684_800, 0), "{what}: other parent mtime unchanged");
            assert!(ctime_ns(&me) > ce, "{what}: other parent ctime unchanged");
        }
    }
}

#[test]
fn chmod_sets_permission_bits() {
    let pool = TestPool::new();
    let m = pool.mount("v", MountOpts::default());
    let f = m.join("f");
    fs::write(&f, b"").unwrap();
    for mode in [0o640, 0o4755, 0o2750, 0o1777, 0o000, 0o7777] {
        chmod(&f, mode);
        assert_eq!(perm_of(&f), mode, "file mode {mode:o}");
    }
    let d = m.join("d");
    fs::create_dir(&d).unwrap();
    chmod(&d, 0o1777);
    assert_eq!(perm_of(&d), 0o1777);
    assert!(lstat(&d).is_dir());
    let c0 = ctime_ns(&lstat(&d));
    chmod(&d, 0o700);
    assert!(ctime_ns(&lstat(&d)) > c0, "chmod changes ctime");
}

#[test]
fn chown_sets_owner_and_group() {
    let pool = TestPool::new();
    let m = pool.mount("v", MountOpts::default());
    let f = m.join("f");
    fs::write(&f, b"").unwrap();
    chown(&f, 1000, 2000);
    let md = lstat(&f);
    assert_eq!((md.uid(), md.gid()), (1000, 2000));
    std::os::unix::fs::chown(&f, None, Some(3000)).unwrap();
    let md = lstat(&f);
    assert_eq!((md.uid(), md.gid()), (1000, 3000));
    symlink("f", m.join("l")).unwrap();
    std::os::unix::fs::lchown(m.join("l"), Some(5), Some(6)).unwrap();
    let (l, t) = (lstat(&m.join("l")), lstat(&f));
    assert_eq!((l.uid(), l.gid()), (5, 6), "lchown changes the link");
    assert_eq!((t.uid(), t.gid()), (1000, 3000), "lchown leaves the target");
}

#[test]
fn chown_by_root_clears_suid_and_sgid() {
    let pool = TestPool::new();
    let m = pool.mount("v", MountOpts::default());
    let f = m.join("f");
    fs::write(&f, b"").unwrap();
    chmod(&f, 0o6755);
    chown(&f, 1000, 1000);
    assert_eq!(perm_of(&f), 0o755, "chown of a setuid/setgid executable clears both bits");
    // A directory keeps its setgid bit.
    let d = m.join("d");
    fs::create_dir(&d).unwrap();
    chmod(&d, 0o2755);
    chown(&d, 1000, 1000);
    assert_eq!(perm_of(&d), 0o2755);
}

#[test]
fn utimensat_sets_explicit_times() {
    let pool = TestPool::new();
    let m = pool.mount("v", MountOpts::default());
    fs::write(m.join("f"), b"x").unwrap();
    fs::create_dir(m.join("d")).unwrap();
    symlink("f", m.join("l")).unwrap();
    for (name, flags) in [("f", 0), ("d", 0), ("l", libc::AT_SYMLINK_NOFOLLOW)] {
        let p = m.join(name);
        utimens(&p, ts(1_000_000_000, 123), ts(1_100_000_000, 456_789), flags).unwrap();
        let md = lstat(&p);
        assert_eq!(atime_ns(&md), ns(1_000_000_000, 123), "{name} atime");
        assert_eq!(mtime_ns(&md), ns(1_100_000_000, 456_789), "{name} mtime");
    }
}

#[test]
fn utimensat_sets_times_before_1970() {
    let pool = TestPool::new();
    let m = pool.mount("v", MountOpts::default());
    fs::write(m.join("f"), b"x").unwrap();
    fs::create_dir(m.join("d")).unwrap();
    for name in ["f", "d"] {
        let p = m.join(name);
        utimens(&p, ts(-1, 0), ts(-86_400, 0), 0).unwrap();
        let md = lstat(&p);
        assert_eq!((md.atime(), md.atime_nsec()), (-1, 0), "{name} atime, whole seconds");
        assert_eq!((md.mtime(), md.mtime_nsec()), (-86_400, 0), "{name} mtime, whole seconds");
        // tv_sec -86400, tv_nsec 5 is 5 ns after -86400 s.
        utimens(&p, ts(-2, 999_999_999), ts(-86_400, 5), 0).unwrap();
        let md = lstat(&p);
        assert_eq!((md.atime(), md.atime_nsec()), (-2, 999_999_999), "{name} atime with nanoseconds");
        assert_eq!((md.mtime(), md.mtime_nsec()), (-86_400, 5), "{name} mtime with nanoseconds");
    }
}

#[test]
fn utimensat_utime_now_and_utime_omit() {
    let pool = TestPool::new();
    let m = pool.mount("v", MountOpts::default());
    fs::write(m.join("f"), b"x").unwrap();
    fs::create_dir(m.join("d")).unwrap();
    for name in ["f", "d"] {
        let p = m.join(name);
        let (a0, m0) = (ns(1_000_000_000, 111), ns(1_100_000_000, 222));
        utimens(&p, ts(1_000_000_000, 111), ts(1_100_000_000, 222), 0).unwrap();
        let before = now_ns();
        utimens(&p, UTIME_OMIT, UTIME_NOW, 0).unwrap();
        let after = now_ns();
        let md = lstat(&p);
        assert_eq!(atime_ns(&md), a0, "{name}: UTIME_OMIT keeps atime");
        let mt = mtime_ns(&md);
        // "Now" by the clock the filesystem uses, which may tick coarsely.
        assert!(mt >= before - 1_000_000_000 && mt <= after + 1_000_000_000, "{name}: UTIME_NOW mtime {mt}");
        assert_ne!(mt, m0);
        utimens(&p, UTIME_NOW, UTIME_OMIT, 0).unwrap();
        let md = lstat(&p);
        assert_eq!(mtime_ns(&md), mt, "{name}: UTIME_OMIT keeps mtime");
        assert!(atime_ns(&md) >= before - 1_000_000_000, "{name}: UTIME_NOW atime");
        utimens(&p, UTIME_OMIT, UTIME_OMIT, 0).unwrap();
        let again = lstat(&p);
        assert_eq!((atime_ns(&again), mtime_ns(&again)), (atime_ns(&md), mtime_ns(&md)), "{name}: both omitted");
    }
}

// ---------------------------------------------------------------------------------------------
// Special files.

#[test]
fn mkfifo_creates_a_fifo_that_passes_data() {
    let pool = TestPool::new();
    let m = pool.mount("v", MountOpts::default());
    let p = m.join("fifo");
    // SAFETY: a valid C string.
    cvt(unsafe { libc::mkfifo(cpath(&p).as_ptr(), 0o640) }).unwrap();
    let md = lstat(&p);
    assert!(md.file_type().is_fifo());
    assert_eq!(md.mode() & 0o7777, 0o640);
    let mut f = OpenOptions::new().read(true).write(true).custom_flags(libc::O_NONBLOCK).open(&p).unwrap();
    f.write_all(b"ping").unwrap();
    let mut buf = [0u8; 8];
    assert_eq!(f.read(&mut buf).unwrap(), 4);
    assert_eq!(&buf[..4], b"ping");
    assert_eq!(errno_of("mkfifo over a name", mknod(&p, libc::S_IFIFO | 0o600, 0)), libc::EEXIST);
}

#[test]
fn unix_socket_bound_inside_the_mount_accepts_connections() {
    let pool = TestPool::new();
    let m = pool.mount("v", MountOpts::default());
    let p = m.join("sock");
    let listener = UnixListener::bind(&p).unwrap();
    assert!(lstat(&p).file_type().is_socket());
    let mut client = UnixStream::connect(&p).unwrap();
    client.write_all(b"hello").unwrap();
    let (mut server, _) = listener.accept().unwrap();
    let mut buf = [0u8; 5];
    server.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"hello");
    drop((client, server, listener));
    fs::remove_file(&p).unwrap();
    assert!(names(m.path()).is_empty());
}

#[test]
fn mknod_char_device_is_usable() {
    let pool = TestPool::new();
    let m = pool.mount("v", MountOpts::default());
    let p = m.join("null");
    mknod(&p, libc::S_IFCHR | 0o666, libc::makedev(1, 3)).unwrap();
    let md = lstat(&p);
    assert!(md.file_type().is_char_device());
    assert_eq!(md.rdev(), libc::makedev(1, 3));
    assert_eq!(md.mode() & 0o777, 0o644, "0666 less the umask 022 of the test");
    let mut f = OpenOptions::new().read(true).write(true).open(&p).unwrap();
    assert_eq!(f.write(b"discarded").unwrap(), 9);
    let mut buf = [0u8; 4];
    assert_eq!(f.read(&mut buf).unwrap(), 0, "/dev/null reads as empty");
}

#[test]
fn mknod_block_device_keeps_its_numbers() {
    let pool = TestPool::new();
    let m = pool.mount("v", MountOpts::default());
    let p = m.join("blk");
    mknod(&p, libc::S_IFBLK | 0o600, libc::makedev(7, 200)).unwrap();
    let md = lstat(&p);
    assert!(md.file_type().is_block_device());
    assert_eq!(md.rdev(), libc::makedev(7, 200));
    // A large major and minor survive the trip too.
    mknod(&m.join("blk2"), libc::S_IFBLK | 0o600, libc::makedev(259, 70_000)).unwrap();
    assert_eq!(lstat(&m.join("blk2")).rdev(), libc::makedev(259, 70_000));
    // mknod of a regular file makes an empty file.
    mknod(&m.join("reg"), libc::S_IFREG | 0o600, 0).unwrap();
    let md = lstat(&m.join("reg"));
    assert!(md.is_file());
    assert_eq!(md.len(), 0);
    assert_eq!(fs::read(m.join("reg")).unwrap(), b"");
}

// ---------------------------------------------------------------------------------------------
// Directory listings.

#[test]
fn readdir_lists_every_entry_exactly_once() {
    let pool = TestPool::new();
    let m = pool.mount("v", MountOpts::default());
    let d = m.join("d");
    fs::create_dir(&d).unwrap();
    let mut expect: BTreeMap<String, u8> = BTreeMap::new();
    for i in 0..1000 {
        let name = format!("f{i:04}");
        match i % 10 {
            0 => {
                fs::create_dir(d.join(&name)).unwrap();
                expect.insert(name, libc::DT_DIR);
            }
            1 => {
                symlink("f0002", d.join(&name)).unwrap();
                expect.insert(name, libc::DT_LNK);
            }
            _ => {
                File::create(d.join(&name)).unwrap();
                expect.insert(name, libc::DT_REG);
            }
        }
    }
    let entries = Dir::all(&d);
    let mut seen: HashMap<String, usize> = HashMap::new();
    for (name, _, _) in &entries {
        *seen.entry(name.clone()).or_default() += 1;
    }
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).map(|(k, _)| k.clone()).collect();
    assert!(twice.is_empty(), "returned more than once: {twice:?}");
    assert_eq!(entries.len(), 1002);
    for (name, ino_seen, kind) in &entries {
        match name.as_str() {
            "." => assert_eq!(*ino_seen, ino(&d)),
            ".." => assert_eq!(*ino_seen, 1, ".. of a top-level dir is the mount's root"),
            _ => {
                assert_eq!(expect.get(name), Some(kind), "{name}: type");
                if name.ends_with('7') {
                    assert_eq!(*ino_seen, ino(&d.join(name)), "{name}: d_ino matches stat");
                }
            }
        }
    }
    assert_eq!(names(&d), expect.keys().cloned().collect::<Vec<_>>());
}

#[test]
fn readdir_returns_entries_present_throughout_exactly_once_while_others_change() {
    let pool = TestPool::new();
    let m = pool.mount("v", MountOpts::default());
    let d = m.join("d");
    fs::create_dir(&d).unwrap();
    let originals: Vec<String> = (0..1000).map(|i| format!("f{i:04}")).collect();
    for n in &originals {
        File::create(d.join(n)).unwrap();
    }
    // Removed while the listing runs, in an order spread over the whole directory.
    let mut doomed: Vec<&String> = originals.iter().step_by(7).collect();
    doomed.sort_by_key(|n| n[1..].parse::<usize>().unwrap() * 389 % 1000);
    let mut doomed = doomed.into_iter();
    let mut removed = BTreeSet::new();
    let mut added = 0;
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut dir = Dir::open(&d);
    let mut count = 0;
    while let Some((name, _, _)) = dir.next() {
        *seen.entry(name).or_default() += 1;
        count += 1;
        if count % 50 == 0 {
            for n in doomed.by_ref().take(8) {
                fs::remove_file(d.join(n)).unwrap();
                removed.insert(n.clone());
            }
            for _ in 0..8 {
                File::create(d.join(format!("g{added:04}"))).unwrap();
                added += 1;
            }
        }
    }
    drop(dir);
    assert!(removed.len() > 100 && added > 100, "the listing ran alongside the changes");
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).map(|(k, n)| format!("{k} x{n}")).collect();
    assert!(twice.is_empty(), "returned more than once: {twice:?}");
    let missing: Vec<_> =
        originals.iter().filter(|n| !removed.contains(*n) && !seen.contains_key(*n)).cloned().collect();
    assert!(missing.is_empty(), "present throughout but not returned: {missing:?}");
    assert_eq!((seen.get("."), seen.get("..")), (Some(&1), Some(&1)));
}

#[test]
fn fsync_fdatasync_fsyncdir_and_syncfs_succeed() {
    let pool = TestPool::new();
    let m = pool.mount("v", MountOpts::default());
    fs::create_dir(m.join("d")).unwrap();
    let mut f = File::create(m.join("d/f")).unwrap();
    f.write_all(b"durable").unwrap();
    f.sync_all().unwrap();
    f.sync_data().unwrap();
    drop(f);
    File::open(m.join("d/f")).unwrap().sync_all().unwrap();
    File::open(m.join("d")).unwrap().sync_all().unwrap();
    File::open(m.join("d")).unwrap().sync_data().unwrap();
    let root = File::open(m.path()).unwrap();
    root.sync_all().unwrap();
    // SAFETY: plain syscall on an open descriptor.
    cvt(unsafe { libc::syncfs(root.as_raw_fd()) }).unwrap();
    assert_eq!(fs::read(m.join("d/f")).unwrap(), b"durable");
}

// ---------------------------------------------------------------------------------------------
// Extended attributes.

#[test]
fn user_xattrs_set_get_list_and_remove() {
    let pool = TestPool::new();
    let m = pool.mount("v", MountOpts::default());
    let f = m.join("f");
    fs::write(&f, b"").unwrap();
    fs::create_dir(m.join("d")).unwrap();
    for p in [f.clone(), m.join("d")] {
        assert_eq!(listxattr(&p).unwrap(), BTreeSet::new());
        setxattr(&p, "user.one", b"1", 0).unwrap();
        setxattr(&p, "user.two", b"second value", 0).unwrap();
        setxattr(&p, "user.empty", b"", 0).unwrap();
        // Near the most one ext4 inode holds (see tests/capacity.rs).
        let big = pattern(4000, 7);
        setxattr(&p, "user.big", &big, 0).unwrap();
        assert_eq!(getxattr(&p, "user.one", 64).unwrap(), (1, b"1".to_vec()));
        assert_eq!(getxattr(&p, "user.two", 0).unwrap().0, 12, "size query");
        assert_eq!(getxattr(&p, "user.empty", 64).unwrap(), (0, Vec::new()));
        assert_eq!(getxattr(&p, "user.big", 4000).unwrap().1, big);
        let all: BTreeSet<String> = ["user.big", "user.empty", "user.one", "user.two"].map(String::from).into();
        assert_eq!(listxattr(&p).unwrap(), all);
        setxattr(&p, "user.one", b"replaced", 0).unwrap();
        assert_eq!(getxattr(&p, "user.one", 64).unwrap().1, b"replaced");
        removexattr(&p, "user.one").unwrap();
        assert_eq!(errno_of("get a removed xattr", getxattr(&p, "user.one", 64)), libc::ENODATA);
        assert_eq!(errno_of("remove a missing xattr", removexattr(&p, "user.one")), libc::ENODATA);
        assert_eq!(listxattr(&p).unwrap().len(), 3);
    }
    // Values are limited to 64 KiB by the kernel.
    assert_eq!(errno_of("65537-byte value", setxattr(&f, "user.huge", &[0; 65537], 0)), libc::E2BIG);
    // user.* is only for files and directories.
    symlink("f", m.join("l")).unwrap();
    assert_eq!(errno_of("user xattr on a symlink", setxattr(&m.join("l"), "user.x", b"1", 0)), libc::EPERM);
}

#[test]
fn xattr_create_on_existing_is_eexist() {
    let pool = TestPool::new();
    let m = pool.mount("v", MountOpts::default());
    let f = m.join("f");
    fs::write(&f, b"").unwrap();
    setxattr(&f, "user.a", b"first", libc::XATTR_CREATE).unwrap();
    assert_eq!(
        errno_of("XATTR_CREATE on existing", setxattr(&f, "user.a", b"second", libc::XATTR_CREATE)),
        libc::EEXIST
    );
    assert_eq!(getxattr(&f, "user.a", 64).unwrap().1, b"first");
}

#[test]
fn xattr_replace_on_missing_is_enodata() {
    let pool = TestPool::new();
    let m = pool.mount("v", MountOpts::default());
    let f = m.join("f");
    fs::write(&f, b"").unwrap();
    assert_eq!(errno_of("XATTR_REPLACE on missing", setxattr(&f, "user.a", b"v", libc::XATTR_REPLACE)), libc::ENODATA);
    assert_eq!(errno_of("get after failed replace", getxattr(&f, "user.a", 64)), libc::ENODATA);
    setxattr(&f, "user.a", b"v", 0).unwrap();
    setxattr(&f, "user.a", b"w", libc::XATTR_REPLACE).unwrap();
    assert_eq!(getxattr(&f, "user.a", 64).unwrap().1, b"w");
}

#[test]
fn getxattr_with_too_small_buffer_is_erange() {
    let pool = TestPool::new();
    let m = pool.mount("v", MountOpts::default());
    let f = m.join("f");
    fs::write(&f, b"").unwrap();
    setxattr(&f, "user.a", b"twelve bytes", 0).unwrap();
    assert_eq!(errno_of("getxattr into 11 bytes", getxattr(&f, "user.a", 11)), libc::ERANGE);
    assert_eq!(getxattr(&f, "user.a", 12).unwrap(), (12, b"twelve bytes".to_vec()));
    let path = cpath(&f);
    let mut small = [0u8; 3];
    // SAFETY: a buffer of 3 bytes.
    let r = cvt(unsafe { libc::llistxattr(path.as_ptr(), small.as_mut_ptr().cast(), 3) });
    assert_eq!(errno_of("listxattr into 3 bytes", r), libc::ERANGE);
}

// ---------------------------------------------------------------------------------------------
// The file system as a whole.

#[test]
fn statfs_reports_capacity_block_size_and_name_max() {
    let pool = TestPool::new();
    pool.create_volume("v", Some("64Mi"));
    let m = pool.mount("v", MountOpts::default());
    let st = statvfs(m.path());
    assert_eq!(st.f_bsize, 4096);
    assert_eq!(st.f_frsize, 4096);
    assert_eq!(st.f_blocks * st.f_frsize, 64 * MIB);
    assert!(st.f_bfree <= st.f_blocks && st.f_bavail <= st.f_bfree);
    assert_eq!(st.f_namemax, 255);
}

#[test]
fn names_of_255_bytes_work_and_256_bytes_are_enametoolong() {
    let pool = TestPool::new();
    let m = pool.mount("v", MountOpts::default());
    let n255 = "a".repeat(255);
    let euro85 = "€".repeat(85);
    fs::write(m.join(&n255), b"long").unwrap();
    assert_eq!(fs::read(m.join(&n255)).unwrap(), b"long");
    fs::create_dir(m.join("b".repeat(255))).unwrap();
    symlink(&n255, m.join("c".repeat(255))).unwrap();
    fs::write(m.join(&euro85), b"").unwrap();
    fs::rename(m.join(&euro85), m.join("d".repeat(255))).unwrap();
    let mut expect = vec![n255.clone(), "b".repeat(255), "c".repeat(255), "d".repeat(255)];
    expect.sort();
    assert_eq!(names(m.path()), expect);

    let n256 = m.join("x".repeat(256));
    let too_long = libc::ENAMETOOLONG;
    assert_eq!(errno_of("create", File::create(&n256)), too_long);
    assert_eq!(errno_of("mkdir", fs::create_dir(&n256)), too_long);
    assert_eq!(errno_of("stat", fs::symlink_metadata(&n256)), too_long);
    assert_eq!(errno_of("symlink", symlink("t", &n256)), too_long);
    assert_eq!(errno_of("link", fs::hard_link(m.join(&n255), &n256)), too_long);
    assert_eq!(errno_of("rename", fs::rename(m.join(&n255), &n256)), too_long);
    assert_eq!(errno_of("mknod", mknod(&n256, libc::S_IFIFO | 0o644, 0)), too_long);
    assert_eq!(errno_of("86 three-byte chars", File::create(m.join("€".repeat(86)))), too_long);
    assert_eq!(names(m.path()), expect);
}

fn inode_numbers(root: &Path) -> BTreeMap<String, u64> {
    ["f", "d", "d/g", "s", "fifo", "d/sub"].iter().map(|n| (n.to_string(), ino(&root.join(n)))).collect()
}

fn populate(root: &Path) {
    fs::write(root.join("f"), b"content").unwrap();
    fs::create_dir(root.join("d")).unwrap();
    fs::write(root.join("d/g"), b"g").unwrap();
    fs::create_dir(root.join("d/sub")).unwrap();
    symlink("f", root.join("s")).unwrap();
    mknod(&root.join("fifo"), libc::S_IFIFO | 0o644, 0).unwrap();
    setxattr(&root.join("f"), "user.k", b"v", 0).unwrap();
}

fn assert_populated(root: &Path) {
    assert_eq!(fs::read(root.join("f")).unwrap(), b"content");
    assert_eq!(fs::read(root.join("d/g")).unwrap(), b"g");
    assert_eq!(fs::read_link(root.join("s")).unwrap(), Path::new("f"));
    assert!(lstat(&root.join("fifo")).file_type().is_fifo());
    assert_eq!(getxattr(&root.join("f"), "user.k", 16).unwrap().1, b"v");
}

#[test]
fn inode_numbers_survive_unmount_and_remount() {
    let pool = TestPool::new();
    let m = pool.mount("v", MountOpts::default());
    populate(m.path());
    let before = inode_numbers(m.path());
    m.unmount();
    let m = pool.mount("v", MountOpts::default());
    assert_eq!(inode_numbers(m.path()), before);
    assert_populated(m.path());
}

#[test]
fn inode_numbers_survive_a_daemon_restart() {
    let pool = TestPool::new();
    let m = pool.mount("v", MountOpts::default());
    populate(m.path());
    let before = inode_numbers(m.path());
    let first = pool.daemon_pid().expect("a daemon serves the pool");
    assert!(pool.shutdown(), "volfs shutdown failed");
    assert!(!is_mountpoint(m.path()), "shutdown unmounts every mount");
    assert_eq!(pool.daemon_pid(), None);
    let m = pool.mount_at("v", m.path(), MountOpts::default());
    assert_ne!(pool.daemon_pid(), Some(first), "a new daemon serves the pool");
    assert_eq!(inode_numbers(m.path()), before);
    assert_populated(m.path());
}

// ---------------------------------------------------------------------------------------------
// Permissions, checked as other users.

#[test]
fn nonroot_cannot_create_in_root_owned_0755_dir() {
    let pool = TestPool::new();
    let m = pool.mount("v", MountOpts::default());
    let d = m.join("locked");
    fs::create_dir(&d).unwrap();
    chmod(&d, 0o755);
    fs::write(d.join("mine"), b"root's").unwrap();
    chmod(&d.join("mine"), 0o644);
    let create = as_user(1000, 1000, || File::create(d.join("x")).map(drop));
    assert_eq!(errno_of("create in a 0755 root dir", create), libc::EACCES);
    assert_eq!(errno_of("mkdir in a 0755 root dir", as_user(1000, 1000, || fs::create_dir(d.join("y")))), libc::EACCES);
    assert_eq!(
        errno_of("unlink in a 0755 root dir", as_user(1000, 1000, || fs::remove_file(d.join("mine")))),
        libc::EACCES
    );
    let write = as_user(1000, 1000, || OpenOptions::new().write(true).open(d.join("mine")).map(drop));
    assert_eq!(errno_of("open a 0644 root file for writing", write), libc::EACCES);
    as_user(1000, 1000, || fs::read(d.join("mine")).map(drop)).expect("reading a 0644 file");
    assert_eq!(names(&d), ["mine"]);
}

#[test]
fn nonroot_creates_in_0777_dir_owned_by_its_uid_and_gid() {
    let pool = TestPool::new();
    let m = pool.mount("v", MountOpts::default());
    let d = m.join("open");
    fs::create_dir(&d).unwrap();
    chmod(&d, 0o777);
    as_user(1000, 1000, || {
        fs::write(d.join("f"), b"by 1000")?;
        fs::create_dir(d.join("sub"))?;
        symlink("f", d.join("l"))
    })
    .unwrap();
    for name in ["f", "sub", "l"] {
        let md = lstat(&d.join(name));
        assert_eq!((md.uid(), md.gid()), (1000, 1000), "{name}");
    }
    assert_eq!(perm_of(&d.join("f")), 0o644);
    assert_eq!(fs::read(d.join("f")).unwrap(), b"by 1000");
}

#[test]
fn setgid_dir_gives_new_files_its_gid_and_subdirs_setgid() {
    let pool = TestPool::new();
    let m = pool.mount("v", MountOpts::default());
    let d = m.join("shared");
    fs::create_dir(&d).unwrap();
    chown(&d, 0, 2000);
    chmod(&d, 0o2777);
    as_user(1000, 1000, || {
        File::create(d.join("f"))?;
        fs::create_dir(d.join("sub"))?;
        mknod(&d.join("fifo"), libc::S_IFIFO | 0o644, 0)
    })
    .unwrap();
    let f = lstat(&d.join("f"));
    assert_eq!((f.uid(), f.gid()), (1000, 2000));
    assert_eq!(f.mode() & 0o7777, 0o644, "files do not get S_ISGID");
    let sub = lstat(&d.join("sub"));
    assert_eq!((sub.uid(), sub.gid()), (1000, 2000));
    assert_eq!(sub.mode() & 0o7777, 0o2755, "subdirs inherit S_ISGID");
    assert_eq!(lstat(&d.join("fifo")).gid(), 2000);
    // And one level further down.
    as_user(1000, 1000, || File::create(d.join("sub/deeper")).map(drop)).unwrap();
    assert_eq!(lstat(&d.join("sub/deeper")).gid(), 2000);
}

#[test]
fn sticky_dir_keeps_others_from_deleting_or_renaming() {
    let pool = TestPool::new();
    let m = pool.mount("v", MountOpts::default());
    let d = m.join("tmp");
    fs::create_dir(&d).unwrap();
    chmod(&d, 0o1777);
    let f = d.join("mine");
    as_user(1000, 1000, || File::create(&f).map(drop)).unwrap();
    assert_eq!(errno_of("unlink by uid 1001", as_user(1001, 1001, || fs::remove_file(&f))), libc::EPERM);
    assert_eq!(errno_of("rename by uid 1001", as_user(1001, 1001, || fs::rename(&f, d.join("taken")))), libc::EPERM);
    assert_eq!(names(&d), ["mine"]);
    as_user(1000, 1000, || fs::remove_file(&f)).expect("the owner deletes");
    assert!(names(&d).is_empty());
}

// ---------------------------------------------------------------------------------------------
// Several mounts of one volume, and read-only mounts.

#[test]
fn two_mounts_see_creates_at_once() {
    let pool = TestPool::new();
    let a = pool.mount("v", MountOpts::default());
    let b = pool.mount("v", MountOpts::default());
    // b looks first, so it may have cached that the names are missing.
    assert_eq!(errno_of("stat before create", fs::symlink_metadata(b.join("f"))), libc::ENOENT);
    assert_eq!(errno_of("stat before mkdir", fs::symlink_metadata(b.join("d"))), libc::ENOENT);
    assert!(names(b.path()).is_empty());
    fs::write(a.join("f"), b"from a").unwrap();
    assert_eq!(fs::read(b.join("f")).unwrap(), b"from a");
    fs::create_dir(a.join("d")).unwrap();
    assert!(lstat(&b.join("d")).is_dir());
    assert_eq!(names(b.path()), ["d", "f"]);
    // And the other way.
    fs::write(b.join("d/g"), b"from b").unwrap();
    assert_eq!(fs::read(a.join("d/g")).unwrap(), b"from b");
}

#[test]
fn two_mounts_see_renames_at_once() {
    let pool = TestPool::new();
    let a = pool.mount("v", MountOpts::default());
    let b = pool.mount("v", MountOpts::default());
    fs::write(a.join("old"), b"moved").unwrap();
    assert_eq!(fs::read(b.join("old")).unwrap(), b"moved");
    assert_eq!(errno_of("stat new before rename", fs::symlink_metadata(b.join("new"))), libc::ENOENT);
    fs::rename(a.join("old"), a.join("new")).unwrap();
    assert_eq!(names(b.path()), ["new"]);
    assert_eq!(fs::read(b.join("new")).unwrap(), b"moved");
    assert_eq!(
        errno_of("stat the old name through the other mount", fs::symlink_metadata(b.join("old"))),
        libc::ENOENT
    );
}

#[test]
fn two_mounts_see_unlinks_at_once() {
    let pool = TestPool::new();
    let a = pool.mount("v", MountOpts::default());
    let b = pool.mount("v", MountOpts::default());
    fs::write(a.join("f"), b"x").unwrap();
    fs::create_dir(a.join("d")).unwrap();
    assert_eq!(fs::read(b.join("f")).unwrap(), b"x");
    assert!(lstat(&b.join("d")).is_dir());
    fs::remove_file(a.join("f")).unwrap();
    fs::remove_dir(a.join("d")).unwrap();
    assert!(names(b.path()).is_empty());
    assert_eq!(
        errno_of("stat an unlinked file through the other mount", fs::symlink_metadata(b.join("f"))),
        libc::ENOENT
    );
    assert_eq!(errno_of("stat a removed dir through the other mount", fs::symlink_metadata(b.join("d"))), libc::ENOENT);
}

#[test]
fn two_mounts_see_attribute_changes_at_once() {
    let pool = TestPool::new();
    let a = pool.mount("v", MountOpts::default());
    let b = pool.mount("v", MountOpts::default());
    fs::write(a.join("f"), b"x").unwrap();
    chmod(&a.join("f"), 0o600);
    assert_eq!(perm_of(&b.join("f")), 0o600);
    chmod(&a.join("f"), 0o640);
    chown(&a.join("f"), 1000, 2000);
    utimens(&a.join("f"), ts(1_000_000_000, 0), ts(1_000_000_000, 0), 0).unwrap();
    let md = lstat(&b.join("f"));
    assert_eq!(md.mode() & 0o7777, 0o640);
    assert_eq!((md.uid(), md.gid()), (1000, 2000));
    assert_eq!(md.mtime(), 1_000_000_000);
}

#[test]
fn read_only_mount_fails_writes_with_erofs() {
    let pool = TestPool::new();
    let rw = pool.mount("v", MountOpts::default());
    fs::write(rw.join("f"), b"data").unwrap();
    fs::create_dir(rw.join("d")).unwrap();
    rw.unmount();
    let m = pool.mount("v", MountOpts::read_only());
    let f = m.join("f");
    assert_eq!(fs::read(&f).unwrap(), b"data");
    assert_eq!(names(m.path()), ["d", "f"]);
    let erofs = libc::EROFS;
    assert_eq!(errno_of("open for writing", OpenOptions::new().write(true).open(&f)), erofs);
    assert_eq!(errno_of("create", File::create(m.join("new"))), erofs);
    assert_eq!(errno_of("mkdir", fs::create_dir(m.join("nd"))), erofs);
    assert_eq!(errno_of("unlink", fs::remove_file(&f)), erofs);
    assert_eq!(errno_of("rmdir", fs::remove_dir(m.join("d"))), erofs);
    assert_eq!(errno_of("rename", fs::rename(&f, m.join("g"))), erofs);
    assert_eq!(errno_of("link", fs::hard_link(&f, m.join("g"))), erofs);
    assert_eq!(errno_of("symlink", symlink("f", m.join("s"))), erofs);
    assert_eq!(errno_of("mknod", mknod(&m.join("p"), libc::S_IFIFO | 0o644, 0)), erofs);
    assert_eq!(errno_of("chmod", fs::set_permissions(&f, fs::Permissions::from_mode(0o600))), erofs);
    assert_eq!(errno_of("chown", std::os::unix::fs::chown(&f, Some(1), Some(1))), erofs);
    assert_eq!(errno_of("utimensat", utimens(&f, UTIME_NOW, UTIME_NOW, 0)), erofs);
    // SAFETY: a valid C string.
    assert_eq!(errno_of("truncate", cvt(unsafe { libc::truncate(cpath(&f).as_ptr(), 0) })), erofs);
    assert_eq!(errno_of("setxattr", setxattr(&f, "user.a", b"1", 0)), erofs);
    assert_eq!(fs::read(&f).unwrap(), b"data");
    let st = statvfs(m.path());
    assert_ne!(st.f_flag & libc::ST_RDONLY, 0, "statvfs reports a read-only mount");
}
